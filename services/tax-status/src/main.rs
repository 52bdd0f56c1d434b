//! `tax-status`: the 完税 (tax completion) gRPC service.
use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tongjiao_server::{
    Authenticator, CommonArgs, ServiceSet, init_tracing, serve, shutdown_signal,
};
use tongjiao_store::Db;

#[derive(Parser)]
#[command(
    name = "tax-status",
    about = "完税 (tax completion) service of tongjiao"
)]
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
        .context("connect to the database (连接数据库)")?;
    let service = tongjiao_tax_status::build(db)
        .await
        .context("apply tax migrations (数据库迁移)")?;
    let verifier = args.common.verifier().map_err(anyhow::Error::from_boxed)?;
    let mut set = ServiceSet::new();
    service.register(&mut set, Authenticator::new(verifier));
    let addr = args
        .common
        .listen_or(tongjiao_tax_status::DEFAULT_LISTEN.parse()?);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr} (监听地址)"))?;
    serve(listener, set, shutdown_signal())
        .await
        .map_err(anyhow::Error::from_boxed)?;
    Ok(())
}
