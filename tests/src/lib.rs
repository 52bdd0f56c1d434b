//! The whole suite for end-to-end tests: the four services as separate gRPC servers on 127.0.0.1
//! ports, against the real PostgreSQL (a fresh database per suite) and Redis (a fresh key prefix),
//! plus a scenario builder that drives a project through the public API only.
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tongjiao_auth::Role;
use tongjiao_domain::{ParcelCode, UnitCode, credit_code_check_char, resident_id_check_char};
use tongjiao_proto::{
    acceptance as acc, registration as reg, survey,
    tax::{self, push_completions_request::Payload as TaxPayload},
};
use tongjiao_registration::{Clock, Registration, RegistrationConfig, TokenSource};
use tongjiao_server::ServiceSet;
use tongjiao_store::Db;
use tongjiao_testkit::{
    RunningServer, TestKeys, authed, fresh_database, fresh_redis_prefix, spawn,
};
use tongjiao_workflow::Workflow;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

pub use tongjiao_testkit;

pub const COUNTY: &str = "140827";
pub const PARCEL: &str = "140827001002GB00012";

pub type AccClient = acc::acceptance_service_client::AcceptanceServiceClient<Channel>;
pub type SurveyClient = survey::survey_data_service_client::SurveyDataServiceClient<Channel>;
pub type TaxClient = tax::tax_status_service_client::TaxStatusServiceClient<Channel>;
pub type RegClient = reg::registration_service_client::RegistrationServiceClient<Channel>;

/// A valid 统一社会信用代码 built from a seed.
pub fn credit_code(seed: u32) -> String {
    let body = format!("91{COUNTY}MA{:07}", seed % 10_000_000);
    let check = credit_code_check_char(&body).expect("valid credit code body");
    format!("{body}{check}")
}

/// A valid 居民身份证号 built from a seed (born in 1990, county 140827).
pub fn resident_id(seed: u32) -> String {
    let body = format!(
        "{COUNTY}1990{:02}{:02}{:03}",
        1 + seed % 12,
        1 + seed % 28,
        seed % 1000
    );
    let check = resident_id_check_char(&body).expect("valid resident id body");
    format!("{body}{check}")
}

/// The unit code of building `b`, unit `u` on the demo parcel.
pub fn unit_code(b: u32, u: u32) -> String {
    let parcel: ParcelCode = PARCEL.parse().expect("parcel");
    UnitCode::house(&parcel, b, u)
        .expect("unit code")
        .as_str()
        .to_owned()
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Four separate servers on one database (each service in its own schema) and one Redis prefix.
pub struct Suite {
    pub keys: TestKeys,
    pub db_url: String,
    pub redis_prefix: String,
    pub survey: RunningServer,
    pub acceptance: RunningServer,
    pub tax: RunningServer,
    pub registration: Option<RunningServer>,
    /// The running registration itself, to restart its followers with what it remembers.
    app: Option<Registration>,
    background: Vec<JoinHandle<()>>,
    pub clock: Clock,
    pub developer_org: String,
}

impl Suite {
    pub async fn start() -> Suite {
        tongjiao_server::init_tracing();
        let db_url = fresh_database().await;
        let keys = TestKeys::new();
        let survey = {
            let db = Db::connect(&db_url, 4).await.expect("connect survey db");
            let svc = tongjiao_survey_data::build(db).await.expect("build survey");
            let mut set = ServiceSet::new();
            svc.register(&mut set, keys.authenticator());
            spawn(set).await
        };
        let acceptance = {
            let db = Db::connect(&db_url, 4)
                .await
                .expect("connect acceptance db");
            let svc = tongjiao_acceptance::build(db)
                .await
                .expect("build acceptance");
            let mut set = ServiceSet::new();
            svc.register(&mut set, keys.authenticator());
            spawn(set).await
        };
        let tax = {
            let db = Db::connect(&db_url, 4).await.expect("connect tax db");
            let svc = tongjiao_tax_status::build(db).await.expect("build tax");
            let mut set = ServiceSet::new();
            svc.register(&mut set, keys.authenticator());
            spawn(set).await
        };
        let mut suite = Suite {
            keys,
            db_url,
            redis_prefix: fresh_redis_prefix(),
            survey,
            acceptance,
            tax,
            registration: None,
            app: None,
            background: Vec::new(),
            clock: Clock::default(),
            developer_org: credit_code(1),
        };
        suite.start_registration().await;
        suite
    }

    /// Starts (or restarts) the registration service on a new port.
    pub async fn start_registration(&mut self) {
        let (app, server, background) = self.replica_parts().await;
        self.background = background;
        self.registration = Some(server);
        self.app = Some(app);
    }

    /// Starts the running registration's followers and sweeper again after
    /// [`Suite::stop_followers`], with everything it remembers.
    pub fn restart_followers(&mut self) {
        if let Some(app) = &self.app {
            self.background = app.start_background();
        }
    }

    /// Stops registration's feed followers and sweeper; its API keeps serving.
    pub async fn stop_followers(&mut self) {
        for t in self.background.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }

    /// One more registration process on the same register and workflow store, with its own
    /// followers, as a second replica behind a load balancer would run.
    pub async fn registration_replica(&self) -> (RunningServer, Vec<JoinHandle<()>>) {
        let (_, server, background) = self.replica_parts().await;
        (server, background)
    }

    async fn replica_parts(&self) -> (Registration, RunningServer, Vec<JoinHandle<()>>) {
        let db = Db::connect(&self.db_url, 8)
            .await
            .expect("connect registration db");
        let workflow = Workflow::redis(&tongjiao_testkit::redis_url(), &self.redis_prefix)
            .await
            .expect("Redis is required");
        let config = RegistrationConfig {
            survey_url: self.survey.url(),
            acceptance_url: self.acceptance.url(),
            tax_url: self.tax.url(),
            tokens: TokenSource::Static(self.keys.token(
                Role::Registrar,
                "registration-service",
                None,
                None,
            )),
            county_names: tongjiao_registration::config::parse_county_names("140827=垣曲县")
                .expect("counties"),
            lapse_sweep_every: Duration::from_millis(200),
            // Low, so that the tests' tax batches of a few units take the split path too.
            parallel_apply_min_units: 2,
            clock: self.clock.clone(),
        };
        let registration = Registration::build(db, workflow, config)
            .await
            .expect("build registration");
        let background = registration.start_background();
        let mut set = ServiceSet::new();
        registration
            .clone()
            .register(&mut set, self.keys.authenticator());
        (registration, spawn(set).await, background)
    }

    /// Stops registration and its followers, as a crash or a redeploy would.
    pub async fn stop_registration(&mut self) {
        self.stop_followers().await;
        self.app = None;
        if let Some(r) = self.registration.take() {
            r.stop().await;
        }
    }

    pub fn token(&self, role: Role) -> String {
        match role {
            Role::Developer => {
                self.keys
                    .token(role, "developer-1", Some(&self.developer_org), None)
            }
            Role::Clerk => self.keys.token(role, "clerk-1", None, Some(COUNTY)),
            other => self
                .keys
                .token(other, &format!("{}-1", other.as_str()), None, None),
        }
    }

    pub async fn survey(&self) -> SurveyClient {
        SurveyClient::new(self.survey.channel().await).max_decoding_message_size(64 << 20)
    }
    pub async fn acceptance(&self) -> AccClient {
        AccClient::new(self.acceptance.channel().await)
    }
    pub async fn tax(&self) -> TaxClient {
        TaxClient::new(self.tax.channel().await)
    }
    pub async fn registration(&self) -> RegClient {
        RegClient::new(
            self.registration
                .as_ref()
                .expect("registration running")
                .channel()
                .await,
        )
        .max_decoding_message_size(64 << 20)
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        for t in &self.background {
            t.abort();
        }
    }
}

/// One case of the scenario: a unit and its buyers.
#[derive(Clone, Debug)]
pub struct CasePlan {
    pub unit_code: String,
    pub buyers: Vec<(String, String)>,
}

/// A housing project with `buildings` × `per_building` units, one or two buyers each.
pub struct Scenario {
    pub project_id: String,
    pub cases: Vec<CasePlan>,
}

impl Scenario {
    pub fn new(project_id: &str, buildings: u32, per_building: u32) -> Scenario {
        let mut cases = Vec::new();
        let mut seed = 100;
        for b in 1..=buildings {
            for u in 1..=per_building {
                seed += 1;
                let mut buyers = vec![(format!("买受人{seed}"), resident_id(seed))];
                if seed % 3 == 0 {
                    seed += 1;
                    buyers.push((format!("共有人{seed}"), resident_id(seed)));
                }
                cases.push(CasePlan {
                    unit_code: unit_code(b, u),
                    buyers,
                });
            }
        }
        Scenario {
            project_id: project_id.to_owned(),
            cases,
        }
    }

    pub fn project(&self, org: &str) -> reg::Project {
        reg::Project {
            project_id: self.project_id.clone(),
            name: "同交家园".into(),
            kind: reg::ProjectKind::Housing as i32,
            county_code: COUNTY.into(),
            parcel_code: PARCEL.into(),
            developer_credit_code: org.into(),
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
        }
    }

    pub fn building_table(&self, request_id: &str) -> survey::UploadBuildingTableRequest {
        let mut buildings: Vec<survey::PhysicalBuilding> = Vec::new();
        for c in &self.cases {
            let code: UnitCode = c.unit_code.parse().expect("unit code");
            let b = code.building_number().expect("house unit");
            let seq = code.unit_seq().expect("house unit");
            if buildings.last().is_none_or(|x| x.building_number != b) {
                buildings.push(survey::PhysicalBuilding {
                    building_number: b,
                    name: format!("{b}号楼"),
                    total_floors: 18,
                    floors_above_ground: 18,
                    floors_below_ground: 0,
                    structure: survey::Structure::ReinforcedConcrete as i32,
                    planned_usage: "住宅".into(),
                    completion_date: "2026-06-30".into(),
                    units: Vec::new(),
                });
            }
            let floor = 1 + (seq as i32 - 1) / 2;
            let internal = 8_500 + i64::from(seq) * 10;
            let shared = 1_961;
            if let Some(last) = buildings.last_mut() {
                last.units.push(survey::Unit {
                    unit_code: c.unit_code.clone(),
                    room_number: format!("1单元{floor}0{}", 1 + (seq - 1) % 2),
                    floor_number: floor,
                    location: format!(
                        "垣曲县新城区同交路8号{b}号楼1单元{floor}0{}",
                        1 + (seq - 1) % 2
                    ),
                    planned_usage: "住宅".into(),
                    measured_gfa_centi_sqm: internal + shared,
                    internal_area_centi_sqm: internal,
                    shared_area_centi_sqm: shared,
                    ..Default::default()
                });
            }
        }
        survey::UploadBuildingTableRequest {
            request_id: request_id.into(),
            project_id: self.project_id.clone(),
            parcel_code: PARCEL.into(),
            buildings,
        }
    }

    pub fn batch(&self, request_id: &str, today: time::Date) -> reg::SubmitHandoverBatchRequest {
        reg::SubmitHandoverBatchRequest {
            request_id: request_id.into(),
            project_id: self.project_id.clone(),
            handover_date: tongjiao_domain::format_date(today + time::Duration::days(10)),
            material_deadline: tongjiao_domain::format_date(today + time::Duration::days(5)),
            cases: self
                .cases
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
                    contract_number: format!("YQ-HT-{:05}", i + 1),
                    same_day_opt_in: true,
                })
                .collect(),
        }
    }

    /// Every tax event the cases need: each buyer's 契税 and each unit's 维修资金.
    pub fn tax_events(&self) -> Vec<tax::PushCompletionsRequest> {
        let mut out = Vec::new();
        for c in &self.cases {
            for (_, id) in &c.buyers {
                out.push(tax::PushCompletionsRequest {
                    event_id: format!("deed-{}-{id}", c.unit_code),
                    occurred_at: None,
                    payload: Some(TaxPayload::DeedTaxPaid(tax::DeedTaxPaid {
                        unit_code: c.unit_code.clone(),
                        buyer_id: id.clone(),
                        amount_fen: 312_000,
                        voucher_number: format!("WSPZ-{}", &id[10..]),
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
                        receipt_number: format!("WXZJ-{}", &c.unit_code[20..]),
                    },
                )),
            });
        }
        out
    }

    pub fn developer_tax_event(&self, org: &str) -> tax::PushCompletionsRequest {
        tax::PushCompletionsRequest {
            event_id: format!("devtax-{}", self.project_id),
            occurred_at: None,
            payload: Some(TaxPayload::DeveloperTaxCleared(tax::DeveloperTaxCleared {
                project_id: self.project_id.clone(),
                developer_credit_code: org.into(),
                voucher_number: "KFQYWS-2026-0001".into(),
            })),
        }
    }
}

/// Pushes events over the tax feed and returns the acknowledgements.
pub async fn push_tax(
    suite: &Suite,
    events: Vec<tax::PushCompletionsRequest>,
) -> Vec<tax::PushCompletionsResponse> {
    let n = events.len();
    let mut client = suite.tax().await;
    let stream = tokio_stream::iter(events);
    let mut acks = client
        .push_completions(authed(stream, &suite.token(Role::TaxBureau)))
        .await
        .expect("push completions")
        .into_inner();
    let mut out = Vec::with_capacity(n);
    while let Some(ack) = acks.message().await.expect("ack stream") {
        out.push(ack);
        if out.len() == n {
            break;
        }
    }
    out
}

/// Records the three acceptance filings.
pub async fn record_filings(suite: &Suite, project_id: &str) {
    let mut client = suite.acceptance().await;
    let token = suite.token(Role::HousingBureau);
    for (i, kind) in [
        acc::FilingKind::PlanningAcceptance,
        acc::FilingKind::CompletionFiling,
        acc::FilingKind::CadastralSurvey,
    ]
    .into_iter()
    .enumerate()
    {
        client
            .record_filing(authed(
                acc::RecordFilingRequest {
                    request_id: format!("filing-{project_id}-{i}"),
                    project_id: project_id.into(),
                    kind: kind as i32,
                    document_number: format!("YQJB-2026-{i:03}"),
                    authority: "垣曲县住房和城乡建设管理局".into(),
                    completed_on: "2026-06-30".into(),
                    documents: vec![acc::Document {
                        name: "备案表".into(),
                        sha256: sha256_hex(&format!("{project_id}-{i}")),
                    }],
                },
                &token,
            ))
            .await
            .expect("record filing");
    }
}

/// Polls `f` until it returns Some, failing after `secs` seconds.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Enrols the project, uploads its 楼盘表, records filings, clears the developer's taxes and
/// completes 首次登记.
pub async fn prepare_project(suite: &Suite, sc: &Scenario) {
    let mut r = suite.registration().await;
    r.enroll_project(authed(
        reg::EnrollProjectRequest {
            request_id: format!("enroll-{}", sc.project_id),
            project: Some(sc.project(&suite.developer_org)),
        },
        &suite.token(Role::Developer),
    ))
    .await
    .expect("enroll project");
    suite
        .survey()
        .await
        .upload_building_table(authed(
            sc.building_table(&format!("table-{}", sc.project_id)),
            &suite.token(Role::HousingBureau),
        ))
        .await
        .expect("upload building table");
    record_filings(suite, &sc.project_id).await;
    let acks = push_tax(suite, vec![sc.developer_tax_event(&suite.developer_org)]).await;
    assert_eq!(acks[0].status, tax::AckStatus::Accepted as i32, "{acks:?}");
    wait_first_registration_possible(suite, &sc.project_id).await;
    r.apply_first_registration(authed(
        reg::ApplyFirstRegistrationRequest {
            request_id: format!("apply-{}", sc.project_id),
            project_id: sc.project_id.clone(),
        },
        &suite.token(Role::Developer),
    ))
    .await
    .expect("apply first registration");
    r.complete_first_registration(authed(
        reg::CompleteFirstRegistrationRequest {
            request_id: format!("complete-{}", sc.project_id),
            project_id: sc.project_id.clone(),
        },
        &suite.token(Role::Registrar),
    ))
    .await
    .expect("complete first registration");
}

/// Waits until registration has followed the feeds far enough for 首次登记.
pub async fn wait_first_registration_possible(suite: &Suite, project_id: &str) {
    let token = suite.token(Role::Developer);
    let mut r = suite.registration().await;
    eventually("first registration preconditions", 30, || {
        let mut r = r.clone();
        let token = token.clone();
        async move {
            let p = r
                .get_project(authed(
                    reg::GetProjectRequest {
                        project_id: project_id.into(),
                    },
                    &token,
                ))
                .await
                .ok()?
                .into_inner()
                .project?;
            p.first_registration_missing.is_empty().then_some(())
        }
    })
    .await;
    let _ = &mut r;
}

/// Waits until every case of the batch is in `state`.
pub async fn wait_batch(
    suite: &Suite,
    batch_id: &str,
    check: impl Fn(&reg::BatchCounts) -> bool,
) -> reg::BatchCounts {
    let token = suite.token(Role::Registrar);
    let r = suite.registration().await;
    eventually("batch counts", 60, || {
        let mut r = r.clone();
        let token = token.clone();
        let check = &check;
        async move {
            let b = r
                .get_handover_batch(authed(
                    reg::GetHandoverBatchRequest {
                        batch_id: batch_id.into(),
                    },
                    &token,
                ))
                .await
                .ok()?
                .into_inner()
                .batch?;
            let counts = b.counts?;
            check(&counts).then_some(counts)
        }
    })
    .await
}

/// The field names of a status's BadRequest details.
pub fn bad_fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The precondition-failure kinds of a status.
pub fn precondition_kinds(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    status
        .get_details_precondition_failure()
        .map(|p| p.violations.into_iter().map(|v| v.r#type).collect())
        .unwrap_or_default()
}
