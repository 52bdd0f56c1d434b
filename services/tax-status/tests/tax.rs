//! Integration tests of the tax-status service against a real PostgreSQL: each test gets its own database
//! and server, and talks to it over gRPC with signed tokens.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use futures::StreamExt;
use prost_types::Timestamp;
use tongjiao_auth::Role;
use tongjiao_domain::{ResidentId, credit_code_check_char, resident_id_check_char};
use tongjiao_proto::tax::{
    AckStatus, DeedTaxPaid, DeveloperTaxCleared, GetBuyerTaxStatusRequest,
    GetBuyerTaxStatusResponse, GetProjectTaxStatusRequest, GetProjectTaxStatusResponse,
    GetUnitTaxStatusRequest, GetUnitTaxStatusResponse, LandFeesPaid, MaintenanceFundDeposited,
    PushCompletionsRequest, PushCompletionsResponse, TaxEvent, WatchTaxEventsRequest,
    WatchTaxEventsResponse, push_completions_request::Payload, tax_event,
    tax_status_service_client::TaxStatusServiceClient,
};
use tongjiao_server::ServiceSet;
use tongjiao_store::{Db, EventLog, Schema, sqlx};
use tongjiao_testkit::{RunningServer, TestKeys, authed, fresh_database, fresh_sqlite_dir, spawn};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

const REUSED: &str = "event_id reused with different content (事件编号重复但内容不同)";

// === fixtures ===

struct Env {
    url: String,
    db: Db,
    keys: TestKeys,
    server: RunningServer,
    channel: Channel,
}

async fn start() -> Env {
    start_on(fresh_database().await, TestKeys::new()).await
}

/// The service on the database at `url` (PostgreSQL or SQLite), its migrations applied.
async fn start_on(url: String, keys: TestKeys) -> Env {
    let (db, server) = serve_on(&url, &keys).await;
    let channel = server.channel().await;
    Env {
        url,
        db,
        keys,
        server,
        channel,
    }
}

async fn serve_on(url: &str, keys: &TestKeys) -> (Db, RunningServer) {
    let db = Db::connect(url, 5).await.expect("connect test database");
    let svc = tongjiao_tax_status::build(db.clone())
        .await
        .expect("build tax-status");
    let mut set = ServiceSet::new();
    svc.register(&mut set, keys.authenticator());
    (db, spawn(set).await)
}

impl Env {
    async fn client(&self) -> TaxStatusServiceClient<Channel> {
        TaxStatusServiceClient::new(self.channel.clone())
    }

    fn token(&self, role: Role) -> String {
        let county = matches!(role, Role::Clerk | Role::Registrar).then_some("140827");
        self.keys.token(role, "tester", None, county)
    }

    /// Pushes `reqs` on one stream as the tax bureau and returns the acks, checking there is one per
    /// request, in request order.
    async fn push(&self, reqs: Vec<PushCompletionsRequest>) -> Vec<PushCompletionsResponse> {
        let ids: Vec<String> = reqs.iter().map(|r| r.event_id.clone()).collect();
        let acks = self
            .try_push(reqs, Role::TaxBureau)
            .await
            .expect("push completions");
        let acked: Vec<String> = acks.iter().map(|a| a.event_id.clone()).collect();
        assert_eq!(acked, ids, "one ack per request, in request order");
        acks
    }

    async fn try_push(
        &self,
        reqs: Vec<PushCompletionsRequest>,
        role: Role,
    ) -> Result<Vec<PushCompletionsResponse>, Status> {
        let mut client = self.client().await;
        let mut acks = client
            .push_completions(authed(tokio_stream::iter(reqs), &self.token(role)))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(ack) = acks.next().await {
            out.push(ack?);
        }
        Ok(out)
    }

    async fn unit(&self, unit_code: &str, role: Role) -> Result<GetUnitTaxStatusResponse, Status> {
        let req = GetUnitTaxStatusRequest {
            unit_code: unit_code.to_owned(),
        };
        Ok(self
            .client()
            .await
            .get_unit_tax_status(authed(req, &self.token(role)))
            .await?
            .into_inner())
    }

    async fn buyer(&self, buyer_id: &str, role: Role) -> Result<GetBuyerTaxStatusResponse, Status> {
        let req = GetBuyerTaxStatusRequest {
            buyer_id: buyer_id.to_owned(),
        };
        Ok(self
            .client()
            .await
            .get_buyer_tax_status(authed(req, &self.token(role)))
            .await?
            .into_inner())
    }

    async fn project(
        &self,
        project_id: &str,
        role: Role,
    ) -> Result<GetProjectTaxStatusResponse, Status> {
        let req = GetProjectTaxStatusRequest {
            project_id: project_id.to_owned(),
        };
        Ok(self
            .client()
            .await
            .get_project_tax_status(authed(req, &self.token(role)))
            .await?
            .into_inner())
    }

    /// The whole backlog of the feed after `after`, as `role`.
    async fn feed(&self, after: u64, role: Role) -> Vec<TaxEvent> {
        let req = WatchTaxEventsRequest {
            after_sequence: after,
            backlog_only: true,
        };
        let mut stream = self
            .client()
            .await
            .watch_tax_events(authed(req, &self.token(role)))
            .await
            .expect("watch")
            .into_inner();
        let mut out = Vec::new();
        while let Some(item) = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("backlog_only feed ends")
        {
            out.push(item.expect("feed item").event.expect("event"));
        }
        out
    }

    /// Rows in each fact table plus the feed head: what "nothing written" compares.
    async fn written(&self) -> Vec<i64> {
        let mut counts = Vec::new();
        for table in [
            "tax.deed_tax",
            "tax.maintenance_fund",
            "tax.developer_tax",
            "tax.land_fees",
            "tax.events",
        ] {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"
            )))
            .fetch_one(self.db.pool())
            .await
            .expect("count rows");
            counts.push(n);
        }
        counts.push(
            EventLog::new(Schema::Tax)
                .head(&self.db)
                .await
                .expect("head"),
        );
        counts
    }
}

fn resident(n: u32) -> String {
    let first17 = format!(
        "140827199{}{:02}{:02}{:03}",
        n / 10_000 % 10,
        1 + n / 1000 % 10,
        1 + n / 100 % 10,
        n % 1000
    );
    let c = resident_id_check_char(&first17).expect("17 digits");
    format!("{first17}{c}")
}

/// The same number with a wrong check character.
fn wrong_check(id: &str) -> String {
    let (first17, c) = id.split_at(17);
    format!("{first17}{}", if c == "0" { '1' } else { '0' })
}

fn unit(n: u32) -> String {
    format!("140827001002GB00012F{:04}{:04}", 1 + n / 10_000, n % 10_000)
}

fn parcel(n: u32) -> String {
    format!("140827001002GB{:05}", n + 1)
}

fn credit(n: u32) -> String {
    let first17 = format!("91140827{n:09}");
    let c = credit_code_check_char(&first17).expect("17 symbols");
    format!("{first17}{c}")
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn deed(
    id: &str,
    unit_code: &str,
    buyer_id: &str,
    amount_fen: i64,
    voucher: &str,
) -> PushCompletionsRequest {
    PushCompletionsRequest {
        event_id: id.to_owned(),
        occurred_at: at(1_700_000_000),
        payload: Some(Payload::DeedTaxPaid(DeedTaxPaid {
            unit_code: unit_code.to_owned(),
            buyer_id: buyer_id.to_owned(),
            amount_fen,
            voucher_number: voucher.to_owned(),
            relieved: false,
            relief_basis: String::new(),
        })),
    }
}

fn relieved(id: &str, unit_code: &str, buyer_id: &str) -> PushCompletionsRequest {
    PushCompletionsRequest {
        event_id: id.to_owned(),
        occurred_at: at(1_700_000_000),
        payload: Some(Payload::DeedTaxPaid(DeedTaxPaid {
            unit_code: unit_code.to_owned(),
            buyer_id: buyer_id.to_owned(),
            amount_fen: 0,
            voucher_number: format!("JM-{id}"),
            relieved: true,
            relief_basis: "财税〔2016〕23号 家庭唯一住房减免".to_owned(),
        })),
    }
}

fn fund(id: &str, unit_code: &str, amount_fen: i64, receipt: &str) -> PushCompletionsRequest {
    PushCompletionsRequest {
        event_id: id.to_owned(),
        occurred_at: at(1_700_000_100),
        payload: Some(Payload::MaintenanceFundDeposited(
            MaintenanceFundDeposited {
                unit_code: unit_code.to_owned(),
                amount_fen,
                receipt_number: receipt.to_owned(),
            },
        )),
    }
}

fn developer(
    id: &str,
    project_id: &str,
    credit_code: &str,
    voucher: &str,
) -> PushCompletionsRequest {
    PushCompletionsRequest {
        event_id: id.to_owned(),
        occurred_at: at(1_700_000_200),
        payload: Some(Payload::DeveloperTaxCleared(DeveloperTaxCleared {
            project_id: project_id.to_owned(),
            developer_credit_code: credit_code.to_owned(),
            voucher_number: voucher.to_owned(),
        })),
    }
}

fn land(id: &str, parcel_code: &str, amount_fen: i64, voucher: &str) -> PushCompletionsRequest {
    PushCompletionsRequest {
        event_id: id.to_owned(),
        occurred_at: at(1_700_000_300),
        payload: Some(Payload::LandFeesPaid(LandFeesPaid {
            parcel_code: parcel_code.to_owned(),
            amount_fen,
            voucher_number: voucher.to_owned(),
        })),
    }
}

fn with_time(mut r: PushCompletionsRequest, at_: Option<Timestamp>) -> PushCompletionsRequest {
    r.occurred_at = at_;
    r
}

fn status(a: &PushCompletionsResponse) -> AckStatus {
    AckStatus::try_from(a.status).expect("known ack status")
}

/// Each ack's status and sequence, in order.
fn outcomes(acks: &[PushCompletionsResponse]) -> Vec<(AckStatus, u64)> {
    acks.iter().map(|a| (status(a), a.sequence)).collect()
}

fn bad_fields(s: &Status) -> Vec<String> {
    s.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// A reply with the wall-clock recording times removed, for comparing two databases.
fn unit_without_times(mut r: GetUnitTaxStatusResponse) -> GetUnitTaxStatusResponse {
    for d in &mut r.deed_taxes {
        assert!(d.recorded_at.is_some(), "recorded_at is set");
        d.recorded_at = None;
    }
    r
}

fn buyer_without_times(mut r: GetBuyerTaxStatusResponse) -> GetBuyerTaxStatusResponse {
    for d in &mut r.deed_taxes {
        assert!(d.recorded_at.is_some(), "recorded_at is set");
        d.recorded_at = None;
    }
    r
}

/// Deterministic xorshift, so a failing shuffle can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

// === push: happy path, durability, acks ===

#[tokio::test]
async fn push_records_every_kind_and_queries_answer() {
    let env = start().await;
    let (u1, u2) = (unit(1), unit(2));
    let (b1, b2) = (resident(1), resident(2));
    let reqs = vec![
        deed("T-1", &u1, &b1, 1_234_500, "QS-0001"),
        relieved("T-2", &u1, &b2),
        fund("T-3", &u1, 800_000, "WX-0001"),
        developer("T-4", "P-YQ-01", &credit(7), "KF-0001"),
        land("T-5", &parcel(3), 99_000_000, "TD-0001"),
        deed("T-6", &u2, &b1, 500, "QS-0002"),
    ];
    let acks = env.push(reqs).await;
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(status(a), AckStatus::Accepted, "{a:?}");
        assert_eq!(a.sequence, i as u64 + 1);
        assert!(a.error.is_empty());
    }

    let u = env.unit(&u1, Role::Registrar).await.expect("unit status");
    assert_eq!(u.unit_code, u1);
    assert_eq!(u.deed_taxes.len(), 2);
    let by_buyer: HashMap<&str, _> = u
        .deed_taxes
        .iter()
        .map(|d| (d.buyer_id.as_str(), d))
        .collect();
    let d1 = by_buyer[b1.as_str()];
    assert_eq!(
        (d1.amount_fen, d1.voucher_number.as_str(), d1.relieved),
        (1_234_500, "QS-0001", false)
    );
    assert!(d1.recorded_at.is_some());
    let d2 = by_buyer[b2.as_str()];
    assert_eq!((d2.amount_fen, d2.relieved), (0, true));
    assert!(u.maintenance_fund_deposited);
    assert_eq!(u.maintenance_fund_fen, 800_000);
    assert_eq!(u.maintenance_fund_receipt, "WX-0001");

    let u2s = env.unit(&u2, Role::TaxBureau).await.expect("unit 2");
    assert_eq!(u2s.deed_taxes.len(), 1);
    assert!(!u2s.maintenance_fund_deposited);
    assert_eq!(
        (
            u2s.maintenance_fund_fen,
            u2s.maintenance_fund_receipt.as_str()
        ),
        (0, "")
    );

    let b = env.buyer(&b1, Role::Registrar).await.expect("buyer status");
    let units: Vec<&str> = b.deed_taxes.iter().map(|d| d.unit_code.as_str()).collect();
    assert_eq!(units, vec![u1.as_str(), u2.as_str()]);

    let p = env
        .project("P-YQ-01", Role::Clerk)
        .await
        .expect("project status");
    assert!(p.developer_tax_cleared);
    assert_eq!(
        (p.project_id.as_str(), p.voucher_number.as_str()),
        ("P-YQ-01", "KF-0001")
    );
    let none = env
        .project("P-OTHER", Role::Auditor)
        .await
        .expect("other project");
    assert!(!none.developer_tax_cleared);
    assert!(none.voucher_number.is_empty());

    assert_eq!(env.written().await, vec![3, 1, 1, 1, 6, 6]);

    // The feed carries the bureau's event ids and the same (normalised) payloads.
    let feed = env.feed(0, Role::Registrar).await;
    let ids: Vec<&str> = feed.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, vec!["T-1", "T-2", "T-3", "T-4", "T-5", "T-6"]);
    assert!(feed.iter().all(|e| e.recorded_at.is_some()));
    match &feed[4].payload {
        Some(tax_event::Payload::LandFeesPaid(l)) => {
            assert_eq!(
                (l.parcel_code.as_str(), l.amount_fen),
                (parcel(3).as_str(), 99_000_000)
            );
        }
        other => panic!("expected land fees, got {other:?}"),
    }
}

#[tokio::test]
async fn acks_are_durable_and_survive_a_restart() {
    let mut env = start().await;
    let b = resident(9);
    // Each ACCEPTED ack is visible to a separate reader as soon as it arrives.
    for i in 0..3u32 {
        let u = unit(100 + i);
        let acks = env
            .push(vec![deed(&format!("D-{i}"), &u, &b, 100, "V")])
            .await;
        assert_eq!(status(&acks[0]), AckStatus::Accepted);
        let s = env.unit(&u, Role::Registrar).await.expect("unit");
        assert_eq!(s.deed_taxes.len(), 1, "acknowledged fact is committed");
    }
    let before = env.written().await;
    let Env {
        url, keys, server, ..
    } = env;
    server.stop().await;
    env = start_on(url, keys).await;
    assert_eq!(env.written().await, before);
    let s = env.buyer(&b, Role::Registrar).await.expect("buyer");
    assert_eq!(s.deed_taxes.len(), 3);
    // And after the restart the same events are still known.
    let acks = env.push(vec![deed("D-1", &unit(101), &b, 100, "V")]).await;
    assert_eq!(status(&acks[0]), AckStatus::Duplicate);
    assert_eq!(acks[0].sequence, 2);
}

#[tokio::test]
async fn acks_come_one_per_request_in_order_across_batches() {
    let env = start().await;
    let mut reqs = Vec::new();
    for i in 0..3000u32 {
        if i % 500 == 250 {
            reqs.push(fund(&format!("X-{i}"), &unit(i), 0, "R")); // invalid: amount 0
        } else if i % 3 == 0 {
            reqs.push(fund(
                &format!("F-{i}"),
                &unit(i),
                10_000 + i64::from(i),
                "R",
            ));
        } else {
            reqs.push(deed(&format!("D-{i}"), &unit(i), &resident(i), 100, "V"));
        }
    }
    // A repeat of an earlier event far down the stream.
    reqs.push(deed("D-1", &unit(1), &resident(1), 100, "V"));
    let acks = env.push(reqs).await; // asserts order and count
    let mut last = 0;
    for a in &acks[..3000] {
        if a.event_id.starts_with('X') {
            assert_eq!(status(a), AckStatus::Rejected);
            assert_eq!(a.sequence, 0);
        } else {
            assert_eq!(status(a), AckStatus::Accepted, "{a:?}");
            assert_eq!(a.sequence, last + 1, "sequences follow the stream order");
            last = a.sequence;
        }
    }
    assert_eq!(status(&acks[3000]), AckStatus::Duplicate);
    assert_eq!(acks[3000].sequence, acks[1].sequence);
    assert_eq!(last, 2994);
}

// === validation ===

#[tokio::test]
async fn every_invalid_field_is_rejected_and_nothing_is_written() {
    let env = start().await;
    let u = unit(1);
    let b = resident(1);
    let long = "x".repeat(65);
    let mut cases: Vec<(&str, PushCompletionsRequest)> = vec![
        ("event_id", deed("", &u, &b, 1, "V")),
        ("event_id", deed(&"e".repeat(65), &u, &b, 1, "V")),
        ("event_id", deed("bad\u{7}id", &u, &b, 1, "V")),
        ("event_id", deed("事件-1", &u, &b, 1, "V")),
        (
            "payload",
            PushCompletionsRequest {
                event_id: "E-payload".into(),
                occurred_at: None,
                payload: None,
            },
        ),
        (
            "occurred_at",
            with_time(
                deed("E-time", &u, &b, 1, "V"),
                Some(Timestamp {
                    seconds: 1,
                    nanos: -1,
                }),
            ),
        ),
        (
            "deed_tax_paid.unit_code",
            deed("E-1", "140827001002GB00012F0003010", &b, 1, "V"),
        ),
        (
            "deed_tax_paid.unit_code",
            deed("E-2", "140827001002GB00012X00030101", &b, 1, "V"),
        ),
        (
            "deed_tax_paid.buyer_id",
            deed("E-3", &u, "110105194912310021", 1, "V"),
        ),
        ("deed_tax_paid.buyer_id", deed("E-4", &u, "", 1, "V")),
        ("deed_tax_paid.amount_fen", deed("E-5", &u, &b, -1, "V")),
        ("deed_tax_paid.amount_fen", deed("E-6", &u, &b, 0, "V")),
        ("deed_tax_paid.voucher_number", deed("E-7", &u, &b, 1, "")),
        (
            "deed_tax_paid.voucher_number",
            deed("E-8", &u, &b, 1, &long),
        ),
        (
            "maintenance_fund_deposited.unit_code",
            fund("E-11", "14082700100", 1, "R"),
        ),
        (
            "maintenance_fund_deposited.amount_fen",
            fund("E-12", &u, 0, "R"),
        ),
        (
            "maintenance_fund_deposited.amount_fen",
            fund("E-13", &u, -5, "R"),
        ),
        (
            "maintenance_fund_deposited.receipt_number",
            fund("E-14", &u, 1, ""),
        ),
        (
            "maintenance_fund_deposited.receipt_number",
            fund("E-15", &u, 1, &long),
        ),
        (
            "developer_tax_cleared.project_id",
            developer("E-21", "P 1", &credit(1), "K"),
        ),
        (
            "developer_tax_cleared.project_id",
            developer("E-22", "", &credit(1), "K"),
        ),
        (
            "developer_tax_cleared.developer_credit_code",
            developer("E-23", "P-1", "91350100M000100Y44", "K"),
        ),
        (
            "developer_tax_cleared.voucher_number",
            developer("E-24", "P-1", &credit(1), ""),
        ),
        (
            "land_fees_paid.parcel_code",
            land("E-31", "140827001002GB0001", 1, "L"),
        ),
        (
            "land_fees_paid.parcel_code",
            land("E-32", "140827001002GB00000", 1, "L"),
        ),
        (
            "land_fees_paid.amount_fen",
            land("E-33", &parcel(1), 0, "L"),
        ),
        (
            "land_fees_paid.voucher_number",
            land("E-34", &parcel(1), 1, &long),
        ),
    ];
    // Relief: basis required when relieved, and at most 200 characters.
    let mut r = relieved("E-41", &u, &b);
    if let Some(Payload::DeedTaxPaid(d)) = &mut r.payload {
        d.relief_basis.clear();
    }
    cases.push(("deed_tax_paid.relief_basis", r));
    let mut r = relieved("E-42", &u, &b);
    if let Some(Payload::DeedTaxPaid(d)) = &mut r.payload {
        d.relief_basis = "减".repeat(201);
    }
    cases.push(("deed_tax_paid.relief_basis", r));

    let (fields, reqs): (Vec<&str>, Vec<PushCompletionsRequest>) = cases.into_iter().unzip();
    let acks = env.push(reqs).await;
    for (field, a) in fields.iter().zip(&acks) {
        assert_eq!(status(a), AckStatus::Rejected, "{field}: {a:?}");
        assert_eq!(a.sequence, 0);
        assert!(
            a.error.starts_with(&format!("{field}: ")) || a.error.contains(&format!("; {field}: ")),
            "error names {field}: {}",
            a.error
        );
        assert!(
            a.error.contains('('),
            "error carries the Chinese term: {}",
            a.error
        );
    }
    assert_eq!(
        env.written().await,
        vec![0; 6],
        "nothing written for rejected events"
    );
    assert!(env.feed(0, Role::Registrar).await.is_empty());

    // Several bad fields of one event are all named.
    let acks = env.push(vec![deed("", "x", "y", -1, "")]).await;
    for f in [
        "event_id",
        "deed_tax_paid.unit_code",
        "deed_tax_paid.buyer_id",
        "deed_tax_paid.amount_fen",
        "deed_tax_paid.voucher_number",
    ] {
        assert!(
            acks[0].error.contains(&format!("{f}: ")),
            "{f} in {}",
            acks[0].error
        );
    }
    // Resident ids never appear in the error text.
    let acks = env
        .push(vec![deed("E-51", &u, "110105194912310021", 1, "V")])
        .await;
    assert!(!acks[0].error.contains("110105194912310021"));
}

#[tokio::test]
async fn invalid_event_mid_stream_is_rejected_and_its_neighbours_accepted() {
    let env = start().await;
    let reqs = vec![
        deed("A-1", &unit(1), &resident(1), 100, "V1"),
        deed("A-2", &unit(2), &wrong_check(&resident(2)), 100, "V2"),
        deed("A-3", &unit(3), &resident(3), 100, "V3"),
    ];
    let acks = env.push(reqs).await;
    assert_eq!(status(&acks[0]), AckStatus::Accepted);
    assert_eq!(status(&acks[1]), AckStatus::Rejected);
    assert!(
        acks[1].error.starts_with("deed_tax_paid.buyer_id: "),
        "{}",
        acks[1].error
    );
    assert_eq!(status(&acks[2]), AckStatus::Accepted);
    assert_eq!(
        (acks[0].sequence, acks[1].sequence, acks[2].sequence),
        (1, 0, 2)
    );
    assert!(
        env.unit(&unit(2), Role::Registrar)
            .await
            .expect("unit 2")
            .deed_taxes
            .is_empty()
    );
    assert_eq!(env.written().await, vec![2, 0, 0, 0, 2, 2]);
    // A corrected resend of the rejected event is accepted.
    let acks = env
        .push(vec![deed("A-2", &unit(2), &resident(2), 100, "V2")])
        .await;
    assert_eq!(status(&acks[0]), AckStatus::Accepted);
    assert_eq!(acks[0].sequence, 3);
}

#[tokio::test]
async fn queries_reject_invalid_fields() {
    let env = start().await;
    let s = env
        .unit("140827001002GB00012F0003010", Role::Registrar)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&s), vec!["unit_code"]);
    let s = env
        .buyer("110105194912310021", Role::Registrar)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&s), vec!["buyer_id"]);
    assert!(!s.message().contains("110105194912310021"));
    let s = env.project("P/1", Role::Registrar).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&s), vec!["project_id"]);
    let s = env
        .client()
        .await
        .watch_tax_events(authed(
            WatchTaxEventsRequest {
                after_sequence: u64::MAX,
                backlog_only: true,
            },
            &env.token(Role::Registrar),
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&s), vec!["after_sequence"]);
    // Unknown but valid keys are simply unpaid.
    let u = env
        .unit(&unit(77), Role::Registrar)
        .await
        .expect("unknown unit");
    assert!(u.deed_taxes.is_empty() && !u.maintenance_fund_deposited);
    assert!(
        env.buyer(&resident(77), Role::Registrar)
            .await
            .expect("unknown buyer")
            .deed_taxes
            .is_empty()
    );
}

// === at-least-once: duplicates, reuse, order ===

#[tokio::test]
async fn duplicates_are_acknowledged_with_the_original_sequence_and_write_nothing() {
    let env = start().await;
    // A buyer whose id ends in X, so a lower-case x is a different spelling of the same id.
    let with_x = (0..)
        .map(resident)
        .find(|r| r.ends_with('X'))
        .expect("some id ends in X");
    let a = deed("DUP-A", &unit(1), &with_x, 100, "V1");
    let b = fund("DUP-B", &unit(1), 500, "R1");
    let first = env.push(vec![a.clone(), b.clone(), a.clone()]).await;
    assert_eq!(
        first
            .iter()
            .map(|x| (status(x), x.sequence))
            .collect::<Vec<_>>(),
        vec![
            (AckStatus::Accepted, 1),
            (AckStatus::Accepted, 2),
            (AckStatus::Duplicate, 1)
        ]
    );
    let before = env.written().await;
    // Redelivered on a new stream, in another order, with a normalised-equal buyer id (lower-case x).
    let mut a_lower = a.clone();
    if let Some(Payload::DeedTaxPaid(d)) = &mut a_lower.payload {
        d.buyer_id = d.buyer_id.to_lowercase();
        d.unit_code = d.unit_code.to_lowercase();
    }
    let again = env
        .push(vec![b.clone(), a_lower, a.clone(), b.clone()])
        .await;
    assert_eq!(
        again
            .iter()
            .map(|x| (status(x), x.sequence))
            .collect::<Vec<_>>(),
        vec![
            (AckStatus::Duplicate, 2),
            (AckStatus::Duplicate, 1),
            (AckStatus::Duplicate, 1),
            (AckStatus::Duplicate, 2)
        ]
    );
    assert!(again.iter().all(|x| x.error.is_empty()));
    assert_eq!(env.written().await, before, "duplicates write nothing");
    assert_eq!(env.feed(0, Role::Registrar).await.len(), 2);

    // Beside a new event, in one batch: the new one's fact is written, the resent ones' neither
    // doubled nor lost.
    let c = deed("DUP-C", &unit(2), &with_x, 100, "V2");
    let mixed = env.push(vec![c, a, b]).await;
    assert_eq!(
        mixed
            .iter()
            .map(|x| (status(x), x.sequence))
            .collect::<Vec<_>>(),
        vec![
            (AckStatus::Accepted, 3),
            (AckStatus::Duplicate, 1),
            (AckStatus::Duplicate, 2)
        ]
    );
    let mut expected = before.clone();
    expected[0] += 1; // the new 契税
    expected[4] += 1; // its feed event
    expected[5] += 1; // the feed head
    assert_eq!(
        env.written().await,
        expected,
        "one fact per recorded event: the resent ones neither doubled nor lost"
    );
    let u1 = env.unit(&unit(1), Role::Registrar).await.expect("unit");
    assert_eq!((u1.deed_taxes.len(), u1.maintenance_fund_fen), (1, 500));
}

#[tokio::test]
async fn event_id_reused_with_different_content_is_rejected() {
    let env = start().await;
    let u = unit(5);
    let b = resident(5);
    let acks = env.push(vec![deed("R-1", &u, &b, 100, "V1")]).await;
    assert_eq!(status(&acks[0]), AckStatus::Accepted);
    let before = env.written().await;
    let acks = env
        .push(vec![
            deed("R-1", &u, &b, 999, "V1"),
            with_time(deed("R-1", &u, &b, 100, "V1"), at(1)),
            deed("R-1", &u, &b, 100, "V1"),
        ])
        .await;
    assert_eq!(status(&acks[0]), AckStatus::Rejected);
    assert_eq!(acks[0].error, REUSED);
    assert_eq!(acks[0].sequence, 0);
    assert_eq!(
        status(&acks[1]),
        AckStatus::Rejected,
        "occurred_at is content too"
    );
    assert_eq!(
        (status(&acks[2]), acks[2].sequence),
        (AckStatus::Duplicate, 1)
    );
    assert_eq!(env.written().await, before);
    let s = env.unit(&u, Role::Registrar).await.expect("unit");
    assert_eq!(s.deed_taxes[0].amount_fen, 100);

    // Within one stream before anything is recorded: the first content wins.
    let acks = env
        .push(vec![
            fund("R-2", &u, 10, "W1"),
            fund("R-2", &u, 20, "W1"),
            fund("R-2", &u, 10, "W1"),
        ])
        .await;
    assert_eq!(
        (status(&acks[0]), acks[0].sequence),
        (AckStatus::Accepted, 2)
    );
    assert_eq!(
        (status(&acks[1]), acks[1].error.as_str()),
        (AckStatus::Rejected, REUSED)
    );
    assert_eq!(
        (status(&acks[2]), acks[2].sequence),
        (AckStatus::Duplicate, 2)
    );
    assert_eq!(
        env.unit(&u, Role::Registrar)
            .await
            .expect("unit")
            .maintenance_fund_fen,
        10
    );
}

#[tokio::test]
async fn an_event_id_reused_for_another_kind_is_rejected_and_leaves_no_fact_behind() {
    // A fund's id on a 契税: each kind has its own fact table, so only the feed's record of the id
    // can refuse the second, and nothing of it may stay in the fund table.
    let env = start().await;
    let (u, u2, b) = (unit(7), unit(8), resident(7));
    let acks = env.push(vec![deed("K-1", &u, &b, 100, "V1")]).await;
    assert_eq!(outcomes(&acks), vec![(AckStatus::Accepted, 1)]);
    let acks = env
        .push(vec![fund("K-1", &u, 10, "W1"), fund("K-2", &u2, 10, "W2")])
        .await;
    assert_eq!(
        (status(&acks[0]), acks[0].error.as_str(), acks[0].sequence),
        (AckStatus::Rejected, REUSED, 0)
    );
    assert_eq!(
        (status(&acks[1]), acks[1].sequence),
        (AckStatus::Accepted, 2)
    );
    assert_eq!(env.written().await, vec![1, 1, 0, 0, 2, 2]);
    let s = env.unit(&u, Role::Registrar).await.expect("unit");
    assert_eq!(
        s.maintenance_fund_fen, 0,
        "the reused id's fund is not recorded"
    );
    assert_eq!(s.deed_taxes.len(), 1);
}

#[tokio::test]
async fn resends_across_a_streams_batches_keep_the_first_content() {
    // Resends land in later batches of the same stream, often the very next one while the first
    // is still in flight: the same content is a DUPLICATE of the first, other content REJECTED,
    // and so is an id reused for another kind. A write path that let a batch hold rows of its own
    // while it waits for the one before it can deadlock here, where PostgreSQL cannot see it (the
    // wait is the service's): hence the time limit.
    let env = start().await;
    let earlier: Vec<PushCompletionsRequest> = (0..60u32)
        .map(|k| deed(&format!("R-{k}"), &unit(10_000 + k), &resident(k), 100, "V"))
        .collect();
    env.push(earlier).await;
    let n = 3000u32;
    let mut reqs = Vec::new();
    let mut expected: Vec<(AckStatus, u64)> = Vec::new();
    for i in 0..n {
        if i % 50 == 25 {
            reqs.push(fund(&format!("R-{}", i / 50), &unit(i), 10, "W"));
            expected.push((AckStatus::Rejected, 0));
        }
        reqs.push(deed(&format!("S-{i}"), &unit(i), &resident(i), 100, "V"));
        expected.push((AckStatus::Accepted, u64::from(i) + 61));
        if i >= 300 && i % 7 == 0 {
            let j = i - 300;
            reqs.push(deed(&format!("S-{j}"), &unit(j), &resident(j), 100, "V"));
            expected.push((AckStatus::Duplicate, u64::from(j) + 61));
        }
        if i >= 900 && i % 11 == 0 {
            let j = i - 900;
            reqs.push(deed(&format!("S-{j}"), &unit(j), &resident(j), 999, "V"));
            expected.push((AckStatus::Rejected, 0));
        }
    }
    let acks = tokio::time::timeout(Duration::from_secs(60), env.push(reqs))
        .await
        .expect("the stream is acknowledged (no batch waits on the next one)");
    assert_eq!(outcomes(&acks), expected);
    let total = i64::from(n) + 60;
    assert_eq!(env.written().await, vec![total, 0, 0, 0, total, total]);
}

#[tokio::test]
async fn concurrent_streams_reusing_ids_across_kinds_record_one_event_each() {
    // One stream sends each id as a 契税, another as a 维修资金, a third repeats the first: each id
    // is recorded once, as one kind, with one fact row; the other kind is REJECTED everywhere.
    let env = start().await;
    let n = 1500u32;
    let deeds: Vec<PushCompletionsRequest> = (0..n)
        .map(|i| deed(&format!("Q-{i}"), &unit(i), &resident(i), 100, "V"))
        .collect();
    let mut funds: Vec<PushCompletionsRequest> = (0..n)
        .map(|i| fund(&format!("Q-{i}"), &unit(i), 10, "W"))
        .collect();
    funds.reverse();
    let (a, b, c) = tokio::join!(env.push(deeds.clone()), env.push(funds), env.push(deeds));
    let mut seq_of: HashMap<String, u64> = HashMap::new();
    let mut kind_of: HashMap<String, bool> = HashMap::new();
    let mut accepted = 0;
    for (is_deed, ack) in a
        .iter()
        .map(|x| (true, x))
        .chain(b.iter().map(|x| (false, x)))
        .chain(c.iter().map(|x| (true, x)))
    {
        match status(ack) {
            AckStatus::Accepted | AckStatus::Duplicate => {
                if status(ack) == AckStatus::Accepted {
                    accepted += 1;
                }
                let seq = *seq_of.entry(ack.event_id.clone()).or_insert(ack.sequence);
                assert_eq!(seq, ack.sequence, "{} has one sequence", ack.event_id);
                let kind = *kind_of.entry(ack.event_id.clone()).or_insert(is_deed);
                assert_eq!(kind, is_deed, "{} recorded as one kind", ack.event_id);
            }
            other => {
                assert_eq!(ack.error, REUSED, "{other:?} {ack:?}");
            }
        }
    }
    assert_eq!(accepted, n as usize, "each id accepted exactly once");
    assert_eq!(seq_of.len(), n as usize);
    let w = env.written().await;
    assert_eq!(w[0] + w[1], i64::from(n), "one fact row per id: {w:?}");
    assert_eq!(&w[2..], &[0, 0, i64::from(n), i64::from(n)]);
}

/// A register written before migration 101 (ids kept in `tax.received`, the feed without digests)
/// still tells a resend from a reused id once upgraded: the migration moves each digest onto its event.
async fn upgrade_keeps_the_idempotency_record(url: String) {
    let env = start_on(url, TestKeys::new()).await;
    let (u, b) = (unit(7), resident(7));
    let acks = env
        .push(vec![
            deed("U-1", &u, &b, 100, "V1"),
            fund("U-2", &u, 50, "R1"),
        ])
        .await;
    assert!(acks.iter().all(|a| status(a) == AckStatus::Accepted));
    let Env {
        url,
        db,
        keys,
        server,
        ..
    } = env;
    server.stop().await;
    // Back to the layout before 101, with the digests where 100 kept them.
    for sql in [
        "CREATE TABLE tax.received (event_id TEXT PRIMARY KEY, content_sha256 TEXT NOT NULL, \
         kind TEXT NOT NULL, sequence BIGINT NOT NULL, received_at_ms BIGINT NOT NULL)",
        "INSERT INTO tax.received (event_id, content_sha256, kind, sequence, received_at_ms) \
         SELECT event_id, content_sha256, kind, sequence, recorded_at_ms FROM tax.events",
        "UPDATE tax.events SET content_sha256 = NULL",
        "DELETE FROM tax._sqlx_migrations WHERE version = 101",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(db.pool())
            .await
            .expect(sql);
    }
    db.pool().close().await;
    let env = start_on(url, keys).await;
    let acks = env
        .push(vec![
            deed("U-1", &u, &b, 100, "V1"),
            fund("U-2", &u, 51, "R1"),
            fund("U-3", &u, 10, "R2"),
        ])
        .await;
    assert_eq!(
        outcomes(&acks),
        vec![
            (AckStatus::Duplicate, 1),
            (AckStatus::Rejected, 0),
            (AckStatus::Accepted, 3),
        ]
    );
    assert_eq!(acks[1].error, REUSED);
    let gone = sqlx::query("SELECT COUNT(*) FROM tax.received")
        .fetch_one(env.db.pool())
        .await;
    assert!(gone.is_err(), "tax.received is dropped");
    env.server.stop().await;
}

#[tokio::test]
async fn an_upgraded_register_still_tells_resends_from_reused_ids() {
    upgrade_keeps_the_idempotency_record(fresh_database().await).await;
}

#[tokio::test]
async fn an_upgraded_sqlite_sandbox_still_tells_resends_from_reused_ids() {
    let dir = fresh_sqlite_dir("tax-up");
    upgrade_keeps_the_idempotency_record(format!("sqlite://{}/tongjiao.db", dir.display())).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_second_payment_is_history_and_the_status_does_not_depend_on_order() {
    let env = start().await;
    let (u, b) = (unit(8), resident(8));
    let earlier = with_time(deed("H-1", &u, &b, 300_000, "QS-EARLY"), at(1_700_000_000));
    let later = with_time(deed("H-2", &u, &b, 1, "QS-LATE"), at(1_700_009_999));
    let undated = with_time(deed("H-0", &u, &b, 2, "QS-UNDATED"), None);
    // Delivered latest first.
    for r in [later, undated, earlier] {
        let acks = env.push(vec![r]).await;
        assert_eq!(status(&acks[0]), AckStatus::Accepted);
    }
    let s = env.unit(&u, Role::Registrar).await.expect("unit");
    assert_eq!(s.deed_taxes.len(), 1, "one record per buyer");
    assert_eq!(s.deed_taxes[0].voucher_number, "QS-EARLY");
    assert_eq!(s.deed_taxes[0].amount_fen, 300_000);
    let by_buyer = env.buyer(&b, Role::Registrar).await.expect("buyer");
    assert_eq!(by_buyer.deed_taxes.len(), 1);
    assert_eq!(by_buyer.deed_taxes[0].voucher_number, "QS-EARLY");
    // All three are history: recorded and on the feed.
    assert_eq!(env.written().await[0], 3);
    let ids: BTreeSet<String> = env
        .feed(0, Role::Auditor)
        .await
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        ids,
        ["H-0", "H-1", "H-2"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

/// A data set with every kind of fact, repeated payments, relief and events without occurred_at.
fn data_set() -> Vec<PushCompletionsRequest> {
    let mut v = Vec::new();
    for i in 0..60u32 {
        let u = unit(i);
        let b = resident(i);
        let t = 1_700_000_000 + i64::from(i) * 10;
        v.push(with_time(
            deed(
                &format!("S-D-{i}"),
                &u,
                &b,
                10_000 + i64::from(i),
                &format!("QS-{i}"),
            ),
            at(t),
        ));
        if i % 5 == 0 {
            v.push(relieved(&format!("S-R-{i}"), &u, &resident(1000 + i)));
        }
        if i % 4 == 0 {
            // A second payment by the same buyer, with a later and with no occurred_at.
            v.push(with_time(
                deed(&format!("S-D2-{i}"), &u, &b, 1, &format!("QS2-{i}")),
                at(t + 5),
            ));
            v.push(with_time(
                deed(&format!("S-D3-{i}"), &u, &b, 2, &format!("QS3-{i}")),
                None,
            ));
        }
        if i % 2 == 0 {
            v.push(with_time(
                fund(&format!("S-F-{i}"), &u, 50_000, &format!("WX-{i}")),
                at(t + 1),
            ));
        }
        if i % 7 == 0 {
            v.push(with_time(
                fund(&format!("S-F2-{i}"), &u, 70_000, &format!("WX2-{i}")),
                at(t + 1),
            ));
        }
    }
    for p in 0..6u32 {
        v.push(developer(
            &format!("S-P-{p}"),
            &format!("P-{p}"),
            &credit(p),
            &format!("KF-{p}"),
        ));
        if p % 3 == 0 {
            v.push(with_time(
                developer(
                    &format!("S-P2-{p}"),
                    &format!("P-{p}"),
                    &credit(p),
                    &format!("KF2-{p}"),
                ),
                at(1_600_000_000),
            ));
        }
        v.push(land(
            &format!("S-L-{p}"),
            &parcel(p),
            1_000_000,
            &format!("TD-{p}"),
        ));
    }
    v
}

/// Everything the queries say about the data set, recording times removed.
async fn observed(
    env: &Env,
) -> (
    Vec<GetUnitTaxStatusResponse>,
    Vec<GetBuyerTaxStatusResponse>,
    Vec<GetProjectTaxStatusResponse>,
    BTreeSet<String>,
) {
    let mut units = Vec::new();
    let mut buyers = Vec::new();
    for i in 0..60u32 {
        units.push(unit_without_times(
            env.unit(&unit(i), Role::Registrar).await.expect("unit"),
        ));
        buyers.push(buyer_without_times(
            env.buyer(&resident(i), Role::TaxBureau)
                .await
                .expect("buyer"),
        ));
        buyers.push(buyer_without_times(
            env.buyer(&resident(1000 + i), Role::Clerk)
                .await
                .expect("buyer"),
        ));
    }
    let mut projects = Vec::new();
    for p in 0..7u32 {
        projects.push(
            env.project(&format!("P-{p}"), Role::Auditor)
                .await
                .expect("project"),
        );
    }
    let feed = env.feed(0, Role::Registrar).await;
    let ids: BTreeSet<String> = feed.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), feed.len(), "each event once on the feed");
    (units, buyers, projects, ids)
}

#[tokio::test]
async fn the_same_events_in_order_or_shuffled_with_duplicates_give_the_same_state() {
    let events = data_set();
    let (in_order, shuffled) = tokio::join!(start(), start());

    let acks = in_order.push(events.clone()).await;
    assert!(acks.iter().all(|a| status(a) == AckStatus::Accepted));

    // Shuffled, 30 % of the events delivered twice, over three streams.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut delivery = events.clone();
    for e in &events {
        if rng.below(10) < 3 {
            delivery.push(e.clone());
        }
    }
    rng.shuffle(&mut delivery);
    let third = delivery.len() / 3;
    let mut acks = Vec::new();
    for part in [
        &delivery[..third],
        &delivery[third..2 * third],
        &delivery[2 * third..],
    ] {
        acks.extend(shuffled.push(part.to_vec()).await);
    }
    let mut accepted: BTreeMap<String, u64> = BTreeMap::new();
    for a in &acks {
        if status(a) == AckStatus::Accepted {
            assert!(
                accepted.insert(a.event_id.clone(), a.sequence).is_none(),
                "accepted once: {}",
                a.event_id
            );
        }
    }
    assert_eq!(accepted.len(), events.len());
    let mut duplicates = 0;
    for a in &acks {
        match status(a) {
            AckStatus::Accepted => {}
            AckStatus::Duplicate => {
                duplicates += 1;
                assert_eq!(
                    a.sequence, accepted[&a.event_id],
                    "duplicate carries the original sequence"
                );
            }
            other => panic!("unexpected {other:?} for {}", a.event_id),
        }
    }
    assert_eq!(duplicates, delivery.len() - events.len());
    assert!(
        duplicates > events.len() / 5,
        "about 30 % duplicates ({duplicates})"
    );

    let a = observed(&in_order).await;
    let b = observed(&shuffled).await;
    assert_eq!(a.0, b.0, "unit status");
    assert_eq!(a.1, b.1, "buyer status");
    assert_eq!(a.2, b.2, "project status");
    assert_eq!(a.3, b.3, "event ids on the feed");
    assert_eq!(a.3.len(), events.len());
    // Spot-check the picked records: the earliest by occurred_at, undated last.
    assert_eq!(
        a.0[4]
            .deed_taxes
            .iter()
            .find(|d| d.buyer_id == resident(4))
            .map(|d| d.voucher_number.as_str()),
        Some("QS-4")
    );
    assert_eq!(a.0[0].maintenance_fund_receipt, "WX-0");
    assert_eq!(a.2[0].voucher_number, "KF2-0");
    assert_eq!(a.2[1].voucher_number, "KF-1");
    assert!(!a.2[6].developer_tax_cleared);
    assert_eq!(in_order.written().await, shuffled.written().await);
}

#[tokio::test]
async fn concurrent_streams_record_each_event_once() {
    let env = start().await;
    let events: Vec<PushCompletionsRequest> = (0..2000u32)
        .map(|i| deed(&format!("C-{i}"), &unit(i), &resident(i), 100, "V"))
        .collect();
    let mut reversed = events.clone();
    reversed.reverse();
    let (a, b, c) = tokio::join!(
        env.push(events.clone()),
        env.push(reversed),
        env.push(events.clone())
    );
    let mut seq_of: HashMap<String, u64> = HashMap::new();
    let mut accepted = 0;
    for ack in a.iter().chain(&b).chain(&c) {
        let s = status(ack);
        assert!(
            matches!(s, AckStatus::Accepted | AckStatus::Duplicate),
            "{ack:?}"
        );
        if s == AckStatus::Accepted {
            accepted += 1;
        }
        let seq = *seq_of.entry(ack.event_id.clone()).or_insert(ack.sequence);
        assert_eq!(
            seq, ack.sequence,
            "every ack of {} names one sequence",
            ack.event_id
        );
    }
    assert_eq!(accepted, 2000);
    assert_eq!(env.written().await, vec![2000, 0, 0, 0, 2000, 2000]);
}

#[tokio::test]
async fn many_streams_replaying_overlapping_feeds_are_all_acknowledged() {
    // Six replays of one feed at once, each in its own order: every batch of every stream shares
    // event ids with batches of the others. None may be told to resend.
    let env = start().await;
    let events: Vec<PushCompletionsRequest> = (0..3000u32)
        .map(|i| deed(&format!("M-{i}"), &unit(i), &resident(i), 100, "V"))
        .collect();
    let replays: Vec<Vec<PushCompletionsRequest>> = (0..6u64)
        .map(|k| {
            let mut v = events.clone();
            // A different deterministic order per stream (Fisher-Yates with an LCG).
            let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for i in (1..v.len()).rev() {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                v.swap(i, (x >> 33) as usize % (i + 1));
            }
            v
        })
        .collect();
    let pushes = replays.into_iter().map(|r| env.push(r));
    let results = futures::future::join_all(pushes).await;
    let mut accepted = 0;
    let mut seq_of: HashMap<String, u64> = HashMap::new();
    for ack in results.iter().flatten() {
        if status(ack) == AckStatus::Accepted {
            accepted += 1;
        }
        let seq = *seq_of.entry(ack.event_id.clone()).or_insert(ack.sequence);
        assert_eq!(seq, ack.sequence, "{} has one sequence", ack.event_id);
    }
    assert_eq!(accepted, 3000, "each event accepted exactly once");
    assert_eq!(env.written().await, vec![3000, 0, 0, 0, 3000, 3000]);
}

// === roles, tokens, masking ===

#[tokio::test]
async fn roles_are_enforced() {
    let env = start().await;
    for role in [
        Role::Registrar,
        Role::Clerk,
        Role::Auditor,
        Role::Developer,
        Role::HousingBureau,
    ] {
        let e = env
            .try_push(vec![deed("Z-1", &unit(1), &resident(1), 1, "V")], role)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "push as {role}");
    }
    assert_eq!(env.written().await, vec![0; 6]);
    for role in [Role::Developer, Role::HousingBureau] {
        assert_eq!(
            env.unit(&unit(1), role).await.unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(
            env.buyer(&resident(1), role).await.unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(
            env.project("P-1", role).await.unwrap_err().code(),
            Code::PermissionDenied
        );
    }
    for role in [Role::TaxBureau, Role::Registrar, Role::Clerk, Role::Auditor] {
        env.unit(&unit(1), role).await.expect("allowed");
        env.buyer(&resident(1), role).await.expect("allowed");
        env.project("P-1", role).await.expect("allowed");
    }
    for role in [Role::Clerk, Role::Developer, Role::HousingBureau] {
        let e = env
            .client()
            .await
            .watch_tax_events(authed(
                WatchTaxEventsRequest {
                    after_sequence: 0,
                    backlog_only: true,
                },
                &env.token(role),
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "watch as {role}");
    }
    for role in [Role::TaxBureau, Role::Registrar, Role::Auditor] {
        env.feed(0, role).await;
    }
}

#[tokio::test]
async fn calls_without_a_token_are_unauthenticated() {
    let env = start().await;
    let mut c = env.client().await;
    let e = c
        .push_completions(tonic::Request::new(tokio_stream::iter(vec![deed(
            "N-1",
            &unit(1),
            &resident(1),
            1,
            "V",
        )])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c
        .get_unit_tax_status(GetUnitTaxStatusRequest { unit_code: unit(1) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c
        .get_buyer_tax_status(GetBuyerTaxStatusRequest {
            buyer_id: resident(1),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c
        .get_project_tax_status(GetProjectTaxStatusRequest {
            project_id: "P-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c
        .watch_tax_events(WatchTaxEventsRequest {
            after_sequence: 0,
            backlog_only: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c
        .get_unit_tax_status(authed(
            GetUnitTaxStatusRequest { unit_code: unit(1) },
            "not-a-jwt",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(env.written().await, vec![0; 6]);
}

#[tokio::test]
async fn buyer_ids_are_masked_for_clerks_and_auditors() {
    let env = start().await;
    let (u, b) = (unit(3), resident(3));
    let masked = b.parse::<ResidentId>().expect("valid").masked();
    assert_ne!(masked, b);
    env.push(vec![deed("M-1", &u, &b, 100, "V")]).await;
    for (role, want) in [
        (Role::TaxBureau, &b),
        (Role::Registrar, &b),
        (Role::Clerk, &masked),
        (Role::Auditor, &masked),
    ] {
        let s = env.unit(&u, role).await.expect("unit");
        assert_eq!(&s.deed_taxes[0].buyer_id, want, "unit status as {role}");
        let s = env.buyer(&b, role).await.expect("buyer");
        assert_eq!(&s.deed_taxes[0].buyer_id, want, "buyer status as {role}");
    }
    let buyer_on_feed = |events: Vec<TaxEvent>| match &events[0].payload {
        Some(tax_event::Payload::DeedTaxPaid(d)) => d.buyer_id.clone(),
        other => panic!("expected deed tax, got {other:?}"),
    };
    assert_eq!(buyer_on_feed(env.feed(0, Role::Registrar).await), b);
    assert_eq!(buyer_on_feed(env.feed(0, Role::Auditor).await), masked);
}

// === change feed ===

#[tokio::test]
async fn watch_returns_events_in_order_resumes_and_follows() {
    let env = start().await;
    let reqs: Vec<_> = (0..5u32)
        .map(|i| fund(&format!("W-{i}"), &unit(i), 100, "R"))
        .collect();
    env.push(reqs).await;
    let all = env.feed(0, Role::Registrar).await;
    assert_eq!(
        all.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        all.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
        vec!["W-0", "W-1", "W-2", "W-3", "W-4"]
    );
    let rest = env.feed(3, Role::TaxBureau).await;
    assert_eq!(
        rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert!(env.feed(5, Role::Auditor).await.is_empty());

    // Following: new events arrive as they commit.
    let mut live = env
        .client()
        .await
        .watch_tax_events(authed(
            WatchTaxEventsRequest {
                after_sequence: 4,
                backlog_only: false,
            },
            &env.token(Role::Registrar),
        ))
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(next_event(&mut live).await.sequence, 5);
    env.push(vec![
        land("W-5", &parcel(1), 10, "L"),
        developer("W-6", "P-9", &credit(9), "K"),
    ])
    .await;
    let e6 = next_event(&mut live).await;
    let e7 = next_event(&mut live).await;
    assert_eq!((e6.sequence, e6.event_id.as_str()), (6, "W-5"));
    assert_eq!((e7.sequence, e7.event_id.as_str()), (7, "W-6"));
    assert!(matches!(
        e7.payload,
        Some(tax_event::Payload::DeveloperTaxCleared(_))
    ));
}

async fn next_event(s: &mut tonic::Streaming<WatchTaxEventsResponse>) -> TaxEvent {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("event within 10 s")
        .expect("stream open")
        .expect("ok")
        .event
        .expect("event")
}

// === throughput ===

#[tokio::test]
async fn a_push_of_20000_events_completes() {
    let env = start().await;
    let n = 20_000u32;
    let reqs: Vec<_> = (0..n)
        .map(|i| match i % 4 {
            0 | 1 => deed(
                &format!("BULK-{i}"),
                &unit(i),
                &resident(i),
                100_000,
                &format!("QS-{i}"),
            ),
            2 => fund(&format!("BULK-{i}"), &unit(i), 50_000, &format!("WX-{i}")),
            _ => land(
                &format!("BULK-{i}"),
                &parcel(i % 99_999),
                1_000,
                &format!("TD-{i}"),
            ),
        })
        .collect();
    let started = Instant::now();
    let acks = env.push(reqs).await;
    let elapsed = started.elapsed();
    eprintln!(
        "pushed {n} events in {:.2} s: {:.0} events/s ({} build, one stream, client in process)",
        elapsed.as_secs_f64(),
        f64::from(n) / elapsed.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert!(acks.iter().all(|a| status(a) == AckStatus::Accepted));
    assert_eq!(acks.last().map(|a| a.sequence), Some(u64::from(n)));
    assert_eq!(
        env.written().await,
        vec![10_000, 5_000, 0, 5_000, 20_000, 20_000]
    );
}

// === sandbox backend ===

/// The `tongjiao dev` sandbox runs the same SQL on SQLite files: push, dedupe, queries and the feed.
#[tokio::test]
async fn the_same_sql_runs_on_the_sqlite_sandbox() {
    let dir = fresh_sqlite_dir("tax");
    let env = start_on(
        format!("sqlite://{}/tongjiao.db", dir.display()),
        TestKeys::new(),
    )
    .await;
    let (u, b) = (unit(1), resident(1));
    let reqs = vec![
        deed("Q-1", &u, &b, 100, "V1"),
        fund("Q-2", &u, 0, "R"),
        fund("Q-3", &u, 500, "R"),
        developer("Q-4", "P-1", &credit(1), "K"),
        land("Q-5", &parcel(1), 10, "L"),
        deed("Q-1", &u, &b, 100, "V1"),
        deed("Q-1", &u, &b, 101, "V1"),
    ];
    let acks = env.push(reqs).await;
    assert_eq!(
        outcomes(&acks),
        vec![
            (AckStatus::Accepted, 1),
            (AckStatus::Rejected, 0),
            (AckStatus::Accepted, 2),
            (AckStatus::Accepted, 3),
            (AckStatus::Accepted, 4),
            (AckStatus::Duplicate, 1),
            (AckStatus::Rejected, 0),
        ]
    );
    let again = env.push(vec![land("Q-5", &parcel(1), 10, "L")]).await;
    assert_eq!(
        (status(&again[0]), again[0].sequence),
        (AckStatus::Duplicate, 4)
    );
    let s = env.unit(&u, Role::Clerk).await.expect("unit");
    assert_eq!(s.deed_taxes.len(), 1);
    assert_eq!(s.maintenance_fund_fen, 500);
    assert!(
        env.project("P-1", Role::Registrar)
            .await
            .expect("project")
            .developer_tax_cleared
    );
    assert_eq!(
        env.buyer(&b, Role::Registrar)
            .await
            .expect("buyer")
            .deed_taxes[0]
            .buyer_id,
        b
    );
    assert_eq!(env.feed(1, Role::Registrar).await.len(), 3);
    assert_eq!(env.written().await, vec![1, 1, 1, 1, 4, 4]);
    env.server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
