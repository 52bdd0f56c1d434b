use jsonwebtoken::errors::{Error as JwtError, ErrorKind};

/// Why a token could not be issued or was refused.
///
/// Variants up to `AlgorithmNotAllowed` describe the caller's credentials
/// (map them to `UNAUTHENTICATED`); `Key` and `Encode` are server-side faults.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (缺少令牌)")]
    MissingToken,
    #[error("malformed token (令牌格式错误): {0}")]
    Malformed(String),
    #[error("unknown signing key id `{0}` (未知密钥标识)")]
    UnknownKey(String),
    #[error("token expired (令牌已过期)")]
    Expired,
    #[error("token not yet valid (令牌尚未生效)")]
    NotYetValid,
    #[error("wrong token issuer (签发方不符)")]
    WrongIssuer,
    #[error("wrong token audience (受众不符)")]
    WrongAudience,
    #[error("invalid token signature (签名无效)")]
    BadSignature,
    #[error("signing algorithm not allowed, only EdDSA is accepted (签名算法不被允许)")]
    AlgorithmNotAllowed,
    #[error("invalid key (密钥无效): {0}")]
    Key(String),
    #[error("token encoding failed (令牌签发失败): {0}")]
    Encode(String),
}

impl AuthError {
    /// True when the fault lies with the presented token rather than with the
    /// server's keys or clock, i.e. the RPC should fail `UNAUTHENTICATED`.
    pub fn is_credential_error(&self) -> bool {
        !matches!(self, AuthError::Key(_) | AuthError::Encode(_))
    }

    /// Maps a jsonwebtoken failure raised while verifying a token.
    pub(crate) fn from_verify(err: JwtError) -> Self {
        match err.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
            ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => AuthError::Key(err.to_string()),
            ErrorKind::MissingRequiredClaim(claim) => {
                AuthError::Malformed(format!("missing claim `{claim}` (缺少声明)"))
            }
            ErrorKind::InvalidClaimFormat(claim) => {
                AuthError::Malformed(format!("invalid claim `{claim}` (声明格式错误)"))
            }
            // InvalidToken, Base64, Json, Utf8 and whatever a later
            // jsonwebtoken adds: the token itself is unreadable.
            _ => AuthError::Malformed(err.to_string()),
        }
    }

    /// Maps a jsonwebtoken failure raised while signing a token.
    pub(crate) fn from_encode(err: JwtError) -> Self {
        match err.kind() {
            ErrorKind::InvalidEddsaKey | ErrorKind::InvalidKeyFormat => {
                AuthError::Key(err.to_string())
            }
            _ => AuthError::Encode(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_english_and_chinese() {
        assert_eq!(AuthError::Expired.to_string(), "token expired (令牌已过期)");
        assert_eq!(
            AuthError::UnknownKey("k9".into()).to_string(),
            "unknown signing key id `k9` (未知密钥标识)"
        );
    }

    #[test]
    fn server_faults_are_not_credential_errors() {
        assert!(AuthError::BadSignature.is_credential_error());
        assert!(AuthError::MissingToken.is_credential_error());
        assert!(!AuthError::Key("x".into()).is_credential_error());
        assert!(!AuthError::Encode("x".into()).is_credential_error());
    }
}
