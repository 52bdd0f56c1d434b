use std::{fmt, str::FromStr};

use crate::{ResidentId, UnknownValueError};

/// One kind of unmet condition (办理条件) for a case or a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum MissingKind {
    /// 首次登记 of the project or parcel not done.
    FirstRegistration,
    /// The unit has no 实测 row in the 楼盘表.
    BuildingTableUnit,
    /// A buyer's 契税 not paid or exempted.
    DeedTax,
    /// 专项维修资金 not deposited.
    MaintenanceFund,
    /// 住建 has not shared the project's 楼盘表.
    BuildingTable,
    /// 竣工验收备案 / 规划验收 incomplete.
    Acceptance,
    /// The developer's taxes and fees not cleared.
    DeveloperTax,
    /// 土地出让价款 / land fees not paid.
    LandFees,
}

impl MissingKind {
    /// Every kind, in declaration order.
    pub const ALL: [MissingKind; 8] = [
        Self::FirstRegistration,
        Self::BuildingTableUnit,
        Self::DeedTax,
        Self::MaintenanceFund,
        Self::BuildingTable,
        Self::Acceptance,
        Self::DeveloperTax,
        Self::LandFees,
    ];

    const IDS: &'static [&'static str] = &[
        "first_registration",
        "building_table_unit",
        "deed_tax",
        "maintenance_fund",
        "building_table",
        "acceptance",
        "developer_tax",
        "land_fees",
    ];

    /// Stable lowercase id.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstRegistration => "first_registration",
            Self::BuildingTableUnit => "building_table_unit",
            Self::DeedTax => "deed_tax",
            Self::MaintenanceFund => "maintenance_fund",
            Self::BuildingTable => "building_table",
            Self::Acceptance => "acceptance",
            Self::DeveloperTax => "developer_tax",
            Self::LandFees => "land_fees",
        }
    }

    /// Chinese label.
    #[must_use]
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::FirstRegistration => "首次登记",
            Self::BuildingTableUnit => "楼盘表实测户",
            Self::DeedTax => "契税",
            Self::MaintenanceFund => "专项维修资金",
            Self::BuildingTable => "楼盘表",
            Self::Acceptance => "竣工验收备案",
            Self::DeveloperTax => "开发企业税费",
            Self::LandFees => "土地出让价款",
        }
    }
}

impl fmt::Display for MissingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MissingKind {
    type Err = UnknownValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownValueError {
                value: s.to_owned(),
                expected: Self::IDS,
                term_zh: "缺项类型",
            })
    }
}

/// One unmet condition, ready to show to the applicant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Missing {
    /// What is missing.
    pub kind: MissingKind,
    /// Explanation in English with the Chinese term.
    pub detail: String,
    /// Masked resident ID of the buyer concerned, for per-buyer items.
    pub buyer_id: Option<String>,
}

impl Missing {
    fn new(kind: MissingKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            buyer_id: None,
        }
    }
}

/// What is known about one buyer's case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CaseFacts {
    /// 地证同交 (land-only unit) rather than 房证同交.
    pub land_only: bool,
    /// The developer's (or land user's) 首次登记 is done.
    pub first_registration_done: bool,
    /// The unit has 实测 data in the 楼盘表.
    pub unit_surveyed: bool,
    /// 专项维修资金 deposited.
    pub maintenance_fund_deposited: bool,
    /// 土地出让价款 paid (land-only cases).
    pub land_fees_paid: bool,
    /// The buyers, in contract order.
    pub buyers: Vec<BuyerFacts>,
}

/// What is known about one buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BuyerFacts {
    /// 居民身份证号.
    pub resident_id: ResidentId,
    /// 契税 paid or exempted.
    pub deed_tax_done: bool,
}

/// Unmet conditions for a case's 转移登记, in a fixed order so repeated
/// checks produce identical reports.
#[must_use]
pub fn case_missing(facts: &CaseFacts) -> Vec<Missing> {
    let mut out = Vec::new();
    if facts.land_only {
        if !facts.first_registration_done {
            out.push(Missing::new(
                MissingKind::FirstRegistration,
                "first registration of the land-use right is not done (国有建设用地使用权首次登记未完成)",
            ));
        }
        if !facts.land_fees_paid {
            out.push(Missing::new(
                MissingKind::LandFees,
                "land transfer fees are not fully paid (土地出让价款未缴清)",
            ));
        }
        push_deed_tax(&mut out, &facts.buyers);
    } else {
        if !facts.first_registration_done {
            out.push(Missing::new(
                MissingKind::FirstRegistration,
                "developer's first registration of the project is not done (开发企业首次登记未完成)",
            ));
        }
        if !facts.unit_surveyed {
            out.push(Missing::new(
                MissingKind::BuildingTableUnit,
                "unit has no as-built survey data in the building table (楼盘表中无该户实测数据)",
            ));
        }
        push_deed_tax(&mut out, &facts.buyers);
        if !facts.maintenance_fund_deposited {
            out.push(Missing::new(
                MissingKind::MaintenanceFund,
                "maintenance fund is not deposited (专项维修资金未缴存)",
            ));
        }
    }
    out
}

fn push_deed_tax(out: &mut Vec<Missing>, buyers: &[BuyerFacts]) {
    for buyer in buyers.iter().filter(|b| !b.deed_tax_done) {
        let masked = buyer.resident_id.masked();
        out.push(Missing {
            kind: MissingKind::DeedTax,
            detail: format!("deed tax of buyer {masked} is not paid (买受人契税未完税)"),
            buyer_id: Some(masked),
        });
    }
}

/// What is known about a project (or parcel) before its 首次登记.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ProjectFacts {
    /// A land project (地证同交) rather than housing.
    pub land: bool,
    /// 住建 has shared the 楼盘表 with the registry.
    pub building_table_uploaded: bool,
    /// 竣工验收备案 and 规划验收 (or the land equivalents) are complete.
    pub acceptance_complete: bool,
    /// Names of the filings still missing, shown to the developer.
    pub acceptance_missing: Vec<String>,
    /// The developer's taxes and fees are cleared.
    pub developer_tax_cleared: bool,
    /// 土地出让价款 paid.
    pub land_fees_paid: bool,
}

/// Unmet conditions for the project's 首次登记, in a fixed order.
#[must_use]
pub fn first_registration_missing(f: &ProjectFacts) -> Vec<Missing> {
    let mut out = Vec::new();
    if !f.land && !f.building_table_uploaded {
        out.push(Missing::new(
            MissingKind::BuildingTable,
            "building table has not been shared by the housing authority (住建部门楼盘表未推送)",
        ));
    }
    // A non-empty list wins over the flag: naming what is missing is more
    // specific than a summary that says nothing is.
    if !f.acceptance_complete || !f.acceptance_missing.is_empty() {
        out.push(Missing::new(MissingKind::Acceptance, acceptance_detail(f)));
    }
    if f.land && !f.land_fees_paid {
        out.push(Missing::new(
            MissingKind::LandFees,
            "land transfer fees are not fully paid (土地出让价款未缴清)",
        ));
    }
    if !f.developer_tax_cleared {
        out.push(Missing::new(
            MissingKind::DeveloperTax,
            "developer's taxes and fees are not cleared (开发企业税费未缴清)",
        ));
    }
    out
}

fn acceptance_detail(f: &ProjectFacts) -> String {
    let (en, zh) = if f.land {
        ("land delivery acceptance is incomplete", "供地验收未完成")
    } else {
        (
            "completion and planning acceptance is incomplete",
            "竣工验收备案和规划验收未完成",
        )
    };
    if f.acceptance_missing.is_empty() {
        format!("{en} ({zh})")
    } else {
        format!(
            "{en}, missing: {} ({zh}，缺少：{})",
            f.acceptance_missing.join(", "),
            f.acceptance_missing.join("、")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buyer(id: &str, deed_tax_done: bool) -> BuyerFacts {
        BuyerFacts {
            resident_id: id.parse().unwrap(),
            deed_tax_done,
        }
    }

    fn kinds(m: &[Missing]) -> Vec<MissingKind> {
        m.iter().map(|m| m.kind).collect()
    }

    fn house(done: bool) -> CaseFacts {
        CaseFacts {
            land_only: false,
            first_registration_done: done,
            unit_surveyed: done,
            maintenance_fund_deposited: done,
            land_fees_paid: false,
            buyers: vec![
                buyer("11010519491231002X", done),
                buyer("440524190001010017", true),
            ],
        }
    }

    #[test]
    fn kind_ids_round_trip() {
        for k in MissingKind::ALL {
            assert_eq!(k.as_str().parse::<MissingKind>(), Ok(k));
        }
        assert!("deedtax".parse::<MissingKind>().is_err());
    }

    #[test]
    fn house_case_ready() {
        assert_eq!(case_missing(&house(true)), vec![]);
    }

    #[test]
    fn house_case_everything_missing_in_order() {
        let m = case_missing(&house(false));
        assert_eq!(
            kinds(&m),
            vec![
                MissingKind::FirstRegistration,
                MissingKind::BuildingTableUnit,
                MissingKind::DeedTax,
                MissingKind::MaintenanceFund,
            ]
        );
        assert_eq!(m[2].buyer_id.as_deref(), Some("110105********002X"));
        assert_eq!(
            m[2].detail,
            "deed tax of buyer 110105********002X is not paid (买受人契税未完税)"
        );
        assert!(
            m.iter()
                .filter(|x| x.kind != MissingKind::DeedTax)
                .all(|x| x.buyer_id.is_none())
        );
    }

    #[test]
    fn land_only_case() {
        let mut facts = house(false);
        facts.land_only = true;
        let m = case_missing(&facts);
        assert_eq!(
            kinds(&m),
            vec![
                MissingKind::FirstRegistration,
                MissingKind::LandFees,
                MissingKind::DeedTax
            ]
        );
        facts.first_registration_done = true;
        facts.land_fees_paid = true;
        facts.buyers[0].deed_tax_done = true;
        // Survey and maintenance fund do not apply to land.
        assert_eq!(case_missing(&facts), vec![]);
    }

    #[test]
    fn housing_project() {
        let f = ProjectFacts {
            acceptance_missing: vec![
                "规划验收 planning acceptance".into(),
                "消防验收 fire".into(),
            ],
            ..ProjectFacts::default()
        };
        let m = first_registration_missing(&f);
        assert_eq!(
            kinds(&m),
            vec![
                MissingKind::BuildingTable,
                MissingKind::Acceptance,
                MissingKind::DeveloperTax
            ]
        );
        assert_eq!(
            m[1].detail,
            "completion and planning acceptance is incomplete, missing: 规划验收 planning acceptance, 消防验收 fire \
             (竣工验收备案和规划验收未完成，缺少：规划验收 planning acceptance、消防验收 fire)"
        );
        let ready = ProjectFacts {
            building_table_uploaded: true,
            acceptance_complete: true,
            developer_tax_cleared: true,
            ..ProjectFacts::default()
        };
        assert_eq!(first_registration_missing(&ready), vec![]);
    }

    #[test]
    fn land_project() {
        let f = ProjectFacts {
            land: true,
            ..ProjectFacts::default()
        };
        let m = first_registration_missing(&f);
        assert_eq!(
            kinds(&m),
            vec![
                MissingKind::Acceptance,
                MissingKind::LandFees,
                MissingKind::DeveloperTax
            ]
        );
        assert_eq!(
            m[0].detail,
            "land delivery acceptance is incomplete (供地验收未完成)"
        );
        let ready = ProjectFacts {
            land: true,
            acceptance_complete: true,
            developer_tax_cleared: true,
            land_fees_paid: true,
            ..ProjectFacts::default()
        };
        assert_eq!(first_registration_missing(&ready), vec![]);
    }
}
