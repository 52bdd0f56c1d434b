//! Validation of one pushed completion event (完税事件校验). Everything goes through the domain types;
//! an invalid event yields every bad field, a valid one its normalised fact and content digest.
use prost::Message;
use sha2::{Digest, Sha256};
use tongjiao_domain::{
    CreditCode, Money, ParcelCode, ProjectId, ResidentId, Sha256Hex, UnitCode, Violations,
};
use tongjiao_proto::tax::{
    DeedTaxPaid, DeveloperTaxCleared, LandFeesPaid, MaintenanceFundDeposited,
    PushCompletionsRequest, push_completions_request, tax_event,
};

const EVENT_ID_MAX: usize = 64;
const NUMBER_MAX: usize = 64;
const RELIEF_BASIS_MAX: usize = 200;

/// A validated fact, normalised by the domain types.
#[derive(Debug, Clone)]
pub(crate) enum Fact {
    DeedTax {
        unit_code: UnitCode,
        buyer_id: ResidentId,
        amount: Money,
        voucher_number: String,
        relieved: bool,
        relief_basis: String,
    },
    MaintenanceFund {
        unit_code: UnitCode,
        amount: Money,
        receipt_number: String,
    },
    DeveloperTax {
        project_id: ProjectId,
        developer_credit_code: CreditCode,
        voucher_number: String,
    },
    LandFees {
        parcel_code: ParcelCode,
        amount: Money,
        voucher_number: String,
    },
}

impl Fact {
    /// Event kind on the feed.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Fact::DeedTax { .. } => "deed_tax_paid",
            Fact::MaintenanceFund { .. } => "maintenance_fund_deposited",
            Fact::DeveloperTax { .. } => "developer_tax_cleared",
            Fact::LandFees { .. } => "land_fees_paid",
        }
    }

    /// Feed subject: the unit, project or parcel the fact is about.
    pub(crate) fn subject(&self) -> &str {
        match self {
            Fact::DeedTax { unit_code, .. } | Fact::MaintenanceFund { unit_code, .. } => {
                unit_code.as_str()
            }
            Fact::DeveloperTax { project_id, .. } => project_id.as_str(),
            Fact::LandFees { parcel_code, .. } => parcel_code.as_str(),
        }
    }

    /// The fact as the push request carries it, with normalised values.
    fn push_payload(&self) -> push_completions_request::Payload {
        use push_completions_request::Payload as P;
        match self.event_payload() {
            tax_event::Payload::DeedTaxPaid(m) => P::DeedTaxPaid(m),
            tax_event::Payload::MaintenanceFundDeposited(m) => P::MaintenanceFundDeposited(m),
            tax_event::Payload::DeveloperTaxCleared(m) => P::DeveloperTaxCleared(m),
            tax_event::Payload::LandFeesPaid(m) => P::LandFeesPaid(m),
        }
    }

    /// The fact as the feed's `TaxEvent` carries it.
    pub(crate) fn event_payload(&self) -> tax_event::Payload {
        match self {
            Fact::DeedTax {
                unit_code,
                buyer_id,
                amount,
                voucher_number,
                relieved,
                relief_basis,
            } => tax_event::Payload::DeedTaxPaid(DeedTaxPaid {
                unit_code: unit_code.as_str().to_owned(),
                buyer_id: buyer_id.as_str().to_owned(),
                amount_fen: amount.fen(),
                voucher_number: voucher_number.clone(),
                relieved: *relieved,
                relief_basis: relief_basis.clone(),
            }),
            Fact::MaintenanceFund {
                unit_code,
                amount,
                receipt_number,
            } => tax_event::Payload::MaintenanceFundDeposited(MaintenanceFundDeposited {
                unit_code: unit_code.as_str().to_owned(),
                amount_fen: amount.fen(),
                receipt_number: receipt_number.clone(),
            }),
            Fact::DeveloperTax {
                project_id,
                developer_credit_code,
                voucher_number,
            } => tax_event::Payload::DeveloperTaxCleared(DeveloperTaxCleared {
                project_id: project_id.as_str().to_owned(),
                developer_credit_code: developer_credit_code.as_str().to_owned(),
                voucher_number: voucher_number.clone(),
            }),
            Fact::LandFees {
                parcel_code,
                amount,
                voucher_number,
            } => tax_event::Payload::LandFeesPaid(LandFeesPaid {
                parcel_code: parcel_code.as_str().to_owned(),
                amount_fen: amount.fen(),
                voucher_number: voucher_number.clone(),
            }),
        }
    }
}

/// A valid pushed event.
#[derive(Debug, Clone)]
pub(crate) struct ValidEvent {
    pub event_id: String,
    /// The bureau's 发生时间 in epoch milliseconds, when given.
    pub occurred_at_ms: Option<i64>,
    pub fact: Fact,
    /// SHA-256 of the normalised request: same digest = same content.
    pub content_sha256: String,
}

/// One pushed event after validation, in the order it arrived.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Invalid { event_id: String, error: String },
    Valid(ValidEvent),
}

/// Validates one request; an invalid one carries every violation as `field: reason; …`.
pub(crate) fn check(req: PushCompletionsRequest) -> Item {
    match validate(&req) {
        Ok(ev) => Item::Valid(ev),
        Err(v) => Item::Invalid {
            event_id: req.event_id,
            error: v.to_string(),
        },
    }
}

fn validate(req: &PushCompletionsRequest) -> Result<ValidEvent, Violations> {
    let mut v = Violations::new();
    let id = &req.event_id;
    if id.is_empty() || id.len() > EVENT_ID_MAX || !id.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        v.push(
            "event_id",
            format!(
                "must be 1-{EVENT_ID_MAX} printable ASCII characters (事件编号应为1至{EVENT_ID_MAX}位可打印ASCII字符)"
            ),
        );
    }
    let occurred_at_ms = match &req.occurred_at {
        None => None,
        Some(ts) => {
            let ms = (0..1_000_000_000)
                .contains(&ts.nanos)
                .then(|| {
                    ts.seconds
                        .checked_mul(1000)
                        .and_then(|s| s.checked_add(i64::from(ts.nanos / 1_000_000)))
                })
                .flatten();
            if ms.is_none() {
                v.push(
                    "occurred_at",
                    "must be a valid timestamp (发生时间无效)".to_owned(),
                );
            }
            ms
        }
    };
    let fact = match &req.payload {
        None => {
            v.push(
                "payload",
                "one of deed_tax_paid, maintenance_fund_deposited, developer_tax_cleared, \
                 land_fees_paid is required (缺少完税事实)",
            );
            None
        }
        Some(push_completions_request::Payload::DeedTaxPaid(m)) => deed_tax(&mut v, m),
        Some(push_completions_request::Payload::MaintenanceFundDeposited(m)) => {
            maintenance_fund(&mut v, m)
        }
        Some(push_completions_request::Payload::DeveloperTaxCleared(m)) => developer_tax(&mut v, m),
        Some(push_completions_request::Payload::LandFeesPaid(m)) => land_fees(&mut v, m),
    };
    match fact {
        Some(fact) if v.is_empty() => {
            let normalised = PushCompletionsRequest {
                event_id: req.event_id.clone(),
                occurred_at: req.occurred_at,
                payload: Some(fact.push_payload()),
            };
            let digest: [u8; 32] = Sha256::digest(normalised.encode_to_vec()).into();
            Ok(ValidEvent {
                event_id: req.event_id.clone(),
                occurred_at_ms,
                fact,
                content_sha256: Sha256Hex::from_digest(digest).into_string(),
            })
        }
        _ => Err(v),
    }
}

/// A required free-text number of 1-`max` characters.
fn text(v: &mut Violations, field: &str, value: &str, max: usize, term_zh: &str) -> Option<String> {
    let n = value.chars().count();
    if n == 0 {
        v.push(field, format!("must not be empty ({term_zh}不能为空)"));
        None
    } else if n > max {
        v.push(
            field,
            format!("must be at most {max} characters, got {n} ({term_zh}最长{max}个字符)"),
        );
        None
    } else {
        Some(value.to_owned())
    }
}

/// An amount in fen that must be greater than 0.
fn positive_amount(v: &mut Violations, field: &str, fen: i64) -> Option<Money> {
    let amount = v.check(field, Money::from_fen(fen))?;
    if amount.fen() == 0 {
        v.push(field, "must be greater than 0 (金额应大于0)");
        return None;
    }
    Some(amount)
}

fn deed_tax(v: &mut Violations, m: &DeedTaxPaid) -> Option<Fact> {
    let p = "deed_tax_paid";
    let unit_code = v.check(format!("{p}.unit_code"), m.unit_code.parse::<UnitCode>());
    let buyer_id = v.check(format!("{p}.buyer_id"), m.buyer_id.parse::<ResidentId>());
    let mut amount = v.check(format!("{p}.amount_fen"), Money::from_fen(m.amount_fen));
    if amount.is_some_and(|a| a.fen() == 0) && !m.relieved {
        v.push(
            format!("{p}.amount_fen"),
            "must be greater than 0 unless relieved (未减免时税额应大于0)",
        );
        amount = None;
    }
    let voucher_number = text(
        v,
        &format!("{p}.voucher_number"),
        &m.voucher_number,
        NUMBER_MAX,
        "完税凭证号",
    );
    let basis_len = m.relief_basis.chars().count();
    let relief_ok = if basis_len > RELIEF_BASIS_MAX {
        v.push(
            format!("{p}.relief_basis"),
            format!(
                "must be at most {RELIEF_BASIS_MAX} characters, got {basis_len} (减免依据最长{RELIEF_BASIS_MAX}个字符)"
            ),
        );
        false
    } else if m.relieved && basis_len == 0 {
        v.push(
            format!("{p}.relief_basis"),
            "is required when relieved (减免时须填写减免依据)",
        );
        false
    } else {
        true
    };
    Some(Fact::DeedTax {
        unit_code: unit_code?,
        buyer_id: buyer_id?,
        amount: amount?,
        voucher_number: voucher_number?,
        relieved: m.relieved,
        relief_basis: relief_ok.then(|| m.relief_basis.clone())?,
    })
}

fn maintenance_fund(v: &mut Violations, m: &MaintenanceFundDeposited) -> Option<Fact> {
    let p = "maintenance_fund_deposited";
    let unit_code = v.check(format!("{p}.unit_code"), m.unit_code.parse::<UnitCode>());
    let amount = positive_amount(v, &format!("{p}.amount_fen"), m.amount_fen);
    let receipt_number = text(
        v,
        &format!("{p}.receipt_number"),
        &m.receipt_number,
        NUMBER_MAX,
        "缴存凭证号",
    );
    Some(Fact::MaintenanceFund {
        unit_code: unit_code?,
        amount: amount?,
        receipt_number: receipt_number?,
    })
}

fn developer_tax(v: &mut Violations, m: &DeveloperTaxCleared) -> Option<Fact> {
    let p = "developer_tax_cleared";
    let project_id = v.check(format!("{p}.project_id"), m.project_id.parse::<ProjectId>());
    let developer_credit_code = v.check(
        format!("{p}.developer_credit_code"),
        m.developer_credit_code.parse::<CreditCode>(),
    );
    let voucher_number = text(
        v,
        &format!("{p}.voucher_number"),
        &m.voucher_number,
        NUMBER_MAX,
        "完税证明号",
    );
    Some(Fact::DeveloperTax {
        project_id: project_id?,
        developer_credit_code: developer_credit_code?,
        voucher_number: voucher_number?,
    })
}

fn land_fees(v: &mut Violations, m: &LandFeesPaid) -> Option<Fact> {
    let p = "land_fees_paid";
    let parcel_code = v.check(
        format!("{p}.parcel_code"),
        m.parcel_code.parse::<ParcelCode>(),
    );
    let amount = positive_amount(v, &format!("{p}.amount_fen"), m.amount_fen);
    let voucher_number = text(
        v,
        &format!("{p}.voucher_number"),
        &m.voucher_number,
        NUMBER_MAX,
        "缴款凭证号",
    );
    Some(Fact::LandFees {
        parcel_code: parcel_code?,
        amount: amount?,
        voucher_number: voucher_number?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deed(buyer: &str) -> PushCompletionsRequest {
        PushCompletionsRequest {
            event_id: "E-1".into(),
            occurred_at: None,
            payload: Some(push_completions_request::Payload::DeedTaxPaid(
                DeedTaxPaid {
                    unit_code: "140827001002GB00012F00030101".into(),
                    buyer_id: buyer.into(),
                    amount_fen: 100,
                    voucher_number: "V1".into(),
                    relieved: false,
                    relief_basis: String::new(),
                },
            )),
        }
    }

    #[test]
    fn normalised_content_has_one_digest() {
        let (Item::Valid(a), Item::Valid(b)) = (
            check(deed("11010519491231002X")),
            check(deed("11010519491231002x")),
        ) else {
            panic!("both valid");
        };
        assert_eq!(a.content_sha256, b.content_sha256);
        assert_eq!(a.content_sha256.len(), 64);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut r = deed("11010519491231002Y");
        r.event_id = String::new();
        let Item::Invalid { error, .. } = check(r) else {
            panic!("invalid");
        };
        assert!(error.contains("event_id:"), "{error}");
        assert!(error.contains("deed_tax_paid.buyer_id:"), "{error}");
    }
}
