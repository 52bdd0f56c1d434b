//! AcceptanceService end to end: a real server on 127.0.0.1 over a fresh PostgreSQL database per test.
use std::time::Duration;

use time::{OffsetDateTime, macros::offset};
use tongjiao_acceptance::build;
use tongjiao_auth::Role;
use tongjiao_proto::acceptance::{
    AcceptanceEvent, DeclareRequirementsRequest, Document, Filing, FilingKind, GateStatus,
    GetGateStatusRequest, RecordFilingRequest, RecordFilingResponse, WatchAcceptanceEventsRequest,
    WatchAcceptanceEventsResponse, acceptance_event::Payload,
    acceptance_service_client::AcceptanceServiceClient,
};
use tongjiao_server::ServiceSet;
use tongjiao_store::{
    Db,
    sqlx::{self, AssertSqlSafe},
};
use tongjiao_testkit::{RunningServer, TestKeys, authed, fresh_database, spawn};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

const PROJECT: &str = "YQ-2026-001";
const P: i32 = FilingKind::PlanningAcceptance as i32;
const C: i32 = FilingKind::CompletionFiling as i32;
const CAD: i32 = FilingKind::CivilAirDefenseAcceptance as i32;
const CS: i32 = FilingKind::CadastralSurvey as i32;
const TABLES: [&str; 6] = [
    "projects",
    "requirements",
    "filings",
    "filing_documents",
    "events",
    "requests",
];

// === harness ===

struct Harness {
    db: Db,
    keys: TestKeys,
    client: AcceptanceServiceClient<Channel>,
    _server: RunningServer,
}

async fn start() -> Harness {
    let url = fresh_database().await;
    let db = Db::connect(&url, 5)
        .await
        .expect("connect to the test database");
    let service = build(db.clone())
        .await
        .expect("build the acceptance service");
    let keys = TestKeys::new();
    let mut set = ServiceSet::new();
    service.register(&mut set, keys.authenticator());
    let server = spawn(set).await;
    let client = AcceptanceServiceClient::new(server.channel().await);
    Harness {
        db,
        keys,
        client,
        _server: server,
    }
}

impl Harness {
    fn token(&self, role: Role) -> String {
        self.keys
            .token(role, &format!("{}-1", role.as_str()), None, None)
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM acceptance.{table}"
        )))
        .fetch_one(self.db.pool())
        .await
        .expect("count rows")
    }

    /// Row counts of every acceptance table (the feed head excluded: it always has its one row).
    async fn counts(&self) -> Vec<(&'static str, i64)> {
        let mut out = Vec::new();
        for t in TABLES {
            out.push((t, self.count(t).await));
        }
        out
    }

    async fn assert_nothing_written(&self) {
        for (table, n) in self.counts().await {
            assert_eq!(n, 0, "acceptance.{table} must be empty");
        }
    }

    async fn record(&self, req: RecordFilingRequest) -> Result<RecordFilingResponse, Status> {
        let token = self.token(Role::Registrar);
        self.client
            .clone()
            .record_filing(authed(req, &token))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn declare(&self, request_id: &str, project: &str, required: bool) -> GateStatus {
        let token = self.token(Role::HousingBureau);
        self.client
            .clone()
            .declare_requirements(authed(
                DeclareRequirementsRequest {
                    request_id: request_id.into(),
                    project_id: project.into(),
                    civil_air_defense_required: required,
                },
                &token,
            ))
            .await
            .expect("declare requirements")
            .into_inner()
            .gate
            .expect("gate in reply")
    }

    async fn gate(&self, project: &str) -> GateStatus {
        let token = self.token(Role::Clerk);
        self.client
            .clone()
            .get_gate_status(authed(
                GetGateStatusRequest {
                    project_id: project.into(),
                },
                &token,
            ))
            .await
            .expect("get gate status")
            .into_inner()
            .gate
            .expect("gate in reply")
    }

    /// The backlog after `after`; the stream must end by itself (backlog_only).
    async fn backlog(&self, after: u64) -> Vec<AcceptanceEvent> {
        let token = self.token(Role::Auditor);
        let mut stream = self
            .client
            .clone()
            .watch_acceptance_events(authed(
                WatchAcceptanceEventsRequest {
                    after_sequence: after,
                    backlog_only: true,
                },
                &token,
            ))
            .await
            .expect("watch")
            .into_inner();
        let mut out = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("a backlog_only feed ends by itself")
                .expect("feed item");
            match next {
                Some(item) => out.push(item.event.expect("event in reply")),
                None => return out,
            }
        }
    }
}

fn sha(n: u32) -> String {
    format!("{n:064x}")
}

fn filing(request_id: &str, project: &str, kind: i32) -> RecordFilingRequest {
    RecordFilingRequest {
        request_id: request_id.into(),
        project_id: project.into(),
        kind,
        document_number: format!("垣建备〔2026〕{kind}号"),
        authority: "垣曲县住房和城乡建设管理局".into(),
        completed_on: "2026-10-15".into(),
        documents: vec![
            Document {
                name: "竣工验收备案表".into(),
                sha256: sha(kind as u32 * 100 + 1),
            },
            Document {
                name: "验收意见".into(),
                sha256: sha(kind as u32 * 100 + 2),
            },
        ],
    }
}

fn violation_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|br| {
            br.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, fields: &[&str]) {
    let status = result.expect_err("request must be rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violation_fields(&status), fields, "{status:?}");
}

fn kinds_of(events: &[AcceptanceEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e.payload {
            Some(Payload::FilingRecorded(_)) => "FilingRecorded",
            Some(Payload::GateChanged(_)) => "GateChanged",
            None => "none",
        })
        .collect()
}

fn gate_in(e: &AcceptanceEvent) -> &GateStatus {
    match &e.payload {
        Some(Payload::GateChanged(g)) => g,
        other => panic!("expected GateChanged, got {other:?}"),
    }
}

fn today_in_china() -> time::Date {
    OffsetDateTime::now_utc().to_offset(offset!(+8)).date()
}

// === gate and feed ===

#[tokio::test]
async fn gate_completes_after_the_three_filings_and_the_feed_tells_it_in_order() {
    let h = start().await;

    // Registration asks about projects before any filing: not NOT_FOUND, just everything missing.
    let g = h.gate(PROJECT).await;
    assert_eq!(g.project_id, PROJECT);
    assert!(!g.complete);
    assert_eq!(g.missing, [P, C, CS]);
    assert!(g.filings.is_empty());
    assert!(!g.civil_air_defense_required);

    let r1 = h
        .record(filing("f-1", PROJECT, P))
        .await
        .expect("planning acceptance");
    let f1 = r1.filing.expect("filing in reply");
    assert!(!f1.filing_id.is_empty());
    assert_eq!(f1.project_id, PROJECT);
    assert_eq!(f1.kind, P);
    assert_eq!(f1.authority, "垣曲县住房和城乡建设管理局");
    assert_eq!(f1.completed_on, "2026-10-15");
    assert_eq!(f1.documents.len(), 2);
    assert_eq!(f1.documents[0].sha256, sha(101));
    assert!(f1.recorded_at.is_some());
    let g1 = r1.gate.expect("gate in reply");
    assert!(!g1.complete);
    assert_eq!(g1.missing, [C, CS]);

    let mut completion = filing("f-2", PROJECT, C);
    completion.documents[0].sha256 = sha(201).to_ascii_uppercase();
    let r2 = h.record(completion).await.expect("completion filing");
    assert_eq!(
        r2.filing.as_ref().expect("filing").documents[0].sha256,
        sha(201),
        "digests are kept lower-case"
    );
    let g2 = r2.gate.expect("gate");
    assert!(!g2.complete);
    assert_eq!(g2.missing, [CS]);

    let r3 = h
        .record(filing("f-3", PROJECT, CS))
        .await
        .expect("cadastral survey");
    let g3 = r3.gate.expect("gate");
    assert!(g3.complete);
    assert!(g3.missing.is_empty());
    let kinds: Vec<i32> = g3.filings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [P, C, CS]);

    // GetGateStatus reads back exactly what the last reply said.
    assert_eq!(h.gate(PROJECT).await, g3);

    let events = h.backlog(0).await;
    assert_eq!(
        kinds_of(&events),
        [
            "FilingRecorded",
            "GateChanged",
            "FilingRecorded",
            "GateChanged",
            "FilingRecorded",
            "GateChanged"
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert!(
        events
            .iter()
            .all(|e| e.project_id == PROJECT && e.recorded_at.is_some())
    );
    let mut ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "event ids are unique");
    assert_eq!(gate_in(&events[1]).missing, [C, CS]);
    assert_eq!(gate_in(&events[3]).missing, [CS]);
    assert!(!gate_in(&events[3]).complete);
    assert!(gate_in(&events[5]).complete);
    assert_eq!(gate_in(&events[5]), &g3);
    match &events[0].payload {
        Some(Payload::FilingRecorded(f)) => assert_eq!(Some(f), filing_of(&g3, P).as_ref()),
        other => panic!("expected FilingRecorded, got {other:?}"),
    }

    // Other projects are untouched.
    let other = h.gate("YQ-2026-002").await;
    assert_eq!(other.missing, [P, C, CS]);
}

fn filing_of(g: &GateStatus, kind: i32) -> Option<Filing> {
    g.filings.iter().find(|f| f.kind == kind).cloned()
}

#[tokio::test]
async fn civil_air_defense_requirement_reopens_the_gate_until_its_filing() {
    let h = start().await;
    for (i, kind) in [P, C, CS].into_iter().enumerate() {
        h.record(filing(&format!("f-{i}"), PROJECT, kind))
            .await
            .expect("filing");
    }
    assert!(h.gate(PROJECT).await.complete);
    let head = h.backlog(0).await.len() as u64;
    assert_eq!(head, 6);

    let g = h.declare("d-1", PROJECT, true).await;
    assert!(g.civil_air_defense_required);
    assert!(!g.complete);
    assert_eq!(g.missing, [CAD]);
    assert_eq!(h.gate(PROJECT).await, g);
    let after_declare = h.backlog(head).await;
    assert_eq!(kinds_of(&after_declare), ["GateChanged"]);
    assert_eq!(after_declare[0].sequence, head + 1);
    assert_eq!(gate_in(&after_declare[0]), &g);

    // The same declaration again (a new request) changes nothing and says nothing.
    let same = h.declare("d-2", PROJECT, true).await;
    assert_eq!(same, g);
    assert!(h.backlog(head + 1).await.is_empty());
    assert_eq!(h.count("requirements").await, 1);

    let r = h
        .record(filing("f-cad", PROJECT, CAD))
        .await
        .expect("人防验收");
    let g = r.gate.expect("gate");
    assert!(g.complete);
    assert!(g.missing.is_empty());
    let kinds: Vec<i32> = g.filings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [P, C, CAD, CS]);
    let tail = h.backlog(head + 1).await;
    assert_eq!(kinds_of(&tail), ["FilingRecorded", "GateChanged"]);
    assert!(gate_in(&tail[1]).complete);
}

#[tokio::test]
async fn first_declaration_always_announces_the_gate() {
    let h = start().await;
    let g = h.declare("d-1", PROJECT, false).await;
    assert!(!g.complete);
    assert!(!g.civil_air_defense_required);
    assert_eq!(g.missing, [P, C, CS]);
    let events = h.backlog(0).await;
    assert_eq!(kinds_of(&events), ["GateChanged"]);
    assert_eq!(gate_in(&events[0]), &g);

    // Required, then not required again: each flip is a change.
    let g = h.declare("d-2", PROJECT, true).await;
    assert_eq!(g.missing, [P, C, CAD, CS]);
    let g = h.declare("d-3", PROJECT, false).await;
    assert_eq!(g.missing, [P, C, CS]);
    assert_eq!(kinds_of(&h.backlog(0).await).len(), 3);
    let stored: i64 = sqlx::query_scalar(
        "SELECT civil_air_defense_required FROM acceptance.requirements WHERE project_id = $1",
    )
    .bind(PROJECT)
    .fetch_one(h.db.pool())
    .await
    .expect("requirement row");
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_new_filing_of_a_recorded_kind_is_kept_and_the_latest_counts() {
    let h = start().await;
    let first = h.record(filing("f-1", PROJECT, P)).await.expect("first");
    let mut again = filing("f-2", PROJECT, P);
    again.document_number = "垣规核〔2026〕2号".into();
    again.completed_on = "2026-10-20".into();
    again.documents = vec![Document {
        name: "规划核实意见书（更正）".into(),
        sha256: sha(999),
    }];
    let second = h.record(again).await.expect("second");
    let g = second.gate.expect("gate");
    assert_eq!(g.filings.len(), 1);
    let latest = &g.filings[0];
    assert_eq!(Some(latest), second.filing.as_ref());
    assert_ne!(latest.filing_id, first.filing.expect("filing").filing_id);
    assert_eq!(latest.document_number, "垣规核〔2026〕2号");
    assert_eq!(latest.documents.len(), 1);
    assert_eq!(h.gate(PROJECT).await, g);

    // History is kept: both filings and all their documents are stored.
    assert_eq!(h.count("filings").await, 2);
    assert_eq!(h.count("filing_documents").await, 3);
    // The second filing did not move the gate: no second GateChanged.
    assert_eq!(
        kinds_of(&h.backlog(0).await),
        ["FilingRecorded", "GateChanged", "FilingRecorded"]
    );
}

#[tokio::test]
async fn document_number_is_optional_except_for_completion_filings() {
    let h = start().await;
    let mut planning = filing("f-1", PROJECT, P);
    planning.document_number.clear();
    let r = h.record(planning).await.expect("planning without a number");
    assert_eq!(r.filing.expect("filing").document_number, "");
    assert_eq!(h.gate(PROJECT).await.filings[0].document_number, "");
}

// === validation ===

#[tokio::test]
async fn completion_filing_without_document_number_names_document_number() {
    let h = start().await;
    let mut req = filing("f-1", PROJECT, C);
    req.document_number.clear();
    assert_invalid(h.record(req).await, &["document_number"]);
    h.assert_nothing_written().await;
}

#[tokio::test]
async fn bad_sha256_names_the_document() {
    let h = start().await;
    let mut req = filing("f-1", PROJECT, P);
    req.documents[0].sha256 = "not-a-digest".into();
    let status = h.record(req).await.expect_err("bad digest");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&status), ["documents[0].sha256"]);
    assert!(
        status.message().contains("documents[0].sha256"),
        "{status:?}"
    );
    h.assert_nothing_written().await;
}

#[tokio::test]
async fn future_completed_on_is_rejected() {
    let h = start().await;
    let tomorrow = today_in_china().next_day().expect("a tomorrow");
    let mut req = filing("f-1", PROJECT, CS);
    req.completed_on = tongjiao_domain::format_date(tomorrow);
    assert_invalid(h.record(req).await, &["completed_on"]);
    h.assert_nothing_written().await;

    // Today (China time) is fine.
    let mut req = filing("f-2", PROJECT, CS);
    req.completed_on = tongjiao_domain::format_date(today_in_china());
    h.record(req).await.expect("done today");
}

#[tokio::test]
async fn each_invalid_field_is_named_and_nothing_is_written() {
    let h = start().await;
    type Mutate = fn(&mut RecordFilingRequest);
    let cases: Vec<(&str, Mutate)> = vec![
        ("request_id", |r| r.request_id.clear()),
        ("request_id", |r| r.request_id = "has space".into()),
        ("project_id", |r| r.project_id.clear()),
        ("project_id", |r| r.project_id = "项目一".into()),
        ("kind", |r| r.kind = FilingKind::Unspecified as i32),
        ("kind", |r| r.kind = 42),
        ("document_number", |r| r.document_number = "号".repeat(65)),
        ("document_number", |r| r.document_number = "  ".into()),
        ("authority", |r| r.authority.clear()),
        ("authority", |r| r.authority = "局".repeat(101)),
        ("completed_on", |r| r.completed_on.clear()),
        ("completed_on", |r| r.completed_on = "2026/10/15".into()),
        ("completed_on", |r| r.completed_on = "2026-02-30".into()),
        ("completed_on", |r| r.completed_on = "2999-01-01".into()),
        ("documents", |r| r.documents.clear()),
        ("documents", |r| {
            r.documents = (0..51)
                .map(|i| Document {
                    name: format!("材料{i}"),
                    sha256: sha(i),
                })
                .collect()
        }),
        ("documents[0].name", |r| r.documents[0].name.clear()),
        ("documents[1].name", |r| {
            r.documents[1].name = "名".repeat(101)
        }),
        ("documents[0].sha256", |r| r.documents[0].sha256.clear()),
        ("documents[1].sha256", |r| {
            r.documents[1].sha256 = r.documents[0].sha256.to_ascii_uppercase()
        }),
    ];
    for (field, mutate) in cases {
        let mut req = filing("f-1", PROJECT, C);
        mutate(&mut req);
        let status = h.record(req).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(violation_fields(&status), [field], "{status:?}");
    }

    // Length limits are inclusive.
    let mut req = filing("f-ok", PROJECT, C);
    req.document_number = "号".repeat(64);
    req.authority = "局".repeat(100);
    req.documents[0].name = "名".repeat(100);
    h.record(req).await.expect("at the limits");
    assert_eq!(h.count("filings").await, 1);
    // Only the good one left a trace.
    assert_eq!(h.count("requests").await, 1);
    assert_eq!(h.count("events").await, 2);
}

#[tokio::test]
async fn every_violation_is_reported_at_once() {
    let h = start().await;
    let req = RecordFilingRequest {
        request_id: String::new(),
        project_id: "bad id".into(),
        kind: C,
        document_number: String::new(),
        authority: String::new(),
        completed_on: "tomorrow".into(),
        documents: vec![
            Document {
                name: "a".into(),
                sha256: sha(1),
            },
            Document {
                name: String::new(),
                sha256: "xyz".into(),
            },
            Document {
                name: "c".into(),
                sha256: sha(1),
            },
        ],
    };
    assert_invalid(
        h.record(req).await,
        &[
            "request_id",
            "project_id",
            "document_number",
            "authority",
            "completed_on",
            "documents[1].name",
            "documents[1].sha256",
            "documents[2].sha256",
        ],
    );
    h.assert_nothing_written().await;
}

#[tokio::test]
async fn declare_and_get_validate_their_fields() {
    let h = start().await;
    let token = h.token(Role::Registrar);
    let r = h
        .client
        .clone()
        .declare_requirements(authed(
            DeclareRequirementsRequest {
                request_id: String::new(),
                project_id: "x".repeat(65),
                civil_air_defense_required: true,
            },
            &token,
        ))
        .await;
    assert_invalid(r, &["request_id", "project_id"]);
    let r = h
        .client
        .clone()
        .get_gate_status(authed(
            GetGateStatusRequest {
                project_id: String::new(),
            },
            &token,
        ))
        .await;
    assert_invalid(r, &["project_id"]);
    h.assert_nothing_written().await;
}

// === auth ===

#[tokio::test]
async fn wrong_role_is_permission_denied_and_writes_nothing() {
    let h = start().await;
    for role in [Role::Developer, Role::TaxBureau, Role::Clerk, Role::Auditor] {
        let token = h.token(role);
        let s = h
            .client
            .clone()
            .record_filing(authed(filing("f-1", PROJECT, P), &token))
            .await
            .expect_err("record");
        assert_eq!(s.code(), Code::PermissionDenied, "{role}: {s:?}");
        let s = h
            .client
            .clone()
            .declare_requirements(authed(
                DeclareRequirementsRequest {
                    request_id: "d-1".into(),
                    project_id: PROJECT.into(),
                    civil_air_defense_required: true,
                },
                &token,
            ))
            .await
            .expect_err("declare");
        assert_eq!(s.code(), Code::PermissionDenied, "{role}: {s:?}");
    }
    for role in [Role::Developer, Role::TaxBureau] {
        let s = h
            .client
            .clone()
            .get_gate_status(authed(
                GetGateStatusRequest {
                    project_id: PROJECT.into(),
                },
                &h.token(role),
            ))
            .await
            .expect_err("get");
        assert_eq!(s.code(), Code::PermissionDenied, "{role}: {s:?}");
    }
    for role in [Role::Developer, Role::TaxBureau, Role::Clerk] {
        let s = h
            .client
            .clone()
            .watch_acceptance_events(authed(
                WatchAcceptanceEventsRequest {
                    after_sequence: 0,
                    backlog_only: true,
                },
                &h.token(role),
            ))
            .await
            .expect_err("watch");
        assert_eq!(s.code(), Code::PermissionDenied, "{role}: {s:?}");
    }
    h.assert_nothing_written().await;

    // The allowed roles get through.
    for role in [
        Role::HousingBureau,
        Role::Registrar,
        Role::Clerk,
        Role::Auditor,
    ] {
        h.client
            .clone()
            .get_gate_status(authed(
                GetGateStatusRequest {
                    project_id: PROJECT.into(),
                },
                &h.token(role),
            ))
            .await
            .unwrap_or_else(|e| panic!("{role} may read the gate: {e:?}"));
    }
    h.client
        .clone()
        .record_filing(authed(
            filing("f-hb", PROJECT, P),
            &h.token(Role::HousingBureau),
        ))
        .await
        .expect("housing bureau may record");
}

#[tokio::test]
async fn no_token_is_unauthenticated() {
    let h = start().await;
    let mut c = h.client.clone();
    let s = c
        .record_filing(filing("f-1", PROJECT, P))
        .await
        .expect_err("record");
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = c
        .declare_requirements(DeclareRequirementsRequest {
            request_id: "d-1".into(),
            project_id: PROJECT.into(),
            civil_air_defense_required: false,
        })
        .await
        .expect_err("declare");
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = c
        .get_gate_status(GetGateStatusRequest {
            project_id: PROJECT.into(),
        })
        .await
        .expect_err("get");
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = c
        .watch_acceptance_events(WatchAcceptanceEventsRequest {
            after_sequence: 0,
            backlog_only: true,
        })
        .await
        .expect_err("watch");
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = c
        .get_gate_status(authed(
            GetGateStatusRequest {
                project_id: PROJECT.into(),
            },
            "not-a-jwt",
        ))
        .await
        .expect_err("garbage token");
    assert_eq!(s.code(), Code::Unauthenticated);
    h.assert_nothing_written().await;
}

// === idempotency ===

#[tokio::test]
async fn retry_with_the_same_request_id_replays_the_first_reply() {
    let h = start().await;
    let first = h.record(filing("f-1", PROJECT, P)).await.expect("first");
    let again = h.record(filing("f-1", PROJECT, P)).await.expect("retry");
    assert_eq!(first, again);
    assert_eq!(h.count("filings").await, 1);
    assert_eq!(h.count("filing_documents").await, 2);
    assert_eq!(h.count("events").await, 2);
    assert_eq!(h.count("requests").await, 1);

    let d1 = h.declare("d-1", PROJECT, true).await;
    let d2 = h.declare("d-1", PROJECT, true).await;
    assert_eq!(d1, d2);
    assert_eq!(h.count("events").await, 3);
    assert_eq!(h.count("requests").await, 2);
}

#[tokio::test]
async fn same_request_id_with_a_different_payload_is_already_exists() {
    let h = start().await;
    h.record(filing("f-1", PROJECT, P)).await.expect("first");
    let mut other = filing("f-1", PROJECT, P);
    other.authority = "垣曲县自然资源局".into();
    let s = h.record(other).await.expect_err("reused id");
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");

    // A request id used by RecordFiling cannot be reused by DeclareRequirements either.
    let s = h
        .client
        .clone()
        .declare_requirements(authed(
            DeclareRequirementsRequest {
                request_id: "f-1".into(),
                project_id: PROJECT.into(),
                civil_air_defense_required: true,
            },
            &h.token(Role::Registrar),
        ))
        .await
        .expect_err("reused id across methods");
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");

    assert_eq!(h.count("filings").await, 1);
    assert_eq!(h.count("requirements").await, 0);
    assert_eq!(h.count("events").await, 2);
}

// === feed ===

#[tokio::test]
async fn feed_resumes_after_a_sequence_and_follows_new_events() {
    let h = start().await;
    h.record(filing("f-1", PROJECT, P)).await.expect("p");
    h.record(filing("f-2", "YQ-2026-002", P)).await.expect("p2");
    let all = h.backlog(0).await;
    assert_eq!(all.len(), 4);
    let resumed = h.backlog(2).await;
    assert_eq!(resumed, all[2..].to_vec());
    assert_eq!(resumed[0].project_id, "YQ-2026-002");
    assert!(h.backlog(4).await.is_empty());
    assert!(h.backlog(1_000).await.is_empty());

    // Following: the stream stays open and delivers what commits later.
    let mut stream = h
        .client
        .clone()
        .watch_acceptance_events(authed(
            WatchAcceptanceEventsRequest {
                after_sequence: 3,
                backlog_only: false,
            },
            &h.token(Role::Registrar),
        ))
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(next_event(&mut stream).await.map(|e| e.sequence), Some(4));
    h.record(filing("f-3", PROJECT, C)).await.expect("c");
    let e5 = next_event(&mut stream).await.expect("open stream");
    let e6 = next_event(&mut stream).await.expect("open stream");
    assert_eq!((e5.sequence, e6.sequence), (5, 6));
    assert_eq!(kinds_of(&[e5, e6]), ["FilingRecorded", "GateChanged"]);
}

async fn next_event(
    stream: &mut tonic::Streaming<WatchAcceptanceEventsResponse>,
) -> Option<AcceptanceEvent> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("event within 10 s")
        .expect("feed item")
        .map(|r| r.event.expect("event"))
}

#[tokio::test]
async fn concurrent_filings_of_one_project_move_the_gate_consistently() {
    let h = start().await;
    let mut tasks = Vec::new();
    for (i, kind) in [P, C, CS, P, C, CS, P, C].into_iter().enumerate() {
        let mut client = h.client.clone();
        let token = h.token(Role::Registrar);
        let mut req = filing(&format!("f-{i}"), PROJECT, kind);
        req.documents[0].sha256 = sha(1_000 + i as u32);
        tasks.push(tokio::spawn(async move {
            client.record_filing(authed(req, &token)).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("filing");
    }
    let events = h.backlog(0).await;
    let gates: Vec<&GateStatus> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::GateChanged(g)) => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(
        events.len() - gates.len(),
        8,
        "one FilingRecorded per filing"
    );
    let missing: Vec<usize> = gates.iter().map(|g| g.missing.len()).collect();
    assert_eq!(missing, [2, 1, 0], "each GateChanged removes one kind");
    assert!(gates[2].complete);
    let g = h.gate(PROJECT).await;
    assert!(g.complete);
    assert_eq!(g.filings.len(), 3);
    assert_eq!(h.count("filings").await, 8);
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<u64>>());
}
