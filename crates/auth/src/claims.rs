use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Who is calling. Carried in the `role` claim as a snake_case string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 开发企业
    Developer,
    /// 住建局
    HousingBureau,
    /// 税务局
    TaxBureau,
    /// 窗口人员
    Clerk,
    /// 登记员
    Registrar,
    /// 审计
    Auditor,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Developer,
        Role::HousingBureau,
        Role::TaxBureau,
        Role::Clerk,
        Role::Registrar,
        Role::Auditor,
    ];

    /// The wire name, identical to the serde form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Developer => "developer",
            Role::HousingBureau => "housing_bureau",
            Role::TaxBureau => "tax_bureau",
            Role::Clerk => "clerk",
            Role::Registrar => "registrar",
            Role::Auditor => "auditor",
        }
    }

    pub const fn label_zh(self) -> &'static str {
        match self {
            Role::Developer => "开发企业",
            Role::HousingBureau => "住建局",
            Role::TaxBureau => "税务局",
            Role::Clerk => "窗口人员",
            Role::Registrar => "登记员",
            Role::Auditor => "审计",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}` (未知角色)")]
pub struct ParseRoleError(pub String);

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseRoleError(s.to_owned()))
    }
}

/// The JWT payload of every tongjiao token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub role: Role,
    /// 统一社会信用代码 of the developer the subject acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// 6-digit administrative county code a clerk or registrar works in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub county: Option<String>,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_wire_names_match_serde() {
        for role in Role::ALL {
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(role.to_string(), role.as_str());
            assert!(!role.label_zh().is_empty());
        }
        assert_eq!(
            serde_json::from_str::<Role>("\"housing_bureau\"").unwrap(),
            Role::HousingBureau
        );
        assert_eq!(Role::TaxBureau.label_zh(), "税务局");
    }

    #[test]
    fn unknown_role_is_rejected() {
        let err = "Clerk".parse::<Role>().unwrap_err();
        assert_eq!(err, ParseRoleError("Clerk".into()));
        assert!(serde_json::from_str::<Role>("\"admin\"").is_err());
    }

    #[test]
    fn absent_org_and_county_are_omitted() {
        let claims = Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "s".into(),
            role: Role::Auditor,
            org: None,
            county: None,
            exp: 2,
            nbf: 1,
            iat: 1,
            jti: "j".into(),
        };
        let json = serde_json::to_value(&claims).unwrap();
        assert!(json.get("org").is_none());
        assert!(json.get("county").is_none());
        assert_eq!(serde_json::from_value::<Claims>(json).unwrap(), claims);
    }
}
