use tongjiao_auth::{Claims, Role, TokenVerifier, bearer_token};
use tonic::{Request, Status, service::Interceptor};

use crate::ApiError;

/// Verifies the bearer JWT of every call and attaches its claims to the request.
#[derive(Clone)]
pub struct Authenticator {
    verifier: TokenVerifier,
}

impl Authenticator {
    pub fn new(verifier: TokenVerifier) -> Self {
        Authenticator { verifier }
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
        let claims = bearer_token(header)
            .and_then(|t| self.verifier.verify(t))
            .map_err(|e| Status::from(ApiError::from(e)))?;
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
