use std::{path::PathBuf, str::FromStr, time::Duration};

use sqlx::{
    AnyPool, AssertSqlSafe, Executor, SqlSafeStr,
    any::AnyPoolOptions,
    migrate::{Migration, MigrationType, Migrator},
};

/// The schemas the suite uses, one per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schema {
    Survey,
    Acceptance,
    Tax,
    Registration,
}

impl Schema {
    pub const ALL: [Schema; 4] = [
        Schema::Survey,
        Schema::Acceptance,
        Schema::Tax,
        Schema::Registration,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Schema::Survey => "survey",
            Schema::Acceptance => "acceptance",
            Schema::Tax => "tax",
            Schema::Registration => "registration",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error (数据库错误): {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed (数据库迁移失败): {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL (不支持的数据库地址): {0}")]
    BadUrl(String),
    #[error(
        "request_id was already used for a different request (请求编号已用于其他请求): {request_id}"
    )]
    RequestIdReused { request_id: String },
    #[error("stored record is corrupt (存储记录损坏): {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the database refused a write because of a uniqueness constraint.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// Prepared statements kept per PostgreSQL connection.
const STATEMENT_CACHE: usize = 1024;
/// Connections a PostgreSQL pool keeps open even when idle (at most its maximum).
const MIN_CONNECTIONS: u32 = 4;

/// A connection pool to the system of record.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Connects to `postgres://…` or `sqlite://PATH` (a file; the schemas become files beside it).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // A service prepares a few hundred distinct statements (each bulk statement is one
            // shape, see `bulk`); sqlx's default cache of 100 per connection would evict them.
            let url = if url.contains("statement-cache-capacity") {
                url.to_owned()
            } else {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}statement-cache-capacity={STATEMENT_CACHE}")
            };
            let pool = AnyPoolOptions::new()
                .max_connections(max_connections)
                // Opened at start and kept: a burst (the tax feed's, the counters' at 9:00) that
                // found only one connection open connected mid-burst, ≈ 3 ms each with its
                // settings, between two batches that hold the feed head's lock one after the other.
                .min_connections(max_connections.min(MIN_CONNECTIONS))
                .acquire_timeout(Duration::from_secs(30))
                // No ping before each use: it is a round trip per transaction (up to 1.5 ms under
                // load on the counter path). A connection that died fails its statement instead,
                // which every caller already answers as UNAVAILABLE with nothing recorded.
                .test_before_acquire(false)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        // Our statements are key look-ups and array inserts whose best plan does
                        // not depend on the values. A custom plan per execution re-plans every
                        // bulk statement and parses its array literals once more (the planner
                        // evaluates them to estimate UNNEST's rows); planning was about 12 % of
                        // PostgreSQL's CPU in a profile of the handover benchmark.
                        conn.execute("SET plan_cache_mode = force_generic_plan")
                            .await?;
                        // A generic plan is made once per connection, from the statistics of
                        // that moment, and kept until the next ANALYZE: tables that were empty
                        // when a service started (a new county, the first handover day) kept
                        // sequential-scan plans while they grew, and at 10,000 cases a counter
                        // batch read the whole of case_buyers, deed_taxes, maintenance_funds and
                        // the request records (PostgreSQL 0.25 ms of CPU per certificate instead
                        // of 0.1). Every statement here has an index made for it; a scan costs
                        // what its batch costs, not what the table holds.
                        conn.execute("SET enable_seqscan = off").await?;
                        // With sequential scans off, a plan that still has to scan is costed at
                        // 10^10, far past jit_above_cost: PostgreSQL would then JIT-compile it on
                        // every execution (0.6 s measured for a 1,000-row update) to save
                        // microseconds. Our statements are short; compiling never pays.
                        conn.execute("SET jit = off").await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await?;
            Ok(Db {
                pool,
                backend: Backend::Postgres,
            })
        } else if let Some(rest) = url.strip_prefix("sqlite://") {
            let path = PathBuf::from(rest.split('?').next().unwrap_or(rest));
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::BadUrl(format!("{}: {e}", dir.display())))?;
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("tongjiao")
                .to_owned();
            let dir = path.parent().map(PathBuf::from).unwrap_or_default();
            let attach: Vec<String> = Schema::ALL
                .iter()
                .map(|s| {
                    let file = dir.join(format!("{stem}-{}.db", s.name()));
                    format!(
                        "ATTACH DATABASE '{}' AS {}",
                        file.display().to_string().replace('\'', "''"),
                        s.name()
                    )
                })
                .collect();
            let main_url = format!("sqlite://{}?mode=rwc", path.display());
            // SQLite allows one writer; a single connection keeps the sandbox free of SQLITE_BUSY
            // and makes transactions serial, which is what PostgreSQL's row locks give us.
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .after_connect(move |conn, _meta| {
                    let attach = attach.clone();
                    Box::pin(async move {
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        for stmt in attach {
                            conn.execute(AssertSqlSafe(stmt)).await?;
                        }
                        for s in Schema::ALL {
                            conn.execute(AssertSqlSafe(format!(
                                "PRAGMA {}.journal_mode = WAL",
                                s.name()
                            )))
                            .await?;
                        }
                        Ok(())
                    })
                })
                .connect(&main_url)
                .await?;
            Ok(Db {
                pool,
                backend: Backend::Sqlite,
            })
        } else {
            Err(StoreError::BadUrl(url.to_owned()))
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn begin(&self) -> Result<crate::Tx<'static>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Applies a service's migrations. Each service keeps its migration history inside its own schema,
    /// so services never see each other's versions.
    pub async fn migrate(&self, schema: Schema, migrator: &Migrator) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            self.pool
                .execute(AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    schema.name()
                )))
                .await?;
        }
        let mut migrations = vec![Migration::new(
            1,
            "feed head, events and request records (事件日志与请求记录)".into(),
            MigrationType::Simple,
            AssertSqlSafe(core_ddl(schema, self.backend)).into_sql_str(),
            false,
        )];
        migrations.push(Migration::new(
            2,
            "no index on event subjects (事件主题不建索引)".into(),
            MigrationType::Simple,
            AssertSqlSafe(drop_subject_index(schema)).into_sql_str(),
            false,
        ));
        migrations.push(Migration::new(
            3,
            "content digest of each event (事件内容摘要)".into(),
            MigrationType::Simple,
            AssertSqlSafe(add_content_digest(schema)).into_sql_str(),
            false,
        ));
        migrations.extend(migrator.migrations.iter().cloned());
        let mut migrator = Migrator::with_migrations(migrations);
        migrator.dangerous_set_table_name(format!("{}._sqlx_migrations", schema.name()));
        // Two replicas of one service starting together race to create the migrations table; one
        // retry after the winner has created it is enough.
        match migrator.run(&self.pool).await {
            Ok(()) => Ok(()),
            Err(first) => {
                tracing::warn!(error = %first, schema = schema.name(), "migration failed once, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                migrator.run(&self.pool).await.map_err(StoreError::from)
            }
        }
    }

    /// SQL suffix that locks the selected rows until commit. SQLite has a single writer, so none.
    pub fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }
}

impl FromStr for Backend {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "postgres" => Ok(Backend::Postgres),
            "sqlite" => Ok(Backend::Sqlite),
            other => Err(StoreError::BadUrl(other.to_owned())),
        }
    }
}

/// Milliseconds since the Unix epoch; every timestamp in the store is kept this way so the same
/// column type works on both backends.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Nothing reads the log by subject (followers read it by sequence, queries read the fact tables),
/// and its index was a third of the index work of every appended event. Dropped by a second core
/// migration, not left out of the first: a changed migration no longer matches existing databases.
fn drop_subject_index(schema: Schema) -> String {
    format!("DROP INDEX IF EXISTS {}.events_subject_idx", schema.name())
}

/// An event accepted from an at-least-once producer under the producer's own id (the tax bureau's
/// feed) keeps the digest of the content it was accepted with, so that a resend is told apart from
/// a reused id by the log alone, without a second table written per event. Null where the service
/// makes its own event ids.
fn add_content_digest(schema: Schema) -> String {
    format!(
        "ALTER TABLE {}.events ADD COLUMN content_sha256 TEXT",
        schema.name()
    )
}

/// Tables every service schema has: the event log with its head, and the request-id records.
/// Service migrations start at version 100.
fn core_ddl(schema: Schema, backend: Backend) -> String {
    let s = schema.name();
    let blob = match backend {
        Backend::Postgres => "BYTEA",
        Backend::Sqlite => "BLOB",
    };
    format!(
        "CREATE TABLE {s}.feed_head (id BIGINT PRIMARY KEY, last_sequence BIGINT NOT NULL);
INSERT INTO {s}.feed_head (id, last_sequence) VALUES (1, 0);
CREATE TABLE {s}.events (
    sequence BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload {blob} NOT NULL,
    recorded_at_ms BIGINT NOT NULL
);
{index};
CREATE TABLE {s}.requests (
    principal TEXT NOT NULL,
    request_id TEXT NOT NULL,
    method TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    response {blob},
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (principal, request_id)
);",
        index = match backend {
            Backend::Postgres =>
                format!("CREATE INDEX events_subject_idx ON {s}.events (subject, sequence)"),
            Backend::Sqlite =>
                format!("CREATE INDEX {s}.events_subject_idx ON events (subject, sequence)"),
        }
    )
}
