//! The 房证同交 pipeline end to end, through the generated clients only.
use std::collections::{BTreeMap, HashSet};

use tongjiao_auth::Role;
use tongjiao_domain::CertificateNumber;
use tongjiao_e2e::*;
use tongjiao_proto::{registration as reg, tax};
use tongjiao_testkit::authed;
use tonic::Code;

async fn submit(suite: &Suite, sc: &Scenario, request_id: &str) -> reg::HandoverBatch {
    suite
        .registration()
        .await
        .submit_handover_batch(authed(
            sc.batch(request_id, suite.clock.today()),
            &suite.token(Role::Developer),
        ))
        .await
        .expect("submit batch")
        .into_inner()
        .batch
        .expect("batch")
}

async fn find_by_unit(suite: &Suite, unit: &str) -> reg::Case {
    let cases = suite
        .registration()
        .await
        .find_cases(authed(
            reg::FindCasesRequest {
                key: Some(reg::find_cases_request::Key::UnitCode(unit.into())),
            },
            &suite.token(Role::Clerk),
        ))
        .await
        .expect("find cases")
        .into_inner()
        .cases;
    assert_eq!(cases.len(), 1, "one case per unit: {cases:?}");
    cases.into_iter().next().expect("case")
}

async fn register(
    suite: &Suite,
    case_id: &str,
    request_id: &str,
) -> Result<reg::Case, tonic::Status> {
    Ok(suite
        .registration()
        .await
        .register_transfer(authed(
            reg::RegisterTransferRequest {
                request_id: request_id.into(),
                case_id: case_id.into(),
            },
            &suite.token(Role::Clerk),
        ))
        .await?
        .into_inner()
        .case
        .expect("case"))
}

async fn issue(
    suite: &Suite,
    case_id: &str,
    request_id: &str,
) -> Result<reg::Certificate, tonic::Status> {
    Ok(suite
        .registration()
        .await
        .issue_certificate(authed(
            reg::IssueCertificateRequest {
                request_id: request_id.into(),
                case_id: case_id.into(),
            },
            &suite.token(Role::Clerk),
        ))
        .await?
        .into_inner()
        .certificate
        .expect("certificate"))
}

async fn transfer_and_issue(
    suite: &Suite,
    case_id: &str,
    request_id: &str,
) -> Result<reg::RegisterTransferAndIssueResponse, tonic::Status> {
    Ok(suite
        .registration()
        .await
        .register_transfer_and_issue(authed(
            reg::RegisterTransferAndIssueRequest {
                request_id: request_id.into(),
                case_id: case_id.into(),
            },
            &suite.token(Role::Clerk),
        ))
        .await?
        .into_inner())
}

/// Runs `n` clerks' calls at once, each over its own connection, and returns their results in
/// order; `call` gets a client, the clerk's index and a clerk token.
async fn at_once<T, F, Fut>(suite: &Suite, n: usize, call: F) -> Vec<Result<T, tonic::Status>>
where
    F: Fn(RegClient, usize, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = Vec::new();
    for i in 0..n {
        let channel = suite
            .registration
            .as_ref()
            .expect("running")
            .channel()
            .await;
        tasks.push(tokio::spawn(call(
            RegClient::new(channel),
            i,
            suite.token(Role::Clerk),
        )));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

/// Prepares the project, submits its batch, pushes every tax event and waits until every case is
/// READY.
async fn all_ready(suite: &Suite, sc: &Scenario) -> reg::HandoverBatch {
    prepare_project(suite, sc).await;
    let batch = submit(suite, sc, "batch").await;
    push_tax(suite, sc.tax_events()).await;
    wait_batch(suite, &batch.batch_id, |c| {
        c.ready as usize == sc.cases.len()
    })
    .await;
    batch
}

/// The certificates of racing calls that won, and how many were refused. Every refusal must be
/// FAILED_PRECONDITION: the case was settled by another counter.
fn winners(
    results: Vec<Result<reg::Certificate, tonic::Status>>,
) -> (Vec<reg::Certificate>, usize) {
    let mut ok = Vec::new();
    let mut refused = 0;
    for r in results {
        match r {
            Ok(c) => ok.push(c),
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                refused += 1;
            }
        }
    }
    (ok, refused)
}

/// The register itself, for what no RPC shows.
async fn register_db(suite: &Suite) -> tongjiao_store::Db {
    tongjiao_store::Db::connect(&suite.db_url, 1)
        .await
        .expect("register")
}

fn serials(certs: &[reg::Certificate]) -> Vec<u64> {
    let mut s: Vec<u64> = certs.iter().map(|c| c.serial).collect();
    s.sort_unstable();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_project_goes_from_building_table_to_every_certificate() {
    let suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-001", 3, 4);
    prepare_project(&suite, &sc).await;
    let batch = submit(&suite, &sc, "batch-1").await;
    let counts = batch.counts.expect("counts");
    assert_eq!(counts.total as usize, sc.cases.len());
    assert_eq!(
        counts.pending as usize,
        sc.cases.len(),
        "taxes not in yet: every case pending"
    );

    // Before the tax feed, each case names exactly what it lacks.
    let case = find_by_unit(&suite, &sc.cases[0].unit_code).await;
    let kinds: Vec<i32> = case.missing.iter().map(|m| m.kind).collect();
    assert!(
        kinds.contains(&(reg::MissingKind::DeedTax as i32)),
        "{case:?}"
    );
    assert!(
        kinds.contains(&(reg::MissingKind::MaintenanceFund as i32)),
        "{case:?}"
    );
    assert!(
        !kinds.contains(&(reg::MissingKind::FirstRegistration as i32)),
        "{case:?}"
    );

    // The developer watches the batch from now until every case is done.
    let mut watch = suite
        .registration()
        .await
        .watch_handover_batch(authed(
            reg::WatchHandoverBatchRequest {
                batch_id: batch.batch_id.clone(),
            },
            &suite.token(Role::Developer),
        ))
        .await
        .expect("watch batch")
        .into_inner();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(msg) = watch.message().await.expect("watch stream") {
            seen.push(msg);
        }
        seen
    });

    let acks = push_tax(&suite, sc.tax_events()).await;
    assert!(
        acks.iter()
            .all(|a| a.status == tax::AckStatus::Accepted as i32),
        "{acks:?}"
    );
    wait_batch(&suite, &batch.batch_id, |c| {
        c.ready as usize == sc.cases.len()
    })
    .await;

    let mut certs = Vec::new();
    for (i, c) in sc.cases.iter().enumerate() {
        let case = find_by_unit(&suite, &c.unit_code).await;
        assert_eq!(case.state, reg::CaseState::Ready as i32);
        assert!(case.missing.is_empty());
        register(&suite, &case.case_id, &format!("reg-{i}"))
            .await
            .expect("register transfer");
        let cert = issue(&suite, &case.case_id, &format!("cert-{i}"))
            .await
            .expect("issue");
        let parsed: CertificateNumber = cert
            .certificate_number
            .parse()
            .expect("certificate number parses");
        assert_eq!(parsed.province_abbr, "晋");
        assert_eq!(parsed.region_name, "垣曲县");
        assert_eq!(
            cert.right_holders,
            c.buyers
                .iter()
                .map(|b| b.0.as_str())
                .collect::<Vec<_>>()
                .join("、")
        );
        assert_eq!(cert.unit_code_raw, c.unit_code);
        assert!(
            cert.location.starts_with("垣曲县新城区同交路8号"),
            "{cert:?}"
        );
        assert_eq!(cert.right_type, "国有建设用地使用权/房屋所有权");
        assert_eq!(cert.right_nature, "出让/市场化商品房");
        assert_eq!(cert.usage, "城镇住宅用地/住宅");
        // The unit's measured data as the building table gave it (Scenario::building_table).
        let seq = c
            .unit_code
            .parse::<tongjiao_domain::UnitCode>()
            .ok()
            .and_then(|u| u.unit_seq())
            .expect("house unit");
        let (floor, internal, shared) = (1 + (seq - 1) / 2, 8_500 + seq * 10, 1_961);
        let sqm = |centi: u32| format!("{}.{:02}", centi / 100, centi % 100);
        assert!(
            cert.area
                .ends_with(&format!("/房屋建筑面积{}㎡", sqm(internal + shared))),
            "{cert:?}"
        );
        assert_eq!(
            cert.other_info,
            format!(
                "房屋结构：钢筋混凝土结构\n专有建筑面积：{}㎡，分摊建筑面积：{}㎡\n房屋总层数：18层，房屋所在层：{floor}层",
                sqm(internal),
                sqm(shared)
            )
        );
        assert!(
            cert.term_of_use
                .contains("2020年01月01日起2090年12月31日止"),
            "{cert:?}"
        );
        assert!(cert.other_info.contains("钢筋混凝土结构"), "{cert:?}");
        assert_eq!(
            cert.co_ownership,
            if c.buyers.len() == 1 {
                "单独所有"
            } else {
                "共同共有"
            }
        );
        certs.push(cert);
    }
    let n = sc.cases.len() as u64;
    assert_eq!(
        serials(&certs),
        (1..=n).collect::<Vec<_>>(),
        "gap-free serials 1..=N"
    );
    let numbers: HashSet<&str> = certs
        .iter()
        .map(|c| c.certificate_number.as_str())
        .collect();
    assert_eq!(numbers.len(), certs.len(), "numbers are unique");

    let done = wait_batch(&suite, &batch.batch_id, |c| {
        c.certificate_issued as u64 == n
    })
    .await;
    assert_eq!(done.pending + done.ready + done.transfer_registered, 0);

    // The watch stream started with the snapshot, followed every change and ended when all was done.
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), watcher)
        .await
        .expect("watch ends once every case is done")
        .expect("watcher");
    let first = seen
        .first()
        .and_then(|m| m.batch.as_ref())
        .and_then(|b| b.counts)
        .expect("snapshot");
    assert_eq!(first.pending as usize, sc.cases.len());
    let last = seen
        .last()
        .and_then(|m| m.batch.as_ref())
        .and_then(|b| b.counts)
        .expect("last");
    assert_eq!(last.certificate_issued as u64, n);
    let changed: HashSet<&str> = seen
        .iter()
        .flat_map(|m| m.changed_cases.iter().map(|c| c.case_id.as_str()))
        .collect();
    assert_eq!(
        changed.len(),
        sc.cases.len(),
        "every case's changes were streamed"
    );
    assert!(
        seen.iter()
            .flat_map(|m| &m.changed_cases)
            .all(|c| c.buyers.iter().all(|b| b.resident_id.contains("********"))),
        "the developer sees masked resident ids"
    );

    // A certificate reads back by its number, also written with ASCII brackets.
    let ascii = certs[0]
        .certificate_number
        .replace('（', "(")
        .replace('）', ")");
    let got = suite
        .registration()
        .await
        .get_certificate(authed(
            reg::GetCertificateRequest {
                certificate_number: ascii,
            },
            &suite.token(Role::Clerk),
        ))
        .await
        .expect("get certificate")
        .into_inner()
        .certificate
        .expect("certificate");
    assert_eq!(got, certs[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_precondition_refusal_names_what_is_missing_and_changes_nothing() {
    let suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-002", 1, 3);
    let mut r = suite.registration().await;
    let dev = suite.token(Role::Developer);
    r.enroll_project(authed(
        reg::EnrollProjectRequest {
            request_id: "enroll".into(),
            project: Some(sc.project(&suite.developer_org)),
        },
        &dev,
    ))
    .await
    .expect("enroll");

    // 首次登记 before the 楼盘表, the filings and the developer's taxes.
    let err = r
        .apply_first_registration(authed(
            reg::ApplyFirstRegistrationRequest {
                request_id: "apply-early".into(),
                project_id: sc.project_id.clone(),
            },
            &dev,
        ))
        .await
        .expect_err("refused");
    let kinds = precondition_kinds(&err);
    assert_eq!(
        kinds,
        ["building_table", "acceptance", "developer_tax"],
        "{err:?}"
    );
    assert!(err.message().contains("首次登记"), "{err:?}");

    // Completing without an application is refused too.
    let err = r
        .complete_first_registration(authed(
            reg::CompleteFirstRegistrationRequest {
                request_id: "complete-early".into(),
                project_id: sc.project_id.clone(),
            },
            &suite.token(Role::Registrar),
        ))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Submit the batch before first registration: cases wait for it.
    let batch = submit(&suite, &sc, "batch").await;
    let case = find_by_unit(&suite, &sc.cases[0].unit_code).await;
    let kinds: Vec<i32> = case.missing.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            reg::MissingKind::FirstRegistration as i32,
            reg::MissingKind::BuildingTableUnit as i32,
            reg::MissingKind::DeedTax as i32,
            reg::MissingKind::MaintenanceFund as i32,
        ]
    );
    let err = register(&suite, &case.case_id, "reg-early")
        .await
        .expect_err("refused");
    assert_eq!(
        precondition_kinds(&err),
        [
            "first_registration",
            "building_table_unit",
            "deed_tax",
            "maintenance_fund"
        ]
    );
    let err = issue(&suite, &case.case_id, "cert-early")
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let unchanged = find_by_unit(&suite, &sc.cases[0].unit_code).await;
    assert_eq!(unchanged.version, case.version, "a refusal changes nothing");

    // The rest of the project, then only the maintenance fund of unit 0 and the deed taxes.
    suite
        .survey()
        .await
        .upload_building_table(authed(
            sc.building_table("table"),
            &suite.token(Role::HousingBureau),
        ))
        .await
        .expect("upload");
    record_filings(&suite, &sc.project_id).await;
    push_tax(&suite, vec![sc.developer_tax_event(&suite.developer_org)]).await;
    wait_first_registration_possible(&suite, &sc.project_id).await;
    r.apply_first_registration(authed(
        reg::ApplyFirstRegistrationRequest {
            request_id: "apply".into(),
            project_id: sc.project_id.clone(),
        },
        &dev,
    ))
    .await
    .expect("apply");
    r.complete_first_registration(authed(
        reg::CompleteFirstRegistrationRequest {
            request_id: "complete".into(),
            project_id: sc.project_id.clone(),
        },
        &suite.token(Role::Registrar),
    ))
    .await
    .expect("complete");
    let deed_only: Vec<_> = sc
        .tax_events()
        .into_iter()
        .filter(|e| e.event_id.starts_with("deed-"))
        .collect();
    push_tax(&suite, deed_only).await;
    let unit0 = sc.cases[0].unit_code.clone();
    let case = eventually("only the maintenance fund missing", 30, || {
        let s = &suite;
        let unit0 = unit0.clone();
        async move {
            let c = find_by_unit(s, &unit0).await;
            (c.missing.len() == 1).then_some(c)
        }
    })
    .await;
    assert_eq!(
        case.missing[0].kind,
        reg::MissingKind::MaintenanceFund as i32
    );
    let err = register(&suite, &case.case_id, "reg-no-fund")
        .await
        .expect_err("refused");
    assert_eq!(precondition_kinds(&err), ["maintenance_fund"]);
    assert!(err.message().contains("维修资金"), "{err:?}");

    // With the fund in: transfer, then no certificate twice.
    let fund0: Vec<_> = sc
        .tax_events()
        .into_iter()
        .filter(|e| e.event_id == format!("fund-{unit0}"))
        .collect();
    push_tax(&suite, fund0).await;
    let case = eventually("case 0 ready", 30, || {
        let s = &suite;
        let unit0 = unit0.clone();
        async move {
            let c = find_by_unit(s, &unit0).await;
            (c.state == reg::CaseState::Ready as i32).then_some(c)
        }
    })
    .await;
    let err = issue(&suite, &case.case_id, "cert-before-transfer")
        .await
        .expect_err("refused");
    assert!(err.message().contains("转移登记"), "{err:?}");
    register(&suite, &case.case_id, "reg-0")
        .await
        .expect("register");
    let err = register(&suite, &case.case_id, "reg-0-again")
        .await
        .expect_err("twice");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let cert = issue(&suite, &case.case_id, "cert-0").await.expect("issue");
    let err = issue(&suite, &case.case_id, "cert-0-again")
        .await
        .expect_err("twice");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains(&cert.certificate_number), "{err:?}");

    // Past the material deadline, a case still missing something lapses and says so.
    suite
        .clock
        .advance(std::time::Duration::from_secs(6 * 86_400));
    let unit1 = sc.cases[1].unit_code.clone();
    let lapsed = eventually("case 1 lapsed", 30, || {
        let s = &suite;
        let unit1 = unit1.clone();
        async move {
            let c = find_by_unit(s, &unit1).await;
            (c.state == reg::CaseState::Lapsed as i32).then_some(c)
        }
    })
    .await;
    assert!(lapsed.lapsed_reason.contains("视为放弃"), "{lapsed:?}");
    assert!(
        lapsed.lapsed_reason.contains("maintenance fund"),
        "{lapsed:?}"
    );
    let err = register(&suite, &lapsed.case_id, "reg-lapsed")
        .await
        .expect_err("lapsed");
    assert!(err.message().contains("视为放弃"), "{err:?}");
    let counts = wait_batch(&suite, &batch.batch_id, |c| c.lapsed == 2).await;
    assert_eq!(counts.certificate_issued, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_rejected_field_by_field_and_nothing_is_written() {
    let suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-003", 1, 2);
    let mut r = suite.registration().await;
    let dev = suite.token(Role::Developer);

    let mut bad = sc.project(&suite.developer_org);
    bad.developer_credit_code = "91140827MA0000000X".into();
    bad.parcel_code = "140827001002GB0001".into();
    bad.agreement_signed_on = "2026-02-30".into();
    bad.kind = 0;
    let err = r
        .enroll_project(authed(
            reg::EnrollProjectRequest {
                request_id: "bad-enroll".into(),
                project: Some(bad),
            },
            &dev,
        ))
        .await
        .expect_err("invalid");
    let fields = bad_fields(&err);
    for f in [
        "project.kind",
        "project.parcel_code",
        "project.developer_credit_code",
        "project.agreement_signed_on",
    ] {
        assert!(fields.contains(&f.to_string()), "{f} in {fields:?}");
    }
    let err = r
        .get_project(authed(
            reg::GetProjectRequest {
                project_id: sc.project_id.clone(),
            },
            &dev,
        ))
        .await
        .expect_err("nothing written");
    assert_eq!(err.code(), Code::NotFound);

    prepare_project(&suite, &sc).await;
    let good = sc.batch("b", suite.clock.today());
    let cases: [(&str, BatchMutation); 7] = [
        (
            "cases[0].unit_code",
            Box::new(|b| b.cases[0].unit_code = "140827001002GB00012F0001000".into()),
        ),
        (
            "cases[1].unit_code",
            Box::new(|b| b.cases[1].unit_code = unit_code_other_parcel()),
        ),
        (
            "cases[0].buyers[0].resident_id",
            Box::new(|b| {
                let id = &mut b.cases[0].buyers[0].resident_id;
                let last = if id.ends_with('0') { '1' } else { '0' };
                id.pop();
                id.push(last);
            }),
        ),
        (
            "cases[0].co_ownership",
            Box::new(|b| b.cases[0].co_ownership = reg::CoOwnership::Joint as i32),
        ),
        (
            "cases[1].contract_number",
            Box::new(|b| b.cases[1].contract_number = String::new()),
        ),
        (
            "material_deadline",
            Box::new(|b| b.material_deadline = "2099-01-01".into()),
        ),
        (
            "handover_date",
            Box::new(|b| b.handover_date = "2026-13-01".into()),
        ),
    ];
    for (field, mutate) in cases {
        let mut req = good.clone();
        req.request_id = format!("bad-{field}");
        mutate(&mut req);
        let err = r
            .submit_handover_batch(authed(req, &dev))
            .await
            .expect_err(field);
        let fields = bad_fields(&err);
        assert!(
            fields.contains(&field.to_string()),
            "{field} in {fields:?}: {err:?}"
        );
        assert!(
            err.message().contains('（')
                || err
                    .message()
                    .chars()
                    .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
            "Chinese term in {err:?}"
        );
    }
    let none = r
        .find_cases(authed(
            reg::FindCasesRequest {
                key: Some(reg::find_cases_request::Key::UnitCode(
                    sc.cases[0].unit_code.clone(),
                )),
            },
            &suite.token(Role::Clerk),
        ))
        .await
        .expect("find")
        .into_inner()
        .cases;
    assert!(none.is_empty(), "rejected batches wrote nothing: {none:?}");

    // Bad look-up keys.
    let err = r
        .find_cases(authed(
            reg::FindCasesRequest {
                key: Some(reg::find_cases_request::Key::BuyerId(
                    "140827199001010000".into(),
                )),
            },
            &suite.token(Role::Clerk),
        ))
        .await
        .expect_err("bad id");
    assert_eq!(bad_fields(&err), ["buyer_id"]);
    let err = r
        .get_certificate(authed(
            reg::GetCertificateRequest {
                certificate_number: "晋2026垣曲县第1号".into(),
            },
            &suite.token(Role::Clerk),
        ))
        .await
        .expect_err("bad number");
    assert_eq!(bad_fields(&err), ["certificate_number"]);
}

type BatchMutation = Box<dyn Fn(&mut reg::SubmitHandoverBatchRequest)>;

fn unit_code_other_parcel() -> String {
    "140827001002GB00013F00010001".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_with_one_request_id_returns_the_first_reply() {
    let suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-004", 1, 2);
    prepare_project(&suite, &sc).await;
    let first = submit(&suite, &sc, "batch-once").await;
    let again = submit(&suite, &sc, "batch-once").await;
    assert_eq!(first, again, "same request id, same reply");
    let mut different = sc.batch("batch-once", suite.clock.today());
    different.cases.pop();
    let err = suite
        .registration()
        .await
        .submit_handover_batch(authed(different, &suite.token(Role::Developer)))
        .await
        .expect_err("different payload");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    push_tax(&suite, sc.tax_events()).await;
    wait_batch(&suite, &first.batch_id, |c| c.ready == 2).await;
    let case = find_by_unit(&suite, &sc.cases[0].unit_code).await;
    let a = register(&suite, &case.case_id, "reg")
        .await
        .expect("register");
    let b = register(&suite, &case.case_id, "reg").await.expect("retry");
    assert_eq!(a, b);
    let c1 = issue(&suite, &case.case_id, "cert").await.expect("issue");
    let c2 = issue(&suite, &case.case_id, "cert").await.expect("retry");
    assert_eq!(c1, c2, "a retry returns the same certificate");
    let other = find_by_unit(&suite, &sc.cases[1].unit_code).await;
    register(&suite, &other.case_id, "reg-2")
        .await
        .expect("register");
    let c3 = issue(&suite, &other.case_id, "cert-2")
        .await
        .expect("issue");
    assert_eq!(c3.serial, c1.serial + 1, "the retry consumed no number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_counters_racing_on_one_case_yield_exactly_one_certificate() {
    let suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-005", 1, 3);
    all_ready(&suite, &sc).await;
    let case = find_by_unit(&suite, &sc.cases[0].unit_code).await;
    register(&suite, &case.case_id, "reg")
        .await
        .expect("register");

    let results = at_once(&suite, 16, |mut client, i, token| {
        let case_id = case.case_id.clone();
        async move {
            client
                .issue_certificate(authed(
                    reg::IssueCertificateRequest {
                        request_id: format!("counter-{i}"),
                        case_id,
                    },
                    &token,
                ))
                .await
                .map(|r| r.into_inner().certificate.expect("certificate"))
        }
    })
    .await;
    let (ok, refused) = winners(results);
    assert_eq!(ok.len(), 1, "exactly one certificate");
    assert_eq!(refused, 15);
    assert_eq!(ok[0].serial, 1);

    // Concurrent counters on different cases: gap-free and unique.
    let mut tasks = Vec::new();
    for c in &sc.cases[1..] {
        let case = find_by_unit(&suite, &c.unit_code).await;
        register(&suite, &case.case_id, &format!("reg-{}", case.case_id))
            .await
            .expect("register");
        let channel = suite
            .registration
            .as_ref()
            .expect("running")
            .channel()
            .await;
        let token = suite.token(Role::Clerk);
        tasks.push(tokio::spawn(async move {
            RegClient::new(channel)
                .issue_certificate(authed(
                    reg::IssueCertificateRequest {
                        request_id: format!("cert-{}", case.case_id),
                        case_id: case.case_id.clone(),
                    },
                    &token,
                ))
                .await
                .map(|r| r.into_inner().certificate.expect("certificate"))
        }));
    }
    let mut all = ok;
    for t in tasks {
        all.push(t.await.expect("task").expect("issued"));
    }
    assert_eq!(serials(&all), [1, 2, 3]);
}

/// The state a feed leaves: per unit, its case's state and what it lacks.
async fn case_states(suite: &Suite, sc: &Scenario) -> BTreeMap<String, (i32, Vec<i32>)> {
    let mut out = BTreeMap::new();
    for c in &sc.cases {
        let case = find_by_unit(suite, &c.unit_code).await;
        out.insert(
            c.unit_code.clone(),
            (case.state, case.missing.iter().map(|m| m.kind).collect()),
        );
    }
    out
}

fn unit_of(e: &tax::PushCompletionsRequest) -> String {
    use tax::push_completions_request::Payload;
    match &e.payload {
        Some(Payload::DeedTaxPaid(d)) => d.unit_code.clone(),
        Some(Payload::MaintenanceFundDeposited(m)) => m.unit_code.clone(),
        _ => String::new(),
    }
}

/// Case states once two reads half a second apart agree.
async fn settled_states(s: &Suite, sc: &Scenario) -> BTreeMap<String, (i32, Vec<i32>)> {
    let mut last = case_states(s, sc).await;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = case_states(s, sc).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicated_and_reordered_tax_feed_leaves_the_same_state_as_a_clean_one() {
    let sc = Scenario::new("YQ-E2E-006", 2, 5);
    // Only some of the taxes arrive, so the comparison covers pending cases too.
    let partial: Vec<_> = sc
        .tax_events()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 4 != 1)
        .map(|(_, e)| e)
        .collect();

    let clean = Suite::start().await;
    prepare_project(&clean, &sc).await;
    let batch = submit(&clean, &sc, "batch").await;
    let acks = push_tax(&clean, partial.clone()).await;
    assert!(
        acks.iter()
            .all(|a| a.status == tax::AckStatus::Accepted as i32)
    );

    let messy = Suite::start().await;
    prepare_project(&messy, &sc).await;
    let messy_batch = submit(&messy, &sc, "batch").await;
    let mut shuffled = partial.clone();
    // A fixed permutation with every third event sent twice, the copies far from the originals.
    shuffled.reverse();
    let copies: Vec<_> = partial.iter().step_by(3).cloned().collect();
    for (i, c) in copies.into_iter().enumerate() {
        let at = (i * 7) % shuffled.len();
        shuffled.insert(at, c);
    }
    let acks = push_tax(&messy, shuffled).await;
    let dups = acks
        .iter()
        .filter(|a| a.status == tax::AckStatus::Duplicate as i32)
        .count();
    assert_eq!(
        dups,
        partial.len().div_ceil(3),
        "every copy acknowledged as a duplicate"
    );

    // A case is ready exactly when all its events arrived; wait for that count in both.
    let sent: HashSet<String> = partial.iter().map(|e| e.event_id.clone()).collect();
    let expected_ready = sc
        .tax_events()
        .chunk_by(|a, b| unit_of(a) == unit_of(b))
        .filter(|events| events.iter().all(|e| sent.contains(&e.event_id)))
        .count() as u32;
    assert!(expected_ready > 0 && (expected_ready as usize) < sc.cases.len());
    let c1 = wait_batch(&clean, &batch.batch_id, |c| c.ready == expected_ready).await;
    let c2 = wait_batch(&messy, &messy_batch.batch_id, |c| c.ready == expected_ready).await;
    let s1 = settled_states(&clean, &sc).await;
    let s2 = settled_states(&messy, &sc).await;
    assert_eq!(s1, s2, "same facts, same state");
    assert_eq!(c1.ready, c2.ready);
    assert!(
        s1.values()
            .any(|(st, _)| *st == reg::CaseState::Pending as i32),
        "some cases still pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_restarted_mid_batch_loses_nothing() {
    let mut suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-007", 2, 6);
    prepare_project(&suite, &sc).await;
    let batch = submit(&suite, &sc, "batch").await;
    let events = sc.tax_events();
    let (first, second) = events.split_at(events.len() / 2);
    push_tax(&suite, first.to_vec()).await;

    // Down while the rest of the feed arrives, and its Redis state lost too.
    suite.stop_registration().await;
    push_tax(&suite, second.to_vec()).await;
    tongjiao_workflow::Workflow::redis(&tongjiao_testkit::redis_url(), &suite.redis_prefix)
        .await
        .expect("redis")
        .clear()
        .await
        .expect("clear");
    suite.start_registration().await;

    wait_batch(&suite, &batch.batch_id, |c| {
        c.ready as usize == sc.cases.len()
    })
    .await;
    let mut certs = Vec::new();
    for (i, c) in sc.cases.iter().enumerate() {
        let case = find_by_unit(&suite, &c.unit_code).await;
        register(&suite, &case.case_id, &format!("reg-{i}"))
            .await
            .expect("register");
        certs.push(
            issue(&suite, &case.case_id, &format!("cert-{i}"))
                .await
                .expect("issue"),
        );
    }
    assert_eq!(
        serials(&certs),
        (1..=sc.cases.len() as u64).collect::<Vec<_>>()
    );

    // Restart once more: the register keeps every certificate and the counters continue.
    suite.stop_registration().await;
    suite.start_registration().await;
    let counts = wait_batch(&suite, &batch.batch_id, |c| {
        c.certificate_issued as usize == sc.cases.len()
    })
    .await;
    assert_eq!(counts.total as usize, sc.cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_sees_only_what_it_may() {
    let suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-008", 1, 2);
    prepare_project(&suite, &sc).await;
    let batch = submit(&suite, &sc, "batch").await;
    let mut r = suite.registration().await;

    let other_dev = suite
        .keys
        .token(Role::Developer, "developer-2", Some(&credit_code(2)), None);
    let err = r
        .get_project(authed(
            reg::GetProjectRequest {
                project_id: sc.project_id.clone(),
            },
            &other_dev,
        ))
        .await
        .expect_err("another developer's project");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = r
        .get_handover_batch(authed(
            reg::GetHandoverBatchRequest {
                batch_id: batch.batch_id.clone(),
            },
            &other_dev,
        ))
        .await
        .expect_err("another developer's batch");
    assert_eq!(err.code(), Code::PermissionDenied);
    let other_clerk = suite
        .keys
        .token(Role::Clerk, "clerk-2", None, Some("140802"));
    let case = find_by_unit(&suite, &sc.cases[0].unit_code).await;
    let err = register(&suite, &case.case_id, "x").await.map(|_| ()).err();
    assert!(err.is_some(), "not ready yet");
    let err = r
        .get_case(authed(
            reg::GetCaseRequest {
                case_id: case.case_id.clone(),
            },
            &other_clerk,
        ))
        .await
        .expect_err("clerk of another county");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = r
        .issue_certificate(authed(
            reg::IssueCertificateRequest {
                request_id: "dev-issue".into(),
                case_id: case.case_id.clone(),
            },
            &suite.token(Role::Developer),
        ))
        .await
        .expect_err("developers don't issue certificates");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = r
        .get_case(tonic::Request::new(reg::GetCaseRequest {
            case_id: case.case_id.clone(),
        }))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);

    // The developer sees its own case with masked resident ids; the clerk sees them in clear.
    let mine = r
        .get_case(authed(
            reg::GetCaseRequest {
                case_id: case.case_id.clone(),
            },
            &suite.token(Role::Developer),
        ))
        .await
        .expect("own case")
        .into_inner()
        .case
        .expect("case");
    assert!(mine.buyers[0].resident_id.contains("********"), "{mine:?}");
    assert_eq!(case.buyers[0].resident_id, sc.cases[0].buyers[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_land_parcel_gets_its_certificate_on_delivery_day() {
    use tongjiao_proto::tax::push_completions_request::Payload;
    let suite = Suite::start().await;
    let parcel = "140827001002GB00099";
    let unit = format!("{parcel}W00000000");
    let mut project = Scenario::new("YQ-LAND-001", 1, 1).project(&suite.developer_org);
    project.kind = reg::ProjectKind::Land as i32;
    project.parcel_code = parcel.into();
    project.name = "垣曲县标准地1号".into();
    if let Some(land) = project.land.as_mut() {
        land.usage = "工业用地".into();
        land.term_end = "2070-12-31".into();
    }
    let mut r = suite.registration().await;
    let dev = suite.token(Role::Developer);
    r.enroll_project(authed(
        reg::EnrollProjectRequest {
            request_id: "enroll".into(),
            project: Some(project),
        },
        &dev,
    ))
    .await
    .expect("enroll land project");
    record_filings(&suite, "YQ-LAND-001").await;
    let buyer = resident_id(9001);
    let events = vec![
        tax::PushCompletionsRequest {
            event_id: "land-devtax".into(),
            occurred_at: None,
            payload: Some(Payload::DeveloperTaxCleared(tax::DeveloperTaxCleared {
                project_id: "YQ-LAND-001".into(),
                developer_credit_code: suite.developer_org.clone(),
                voucher_number: "TDWS-001".into(),
            })),
        },
        tax::PushCompletionsRequest {
            event_id: "land-fees".into(),
            occurred_at: None,
            payload: Some(Payload::LandFeesPaid(tax::LandFeesPaid {
                parcel_code: parcel.into(),
                amount_fen: 180_000_000,
                voucher_number: "CRJ-2026-001".into(),
            })),
        },
        tax::PushCompletionsRequest {
            event_id: "land-deed".into(),
            occurred_at: None,
            payload: Some(Payload::DeedTaxPaid(tax::DeedTaxPaid {
                unit_code: unit.clone(),
                buyer_id: buyer.clone(),
                amount_fen: 5_400_000,
                voucher_number: "QS-2026-001".into(),
                relieved: false,
                relief_basis: String::new(),
            })),
        },
    ];
    push_tax(&suite, events).await;
    // No 楼盘表 is needed for land.
    wait_first_registration_possible(&suite, "YQ-LAND-001").await;
    r.apply_first_registration(authed(
        reg::ApplyFirstRegistrationRequest {
            request_id: "apply".into(),
            project_id: "YQ-LAND-001".into(),
        },
        &dev,
    ))
    .await
    .expect("apply");
    r.complete_first_registration(authed(
        reg::CompleteFirstRegistrationRequest {
            request_id: "complete".into(),
            project_id: "YQ-LAND-001".into(),
        },
        &suite.token(Role::Registrar),
    ))
    .await
    .expect("complete");
    let today = suite.clock.today();
    let batch = r
        .submit_handover_batch(authed(
            reg::SubmitHandoverBatchRequest {
                request_id: "land-batch".into(),
                project_id: "YQ-LAND-001".into(),
                handover_date: tongjiao_domain::format_date(today + time::Duration::days(3)),
                material_deadline: tongjiao_domain::format_date(today + time::Duration::days(1)),
                cases: vec![reg::CaseSubmission {
                    unit_code: unit.clone(),
                    buyers: vec![reg::Buyer {
                        name: "用地人".into(),
                        resident_id: buyer,
                        share_basis_points: 0,
                    }],
                    co_ownership: reg::CoOwnership::Sole as i32,
                    contract_number: "CRHT-2026-001".into(),
                    same_day_opt_in: true,
                }],
            },
            &dev,
        ))
        .await
        .expect("land batch")
        .into_inner()
        .batch
        .expect("batch");
    wait_batch(&suite, &batch.batch_id, |c| c.ready == 1).await;
    let case = find_by_unit(&suite, &unit).await;
    register(&suite, &case.case_id, "reg")
        .await
        .expect("register");
    let cert = issue(&suite, &case.case_id, "cert").await.expect("issue");
    assert_eq!(cert.right_type, "国有建设用地使用权");
    assert_eq!(cert.usage, "工业用地");
    assert!(cert.area.starts_with("宗地面积"), "{cert:?}");
    assert!(cert.remarks.contains("地证同交"), "{cert:?}");
}

/// The case log (办件日志) of one case: (version, state, note), oldest first.
async fn case_log(suite: &Suite, case_id: &str) -> Vec<(i64, String, String)> {
    let db = register_db(suite).await;
    sqlx::query_as(
        "SELECT version, state, note FROM registration.case_log WHERE case_id = $1 ORDER BY version",
    )
    .bind(case_id)
    .fetch_all(db.pool())
    .await
    .expect("case log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_counter_step_records_the_transfer_and_issues_the_certificate() {
    let suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-010", 1, 4);
    prepare_project(&suite, &sc).await;
    let batch = submit(&suite, &sc, "batch").await;
    // The last unit's buyers have not paid: its case stays pending (材料未齐).
    let unpaid = sc.cases[3].unit_code.clone();
    let events: Vec<_> = sc
        .tax_events()
        .into_iter()
        .filter(|e| !e.event_id.contains(&unpaid))
        .collect();
    push_tax(&suite, events).await;
    wait_batch(&suite, &batch.batch_id, |c| c.ready == 3 && c.pending == 1).await;

    // A READY case: 转移登记 and 发证 in one call.
    let a = find_by_unit(&suite, &sc.cases[0].unit_code).await;
    assert_eq!(a.state, reg::CaseState::Ready as i32);
    let first = transfer_and_issue(&suite, &a.case_id, "handover-a")
        .await
        .expect("transfer and issue");
    let cert = first.certificate.clone().expect("certificate");
    assert_eq!(cert.serial, 1);
    assert_eq!(cert.case_id, a.case_id);
    assert!(
        cert.certificate_number.parse::<CertificateNumber>().is_ok(),
        "{cert:?}"
    );
    let case = first.case.clone().expect("case");
    assert_eq!(case.state, reg::CaseState::CertificateIssued as i32);
    assert_eq!(case.certificate_number, cert.certificate_number);
    assert_eq!(case.version, a.version + 2, "two steps, two versions");
    let log = case_log(&suite, &a.case_id).await;
    let tail: Vec<(i64, &str)> = log
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(|(v, s, _)| (*v, s.as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            (a.version as i64 + 1, "transfer_registered"),
            (a.version as i64 + 2, "certificate_issued"),
        ],
        "the log keeps both steps: {log:?}"
    );

    // A retry with the same request id returns the first reply and consumes no number.
    let again = transfer_and_issue(&suite, &a.case_id, "handover-a")
        .await
        .expect("retry");
    assert_eq!(again, first);
    // A new request on the issued case is refused and changes nothing.
    let err = transfer_and_issue(&suite, &a.case_id, "handover-a-2")
        .await
        .expect_err("already issued");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(case_log(&suite, &a.case_id).await, log);

    // A pending case is refused with what it lacks, and nothing is recorded.
    let d = find_by_unit(&suite, &unpaid).await;
    let err = transfer_and_issue(&suite, &d.case_id, "handover-d")
        .await
        .expect_err("pending");
    let kinds = precondition_kinds(&err);
    assert!(
        kinds.iter().any(|k| k.contains("deed_tax")),
        "names the missing 契税: {kinds:?}"
    );
    let still = find_by_unit(&suite, &unpaid).await;
    assert_eq!(
        (still.state, still.version),
        (reg::CaseState::Pending as i32, d.version)
    );

    // A case whose transfer was recorded separately is only issued; plain issuance goes on in the
    // same gap-free sequence.
    let b = find_by_unit(&suite, &sc.cases[1].unit_code).await;
    let transferred = register(&suite, &b.case_id, "reg-b")
        .await
        .expect("register");
    let b_done = transfer_and_issue(&suite, &b.case_id, "handover-b")
        .await
        .expect("issue after transfer");
    assert_eq!(b_done.certificate.as_ref().map(|c| c.serial), Some(2));
    assert_eq!(
        b_done.case.as_ref().map(|c| c.version),
        Some(transferred.version + 1)
    );
    let c = find_by_unit(&suite, &sc.cases[2].unit_code).await;
    register(&suite, &c.case_id, "reg-c")
        .await
        .expect("register");
    let c_cert = issue(&suite, &c.case_id, "cert-c").await.expect("issue");
    assert_eq!(c_cert.serial, 3, "the refusals consumed no number");

    // Bad input is named field by field.
    let err = transfer_and_issue(&suite, "", "handover-x")
        .await
        .expect_err("no case id");
    assert_eq!(bad_fields(&err), ["case_id"]);
    let err = transfer_and_issue(&suite, &c.case_id, "")
        .await
        .expect_err("no request id");
    assert_eq!(bad_fields(&err), ["request_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_counters_handing_over_one_case_yield_one_certificate() {
    let suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-011", 1, 1);
    all_ready(&suite, &sc).await;
    let case = find_by_unit(&suite, &sc.cases[0].unit_code).await;
    let results = at_once(&suite, 16, |mut client, i, token| {
        let case_id = case.case_id.clone();
        async move {
            client
                .register_transfer_and_issue(authed(
                    reg::RegisterTransferAndIssueRequest {
                        request_id: format!("counter-{i}"),
                        case_id,
                    },
                    &token,
                ))
                .await
                .map(|r| r.into_inner().certificate.expect("certificate"))
        }
    })
    .await;
    let (ok, _) = winners(results);
    assert_eq!(serials(&ok), [1], "exactly one certificate");
    let log = case_log(&suite, &case.case_id).await;
    let states: Vec<&str> = log.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == "transfer_registered")
            .count(),
        1,
        "{log:?}"
    );
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == "certificate_issued")
            .count(),
        1,
        "{log:?}"
    );
}

/// The next reply of a server reflection stream.
async fn next_reflection(
    replies: &mut tonic::Streaming<tonic_reflection::pb::v1::ServerReflectionResponse>,
) -> Option<tonic_reflection::pb::v1::server_reflection_response::MessageResponse> {
    replies
        .message()
        .await
        .expect("reflection reply")
        .and_then(|r| r.message_response)
}

/// What an integrator's tool (grpcurl, Postman, a bank's generated client) sees through server
/// reflection: the registration service with the counter calls and their request fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reflection_shows_the_counter_calls_to_any_client() {
    use prost::Message;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let suite = Suite::start().await;
    let channel = suite
        .registration
        .as_ref()
        .expect("running")
        .channel()
        .await;
    let mut client = ServerReflectionClient::new(channel);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter(vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "tongjiao.registration.v1.RegistrationService".into(),
            )),
        ]))
        .await
        .expect("reflection without a token")
        .into_inner();

    let listed = match next_reflection(&mut replies).await {
        Some(MessageResponse::ListServicesResponse(l)) => l.service,
        other => panic!("no service list: {other:?}"),
    };
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"tongjiao.registration.v1.RegistrationService"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    let files = match next_reflection(&mut replies).await {
        Some(MessageResponse::FileDescriptorResponse(f)) => f.file_descriptor_proto,
        other => panic!("no descriptor: {other:?}"),
    };
    let files: Vec<prost_types::FileDescriptorProto> = files
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).expect("descriptor"))
        .collect();
    let file = files
        .iter()
        .find(|f| f.service.iter().any(|s| s.name() == "RegistrationService"))
        .expect("the file of RegistrationService");
    let service = file
        .service
        .iter()
        .find(|s| s.name() == "RegistrationService")
        .expect("service");
    let method = |name: &str| {
        service
            .method
            .iter()
            .find(|m| m.name() == name)
            .map(|m| (m.input_type().to_owned(), m.output_type().to_owned()))
    };
    for (name, input, output) in [
        (
            "FindCases",
            ".tongjiao.registration.v1.FindCasesRequest",
            ".tongjiao.registration.v1.FindCasesResponse",
        ),
        (
            "RegisterTransferAndIssue",
            ".tongjiao.registration.v1.RegisterTransferAndIssueRequest",
            ".tongjiao.registration.v1.RegisterTransferAndIssueResponse",
        ),
        (
            "IssueCertificate",
            ".tongjiao.registration.v1.IssueCertificateRequest",
            ".tongjiao.registration.v1.IssueCertificateResponse",
        ),
    ] {
        assert_eq!(
            method(name),
            Some((input.to_owned(), output.to_owned())),
            "{name}"
        );
    }
    let request = file
        .message_type
        .iter()
        .find(|m| m.name() == "RegisterTransferAndIssueRequest")
        .expect("request message");
    let fields: Vec<(&str, i32)> = request
        .field
        .iter()
        .map(|f| (f.name(), f.number()))
        .collect();
    assert_eq!(fields, [("request_id", 1), ("case_id", 2)]);
}

/// Rows of the register that a replayed feed must not add to: case log entries, the fact copies
/// registration keeps, and the sum of case versions.
async fn register_counts(suite: &Suite) -> (i64, i64, i64, i64, i64) {
    let db = register_db(suite).await;
    sqlx::query_as(
        "SELECT (SELECT CAST(COUNT(*) AS BIGINT) FROM registration.case_log), \
                (SELECT CAST(COUNT(*) AS BIGINT) FROM registration.deed_taxes), \
                (SELECT CAST(COUNT(*) AS BIGINT) FROM registration.maintenance_funds), \
                (SELECT CAST(SUM(version) AS BIGINT) FROM registration.cases), \
                (SELECT last_sequence FROM registration.feed_cursors WHERE feed = 'tax')",
    )
    .fetch_one(db.pool())
    .await
    .expect("register counts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tax_feed_applied_again_from_an_old_cursor_changes_nothing() {
    // The follower applies a batch of single-unit facts in parts, each committing on its own, and
    // advances the cursor after all of them: a part can thus be applied twice. Replaying the whole
    // feed from the start is the strongest form of that.
    let mut suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-012", 2, 6);
    let batch = all_ready(&suite, &sc).await;
    let before = register_counts(&suite).await;
    let states = case_states(&suite, &sc).await;
    assert!(before.4 > 0, "the tax feed was followed: {before:?}");

    suite.stop_registration().await;
    let db = register_db(&suite).await;
    // Back to just before the first unit's fact: the developer's tax clearance before it is
    // project-wide and would keep the replay in one transaction.
    let rewound = sqlx::query(
        "UPDATE registration.feed_cursors SET last_sequence = \
         (SELECT MIN(sequence) - 1 FROM tax.events WHERE kind IN ('deed_tax_paid', 'maintenance_fund_deposited')) \
         WHERE feed = 'tax'",
    )
    .execute(db.pool())
    .await
    .expect("rewind the cursor");
    assert_eq!(rewound.rows_affected(), 1);
    suite.start_registration().await;

    let after = eventually("the feed replayed up to its head", 30, || {
        let s = &suite;
        async move {
            let c = register_counts(s).await;
            (c.4 >= before.4).then_some(c)
        }
    })
    .await;
    assert_eq!(
        after, before,
        "(case log, deed taxes, funds, versions, cursor)"
    );
    assert_eq!(case_states(&suite, &sc).await, states);
    let counts = wait_batch(&suite, &batch.batch_id, |c| {
        c.ready as usize == sc.cases.len()
    })
    .await;
    assert_eq!(counts.pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_case_shows_what_it_lacks_after_a_burst_and_after_a_restart() {
    // The tax follower writes a case that stays pending only once the feed goes quiet (its
    // intermediate lists of what it lacks are not each written); a restart evaluates every
    // pending case again, so a write lost with the process never leaves a stale list behind.
    let mut suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-014", 1, 3);
    prepare_project(&suite, &sc).await;
    submit(&suite, &sc, "batch").await;
    let unit0 = sc.cases[0].unit_code.clone();
    let db = register_db(&suite).await;
    let stored = |db: tongjiao_store::Db, unit: String| async move {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT missing, version FROM registration.cases WHERE unit_code = $1",
        )
        .bind(unit)
        .fetch_one(db.pool())
        .await
        .expect("case row")
    };
    let (before_funds, _) = stored(db.clone(), unit0.clone()).await;

    // Every 维修资金, no 契税: every case stays pending and stops lacking its fund.
    let funds: Vec<_> = sc
        .tax_events()
        .into_iter()
        .filter(|e| e.event_id.starts_with("fund-"))
        .collect();
    assert_eq!(funds.len(), sc.cases.len());
    push_tax(&suite, funds).await;
    let lacks = |c: &reg::Case| -> Vec<i32> { c.missing.iter().map(|m| m.kind).collect() };
    for c in &sc.cases {
        let unit = c.unit_code.clone();
        let case = eventually("the fund no longer missing", 30, || {
            let s = &suite;
            let unit = unit.clone();
            async move {
                let case = find_by_unit(s, &unit).await;
                (!lacks(&case).contains(&(reg::MissingKind::MaintenanceFund as i32)))
                    .then_some(case)
            }
        })
        .await;
        assert_eq!(case.state, reg::CaseState::Pending as i32, "{case:?}");
        assert!(
            lacks(&case).contains(&(reg::MissingKind::DeedTax as i32)),
            "{case:?}"
        );
    }
    // The register holds it too, not only the workflow store.
    let (after_funds, version) = eventually("the register written", 30, || {
        let (db, unit) = (db.clone(), unit0.clone());
        let before = before_funds.clone();
        async move {
            let row = stored(db, unit).await;
            (row.0 != before).then_some(row)
        }
    })
    .await;

    // As if the process had stopped before writing it: the register still shows the old list.
    suite.stop_registration().await;
    sqlx::query("UPDATE registration.cases SET missing = $1 WHERE unit_code = $2")
        .bind(&before_funds)
        .bind(&unit0)
        .execute(db.pool())
        .await
        .expect("stale list");
    suite.start_registration().await;
    let case = find_by_unit(&suite, &unit0).await;
    assert!(
        !lacks(&case).contains(&(reg::MissingKind::MaintenanceFund as i32)),
        "brought up to date on start: {case:?}"
    );
    let (missing, refreshed) = stored(db.clone(), unit0.clone()).await;
    assert_eq!(missing, after_funds);
    assert_eq!(refreshed, version + 1, "one new version for the correction");
    let log = case_log(&suite, &case.case_id).await;
    assert_eq!(
        log.last().map(|(v, s, _)| (*v, s.as_str())),
        Some((version + 1, "pending")),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clock_set_back_after_a_sweep_still_lapses_what_falls_overdue() {
    // The deadline sweeper reads only deadlines from its last sweep's day on. After sweeps on a
    // day a month ahead and the clock corrected back, a batch due five days from the real today
    // must still lapse when those days pass, not once the clock reaches the month.
    let suite = Suite::start().await;
    let month = std::time::Duration::from_secs(30 * 86_400);
    suite.clock.advance(month);
    // Registration sweeps every 200 ms in the suite.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    suite.clock.set_back(month);

    let sc = Scenario::new("YQ-E2E-013", 1, 2);
    prepare_project(&suite, &sc).await;
    let batch = submit(&suite, &sc, "batch").await;
    // Every buyer's deed tax, no maintenance fund: both cases stay pending.
    let deed_taxes: Vec<_> = sc
        .tax_events()
        .into_iter()
        .filter(|e| e.event_id.starts_with("deed-"))
        .collect();
    assert!(!deed_taxes.is_empty());
    push_tax(&suite, deed_taxes).await;
    suite
        .clock
        .advance(std::time::Duration::from_secs(6 * 86_400));
    let counts = wait_batch(&suite, &batch.batch_id, |c| c.lapsed == 2).await;
    assert_eq!(counts.ready, 0);
}

/// Waits until registration has applied the whole tax feed.
async fn tax_feed_applied(suite: &Suite) {
    let db = register_db(suite).await;
    eventually("the tax feed applied", 30, || {
        let db = &db;
        async move {
            let (cursor, head): (Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT (SELECT last_sequence FROM registration.feed_cursors WHERE feed = 'tax'), \
                        (SELECT MAX(sequence) FROM tax.events)",
            )
            .fetch_one(db.pool())
            .await
            .ok()?;
            (cursor.is_some() && cursor == head).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_does_not_take_facts_for_absent_after_another_replica_applied_the_feed() {
    // Replica A's tax follower evaluates cases from memory, taking a fact it does not remember
    // for absent, but only while the feed cursor stands where A left it. A applies every 契税
    // (its memory then holds each unit complete, without 维修资金); B applies the 维修资金 and the
    // cases become READY; A resumes with one more 契税 per unit. Trusting its memory there would
    // see no 维修资金 and send every case back to PENDING.
    let mut suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-016", 2, 4);
    prepare_project(&suite, &sc).await;
    let batch = submit(&suite, &sc, "batch").await;
    let (deeds, funds): (Vec<_>, Vec<_>) = sc
        .tax_events()
        .into_iter()
        .partition(|e| e.event_id.starts_with("deed-"));
    let again: Vec<_> = deeds
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.event_id = format!("again-{}", e.event_id);
            e
        })
        .collect();
    push_tax(&suite, deeds).await;
    tax_feed_applied(&suite).await;
    let counts = wait_batch(&suite, &batch.batch_id, |c| {
        c.pending as usize == sc.cases.len()
    })
    .await;
    assert_eq!(counts.ready, 0, "no case is ready without its 维修资金");

    suite.stop_followers().await;
    let (replica_b, followers_b) = suite.registration_replica().await;
    push_tax(&suite, funds).await;
    tax_feed_applied(&suite).await;
    wait_batch(&suite, &batch.batch_id, |c| {
        c.ready as usize == sc.cases.len()
    })
    .await;
    for t in followers_b {
        t.abort();
        let _ = t.await;
    }

    suite.restart_followers();
    push_tax(&suite, again).await;
    tax_feed_applied(&suite).await;
    let counts = wait_batch(&suite, &batch.batch_id, |c| {
        c.ready as usize == sc.cases.len()
    })
    .await;
    assert_eq!(counts.pending, 0, "{counts:?}");
    let db = register_db(&suite).await;
    let pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM registration.cases WHERE state = 'pending'")
            .fetch_one(db.pool())
            .await
            .expect("count");
    assert_eq!(pending, 0, "the register holds every case READY");
    replica_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_remembering_facts_still_sees_what_another_replica_recorded() {
    // Registration remembers the buyers and tax facts it saw committed and reads the register for
    // anything else. Replica A follows the first half of the tax feed, one fact of every unit, and
    // so remembers those; then only replica B follows. A's counter must still find every case
    // ready, from the facts B recorded.
    let mut suite = Suite::start().await;
    let sc = Scenario::new("YQ-E2E-014", 2, 6);
    prepare_project(&suite, &sc).await;
    let batch = submit(&suite, &sc, "batch").await;
    let mut seen = HashSet::new();
    let (first, second): (Vec<_>, Vec<_>) = sc
        .tax_events()
        .into_iter()
        .partition(|e| seen.insert(unit_of(e)));
    push_tax(&suite, first).await;
    tax_feed_applied(&suite).await;
    let counts = wait_batch(&suite, &batch.batch_id, |c| {
        c.pending as usize == sc.cases.len()
    })
    .await;
    assert_eq!(counts.ready, 0, "one fact per unit readies no case");
    // A remembers each case's buyers and first fact now; the counter must not take that for all.
    for c in &sc.cases {
        let case = find_by_unit(&suite, &c.unit_code).await;
        let refused = register(&suite, &case.case_id, &format!("early-{}", c.unit_code))
            .await
            .expect_err("a case missing facts is not transferred");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }

    suite.stop_followers().await;
    let (replica_b, followers_b) = suite.registration_replica().await;
    push_tax(&suite, second).await;
    wait_batch(&suite, &batch.batch_id, |c| {
        c.ready as usize == sc.cases.len()
    })
    .await;
    for (i, c) in sc.cases.iter().enumerate() {
        let case = find_by_unit(&suite, &c.unit_code).await;
        let done = transfer_and_issue(&suite, &case.case_id, &format!("hand-{i}"))
            .await
            .unwrap_or_else(|s| panic!("replica A refused {}: {s:?}", c.unit_code));
        assert!(done.certificate.is_some(), "{}", c.unit_code);
    }
    for t in followers_b {
        t.abort();
    }
    replica_b.stop().await;
}
