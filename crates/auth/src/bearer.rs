use crate::AuthError;

/// Parses an `authorization` header value "Bearer <token>" (case-insensitive scheme).
///
/// An empty value or a bare scheme is `MissingToken`; another scheme or a
/// token containing whitespace is `Malformed`.
pub fn bearer_token(header: &str) -> Result<&str, AuthError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(AuthError::MissingToken);
    }
    let (scheme, rest) = header
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(
            "authorization scheme must be Bearer (认证方式须为 Bearer)".into(),
        ));
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    if token.contains(|c: char| c.is_whitespace()) {
        return Err(AuthError::Malformed(
            "bearer token contains whitespace (令牌含空白字符)".into(),
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_any_scheme_case_and_extra_spaces() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), Ok("abc.def.ghi"));
        assert_eq!(bearer_token("bearer abc"), Ok("abc"));
        assert_eq!(bearer_token("BEARER abc"), Ok("abc"));
        assert_eq!(bearer_token("  Bearer   abc  "), Ok("abc"));
        assert_eq!(bearer_token("Bearer\tabc"), Ok("abc"));
    }

    #[test]
    fn missing_token() {
        assert_eq!(bearer_token(""), Err(AuthError::MissingToken));
        assert_eq!(bearer_token("   "), Err(AuthError::MissingToken));
        assert_eq!(bearer_token("Bearer"), Err(AuthError::MissingToken));
        assert_eq!(bearer_token("Bearer    "), Err(AuthError::MissingToken));
    }

    #[test]
    fn wrong_scheme_or_shape() {
        assert!(matches!(
            bearer_token("Basic dXNlcjpwdw=="),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            bearer_token("abc.def.ghi"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            bearer_token("Bearerabc"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            bearer_token("Bearer abc def"),
            Err(AuthError::Malformed(_))
        ));
    }
}
