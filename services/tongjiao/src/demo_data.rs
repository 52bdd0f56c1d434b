//! The sandbox's demo county, developer, project, 楼盘表 and buyers. Everything is deterministic, so
//! seeding again after a restart sends identical requests (and gets the stored replies).
use anyhow::{Context, anyhow};
use time::{Date, Duration, Month};
use tongjiao_domain::{
    CreditCode, ParcelCode, ResidentId, UnitCode, credit_code_check_char, resident_id_check_char,
};
use tongjiao_proto::{
    registration::{self as reg, CaseSubmission, EnrollProjectRequest, LandRight, Project},
    survey::{PhysicalBuilding, Structure, Unit, UploadBuildingTableRequest},
};

pub const COUNTY_CODE: &str = "140827";
pub const COUNTY_NAME: &str = "垣曲县";
pub const COUNTIES: &str = "140827=垣曲县";
pub const PROJECT_ID: &str = "YQ-2026-001";
pub const PROJECT_NAME: &str = "垣曲县同交花园";
pub const PARCEL_CODE: &str = "140827001002GB00012";
pub const DEVELOPER_NAME: &str = "垣曲县同交置业有限公司";
/// First 17 characters of the developer's 统一社会信用代码; the check character is computed.
const DEVELOPER_CODE_17: &str = "91140827MA0YQTJ01";
pub const BUILDINGS: u32 = 2;
pub const FLOORS: u32 = 6;
pub const UNITS_PER_FLOOR: u32 = 2;
const ADDRESS: &str = "垣曲县新城镇舜都大道88号同交花园";

/// The developer's 统一社会信用代码 with a valid GB 32100 check character.
pub fn developer_credit_code() -> anyhow::Result<String> {
    let check = credit_code_check_char(DEVELOPER_CODE_17)
        .ok_or_else(|| anyhow!("demo credit code prefix is not in the GB 32100 alphabet"))?;
    let code = format!("{DEVELOPER_CODE_17}{check}");
    code.parse::<CreditCode>()
        .map(CreditCode::into_string)
        .map_err(|e| anyhow!("demo credit code {code}: {e}"))
}

pub fn parcel() -> anyhow::Result<ParcelCode> {
    PARCEL_CODE
        .parse::<ParcelCode>()
        .map_err(|e| anyhow!("demo parcel {PARCEL_CODE}: {e}"))
}

/// The project as enrolled in 房证同交.
pub fn enroll_request(credit_code: &str) -> EnrollProjectRequest {
    EnrollProjectRequest {
        request_id: format!("dev-seed-enroll-{PROJECT_ID}"),
        project: Some(Project {
            project_id: PROJECT_ID.into(),
            name: PROJECT_NAME.into(),
            kind: reg::ProjectKind::Housing as i32,
            county_code: COUNTY_CODE.into(),
            parcel_code: PARCEL_CODE.into(),
            developer_credit_code: credit_code.into(),
            developer_name: DEVELOPER_NAME.into(),
            agreement_number: "YQTJ-XY-2025-001".into(),
            agreement_signed_on: "2025-06-18".into(),
            land: Some(LandRight {
                usage: "城镇住宅用地".into(),
                right_nature: "出让".into(),
                term_start: "2020-01-01".into(),
                term_end: "2090-12-31".into(),
                parcel_area_centi_sqm: 1_200_000,
            }),
            ..Default::default()
        }),
    }
}

/// One demo 户 with what the demo needs to know about it.
#[derive(Debug, Clone)]
pub struct DemoUnit {
    pub code: String,
    pub building: u32,
    pub floor: u32,
    pub room: String,
    pub gfa_centi: i64,
    /// Position in the project (0-based), used to derive buyers and numbers.
    pub index: u32,
}

/// (套内, 分摊) areas in 0.01 ㎡ of the n-th unit on a floor; 建筑面积 = 套内 + 分摊.
fn areas(n: u32) -> (i64, i64) {
    match n {
        1 => (8923, 1538),
        _ => (7612, 1325),
    }
}

/// Every demo unit: building × floor × unit on the floor.
pub fn units() -> anyhow::Result<Vec<DemoUnit>> {
    let parcel = parcel()?;
    let mut out = Vec::new();
    let mut index = 0;
    for b in 1..=BUILDINGS {
        for floor in 1..=FLOORS {
            for n in 1..=UNITS_PER_FLOOR {
                let seq = floor * 100 + n;
                let code = UnitCode::house(&parcel, b, seq)
                    .map_err(|e| anyhow!("demo unit {b}/{seq}: {e}"))?;
                let (internal, shared) = areas(n);
                out.push(DemoUnit {
                    code: code.into_string(),
                    building: b,
                    floor,
                    room: format!("{floor}{n:02}"),
                    gfa_centi: internal + shared,
                    index,
                });
                index += 1;
            }
        }
    }
    Ok(out)
}

/// The project's 楼盘表.
pub fn building_table() -> anyhow::Result<UploadBuildingTableRequest> {
    let units = units()?;
    let mut buildings = Vec::new();
    for b in 1..=BUILDINGS {
        let list = units
            .iter()
            .filter(|u| u.building == b)
            .map(|u| {
                let n = u
                    .room
                    .chars()
                    .last()
                    .and_then(|c| c.to_digit(10))
                    .unwrap_or(1);
                let (internal, shared) = areas(n);
                Unit {
                    unit_code: u.code.clone(),
                    room_number: format!("1单元{}", u.room),
                    floor_number: i32::try_from(u.floor).unwrap_or(1),
                    location: format!("{ADDRESS}{b}号楼1单元{}室", u.room),
                    planned_usage: "住宅".into(),
                    measured_gfa_centi_sqm: u.gfa_centi,
                    internal_area_centi_sqm: internal,
                    shared_area_centi_sqm: shared,
                    ..Default::default()
                }
            })
            .collect();
        buildings.push(PhysicalBuilding {
            building_number: b,
            name: format!("{b}号楼"),
            total_floors: FLOORS,
            floors_above_ground: FLOORS,
            floors_below_ground: 0,
            structure: Structure::ReinforcedConcrete as i32,
            planned_usage: "住宅".into(),
            completion_date: "2025-10-30".into(),
            units: list,
        });
    }
    Ok(UploadBuildingTableRequest {
        request_id: format!("dev-seed-survey-{PROJECT_ID}"),
        project_id: PROJECT_ID.into(),
        parcel_code: PARCEL_CODE.into(),
        buildings,
    })
}

const SURNAMES: [&str; 12] = [
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙",
];
const GIVEN: [&str; 12] = [
    "建国", "秀英", "伟", "芳", "静", "磊", "敏", "丽", "强", "霞", "涛", "燕",
];

/// A 居民身份证号 born in 垣曲县 with a valid GB 11643 check character.
pub fn resident_id(birth: Date, seq: u32) -> anyhow::Result<String> {
    let first17 = format!(
        "{COUNTY_CODE}{:04}{:02}{:02}{:03}",
        birth.year(),
        u8::from(birth.month()),
        birth.day(),
        seq % 1000
    );
    let check = resident_id_check_char(&first17)
        .ok_or_else(|| anyhow!("demo resident id prefix is not 17 digits"))?;
    let id = format!("{first17}{check}");
    id.parse::<ResidentId>()
        .map(|r| r.as_str().to_owned())
        .map_err(|e| anyhow!("demo resident id: {e}"))
}

/// The buyers of a demo unit: every third unit is bought by a couple (共同共有).
pub fn buyers(unit: &DemoUnit) -> anyhow::Result<Vec<reg::Buyer>> {
    let count = if unit.index % 3 == 2 { 2 } else { 1 };
    let base = Date::from_calendar_date(1968, Month::January, 1).context("demo birth date")?;
    let mut out = Vec::new();
    for j in 0..count {
        let k = (unit.index * 2 + j) as usize;
        let birth = base + Duration::days(i64::from(unit.index) * 389 + i64::from(j) * 97);
        out.push(reg::Buyer {
            name: format!(
                "{}{}",
                SURNAMES[k % SURNAMES.len()],
                GIVEN[(k * 5 + 3) % GIVEN.len()]
            ),
            resident_id: resident_id(birth, 101 + unit.index * 2 + j)?,
            share_basis_points: 0,
        });
    }
    Ok(out)
}

/// The handover submission of a demo unit.
pub fn case_submission(unit: &DemoUnit) -> anyhow::Result<CaseSubmission> {
    let buyers = buyers(unit)?;
    let co = if buyers.len() > 1 {
        reg::CoOwnership::Joint
    } else {
        reg::CoOwnership::Sole
    };
    Ok(CaseSubmission {
        unit_code: unit.code.clone(),
        buyers,
        co_ownership: co as i32,
        contract_number: format!("YQ2025-SP-{:04}", unit.index + 1),
        same_day_opt_in: true,
    })
}

/// 契税 in fen for one buyer: 1.5% of a 5 800 元/㎡ price, split between the buyers.
pub fn deed_tax_fen(unit: &DemoUnit, buyers: usize) -> i64 {
    // gfa (0.01 ㎡) × 5 800 元/㎡ = gfa × 5 800 fen; 1.5% of that = gfa × 87.
    (unit.gfa_centi * 87) / i64::try_from(buyers.max(1)).unwrap_or(1)
}

/// 维修资金 in fen: 80 元/㎡.
pub fn maintenance_fund_fen(unit: &DemoUnit) -> i64 {
    unit.gfa_centi * 80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_identifiers_are_valid() {
        let code = developer_credit_code().unwrap();
        assert_eq!(code.len(), 18);
        assert!(code.starts_with("91140827MA0"));
        let units = units().unwrap();
        assert_eq!(units.len(), (BUILDINGS * FLOORS * UNITS_PER_FLOOR) as usize);
        assert_eq!(units[0].code, "140827001002GB00012F00010101");
        let mut ids = std::collections::HashSet::new();
        for u in &units {
            u.code.parse::<UnitCode>().unwrap();
            let sub = case_submission(u).unwrap();
            for b in &sub.buyers {
                b.resident_id.parse::<ResidentId>().unwrap();
                assert!(ids.insert(b.resident_id.clone()), "duplicate buyer id");
            }
        }
        assert!(units.iter().any(|u| buyers(u).unwrap().len() == 2));
    }

    #[test]
    fn demo_table_areas_add_up() {
        let t = building_table().unwrap();
        assert_eq!(t.buildings.len(), BUILDINGS as usize);
        for b in &t.buildings {
            for u in &b.units {
                assert_eq!(
                    u.measured_gfa_centi_sqm,
                    u.internal_area_centi_sqm + u.shared_area_centi_sqm
                );
                assert_eq!(
                    u.unit_code[20..24].parse::<u32>().unwrap(),
                    b.building_number
                );
            }
        }
    }

    #[test]
    fn seeding_is_deterministic() {
        assert_eq!(
            format!("{:?}", building_table().unwrap()),
            format!("{:?}", building_table().unwrap())
        );
        let u = &units().unwrap()[5];
        assert_eq!(
            format!("{:?}", case_submission(u).unwrap()),
            format!("{:?}", case_submission(u).unwrap())
        );
    }
}
