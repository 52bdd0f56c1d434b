//! Request validation: every bad field is collected into one [`Violations`] before anything is written.
use std::collections::HashMap;

use time::Date;
use tongjiao_domain::{ProjectId, RequestId, Sha256Hex, Violations, parse_date};
use tongjiao_proto::acceptance::{
    DeclareRequirementsRequest, FilingKind, GetGateStatusRequest, RecordFilingRequest,
};

/// 文号/备案表编号: at most 64 characters.
pub const DOCUMENT_NUMBER_MAX: usize = 64;
/// 办理机关: at most 100 characters.
pub const AUTHORITY_MAX: usize = 100;
/// 材料名称: at most 100 characters.
pub const DOCUMENT_NAME_MAX: usize = 100;
/// 材料: at most 50 documents per filing.
pub const DOCUMENTS_MAX: usize = 50;

/// A filing that passed validation.
#[derive(Debug, Clone)]
pub struct ValidFiling {
    pub project_id: ProjectId,
    pub kind: FilingKind,
    /// `None` when not given (allowed for every kind except 竣工验收备案).
    pub document_number: Option<String>,
    pub authority: String,
    pub completed_on: Date,
    /// (name, digest) in request order.
    pub documents: Vec<(String, Sha256Hex)>,
}

/// Checks a free-text field: not empty, not only blanks, no control characters, at most `max`
/// characters (Unicode scalar values, so 办理机关 in Chinese counts per character).
fn check_text(v: &mut Violations, field: &str, value: &str, max: usize, term_zh: &str) -> bool {
    if value.is_empty() {
        v.push(field, format!("must not be empty ({term_zh}不能为空)"));
        return false;
    }
    if value.trim().is_empty() {
        v.push(
            field,
            format!("must not be only blanks ({term_zh}不能为空白)"),
        );
        return false;
    }
    if value.chars().any(char::is_control) {
        v.push(
            field,
            format!("must not contain control characters ({term_zh}不能包含控制字符)"),
        );
        return false;
    }
    let n = value.chars().count();
    if n > max {
        v.push(
            field,
            format!("must be at most {max} characters, got {n} ({term_zh}最长{max}字)"),
        );
        return false;
    }
    true
}

/// DeclareRequirements: the request id and the project id.
pub fn declare_requirements(req: &DeclareRequirementsRequest) -> Result<ProjectId, Violations> {
    let mut v = Violations::new();
    v.check("request_id", req.request_id.parse::<RequestId>());
    let project_id = v.check("project_id", req.project_id.parse::<ProjectId>());
    match (project_id, v.is_empty()) {
        (Some(p), true) => Ok(p),
        _ => Err(v),
    }
}

/// GetGateStatus: the project id.
pub fn get_gate_status(req: &GetGateStatusRequest) -> Result<ProjectId, Violations> {
    let mut v = Violations::new();
    match v.check("project_id", req.project_id.parse::<ProjectId>()) {
        Some(p) => Ok(p),
        None => Err(v),
    }
}

/// RecordFiling: every field, with `today` the current date in China (UTC+8).
pub fn record_filing(req: &RecordFilingRequest, today: Date) -> Result<ValidFiling, Violations> {
    let mut v = Violations::new();
    v.check("request_id", req.request_id.parse::<RequestId>());
    let project_id = v.check("project_id", req.project_id.parse::<ProjectId>());

    let kind = match FilingKind::try_from(req.kind) {
        Ok(FilingKind::Unspecified) => {
            v.push(
                "kind",
                "must be given: planning acceptance, completion filing, civil air defence \
                 acceptance or cadastral survey (备案类型未填写)",
            );
            None
        }
        Ok(kind) => Some(kind),
        Err(_) => {
            v.push(
                "kind",
                format!("unknown filing kind {} (备案类型无效)", req.kind),
            );
            None
        }
    };

    let document_number = if req.document_number.is_empty() {
        if kind == Some(FilingKind::CompletionFiling) {
            v.push(
                "document_number",
                "is required for a completion filing: the 竣工验收备案表 number \
                 (竣工验收备案须填写备案表编号)",
            );
        }
        None
    } else if check_text(
        &mut v,
        "document_number",
        &req.document_number,
        DOCUMENT_NUMBER_MAX,
        "文号/备案表编号",
    ) {
        Some(req.document_number.clone())
    } else {
        None
    };

    check_text(
        &mut v,
        "authority",
        &req.authority,
        AUTHORITY_MAX,
        "办理机关",
    );

    let completed_on = v
        .check("completed_on", parse_date(&req.completed_on))
        .and_then(|d| {
            if d > today {
                v.push(
                    "completed_on",
                    format!(
                        "must not be in the future; today is {} in China time (办结日期不能晚于今天)",
                        tongjiao_domain::format_date(today)
                    ),
                );
                None
            } else {
                Some(d)
            }
        });

    if req.documents.is_empty() {
        v.push(
            "documents",
            "at least one document is required (材料不能为空)",
        );
    } else if req.documents.len() > DOCUMENTS_MAX {
        v.push(
            "documents",
            format!(
                "at most {DOCUMENTS_MAX} documents per filing, got {} (每次备案材料最多{DOCUMENTS_MAX}份)",
                req.documents.len()
            ),
        );
    }
    let mut documents = Vec::with_capacity(req.documents.len());
    let mut first_seen: HashMap<Sha256Hex, usize> = HashMap::new();
    for (i, doc) in req.documents.iter().enumerate() {
        let name_ok = check_text(
            &mut v,
            format!("documents[{i}].name").as_str(),
            &doc.name,
            DOCUMENT_NAME_MAX,
            "材料名称",
        );
        let field = format!("documents[{i}].sha256");
        let Some(digest) = v.check(field.as_str(), doc.sha256.parse::<Sha256Hex>()) else {
            continue;
        };
        if let Some(first) = first_seen.get(&digest) {
            v.push(
                field,
                format!(
                    "duplicates documents[{first}].sha256; each document is attached once (材料摘要重复)"
                ),
            );
            continue;
        }
        first_seen.insert(digest.clone(), i);
        if name_ok {
            documents.push((doc.name.clone(), digest));
        }
    }

    match (project_id, kind, completed_on) {
        (Some(project_id), Some(kind), Some(completed_on)) if v.is_empty() => Ok(ValidFiling {
            project_id,
            kind,
            document_number,
            authority: req.authority.clone(),
            completed_on,
            documents,
        }),
        _ => Err(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;
    use tongjiao_proto::acceptance::Document;

    fn digest(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn good() -> RecordFilingRequest {
        RecordFilingRequest {
            request_id: "r-1".into(),
            project_id: "YQ-2026-001".into(),
            kind: FilingKind::CompletionFiling as i32,
            document_number: "垣建竣备〔2026〕12号".into(),
            authority: "垣曲县住房和城乡建设管理局".into(),
            completed_on: "2026-11-01".into(),
            documents: vec![Document {
                name: "竣工验收备案表".into(),
                sha256: digest('a'),
            }],
        }
    }

    fn fields(v: &Violations) -> Vec<&str> {
        v.iter().map(|f| f.field.as_str()).collect()
    }

    #[test]
    fn a_good_filing_passes() {
        let f = record_filing(&good(), date!(2026 - 11 - 29)).unwrap();
        assert_eq!(f.kind, FilingKind::CompletionFiling);
        assert_eq!(f.documents.len(), 1);
        assert_eq!(f.completed_on, date!(2026 - 11 - 01));
    }

    #[test]
    fn today_is_not_the_future_but_tomorrow_is() {
        let mut r = good();
        r.completed_on = "2026-11-29".into();
        assert!(record_filing(&r, date!(2026 - 11 - 29)).is_ok());
        r.completed_on = "2026-11-30".into();
        let v = record_filing(&r, date!(2026 - 11 - 29)).unwrap_err();
        assert_eq!(fields(&v), ["completed_on"]);
    }

    #[test]
    fn every_violation_is_reported() {
        let r = RecordFilingRequest {
            request_id: String::new(),
            project_id: "项目".into(),
            kind: 0,
            document_number: "x".repeat(65),
            authority: String::new(),
            completed_on: "2026-02-30".into(),
            documents: vec![
                Document {
                    name: String::new(),
                    sha256: digest('b'),
                },
                Document {
                    name: "图".into(),
                    sha256: "zz".into(),
                },
                Document {
                    name: "a".repeat(101),
                    sha256: digest('B'),
                },
            ],
        };
        let v = record_filing(&r, date!(2026 - 11 - 29)).unwrap_err();
        assert_eq!(
            fields(&v),
            [
                "request_id",
                "project_id",
                "kind",
                "document_number",
                "authority",
                "completed_on",
                "documents[0].name",
                "documents[1].sha256",
                "documents[2].name",
                "documents[2].sha256",
            ]
        );
    }

    #[test]
    fn document_number_is_required_only_for_completion_filings() {
        let mut r = good();
        r.document_number = String::new();
        let v = record_filing(&r, date!(2026 - 11 - 29)).unwrap_err();
        assert_eq!(fields(&v), ["document_number"]);
        r.kind = FilingKind::PlanningAcceptance as i32;
        let f = record_filing(&r, date!(2026 - 11 - 29)).unwrap();
        assert_eq!(f.document_number, None);
        r.kind = 9;
        let v = record_filing(&r, date!(2026 - 11 - 29)).unwrap_err();
        assert_eq!(fields(&v), ["kind"]);
    }

    #[test]
    fn document_count_limits() {
        let mut r = good();
        r.documents.clear();
        assert_eq!(
            fields(&record_filing(&r, date!(2026 - 11 - 29)).unwrap_err()),
            ["documents"]
        );
        r.documents = (0..=DOCUMENTS_MAX)
            .map(|i| Document {
                name: format!("材料{i}"),
                sha256: format!("{i:064x}"),
            })
            .collect();
        assert_eq!(
            fields(&record_filing(&r, date!(2026 - 11 - 29)).unwrap_err()),
            ["documents"]
        );
        r.documents.pop();
        assert!(record_filing(&r, date!(2026 - 11 - 29)).is_ok());
    }

    #[test]
    fn blank_and_control_text_is_rejected() {
        let mut r = good();
        r.authority = "   ".into();
        r.document_number = "a\nb".into();
        let v = record_filing(&r, date!(2026 - 11 - 29)).unwrap_err();
        assert_eq!(fields(&v), ["document_number", "authority"]);
        r.authority = "局".repeat(AUTHORITY_MAX);
        r.document_number = "号".repeat(DOCUMENT_NUMBER_MAX);
        assert!(record_filing(&r, date!(2026 - 11 - 29)).is_ok());
    }
}
