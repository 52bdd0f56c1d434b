use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use tongjiao_auth::{Claims, LEEWAY_SECS, Role, TokenVerifier, bearer_token};
use tonic::{Request, Status, service::Interceptor};

use crate::ApiError;

/// Verifies the bearer JWT of every call and attaches its claims to the request.
///
/// A counter or a feed sends the same token on every call, and an Ed25519 check is most of what an
/// RPC on the read path costs, so tokens already verified are remembered (by their exact text,
/// signature included) until they expire.
#[derive(Clone)]
pub struct Authenticator {
    verifier: TokenVerifier,
    verified: Arc<RwLock<HashMap<String, Claims>>>,
}

/// Distinct live tokens remembered at most; past this the memory starts over.
const VERIFIED_MAX: usize = 10_000;

impl Authenticator {
    pub fn new(verifier: TokenVerifier) -> Self {
        Authenticator {
            verifier,
            verified: Arc::default(),
        }
    }

    fn claims_for(&self, token: &str) -> Result<Claims, Status> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // The same rule the verifier applies: expired once `exp` plus the leeway has passed.
        let live = |c: &Claims| now <= c.exp.saturating_add(LEEWAY_SECS);
        if let Some(c) = self
            .verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .filter(|c| live(c))
        {
            return Ok(c.clone());
        }
        let claims = self
            .verifier
            .verify(token)
            .map_err(|e| Status::from(ApiError::from(e)))?;
        let mut memo = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if memo.len() >= VERIFIED_MAX {
            memo.retain(|_, c| live(c));
            if memo.len() >= VERIFIED_MAX {
                memo.clear();
            }
        }
        memo.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated(
                    "missing authorization: Bearer token (缺少身份令牌 authorization 头)",
                )
            })?
            .to_str()
            .map_err(|_| {
                Status::unauthenticated("authorization header is not ASCII (身份令牌格式错误)")
            })?;
        let token = bearer_token(header).map_err(|e| Status::from(ApiError::from(e)))?;
        let claims = self.claims_for(token)?;
        req.extensions_mut().insert(claims);
        Ok(req)
    }
}

/// The verified caller of a request.
pub fn caller<T>(req: &Request<T>) -> Result<Claims, ApiError> {
    req.extensions()
        .get::<Claims>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthenticated("no verified token (未通过身份验证)".into()))
}

/// Refuses a caller whose role is not among `allowed`.
pub fn require_role(claims: &Claims, allowed: &[Role]) -> Result<(), ApiError> {
    if allowed.contains(&claims.role) {
        return Ok(());
    }
    let names: Vec<String> = allowed
        .iter()
        .map(|r| format!("{} ({})", r.as_str(), r.label_zh()))
        .collect();
    Err(ApiError::PermissionDenied(format!(
        "role {} ({}) may not call this; allowed: {} (无权调用)",
        claims.role.as_str(),
        claims.role.label_zh(),
        names.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tongjiao_auth::{KeyPair, TokenIssuer, TokenSpec};

    use super::*;

    fn setup() -> (Authenticator, TokenIssuer) {
        let kp = KeyPair::generate("k").expect("key pair");
        let issuer = TokenIssuer::from_pem(&kp.private_pem, "k", "iss", "aud").expect("issuer");
        let verifier = TokenVerifier::new("iss", "aud")
            .with_public_pem("k", &kp.public_pem)
            .expect("verifier");
        (Authenticator::new(verifier), issuer)
    }

    fn spec() -> TokenSpec {
        TokenSpec {
            role: Role::Clerk,
            subject: "clerk-1".into(),
            org: None,
            county: Some("140827".into()),
            ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn a_verified_token_is_remembered_and_others_are_still_checked() {
        let (auth, issuer) = setup();
        let token = issuer.issue(&spec()).expect("token");
        let first = auth.claims_for(&token).expect("valid");
        let again = auth.claims_for(&token).expect("remembered");
        assert_eq!(first.jti, again.jti);
        assert_eq!(auth.verified.read().expect("lock").len(), 1);
        // One character changed in the signature: a different text, verified afresh and refused.
        let mut tampered = token.clone();
        let last = tampered.pop().expect("non-empty");
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(
            auth.claims_for(&tampered).expect_err("tampered").code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn a_remembered_token_past_its_expiry_is_not_taken_from_memory() {
        let (auth, issuer) = setup();
        let token = issuer.issue(&spec()).expect("token");
        let mut claims = auth.claims_for(&token).expect("valid");
        // Pretend the remembered token expired long ago: memory must not vouch for it, and the
        // verifier is asked again (here it still accepts the real token, whose exp is ahead).
        claims.exp = 1;
        auth.verified
            .write()
            .expect("lock")
            .insert("stale-token".into(), claims);
        assert_eq!(
            auth.claims_for("stale-token")
                .expect_err("expired memory is ignored")
                .code(),
            tonic::Code::Unauthenticated
        );
    }
}
