//! `survey-data`: serves the 楼盘表 (building/unit table) service on its own port.
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tongjiao_server::{
    Authenticator, CommonArgs, ServiceSet, init_tracing, serve, shutdown_signal,
};
use tongjiao_store::Db;

/// The 楼盘表 service (SurveyDataService).
#[derive(clap::Parser)]
#[command(name = "survey-data", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing();
    let db = Db::connect(&args.common.database_url, args.common.db_max_connections)
        .await
        .context("connecting to the database (连接数据库)")?;
    let service = tongjiao_survey_data::build(db)
        .await
        .context("migrating the survey schema (数据库迁移)")?;
    let verifier = args.common.verifier().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut set = ServiceSet::new();
    service.register(&mut set, Authenticator::new(verifier));
    let default: SocketAddr = tongjiao_survey_data::DEFAULT_LISTEN
        .parse()
        .context("default listen address")?;
    let addr = args.common.listen_or(default);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (监听端口)"))?;
    serve(listener, set, shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
