//! Human-readable and JSON renderings of what the services return: the 不动产权证书 (certificate) as
//! printed text, cases with their missing items, handover batches.
use comfy_table::{ContentArrangement, Table, presets};
use serde_json::{Value, json};
use time::{OffsetDateTime, UtcOffset};
use tongjiao_domain::format_date_zh;
use tongjiao_proto::registration as pb;

/// China Standard Time, the registration office's calendar.
const CST: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(o) => o,
    Err(_) => UtcOffset::UTC,
};

/// Width of the label column, in CJK characters (the longest label is 不动产单元号 / 权利其他状况).
const LABEL_WIDTH: usize = 6;

/// The date (CST) of a protobuf timestamp, as printed on certificates: `2026年11月29日`.
pub fn date_zh(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|t| OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .map(|d| format_date_zh(d.to_offset(CST).date()))
        .unwrap_or_default()
}

/// RFC 3339 text of a protobuf timestamp (CST), for JSON output.
pub fn timestamp_text(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|t| {
        let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
        OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
    })
    .and_then(|d| {
        d.to_offset(CST)
            .format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_default()
}

/// Pads a label with full-width spaces so values line up under CJK fonts.
fn label(l: &str) -> String {
    let n = l.chars().count();
    let mut s = String::from(l);
    for _ in n..LABEL_WIDTH {
        s.push('\u{3000}');
    }
    s
}

/// One `label  value` line; continuation lines of a multi-line value are indented under the value.
fn field(out: &mut String, name: &str, value: &str) {
    let indent = "\u{3000}".repeat(LABEL_WIDTH);
    let mut lines = value.split('\n');
    out.push_str(&label(name));
    out.push_str("  ");
    out.push_str(lines.next().unwrap_or(""));
    out.push('\n');
    for l in lines {
        out.push_str(&indent);
        out.push_str("  ");
        out.push_str(l);
        out.push('\n');
    }
}

/// The 不动产权证书 as text with its printed Chinese labels: 证号, 权利人, 共有情况, 坐落, 不动产单元号,
/// 权利类型, 权利性质, 用途, 面积, 使用期限, 权利其他状况, 附记, 登记机构, 登簿日期.
pub fn render_certificate(c: &pb::Certificate) -> String {
    let title = match pb::CertificateKind::try_from(c.kind) {
        Ok(pb::CertificateKind::RegistrationProof) => {
            "不动产登记证明 (real estate registration proof)"
        }
        _ => "不动产权证书 (real estate title certificate)",
    };
    let rule = "─".repeat(40);
    let mut out = String::new();
    out.push_str(&rule);
    out.push('\n');
    out.push_str(title);
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    let unit = if c.unit_code.is_empty() {
        c.unit_code_raw.as_str()
    } else {
        c.unit_code.as_str()
    };
    field(&mut out, "证号", &c.certificate_number);
    field(&mut out, "权利人", &c.right_holders);
    field(&mut out, "共有情况", &c.co_ownership);
    field(&mut out, "坐落", &c.location);
    field(&mut out, "不动产单元号", unit);
    field(&mut out, "权利类型", &c.right_type);
    field(&mut out, "权利性质", &c.right_nature);
    field(&mut out, "用途", &c.usage);
    field(&mut out, "面积", &c.area);
    field(&mut out, "使用期限", &c.term_of_use);
    field(&mut out, "权利其他状况", &c.other_info);
    field(&mut out, "附记", &c.remarks);
    field(&mut out, "登记机构", &c.authority);
    field(&mut out, "登簿日期", &date_zh(c.issued_at.as_ref()));
    out.push_str(&rule);
    out.push('\n');
    out
}

/// A certificate as JSON with stable keys.
pub fn certificate_json(c: &pb::Certificate) -> Value {
    json!({
        "certificate_number": c.certificate_number,
        "kind": pb::CertificateKind::try_from(c.kind).map(|k| k.as_str_name()).unwrap_or("CERTIFICATE_KIND_UNSPECIFIED"),
        "year": c.year,
        "serial": c.serial,
        "case_id": c.case_id,
        "right_holders": c.right_holders,
        "co_ownership": c.co_ownership,
        "location": c.location,
        "unit_code": c.unit_code,
        "unit_code_raw": c.unit_code_raw,
        "right_type": c.right_type,
        "right_nature": c.right_nature,
        "usage": c.usage,
        "area": c.area,
        "term_of_use": c.term_of_use,
        "other_info": c.other_info,
        "remarks": c.remarks,
        "authority": c.authority,
        "issued_at": timestamp_text(c.issued_at.as_ref()),
    })
}

/// 办件状态 in Chinese with English.
pub fn case_state_label(state: i32) -> &'static str {
    match pb::CaseState::try_from(state) {
        Ok(pb::CaseState::Pending) => "材料未齐 (pending)",
        Ok(pb::CaseState::Ready) => "可办理 (ready)",
        Ok(pb::CaseState::TransferRegistered) => "已登簿 (transfer registered)",
        Ok(pb::CaseState::CertificateIssued) => "已发证 (certificate issued)",
        Ok(pb::CaseState::Lapsed) => "视为放弃 (lapsed)",
        Ok(pb::CaseState::OptedOut) => "未选择房证同交 (opted out)",
        _ => "未知 (unknown)",
    }
}

/// 尚缺事项 kind in Chinese with English.
pub fn missing_kind_label(kind: i32) -> &'static str {
    match pb::MissingKind::try_from(kind) {
        Ok(pb::MissingKind::FirstRegistration) => {
            "首次登记未完成 (first registration not completed)"
        }
        Ok(pb::MissingKind::BuildingTableUnit) => "楼盘表无此户 (unit not in the building table)",
        Ok(pb::MissingKind::DeedTax) => "契税未缴 (deed tax not paid)",
        Ok(pb::MissingKind::MaintenanceFund) => "维修资金未缴存 (maintenance fund not deposited)",
        Ok(pb::MissingKind::BuildingTable) => "楼盘表未上传 (building table not uploaded)",
        Ok(pb::MissingKind::Acceptance) => "验收备案未齐 (acceptance filings incomplete)",
        Ok(pb::MissingKind::DeveloperTax) => "开发企业税费未结清 (developer taxes not cleared)",
        Ok(pb::MissingKind::LandFees) => "土地出让金未缴清 (land fees not paid)",
        _ => "其他 (other)",
    }
}

/// 共有情况 in Chinese with English.
pub fn co_ownership_label(v: i32) -> &'static str {
    match pb::CoOwnership::try_from(v) {
        Ok(pb::CoOwnership::Sole) => "单独所有 (sole)",
        Ok(pb::CoOwnership::Joint) => "共同共有 (joint)",
        Ok(pb::CoOwnership::InShares) => "按份共有 (in shares)",
        _ => "未填写 (unspecified)",
    }
}

/// One missing item as a line: `契税未缴 (deed tax not paid) [140827********1234]: detail`.
pub fn missing_line(m: &pb::MissingItem) -> String {
    let mut s = String::from(missing_kind_label(m.kind));
    if !m.buyer_id.is_empty() {
        s.push_str(&format!(" [{}]", m.buyer_id));
    }
    if !m.detail.is_empty() {
        s.push_str(": ");
        s.push_str(&m.detail);
    }
    s
}

fn buyers_text(c: &pb::Case) -> String {
    c.buyers
        .iter()
        .map(|b| {
            if b.share_basis_points > 0 {
                format!(
                    "{} {} ({}.{:02}%)",
                    b.name,
                    b.resident_id,
                    b.share_basis_points / 100,
                    b.share_basis_points % 100
                )
            } else {
                format!("{} {}", b.name, b.resident_id)
            }
        })
        .collect::<Vec<_>>()
        .join("、")
}

/// One case in full, with the precise missing list (counter show).
pub fn render_case(c: &pb::Case) -> String {
    let mut out = String::new();
    let opt_in = if c.same_day_opt_in {
        "是 (yes)"
    } else {
        "否 (no)"
    };
    let lines: [(&str, String); 11] = [
        ("办件编号 case", c.case_id.clone()),
        ("状态 state", case_state_label(c.state).to_owned()),
        ("不动产单元代码 unit", c.unit_code.clone()),
        ("项目 project", c.project_id.clone()),
        ("批次 batch", c.batch_id.clone()),
        ("购房人 buyers", buyers_text(c)),
        (
            "共有情况 co-ownership",
            co_ownership_label(c.co_ownership).to_owned(),
        ),
        ("合同编号 contract", c.contract_number.clone()),
        ("选择房证同交 opted in", opt_in.to_owned()),
        ("材料截止 deadline", c.material_deadline.clone()),
        ("交房日期 handover", c.handover_date.clone()),
    ];
    for (k, v) in lines {
        out.push_str(&format!("{k}: {v}\n"));
    }
    if !c.certificate_number.is_empty() {
        out.push_str(&format!("证号 certificate: {}\n", c.certificate_number));
    }
    if !c.lapsed_reason.is_empty() {
        out.push_str(&format!("放弃原因 lapsed because: {}\n", c.lapsed_reason));
    }
    if c.missing.is_empty() {
        out.push_str("尚缺 missing: 无 (nothing)\n");
    } else {
        out.push_str(&format!("尚缺 missing ({}):\n", c.missing.len()));
        for m in &c.missing {
            out.push_str(&format!("  - {}\n", missing_line(m)));
        }
    }
    out
}

fn missing_json(m: &pb::MissingItem) -> Value {
    json!({
        "kind": pb::MissingKind::try_from(m.kind).map(|k| k.as_str_name()).unwrap_or("MISSING_KIND_UNSPECIFIED"),
        "label": missing_kind_label(m.kind),
        "detail": m.detail,
        "buyer_id": m.buyer_id,
    })
}

/// A case as JSON with stable keys.
pub fn case_json(c: &pb::Case) -> Value {
    json!({
        "case_id": c.case_id,
        "batch_id": c.batch_id,
        "project_id": c.project_id,
        "unit_code": c.unit_code,
        "state": pb::CaseState::try_from(c.state).map(|s| s.as_str_name()).unwrap_or("CASE_STATE_UNSPECIFIED"),
        "state_label": case_state_label(c.state),
        "buyers": c.buyers.iter().map(|b| json!({
            "name": b.name,
            "resident_id": b.resident_id,
            "share_basis_points": b.share_basis_points,
        })).collect::<Vec<_>>(),
        "co_ownership": pb::CoOwnership::try_from(c.co_ownership).map(|s| s.as_str_name()).unwrap_or("CO_OWNERSHIP_UNSPECIFIED"),
        "contract_number": c.contract_number,
        "same_day_opt_in": c.same_day_opt_in,
        "material_deadline": c.material_deadline,
        "handover_date": c.handover_date,
        "missing": c.missing.iter().map(missing_json).collect::<Vec<_>>(),
        "lapsed_reason": c.lapsed_reason,
        "certificate_number": c.certificate_number,
        "version": c.version,
    })
}

/// Cases as a table (counter find).
pub fn cases_table(cases: &[pb::Case]) -> String {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(vec![
            "办件编号 case",
            "不动产单元代码 unit",
            "状态 state",
            "购房人 buyers",
            "尚缺 missing",
            "证号 certificate",
        ]);
    for c in cases {
        let names: Vec<&str> = c.buyers.iter().map(|b| b.name.as_str()).collect();
        t.add_row(vec![
            c.case_id.clone(),
            c.unit_code.clone(),
            case_state_label(c.state).to_owned(),
            names.join("、"),
            c.missing.len().to_string(),
            c.certificate_number.clone(),
        ]);
    }
    t.to_string()
}

/// (finished, total) of a batch: issued + lapsed + opted out, over all cases.
pub fn batch_progress(b: &pb::HandoverBatch) -> (u64, u64) {
    let c = b.counts.unwrap_or_default();
    (
        u64::from(c.certificate_issued + c.lapsed + c.opted_out),
        u64::from(c.total),
    )
}

/// One-line batch counts in Chinese with English.
pub fn batch_counts_line(b: &pb::HandoverBatch) -> String {
    let c = b.counts.unwrap_or_default();
    format!(
        "共 total {} · 材料未齐 pending {} · 可办理 ready {} · 已登簿 registered {} · 已发证 issued {} · 视为放弃 lapsed {} · 未选择 opted out {}",
        c.total,
        c.pending,
        c.ready,
        c.transfer_registered,
        c.certificate_issued,
        c.lapsed,
        c.opted_out
    )
}

/// A batch as text.
pub fn render_batch(b: &pb::HandoverBatch) -> String {
    format!(
        "批次编号 batch: {}\n项目 project: {}\n交房日期 handover: {}\n材料截止 deadline: {}\n提交时间 submitted: {}\n{}\n",
        b.batch_id,
        b.project_id,
        b.handover_date,
        b.material_deadline,
        timestamp_text(b.submitted_at.as_ref()),
        batch_counts_line(b)
    )
}

/// A batch as JSON with stable keys.
pub fn batch_json(b: &pb::HandoverBatch) -> Value {
    let c = b.counts.unwrap_or_default();
    json!({
        "batch_id": b.batch_id,
        "project_id": b.project_id,
        "handover_date": b.handover_date,
        "material_deadline": b.material_deadline,
        "submitted_at": timestamp_text(b.submitted_at.as_ref()),
        "counts": {
            "total": c.total,
            "pending": c.pending,
            "ready": c.ready,
            "transfer_registered": c.transfer_registered,
            "certificate_issued": c.certificate_issued,
            "lapsed": c.lapsed,
            "opted_out": c.opted_out,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::Certificate {
        pb::Certificate {
            certificate_number: "晋（2026）垣曲县不动产权第0000001号".into(),
            kind: pb::CertificateKind::PropertyCertificate as i32,
            year: 2026,
            serial: 1,
            case_id: "0190a3c4-0000-7000-8000-000000000001".into(),
            right_holders: "王建国、李秀英".into(),
            co_ownership: "共同共有".into(),
            location: "垣曲县新城镇舜都大道88号同交花园1号楼1单元101室".into(),
            unit_code: "140827 001002 GB00012 F00010101".into(),
            right_type: "国有建设用地使用权/房屋所有权".into(),
            right_nature: "出让/市场化商品房".into(),
            usage: "城镇住宅用地/住宅".into(),
            area: "共有宗地面积12000.00㎡/房屋建筑面积104.61㎡".into(),
            term_of_use: "国有建设用地使用权 2020年01月01日起2090年12月31日止".into(),
            other_info: "房屋结构：钢筋混凝土结构\n专有建筑面积：89.23㎡，分摊建筑面积：15.38㎡"
                .into(),
            remarks: "房证同交；买卖合同编号：YQ2026-HT-0001".into(),
            authority: "垣曲县不动产登记中心".into(),
            // 2026-11-29 01:00 UTC = 2026-11-29 09:00 CST
            issued_at: Some(prost_types::Timestamp {
                seconds: 1_795_914_000,
                nanos: 0,
            }),
            unit_code_raw: "140827001002GB00012F00010101".into(),
        }
    }

    #[test]
    fn certificate_text_has_every_label_and_value() {
        let text = render_certificate(&sample());
        for l in [
            "证号",
            "权利人",
            "共有情况",
            "坐落",
            "不动产单元号",
            "权利类型",
            "权利性质",
            "用途",
            "面积",
            "使用期限",
            "权利其他状况",
            "附记",
            "登记机构",
            "登簿日期",
        ] {
            assert!(
                text.lines().any(|line| line.starts_with(l)),
                "label {l} missing in\n{text}"
            );
        }
        assert!(
            text.contains(
                "证号\u{3000}\u{3000}\u{3000}\u{3000}  晋（2026）垣曲县不动产权第0000001号"
            )
        );
        assert!(text.contains("权利人\u{3000}\u{3000}\u{3000}  王建国、李秀英"));
        assert!(text.contains("不动产单元号  140827 001002 GB00012 F00010101"));
        assert!(text.contains("登记机构\u{3000}\u{3000}  垣曲县不动产登记中心"));
        assert!(text.contains("登簿日期\u{3000}\u{3000}  2026年11月29日"));
        assert!(text.starts_with("────"));
        assert!(text.contains("不动产权证书"));
    }

    #[test]
    fn multi_line_values_are_indented_under_the_value() {
        let text = render_certificate(&sample());
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("权利其他状况"))
            .expect("权利其他状况 line");
        assert!(lines[at].ends_with("房屋结构：钢筋混凝土结构"));
        assert_eq!(
            lines[at + 1],
            format!(
                "{}  专有建筑面积：89.23㎡，分摊建筑面积：15.38㎡",
                "\u{3000}".repeat(LABEL_WIDTH)
            )
        );
        assert!(lines[at + 2].starts_with("附记"));
    }

    #[test]
    fn issue_date_uses_china_time() {
        // 2026-11-29 20:00 UTC is already 2026-11-30 in Beijing.
        let ts = prost_types::Timestamp {
            seconds: 1_795_982_400,
            nanos: 0,
        };
        assert_eq!(date_zh(Some(&ts)), "2026年11月30日");
        assert_eq!(date_zh(None), "");
    }

    #[test]
    fn spaced_unit_code_falls_back_to_raw() {
        let mut c = sample();
        c.unit_code.clear();
        assert!(render_certificate(&c).contains("不动产单元号  140827001002GB00012F00010101"));
    }

    #[test]
    fn certificate_json_has_stable_keys() {
        let v = certificate_json(&sample());
        assert_eq!(
            v["certificate_number"],
            "晋（2026）垣曲县不动产权第0000001号"
        );
        assert_eq!(v["kind"], "CERTIFICATE_KIND_PROPERTY_CERTIFICATE");
        assert_eq!(v["serial"], 1);
        assert_eq!(v["issued_at"], "2026-11-29T09:00:00+08:00");
    }

    #[test]
    fn case_text_lists_each_missing_item() {
        let c = pb::Case {
            case_id: "c-1".into(),
            unit_code: "140827001002GB00012F00010101".into(),
            state: pb::CaseState::Pending as i32,
            buyers: vec![pb::Buyer {
                name: "王建国".into(),
                resident_id: "140827********1234".into(),
                share_basis_points: 0,
            }],
            missing: vec![
                pb::MissingItem {
                    kind: pb::MissingKind::DeedTax as i32,
                    detail: "deed tax of buyer not paid".into(),
                    buyer_id: "140827********1234".into(),
                },
                pb::MissingItem {
                    kind: pb::MissingKind::MaintenanceFund as i32,
                    detail: String::new(),
                    buyer_id: String::new(),
                },
            ],
            ..Default::default()
        };
        let text = render_case(&c);
        assert!(text.contains("状态 state: 材料未齐 (pending)"));
        assert!(text.contains("尚缺 missing (2):"));
        assert!(text.contains(
            "  - 契税未缴 (deed tax not paid) [140827********1234]: deed tax of buyer not paid"
        ));
        assert!(text.contains("  - 维修资金未缴存 (maintenance fund not deposited)\n"));
        let ready = pb::Case {
            state: pb::CaseState::Ready as i32,
            ..Default::default()
        };
        assert!(render_case(&ready).contains("尚缺 missing: 无 (nothing)"));
    }

    #[test]
    fn batch_progress_counts_final_states() {
        let b = pb::HandoverBatch {
            counts: Some(pb::BatchCounts {
                total: 10,
                pending: 2,
                ready: 3,
                transfer_registered: 1,
                certificate_issued: 2,
                lapsed: 1,
                opted_out: 1,
            }),
            ..Default::default()
        };
        assert_eq!(batch_progress(&b), (4, 10));
        assert!(batch_counts_line(&b).contains("已发证 issued 2"));
    }
}
