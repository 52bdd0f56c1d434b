use std::{fmt, str::FromStr};

const UNIT_CODE_LEN: usize = 28;
const PARCEL_CODE_LEN: usize = 19;

/// Second letter of the 宗地特征码, including the L/N additions seen in vendor code.
const PARCEL_TYPES: &[u8] = b"ABSXCDEFHGWYLN";

/// Why a 不动产单元代码 or 宗地代码 is invalid. Positions are 1-based as printed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitCodeError {
    /// Wrong length for a unit code.
    #[error("must be 28 characters, got {0} (不动产单元代码应为28位)")]
    Length(usize),
    /// Wrong length for a parcel code.
    #[error("must be 19 characters, got {0} (宗地代码应为19位)")]
    ParcelLength(usize),
    /// Full-width or other non-ASCII characters.
    #[error("must contain only ASCII digits and letters (不动产单元代码只能包含半角数字和字母)")]
    NotAscii,
    /// Characters 1-6 are not digits.
    #[error("county code (characters 1-6) must be 6 digits (县级行政区划代码应为6位数字)")]
    CountyNotDigits,
    /// County code 000000.
    #[error("county code must not be 000000 (县级行政区划代码不能为000000)")]
    CountyZero,
    /// Characters 7-9 are not digits.
    #[error("cadastral district (characters 7-9) must be 3 digits (地籍区代码应为3位数字)")]
    CadastralDistrict,
    /// Characters 10-12 are not digits.
    #[error("cadastral subdistrict (characters 10-12) must be 3 digits (地籍子区代码应为3位数字)")]
    CadastralSubdistrict,
    /// Character 13 is not G, J or Z.
    #[error(
        "ownership letter (character 13) must be G, J or Z, got {0:?} (宗地特征码第1位应为G国家、J集体或Z未确定)"
    )]
    Ownership(char),
    /// Character 14 is not a known parcel type.
    #[error(
        "parcel type letter (character 14) must be one of A B S X C D E F H G W Y L N, got {0:?} (宗地特征码第2位无效)"
    )]
    ParcelType(char),
    /// A or C combined with an ownership other than J.
    #[error(
        "parcel type {parcel_type} needs collective ownership J, got {ownership} (集体土地所有权宗地A和宅基地使用权宗地C只能与J组合)"
    )]
    CollectiveOnly {
        /// The ownership letter found.
        ownership: char,
        /// A or C.
        parcel_type: char,
    },
    /// Characters 15-19 are not digits.
    #[error("parcel sequence (characters 15-19) must be 5 digits (宗地顺序号应为5位数字)")]
    ParcelSeqNotDigits,
    /// Parcel sequence 00000.
    #[error("parcel sequence must be 00001-99999, not 00000 (宗地顺序号应为00001至99999)")]
    ParcelSeqZero,
    /// Character 20 is not F, L, Q or W.
    #[error(
        "fixture letter (character 20) must be F, L, Q or W, got {0:?} (定着物特征码应为F、L、Q或W)"
    )]
    Fixture(char),
    /// Characters 21-28 are not digits.
    #[error("fixture unit number (characters 21-28) must be 8 digits (定着物单元编号应为8位数字)")]
    FixtureNumberNotDigits,
    /// W followed by anything but 00000000.
    #[error("a land-only unit (W) must end in 00000000 (无定着物的单元编号应为00000000)")]
    LandOnlySuffix,
    /// F with building number 0000.
    #[error("building number (characters 21-24) must not be 0000 (幢号不能为0000)")]
    BuildingZero,
    /// Building or unit number out of range when composing a code.
    #[error(
        "building number must be 1-9999 and unit sequence 0-9999 (幢号应为1至9999，户号应为0至9999)"
    )]
    HouseNumberRange,
}

/// 定着物特征码, character 20 of a unit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum FixtureFeature {
    /// `F` 房屋等建筑物、构筑物.
    House,
    /// `L` 森林、林木.
    Forest,
    /// `Q` 其他定着物.
    Other,
    /// `W` 无定着物 (the parcel itself, as in 地证同交).
    LandOnly,
}

impl FixtureFeature {
    /// Maps the code letter; `None` for anything but F, L, Q, W.
    #[must_use]
    pub fn from_char(c: char) -> Option<Self> {
        match c {
            'F' => Some(Self::House),
            'L' => Some(Self::Forest),
            'Q' => Some(Self::Other),
            'W' => Some(Self::LandOnly),
            _ => None,
        }
    }

    /// The code letter.
    #[must_use]
    pub fn as_char(self) -> char {
        match self {
            Self::House => 'F',
            Self::Forest => 'L',
            Self::Other => 'Q',
            Self::LandOnly => 'W',
        }
    }

    /// Chinese label.
    #[must_use]
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::House => "房屋等建筑物、构筑物",
            Self::Forest => "森林、林木",
            Self::Other => "其他定着物",
            Self::LandOnly => "无定着物",
        }
    }
}

/// Removes display spacing and upper-cases, so the 6-6-7-9 form shown by
/// registry UIs can be pasted back in.
fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ' ')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn all_digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

/// Value of an all-digit slice; callers only pass validated, short slices.
fn digits_value(s: &str) -> u32 {
    s.bytes()
        .fold(0, |acc, b| acc * 10 + u32::from(b.wrapping_sub(b'0')))
}

fn validate_parcel(b: &[u8]) -> Result<(), UnitCodeError> {
    if !all_digits(&b[0..6]) {
        return Err(UnitCodeError::CountyNotDigits);
    }
    if &b[0..6] == b"000000" {
        return Err(UnitCodeError::CountyZero);
    }
    if !all_digits(&b[6..9]) {
        return Err(UnitCodeError::CadastralDistrict);
    }
    if !all_digits(&b[9..12]) {
        return Err(UnitCodeError::CadastralSubdistrict);
    }
    let ownership = b[12];
    if !matches!(ownership, b'G' | b'J' | b'Z') {
        return Err(UnitCodeError::Ownership(char::from(ownership)));
    }
    let parcel_type = b[13];
    if !PARCEL_TYPES.contains(&parcel_type) {
        return Err(UnitCodeError::ParcelType(char::from(parcel_type)));
    }
    if matches!(parcel_type, b'A' | b'C') && ownership != b'J' {
        return Err(UnitCodeError::CollectiveOnly {
            ownership: char::from(ownership),
            parcel_type: char::from(parcel_type),
        });
    }
    if !all_digits(&b[14..19]) {
        return Err(UnitCodeError::ParcelSeqNotDigits);
    }
    if &b[14..19] == b"00000" {
        return Err(UnitCodeError::ParcelSeqZero);
    }
    Ok(())
}

fn validate_fixture(b: &[u8]) -> Result<(), UnitCodeError> {
    let fixture = FixtureFeature::from_char(char::from(b[0]))
        .ok_or(UnitCodeError::Fixture(char::from(b[0])))?;
    let number = &b[1..9];
    if !all_digits(number) {
        return Err(UnitCodeError::FixtureNumberNotDigits);
    }
    match fixture {
        FixtureFeature::LandOnly if number != b"00000000" => Err(UnitCodeError::LandOnlySuffix),
        FixtureFeature::House if &number[0..4] == b"0000" => Err(UnitCodeError::BuildingZero),
        _ => Ok(()),
    }
}

/// Shared part of both parsers: normalise, check length, then reject
/// non-ASCII so byte slicing by position is sound.
fn prepare(
    s: &str,
    len: usize,
    length_err: fn(usize) -> UnitCodeError,
) -> Result<String, UnitCodeError> {
    let s = normalise(s);
    let count = s.chars().count();
    if count != len {
        return Err(length_err(count));
    }
    if !s.is_ascii() {
        return Err(UnitCodeError::NotAscii);
    }
    Ok(s)
}

/// 不动产单元代码 (GB/T 37346): 28 characters identifying one registrable unit.
///
/// Parsing ignores spaces and upper-cases letters; the stored form is the
/// compact 28-character code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct UnitCode(String);

string_newtype!(UnitCode, 0);

impl FromStr for UnitCode {
    type Err = UnitCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = prepare(s, UNIT_CODE_LEN, UnitCodeError::Length)?;
        let b = s.as_bytes();
        validate_parcel(&b[..PARCEL_CODE_LEN])?;
        validate_fixture(&b[PARCEL_CODE_LEN..])?;
        Ok(Self(s))
    }
}

impl fmt::Display for UnitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl UnitCode {
    /// The land-only unit (`W00000000`) of a parcel, used for 地证同交.
    #[must_use]
    pub fn land_only(parcel: &ParcelCode) -> Self {
        Self(format!("{}W00000000", parcel.as_str()))
    }

    /// A house unit `F` + 4-digit 幢号 + 4-digit 户号 on a parcel.
    pub fn house(parcel: &ParcelCode, building: u32, unit_seq: u32) -> Result<Self, UnitCodeError> {
        if !(1..=9999).contains(&building) || unit_seq > 9999 {
            return Err(UnitCodeError::HouseNumberRange);
        }
        Ok(Self(format!(
            "{}F{building:04}{unit_seq:04}",
            parcel.as_str()
        )))
    }

    /// 县级行政区划代码 (characters 1-6).
    #[must_use]
    pub fn county_code(&self) -> &str {
        &self.0[0..6]
    }

    /// 地籍区 (characters 7-9).
    #[must_use]
    pub fn cadastral_district(&self) -> &str {
        &self.0[6..9]
    }

    /// 地籍子区 (characters 10-12).
    #[must_use]
    pub fn cadastral_subdistrict(&self) -> &str {
        &self.0[9..12]
    }

    /// 宗地特征码, the two letters (characters 13-14), e.g. `GB`.
    #[must_use]
    pub fn parcel_feature(&self) -> &str {
        &self.0[12..14]
    }

    /// 宗地顺序号 (characters 15-19), 1-99999.
    #[must_use]
    pub fn parcel_seq(&self) -> u32 {
        digits_value(&self.0[14..19])
    }

    /// 宗地代码: the first 19 characters.
    #[must_use]
    pub fn parcel_code(&self) -> &str {
        &self.0[..PARCEL_CODE_LEN]
    }

    /// The parcel as a typed value.
    #[must_use]
    pub fn parcel(&self) -> ParcelCode {
        ParcelCode(self.0[..PARCEL_CODE_LEN].to_owned())
    }

    /// 定着物特征码 (character 20).
    #[must_use]
    pub fn fixture(&self) -> FixtureFeature {
        match self.0.as_bytes()[PARCEL_CODE_LEN] {
            b'F' => FixtureFeature::House,
            b'L' => FixtureFeature::Forest,
            b'Q' => FixtureFeature::Other,
            _ => FixtureFeature::LandOnly,
        }
    }

    /// 定着物单元编号 (characters 21-28).
    #[must_use]
    pub fn fixture_number(&self) -> &str {
        &self.0[20..28]
    }

    /// True for the parcel-only unit ending `W00000000`.
    #[must_use]
    pub fn is_land_only(&self) -> bool {
        self.0.ends_with("W00000000")
    }

    /// True for codes with 地籍区 and 地籍子区 both `000`, which vendor systems
    /// issue as placeholders before 权籍调查 assigns a real location.
    #[must_use]
    pub fn is_virtual(&self) -> bool {
        &self.0[6..12] == "000000"
    }

    /// 自然幢号 (characters 21-24), only for house units.
    #[must_use]
    pub fn building_number(&self) -> Option<u32> {
        (self.fixture() == FixtureFeature::House).then(|| digits_value(&self.0[20..24]))
    }

    /// 户号 (characters 25-28), a sequence within the building rather than
    /// the printed room number; only for house units.
    #[must_use]
    pub fn unit_seq(&self) -> Option<u32> {
        (self.fixture() == FixtureFeature::House).then(|| digits_value(&self.0[24..28]))
    }

    /// The 6-6-7-9 display form used on registry screens,
    /// e.g. `140827 001002 GB00012 F00030101`.
    #[must_use]
    pub fn spaced(&self) -> String {
        format!(
            "{} {} {} {}",
            &self.0[0..6],
            &self.0[6..12],
            &self.0[12..19],
            &self.0[19..28]
        )
    }
}

/// 宗地代码: the first 19 characters of a unit code, identifying the parcel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct ParcelCode(String);

string_newtype!(ParcelCode, 0);

impl FromStr for ParcelCode {
    type Err = UnitCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = prepare(s, PARCEL_CODE_LEN, UnitCodeError::ParcelLength)?;
        validate_parcel(s.as_bytes())?;
        Ok(Self(s))
    }
}

impl fmt::Display for ParcelCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ParcelCode {
    /// 县级行政区划代码 (characters 1-6).
    #[must_use]
    pub fn county_code(&self) -> &str {
        &self.0[0..6]
    }

    /// 地籍区 (characters 7-9).
    #[must_use]
    pub fn cadastral_district(&self) -> &str {
        &self.0[6..9]
    }

    /// 地籍子区 (characters 10-12).
    #[must_use]
    pub fn cadastral_subdistrict(&self) -> &str {
        &self.0[9..12]
    }

    /// 宗地特征码, e.g. `GB`.
    #[must_use]
    pub fn feature(&self) -> &str {
        &self.0[12..14]
    }

    /// 宗地顺序号, 1-99999.
    #[must_use]
    pub fn seq(&self) -> u32 {
        digits_value(&self.0[14..19])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: [&str; 5] = [
        "411702600021GB00001F00070027",
        "441903012003GB00001F00020063",
        "371602009011GB00001F00522032",
        "340121261006GB00014F00220045",
        "320802001009GB00001W00000000",
    ];

    fn code(s: &str) -> UnitCode {
        s.parse().unwrap()
    }

    #[test]
    fn real_codes_parse() {
        for s in REAL {
            let c = code(s);
            assert_eq!(c.as_str(), s);
            assert_eq!(c.to_string(), s);
            assert_eq!(c.parcel_code(), &s[..19]);
            assert_eq!(c.parcel().as_str(), &s[..19]);
        }
        let zmd = code(REAL[0]);
        assert_eq!(zmd.county_code(), "411702");
        assert_eq!(zmd.building_number(), Some(7));
        assert_eq!(zmd.unit_seq(), Some(27));
        let land = code(REAL[4]);
        assert!(land.is_land_only());
        assert_eq!(land.fixture(), FixtureFeature::LandOnly);
        assert_eq!(land.building_number(), None);
        assert_eq!(land.unit_seq(), None);
    }

    #[test]
    fn yuanqu_example_parts() {
        let c = code("140827001002GB00012F00030101");
        assert_eq!(c.county_code(), "140827");
        assert_eq!(c.cadastral_district(), "001");
        assert_eq!(c.cadastral_subdistrict(), "002");
        assert_eq!(c.parcel_feature(), "GB");
        assert_eq!(c.parcel_seq(), 12);
        assert_eq!(c.parcel_code(), "140827001002GB00012");
        assert_eq!(c.fixture(), FixtureFeature::House);
        assert_eq!(c.fixture_number(), "00030101");
        assert_eq!(c.building_number(), Some(3));
        assert_eq!(c.unit_seq(), Some(101));
        assert!(!c.is_land_only());
        assert!(!c.is_virtual());
        assert_eq!(c.spaced(), "140827 001002 GB00012 F00030101");
    }

    #[test]
    fn spaced_and_lowercase_input_normalise() {
        let c = code("140827 001002 gb00012 f00030101");
        assert_eq!(c.as_str(), "140827001002GB00012F00030101");
        assert_eq!(code(&c.spaced()), c);
    }

    #[test]
    fn composing_codes() {
        let p: ParcelCode = "140827001002GB00012".parse().unwrap();
        assert_eq!(
            UnitCode::house(&p, 3, 101).unwrap().as_str(),
            "140827001002GB00012F00030101"
        );
        assert_eq!(
            UnitCode::land_only(&p).as_str(),
            "140827001002GB00012W00000000"
        );
        assert_eq!(
            UnitCode::house(&p, 0, 1),
            Err(UnitCodeError::HouseNumberRange)
        );
        assert_eq!(
            UnitCode::house(&p, 1, 10000),
            Err(UnitCodeError::HouseNumberRange)
        );
        assert_eq!(p.county_code(), "140827");
        assert_eq!(p.feature(), "GB");
        assert_eq!(p.seq(), 12);
        assert_eq!(p.cadastral_district(), "001");
        assert_eq!(p.cadastral_subdistrict(), "002");
    }

    #[test]
    fn virtual_and_special_suffixes() {
        assert!(code("140827000000GB00001F00010001").is_virtual());
        assert!(code("140827001002GB00012F99999999").building_number() == Some(9999));
        assert_eq!(
            code("140827001002JA00001L00000001").fixture(),
            FixtureFeature::Forest
        );
        assert_eq!(
            code("140827001002JC00001Q00000001").fixture(),
            FixtureFeature::Other
        );
    }

    #[test]
    fn invalid_codes() {
        use UnitCodeError as E;
        let cases: &[(&str, UnitCodeError)] = &[
            ("140827001002GB00012F0003010", E::Length(27)),
            ("140827001002GB00012F000301011", E::Length(29)),
            ("１40827001002GB00012F00030101", E::NotAscii),
            ("14082A001002GB00012F00030101", E::CountyNotDigits),
            ("000000001002GB00012F00030101", E::CountyZero),
            ("1408270A1002GB00012F00030101", E::CadastralDistrict),
            ("14082700100-GB00012F00030101", E::CadastralSubdistrict),
            ("140827001002XB00012F00030101", E::Ownership('X')),
            ("140827001002GK00012F00030101", E::ParcelType('K')),
            (
                "140827001002GA00012F00030101",
                E::CollectiveOnly {
                    ownership: 'G',
                    parcel_type: 'A',
                },
            ),
            (
                "140827001002ZC00012F00030101",
                E::CollectiveOnly {
                    ownership: 'Z',
                    parcel_type: 'C',
                },
            ),
            ("140827001002GB0001AF00030101", E::ParcelSeqNotDigits),
            ("140827001002GB00000F00030101", E::ParcelSeqZero),
            ("140827001002GB00012X00030101", E::Fixture('X')),
            ("140827001002GB00012F0003010A", E::FixtureNumberNotDigits),
            ("140827001002GB00012W00000001", E::LandOnlySuffix),
            ("140827001002GB00012F00000101", E::BuildingZero),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<UnitCode>().as_ref(), Err(want), "{s}");
        }
    }

    #[test]
    fn parcel_code_rules() {
        assert_eq!(
            "450103001001GB00001"
                .parse::<ParcelCode>()
                .map(|p| p.to_string()),
            Ok("450103001001GB00001".to_owned())
        );
        assert_eq!(
            "450103001001GB0000".parse::<ParcelCode>(),
            Err(UnitCodeError::ParcelLength(18))
        );
        assert_eq!(
            "450103001001GB00000".parse::<ParcelCode>(),
            Err(UnitCodeError::ParcelSeqZero)
        );
    }

    #[test]
    fn error_messages_carry_chinese_term() {
        assert_eq!(
            UnitCodeError::Length(27).to_string(),
            "must be 28 characters, got 27 (不动产单元代码应为28位)"
        );
    }
}
