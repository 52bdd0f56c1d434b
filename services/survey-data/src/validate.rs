//! Validation of an uploaded 楼盘表: every rule is checked and every violation is reported with the
//! proto field path, before anything is written.
use std::collections::HashMap;

use tongjiao_domain::{
    Area, AreaError, FixtureFeature, ParcelCode, ProjectId, RequestId, UnitCode, Violations,
    check_area_identity, format_date, parse_date,
};
use tongjiao_proto::survey::{PhysicalBuilding, Structure, Unit, UploadBuildingTableRequest};

/// 自然幢号 range.
const BUILDING_NUMBERS: std::ops::RangeInclusive<u32> = 1..=9999;
/// 总层数 range.
const TOTAL_FLOORS: std::ops::RangeInclusive<u32> = 1..=200;
/// 房号 length in characters.
const ROOM_NUMBER_MAX_CHARS: usize = 32;
/// 坐落 length in characters.
const LOCATION_MAX_CHARS: usize = 200;
/// Length cap of free-text names and usages (建筑物名称, 规划用途), in characters.
const TEXT_MAX_CHARS: usize = 200;

/// A 楼盘表 that passed every check.
#[derive(Debug, Clone)]
pub struct ValidTable {
    pub request_id: RequestId,
    pub project_id: ProjectId,
    pub parcel_code: ParcelCode,
    pub buildings: Vec<ValidBuilding>,
}

impl ValidTable {
    pub fn unit_count(&self) -> usize {
        self.buildings.iter().map(|b| b.units.len()).sum()
    }
}

/// A checked 自然幢.
#[derive(Debug, Clone)]
pub struct ValidBuilding {
    pub number: u32,
    pub name: String,
    pub total_floors: u32,
    pub floors_above_ground: u32,
    pub floors_below_ground: u32,
    pub structure: Structure,
    pub planned_usage: String,
    /// `YYYY-MM-DD`, or `None` before completion.
    pub completion_date: Option<String>,
    pub units: Vec<ValidUnit>,
}

/// A checked 户.
#[derive(Debug, Clone)]
pub struct ValidUnit {
    pub code: UnitCode,
    pub room_number: String,
    pub floor_number: i32,
    pub location: String,
    pub planned_usage: String,
    pub measured_gfa: Area,
    pub internal_area: Area,
    pub shared_area: Area,
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn too_long(s: &str, max: usize) -> bool {
    s.chars().count() > max
}

/// The floors a unit of this building may be on, when the building's floor figures are valid.
#[derive(Debug, Clone, Copy)]
struct FloorRange {
    lowest: i32,
    highest: i32,
}

/// Checks a whole upload; `Err` carries every violation.
pub fn validate_upload(req: &UploadBuildingTableRequest) -> Result<ValidTable, Violations> {
    let mut v = Violations::new();
    let request_id = v.check("request_id", req.request_id.parse::<RequestId>());
    let project_id = v.check("project_id", req.project_id.parse::<ProjectId>());
    let parcel_code = v.check("parcel_code", req.parcel_code.parse::<ParcelCode>());
    if req.buildings.is_empty() {
        v.push(
            "buildings",
            "at least one building is required (楼盘表至少应有一个自然幢)",
        );
    }

    // building number -> index of the first building that used it
    let mut building_numbers: HashMap<u32, usize> = HashMap::new();
    // unit code -> (building index, unit index) of its first use
    let mut unit_codes: HashMap<String, (usize, usize)> = HashMap::new();
    let mut buildings = Vec::with_capacity(req.buildings.len());
    for (bi, b) in req.buildings.iter().enumerate() {
        let prefix = format!("buildings[{bi}]");
        let building = validate_building(
            &mut v,
            &prefix,
            bi,
            b,
            parcel_code.as_ref(),
            &mut building_numbers,
            &mut unit_codes,
        );
        if let Some(building) = building {
            buildings.push(building);
        }
    }

    match (request_id, project_id, parcel_code) {
        (Some(request_id), Some(project_id), Some(parcel_code)) if v.is_empty() => Ok(ValidTable {
            request_id,
            project_id,
            parcel_code,
            buildings,
        }),
        _ => Err(v),
    }
}

fn validate_building(
    v: &mut Violations,
    prefix: &str,
    bi: usize,
    b: &PhysicalBuilding,
    parcel: Option<&ParcelCode>,
    building_numbers: &mut HashMap<u32, usize>,
    unit_codes: &mut HashMap<String, (usize, usize)>,
) -> Option<ValidBuilding> {
    let before = v.len();
    let number_ok = BUILDING_NUMBERS.contains(&b.building_number);
    if !number_ok {
        v.push(
            format!("{prefix}.building_number"),
            format!(
                "must be 1-9999, got {} (自然幢号应为1至9999)",
                b.building_number
            ),
        );
    } else if let Some(first) = building_numbers.get(&b.building_number) {
        v.push(
            format!("{prefix}.building_number"),
            format!(
                "building number {} is already used by buildings[{first}] (自然幢号重复)",
                b.building_number
            ),
        );
    } else {
        building_numbers.insert(b.building_number, bi);
    }
    if too_long(&b.name, TEXT_MAX_CHARS) {
        v.push(
            format!("{prefix}.name"),
            format!("must be at most {TEXT_MAX_CHARS} characters (建筑物名称过长)"),
        );
    }

    let total_ok = TOTAL_FLOORS.contains(&b.total_floors);
    if !total_ok {
        v.push(
            format!("{prefix}.total_floors"),
            format!("must be 1-200, got {} (总层数应为1至200)", b.total_floors),
        );
    }
    let split_given = b.floors_above_ground != 0 || b.floors_below_ground != 0;
    let split_ok = !split_given
        || u64::from(b.floors_above_ground) + u64::from(b.floors_below_ground)
            == u64::from(b.total_floors);
    if !split_ok {
        v.push(
            format!("{prefix}.floors_above_ground"),
            format!(
                "floors above ground ({}) + floors below ground ({}) must equal total_floors ({}) (地上层数与地下层数之和应等于总层数)",
                b.floors_above_ground, b.floors_below_ground, b.total_floors
            ),
        );
    }
    let floors = (total_ok && split_ok).then(|| {
        if split_given {
            // Both are at most total_floors (<= 200) here, so they fit in i32.
            FloorRange {
                lowest: -i32::try_from(b.floors_below_ground).unwrap_or(0),
                highest: i32::try_from(b.floors_above_ground).unwrap_or(0),
            }
        } else {
            FloorRange {
                lowest: 1,
                highest: i32::try_from(b.total_floors).unwrap_or(0),
            }
        }
    });

    let structure = match Structure::try_from(b.structure) {
        Ok(Structure::Unspecified) | Err(_) => {
            v.push(
                format!("{prefix}.structure"),
                format!(
                    "must be one of STRUCTURE_STEEL (1) … STRUCTURE_OTHER (6), got {} (房屋结构未填写或无效)",
                    b.structure
                ),
            );
            None
        }
        Ok(s) => Some(s),
    };
    if blank(&b.planned_usage) {
        v.push(
            format!("{prefix}.planned_usage"),
            "must not be empty (规划用途不能为空)",
        );
    } else if too_long(&b.planned_usage, TEXT_MAX_CHARS) {
        v.push(
            format!("{prefix}.planned_usage"),
            format!("must be at most {TEXT_MAX_CHARS} characters (规划用途过长)"),
        );
    }
    let completion_date = if b.completion_date.is_empty() {
        None
    } else {
        v.check(
            format!("{prefix}.completion_date"),
            parse_date(&b.completion_date),
        )
        .map(format_date)
    };

    if b.units.is_empty() {
        v.push(
            format!("{prefix}.units"),
            "at least one unit is required in each building (每个自然幢至少应有一户)",
        );
    }
    let building_number = number_ok.then_some(b.building_number);
    let mut units = Vec::with_capacity(b.units.len());
    for (ui, u) in b.units.iter().enumerate() {
        let unit_prefix = format!("{prefix}.units[{ui}]");
        if let Some(unit) = validate_unit(
            v,
            &unit_prefix,
            (bi, ui),
            u,
            parcel,
            building_number,
            floors,
            unit_codes,
        ) {
            units.push(unit);
        }
    }

    if v.len() != before {
        return None;
    }
    Some(ValidBuilding {
        number: b.building_number,
        name: b.name.clone(),
        total_floors: b.total_floors,
        floors_above_ground: b.floors_above_ground,
        floors_below_ground: b.floors_below_ground,
        structure: structure?,
        planned_usage: b.planned_usage.clone(),
        completion_date,
        units,
    })
}

#[allow(clippy::too_many_arguments)] // one call site; the arguments are the unit's context
fn validate_unit(
    v: &mut Violations,
    prefix: &str,
    at: (usize, usize),
    u: &Unit,
    parcel: Option<&ParcelCode>,
    building_number: Option<u32>,
    floors: Option<FloorRange>,
    unit_codes: &mut HashMap<String, (usize, usize)>,
) -> Option<ValidUnit> {
    let before = v.len();
    let code_field = format!("{prefix}.unit_code");
    let code = v.check(code_field.clone(), u.unit_code.parse::<UnitCode>());
    if let Some(code) = &code {
        if code.fixture() != FixtureFeature::House {
            v.push(
                code_field.clone(),
                format!(
                    "must be a house unit with fixture letter F, got {} (不动产单元代码的定着物特征码应为F房屋)",
                    code.fixture().as_char()
                ),
            );
        } else if let Some(number) = building_number
            && code.building_number() != Some(number)
        {
            v.push(
                code_field.clone(),
                format!(
                    "building number {} in the code differs from the building's building_number {number} (单元代码中的幢号与自然幢号不一致)",
                    code.building_number().unwrap_or(0)
                ),
            );
        }
        if let Some(parcel) = parcel
            && code.parcel_code() != parcel.as_str()
        {
            v.push(
                code_field.clone(),
                format!(
                    "parcel code {} differs from the table's parcel_code {parcel} (单元代码中的宗地代码与楼盘表宗地代码不一致)",
                    code.parcel_code()
                ),
            );
        }
        match unit_codes.get(code.as_str()) {
            Some((b, i)) => v.push(
                code_field.clone(),
                format!(
                    "unit code {code} already appears at buildings[{b}].units[{i}] (不动产单元代码重复)"
                ),
            ),
            None => {
                unit_codes.insert(code.as_str().to_owned(), at);
            }
        }
    }

    let room_chars = u.room_number.chars().count();
    if blank(&u.room_number) || room_chars > ROOM_NUMBER_MAX_CHARS {
        v.push(
            format!("{prefix}.room_number"),
            format!("must be 1-{ROOM_NUMBER_MAX_CHARS} characters, got {room_chars} (房号应为1至32个字符)"),
        );
    }

    if u.floor_number == 0 {
        v.push(
            format!("{prefix}.floor_number"),
            "must not be 0: floors above ground count from 1, below ground from -1 (所在层不能为0)",
        );
    } else if let Some(f) = floors
        && !(f.lowest..=f.highest).contains(&u.floor_number)
    {
        v.push(
            format!("{prefix}.floor_number"),
            format!(
                "floor {} is outside the building's floors {}..={} (所在层超出该幢层数范围)",
                u.floor_number, f.lowest, f.highest
            ),
        );
    }

    if blank(&u.location) || too_long(&u.location, LOCATION_MAX_CHARS) {
        v.push(
            format!("{prefix}.location"),
            format!("must be 1-{LOCATION_MAX_CHARS} characters (坐落不能为空且不超过200个字符)"),
        );
    }
    if blank(&u.planned_usage) {
        v.push(
            format!("{prefix}.planned_usage"),
            "must not be empty (规划用途不能为空)",
        );
    } else if too_long(&u.planned_usage, TEXT_MAX_CHARS) {
        v.push(
            format!("{prefix}.planned_usage"),
            format!("must be at most {TEXT_MAX_CHARS} characters (规划用途过长)"),
        );
    }

    let gfa_field = format!("{prefix}.measured_gfa_centi_sqm");
    let internal_field = format!("{prefix}.internal_area_centi_sqm");
    let gfa = v.check(
        gfa_field.clone(),
        Area::from_centi(u.measured_gfa_centi_sqm),
    );
    let internal = v.check(
        internal_field.clone(),
        Area::from_centi(u.internal_area_centi_sqm),
    );
    let shared = v.check(
        format!("{prefix}.shared_area_centi_sqm"),
        Area::from_centi(u.shared_area_centi_sqm),
    );
    if let (Some(gfa), Some(internal), Some(shared)) = (gfa, internal, shared)
        && let Err(e) = check_area_identity(gfa, internal, shared)
    {
        let field = match e {
            AreaError::InternalNotPositive => internal_field,
            _ => gfa_field,
        };
        v.push(field, e.to_string());
    }

    if v.len() != before {
        return None;
    }
    Some(ValidUnit {
        code: code?,
        room_number: u.room_number.clone(),
        floor_number: u.floor_number,
        location: u.location.clone(),
        planned_usage: u.planned_usage.clone(),
        measured_gfa: gfa?,
        internal_area: internal?,
        shared_area: shared?,
    })
}
