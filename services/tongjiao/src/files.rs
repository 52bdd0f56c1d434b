//! The input file formats: handover batch (JSON), tax completion events (JSON array) and the 楼盘表
//! (JSON in the shape of UploadBuildingTableRequest, or CSV). Parse errors name the line (CSV), the
//! line and column (JSON syntax) or the element (`events[3]`).
use std::collections::HashMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use tongjiao_domain::Area;
use tongjiao_proto::{
    registration::{self as reg, CaseSubmission, SubmitHandoverBatchRequest},
    survey::{PhysicalBuilding, Unit, UploadBuildingTableRequest},
    tax::{
        DeedTaxPaid, DeveloperTaxCleared, LandFeesPaid, MaintenanceFundDeposited,
        PushCompletionsRequest, push_completions_request::Payload,
    },
};

/// Why an input file could not be read. The message names the place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError(pub String);

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FileError {}

fn err(msg: impl Into<String>) -> FileError {
    FileError(msg.into())
}

fn json_error(e: &serde_json::Error) -> FileError {
    err(format!("invalid JSON (JSON格式错误): {e}"))
}

/// A request id derived from the file's bytes, so running the same file twice is idempotent.
pub fn content_request_id(prefix: &str, bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("{prefix}-{}", hex::encode(&digest[..16]))
}

/// The request id to use: `--request-id`, else the one in the file, else a hash of the file.
pub fn pick_request_id(
    flag: Option<&str>,
    in_file: Option<&str>,
    prefix: &str,
    bytes: &[u8],
) -> String {
    flag.or(in_file.filter(|s| !s.trim().is_empty()))
        .map(str::to_owned)
        .unwrap_or_else(|| content_request_id(prefix, bytes))
}

// ---------------------------------------------------------------------------------------------
// Handover batch (交房批次)

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchFile {
    #[serde(default)]
    request_id: Option<String>,
    project_id: String,
    handover_date: String,
    material_deadline: String,
    cases: Vec<CaseFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    unit_code: String,
    buyers: Vec<BuyerFile>,
    co_ownership: CoOwnershipFile,
    contract_number: String,
    same_day_opt_in: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuyerFile {
    name: String,
    resident_id: String,
    #[serde(default)]
    share_basis_points: u32,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CoOwnershipFile {
    Sole,
    Joint,
    InShares,
}

/// Reads a batch file into the SubmitHandoverBatch request.
pub fn parse_batch(
    text: &str,
    request_id_flag: Option<&str>,
) -> Result<SubmitHandoverBatchRequest, FileError> {
    let f: BatchFile = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    let request_id = pick_request_id(
        request_id_flag,
        f.request_id.as_deref(),
        "batch",
        text.as_bytes(),
    );
    Ok(SubmitHandoverBatchRequest {
        request_id,
        project_id: f.project_id,
        handover_date: f.handover_date,
        material_deadline: f.material_deadline,
        cases: f
            .cases
            .into_iter()
            .map(|c| CaseSubmission {
                unit_code: c.unit_code,
                buyers: c
                    .buyers
                    .into_iter()
                    .map(|b| reg::Buyer {
                        name: b.name,
                        resident_id: b.resident_id,
                        share_basis_points: b.share_basis_points,
                    })
                    .collect(),
                co_ownership: match c.co_ownership {
                    CoOwnershipFile::Sole => reg::CoOwnership::Sole,
                    CoOwnershipFile::Joint => reg::CoOwnership::Joint,
                    CoOwnershipFile::InShares => reg::CoOwnership::InShares,
                } as i32,
                contract_number: c.contract_number,
                same_day_opt_in: c.same_day_opt_in,
            })
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Tax completion events (完税事件)

#[derive(Debug, Deserialize)]
struct TaxEventFile {
    event_id: String,
    #[serde(default)]
    occurred_at: Option<String>,
    #[serde(flatten)]
    fact: TaxFact,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TaxFact {
    DeedTaxPaid {
        unit_code: String,
        buyer_id: String,
        amount_fen: i64,
        voucher_number: String,
        #[serde(default)]
        relieved: bool,
        #[serde(default)]
        relief_basis: String,
    },
    MaintenanceFundDeposited {
        unit_code: String,
        amount_fen: i64,
        receipt_number: String,
    },
    DeveloperTaxCleared {
        project_id: String,
        developer_credit_code: String,
        voucher_number: String,
    },
    LandFeesPaid {
        parcel_code: String,
        amount_fen: i64,
        voucher_number: String,
    },
}

/// Reads a JSON array of tax events into PushCompletions requests.
pub fn parse_tax_events(text: &str) -> Result<Vec<PushCompletionsRequest>, FileError> {
    let values: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        let id_hint = v
            .get("event_id")
            .and_then(|x| x.as_str())
            .map(|s| format!(" (event_id {s})"))
            .unwrap_or_default();
        let e: TaxEventFile = serde_json::from_value(v)
            .map_err(|e| err(format!("events[{i}]{id_hint}: {e} (完税事件格式错误)")))?;
        let occurred_at = match e.occurred_at.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let t = time::OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
                    err(format!(
                        "events[{i}]{id_hint}: occurred_at {s:?} is not an RFC 3339 time like 2026-11-29T09:30:00+08:00 (发生时间格式错误)"
                    ))
                })?;
                Some(prost_types::Timestamp {
                    seconds: t.unix_timestamp(),
                    nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
                })
            }
        };
        let payload = match e.fact {
            TaxFact::DeedTaxPaid {
                unit_code,
                buyer_id,
                amount_fen,
                voucher_number,
                relieved,
                relief_basis,
            } => Payload::DeedTaxPaid(DeedTaxPaid {
                unit_code,
                buyer_id,
                amount_fen,
                voucher_number,
                relieved,
                relief_basis,
            }),
            TaxFact::MaintenanceFundDeposited {
                unit_code,
                amount_fen,
                receipt_number,
            } => Payload::MaintenanceFundDeposited(MaintenanceFundDeposited {
                unit_code,
                amount_fen,
                receipt_number,
            }),
            TaxFact::DeveloperTaxCleared {
                project_id,
                developer_credit_code,
                voucher_number,
            } => Payload::DeveloperTaxCleared(DeveloperTaxCleared {
                project_id,
                developer_credit_code,
                voucher_number,
            }),
            TaxFact::LandFeesPaid {
                parcel_code,
                amount_fen,
                voucher_number,
            } => Payload::LandFeesPaid(LandFeesPaid {
                parcel_code,
                amount_fen,
                voucher_number,
            }),
        };
        out.push(PushCompletionsRequest {
            event_id: e.event_id,
            occurred_at,
            payload: Some(payload),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 楼盘表 (building table)

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SurveyFile {
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    project_id: String,
    #[serde(default)]
    parcel_code: String,
    buildings: Vec<BuildingFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildingFile {
    building_number: u32,
    #[serde(default)]
    name: String,
    total_floors: u32,
    #[serde(default)]
    floors_above_ground: u32,
    #[serde(default)]
    floors_below_ground: u32,
    structure: i32,
    planned_usage: String,
    #[serde(default)]
    completion_date: String,
    units: Vec<UnitFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitFile {
    unit_code: String,
    room_number: String,
    floor_number: i32,
    location: String,
    planned_usage: String,
    measured_gfa_centi_sqm: i64,
    internal_area_centi_sqm: i64,
    shared_area_centi_sqm: i64,
}

/// Whether a 楼盘表 file is CSV: by extension, else by its first non-blank character.
pub fn looks_like_csv(path: &std::path::Path, text: &str) -> bool {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => true,
        Some("json") => false,
        _ => !text.trim_start().starts_with('{'),
    }
}

fn check_structure(code: i32, place: &str) -> Result<(), FileError> {
    if (1..=6).contains(&code) {
        Ok(())
    } else {
        Err(err(format!(
            "{place}: structure must be a code 1-6 (1 钢 steel, 2 钢和钢筋混凝土, 3 钢筋混凝土 reinforced concrete, 4 混合 mixed, 5 砖木 brick and wood, 6 其它 other), got {code} (房屋结构代码应为1至6)"
        )))
    }
}

/// Reads a 楼盘表 JSON file. `--project`/`--parcel` override the file's values when given.
pub fn parse_survey_json(
    text: &str,
    project: Option<&str>,
    parcel: Option<&str>,
    request_id_flag: Option<&str>,
) -> Result<UploadBuildingTableRequest, FileError> {
    let f: SurveyFile = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    for (i, b) in f.buildings.iter().enumerate() {
        check_structure(b.structure, &format!("buildings[{i}]"))?;
    }
    let project_id = project.map(str::to_owned).unwrap_or(f.project_id);
    let parcel_code = parcel.map(str::to_owned).unwrap_or(f.parcel_code);
    if project_id.is_empty() {
        return Err(err(
            "project_id is missing: put it in the file or pass --project (缺少项目编号)",
        ));
    }
    if parcel_code.is_empty() {
        return Err(err(
            "parcel_code is missing: put it in the file or pass --parcel (缺少宗地代码)",
        ));
    }
    let request_id = pick_request_id(
        request_id_flag,
        f.request_id.as_deref(),
        "survey",
        text.as_bytes(),
    );
    Ok(UploadBuildingTableRequest {
        request_id,
        project_id,
        parcel_code,
        buildings: f
            .buildings
            .into_iter()
            .map(|b| PhysicalBuilding {
                building_number: b.building_number,
                name: b.name,
                total_floors: b.total_floors,
                floors_above_ground: b.floors_above_ground,
                floors_below_ground: b.floors_below_ground,
                structure: b.structure,
                planned_usage: b.planned_usage,
                completion_date: b.completion_date,
                units: b
                    .units
                    .into_iter()
                    .map(|u| Unit {
                        unit_code: u.unit_code,
                        room_number: u.room_number,
                        floor_number: u.floor_number,
                        location: u.location,
                        planned_usage: u.planned_usage,
                        measured_gfa_centi_sqm: u.measured_gfa_centi_sqm,
                        internal_area_centi_sqm: u.internal_area_centi_sqm,
                        shared_area_centi_sqm: u.shared_area_centi_sqm,
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect(),
    })
}

/// Columns of the 楼盘表 CSV, in this order in the header.
pub const SURVEY_CSV_COLUMNS: [&str; 12] = [
    "building_number",
    "building_name",
    "total_floors",
    "structure",
    "unit_code",
    "room_number",
    "floor_number",
    "location",
    "planned_usage",
    "measured_gfa",
    "internal_area",
    "shared_area",
];

/// Reads a 楼盘表 CSV (one row per 户, areas in ㎡ with up to two decimals). Rows of one building
/// must agree on its name, floors and structure. `parcel` defaults to the first 19 characters of
/// the first unit code.
pub fn parse_survey_csv(
    text: &str,
    project: &str,
    parcel: Option<&str>,
    request_id_flag: Option<&str>,
) -> Result<UploadBuildingTableRequest, FileError> {
    if project.trim().is_empty() {
        return Err(err(
            "--project is required for a CSV 楼盘表 (CSV格式须用 --project 指定项目编号)",
        ));
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| {
            err(format!(
                "line 1: cannot read the CSV header (表头无法读取): {e}"
            ))
        })?
        .clone();
    let mut index = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        index.insert(h.to_owned(), i);
    }
    let missing: Vec<&str> = SURVEY_CSV_COLUMNS
        .iter()
        .copied()
        .filter(|c| !index.contains_key(*c))
        .collect();
    if !missing.is_empty() {
        return Err(err(format!(
            "line 1: the header lacks column(s) {} (表头缺少列); expected: {}",
            missing.join(", "),
            SURVEY_CSV_COLUMNS.join(",")
        )));
    }
    let col = |name: &str| index.get(name).copied().unwrap_or(0);

    struct Building {
        first_line: u64,
        pb: PhysicalBuilding,
        lowest_floor: i32,
    }
    let mut order: Vec<u32> = Vec::new();
    let mut buildings: HashMap<u32, Building> = HashMap::new();
    for record in rdr.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            err(format!(
                "line {line}: unreadable CSV row (CSV行无法读取): {e}"
            ))
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let get = |name: &str| record.get(col(name)).unwrap_or("").to_owned();
        let bad = |name: &str, why: &str| {
            err(format!(
                "line {line}, column {name}: {why}, got {:?}",
                record.get(col(name)).unwrap_or("")
            ))
        };
        let number: u32 = get("building_number").parse().map_err(|_| {
            bad(
                "building_number",
                "must be a whole number 1-9999 (自然幢号应为整数)",
            )
        })?;
        let total_floors: u32 = get("total_floors").parse().map_err(|_| {
            bad(
                "total_floors",
                "must be a whole number 1-200 (总层数应为整数)",
            )
        })?;
        let structure: i32 = get("structure")
            .parse()
            .map_err(|_| bad("structure", "must be a code 1-6 (房屋结构代码应为1至6)"))?;
        check_structure(structure, &format!("line {line}, column structure"))?;
        let floor_number: i32 = get("floor_number").parse().map_err(|_| {
            bad(
                "floor_number",
                "must be a whole number, negative below ground (所在层应为整数)",
            )
        })?;
        let area = |name: &str| -> Result<i64, FileError> {
            get(name)
                .parse::<Area>()
                .map(Area::centi)
                .map_err(|e| bad(name, &e.to_string()))
        };
        let gfa = area("measured_gfa")?;
        let internal = area("internal_area")?;
        let shared = area("shared_area")?;
        let name = get("building_name");
        let unit = Unit {
            unit_code: get("unit_code"),
            room_number: get("room_number"),
            floor_number,
            location: get("location"),
            planned_usage: get("planned_usage"),
            measured_gfa_centi_sqm: gfa,
            internal_area_centi_sqm: internal,
            shared_area_centi_sqm: shared,
            ..Default::default()
        };
        match buildings.get_mut(&number) {
            Some(b) => {
                let first = b.first_line;
                if b.pb.name != name {
                    return Err(bad(
                        "building_name",
                        &format!(
                            "building {number} is named {:?} on line {first} (同一自然幢名称不一致)",
                            b.pb.name
                        ),
                    ));
                }
                if b.pb.total_floors != total_floors {
                    return Err(bad(
                        "total_floors",
                        &format!(
                            "building {number} has {} floors on line {first} (同一自然幢总层数不一致)",
                            b.pb.total_floors
                        ),
                    ));
                }
                if b.pb.structure != structure {
                    return Err(bad(
                        "structure",
                        &format!(
                            "building {number} has structure {} on line {first} (同一自然幢房屋结构不一致)",
                            b.pb.structure
                        ),
                    ));
                }
                b.lowest_floor = b.lowest_floor.min(floor_number);
                b.pb.units.push(unit);
            }
            None => {
                order.push(number);
                buildings.insert(
                    number,
                    Building {
                        first_line: line,
                        lowest_floor: floor_number,
                        pb: PhysicalBuilding {
                            building_number: number,
                            name,
                            total_floors,
                            floors_above_ground: 0,
                            floors_below_ground: 0,
                            structure,
                            planned_usage: unit.planned_usage.clone(),
                            completion_date: String::new(),
                            units: vec![unit],
                        },
                    },
                );
            }
        }
    }
    if order.is_empty() {
        return Err(err("the CSV has no unit rows (CSV无数据行)"));
    }
    let mut out = Vec::with_capacity(order.len());
    for n in order {
        if let Some(mut b) = buildings.remove(&n) {
            if b.lowest_floor < 0 {
                let below = b.lowest_floor.unsigned_abs();
                b.pb.floors_below_ground = below;
                b.pb.floors_above_ground = b.pb.total_floors.saturating_sub(below);
            }
            out.push(b.pb);
        }
    }
    let parcel_code = match parcel {
        Some(p) => p.to_owned(),
        None => out
            .first()
            .and_then(|b| b.units.first())
            .and_then(|u| u.unit_code.get(..19))
            .map(str::to_owned)
            .ok_or_else(|| {
                err("cannot derive the parcel code from the first unit code; pass --parcel (无法从单元代码推出宗地代码)")
            })?,
    };
    let request_id = pick_request_id(request_id_flag, None, "survey", text.as_bytes());
    Ok(UploadBuildingTableRequest {
        request_id,
        project_id: project.to_owned(),
        parcel_code,
        buildings: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: &str = r#"{
      "project_id": "YQ-2026-001",
      "handover_date": "2026-12-05",
      "material_deadline": "2026-12-03",
      "cases": [
        {"unit_code": "140827001002GB00012F00010101",
         "buyers": [{"name": "王建国", "resident_id": "140827198503120014"}],
         "co_ownership": "sole", "contract_number": "HT-1", "same_day_opt_in": true},
        {"unit_code": "140827001002GB00012F00010102",
         "buyers": [{"name": "甲", "resident_id": "1", "share_basis_points": 6000},
                    {"name": "乙", "resident_id": "2", "share_basis_points": 4000}],
         "co_ownership": "in_shares", "contract_number": "HT-2", "same_day_opt_in": false}
      ]
    }"#;

    #[test]
    fn batch_parses_with_a_content_request_id() {
        let r = parse_batch(BATCH, None).unwrap();
        assert_eq!(r.project_id, "YQ-2026-001");
        assert_eq!(r.cases.len(), 2);
        assert_eq!(r.cases[0].co_ownership, reg::CoOwnership::Sole as i32);
        assert_eq!(r.cases[1].co_ownership, reg::CoOwnership::InShares as i32);
        assert_eq!(r.cases[1].buyers[0].share_basis_points, 6000);
        assert!(!r.cases[1].same_day_opt_in);
        assert!(r.request_id.starts_with("batch-"));
        // Same bytes, same id; different bytes, different id.
        assert_eq!(parse_batch(BATCH, None).unwrap().request_id, r.request_id);
        let other = BATCH.replace("HT-1", "HT-9");
        assert_ne!(parse_batch(&other, None).unwrap().request_id, r.request_id);
        // The flag wins over the hash and over the file.
        assert_eq!(parse_batch(BATCH, Some("mine")).unwrap().request_id, "mine");
        let with_id = BATCH.replacen('{', r#"{"request_id": "from-file","#, 1);
        assert_eq!(parse_batch(&with_id, None).unwrap().request_id, "from-file");
    }

    #[test]
    fn batch_errors_name_the_line() {
        let bad = BATCH.replace(r#""co_ownership": "sole""#, r#""co_ownership": "alone""#);
        let e = parse_batch(&bad, None).unwrap_err().to_string();
        assert!(e.contains("unknown variant `alone`"), "{e}");
        assert!(e.contains("line 8"), "{e}");
        let e = parse_batch(r#"{"project_id": 1}"#, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = parse_batch(
            &BATCH.replace("\"same_day_opt_in\": true", "\"opt\": true"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `opt`"), "{e}");
    }

    const TAX: &str = r#"[
      {"event_id": "e1", "type": "deed_tax_paid", "unit_code": "U", "buyer_id": "B",
       "amount_fen": 150000, "voucher_number": "V1", "occurred_at": "2026-11-29T09:30:00+08:00"},
      {"event_id": "e2", "type": "maintenance_fund_deposited", "unit_code": "U", "amount_fen": 836800, "receipt_number": "R1"},
      {"event_id": "e3", "type": "developer_tax_cleared", "project_id": "P", "developer_credit_code": "C", "voucher_number": "V3"},
      {"event_id": "e4", "type": "land_fees_paid", "parcel_code": "PC", "amount_fen": 1, "voucher_number": "V4"},
      {"event_id": "e5", "type": "deed_tax_paid", "unit_code": "U", "buyer_id": "B2",
       "amount_fen": 0, "voucher_number": "V5", "relieved": true, "relief_basis": "财税〔2016〕23号"}
    ]"#;

    #[test]
    fn tax_events_parse_every_type() {
        let evs = parse_tax_events(TAX).unwrap();
        assert_eq!(evs.len(), 5);
        match &evs[0].payload {
            Some(Payload::DeedTaxPaid(d)) => {
                assert_eq!(d.amount_fen, 150000);
                assert!(!d.relieved);
            }
            other => panic!("{other:?}"),
        }
        // 09:30 CST = 01:30 UTC
        assert_eq!(
            evs[0].occurred_at.map(|t| t.seconds),
            Some(1_795_914_000 + 1800)
        );
        assert!(matches!(
            evs[1].payload,
            Some(Payload::MaintenanceFundDeposited(_))
        ));
        assert!(matches!(
            evs[2].payload,
            Some(Payload::DeveloperTaxCleared(_))
        ));
        assert!(matches!(evs[3].payload, Some(Payload::LandFeesPaid(_))));
        match &evs[4].payload {
            Some(Payload::DeedTaxPaid(d)) => assert!(d.relieved),
            other => panic!("{other:?}"),
        }
        assert!(evs[1].occurred_at.is_none());
    }

    #[test]
    fn tax_errors_name_the_event() {
        let bad = TAX.replace(r#""receipt_number": "R1""#, r#""receipt": "R1""#);
        let e = parse_tax_events(&bad).unwrap_err().to_string();
        assert!(e.starts_with("events[1] (event_id e2)"), "{e}");
        assert!(e.contains("receipt_number"), "{e}");
        let bad = TAX.replace("land_fees_paid", "land_tax");
        let e = parse_tax_events(&bad).unwrap_err().to_string();
        assert!(e.starts_with("events[3] (event_id e4)"), "{e}");
        let bad = TAX.replace("2026-11-29T09:30:00+08:00", "yesterday");
        let e = parse_tax_events(&bad).unwrap_err().to_string();
        assert!(e.contains("events[0]") && e.contains("RFC 3339"), "{e}");
        let e = parse_tax_events("[{]").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    const CSV: &str = "building_number,building_name,total_floors,structure,unit_code,room_number,floor_number,location,planned_usage,measured_gfa,internal_area,shared_area
1,1号楼,6,3,140827001002GB00012F00010101,1单元101,1,垣曲县同交花园1号楼101室,住宅,104.61,89.23,15.38
1,1号楼,6,3,140827001002GB00012F00010102,1单元102,1,垣曲县同交花园1号楼102室,住宅,89.37,76.12,13.25
2,2号楼,3,4,140827001002GB00012F00020001,负一层车位1,-1,垣曲县同交花园2号楼车位1,车位,12.5,12.5,0
";

    #[test]
    fn survey_csv_groups_rows_into_buildings() {
        let r = parse_survey_csv(CSV, "YQ-2026-001", None, None).unwrap();
        assert_eq!(r.project_id, "YQ-2026-001");
        assert_eq!(r.parcel_code, "140827001002GB00012");
        assert!(r.request_id.starts_with("survey-"));
        assert_eq!(r.buildings.len(), 2);
        let b1 = &r.buildings[0];
        assert_eq!(
            (b1.building_number, b1.total_floors, b1.structure),
            (1, 6, 3)
        );
        assert_eq!(b1.name, "1号楼");
        assert_eq!(b1.planned_usage, "住宅");
        assert_eq!(b1.units.len(), 2);
        assert_eq!(b1.units[0].measured_gfa_centi_sqm, 10461);
        assert_eq!(b1.units[0].internal_area_centi_sqm, 8923);
        assert_eq!(b1.units[0].shared_area_centi_sqm, 1538);
        let b2 = &r.buildings[1];
        assert_eq!(b2.units[0].measured_gfa_centi_sqm, 1250);
        assert_eq!(b2.units[0].floor_number, -1);
        assert_eq!((b2.floors_above_ground, b2.floors_below_ground), (2, 1));
        let p = parse_survey_csv(CSV, "P", Some("140827001002GB00099"), Some("rid")).unwrap();
        assert_eq!(p.parcel_code, "140827001002GB00099");
        assert_eq!(p.request_id, "rid");
    }

    #[test]
    fn survey_csv_bad_row_names_the_line_and_column() {
        let bad = CSV.replace("89.37", "89,37");
        // The extra comma shifts the row: the csv reader reports the field count on line 3.
        let e = parse_survey_csv(&bad, "P", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 3"), "{e}");
        let bad = CSV.replace("89.37", "89.375");
        let e = parse_survey_csv(&bad, "P", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 3, column measured_gfa"), "{e}");
        assert!(e.contains("89.375"), "{e}");
        let bad = CSV.replace(",-1,", ",B1,");
        let e = parse_survey_csv(&bad, "P", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 4, column floor_number"), "{e}");
        let bad = CSV.replace(
            "1,1号楼,6,3,140827001002GB00012F00010102",
            "1,1号楼,7,3,140827001002GB00012F00010102",
        );
        let e = parse_survey_csv(&bad, "P", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 3, column total_floors"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let bad = CSV.replace(
            ",3,140827001002GB00012F00010101",
            ",9,140827001002GB00012F00010101",
        );
        let e = parse_survey_csv(&bad, "P", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2, column structure"), "{e}");
        let bad = CSV.replacen("shared_area", "shared", 1);
        let e = parse_survey_csv(&bad, "P", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 1") && e.contains("shared_area"), "{e}");
        let header_only = CSV.lines().next().unwrap_or_default().to_owned();
        assert!(parse_survey_csv(&header_only, "P", None, None).is_err());
        assert!(parse_survey_csv(CSV, " ", None, None).is_err());
    }

    const SURVEY_JSON: &str = r#"{
      "project_id": "YQ-2026-001",
      "parcel_code": "140827001002GB00012",
      "buildings": [{
        "building_number": 1, "name": "1号楼", "total_floors": 6, "structure": 3,
        "planned_usage": "住宅", "completion_date": "2025-10-30",
        "units": [{"unit_code": "140827001002GB00012F00010101", "room_number": "1单元101",
                   "floor_number": 1, "location": "垣曲县同交花园1号楼101室", "planned_usage": "住宅",
                   "measured_gfa_centi_sqm": 10461, "internal_area_centi_sqm": 8923,
                   "shared_area_centi_sqm": 1538}]
      }]
    }"#;

    #[test]
    fn survey_json_parses_and_flags_override() {
        let r = parse_survey_json(SURVEY_JSON, None, None, None).unwrap();
        assert_eq!(r.project_id, "YQ-2026-001");
        assert_eq!(r.buildings[0].units[0].measured_gfa_centi_sqm, 10461);
        assert_eq!(r.buildings[0].completion_date, "2025-10-30");
        assert!(r.request_id.starts_with("survey-"));
        let o =
            parse_survey_json(SURVEY_JSON, Some("X-1"), Some("140827001002GB00013"), None).unwrap();
        assert_eq!(
            (o.project_id.as_str(), o.parcel_code.as_str()),
            ("X-1", "140827001002GB00013")
        );
    }

    #[test]
    fn survey_json_errors_are_clear() {
        let bad = SURVEY_JSON.replace("\"structure\": 3", "\"structure\": 7");
        let e = parse_survey_json(&bad, None, None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("buildings[0]: structure must be a code 1-6"),
            "{e}"
        );
        let bad = SURVEY_JSON.replace("\"floor_number\": 1", "\"floor_number\": \"1\"");
        let e = parse_survey_json(&bad, None, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 8"), "{e}");
        let bad = SURVEY_JSON.replace("\"project_id\": \"YQ-2026-001\",", "");
        let e = parse_survey_json(&bad, None, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--project"), "{e}");
    }

    #[test]
    fn format_detection() {
        use std::path::Path;
        assert!(looks_like_csv(Path::new("t.csv"), "{"));
        assert!(!looks_like_csv(Path::new("t.json"), "a,b"));
        assert!(!looks_like_csv(Path::new("t"), "  {\"a\":1}"));
        assert!(looks_like_csv(Path::new("t.txt"), "building_number,..."));
    }
}
