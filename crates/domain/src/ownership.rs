use std::{fmt, str::FromStr};

use crate::UnknownValueError;

/// Basis points making up a whole property (100%).
const WHOLE: u64 = 10_000;

/// 共有情况: how the buyers hold the property, printed on the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum CoOwnership {
    /// 单独所有: one owner.
    Sole,
    /// 共同共有: joint owners without shares (e.g. spouses).
    Joint,
    /// 按份共有: owners with recorded shares.
    InShares,
}

impl CoOwnership {
    const IDS: &'static [&'static str] = &["sole", "joint", "in_shares"];

    /// Stable lowercase id.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sole => "sole",
            Self::Joint => "joint",
            Self::InShares => "in_shares",
        }
    }

    /// The wording printed on the certificate.
    #[must_use]
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::Sole => "单独所有",
            Self::Joint => "共同共有",
            Self::InShares => "按份共有",
        }
    }
}

impl fmt::Display for CoOwnership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CoOwnership {
    type Err = UnknownValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sole" => Ok(Self::Sole),
            "joint" => Ok(Self::Joint),
            "in_shares" => Ok(Self::InShares),
            _ => Err(UnknownValueError {
                value: s.to_owned(),
                expected: Self::IDS,
                term_zh: "共有情况",
            }),
        }
    }
}

/// Why the buyers' shares do not fit the co-ownership form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoOwnershipError {
    /// Sole ownership with other than one buyer.
    #[error("sole ownership needs exactly one buyer, got {0} (单独所有应只有一位权利人)")]
    SoleBuyerCount(usize),
    /// Sole ownership with a partial share.
    #[error(
        "sole ownership share must be 0 (unspecified) or 10000 basis points, got {0} (单独所有的份额应为100%)"
    )]
    SoleShare(u32),
    /// Joint ownership with fewer than two buyers.
    #[error("joint ownership needs at least two buyers, got {0} (共同共有应至少有两位权利人)")]
    JointBuyerCount(usize),
    /// Joint ownership with shares.
    #[error("joint ownership must not record shares; buyer {0} has one (共同共有不应登记份额)")]
    JointShare(usize),
    /// Shared ownership with fewer than two buyers.
    #[error("ownership in shares needs at least two buyers, got {0} (按份共有应至少有两位权利人)")]
    InSharesBuyerCount(usize),
    /// A zero share in shared ownership (1-based buyer number).
    #[error("buyer {0} must hold a share greater than 0 (按份共有每位权利人的份额应大于0)")]
    ZeroShare(usize),
    /// Shares do not add up to the whole.
    #[error(
        "shares must add up to 10000 basis points (100%), got {0} (按份共有的份额之和应为100%)"
    )]
    ShareSum(u64),
}

/// Checks the buyers' shares (basis points, 10000 = 100%, one per buyer)
/// against the co-ownership form.
pub fn check_co_ownership(
    kind: CoOwnership,
    shares_basis_points: &[u32],
) -> Result<(), CoOwnershipError> {
    let n = shares_basis_points.len();
    match kind {
        CoOwnership::Sole => {
            if n != 1 {
                return Err(CoOwnershipError::SoleBuyerCount(n));
            }
            match shares_basis_points.first() {
                Some(&s) if s != 0 && u64::from(s) != WHOLE => Err(CoOwnershipError::SoleShare(s)),
                _ => Ok(()),
            }
        }
        CoOwnership::Joint => {
            if n < 2 {
                return Err(CoOwnershipError::JointBuyerCount(n));
            }
            match shares_basis_points.iter().position(|s| *s != 0) {
                Some(i) => Err(CoOwnershipError::JointShare(i + 1)),
                None => Ok(()),
            }
        }
        CoOwnership::InShares => {
            if n < 2 {
                return Err(CoOwnershipError::InSharesBuyerCount(n));
            }
            if let Some(i) = shares_basis_points.iter().position(|s| *s == 0) {
                return Err(CoOwnershipError::ZeroShare(i + 1));
            }
            let sum: u64 = shares_basis_points.iter().map(|s| u64::from(*s)).sum();
            if sum != WHOLE {
                return Err(CoOwnershipError::ShareSum(sum));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CoOwnership::{InShares, Joint, Sole};
    use CoOwnershipError as E;

    #[test]
    fn labels_and_ids() {
        assert_eq!(Sole.label_zh(), "单独所有");
        assert_eq!(Joint.label_zh(), "共同共有");
        assert_eq!(InShares.label_zh(), "按份共有");
        for k in [Sole, Joint, InShares] {
            assert_eq!(k.as_str().parse::<CoOwnership>(), Ok(k));
        }
        let err = "shared".parse::<CoOwnership>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown value \"shared\"; expected one of sole, joint, in_shares (共有情况取值无效)"
        );
    }

    #[test]
    fn sole() {
        assert_eq!(check_co_ownership(Sole, &[0]), Ok(()));
        assert_eq!(check_co_ownership(Sole, &[10_000]), Ok(()));
        assert_eq!(check_co_ownership(Sole, &[]), Err(E::SoleBuyerCount(0)));
        assert_eq!(check_co_ownership(Sole, &[0, 0]), Err(E::SoleBuyerCount(2)));
        assert_eq!(check_co_ownership(Sole, &[5_000]), Err(E::SoleShare(5_000)));
    }

    #[test]
    fn joint() {
        assert_eq!(check_co_ownership(Joint, &[0, 0]), Ok(()));
        assert_eq!(check_co_ownership(Joint, &[0, 0, 0]), Ok(()));
        assert_eq!(check_co_ownership(Joint, &[0]), Err(E::JointBuyerCount(1)));
        assert_eq!(
            check_co_ownership(Joint, &[0, 5_000]),
            Err(E::JointShare(2))
        );
    }

    #[test]
    fn in_shares() {
        assert_eq!(check_co_ownership(InShares, &[5_000, 5_000]), Ok(()));
        assert_eq!(check_co_ownership(InShares, &[3_334, 3_333, 3_333]), Ok(()));
        assert_eq!(
            check_co_ownership(InShares, &[10_000]),
            Err(E::InSharesBuyerCount(1))
        );
        assert_eq!(
            check_co_ownership(InShares, &[10_000, 0]),
            Err(E::ZeroShare(2))
        );
        assert_eq!(
            check_co_ownership(InShares, &[5_000, 4_999]),
            Err(E::ShareSum(9_999))
        );
        assert_eq!(
            check_co_ownership(InShares, &[u32::MAX, u32::MAX]),
            Err(E::ShareSum(2 * u64::from(u32::MAX)))
        );
    }
}
