use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use tongjiao_auth::TokenIssuer;
use tongjiao_registration::{Clock, Registration, RegistrationConfig, TokenSource, config};
use tongjiao_server::{
    Authenticator, CommonArgs, ServiceSet, init_tracing, serve, shutdown_signal,
};
use tongjiao_store::Db;
use tongjiao_workflow::Workflow;

/// mimalloc, not glibc malloc: with buyers and tax facts kept in memory (`known.rs`), glibc's bins
/// fragmented and `_int_malloc` alone took a tenth of the counter path's CPU; registration spent a
/// sixth more CPU per certificate than before that memory, and with mimalloc no more than before.
/// The other services measured no gain (tax-status's intake more CPU), so they keep glibc.
///
/// mimalloc v3 (the crate's default) keeps freed pages for a second; under the burst that let
/// registration's peak RSS reach 153–160 MB at 10,000 units (88 MB with glibc). Purging at once:
/// 100 MB at the same CPU. An operator's own `MIMALLOC_PURGE_DELAY` still wins.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`: libmimalloc-sys names no constant for it; it is the sixteenth option
/// of both mimalloc versions the crate vendors (v2, v3). `purge_delay_is_the_option_we_mean` checks
/// it against the option's default in v3 (1,000 ms).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc allows changing it at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
}

/// 不动产登记 service (registration).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Redis URL for live case state (办件状态缓存).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Prefix of every Redis key, one per deployment.
    #[arg(long, env = "TONGJIAO_REDIS_PREFIX", default_value = "tj:")]
    redis_prefix: String,
    /// survey-data service URL (楼盘表服务).
    #[arg(
        long,
        env = "TONGJIAO_SURVEY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    survey_url: String,
    /// acceptance service URL (验收备案服务).
    #[arg(
        long,
        env = "TONGJIAO_ACCEPTANCE_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    acceptance_url: String,
    /// tax-status service URL (完税服务).
    #[arg(
        long,
        env = "TONGJIAO_TAX_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    tax_url: String,
    /// Token registration presents to the other services (服务令牌); or use --service-signing-key.
    #[arg(long, env = "TONGJIAO_SERVICE_TOKEN")]
    service_token: Option<String>,
    /// Ed25519 private key (PEM) to mint registration's own tokens, signed under --jwt-key-id.
    #[arg(
        long,
        env = "TONGJIAO_SERVICE_SIGNING_KEY",
        default_value = ".tongjiao-dev/jwt-private.pem"
    )]
    service_signing_key: PathBuf,
    /// County code=name pairs printed on certificates (区划名称), e.g. 140827=垣曲县.
    #[arg(long, env = "TONGJIAO_COUNTIES", default_value = config::DEFAULT_COUNTIES)]
    counties: String,
    /// Seconds between material-deadline sweeps (材料截止检查间隔).
    #[arg(long, env = "TONGJIAO_LAPSE_SWEEP_SECS", default_value_t = 60)]
    lapse_sweep_secs: u64,
    /// Units a tax-feed batch must touch before it is applied over several connections at once
    /// (并行入账阈值); smaller batches go in one transaction.
    #[arg(long, env = "TONGJIAO_PARALLEL_APPLY_MIN_UNITS", default_value_t = 256)]
    parallel_apply_min_units: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    purge_freed_memory_at_once();
    init_tracing();
    let args = Args::parse();
    let tokens = match &args.service_token {
        Some(t) => TokenSource::Static(t.clone()),
        None => {
            let pem = std::fs::read_to_string(&args.service_signing_key).with_context(|| {
                format!(
                    "reading {} (set TONGJIAO_SERVICE_TOKEN or TONGJIAO_SERVICE_SIGNING_KEY)",
                    args.service_signing_key.display()
                )
            })?;
            TokenSource::Signing(TokenIssuer::from_pem(
                &pem,
                &args.common.jwt_key_id,
                &args.common.jwt_issuer,
                &args.common.jwt_audience,
            )?)
        }
    };
    let config = RegistrationConfig {
        survey_url: args.survey_url.clone(),
        acceptance_url: args.acceptance_url.clone(),
        tax_url: args.tax_url.clone(),
        tokens,
        county_names: config::parse_county_names(&args.counties).map_err(anyhow::Error::msg)?,
        lapse_sweep_every: Duration::from_secs(args.lapse_sweep_secs.max(1)),
        parallel_apply_min_units: args.parallel_apply_min_units,
        clock: Clock::default(),
    };
    let db = Db::connect(&args.common.database_url, args.common.db_max_connections).await?;
    let workflow = Workflow::redis(&args.redis_url, &args.redis_prefix).await?;
    let registration = Registration::build(db, workflow, config).await?;
    let background = registration.start_background();
    let mut set = ServiceSet::new();
    registration.register(
        &mut set,
        Authenticator::new(args.common.verifier().map_err(|e| anyhow::anyhow!(e))?),
    );
    let addr = args
        .common
        .listen_or(SocketAddr::from(([127, 0, 0, 1], 50054)));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve(listener, set, shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    for t in background {
        t.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_is_the_option_we_mean() {
        // Its neighbours' defaults differ (eager commit delay 1, NUMA nodes 0): only mimalloc v3's
        // purge delay is 1,000 unless set.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads a plain integer option.
            let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert_eq!(default, 1000);
        }
        purge_freed_memory_at_once();
        // SAFETY: as above.
        let now = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert!(now == 0 || std::env::var_os("MIMALLOC_PURGE_DELAY").is_some());
    }
}
