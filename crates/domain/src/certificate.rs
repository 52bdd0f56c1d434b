use std::{fmt, str::FromStr};

use crate::UnknownValueError;

/// Largest serial that fits the 7-8 digits accepted by the parser.
const MAX_SERIAL: u64 = 99_999_999;

const PROOF: [char; 5] = ['不', '动', '产', '证', '明'];
/// Seen in real 驻马店 numbers ("不动产权证第"); read as a property certificate.
const PROPERTY_LONG: [char; 5] = ['不', '动', '产', '权', '证'];
const PROPERTY: [char; 4] = ['不', '动', '产', '权'];

/// Which document a number belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum CertificateKind {
    /// 不动产权证书, numbered `…不动产权第…号`.
    PropertyCertificate,
    /// 不动产登记证明 (抵押, 预告, 异议), numbered `…不动产证明第…号`.
    RegistrationProof,
}

impl CertificateKind {
    const IDS: &'static [&'static str] = &["property_certificate", "registration_proof"];

    /// Stable lowercase id.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PropertyCertificate => "property_certificate",
            Self::RegistrationProof => "registration_proof",
        }
    }

    /// Document name, e.g. 不动产权证书.
    #[must_use]
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::PropertyCertificate => "不动产权证书",
            Self::RegistrationProof => "不动产登记证明",
        }
    }

    /// The word printed in the number before 第.
    #[must_use]
    pub fn number_word_zh(self) -> &'static str {
        match self {
            Self::PropertyCertificate => "不动产权",
            Self::RegistrationProof => "不动产证明",
        }
    }
}

impl fmt::Display for CertificateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CertificateKind {
    type Err = UnknownValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "property_certificate" => Ok(Self::PropertyCertificate),
            "registration_proof" => Ok(Self::RegistrationProof),
            _ => Err(UnknownValueError {
                value: s.to_owned(),
                expected: Self::IDS,
                term_zh: "证书类型",
            }),
        }
    }
}

/// Why a 不动产权证号 / 证明号 is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateNumberError {
    /// Blank input.
    #[error("must not be empty (证号不能为空)")]
    Empty,
    /// First character is not a single Chinese character.
    #[error(
        "must start with a one-character province abbreviation such as 晋 (证号应以省区市简称开头)"
    )]
    ProvinceAbbr,
    /// No bracket after the abbreviation.
    #[error("expected an opening bracket （ or ( after the province abbreviation (简称后应为括号)")]
    OpenBracket,
    /// Year not 4 digits in 1990-2100.
    #[error("year must be 4 digits between 1990 and 2100 (年份应为1990至2100的4位数字)")]
    Year,
    /// No bracket after the year.
    #[error("expected a closing bracket ） or ) after the year (年份后应为括号)")]
    CloseBracket,
    /// Does not end in 号.
    #[error("must end with 号 (证号应以“号”结尾)")]
    MissingHao,
    /// Serial not 7 or 8 digits.
    #[error("serial must be 7 or 8 digits (顺序号应为7或8位数字)")]
    SerialDigits,
    /// Serial 0 or above 99999999.
    #[error("serial must be between 1 and 99999999 (顺序号应为1至99999999)")]
    SerialRange,
    /// Neither 不动产权第 nor 不动产证明第 before the serial.
    #[error(
        "expected 不动产权第 or 不动产证明第 before the serial (证号应包含“不动产权第”或“不动产证明第”)"
    )]
    Kind,
    /// Region name empty or not Chinese characters.
    #[error("region name must be one or more Chinese characters (市县名称应为汉字)")]
    Region,
}

/// CJK unified ideographs, extension A and B-H, and compatibility ideographs.
fn is_cjk(c: char) -> bool {
    matches!(
        c,
        '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{F900}'..='\u{FAFF}'
            | '\u{20000}'..='\u{323AF}'
    )
}

fn is_region(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_cjk)
}

/// 不动产权证号 or 登记证明号, e.g. `晋（2026）垣曲县不动产权第0000001号`.
///
/// Fields are public for building numbers; [`CertificateNumber::new`] checks
/// them the same way the parser does, so `Display` output parses back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct CertificateNumber {
    /// 省区市简称, one Chinese character (usually [`crate::province_abbr`]).
    pub province_abbr: String,
    /// 年份 of registration.
    pub year: u16,
    /// 市县名称 as printed, e.g. 垣曲县.
    pub region_name: String,
    /// 证书 or 证明.
    pub kind: CertificateKind,
    /// 顺序号, per registry and year.
    pub serial: u64,
}

impl CertificateNumber {
    /// Builds a number after checking each part.
    pub fn new(
        province_abbr: impl Into<String>,
        year: u16,
        region_name: impl Into<String>,
        kind: CertificateKind,
        serial: u64,
    ) -> Result<Self, CertificateNumberError> {
        let number = Self {
            province_abbr: province_abbr.into(),
            year,
            region_name: region_name.into(),
            kind,
            serial,
        };
        number.validate()?;
        Ok(number)
    }

    /// Checks the public fields against the rules the parser enforces.
    pub fn validate(&self) -> Result<(), CertificateNumberError> {
        let mut abbr = self.province_abbr.chars();
        match (abbr.next(), abbr.next()) {
            (Some(c), None) if is_cjk(c) => {}
            _ => return Err(CertificateNumberError::ProvinceAbbr),
        }
        if !(1990..=2100).contains(&self.year) {
            return Err(CertificateNumberError::Year);
        }
        if !is_region(&self.region_name) {
            return Err(CertificateNumberError::Region);
        }
        if !(1..=MAX_SERIAL).contains(&self.serial) {
            return Err(CertificateNumberError::SerialRange);
        }
        Ok(())
    }
}

impl fmt::Display for CertificateNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}（{}）{}{}第{:07}号",
            self.province_abbr,
            self.year,
            self.region_name,
            self.kind.number_word_zh(),
            self.serial
        )
    }
}

fn digits_value(chars: &[char]) -> u64 {
    chars.iter().fold(0, |acc, c| {
        acc * 10 + u64::from(c.to_digit(10).unwrap_or_default())
    })
}

impl FromStr for CertificateNumber {
    type Err = CertificateNumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        type E = CertificateNumberError;
        // Registries print with and without spaces, full-width or ASCII
        // brackets; whitespace carries no meaning anywhere in the number.
        let chars: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();

        let (&abbr, rest) = chars.split_first().ok_or(E::Empty)?;
        if !is_cjk(abbr) {
            return Err(E::ProvinceAbbr);
        }
        let Some((&('（' | '('), rest)) = rest.split_first() else {
            return Err(E::OpenBracket);
        };
        let year_chars = rest.get(..4).ok_or(E::Year)?;
        if !year_chars.iter().all(char::is_ascii_digit) {
            return Err(E::Year);
        }
        let year = u16::try_from(digits_value(year_chars)).map_err(|_| E::Year)?;
        if !(1990..=2100).contains(&year) {
            return Err(E::Year);
        }
        let rest = match rest[4..].split_first() {
            Some((&('）' | ')'), rest)) => rest,
            Some((c, _)) if c.is_ascii_digit() => return Err(E::Year),
            _ => return Err(E::CloseBracket),
        };

        // Parse the tail from the end: the region name is free text, the
        // suffix is not.
        let Some((&'号', body)) = rest.split_last() else {
            return Err(E::MissingHao);
        };
        let digit_count = body.iter().rev().take_while(|c| c.is_ascii_digit()).count();
        if !(7..=8).contains(&digit_count) {
            return Err(E::SerialDigits);
        }
        let (body, serial_chars) = body.split_at(body.len() - digit_count);
        let serial = digits_value(serial_chars);
        if serial == 0 {
            return Err(E::SerialRange);
        }
        let Some((&'第', body)) = body.split_last() else {
            return Err(E::Kind);
        };
        let (kind, region) = if body.ends_with(&PROOF) {
            (
                CertificateKind::RegistrationProof,
                &body[..body.len() - PROOF.len()],
            )
        } else if body.ends_with(&PROPERTY_LONG) {
            (
                CertificateKind::PropertyCertificate,
                &body[..body.len() - PROPERTY_LONG.len()],
            )
        } else if body.ends_with(&PROPERTY) {
            (
                CertificateKind::PropertyCertificate,
                &body[..body.len() - PROPERTY.len()],
            )
        } else {
            return Err(E::Kind);
        };
        let region_name: String = region.iter().collect();
        if !is_region(&region_name) {
            return Err(E::Region);
        }
        Ok(Self {
            province_abbr: abbr.to_string(),
            year,
            region_name,
            kind,
            serial,
        })
    }
}

impl TryFrom<String> for CertificateNumber {
    type Error = CertificateNumberError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<CertificateNumber> for String {
    fn from(value: CertificateNumber) -> String {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn num(
        abbr: &str,
        year: u16,
        region: &str,
        kind: CertificateKind,
        serial: u64,
    ) -> CertificateNumber {
        CertificateNumber::new(abbr, year, region, kind, serial).unwrap()
    }

    #[test]
    fn display_format() {
        let n = num(
            "晋",
            2026,
            "垣曲县",
            CertificateKind::PropertyCertificate,
            1,
        );
        assert_eq!(n.to_string(), "晋（2026）垣曲县不动产权第0000001号");
        let n = num(
            "皖",
            2018,
            "合肥市",
            CertificateKind::PropertyCertificate,
            10_023_999,
        );
        assert_eq!(n.to_string(), "皖（2018）合肥市不动产权第10023999号");
        let n = num(
            "皖",
            2019,
            "长丰县",
            CertificateKind::RegistrationProof,
            10484,
        );
        assert_eq!(n.to_string(), "皖（2019）长丰县不动产证明第0010484号");
    }

    #[test]
    fn parses_real_numbers() {
        use CertificateKind::{PropertyCertificate as P, RegistrationProof as R};
        let cases: &[(&str, CertificateNumber)] = &[
            (
                "晋（2022）垣曲县不动产权第0001234号",
                num("晋", 2022, "垣曲县", P, 1234),
            ),
            (
                "晋(2017)太原市不动产权第0018158号",
                num("晋", 2017, "太原市", P, 18158),
            ),
            (
                "皖(2018)合肥市不动产权第10023999号",
                num("皖", 2018, "合肥市", P, 10_023_999),
            ),
            (
                "皖(2019)长丰县不动产证明第0010484号",
                num("皖", 2019, "长丰县", R, 10484),
            ),
            (
                "鲁(2016)滨州市不动产权第0000288号",
                num("鲁", 2016, "滨州市", P, 288),
            ),
            (
                "粤（2019）东莞不动产权第0000906号",
                num("粤", 2019, "东莞", P, 906),
            ),
            (
                "豫（2020）驻马店市不动产权证第0000003号",
                num("豫", 2020, "驻马店市", P, 3),
            ),
            (
                "甬（2021）宁波市不动产权第0000001号",
                num("甬", 2021, "宁波市", P, 1),
            ),
            (
                " 晋 ( 2026 ) 垣曲县 不动产权 第 0000001 号 ",
                num("晋", 2026, "垣曲县", P, 1),
            ),
            (
                "晋（2026)垣曲县不动产权第0000001号",
                num("晋", 2026, "垣曲县", P, 1),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<CertificateNumber>().as_ref(), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_malformed_numbers() {
        use CertificateNumberError as E;
        let cases: &[(&str, CertificateNumberError)] = &[
            ("", E::Empty),
            ("   ", E::Empty),
            ("J(2020)垣曲县不动产权第0000001号", E::ProvinceAbbr),
            ("晋[2020]垣曲县不动产权第0000001号", E::OpenBracket),
            ("晋(1989)垣曲县不动产权第0000001号", E::Year),
            ("晋(2101)垣曲县不动产权第0000001号", E::Year),
            ("晋(202)垣曲县不动产权第0000001号", E::Year),
            ("晋(20201)垣曲县不动产权第0000001号", E::Year),
            ("晋(2020垣曲县不动产权第0000001号", E::CloseBracket),
            ("晋(2020)垣曲县不动产权第0000001", E::MissingHao),
            ("晋(2020)垣曲县不动产权第000001号", E::SerialDigits),
            ("晋(2020)垣曲县不动产权第000000001号", E::SerialDigits),
            ("晋(2020)垣曲县不动产权第0000000号", E::SerialRange),
            ("晋(2020)垣曲县不动产权0000001号", E::Kind),
            ("晋(2020)垣曲县房产证第0000001号", E::Kind),
            ("晋(2020)不动产权第0000001号", E::Region),
            ("晋(2020)Yuanqu不动产权第0000001号", E::Region),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<CertificateNumber>().as_ref(), Err(want), "{s}");
        }
    }

    #[test]
    fn new_validates_fields() {
        use CertificateKind::PropertyCertificate as P;
        use CertificateNumberError as E;
        assert_eq!(
            CertificateNumber::new("晋晋", 2020, "垣曲县", P, 1),
            Err(E::ProvinceAbbr)
        );
        assert_eq!(
            CertificateNumber::new("", 2020, "垣曲县", P, 1),
            Err(E::ProvinceAbbr)
        );
        assert_eq!(
            CertificateNumber::new("晋", 1900, "垣曲县", P, 1),
            Err(E::Year)
        );
        assert_eq!(CertificateNumber::new("晋", 2020, "", P, 1), Err(E::Region));
        assert_eq!(
            CertificateNumber::new("晋", 2020, "垣曲县", P, 0),
            Err(E::SerialRange)
        );
        assert_eq!(
            CertificateNumber::new("晋", 2020, "垣曲县", P, 100_000_000),
            Err(E::SerialRange)
        );
    }

    #[test]
    fn kind_ids_round_trip() {
        for k in [
            CertificateKind::PropertyCertificate,
            CertificateKind::RegistrationProof,
        ] {
            assert_eq!(k.as_str().parse::<CertificateKind>(), Ok(k));
        }
        assert!("deed".parse::<CertificateKind>().is_err());
    }

    fn cjk() -> impl Strategy<Value = char> {
        proptest::char::range('\u{4E00}', '\u{9FA5}')
    }

    fn number() -> impl Strategy<Value = CertificateNumber> {
        (
            cjk(),
            1990u16..=2100,
            proptest::collection::vec(cjk(), 1..8),
            prop_oneof![
                Just(CertificateKind::PropertyCertificate),
                Just(CertificateKind::RegistrationProof)
            ],
            1u64..=MAX_SERIAL,
        )
            .prop_map(|(abbr, year, region, kind, serial)| CertificateNumber {
                province_abbr: abbr.to_string(),
                year,
                region_name: region.into_iter().collect(),
                kind,
                serial,
            })
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(n in number()) {
            prop_assert_eq!(n.validate(), Ok(()));
            prop_assert_eq!(n.to_string().parse::<CertificateNumber>(), Ok(n.clone()));
        }

        #[test]
        fn ascii_brackets_and_spaces_round_trip(n in number()) {
            let ascii = n.to_string().replace('（', "(").replace('）', ")");
            prop_assert_eq!(ascii.parse::<CertificateNumber>(), Ok(n.clone()));
            let spaced = ascii.chars().map(String::from).collect::<Vec<_>>().join(" ");
            prop_assert_eq!(spaced.parse::<CertificateNumber>(), Ok(n));
        }
    }
}
