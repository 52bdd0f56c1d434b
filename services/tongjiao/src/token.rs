//! Signing tokens with the sandbox (or any Ed25519) private key.
use std::{path::Path, time::Duration};

use anyhow::Context;
use tongjiao_auth::{Role, TokenIssuer, TokenSpec};
use tongjiao_domain::CreditCode;

use crate::error::usage;

/// What to put in a token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub role: Role,
    pub subject: String,
    pub org: Option<String>,
    pub county: Option<String>,
    pub ttl_hours: u64,
    pub kid: String,
    pub issuer: String,
    pub audience: String,
}

/// Checks the request: a developer needs a valid 统一社会信用代码, a county is 6 digits.
pub fn check(req: &TokenRequest) -> anyhow::Result<()> {
    if req.subject.trim().is_empty() {
        return Err(usage("--subject must not be empty (主体不能为空)"));
    }
    if req.ttl_hours == 0 || req.ttl_hours > 24 * 366 {
        return Err(usage(
            "--ttl-hours must be 1 to 8784 (有效期应为1小时至366天)",
        ));
    }
    match (&req.org, req.role) {
        (None, Role::Developer) => {
            return Err(usage(
                "a developer token needs --org with the developer's 统一社会信用代码 (开发企业令牌须指定 --org)",
            ));
        }
        (Some(org), _) => {
            org.parse::<CreditCode>()
                .map_err(|e| usage(format!("--org {org:?}: {e}")))?;
        }
        (None, _) => {}
    }
    if let Some(c) = &req.county
        && (c.len() != 6 || !c.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(usage(format!(
            "--county {c:?} must be a 6-digit county code such as 140827 (区县代码应为6位数字)"
        )));
    }
    Ok(())
}

/// Signs a token with `private_pem`.
pub fn issue_with_pem(private_pem: &str, req: &TokenRequest) -> anyhow::Result<String> {
    check(req)?;
    let issuer = TokenIssuer::from_pem(private_pem, &req.kid, &req.issuer, &req.audience)
        .context("loading the signing key (加载签名私钥)")?;
    let org = req
        .org
        .as_deref()
        .map(|o| o.parse::<CreditCode>().map(CreditCode::into_string))
        .transpose()
        .map_err(|e| usage(e.to_string()))?;
    Ok(issuer.issue(&TokenSpec {
        role: req.role,
        subject: req.subject.trim().to_owned(),
        org,
        county: req.county.clone(),
        ttl: Duration::from_secs(req.ttl_hours * 3600),
    })?)
}

/// Signs a token with the private key (PEM) at `key`.
pub fn issue_with_key_file(key: &Path, req: &TokenRequest) -> anyhow::Result<String> {
    check(req)?;
    let pem = std::fs::read_to_string(key).with_context(|| {
        format!(
            "cannot read the private key {} (无法读取私钥; run `tongjiao dev` once to create it)",
            key.display()
        )
    })?;
    issue_with_pem(&pem, req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tongjiao_auth::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, KeyPair, TokenVerifier};

    fn req(role: Role) -> TokenRequest {
        TokenRequest {
            role,
            subject: "counter-01".into(),
            org: None,
            county: Some("140827".into()),
            ttl_hours: 24,
            kid: "dev".into(),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
        }
    }

    fn temp_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tongjiao-token-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn issued_token_verifies_with_the_public_key() {
        let kp = KeyPair::generate("dev").unwrap();
        let dir = temp_dir();
        let key = dir.join("jwt-private.pem");
        std::fs::write(&key, &kp.private_pem).unwrap();
        let token = issue_with_key_file(&key, &req(Role::Clerk)).unwrap();
        let verifier = TokenVerifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE)
            .with_public_pem("dev", &kp.public_pem)
            .unwrap();
        let claims = verifier.verify(&token).unwrap();
        assert_eq!(claims.role, Role::Clerk);
        assert_eq!(claims.sub, "counter-01");
        assert_eq!(claims.county.as_deref(), Some("140827"));
        assert_eq!(claims.org, None);
        assert_eq!(claims.exp - claims.iat, 24 * 3600);
        // Another key does not verify it.
        let other = KeyPair::generate("dev").unwrap();
        let wrong = TokenVerifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE)
            .with_public_pem("dev", &other.public_pem)
            .unwrap();
        assert!(wrong.verify(&token).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn developer_token_carries_the_normalised_credit_code() {
        let kp = KeyPair::generate("dev").unwrap();
        let first17 = "91140827MA0YQTJ01";
        let check = tongjiao_domain::credit_code_check_char(first17).unwrap();
        let code = format!("{first17}{check}");
        let mut r = req(Role::Developer);
        r.county = None;
        r.org = Some(code.to_lowercase());
        let token = issue_with_pem(&kp.private_pem, &r).unwrap();
        let claims = TokenVerifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE)
            .with_public_pem("dev", &kp.public_pem)
            .unwrap()
            .verify(&token)
            .unwrap();
        assert_eq!(claims.role, Role::Developer);
        assert_eq!(claims.org.as_deref(), Some(code.as_str()));
    }

    #[test]
    fn bad_requests_are_usage_errors() {
        let kp = KeyPair::generate("dev").unwrap();
        let mut r = req(Role::Developer);
        r.county = None;
        let e = issue_with_pem(&kp.private_pem, &r).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
        let first17 = "91140827MA0YQTJ01";
        let good = tongjiao_domain::credit_code_check_char(first17).unwrap();
        let wrong = if good == '0' { '1' } else { '0' };
        r.org = Some(format!("{first17}{wrong}"));
        assert!(issue_with_pem(&kp.private_pem, &r).is_err());
        let mut r = req(Role::Clerk);
        r.county = Some("14082".into());
        assert_eq!(
            crate::error::exit_code(&issue_with_pem(&kp.private_pem, &r).unwrap_err()),
            2
        );
        let missing =
            issue_with_key_file(Path::new("/nonexistent/key.pem"), &req(Role::Clerk)).unwrap_err();
        assert_eq!(crate::error::exit_code(&missing), 1);
        assert!(format!("{missing:#}").contains("/nonexistent/key.pem"));
    }
}
