use std::{fmt, str::FromStr};

/// 10 million ㎡ in 0.01 ㎡, far above any single unit or parcel, so a larger
/// value is a unit mix-up (㎡ vs 0.01 ㎡) rather than a real measurement.
const MAX_AREA_CENTI: i64 = 1_000_000_000;
/// Tolerance of the area identity: one rounding step of 0.01 ㎡.
const AREA_TOLERANCE_CENTI: i64 = 1;

/// Why a decimal with two places could not be read.
enum DecimalError {
    Syntax,
    Overflow,
}

/// Parses `123`, `123.4` or `123.45` into hundredths.
fn parse_hundredths(s: &str) -> Result<i64, DecimalError> {
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (s, ""),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || frac.len() > 2 || !digits(frac) {
        return Err(DecimalError::Syntax);
    }
    if s.ends_with('.') {
        return Err(DecimalError::Syntax);
    }
    let mut value: i64 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or(DecimalError::Overflow)?;
    }
    if frac.len() < 2 {
        let scale = if frac.is_empty() { 100 } else { 10 };
        value = value.checked_mul(scale).ok_or(DecimalError::Overflow)?;
    }
    Ok(value)
}

fn write_hundredths(f: &mut fmt::Formatter<'_>, v: i64) -> fmt::Result {
    write!(f, "{}.{:02}", v / 100, v % 100)
}

/// Why an area is invalid, or why 实测 areas do not add up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AreaError {
    /// Negative value.
    #[error("must not be negative (面积不能为负数)")]
    Negative,
    /// Above 10 million ㎡.
    #[error("must not exceed 10000000.00 ㎡ (面积不能超过1000万平方米)")]
    TooLarge,
    /// Not a plain decimal with at most two places.
    #[error(
        "must be square metres with at most two decimals, e.g. 104.61 (面积应为最多两位小数的平方米数)"
    )]
    Syntax,
    /// 实测建筑面积 is zero.
    #[error("measured gross floor area must be greater than 0 (实测建筑面积应大于0)")]
    GfaNotPositive,
    /// 套内建筑面积 is zero.
    #[error("internal floor area must be greater than 0 (套内建筑面积应大于0)")]
    InternalNotPositive,
    /// 建筑面积 ≠ 套内 + 分摊 beyond 0.01 ㎡.
    #[error(
        "gross floor area differs from internal plus shared area by more than 0.01 ㎡ (实测建筑面积 {gfa} ≠ 套内 {internal} + 分摊 {shared})"
    )]
    Identity {
        /// 实测建筑面积.
        gfa: Area,
        /// 套内建筑面积.
        internal: Area,
        /// 分摊建筑面积.
        shared: Area,
    },
}

/// An area in hundredths of a square metre (0.01 ㎡), the precision of
/// 房产测量 results, kept as an integer so sums are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "i64", into = "i64")
)]
pub struct Area(i64);

impl Area {
    /// 0 ㎡.
    pub const ZERO: Area = Area(0);
    /// The largest accepted area, 10 000 000.00 ㎡.
    pub const MAX: Area = Area(MAX_AREA_CENTI);

    /// From hundredths of a square metre; 0 to 1 000 000 000 (10 million ㎡).
    pub fn from_centi(centi: i64) -> Result<Self, AreaError> {
        if centi < 0 {
            Err(AreaError::Negative)
        } else if centi > MAX_AREA_CENTI {
            Err(AreaError::TooLarge)
        } else {
            Ok(Self(centi))
        }
    }

    /// The value in hundredths of a square metre.
    #[must_use]
    pub fn centi(self) -> i64 {
        self.0
    }

    /// Sum, `None` past [`Area::MAX`].
    #[must_use]
    pub fn checked_add(self, other: Area) -> Option<Area> {
        Self::from_centi(self.0.checked_add(other.0)?).ok()
    }

    /// Difference, `None` when it would be negative.
    #[must_use]
    pub fn checked_sub(self, other: Area) -> Option<Area> {
        Self::from_centi(self.0.checked_sub(other.0)?).ok()
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hundredths(f, self.0)
    }
}

impl FromStr for Area {
    type Err = AreaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse_hundredths(s) {
            Ok(v) => Self::from_centi(v),
            Err(DecimalError::Syntax) => Err(AreaError::Syntax),
            Err(DecimalError::Overflow) => Err(AreaError::TooLarge),
        }
    }
}

impl TryFrom<i64> for Area {
    type Error = AreaError;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::from_centi(value)
    }
}

impl From<Area> for i64 {
    fn from(value: Area) -> i64 {
        value.0
    }
}

/// GB/T 17986: 建筑面积 = 套内建筑面积 + 分摊共有建筑面积, within one
/// rounding step (0.01 ㎡) because each figure is rounded separately.
pub fn check_area_identity(gfa: Area, internal: Area, shared: Area) -> Result<(), AreaError> {
    if gfa.0 <= 0 {
        return Err(AreaError::GfaNotPositive);
    }
    if internal.0 <= 0 {
        return Err(AreaError::InternalNotPositive);
    }
    if (gfa.0 - (internal.0 + shared.0)).abs() > AREA_TOLERANCE_CENTI {
        return Err(AreaError::Identity {
            gfa,
            internal,
            shared,
        });
    }
    Ok(())
}

/// Why an amount of money is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Negative amount.
    #[error("must not be negative (金额不能为负数)")]
    Negative,
    /// Not a plain decimal with at most two places.
    #[error("must be yuan with at most two decimals, e.g. 1234.56 (金额应为最多两位小数的元)")]
    Syntax,
    /// Does not fit.
    #[error("is too large (金额过大)")]
    TooLarge,
}

/// An amount in fen (分, 0.01 元), kept as an integer so tax sums are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "i64", into = "i64")
)]
pub struct Money(i64);

impl Money {
    /// 0 元.
    pub const ZERO: Money = Money(0);

    /// From fen; must not be negative.
    pub fn from_fen(fen: i64) -> Result<Self, MoneyError> {
        if fen < 0 {
            Err(MoneyError::Negative)
        } else {
            Ok(Self(fen))
        }
    }

    /// The amount in fen.
    #[must_use]
    pub fn fen(self) -> i64 {
        self.0
    }

    /// Sum, `None` on overflow.
    #[must_use]
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Self)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hundredths(f, self.0)?;
        f.write_str("元")
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    /// Accepts `1234.56` with an optional trailing `元`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse_hundredths(s.strip_suffix('元').unwrap_or(s)) {
            Ok(v) => Self::from_fen(v),
            Err(DecimalError::Syntax) => Err(MoneyError::Syntax),
            Err(DecimalError::Overflow) => Err(MoneyError::TooLarge),
        }
    }
}

impl TryFrom<i64> for Money {
    type Error = MoneyError;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::from_fen(value)
    }
}

impl From<Money> for i64 {
    fn from(value: Money) -> i64 {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> Area {
        s.parse().unwrap()
    }

    #[test]
    fn area_parse_and_display() {
        assert_eq!(a("104.61").centi(), 10461);
        assert_eq!(a("104.6").centi(), 10460);
        assert_eq!(a("104").centi(), 10400);
        assert_eq!(a("0.05").centi(), 5);
        assert_eq!(a("10000000").centi(), MAX_AREA_CENTI);
        assert_eq!(a("104.6").to_string(), "104.60");
        assert_eq!(Area::from_centi(5).unwrap().to_string(), "0.05");
        assert_eq!(Area::ZERO.to_string(), "0.00");
        for bad in [
            "", ".5", "104.", "104.611", "-1", "1e3", "104,61", " 104", "104.6a", "1.2.3",
        ] {
            assert_eq!(bad.parse::<Area>(), Err(AreaError::Syntax), "{bad:?}");
        }
        assert_eq!("10000000.01".parse::<Area>(), Err(AreaError::TooLarge));
        assert_eq!(
            "99999999999999999999999".parse::<Area>(),
            Err(AreaError::TooLarge)
        );
        assert_eq!(Area::from_centi(-1), Err(AreaError::Negative));
        assert_eq!(
            Area::from_centi(MAX_AREA_CENTI + 1),
            Err(AreaError::TooLarge)
        );
    }

    #[test]
    fn area_arithmetic() {
        assert_eq!(a("85").checked_add(a("19.61")), Some(a("104.61")));
        assert_eq!(Area::MAX.checked_add(a("0.01")), None);
        assert_eq!(a("1").checked_sub(a("2")), None);
        assert_eq!(a("2").checked_sub(a("0.5")), Some(a("1.5")));
    }

    #[test]
    fn area_identity() {
        assert_eq!(
            check_area_identity(a("104.61"), a("85.61"), a("19")),
            Ok(())
        );
        assert_eq!(
            check_area_identity(a("104.61"), a("85.60"), a("19")),
            Ok(())
        );
        assert_eq!(
            check_area_identity(a("104.61"), a("85.62"), a("19")),
            Ok(())
        );
        assert_eq!(check_area_identity(a("40"), a("40"), Area::ZERO), Ok(()));
        let err = check_area_identity(a("104.61"), a("85"), a("19")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "gross floor area differs from internal plus shared area by more than 0.01 ㎡ \
             (实测建筑面积 104.61 ≠ 套内 85.00 + 分摊 19.00)"
        );
        assert_eq!(
            check_area_identity(Area::ZERO, Area::ZERO, Area::ZERO),
            Err(AreaError::GfaNotPositive)
        );
        assert_eq!(
            check_area_identity(a("10"), Area::ZERO, a("10")),
            Err(AreaError::InternalNotPositive)
        );
    }

    #[test]
    fn money() {
        let m = Money::from_fen(123_456).unwrap();
        assert_eq!(m.to_string(), "1234.56元");
        assert_eq!(Money::from_fen(5).unwrap().to_string(), "0.05元");
        assert_eq!(Money::from_fen(-1), Err(MoneyError::Negative));
        assert_eq!("1234.56".parse::<Money>(), Ok(m));
        assert_eq!("1234.56元".parse::<Money>(), Ok(m));
        assert_eq!("1234.5".parse::<Money>().map(Money::fen), Ok(123_450));
        assert_eq!("12元元".parse::<Money>(), Err(MoneyError::Syntax));
        assert_eq!("-3".parse::<Money>(), Err(MoneyError::Syntax));
        assert_eq!(
            "999999999999999999".parse::<Money>(),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(m.checked_add(Money::ZERO), Some(m));
        assert_eq!(Money::from_fen(i64::MAX).unwrap().checked_add(m), None);
    }

    proptest! {
        #[test]
        fn area_display_parse_round_trip(centi in 0i64..=MAX_AREA_CENTI) {
            let area = Area::from_centi(centi).unwrap();
            prop_assert_eq!(area.to_string().parse::<Area>(), Ok(area));
        }

        #[test]
        fn money_display_parse_round_trip(fen in 0i64..=i64::MAX) {
            let m = Money::from_fen(fen).unwrap();
            prop_assert_eq!(m.to_string().parse::<Money>(), Ok(m));
        }
    }
}
