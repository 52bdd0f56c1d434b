use std::{fmt, str::FromStr};

/// The 31 symbols of GB 32100; a symbol's value is its index. I O S V Z are
/// left out because they are easily confused with digits.
const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// 3^i mod 31.
const WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// Why a 统一社会信用代码 is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditCodeError {
    /// Not 18 characters.
    #[error("must be 18 characters, got {0} (统一社会信用代码应为18位)")]
    Length(usize),
    /// A character outside the alphabet (1-based position).
    #[error(
        "character {position} {ch:?} is not allowed; use digits and capital letters except I, O, S, V, Z (统一社会信用代码含非法字符)"
    )]
    InvalidChar {
        /// 1-based position.
        position: usize,
        /// The rejected character.
        ch: char,
    },
    /// Characters 3-8 are not digits.
    #[error("characters 3-8 must be digits (登记管理机关行政区划码应为6位数字)")]
    DivisionCode,
    /// Check character mismatch.
    #[error("check character should be {expected}, got {actual} (校验码错误)")]
    CheckChar {
        /// The character the first 17 call for.
        expected: char,
        /// The character found.
        actual: char,
    },
}

fn value_of(c: u8) -> Option<u32> {
    ALPHABET
        .iter()
        .position(|a| *a == c)
        .and_then(|p| u32::try_from(p).ok())
}

/// Check over 17 values already mapped through the alphabet.
fn check_char_of(values: &[u32]) -> char {
    let sum: u32 = values.iter().zip(WEIGHTS).map(|(v, w)| v * w).sum();
    // GB 32100 maps the "31" result to '0'; some public implementations miss it.
    let c = (31 - sum % 31) % 31;
    char::from(ALPHABET[c as usize])
}

/// The GB 32100 check character for the first 17 characters of a credit
/// code (lower case accepted), or `None` unless all 17 are in the alphabet.
#[must_use]
pub fn credit_code_check_char(first17: &str) -> Option<char> {
    let b = first17.as_bytes();
    if b.len() != 17 {
        return None;
    }
    let values = b
        .iter()
        .map(|c| value_of(c.to_ascii_uppercase()))
        .collect::<Option<Vec<u32>>>()?;
    Some(check_char_of(&values))
}

/// 统一社会信用代码 (GB 32100-2015), normalised to upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct CreditCode(String);

string_newtype!(CreditCode, 0);

impl FromStr for CreditCode {
    type Err = CreditCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let count = s.chars().count();
        if count != 18 {
            return Err(CreditCodeError::Length(count));
        }
        let mut values = Vec::with_capacity(18);
        for (i, ch) in s.chars().enumerate() {
            let upper = ch.to_ascii_uppercase();
            let v = u8::try_from(upper).ok().and_then(value_of).ok_or(
                CreditCodeError::InvalidChar {
                    position: i + 1,
                    ch,
                },
            )?;
            values.push(v);
        }
        if values[2..8].iter().any(|v| *v > 9) {
            return Err(CreditCodeError::DivisionCode);
        }
        let normalised: String = s.chars().map(|c| c.to_ascii_uppercase()).collect();
        let expected = check_char_of(&values[..17]);
        let actual = char::from(normalised.as_bytes()[17]);
        if actual != expected {
            return Err(CreditCodeError::CheckChar { expected, actual });
        }
        Ok(Self(normalised))
    }
}

impl fmt::Display for CreditCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl CreditCode {
    /// 登记管理部门码 (character 1), e.g. `9` for 市场监管 (工商).
    #[must_use]
    pub fn registration_authority(&self) -> char {
        char::from(self.0.as_bytes()[0])
    }

    /// 登记管理机关行政区划码 (characters 3-8).
    #[must_use]
    pub fn division_code(&self) -> &str {
        &self.0[2..8]
    }

    /// 主体标识码 (组织机构代码, characters 9-17; the last is its own GB 11714 check).
    #[must_use]
    pub fn organization_code(&self) -> &str {
        &self.0[8..17]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vectors() {
        for s in [
            "91350100M000100Y43",
            "124128000059477385",
            "11100000MB03271699",
        ] {
            let c: CreditCode = s.parse().unwrap();
            assert_eq!(c.as_str(), s);
        }
        let c: CreditCode = "91350100M000100Y43".parse().unwrap();
        assert_eq!(c.registration_authority(), '9');
        assert_eq!(c.division_code(), "350100");
        assert_eq!(c.organization_code(), "M000100Y4");
        assert_eq!(credit_code_check_char("91350100M000100Y4"), Some('3'));
        assert_eq!(credit_code_check_char("12412800005947738"), Some('5'));
    }

    #[test]
    fn lowercase_is_normalised() {
        let c: CreditCode = "91350100m000100y43".parse().unwrap();
        assert_eq!(c.as_str(), "91350100M000100Y43");
        assert_eq!(credit_code_check_char("91350100m000100y4"), Some('3'));
    }

    #[test]
    fn remainder_zero_maps_to_digit_zero() {
        assert_eq!(credit_code_check_char("00000000000000000"), Some('0'));
        // sum = 1 → c = 30 → 'Y'.
        assert_eq!(credit_code_check_char("10000000000000000"), Some('Y'));
    }

    #[test]
    fn invalid_codes() {
        use CreditCodeError as E;
        let cases: &[(&str, CreditCodeError)] = &[
            ("91350100M000100Y4", E::Length(17)),
            (
                "91350100M000100I43",
                E::InvalidChar {
                    position: 16,
                    ch: 'I',
                },
            ),
            (
                "9135０100M000100Y43",
                E::InvalidChar {
                    position: 5,
                    ch: '０',
                },
            ),
            ("9135A100M000100Y43", E::DivisionCode),
            (
                "91350100M000100Y44",
                E::CheckChar {
                    expected: '3',
                    actual: '4',
                },
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<CreditCode>().as_ref(), Err(want), "{s}");
        }
        assert_eq!(credit_code_check_char("91350100M000100I4"), None);
    }

    fn symbol() -> impl Strategy<Value = u8> {
        (0usize..31).prop_map(|i| ALPHABET[i])
    }

    fn valid_first17() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(symbol(), 2),
            proptest::collection::vec(b'0'..=b'9', 6),
            proptest::collection::vec(symbol(), 9),
        )
            .prop_map(|(head, division, tail)| {
                head.into_iter()
                    .chain(division)
                    .chain(tail)
                    .map(char::from)
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn computed_check_char_always_parses(first17 in valid_first17()) {
            let c = credit_code_check_char(&first17).unwrap();
            let code: CreditCode = format!("{first17}{c}").parse().unwrap();
            prop_assert_eq!(&code.as_str()[..17], first17.as_str());
            let lower = format!("{first17}{c}").to_ascii_lowercase();
            prop_assert_eq!(lower.parse::<CreditCode>(), Ok(code));
        }

        #[test]
        fn any_single_change_fails(
            first17 in valid_first17(),
            pos in 0usize..18,
            delta in 1usize..31,
        ) {
            let c = credit_code_check_char(&first17).unwrap();
            let mut bytes = format!("{first17}{c}").into_bytes();
            let i = ALPHABET.iter().position(|a| *a == bytes[pos]).unwrap();
            bytes[pos] = ALPHABET[(i + delta) % 31];
            let s = String::from_utf8(bytes).unwrap();
            prop_assert!(s.parse::<CreditCode>().is_err(), "{} should fail", s);
        }
    }
}
