use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::keys::{check_kid, check_private_pem};
use crate::{AuthError, Claims, Role};

/// What a token should say about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub role: Role,
    pub subject: String,
    /// 统一社会信用代码, for developers.
    pub org: Option<String>,
    /// 6-digit county code, for clerks and registrars.
    pub county: Option<String>,
    pub ttl: Duration,
}

/// Signs tokens with one Ed25519 private key.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    kid: String,
    issuer: String,
    audience: String,
}

impl TokenIssuer {
    pub fn from_pem(
        private_pem: &str,
        kid: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, AuthError> {
        check_kid(kid)?;
        if issuer.is_empty() || audience.is_empty() {
            return Err(AuthError::Key(
                "issuer and audience must not be empty (签发方与受众不能为空)".into(),
            ));
        }
        check_private_pem(private_pem)?;
        let key =
            EncodingKey::from_ed_pem(private_pem.as_bytes()).map_err(AuthError::from_encode)?;
        Ok(TokenIssuer {
            key,
            kid: kid.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Signs a token valid from now for `spec.ttl`.
    pub fn issue(&self, spec: &TokenSpec) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AuthError::Encode("system clock is before 1970 (系统时钟错误)".into()))?
            .as_secs();
        self.issue_at(spec, now)
    }

    /// Signs a token whose `iat` and `nbf` are `issued_at` (Unix seconds).
    /// Exists so tests and batch tools can produce tokens for another moment.
    pub fn issue_at(&self, spec: &TokenSpec, issued_at: u64) -> Result<String, AuthError> {
        if spec.subject.trim().is_empty() {
            return Err(AuthError::Encode("empty subject (主体为空)".into()));
        }
        let ttl = spec.ttl.as_secs();
        if ttl == 0 {
            return Err(AuthError::Encode(
                "ttl must be at least one second (有效期过短)".into(),
            ));
        }
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: spec.subject.clone(),
            role: spec.role,
            org: spec.org.clone(),
            county: spec.county.clone(),
            exp: issued_at.saturating_add(ttl),
            nbf: issued_at,
            iat: issued_at,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(AuthError::from_encode)
    }
}

// Hand-written so that logging an issuer never prints key material.
impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}
