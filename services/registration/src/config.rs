use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use time::{Date, OffsetDateTime, UtcOffset};
use tongjiao_auth::{Role, TokenIssuer, TokenSpec};

/// How registration authenticates to the services whose feeds it follows.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A token handed in by the operator.
    Static(String),
    /// A signing key: registration mints its own short-lived registrar tokens.
    Signing(TokenIssuer),
}

impl TokenSource {
    pub fn token(&self) -> anyhow::Result<String> {
        match self {
            TokenSource::Static(t) => Ok(t.clone()),
            TokenSource::Signing(issuer) => Ok(issuer.issue(&TokenSpec {
                role: Role::Registrar,
                subject: "registration-service".into(),
                org: None,
                county: None,
                ttl: Duration::from_secs(3600),
            })?),
        }
    }
}

/// The registration office's clock in China Standard Time. Tests shift it to pass deadlines.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

const CST: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(o) => o,
    Err(_) => UtcOffset::UTC,
};

impl Clock {
    pub fn now(&self) -> OffsetDateTime {
        let shift = time::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        (OffsetDateTime::now_utc() + shift).to_offset(CST)
    }

    pub fn now_ms(&self) -> i64 {
        (self.now().unix_timestamp_nanos() / 1_000_000) as i64
    }

    pub fn today(&self) -> Date {
        self.now().date()
    }

    /// Moves the clock forward (tests and drills only).
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }

    /// Moves the clock back, as a corrected host clock would (tests and drills only).
    pub fn set_back(&self, by: Duration) {
        self.offset_ms
            .fetch_sub(by.as_millis() as i64, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug)]
pub struct RegistrationConfig {
    /// gRPC URLs of the services whose feeds registration follows.
    pub survey_url: String,
    pub acceptance_url: String,
    pub tax_url: String,
    pub tokens: TokenSource,
    /// County code → name as printed on certificates (e.g. 140827 → 垣曲县).
    pub county_names: HashMap<String, String>,
    /// How often pending cases are checked against their material deadline.
    pub lapse_sweep_every: Duration,
    /// Units a feed batch of single-unit facts (契税, 维修资金) must touch before the follower
    /// applies it over several connections at once (PostgreSQL only).
    pub parallel_apply_min_units: usize,
    pub clock: Clock,
}

/// Parses "140827=垣曲县,140802=盐湖区".
pub fn parse_county_names(s: &str) -> Result<HashMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (code, name) = pair
                .split_once('=')
                .ok_or_else(|| format!("expected CODE=NAME, got {pair:?} (格式应为 代码=名称)"))?;
            let code = code.trim();
            if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "county code {code:?} is not 6 digits (区划代码应为6位数字)"
                ));
            }
            Ok((code.to_owned(), name.trim().to_owned()))
        })
        .collect()
}

pub const DEFAULT_COUNTIES: &str = "140827=垣曲县";
