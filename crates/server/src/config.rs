//! Settings every service binary shares, from flags or environment, with defaults that work on a
//! developer machine (local PostgreSQL, the sandbox's development key).
use std::{net::SocketAddr, path::PathBuf};

use tongjiao_auth::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, TokenVerifier};

#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Address to listen on (监听地址).
    #[arg(long, env = "TONGJIAO_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// PostgreSQL URL (数据库地址); `sqlite://FILE` also works for a single-machine trial.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub database_url: String,
    /// Maximum database connections (数据库连接数).
    #[arg(long, env = "TONGJIAO_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Public key (PEM, Ed25519) that verifies callers' JWTs (令牌验证公钥).
    #[arg(
        long,
        env = "TONGJIAO_JWT_PUBLIC_KEY",
        default_value = ".tongjiao-dev/jwt-public.pem"
    )]
    pub jwt_public_key: PathBuf,
    /// Key id (`kid`) of that key.
    #[arg(long, env = "TONGJIAO_JWT_KEY_ID", default_value = "dev")]
    pub jwt_key_id: String,
    /// Expected token issuer (`iss`).
    #[arg(long, env = "TONGJIAO_JWT_ISSUER", default_value = DEFAULT_ISSUER)]
    pub jwt_issuer: String,
    /// Expected token audience (`aud`).
    #[arg(long, env = "TONGJIAO_JWT_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub jwt_audience: String,
}

impl CommonArgs {
    pub fn verifier(&self) -> Result<TokenVerifier, Box<dyn std::error::Error + Send + Sync>> {
        let pem = std::fs::read_to_string(&self.jwt_public_key).map_err(|e| {
            format!(
                "cannot read JWT public key {} (无法读取令牌公钥): {e}",
                self.jwt_public_key.display()
            )
        })?;
        Ok(TokenVerifier::new(&self.jwt_issuer, &self.jwt_audience)
            .with_public_pem(&self.jwt_key_id, &pem)?)
    }

    pub fn listen_or(&self, default: SocketAddr) -> SocketAddr {
        self.listen.unwrap_or(default)
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
