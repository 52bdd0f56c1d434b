use std::{fmt, str::FromStr};

use time::{Date, Month};

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK_CHARS: &[u8; 11] = b"10X98765432";

/// Why a 居民身份证号 is invalid. Messages never echo the number itself,
/// because they end up in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResidentIdError {
    /// Not 18 characters.
    #[error("must be 18 characters, got {0} (居民身份证号应为18位)")]
    Length(usize),
    /// A non-digit among the first 17 characters (1-based position).
    #[error("character {0} must be a digit (身份证号前17位应为数字)")]
    NotDigit(usize),
    /// The 18th character is not a digit or X.
    #[error("last character must be a digit or X (校验码应为数字或X)")]
    CheckCharSyntax,
    /// Address code starting with 0.
    #[error("address code (characters 1-6) must not start with 0 (地址码不能以0开头)")]
    AddressCode,
    /// Birth date not a real date in range.
    #[error(
        "birth date (characters 7-14) must be a real date between 1900-01-01 and 2100-12-31 (出生日期无效)"
    )]
    BirthDate,
    /// Check character mismatch.
    #[error("check character does not match, expected {expected} (校验码错误)")]
    CheckChar {
        /// The character the first 17 digits call for.
        expected: char,
    },
}

/// GB 11643 check over 17 ASCII digits that the caller has already verified.
fn check_char_of(digits: &[u8]) -> char {
    let sum: u32 = digits
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d.wrapping_sub(b'0')) * w)
        .sum();
    char::from(CHECK_CHARS[(sum % 11) as usize])
}

/// The GB 11643 check character for the first 17 digits of a resident ID,
/// or `None` unless `first17` is exactly 17 ASCII digits.
#[must_use]
pub fn resident_id_check_char(first17: &str) -> Option<char> {
    let b = first17.as_bytes();
    (b.len() == 17 && b.iter().all(u8::is_ascii_digit)).then(|| check_char_of(b))
}

fn digits_value(s: &str) -> u32 {
    s.bytes()
        .fold(0, |acc, b| acc * 10 + u32::from(b.wrapping_sub(b'0')))
}

fn birth_date_of(yyyymmdd: &str) -> Option<Date> {
    let year = i32::try_from(digits_value(&yyyymmdd[0..4])).ok()?;
    let month = u8::try_from(digits_value(&yyyymmdd[4..6])).ok()?;
    let day = u8::try_from(digits_value(&yyyymmdd[6..8])).ok()?;
    let date = Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()?;
    (1900..=2100).contains(&year).then_some(date)
}

/// 居民身份证号 (GB 11643-1999), normalised with an upper-case `X`.
///
/// `Debug` shows the masked form so the number does not leak into logs;
/// use [`ResidentId::as_str`] where the full number is really needed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct ResidentId {
    raw: String,
    // Kept alongside so `birth_date()` needs no re-parse and cannot fail.
    birth: Date,
}

string_newtype!(ResidentId, raw);

impl FromStr for ResidentId {
    type Err = ResidentIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let count = s.chars().count();
        if count != 18 {
            return Err(ResidentIdError::Length(count));
        }
        let mut raw = String::with_capacity(18);
        for (i, c) in s.chars().enumerate() {
            if i < 17 {
                if !c.is_ascii_digit() {
                    return Err(ResidentIdError::NotDigit(i + 1));
                }
                raw.push(c);
            } else {
                match c {
                    '0'..='9' | 'X' => raw.push(c),
                    'x' => raw.push('X'),
                    _ => return Err(ResidentIdError::CheckCharSyntax),
                }
            }
        }
        if raw.starts_with('0') {
            return Err(ResidentIdError::AddressCode);
        }
        let birth = birth_date_of(&raw[6..14]).ok_or(ResidentIdError::BirthDate)?;
        let expected = check_char_of(&raw.as_bytes()[..17]);
        if char::from(raw.as_bytes()[17]) != expected {
            return Err(ResidentIdError::CheckChar { expected });
        }
        Ok(Self { raw, birth })
    }
}

impl fmt::Display for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResidentId").field(&self.masked()).finish()
    }
}

impl ResidentId {
    /// First 6, eight asterisks, last 4: `110105********002X`. Safe for logs,
    /// receipts and the `buyer_id` of readiness reports.
    #[must_use]
    pub fn masked(&self) -> String {
        format!("{}********{}", &self.raw[..6], &self.raw[14..])
    }

    /// 地址码 (characters 1-6).
    #[must_use]
    pub fn address_code(&self) -> &str {
        &self.raw[..6]
    }

    /// The 17th digit (顺序码 last digit) is odd for men.
    #[must_use]
    pub fn is_male(&self) -> bool {
        self.raw.as_bytes()[16] % 2 == 1
    }

    /// 出生日期.
    #[must_use]
    pub fn birth_date(&self) -> Date {
        self.birth
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::date;

    #[test]
    fn standard_sample() {
        let id: ResidentId = "11010519491231002X".parse().unwrap();
        assert_eq!(id.as_str(), "11010519491231002X");
        assert_eq!(id.masked(), "110105********002X");
        assert_eq!(id.address_code(), "110105");
        assert!(!id.is_male());
        assert_eq!(id.birth_date(), date!(1949 - 12 - 31));
        assert_eq!(format!("{id:?}"), "ResidentId(\"110105********002X\")");
        assert_eq!(resident_id_check_char("11010519491231002"), Some('X'));
    }

    #[test]
    fn lowercase_x_is_normalised() {
        let id: ResidentId = "11010519491231002x".parse().unwrap();
        assert_eq!(id.as_str(), "11010519491231002X");
    }

    #[test]
    fn check_char_vectors() {
        assert_eq!(resident_id_check_char("44052418800101001"), Some('4'));
        assert_eq!(resident_id_check_char("4405241880010100"), None);
        assert_eq!(resident_id_check_char("4405241880010100A"), None);
        // Correct check digit, but 1880 is outside the accepted birth range.
        assert_eq!(
            "440524188001010014".parse::<ResidentId>(),
            Err(ResidentIdError::BirthDate)
        );
    }

    #[test]
    fn male_and_masking() {
        let first17 = "14082719900101003";
        let c = resident_id_check_char(first17).unwrap();
        let id: ResidentId = format!("{first17}{c}").parse().unwrap();
        assert!(id.is_male());
        assert_eq!(id.masked(), format!("140827********003{c}"));
    }

    #[test]
    fn invalid_ids() {
        use ResidentIdError as E;
        let cases: &[(&str, ResidentIdError)] = &[
            ("11010519491231002", E::Length(17)),
            ("11010519491231002XX", E::Length(19)),
            ("1101051949123100２X", E::NotDigit(17)),
            ("11010519491231002Y", E::CheckCharSyntax),
            ("01010519491231002X", E::AddressCode),
            ("11010519490231002X", E::BirthDate),
            ("11010518991231002X", E::BirthDate),
            ("110105194912310021", E::CheckChar { expected: 'X' }),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<ResidentId>().as_ref(), Err(want), "{s}");
        }
        assert_eq!(
            E::Length(17).to_string(),
            "must be 18 characters, got 17 (居民身份证号应为18位)"
        );
    }

    fn valid_first17() -> impl Strategy<Value = String> {
        let first = date!(1900 - 01 - 01).to_julian_day();
        let last = date!(2100 - 12 - 31).to_julian_day();
        (100_000u32..=999_999, first..=last, 0u32..=999).prop_map(|(addr, jd, seq)| {
            let d = Date::from_julian_day(jd).unwrap();
            format!(
                "{addr}{:04}{:02}{:02}{seq:03}",
                d.year(),
                u8::from(d.month()),
                d.day()
            )
        })
    }

    proptest! {
        #[test]
        fn computed_check_char_always_parses(first17 in valid_first17()) {
            let c = resident_id_check_char(&first17).unwrap();
            let id: ResidentId = format!("{first17}{c}").parse().unwrap();
            prop_assert_eq!(&id.as_str()[..17], first17.as_str());
        }

        #[test]
        fn any_single_change_fails(
            first17 in valid_first17(),
            pos in 0usize..18,
            shift in 0u8..=9,
        ) {
            let c = resident_id_check_char(&first17).unwrap();
            let mut bytes = format!("{first17}{c}").into_bytes();
            if pos < 17 {
                let d = bytes[pos] - b'0';
                bytes[pos] = b'0' + (d + 1 + shift % 9) % 10;
            } else {
                let alphabet = b"0123456789X";
                let i = alphabet.iter().position(|a| *a == bytes[17]).unwrap();
                bytes[17] = alphabet[(i + 1 + usize::from(shift)) % 11];
            }
            let s = String::from_utf8(bytes).unwrap();
            prop_assert!(s.parse::<ResidentId>().is_err(), "{} should fail", s);
        }
    }
}
