//! Between rows, domain values and the protobuf replies.
use tongjiao_domain::{
    Area, CaseState, CoOwnership, Missing, MissingKind, ResidentId, parse_date, term_of_use_zh,
};
use tongjiao_proto::registration as pb;
use tongjiao_server::timestamp_ms;

use crate::rows::{
    BuyerRow, CaseRow, FIRST_APPLIED, FIRST_COMPLETED, KIND_LAND, ProjectRow, UnitRow,
};

/// Missing items are stored one per line: kind, masked buyer id, detail, tab-separated. None of
/// them can contain a tab or a newline: we write every one of them.
pub fn encode_missing(items: &[Missing]) -> String {
    items
        .iter()
        .map(|m| {
            format!(
                "{}\t{}\t{}",
                m.kind.as_str(),
                m.buyer_id.as_deref().unwrap_or(""),
                m.detail
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The stored lines as (kind, masked buyer id, detail).
pub fn stored_missing(s: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    s.split('\n').filter(|l| !l.is_empty()).map(|line| {
        let mut parts = line.splitn(3, '\t');
        (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        )
    })
}

pub fn decode_missing(s: &str) -> Vec<pb::MissingItem> {
    stored_missing(s)
        .map(|(kind, buyer, detail)| pb::MissingItem {
            kind: kind.parse::<MissingKind>().map(missing_kind).unwrap_or(0),
            detail: detail.to_owned(),
            buyer_id: buyer.to_owned(),
        })
        .collect()
}

pub fn missing_kind(k: MissingKind) -> i32 {
    (match k {
        MissingKind::FirstRegistration => pb::MissingKind::FirstRegistration,
        MissingKind::BuildingTableUnit => pb::MissingKind::BuildingTableUnit,
        MissingKind::DeedTax => pb::MissingKind::DeedTax,
        MissingKind::MaintenanceFund => pb::MissingKind::MaintenanceFund,
        MissingKind::BuildingTable => pb::MissingKind::BuildingTable,
        MissingKind::Acceptance => pb::MissingKind::Acceptance,
        MissingKind::DeveloperTax => pb::MissingKind::DeveloperTax,
        MissingKind::LandFees => pb::MissingKind::LandFees,
    }) as i32
}

pub fn missing_items(items: &[Missing]) -> Vec<pb::MissingItem> {
    items
        .iter()
        .map(|m| pb::MissingItem {
            kind: missing_kind(m.kind),
            detail: m.detail.clone(),
            buyer_id: m.buyer_id.clone().unwrap_or_default(),
        })
        .collect()
}

pub fn case_state(s: CaseState) -> i32 {
    (match s {
        CaseState::Pending => pb::CaseState::Pending,
        CaseState::Ready => pb::CaseState::Ready,
        CaseState::TransferRegistered => pb::CaseState::TransferRegistered,
        CaseState::CertificateIssued => pb::CaseState::CertificateIssued,
        CaseState::Lapsed => pb::CaseState::Lapsed,
        CaseState::OptedOut => pb::CaseState::OptedOut,
    }) as i32
}

pub fn co_ownership_from_pb(v: i32) -> Option<CoOwnership> {
    match pb::CoOwnership::try_from(v).ok()? {
        pb::CoOwnership::Sole => Some(CoOwnership::Sole),
        pb::CoOwnership::Joint => Some(CoOwnership::Joint),
        pb::CoOwnership::InShares => Some(CoOwnership::InShares),
        pb::CoOwnership::Unspecified => None,
    }
}

pub fn co_ownership_to_pb(c: CoOwnership) -> i32 {
    (match c {
        CoOwnership::Sole => pb::CoOwnership::Sole,
        CoOwnership::Joint => pb::CoOwnership::Joint,
        CoOwnership::InShares => pb::CoOwnership::InShares,
    }) as i32
}

/// The full case, with clear resident ids; `mask_case` before showing it to callers that must not
/// see them.
pub fn case_proto(row: &CaseRow, buyers: &[BuyerRow]) -> pb::Case {
    let state = row.state.parse::<CaseState>().map(case_state).unwrap_or(0);
    pb::Case {
        case_id: row.case_id.clone(),
        batch_id: row.batch_id.clone(),
        project_id: row.project_id.clone(),
        unit_code: row.unit_code.clone(),
        buyers: buyers
            .iter()
            .map(|b| pb::Buyer {
                name: b.name.clone(),
                resident_id: b.resident_id.clone(),
                share_basis_points: b.share_bp as u32,
            })
            .collect(),
        co_ownership: row
            .co_ownership
            .parse::<CoOwnership>()
            .map(co_ownership_to_pb)
            .unwrap_or(0),
        contract_number: row.contract_number.clone(),
        state,
        missing: decode_missing(&row.missing),
        material_deadline: row.material_deadline.clone(),
        handover_date: row.handover_date.clone(),
        lapsed_reason: row.lapsed_reason.clone().unwrap_or_default(),
        certificate_number: row.certificate_number.clone().unwrap_or_default(),
        version: row.version as u64,
        same_day_opt_in: row.opt_in == 1,
    }
}

/// Replaces every resident id in the case by its masked form (140827********1234).
pub fn mask_case(case: &mut pb::Case) {
    for b in &mut case.buyers {
        b.resident_id = mask_id(&b.resident_id);
    }
}

pub fn mask_id(id: &str) -> String {
    id.parse::<ResidentId>()
        .map(|r| r.masked())
        .unwrap_or_else(|_| "********".into())
}

pub fn project_proto(p: &ProjectRow, missing: Vec<pb::MissingItem>) -> pb::Project {
    pb::Project {
        project_id: p.project_id.clone(),
        name: p.name.clone(),
        kind: if p.kind == KIND_LAND {
            pb::ProjectKind::Land
        } else {
            pb::ProjectKind::Housing
        } as i32,
        county_code: p.county_code.clone(),
        parcel_code: p.parcel_code.clone(),
        developer_credit_code: p.developer_credit_code.clone(),
        developer_name: p.developer_name.clone(),
        agreement_number: p.agreement_number.clone(),
        agreement_signed_on: p.agreement_signed_on.clone(),
        land: Some(pb::LandRight {
            usage: p.land_usage.clone(),
            right_nature: p.land_right_nature.clone(),
            term_start: p.land_term_start.clone(),
            term_end: p.land_term_end.clone(),
            parcel_area_centi_sqm: p.parcel_area_centi,
        }),
        first_registration_status: match p.first_registration.as_str() {
            FIRST_APPLIED => pb::FirstRegistrationStatus::Applied,
            FIRST_COMPLETED => pb::FirstRegistrationStatus::Completed,
            _ => pb::FirstRegistrationStatus::Unspecified,
        } as i32,
        first_registration_missing: missing,
        enrolled_at: Some(timestamp_ms(p.enrolled_at_ms)),
        first_registered_at: p.first_registered_at_ms.map(timestamp_ms),
    }
}

fn structure_zh(code: i64) -> &'static str {
    match code {
        1 => "钢结构",
        2 => "钢和钢筋混凝土结构",
        3 => "钢筋混凝土结构",
        4 => "混合结构",
        5 => "砖木结构",
        _ => "其它结构",
    }
}

fn area(centi: i64) -> String {
    Area::from_centi(centi)
        .map(|a| a.to_string())
        .unwrap_or_else(|_| format!("{centi}/100"))
}

/// The printed fields of the 不动产权证书 for a case (证书打印内容).
pub struct PrintedFields {
    pub right_holders: String,
    pub co_ownership: String,
    pub location: String,
    pub right_type: String,
    pub right_nature: String,
    pub usage: String,
    pub area: String,
    pub term_of_use: String,
    pub other_info: String,
    pub remarks: String,
}

pub fn printed_fields(
    project: &ProjectRow,
    case: &CaseRow,
    buyers: &[BuyerRow],
    unit: Option<&UnitRow>,
) -> PrintedFields {
    let names: Vec<&str> = buyers.iter().map(|b| b.name.as_str()).collect();
    let kind = case.co_ownership.parse::<CoOwnership>().ok();
    let co_ownership = match kind {
        Some(CoOwnership::InShares) => {
            let shares: Vec<String> = buyers
                .iter()
                .map(|b| format!("{}占{}%", b.name, format_share(b.share_bp)))
                .collect();
            format!("按份共有（{}）", shares.join("，"))
        }
        Some(k) => k.label_zh().to_owned(),
        None => String::new(),
    };
    let term = match (
        parse_date(&project.land_term_start),
        parse_date(&project.land_term_end),
    ) {
        (Ok(s), Ok(e)) => format!("国有建设用地使用权 {}", term_of_use_zh(s, e)),
        _ => String::new(),
    };
    let land_area = area(project.parcel_area_centi);
    let remarks = format!(
        "房证同交；买卖合同编号：{}；办件编号：{}",
        case.contract_number, case.case_id
    );
    match unit {
        Some(u) if !project.is_land() => PrintedFields {
            right_holders: names.join("、"),
            co_ownership,
            location: u.location.clone(),
            right_type: "国有建设用地使用权/房屋所有权".into(),
            right_nature: format!("{}/市场化商品房", project.land_right_nature),
            usage: format!("{}/{}", project.land_usage, u.planned_usage),
            area: format!(
                "共有宗地面积{land_area}㎡/房屋建筑面积{}㎡",
                area(u.gfa_centi)
            ),
            term_of_use: term,
            other_info: format!(
                "房屋结构：{}\n专有建筑面积：{}㎡，分摊建筑面积：{}㎡\n房屋总层数：{}层，房屋所在层：{}层",
                structure_zh(u.structure),
                area(u.internal_centi),
                area(u.shared_centi),
                u.total_floors,
                u.floor_number
            ),
            remarks,
        },
        _ => PrintedFields {
            right_holders: names.join("、"),
            co_ownership,
            location: project.name.clone(),
            right_type: "国有建设用地使用权".into(),
            right_nature: project.land_right_nature.clone(),
            usage: project.land_usage.clone(),
            area: format!("宗地面积{land_area}㎡"),
            term_of_use: term,
            other_info: String::new(),
            remarks: format!(
                "地证同交；出让合同编号：{}；办件编号：{}",
                case.contract_number, case.case_id
            ),
        },
    }
}

fn format_share(bp: i64) -> String {
    if bp % 100 == 0 {
        format!("{}", bp / 100)
    } else {
        format!("{}.{:02}", bp / 100, bp % 100)
    }
}
