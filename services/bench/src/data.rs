//! Deterministic, valid data for the benchmark: a housing project's 楼盘表, its buyers (居民身份证号
//! with computed check digits), the handover batch and the tax feed with duplicates, shuffled by a
//! seeded generator so every run sends the same requests in the same order.
use tongjiao_domain::{
    ParcelCode, UnitCode, credit_code_check_char, format_date, resident_id_check_char,
};
use tongjiao_proto::{
    acceptance as acc, registration as reg, survey,
    tax::{self, push_completions_request::Payload as TaxPayload},
};

pub const COUNTY: &str = "140827";
pub const COUNTIES: &str = "140827=垣曲县";
/// Parcel of the handover project.
pub const PARCEL: &str = "140827001002GB00012";
/// Parcel of the separate big 楼盘表.
pub const BIG_PARCEL: &str = "140827001002GB00013";
pub const PROJECT: &str = "TJB-HANDOVER";
pub const BIG_PROJECT: &str = "TJB-BIGTABLE";
/// At most this many cases per SubmitHandoverBatch (the contract's limit).
pub const MAX_BATCH_CASES: usize = 20_000;

/// SplitMix64: small, fast, and the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// A valid 统一社会信用代码 built from a seed.
pub fn credit_code(seed: u32) -> String {
    let body = format!("91{COUNTY}MA{:07}", seed % 10_000_000);
    let check = credit_code_check_char(&body).expect("valid credit code body");
    format!("{body}{check}")
}

/// A valid, unique 居民身份证号 for buyer number `i` (county 140827, born from 1970 on).
pub fn resident_id(i: u32) -> String {
    let base = time::Date::from_calendar_date(1970, time::Month::January, 1).expect("date");
    let born = base + time::Duration::days(i64::from(i / 500));
    let body = format!(
        "{COUNTY}{:04}{:02}{:02}{:03}",
        born.year(),
        u8::from(born.month()),
        born.day(),
        (i % 500) * 2 + 1
    );
    let check = resident_id_check_char(&body).expect("valid resident id body");
    format!("{body}{check}")
}

/// One 户 of a project.
#[derive(Debug, Clone)]
pub struct UnitPlan {
    pub code: String,
    pub building: u32,
    pub floor: i32,
    pub room: String,
}

/// One case of the handover: a unit and its buyers.
#[derive(Debug, Clone)]
pub struct CasePlan {
    pub unit_code: String,
    pub buyers: Vec<(String, String)>,
}

/// A housing project: its units spread over buildings, and (for the handover project) its cases.
pub struct Project {
    pub project_id: String,
    pub parcel: String,
    pub developer_org: String,
    /// Buildings as (number, total floors, units).
    pub buildings: Vec<(u32, u32, Vec<UnitPlan>)>,
    pub cases: Vec<CasePlan>,
}

impl Project {
    /// `units` units over `buildings` buildings (as even as possible), one or two buyers each.
    pub fn new(project_id: &str, parcel: &str, units: u32, buildings: u32) -> Project {
        let parcel_code: ParcelCode = parcel.parse().expect("valid parcel code");
        let buildings_n = buildings.clamp(1, units.max(1));
        let mut out = Vec::new();
        let mut cases = Vec::new();
        let mut buyer_seq = 0u32;
        for b in 1..=buildings_n {
            // Units of building b: the first (units % buildings) buildings take one more.
            let per = units / buildings_n + u32::from(b <= units % buildings_n);
            if per == 0 {
                continue;
            }
            // Four units a floor, more when needed to stay within 200 floors.
            let per_floor = per.div_ceil(200).max(4);
            let floors = per.div_ceil(per_floor);
            let mut list = Vec::with_capacity(per as usize);
            for u in 1..=per {
                let code = UnitCode::house(&parcel_code, b, u)
                    .expect("unit code in range")
                    .as_str()
                    .to_owned();
                let floor = 1 + (u - 1) / per_floor;
                let pos = 1 + (u - 1) % per_floor;
                list.push(UnitPlan {
                    code: code.clone(),
                    building: b,
                    floor: floor as i32,
                    room: format!("{floor}{pos:02}"),
                });
                let index = cases.len() as u32;
                buyer_seq += 1;
                let mut buyers = vec![(format!("买受人{index}"), resident_id(buyer_seq))];
                if index % 3 == 2 {
                    buyer_seq += 1;
                    buyers.push((format!("共有人{index}"), resident_id(buyer_seq)));
                }
                cases.push(CasePlan {
                    unit_code: code,
                    buyers,
                });
            }
            out.push((b, floors, list));
        }
        Project {
            project_id: project_id.to_owned(),
            parcel: parcel.to_owned(),
            developer_org: credit_code(1),
            buildings: out,
            cases,
        }
    }

    pub fn unit_count(&self) -> usize {
        self.buildings.iter().map(|b| b.2.len()).sum()
    }

    pub fn buyer_count(&self) -> usize {
        self.cases.iter().map(|c| c.buyers.len()).sum()
    }

    pub fn enroll(&self) -> reg::EnrollProjectRequest {
        reg::EnrollProjectRequest {
            request_id: format!("enroll-{}", self.project_id),
            project: Some(reg::Project {
                project_id: self.project_id.clone(),
                name: "同交家园".into(),
                kind: reg::ProjectKind::Housing as i32,
                county_code: COUNTY.into(),
                parcel_code: self.parcel.clone(),
                developer_credit_code: self.developer_org.clone(),
                developer_name: "垣曲县同交置业有限公司".into(),
                agreement_number: "YQFZTJ-2026-001".into(),
                agreement_signed_on: "2026-01-15".into(),
                land: Some(reg::LandRight {
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

    pub fn building_table(&self) -> survey::UploadBuildingTableRequest {
        let buildings = self
            .buildings
            .iter()
            .map(|(b, floors, units)| survey::PhysicalBuilding {
                building_number: *b,
                name: format!("{b}号楼"),
                total_floors: *floors,
                floors_above_ground: *floors,
                floors_below_ground: 0,
                structure: survey::Structure::ReinforcedConcrete as i32,
                planned_usage: "住宅".into(),
                completion_date: "2026-06-30".into(),
                units: units
                    .iter()
                    .enumerate()
                    .map(|(i, u)| {
                        let internal = 8_500 + (i as i64 % 40) * 25;
                        let shared = 1_961;
                        survey::Unit {
                            unit_code: u.code.clone(),
                            room_number: u.room.clone(),
                            floor_number: u.floor,
                            location: format!(
                                "垣曲县新城区同交路8号{}号楼{}室",
                                u.building, u.room
                            ),
                            planned_usage: "住宅".into(),
                            measured_gfa_centi_sqm: internal + shared,
                            internal_area_centi_sqm: internal,
                            shared_area_centi_sqm: shared,
                            ..Default::default()
                        }
                    })
                    .collect(),
            })
            .collect();
        survey::UploadBuildingTableRequest {
            request_id: format!("table-{}", self.project_id),
            project_id: self.project_id.clone(),
            parcel_code: self.parcel.clone(),
            buildings,
        }
    }

    /// The three acceptance filings of the gate.
    pub fn filings(&self) -> Vec<acc::RecordFilingRequest> {
        [
            acc::FilingKind::PlanningAcceptance,
            acc::FilingKind::CompletionFiling,
            acc::FilingKind::CadastralSurvey,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, kind)| acc::RecordFilingRequest {
            request_id: format!("filing-{}-{i}", self.project_id),
            project_id: self.project_id.clone(),
            kind: kind as i32,
            document_number: format!("YQJB-2026-{i:03}"),
            authority: "垣曲县住房和城乡建设管理局".into(),
            completed_on: "2026-06-30".into(),
            documents: vec![acc::Document {
                name: "备案表".into(),
                sha256: format!("{:064x}", i + 1),
            }],
        })
        .collect()
    }

    pub fn developer_tax_event(&self) -> tax::PushCompletionsRequest {
        tax::PushCompletionsRequest {
            event_id: format!("devtax-{}", self.project_id),
            occurred_at: None,
            payload: Some(TaxPayload::DeveloperTaxCleared(tax::DeveloperTaxCleared {
                project_id: self.project_id.clone(),
                developer_credit_code: self.developer_org.clone(),
                voucher_number: "KFQYWS-2026-0001".into(),
            })),
        }
    }

    /// The handover batches (≤ 20,000 cases each); `today` is the registration office's date.
    pub fn batches(&self, today: time::Date) -> Vec<reg::SubmitHandoverBatchRequest> {
        self.cases
            .chunks(MAX_BATCH_CASES)
            .enumerate()
            .map(|(bi, chunk)| reg::SubmitHandoverBatchRequest {
                request_id: format!("batch-{}-{bi}", self.project_id),
                project_id: self.project_id.clone(),
                handover_date: format_date(today + time::Duration::days(10)),
                material_deadline: format_date(today + time::Duration::days(5)),
                cases: chunk
                    .iter()
                    .enumerate()
                    .map(|(i, c)| reg::CaseSubmission {
                        unit_code: c.unit_code.clone(),
                        buyers: c
                            .buyers
                            .iter()
                            .map(|(name, id)| reg::Buyer {
                                name: name.clone(),
                                resident_id: id.clone(),
                                share_basis_points: 0,
                            })
                            .collect(),
                        co_ownership: if c.buyers.len() == 1 {
                            reg::CoOwnership::Sole
                        } else {
                            reg::CoOwnership::Joint
                        } as i32,
                        contract_number: format!("YQ-HT-{:06}", bi * MAX_BATCH_CASES + i + 1),
                        same_day_opt_in: true,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Every tax event the cases need (each buyer's 契税, each unit's 维修资金).
    pub fn tax_events(&self) -> Vec<tax::PushCompletionsRequest> {
        let mut out = Vec::with_capacity(self.cases.len() + self.buyer_count());
        for c in &self.cases {
            for (_, id) in &c.buyers {
                out.push(tax::PushCompletionsRequest {
                    event_id: format!("deed-{}-{id}", c.unit_code),
                    occurred_at: None,
                    payload: Some(TaxPayload::DeedTaxPaid(tax::DeedTaxPaid {
                        unit_code: c.unit_code.clone(),
                        buyer_id: id.clone(),
                        amount_fen: 312_000,
                        voucher_number: format!("WSPZ-{}", &id[6..17]),
                        relieved: false,
                        relief_basis: String::new(),
                    })),
                });
            }
            out.push(tax::PushCompletionsRequest {
                event_id: format!("fund-{}", c.unit_code),
                occurred_at: None,
                payload: Some(TaxPayload::MaintenanceFundDeposited(
                    tax::MaintenanceFundDeposited {
                        unit_code: c.unit_code.clone(),
                        amount_fen: 520_000,
                        receipt_number: format!("WXZJ-{}", &c.unit_code[19..]),
                    },
                )),
            });
        }
        out
    }
}

/// The feed as the bureau replays it: `events` plus `dup_percent`% re-sent copies (identical
/// content), all shuffled. Returns (feed, number of duplicates).
pub fn with_duplicates_shuffled(
    events: Vec<tax::PushCompletionsRequest>,
    dup_percent: u32,
    rng: &mut Rng,
) -> (Vec<tax::PushCompletionsRequest>, usize) {
    let dups = (events.len() * dup_percent as usize).div_ceil(100);
    let mut feed = events;
    let unique = feed.len();
    for _ in 0..dups {
        let pick = rng.below(unique);
        feed.push(feed[pick].clone());
    }
    rng.shuffle(&mut feed);
    (feed, dups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tongjiao_domain::ResidentId;

    #[test]
    fn project_data_is_valid_and_unique() {
        let p = Project::new(PROJECT, PARCEL, 2000, 20);
        assert_eq!(p.unit_count(), 2000);
        assert_eq!(p.cases.len(), 2000);
        assert_eq!(p.buildings.len(), 20);
        let mut ids = HashSet::new();
        for c in &p.cases {
            c.unit_code.parse::<UnitCode>().expect("unit code");
            assert!((1..=2).contains(&c.buyers.len()));
            for (_, id) in &c.buyers {
                id.parse::<ResidentId>().expect("resident id");
                assert!(ids.insert(id.clone()), "buyer ids are unique");
            }
        }
        let odd = Project::new(BIG_PROJECT, BIG_PARCEL, 50, 3);
        assert_eq!(odd.unit_count(), 50);
        let big = Project::new(BIG_PROJECT, BIG_PARCEL, 10_000, 100);
        assert!(big.buildings.iter().all(|b| b.1 <= 200));
    }

    #[test]
    fn duplicates_and_shuffle_are_deterministic() {
        let p = Project::new(PROJECT, PARCEL, 100, 2);
        let events = p.tax_events();
        let n = events.len();
        let (a, dups) = with_duplicates_shuffled(events.clone(), 10, &mut Rng::new(7));
        let (b, _) = with_duplicates_shuffled(events, 10, &mut Rng::new(7));
        assert_eq!(dups, n.div_ceil(10));
        assert_eq!(a.len(), n + dups);
        assert_eq!(a, b);
        let distinct: HashSet<&str> = a.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(distinct.len(), n);
    }
}
