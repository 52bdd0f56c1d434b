use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::keys::{check_kid, check_public_pem};
use crate::{AuthError, Claims};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Well above any token we issue (a few hundred bytes); refusing larger input
/// early keeps an attacker from making us base64-decode megabytes.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The pinned algorithm, as it appears in the JOSE header.
const PINNED_ALG: &str = "EdDSA";

/// Verifies tokens against a set of Ed25519 public keys selected by `kid`.
///
/// Cloning is cheap (one `Arc`), so every server can hold its own copy.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    issuer: String,
    audience: String,
    validation: Validation,
    keys: HashMap<String, DecodingKey>,
}

/// Only the header fields we decide on before handing over to jsonwebtoken.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
}

impl TokenVerifier {
    /// A verifier that knows no keys yet, so it refuses everything until
    /// [`TokenVerifier::with_public_pem`] adds one.
    pub fn new(issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        TokenVerifier {
            inner: Arc::new(Inner {
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                validation,
                keys: HashMap::new(),
            }),
        }
    }

    /// Adds (or replaces) the public key for `kid`. Call once per key that
    /// may still have live tokens, e.g. the current and the previous one.
    pub fn with_public_pem(mut self, kid: &str, public_pem: &str) -> Result<Self, AuthError> {
        check_kid(kid)?;
        check_public_pem(public_pem)?;
        let key = DecodingKey::from_ed_pem(public_pem.as_bytes())
            .map_err(|e| AuthError::Key(format!("unusable Ed25519 public key (公钥无效): {e}")))?;
        Arc::make_mut(&mut self.inner)
            .keys
            .insert(kid.to_owned(), key);
        Ok(self)
    }

    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    pub fn audience(&self) -> &str {
        &self.inner.audience
    }

    /// The known key ids, sorted.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.inner.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed(format!(
                "token longer than {MAX_TOKEN_LEN} bytes (令牌过长)"
            )));
        }

        let header = read_header(token)?;
        // Checked here as well as by jsonwebtoken so that `none` and unknown
        // algorithm names are reported as a policy refusal, not a parse error.
        if header.alg != PINNED_ALG {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Malformed("header has no `kid` (缺少密钥标识)".into()))?;
        let key = self
            .inner
            .keys
            .get(&kid)
            .ok_or(AuthError::UnknownKey(kid))?;

        let data = jsonwebtoken::decode::<Claims>(token, key, &self.inner.validation)
            .map_err(AuthError::from_verify)?;
        let claims = data.claims;
        // jsonwebtoken only checks that `sub` is present.
        if claims.sub.trim().is_empty() {
            return Err(AuthError::Malformed("empty `sub` claim (主体为空)".into()));
        }
        Ok(claims)
    }
}

fn read_header(token: &str) -> Result<RawHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "expected three dot-separated parts (应为三段式)".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|e| {
        AuthError::Malformed(format!("header is not base64url (头部编码错误): {e}"))
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AuthError::Malformed(format!("header is not valid JSON (头部格式错误): {e}")))
}

// Hand-written: DecodingKey's Debug is redacted already, but listing kids is
// what an operator actually wants to see.
impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("kids", &self.kids())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_three_parts() {
        assert!(matches!(read_header("a.b"), Err(AuthError::Malformed(_))));
        assert!(matches!(
            read_header("a.b.c.d"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            read_header("!!.b.c"),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn empty_and_oversized_tokens() {
        let v = TokenVerifier::new("i", "a");
        assert_eq!(v.verify("  "), Err(AuthError::MissingToken));
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(v.verify(&huge), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn clones_share_keys() {
        let kp = crate::KeyPair::generate("k1").unwrap();
        let v = TokenVerifier::new("i", "a")
            .with_public_pem(&kp.kid, &kp.public_pem)
            .unwrap();
        let c = v.clone();
        assert!(Arc::ptr_eq(&v.inner, &c.inner));
        assert_eq!(c.kids(), vec!["k1"]);
    }
}
