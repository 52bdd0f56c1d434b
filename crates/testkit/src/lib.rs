//! Fixtures for tests that run the real services against the real PostgreSQL and Redis. A missing
//! PostgreSQL or Redis makes a test fail loudly; nothing here skips.
use std::{net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, sync::oneshot};
use tongjiao_auth::{KeyPair, Role, TokenIssuer, TokenSpec, TokenVerifier};
use tongjiao_server::{Authenticator, ServiceSet};
use tongjiao_store::sqlx::{self, AssertSqlSafe, Executor};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

/// PostgreSQL server used by tests (`TONGJIAO_TEST_PG`, default the local trust-auth server).
pub fn pg_admin_url() -> String {
    std::env::var("TONGJIAO_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Redis used by tests (`TONGJIAO_TEST_REDIS`, default the local server).
pub fn redis_url() -> String {
    std::env::var("TONGJIAO_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Creates an empty database for one test and returns its URL. Panics when PostgreSQL is down:
/// these tests need it.
pub async fn fresh_database() -> String {
    sqlx::any::install_default_drivers();
    let admin = pg_admin_url();
    let name = format!("tj_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is required at {admin} (needs a running server): {e}")
        });
    conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// A new empty directory for one test's SQLite sandbox files (the caller removes it).
pub fn fresh_sqlite_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tj-{tag}-{}", uuid::Uuid::new_v4().simple()))
}

/// A unique Redis key prefix so parallel tests never see each other's keys.
pub fn fresh_redis_prefix() -> String {
    format!("tjtest:{}:", uuid::Uuid::new_v4().simple())
}

/// A signing key for the test, and the verifier the servers use.
pub struct TestKeys {
    pub issuer: TokenIssuer,
    pub verifier: TokenVerifier,
}

pub const ISSUER: &str = "tongjiao-test";
pub const AUDIENCE: &str = "tongjiao";

impl TestKeys {
    pub fn new() -> Self {
        let kp = KeyPair::generate("test").expect("generate Ed25519 key pair");
        let issuer = TokenIssuer::from_pem(&kp.private_pem, "test", ISSUER, AUDIENCE)
            .expect("load private key");
        let verifier = TokenVerifier::new(ISSUER, AUDIENCE)
            .with_public_pem("test", &kp.public_pem)
            .expect("load public key");
        TestKeys { issuer, verifier }
    }

    pub fn authenticator(&self) -> Authenticator {
        Authenticator::new(self.verifier.clone())
    }

    /// A one-hour token for `role`; `org` is a developer's credit code, `county` a clerk's county.
    pub fn token(
        &self,
        role: Role,
        subject: &str,
        org: Option<&str>,
        county: Option<&str>,
    ) -> String {
        self.issuer
            .issue(&TokenSpec {
                role,
                subject: subject.to_owned(),
                org: org.map(str::to_owned),
                county: county.map(str::to_owned),
                ttl: Duration::from_secs(3600),
            })
            .expect("issue token")
    }
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// A server running on a 127.0.0.1 port; dropping it stops the server.
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("valid url")
            .connect()
            .await
            .expect("connect to test server")
    }

    /// Stops the server and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Serves `set` on a fresh 127.0.0.1 port.
pub async fn spawn(set: ServiceSet) -> RunningServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        if let Err(e) = tongjiao_server::serve(listener, set, async {
            let _ = rx.await;
        })
        .await
        {
            panic!("test server failed: {e}");
        }
    });
    RunningServer {
        addr,
        stop: Some(stop),
        handle: Some(handle),
    }
}

/// Wraps a message in a request carrying `token`.
pub fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("ascii token");
    req.metadata_mut().insert("authorization", value);
    req
}
