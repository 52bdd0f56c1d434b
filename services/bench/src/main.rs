//! `tongjiao-bench handover`: the handover-day benchmark (issue #3). Starts the four real service
//! binaries as separate processes on 127.0.0.1 against a fresh PostgreSQL database and a fresh Redis
//! prefix (JWT auth included), measures this machine's floors, then times each phase of a handover
//! day through the public gRPC API and checks that every certificate was issued exactly once with
//! gap-free serials. Prints one table and writes a JSON report. Asserts no timing.
mod data;
mod floors;
mod phases;
mod procs;
mod report;
mod stats;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Connection, Executor, postgres::PgConnection};
use tongjiao_auth::{KeyPair, TokenIssuer};

use crate::{
    floors::{FloorConfig, Floors},
    phases::{CounterFlow, Suite, Tokens, check_certificates},
    procs::{CpuMeter, Fleet},
    report::{Checks, MachineReport, Report, ServiceReport},
};

#[derive(Parser)]
#[command(
    name = "tongjiao-bench",
    version,
    about = "Benchmarks of the tongjiao suite (房证同交)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Handover day: 楼盘表, 首次登记, batch, tax feed, counters — against this machine's floors.
    Handover(HandoverArgs),
}

#[derive(clap::Args, Debug, Clone, Serialize)]
struct HandoverArgs {
    /// Units of the handover project (one case each).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    units: u32,
    /// Buildings the units are spread over.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=9999))]
    buildings: u32,
    /// Units of the separate big 楼盘表 whose upload is timed alone.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=999_999))]
    big_table: u32,
    /// Concurrent counter clients (also the concurrency of the look-ups and of the floors).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    counters: u64,
    /// gRPC channels (HTTP/2 connections) the counters are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    channels: u64,
    /// How a counter settles a case after its look-up: `combined` = one RegisterTransferAndIssue
    /// call (转移登记并发证); `separate` = RegisterTransfer, then IssueCertificate.
    #[arg(long, value_enum, default_value_t = CounterFlow::Combined)]
    counter_flow: CounterFlow,
    /// Where to write the JSON report (default: <target>/tongjiao-bench/report-<timestamp>.json).
    #[arg(long)]
    report: Option<PathBuf>,
    /// PostgreSQL admin URL; a fresh database is created on it for the run.
    #[arg(
        long,
        env = "TONGJIAO_TEST_PG",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg: String,
    /// Redis URL; the run uses a fresh key prefix.
    #[arg(
        long,
        env = "TONGJIAO_TEST_REDIS",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: String,
    /// Do not measure the floors.
    #[arg(long)]
    skip_floors: bool,
    /// Seconds each rate floor runs (after a short warm-up).
    #[arg(long, default_value_t = 3.0)]
    floor_secs: f64,
    /// Rows of the UNNEST and COPY floors.
    #[arg(long, default_value_t = 10_000)]
    floor_rows: usize,
    /// Concurrent PushCompletions streams the tax feed is split over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    tax_streams: u64,
    /// Share of re-sent duplicate tax events, in percent.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    dup_percent: u32,
    /// Seed of the shuffle and of the duplicate picks.
    #[arg(long, default_value_t = 20_261_130)]
    seed: u64,
    /// Keep the database, the Redis keys and the service logs after the run.
    #[arg(long)]
    keep: bool,
    /// Run `cargo build` for the service binaries even when they exist.
    #[arg(long)]
    build_services: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let Command::Handover(args) = cli.command;
    let result = rt.block_on(async {
        tokio::select! {
            r = handover(args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tongjiao-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// What the run created and must remove.
struct RunEnv {
    admin_url: String,
    db_name: String,
    db_url: String,
    redis_url: String,
    redis_prefix: String,
    dir: PathBuf,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn redact(url: &str) -> String {
    // postgres://user:secret@host → postgres://user:***@host
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((creds, host)) = rest.split_once('@')
        && let Some((user, _)) = creds.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

/// The URL of database `name` on the server of `admin` (query parameters kept).
fn db_url_for(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let server = match base.rsplit_once('/') {
        Some((s, _)) if s.contains("://") && s.len() > s.find("://").unwrap_or(0) + 3 => s,
        _ => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

async fn setup(args: &HandoverArgs) -> anyhow::Result<RunEnv> {
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day][hour][minute][second]"
        ))
        .unwrap_or_default();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let db_name = format!("tjbench_{stamp}_{}", &id[..8]);
    let mut admin = PgConnection::connect(&args.pg).await.with_context(|| {
        format!(
            "PostgreSQL is required at {} (set --pg or TONGJIAO_TEST_PG)",
            redact(&args.pg)
        )
    })?;
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .await
        .with_context(|| format!("CREATE DATABASE {db_name}"))?;
    admin.close().await?;
    // Redis must be there too, before anything is started.
    let client = redis::Client::open(args.redis.as_str())
        .with_context(|| format!("Redis URL {}", args.redis))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| {
            format!(
                "Redis is required at {} (set --redis or TONGJIAO_TEST_REDIS)",
                args.redis
            )
        })?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    let dir = std::env::temp_dir().join(format!("tongjiao-bench-{id}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(RunEnv {
        admin_url: args.pg.clone(),
        db_url: db_url_for(&args.pg, &db_name),
        db_name,
        redis_url: args.redis.clone(),
        redis_prefix: format!("tjbench:{}:", &id[..12]),
        dir,
    })
}

async fn cleanup(env: &RunEnv, keep_logs: bool) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&env.admin_url).await?;
    admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            env.db_name
        )))
        .await?;
    admin.close().await?;
    let client = redis::Client::open(env.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", env.redis_prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if !keep_logs {
        std::fs::remove_dir_all(&env.dir)?;
    }
    Ok(())
}

async fn handover(args: HandoverArgs) -> anyhow::Result<bool> {
    let env = setup(&args).await?;
    eprintln!(
        "tongjiao-bench handover: database {}, Redis prefix {}, logs in {}",
        env.db_name,
        env.redis_prefix,
        env.dir.display()
    );
    let result = run(&args, &env).await;
    let ok = matches!(&result, Ok(r) if r.ok);
    let keep = args.keep || !ok;
    let cleaned = if args.keep {
        Ok(())
    } else {
        cleanup(&env, keep).await
    };
    if let Err(e) = cleaned {
        eprintln!("cleanup after the run failed: {e:#}");
    }
    if args.keep {
        eprintln!(
            "kept: database {}, Redis prefix {}, service logs in {}",
            env.db_name,
            env.redis_prefix,
            env.dir.display()
        );
    } else if keep {
        eprintln!("service logs kept in {}", env.dir.display());
    }
    Ok(result?.ok)
}

fn binary_modified(p: &Path) -> String {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .map(|t| rfc3339(time::OffsetDateTime::from(t)))
        .unwrap_or_default()
}

/// PostgreSQL settings that move the figures: durability, how WAL segments are made, and whether
/// autovacuum runs (some machines have it off, and then no visibility map is ever set). With the
/// defaults (`wal_init_zero = on`, `min_wal_size = 80MB`) a commit that crosses into a WAL segment no
/// earlier checkpoint recycled waits while the server writes 16 MB of zeros and syncs them.
const PG_SETTINGS: &[&str] = &[
    "autovacuum",
    "synchronous_commit",
    "fsync",
    "wal_init_zero",
    "min_wal_size",
    "max_wal_size",
    "shared_buffers",
    "wal_buffers",
];

async fn versions(env: &RunEnv) -> (String, BTreeMap<String, String>, String) {
    let pg = async {
        let mut c = PgConnection::connect(&env.db_url).await.ok()?;
        let v: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut c)
            .await
            .ok()?;
        let names: Vec<String> = PG_SETTINGS.iter().map(|s| (*s).to_owned()).collect();
        let settings: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY($1) ORDER BY name",
        )
        .bind(names)
        .fetch_all(&mut c)
        .await
        .ok()?;
        Some((v, settings.into_iter().collect()))
    };
    let rd = async {
        let client = redis::Client::open(env.redis_url.as_str()).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut c)
            .await
            .ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
    };
    let (a, b) = tokio::join!(pg, rd);
    let (version, settings) = a.unwrap_or_default();
    (version, settings, b.unwrap_or_default())
}

async fn run(args: &HandoverArgs, env: &RunEnv) -> anyhow::Result<Report> {
    let started = time::OffsetDateTime::now_utc();
    let counters = args.counters as usize;
    let channels = args.channels as usize;
    if args.units.div_ceil(args.buildings) > 9999 {
        bail!("at most 9999 units per building: raise --buildings");
    }
    if args.big_table.div_ceil(100) > 9999 {
        bail!("--big-table is too big for 100 units per building");
    }

    // Keys: the services verify with the public key; registration and this client sign.
    let keys = KeyPair::generate("bench")?;
    let public = env.dir.join("jwt-public.pem");
    let private = env.dir.join("jwt-private.pem");
    std::fs::write(&public, &keys.public_pem)?;
    std::fs::write(&private, &keys.private_pem)?;
    const ISSUER: &str = "tongjiao-bench";
    const AUDIENCE: &str = "tongjiao";
    let issuer = TokenIssuer::from_pem(&keys.private_pem, &keys.kid, ISSUER, AUDIENCE)?;

    let binaries = procs::locate_binaries(args.build_services)?;
    let mut fleet = Fleet::default();
    let common: Vec<(&str, String)> = vec![
        ("TONGJIAO_JWT_PUBLIC_KEY", public.display().to_string()),
        ("TONGJIAO_JWT_KEY_ID", keys.kid.clone()),
        ("TONGJIAO_JWT_ISSUER", ISSUER.into()),
        ("TONGJIAO_JWT_AUDIENCE", AUDIENCE.into()),
    ];
    let mut urls: BTreeMap<&str, String> = BTreeMap::new();
    for name in procs::SERVICES {
        let port = procs::free_port()?;
        let mut env_vars = common.clone();
        // Each service's PostgreSQL sessions carry its name (pg_stat_activity, and the per-service
        // split of PostgreSQL's CPU in the report).
        let sep = if env.db_url.contains('?') { '&' } else { '?' };
        env_vars.push((
            "DATABASE_URL",
            format!("{}{sep}application_name=tongjiao-{name}", env.db_url),
        ));
        if name == "registration" {
            env_vars.extend([
                ("REDIS_URL", env.redis_url.clone()),
                ("TONGJIAO_REDIS_PREFIX", env.redis_prefix.clone()),
                ("TONGJIAO_SURVEY_URL", urls["survey-data"].clone()),
                ("TONGJIAO_ACCEPTANCE_URL", urls["acceptance"].clone()),
                ("TONGJIAO_TAX_URL", urls["tax-status"].clone()),
                (
                    "TONGJIAO_SERVICE_SIGNING_KEY",
                    private.display().to_string(),
                ),
                ("TONGJIAO_COUNTIES", data::COUNTIES.into()),
            ]);
        }
        let log = env.dir.join(format!("{name}.log"));
        let url = fleet
            .spawn(name, &binaries[name], port, &env_vars, log)?
            .url();
        fleet.wait_healthy(name, Duration::from_secs(180)).await?;
        eprintln!("  started {name} on {url}");
        urls.insert(name, url);
    }
    let meter = CpuMeter::new(&fleet);
    let backend_watch = meter.watch_backends(&env.db_url);
    let machine = procs::machine();
    let (pg_version, postgres_settings, redis_version) = versions(env).await;

    let outcome = measure(args, env, &urls, &issuer, meter, counters, channels).await;
    backend_watch.abort();
    let (floors_result, mut suite, checks) = match outcome {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{}", fleet.log_tails(3000));
            return Err(e);
        }
    };

    // Per service: CPU since start and peak RSS, read before the processes go.
    let meter = &suite.meter;
    let mut services = BTreeMap::new();
    for p in &fleet.procs {
        let pid = p.pid();
        let peak = procs::peak_rss_kib(pid).unwrap_or(0);
        services.insert(
            p.name.to_owned(),
            ServiceReport {
                pid,
                port: p.port,
                binary: p.binary.display().to_string(),
                binary_modified: binary_modified(&p.binary),
                cpu_s_total: meter.total_s(pid),
                peak_rss_kib: peak,
                peak_rss_mb: stats::round1(peak as f64 * 1024.0 / 1e6),
                rss_end_kib: procs::rss_kib(pid).unwrap_or(0),
                log: p.log.display().to_string(),
            },
        );
    }
    fleet.stop();

    let mut notes = vec![
        "CPU seconds: utime+stime from /proc; postgres = every process named postgres plus its reaped children (postgres:<service> = the backends of that service's sessions, by application_name); bench = this client, which shares the cores".into(),
        "readiness_visible is measured to the moment the GetHandoverBatch poll that saw every case READY answered (5 ms between polls)".into(),
        "MB = 10^6 bytes; peak RSS = VmHWM of the service process at the end of the run".into(),
    ];
    if counters != 64 {
        notes.push(format!(
            "the issue's counter targets are stated for 64 counters; this run used {counters}"
        ));
    }
    let floors = floors_result;
    let ratios = floors
        .as_ref()
        .map(|f| report::ratios(&suite.phases, f))
        .unwrap_or_default();
    let targets = report::targets(&suite.phases, &services, counters, args.big_table);
    let cpu_budgets = report::cpu_budgets(&suite.phases, machine.nproc, args.big_table);
    let mut config = serde_json::to_value(args)?;
    config["pg"] = redact(&args.pg).into();
    config["database"] = env.db_name.clone().into();
    config["redis_prefix"] = env.redis_prefix.clone().into();
    config["db_max_connections_per_service"] = std::env::var("TONGJIAO_DB_MAX_CONNECTIONS")
        .unwrap_or_else(|_| "16 (service default)".into())
        .into();
    let failures = std::mem::take(&mut suite.failures);
    let report = Report {
        schema: report::SCHEMA,
        ok: failures.is_empty(),
        failures,
        started_at: rfc3339(started),
        finished_at: rfc3339(time::OffsetDateTime::now_utc()),
        command: std::env::args().collect(),
        source: source_revision(),
        config,
        machine: MachineReport {
            machine,
            postgres_version: pg_version,
            postgres_settings,
            redis_version,
        },
        services,
        floors,
        phases: suite.phases,
        checks,
        ratios,
        targets,
        cpu_budgets,
        notes,
    };
    println!("{}", report::render(&report));
    let path = match &args.report {
        Some(p) => p.clone(),
        None => {
            let stamp = time::OffsetDateTime::now_utc()
                .format(time::macros::format_description!(
                    "[year][month][day]T[hour][minute][second]Z"
                ))
                .unwrap_or_default();
            procs::default_report_dir().join(format!("report-{stamp}.json"))
        }
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("report: {}", path.display());
    Ok(report)
}

/// Floors, then the phases, then the checks.
async fn measure(
    args: &HandoverArgs,
    env: &RunEnv,
    urls: &BTreeMap<&str, String>,
    issuer: &TokenIssuer,
    meter: CpuMeter,
    counters: usize,
    channels: usize,
) -> anyhow::Result<(Option<Floors>, Suite, Checks)> {
    let project = data::Project::new(data::PROJECT, data::PARCEL, args.units, args.buildings);
    let big = data::Project::new(
        data::BIG_PROJECT,
        data::BIG_PARCEL,
        args.big_table,
        args.big_table.div_ceil(100),
    );

    let floors = if args.skip_floors {
        None
    } else {
        eprintln!(
            "floors ({counters} concurrent, {channels} channels, {} s each):",
            args.floor_secs
        );
        let cfg = FloorConfig {
            concurrency: counters,
            channels,
            secs: args.floor_secs.max(0.05),
            rows: args.floor_rows.max(1),
        };
        let mut f = Floors {
            grpc_unary: floors::grpc_floor(&urls["registration"], &cfg).await?,
            ..Default::default()
        };
        eprintln!("  gRPC unary        {:>12.1}/s", f.grpc_unary.rate_per_s);
        floors::pg_floors(&env.db_url, &cfg, &mut f).await?;
        eprintln!(
            "  PG insert {:.1}/s, counter row {:.1}/s, batch32 {:.1} numbers/s, UNNEST {:.1} rows/s, COPY {:.1} rows/s",
            f.pg_single_insert.rate_per_s,
            f.pg_counter_row.rate_per_s,
            f.pg_gap_free_batch32.rate_per_s,
            f.pg_unnest.rate_per_s,
            f.pg_copy.rate_per_s
        );
        f.redis_multiplexed = floors::redis_floor(&env.redis_url, &env.redis_prefix, &cfg).await?;
        eprintln!(
            "  Redis             {:>12.1}/s",
            f.redis_multiplexed.rate_per_s
        );
        Some(f)
    };

    let tokens = Tokens::new(issuer, &project.developer_org)?;
    let mut suite = Suite {
        survey: urls["survey-data"].clone(),
        acceptance: urls["acceptance"].clone(),
        tax: urls["tax-status"].clone(),
        registration: urls["registration"].clone(),
        tokens,
        counters,
        channels,
        counter_flow: args.counter_flow,
        tax_streams: args.tax_streams as usize,
        dup_percent: args.dup_percent,
        seed: args.seed,
        meter,
        pg: sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&env.db_url)
            .await
            .context("connecting to the run's database")?,
        phases: Vec::new(),
        failures: Vec::new(),
        batch_ids: Vec::new(),
        issued: Vec::new(),
        tax_acks: serde_json::Value::Null,
        held_events: Vec::new(),
    };
    eprintln!("phases:");
    suite.upload_tables(&project, &big).await?;
    suite.first_registration(&project).await?;
    // The registration office's date (China Standard Time).
    let today = time::OffsetDateTime::now_utc()
        .to_offset(time::UtcOffset::from_hms(8, 0, 0)?)
        .date();
    suite.submit_batches(&project, today).await?;
    suite.tax_feed(&project).await?;
    suite.readiness_single().await?;
    suite.readiness_lookups(&project).await?;
    let all_ready = suite
        .phases
        .iter()
        .find(|p| p.name == "readiness_lookups")
        .is_some_and(|p| p.detail["all_ready"] == true);
    suite.counters(&project).await?;

    let mut certs = check_certificates(&suite.issued, project.cases.len() as u64);
    let counts = suite.batch_counts().await?;
    certs.batch_certificate_issued = u64::from(counts.certificate_issued);
    certs.db = register_check(&env.db_url).await;
    let db_ok = certs.db.get("error").is_some()
        || (certs.db["count"] == certs.expected
            && certs.db["distinct_serials"] == certs.expected
            && certs.db["distinct_numbers"] == certs.expected
            && certs.db["distinct_cases"] == certs.expected
            && certs.db["min_serial"] == 1
            && certs.db["max_serial"] == certs.expected);
    certs.ok &= db_ok && certs.batch_certificate_issued == certs.expected;
    if !certs.ok {
        suite.failures.push(format!(
            "certificates: {} issued of {}, serials {}..={} gap-free {}, numbers unique {}, batch counts {}, register {}",
            certs.count,
            certs.expected,
            certs.serial_first,
            certs.serial_last,
            certs.gap_free,
            certs.numbers_unique,
            certs.batch_certificate_issued,
            certs.db
        ));
    }
    let checks = Checks {
        tax_feed: suite.tax_acks.clone(),
        all_ready_before_counters: all_ready,
        certificates: certs,
        final_batch_counts: serde_json::json!({
            "total": counts.total, "pending": counts.pending, "ready": counts.ready,
            "transfer_registered": counts.transfer_registered,
            "certificate_issued": counts.certificate_issued, "lapsed": counts.lapsed,
            "opted_out": counts.opted_out,
        }),
    };
    Ok((floors, suite, checks))
}

/// The workspace's git commit (and whether the tree had changes) when the run started; the
/// service binaries' modification times are in `services`.
fn source_revision() -> serde_json::Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(commit) => serde_json::json!({
            "commit": commit,
            "dirty": git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()),
        }),
        None => serde_json::Value::Null,
    }
}

/// The register's own view of the certificates (registration.certificates); an `error` entry when
/// the table cannot be read (its layout is the registration service's business).
async fn register_check(db_url: &str) -> serde_json::Value {
    let q = async {
        let mut c = PgConnection::connect(db_url).await?;
        let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT), CAST(COUNT(DISTINCT serial) AS BIGINT), \
             CAST(COALESCE(MIN(serial), 0) AS BIGINT), CAST(COALESCE(MAX(serial), 0) AS BIGINT), \
             CAST(COUNT(DISTINCT certificate_number) AS BIGINT), CAST(COUNT(DISTINCT case_id) AS BIGINT) \
             FROM registration.certificates",
        )
        .fetch_one(&mut c)
        .await?;
        c.close().await?;
        Ok::<_, sqlx::Error>(row)
    };
    match q.await {
        Ok((count, ds, min, max, dn, dc)) => serde_json::json!({
            "count": count, "distinct_serials": ds, "min_serial": min, "max_serial": max,
            "distinct_numbers": dn, "distinct_cases": dc,
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            db_url_for("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            db_url_for("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://u:p@h:5432/postgres"),
            "postgres://u:***@h:5432/postgres"
        );
    }
}
