use std::{fmt, str::FromStr};

const PROJECT_ID_MAX: usize = 64;
const REQUEST_ID_MAX: usize = 128;

/// Why a 项目编号 is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectIdError {
    /// Empty.
    #[error("must not be empty (项目编号不能为空)")]
    Empty,
    /// Longer than 64 characters.
    #[error("must be at most 64 characters, got {0} (项目编号最长64位)")]
    TooLong(usize),
    /// Character outside `[A-Za-z0-9_-]`.
    #[error(
        "may only contain A-Z, a-z, 0-9, '_' and '-', got {0:?} (项目编号只能包含字母、数字、下划线和连字符)"
    )]
    InvalidChar(char),
}

/// 项目编号: 1-64 characters of `[A-Za-z0-9_-]`, safe in URLs, keys and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct ProjectId(String);

string_newtype!(ProjectId, 0);

impl FromStr for ProjectId {
    type Err = ProjectIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ProjectIdError::Empty);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
        {
            return Err(ProjectIdError::InvalidChar(c));
        }
        if s.len() > PROJECT_ID_MAX {
            return Err(ProjectIdError::TooLong(s.len()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a 请求编号 is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestIdError {
    /// Empty.
    #[error("must not be empty (请求编号不能为空)")]
    Empty,
    /// Longer than 128 characters.
    #[error("must be at most 128 characters, got {0} (请求编号最长128位)")]
    TooLong(usize),
    /// Space, control or non-ASCII character.
    #[error(
        "may only contain printable ASCII without spaces, got {0:?} (请求编号只能包含不含空格的可打印ASCII字符)"
    )]
    InvalidChar(char),
}

/// 请求编号, the client-chosen idempotency key: 1-128 printable ASCII
/// characters without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct RequestId(String);

string_newtype!(RequestId, 0);

impl FromStr for RequestId {
    type Err = RequestIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(RequestIdError::Empty);
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(RequestIdError::InvalidChar(c));
        }
        if s.len() > REQUEST_ID_MAX {
            return Err(RequestIdError::TooLong(s.len()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a SHA-256 hex digest is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Sha256HexError {
    /// Not 64 characters.
    #[error("must be exactly 64 hexadecimal characters, got {0} (SHA-256摘要应为64位十六进制)")]
    Length(usize),
    /// Non-hex character.
    #[error("must contain only hexadecimal digits, got {0:?} (SHA-256摘要只能包含十六进制字符)")]
    NotHex(char),
}

/// A SHA-256 digest as 64 lower-case hex characters, so equal digests compare
/// equal as strings whatever case the client sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct Sha256Hex(String);

string_newtype!(Sha256Hex, 0);

impl Sha256Hex {
    /// From the 32 raw digest bytes.
    #[must_use]
    pub fn from_digest(bytes: [u8; 32]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in bytes {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        Self(s)
    }
}

impl FromStr for Sha256Hex {
    type Err = Sha256HexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(c) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(Sha256HexError::NotHex(c));
        }
        if s.len() != 64 {
            return Err(Sha256HexError::Length(s.len()));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids() {
        assert_eq!(
            "yq-2026_A1".parse::<ProjectId>().unwrap().as_str(),
            "yq-2026_A1"
        );
        assert!("a".repeat(64).parse::<ProjectId>().is_ok());
        assert_eq!("".parse::<ProjectId>(), Err(ProjectIdError::Empty));
        assert_eq!(
            "a".repeat(65).parse::<ProjectId>(),
            Err(ProjectIdError::TooLong(65))
        );
        assert_eq!(
            "a b".parse::<ProjectId>(),
            Err(ProjectIdError::InvalidChar(' '))
        );
        assert_eq!(
            "项目".parse::<ProjectId>(),
            Err(ProjectIdError::InvalidChar('项'))
        );
    }

    #[test]
    fn request_ids() {
        assert!("req:01J/abc+=~".parse::<RequestId>().is_ok());
        assert!("x".repeat(128).parse::<RequestId>().is_ok());
        assert_eq!("".parse::<RequestId>(), Err(RequestIdError::Empty));
        assert_eq!(
            "x".repeat(129).parse::<RequestId>(),
            Err(RequestIdError::TooLong(129))
        );
        assert_eq!(
            "a b".parse::<RequestId>(),
            Err(RequestIdError::InvalidChar(' '))
        );
        assert_eq!(
            "a\tb".parse::<RequestId>(),
            Err(RequestIdError::InvalidChar('\t'))
        );
        assert_eq!(
            "请求".parse::<RequestId>(),
            Err(RequestIdError::InvalidChar('请'))
        );
    }

    #[test]
    fn sha256_hex() {
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let h: Sha256Hex = upper.parse().unwrap();
        assert_eq!(h.as_str(), upper.to_ascii_lowercase());
        assert_eq!("ab".parse::<Sha256Hex>(), Err(Sha256HexError::Length(2)));
        assert_eq!(
            format!("{}g", &upper[..63]).parse::<Sha256Hex>(),
            Err(Sha256HexError::NotHex('g'))
        );
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x0f;
        let d = Sha256Hex::from_digest(bytes);
        assert!(d.as_str().starts_with("ab00"));
        assert!(d.as_str().ends_with("000f"));
        assert_eq!(d.as_str().parse::<Sha256Hex>(), Ok(d));
    }
}
