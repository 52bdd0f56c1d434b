//! `acceptance`: the 验收备案 (acceptance filings) gRPC server.
use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tongjiao_server::{
    Authenticator, CommonArgs, ServiceSet, init_tracing, serve, shutdown_signal,
};
use tongjiao_store::Db;

/// 验收备案 (acceptance filings) service of the tongjiao suite.
#[derive(clap::Parser)]
#[command(name = "acceptance", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing();
    let verifier = args.common.verifier().map_err(|e| anyhow::anyhow!(e))?;
    let db = Db::connect(&args.common.database_url, args.common.db_max_connections)
        .await
        .context("connecting to the database (连接数据库)")?;
    let service = tongjiao_acceptance::build(db)
        .await
        .context("migrating the acceptance schema (数据库迁移)")?;
    let mut set = ServiceSet::new();
    service.register(&mut set, Authenticator::new(verifier));
    let addr = args.common.listen_or(tongjiao_acceptance::DEFAULT_LISTEN);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (监听地址)"))?;
    serve(listener, set, shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(())
}
