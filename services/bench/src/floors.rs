//! What this machine does without us, measured in the same run right before the suite: a trivial
//! unary tonic RPC (grpc.health.v1 Check on a spawned service), PostgreSQL commit / gap-free counter
//! / batched gap-free / UNNEST / COPY rates on a scratch schema of the run's database, and Redis round
//! trips over one multiplexed connection.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::{
    AssertSqlSafe, Connection, PgPool,
    postgres::{PgConnection, PgPoolOptions},
};
use tokio::sync::Barrier;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::stats::{Latency, Samples, rate, round1};

/// One measured floor.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Floor {
    /// What was measured.
    pub what: String,
    /// Items per second (requests, commits, numbers, rows or round trips; see `unit`).
    pub rate_per_s: f64,
    pub unit: String,
    /// Operations (requests or transactions) done and their latency.
    pub ops: u64,
    pub items: u64,
    pub wall_s: f64,
    pub concurrency: usize,
    pub latency: Latency,
    /// Every repetition's rate, for the bulk floors (the median is `rate_per_s`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repetitions: Vec<f64>,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// All floors of a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Floors {
    pub grpc_unary: Floor,
    pub pg_single_insert: Floor,
    pub pg_counter_row: Floor,
    pub pg_gap_free_batch32: Floor,
    pub pg_unnest: Floor,
    pub pg_copy: Floor,
    pub redis_multiplexed: Floor,
    /// The gap-free floors left their tables gap-free (1..=max, no hole).
    pub pg_gap_free_verified: bool,
}

pub struct FloorConfig {
    pub concurrency: usize,
    pub channels: usize,
    pub secs: f64,
    pub rows: usize,
}

type Op = Arc<dyn Fn(usize) -> BoxFuture<'static, anyhow::Result<u64>> + Send + Sync>;

struct LoopResult {
    ops: u64,
    items: u64,
    wall: Duration,
    lat: Samples,
    errors: u64,
    first_error: Option<String>,
}

/// `workers` closed loops calling `op(worker)` until `dur` has passed; `op` returns the items done.
async fn closed_loop(workers: usize, dur: Duration, op: Op) -> LoopResult {
    let barrier = Arc::new(Barrier::new(workers + 1));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let op = op.clone();
        let barrier = barrier.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Samples::with_capacity(4096);
            let mut ops = 0u64;
            let mut items = 0u64;
            let mut first_error = None;
            barrier.wait().await;
            let deadline = Instant::now() + dur;
            while Instant::now() < deadline {
                let t = Instant::now();
                match op(w).await {
                    Ok(n) => {
                        lat.push(t.elapsed());
                        ops += 1;
                        items += n;
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if first_error.is_none() {
                            first_error = Some(format!("{e:#}"));
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            (ops, items, lat, first_error)
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut out = LoopResult {
        ops: 0,
        items: 0,
        wall: Duration::ZERO,
        lat: Samples::default(),
        errors: 0,
        first_error: None,
    };
    for t in tasks {
        if let Ok((ops, items, lat, e)) = t.await {
            out.ops += ops;
            out.items += items;
            out.lat.merge(lat);
            if out.first_error.is_none() {
                out.first_error = e;
            }
        }
    }
    out.wall = start.elapsed();
    out.errors = errors.load(Ordering::Relaxed);
    out
}

async fn measured(what: &str, unit: &str, workers: usize, dur: Duration, op: Op) -> Floor {
    // A short warm-up: connections, caches, the first page splits.
    let _ = closed_loop(
        workers,
        (dur / 5).min(Duration::from_millis(500)),
        op.clone(),
    )
    .await;
    let r = closed_loop(workers, dur, op).await;
    Floor {
        what: what.into(),
        rate_per_s: rate(r.items, r.wall),
        unit: unit.into(),
        ops: r.ops,
        items: r.items,
        wall_s: r.wall.as_secs_f64(),
        concurrency: workers,
        latency: r.lat.summary(),
        repetitions: Vec::new(),
        errors: r.errors,
        first_error: r.first_error,
        note: None,
    }
}

/// grpc.health.v1 Check against `url` from `concurrency` callers over `channels` connections.
pub async fn grpc_floor(url: &str, cfg: &FloorConfig) -> anyhow::Result<Floor> {
    let mut chans: Vec<Channel> = Vec::new();
    for _ in 0..cfg.channels.max(1) {
        chans.push(crate::procs::channel(url).await?);
    }
    let clients: Arc<Vec<HealthClient<Channel>>> =
        Arc::new(chans.into_iter().map(HealthClient::new).collect());
    let op: Op = Arc::new(move |w| {
        let mut c = clients[w % clients.len()].clone();
        Box::pin(async move {
            c.check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
            Ok(1)
        })
    });
    let mut f = measured(
        "grpc.health.v1.Health/Check unary on the registration process",
        "requests",
        cfg.concurrency,
        Duration::from_secs_f64(cfg.secs),
        op,
    )
    .await;
    f.note = Some(format!("{} channels", cfg.channels.max(1)));
    Ok(f)
}

const PAYLOAD: &str = "晋（2026）垣曲县不动产权第0000001号|140827001002GB00012F00010001|买受人、共有人|共同共有|垣曲县新城区同交路8号1号楼101室|国有建设用地使用权/房屋所有权|出让/市场化商品房|城镇住宅用地/住宅";

/// The PostgreSQL floors on the scratch schema `bench_floor` of `db_url`.
pub async fn pg_floors(db_url: &str, cfg: &FloorConfig, floors: &mut Floors) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(db_url)
        .await
        .with_context(|| format!("connecting to {db_url}"))?;
    for stmt in [
        "CREATE SCHEMA IF NOT EXISTS bench_floor",
        "CREATE TABLE bench_floor.single_rows (id BIGSERIAL PRIMARY KEY, worker BIGINT NOT NULL, payload TEXT NOT NULL, at_ms BIGINT NOT NULL)",
        "CREATE TABLE bench_floor.counters (name TEXT PRIMARY KEY, n BIGINT NOT NULL)",
        "INSERT INTO bench_floor.counters (name, n) VALUES ('row', 0), ('batch', 0)",
        "CREATE TABLE bench_floor.counter_rows (serial BIGINT PRIMARY KEY, payload TEXT NOT NULL)",
        "CREATE TABLE bench_floor.batch_rows (serial BIGINT PRIMARY KEY, payload TEXT NOT NULL)",
        "CREATE TABLE bench_floor.bulk (event_id TEXT PRIMARY KEY, unit_code TEXT NOT NULL, buyer_id TEXT NOT NULL, amount_fen BIGINT NOT NULL, recorded_at_ms BIGINT NOT NULL)",
    ] {
        sqlx::query(stmt)
            .execute(&mut admin)
            .await
            .with_context(|| stmt.to_owned())?;
    }
    let max_conn: i64 =
        sqlx::query_scalar("SELECT CAST(current_setting('max_connections') AS BIGINT)")
            .fetch_one(&mut admin)
            .await?;
    let in_use: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity")
        .fetch_one(&mut admin)
        .await?;
    // Leave room for the services' pools (they hold a few idle connections at this point).
    let room = usize::try_from((max_conn - in_use - 24).max(1)).unwrap_or(1);
    let conns = cfg.concurrency.min(room).max(1);
    let note = (conns < cfg.concurrency).then(|| {
        format!(
            "{conns} connections (PostgreSQL max_connections {max_conn}, {in_use} in use), {} callers share them",
            cfg.concurrency
        )
    });
    let pool = PgPoolOptions::new()
        .max_connections(conns as u32)
        .min_connections(conns as u32)
        .acquire_timeout(Duration::from_secs(60))
        .connect(db_url)
        .await?;
    let dur = Duration::from_secs_f64(cfg.secs);
    let workers = cfg.concurrency;

    let p = pool.clone();
    floors.pg_single_insert = measured(
        "single-row INSERT, one commit each",
        "commits",
        workers,
        dur,
        Arc::new(move |w| {
            let p = p.clone();
            Box::pin(async move {
                sqlx::query("INSERT INTO bench_floor.single_rows (worker, payload, at_ms) VALUES ($1, $2, $3)")
                    .bind(w as i64)
                    .bind(PAYLOAD)
                    .bind(now_ms())
                    .execute(&p)
                    .await?;
                Ok(1)
            })
        }),
    )
    .await;

    let p = pool.clone();
    floors.pg_counter_row = measured(
        "gap-free counter row: BEGIN; UPDATE counter SET n=n+1 RETURNING n; INSERT row; COMMIT",
        "numbers",
        workers,
        dur,
        Arc::new(move |_| {
            let p = p.clone();
            Box::pin(async move {
                let mut tx = p.begin().await?;
                let n: i64 = sqlx::query_scalar(
                    "UPDATE bench_floor.counters SET n = n + 1 WHERE name = 'row' RETURNING n",
                )
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO bench_floor.counter_rows (serial, payload) VALUES ($1, $2)",
                )
                .bind(n)
                .bind(PAYLOAD)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(1)
            })
        }),
    )
    .await;

    let p = pool.clone();
    let batch_sql = {
        let mut s = String::from("INSERT INTO bench_floor.batch_rows (serial, payload) VALUES ");
        for i in 0..32 {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
        }
        Arc::new(s)
    };
    floors.pg_gap_free_batch32 = measured(
        "gap-free batch: one tx reserves 32 consecutive numbers and inserts 32 rows (one multi-row INSERT)",
        "numbers",
        workers,
        dur,
        Arc::new(move |_| {
            let p = p.clone();
            let sql = batch_sql.clone();
            Box::pin(async move {
                let mut tx = p.begin().await?;
                let last: i64 = sqlx::query_scalar(
                    "UPDATE bench_floor.counters SET n = n + 32 WHERE name = 'batch' RETURNING n",
                )
                .fetch_one(&mut *tx)
                .await?;
                let mut q = sqlx::query(AssertSqlSafe(sql.as_str().to_owned()));
                for serial in last - 31..=last {
                    q = q.bind(serial).bind(PAYLOAD);
                }
                q.execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(32)
            })
        }),
    )
    .await;
    for f in [
        &mut floors.pg_single_insert,
        &mut floors.pg_counter_row,
        &mut floors.pg_gap_free_batch32,
    ] {
        f.note = note.clone();
    }

    let mut verified = true;
    for table in ["counter_rows", "batch_rows"] {
        let (count, min, max): (i64, i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT CAST(COUNT(*) AS BIGINT), COALESCE(MIN(serial), 0), COALESCE(MAX(serial), 0) FROM bench_floor.{table}"
        )))
        .fetch_one(&pool)
        .await?;
        verified &= count == max && (count == 0 || min == 1);
    }
    floors.pg_gap_free_verified = verified;

    floors.pg_unnest = bulk_floor(&pool, cfg.rows, Bulk::Unnest).await?;
    let copy_tcp = bulk_floor(&pool, cfg.rows, Bulk::Copy).await?;
    // sqlx flushes CopyData and CopyDone separately and never sets TCP_NODELAY, so over TCP a COPY
    // can wait for the server's delayed ACK (~40 ms) before CopyDone leaves. The machine's COPY
    // rate is the better of TCP and the local Unix socket (when the server is local).
    floors.pg_copy = match unix_socket_pool(db_url).await {
        Some(upool) => {
            let copy_unix = bulk_floor(&upool, cfg.rows, Bulk::Copy).await?;
            upool.close().await;
            let mut note = format!(
                "COPY over TCP (sqlx) {:.0} rows/s, over the Unix socket {:.0} rows/s; the better one is the floor",
                copy_tcp.rate_per_s, copy_unix.rate_per_s
            );
            if copy_tcp.rate_per_s < 0.5 * copy_unix.rate_per_s {
                note.push_str(
                    "; over TCP sqlx writes CopyDone separately without TCP_NODELAY and may wait ~40 ms for the server's delayed ACK",
                );
            }
            let mut best = if copy_unix.rate_per_s > copy_tcp.rate_per_s {
                copy_unix
            } else {
                copy_tcp
            };
            best.note = Some(note);
            best
        }
        None => copy_tcp,
    };
    pool.close().await;
    sqlx::query("DROP SCHEMA bench_floor CASCADE")
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Bulk {
    Unnest,
    Copy,
}

/// Three repetitions of one bulk insert of `rows` rows in one statement; the median counts.
async fn bulk_floor(pool: &PgPool, rows: usize, how: Bulk) -> anyhow::Result<Floor> {
    let mut reps = Vec::new();
    let mut lat = Samples::default();
    for rep in 0..3 {
        let ids: Vec<String> = (0..rows).map(|i| format!("ev-{rep}-{i:08}")).collect();
        let units: Vec<String> = (0..rows)
            .map(|i| format!("140827001002GB00012F{:04}{:04}", 1 + i / 9999, 1 + i % 9999))
            .collect();
        let buyers: Vec<String> = (0..rows)
            .map(|i| format!("14082719900101{:03}X", i % 1000))
            .collect();
        let amounts: Vec<i64> = (0..rows).map(|i| 300_000 + i as i64).collect();
        let at: Vec<i64> = vec![now_ms(); rows];
        sqlx::query("TRUNCATE bench_floor.bulk")
            .execute(pool)
            .await?;
        let elapsed = match how {
            Bulk::Unnest => {
                let t = Instant::now();
                sqlx::query(
                    "INSERT INTO bench_floor.bulk (event_id, unit_code, buyer_id, amount_fen, recorded_at_ms) \
                     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])",
                )
                .bind(&ids)
                .bind(&units)
                .bind(&buyers)
                .bind(&amounts)
                .bind(&at)
                .execute(pool)
                .await?;
                t.elapsed()
            }
            Bulk::Copy => {
                let mut text = String::with_capacity(rows * 96);
                for i in 0..rows {
                    text.push_str(&format!(
                        "{}\t{}\t{}\t{}\t{}\n",
                        ids[i], units[i], buyers[i], amounts[i], at[i]
                    ));
                }
                let mut conn = pool.acquire().await?;
                let t = Instant::now();
                let mut copy = conn
                    .copy_in_raw(
                        "COPY bench_floor.bulk (event_id, unit_code, buyer_id, amount_fen, recorded_at_ms) FROM STDIN",
                    )
                    .await?;
                copy.send(text.as_bytes()).await?;
                copy.finish().await?;
                t.elapsed()
            }
        };
        lat.push(elapsed);
        reps.push(rate(rows as u64, elapsed));
    }
    let mut sorted = reps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let (what, unit) = match how {
        Bulk::Unnest => (
            format!("INSERT … SELECT FROM UNNEST(arrays) of {rows} rows, one statement"),
            "rows",
        ),
        Bulk::Copy => (
            format!("COPY FROM STDIN of {rows} rows (text format)"),
            "rows",
        ),
    };
    Ok(Floor {
        what,
        rate_per_s: median,
        unit: unit.into(),
        ops: 3,
        items: 3 * rows as u64,
        wall_s: round1(lat.summary().mean_ms * 3.0) / 1000.0, // the three statements
        concurrency: 1,
        latency: lat.summary(),
        repetitions: reps,
        errors: 0,
        first_error: None,
        note: None,
    })
}

/// Round trips (SET, then GET, alternating) over one multiplexed connection shared by every caller.
pub async fn redis_floor(url: &str, prefix: &str, cfg: &FloorConfig) -> anyhow::Result<Floor> {
    let client = redis::Client::open(url).with_context(|| format!("Redis URL {url}"))?;
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to Redis at {url}"))?;
    let prefix = Arc::new(prefix.to_owned());
    let counter = Arc::new(AtomicU64::new(0));
    let p = prefix.clone();
    let op: Op = Arc::new(move |w| {
        let mut c = conn.clone();
        let key = format!("{p}floor:{w}");
        let n = counter.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            if n.is_multiple_of(2) {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(PAYLOAD)
                    .query_async::<()>(&mut c)
                    .await?;
            } else {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<String>>(&mut c)
                    .await?;
            }
            Ok(1)
        })
    });
    let mut f = measured(
        "Redis SET/GET round trips, one multiplexed connection (redis-rs)",
        "round trips",
        cfg.concurrency,
        Duration::from_secs_f64(cfg.secs),
        op,
    )
    .await;
    f.note = Some("one multiplexed connection, as the workflow store uses".into());
    let mut c = client.get_multiplexed_async_connection().await?;
    for w in 0..cfg.concurrency {
        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}floor:{w}"))
            .query_async(&mut c)
            .await?;
    }
    Ok(f)
}

/// A one-connection pool over the local Unix socket, when `db_url` names a local server and the
/// socket directory exists.
async fn unix_socket_pool(db_url: &str) -> Option<PgPool> {
    use std::str::FromStr;
    let opts = sqlx::postgres::PgConnectOptions::from_str(db_url).ok()?;
    if !matches!(opts.get_host(), "127.0.0.1" | "localhost" | "::1") {
        return None;
    }
    let dir = ["/var/run/postgresql", "/run/postgresql", "/tmp"]
        .into_iter()
        .find(|d| {
            std::path::Path::new(d)
                .join(format!(".s.PGSQL.{}", opts.get_port()))
                .exists()
        })?;
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts.socket(dir))
        .await
        .ok()
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() * 1000
}
