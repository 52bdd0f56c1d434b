//! 不动产登记 (registration): the 房证同交 workflow. Projects enrol and complete 首次登记; developers
//! submit handover batches; registration follows the survey, acceptance and tax feeds and keeps each
//! case's readiness; clerks at the counter record 转移登记 and issue 不动产权证书 with gap-free numbers.

mod api;
pub mod config;
mod convert;
mod counter;
mod engine;
mod follow;
mod known;
mod rows;

use std::sync::Arc;

use tokio::{sync::broadcast, task::JoinHandle};
use tongjiao_proto::registration::registration_service_server::RegistrationServiceServer;
use tongjiao_server::{Authenticator, ServiceSet};
use tongjiao_store::{Backend, Db, Idempotency, Schema};
use tongjiao_workflow::Workflow;

pub use config::{Clock, RegistrationConfig, TokenSource};
use engine::Engine;

/// How often every pending case is evaluated again (besides on start).
const REFRESH_PENDING_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The registration service. Cheap to clone.
#[derive(Clone)]
pub struct Registration {
    engine: Engine,
    idem: Idempotency,
    config: Arc<RegistrationConfig>,
    counters: counter::Counters,
    /// project id → (developer credit code, county code), for access checks.
    owners: Arc<std::sync::RwLock<std::collections::HashMap<String, (String, String)>>>,
    /// The day the last committed deadline sweep covered up to; none before the first, so a new
    /// process sweeps the whole register once.
    swept_before: Arc<std::sync::Mutex<Option<String>>>,
}

impl Registration {
    /// Migrates the schema, rebuilds the workflow state from PostgreSQL and writes any pending case
    /// whose facts moved on while its write was deferred (see `engine::Deferred`).
    pub async fn build(
        db: Db,
        workflow: Workflow,
        config: RegistrationConfig,
    ) -> anyhow::Result<Self> {
        let migrations = match db.backend() {
            Backend::Postgres => &PG_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        db.migrate(Schema::Registration, migrations).await?;
        let (changes, _) = broadcast::channel(4096);
        let engine = Engine {
            db,
            workflow,
            clock: config.clock.clone(),
            changes,
            settled_projects: Default::default(),
            known: Default::default(),
            deferred: Default::default(),
        };
        let config = Arc::new(config);
        let counters = counter::spawn(counter::Issuer {
            engine: engine.clone(),
            idem: Idempotency::new(Schema::Registration),
            config: config.clone(),
        });
        let reg = Registration {
            engine,
            idem: Idempotency::new(Schema::Registration),
            config,
            counters,
            owners: Arc::default(),
            swept_before: Arc::default(),
        };
        let rebuilt = reg.engine.rebuild(None).await?;
        tracing::info!(cases = rebuilt, "workflow state rebuilt from the register");
        let refreshed = reg.engine.refresh_pending("restart").await?;
        if refreshed > 0 {
            tracing::info!(
                cases = refreshed,
                "pending cases brought up to date with their facts (待办件已按事实更新)"
            );
        }
        Ok(reg)
    }

    pub fn register(self, set: &mut ServiceSet, auth: Authenticator) {
        use tonic::server::NamedService;
        set.named(<RegistrationServiceServer<Registration> as NamedService>::NAME)
            .add_service(tonic::service::interceptor::InterceptedService::new(
                RegistrationServiceServer::new(self)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
                auth,
            ));
    }

    /// Starts the feed followers and the deadline sweeper. They run until aborted.
    pub fn start_background(&self) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        for feed in [
            follow::Feed::Survey,
            follow::Feed::Acceptance,
            follow::Feed::Tax,
        ] {
            tasks.push(tokio::spawn(follow::follow(self.clone(), feed)));
        }
        tasks.push(tokio::spawn(follow::flush_deferred(self.clone())));
        let me = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.config.lapse_sweep_every);
            let mut refreshed = std::time::Instant::now();
            loop {
                tick.tick().await;
                if let Err(e) = me.sweep_deadlines().await {
                    tracing::warn!(error = %e, "deadline sweep failed");
                }
                // A replica that stopped for good keeps its deferred writes (see
                // `engine::Deferred`) from everyone but the next start; the others catch them here.
                if refreshed.elapsed() >= REFRESH_PENDING_EVERY {
                    refreshed = std::time::Instant::now();
                    match me.engine.refresh_pending("refresh").await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            cases = n,
                            "pending cases brought up to date with their facts (待办件已按事实更新)"
                        ),
                        Err(e) => tracing::warn!(error = %e, "refreshing pending cases failed"),
                    }
                }
            }
        }));
        tasks
    }

    /// Lapses pending cases past their material deadline (视为放弃).
    pub async fn sweep_deadlines(&self) -> anyhow::Result<usize> {
        let today = tongjiao_domain::format_date(self.engine.clock.today());
        // A clock set back (tests, a corrected host clock) means the window is unknown: sweep all.
        let since = self
            .swept_before
            .lock()
            .map_err(|_| anyhow::anyhow!("deadline sweep state poisoned"))?
            .clone()
            .filter(|d| *d <= today);
        let mut tx = self.engine.db.begin().await?;
        let changed = self
            .engine
            .lapse_overdue(&mut tx, &today, since.as_deref())
            .await?;
        tx.commit().await?;
        if let Ok(mut swept) = self.swept_before.lock() {
            *swept = Some(today);
        }
        let n = changed.len();
        if n > 0 {
            tracing::info!(cases = n, "cases lapsed past their material deadline");
        }
        self.engine.publish(changed).await;
        Ok(n)
    }
}
