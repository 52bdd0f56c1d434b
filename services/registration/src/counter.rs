//! The counter's writes with group commit (合并提交). RegisterTransfer, IssueCertificate and
//! RegisterTransferAndIssue calls queue here; a worker per queue takes every request waiting and
//! settles them in ONE transaction: locks the cases in one order, looks the request ids up (retries
//! get their stored reply), re-checks each case against the register, writes cases, log, and the
//! new request ids with their replies with multi-row statements, and commits. A request id is
//! written once, with its reply: no claim row first, because the case locks already serialise
//! duplicates. For certificates it also reserves a block of consecutive serials per county with one
//! counter-row update, so the counter row is locked once per batch instead of once per certificate:
//! numbering stays gap-free and exactly-once while throughput scales with the batch.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tongjiao_auth::Claims;
use tongjiao_domain::{
    CaseEvent, CaseState, CertificateKind, CertificateNumber, UnitCode, case_missing,
    province_abbr, transition,
};
use tongjiao_proto::registration as pb;
use tongjiao_server::{ApiError, timestamp_ms};
use tongjiao_store::{
    Idempotency, RequestKey, Rows, StoreError, Tx,
    bulk::{self, Insert},
};

use crate::{
    config::RegistrationConfig,
    convert::{case_proto, mask_case, printed_fields},
    engine::{Engine, Publisher, case_facts, case_writes, evaluate},
    known::KnownFacts,
    rows::{self, BuyerRow, CASE_COLUMNS, CaseRow, Measured, ProjectRow, Val},
};

/// Requests settled in one transaction at most.
const MAX_BATCH: usize = 256;
/// Batches of committed cases waiting for the workflow store; a full queue slows the workers.
const PUBLISH_QUEUE: usize = 8;
/// Longest a small batch waits for the rest of its group (see `gather`).
const LINGER: std::time::Duration = std::time::Duration::from_millis(4);
/// One counter request waiting for its batch.
pub struct Job<R> {
    pub claims: Claims,
    pub key: RequestKey,
    pub case_id: String,
    /// 转移登记 first, in the same transaction (RegisterTransferAndIssue); issue jobs only.
    pub transfer_first: bool,
    pub reply: oneshot::Sender<Result<R, ApiError>>,
}

/// A job and the receiver its verdict arrives on.
pub type Queued<R> = (Job<R>, oneshot::Receiver<Result<R, ApiError>>);

pub type IssueJob = Job<pb::IssueCertificateResponse>;
pub type TransferJob = Job<pb::RegisterTransferResponse>;

impl<R> Job<R> {
    pub fn new(
        claims: Claims,
        principal: String,
        method: &'static str,
        request_id: String,
        digest: String,
        case_id: String,
    ) -> Queued<R> {
        let (reply, rx) = oneshot::channel();
        (
            Job {
                claims,
                key: RequestKey {
                    principal,
                    request_id,
                    method,
                    digest,
                },
                case_id,
                transfer_first: false,
                reply,
            },
            rx,
        )
    }

    /// The job also records the 转移登记 of a case that is still READY.
    pub fn with_transfer_first(mut self) -> Self {
        self.transfer_first = true;
        self
    }
}

/// The counter's two queues.
#[derive(Clone)]
pub struct Counters {
    pub issue: mpsc::Sender<IssueJob>,
    pub transfer: mpsc::Sender<TransferJob>,
}

pub struct Issuer {
    pub engine: Engine,
    pub idem: Idempotency,
    pub config: Arc<RegistrationConfig>,
}

/// Starts both workers; each ends when every sender of its queue is gone.
pub fn spawn(issuer: Issuer) -> Counters {
    // The workers hand committed cases to one publisher, in order, and go on to the next batch:
    // the callers already have their replies, and the workflow store is a version-guarded mirror.
    let published = issuer.engine.spawn_publisher(PUBLISH_QUEUE);
    let worker = Arc::new(Worker { issuer, published });
    let (issue, mut issue_rx) = mpsc::channel::<IssueJob>(4 * MAX_BATCH);
    let (transfer, mut transfer_rx) = mpsc::channel::<TransferJob>(4 * MAX_BATCH);
    let me = worker.clone();
    tokio::spawn(async move {
        let mut last = 0;
        while let Some(batch) = gather(&mut issue_rx, last).await {
            last = batch.len();
            let settled = me.issuer.try_settle(&batch).await;
            me.reply(batch, settled, "certificate issuance (发证)")
                .await;
        }
    });
    tokio::spawn(async move {
        let mut last = 0;
        while let Some(batch) = gather(&mut transfer_rx, last).await {
            last = batch.len();
            let settled = worker.issuer.try_transfer(&batch).await;
            worker
                .reply(batch, settled, "transfer registration (转移登记)")
                .await;
        }
    });
    Counters { issue, transfer }
}

/// The next batch: every job waiting, at least one; `None` once the queue is closed and empty.
///
/// Group commit with a short linger (like PostgreSQL's commit_delay): the callers of a large batch
/// come back within a few milliseconds with their next request, so when only a handful arrived
/// while that batch ran, settling them alone would spend a whole transaction on a few jobs and make
/// the large group wait behind it. Then the worker waits up to `LINGER` for the group to reach
/// half the previous batch. A lone caller (the previous batch was small) never waits.
async fn gather<J>(queue: &mut mpsc::Receiver<J>, last: usize) -> Option<Vec<J>> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
        return None;
    }
    if batch.len() * 4 < last {
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() * 2 < last && batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, queue.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
    Some(batch)
}

type Outcome<R> = Result<R, ApiError>;
type Settled<R> = Result<(Vec<Outcome<R>>, Vec<pb::Case>), StoreError>;

/// Which requests of a batch lead, and which are retries of a leader in the same batch.
fn leaders<R>(jobs: &[Job<R>]) -> (Vec<usize>, Vec<Option<usize>>) {
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut follows = vec![None; jobs.len()];
    let mut leaders = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        match first.get(&(j.key.principal.as_str(), j.key.request_id.as_str())) {
            Some(&l) => follows[i] = Some(l),
            None => {
                first.insert((&j.key.principal, &j.key.request_id), i);
                leaders.push(i);
            }
        }
    }
    (leaders, follows)
}

/// Sorts the leaders into new requests and retries of requests settled before (their stored
/// replies, or the reuse refusal, go to `outcomes`). Runs with the batch's cases locked, so a
/// duplicate settled by another replica has committed by now and is seen.
async fn judge_seen<R: Message + Default>(
    idem: &Idempotency,
    tx: &mut Tx<'_>,
    jobs: &[Job<R>],
    leaders: &[usize],
    outcomes: &mut [Option<Outcome<R>>],
) -> Result<Vec<usize>, StoreError> {
    let keys: Vec<RequestKey> = leaders.iter().map(|&i| jobs[i].key.clone()).collect();
    let seen = idem.seen_many(tx, &keys).await?;
    let mut fresh = Vec::new();
    for (&i, seen) in leaders.iter().zip(seen) {
        match seen {
            None => fresh.push(i),
            Some(Ok(bytes)) => {
                outcomes[i] =
                    Some(R::decode(bytes.as_slice()).map_err(|e| {
                        ApiError::internal(format!("stored reply does not decode: {e}"))
                    }));
            }
            Some(Err(e)) => outcomes[i] = Some(Err(ApiError::from(e))),
        }
    }
    Ok(fresh)
}

/// Everything the register knows about the cases of a batch, with the cases locked.
struct Loaded {
    cases: HashMap<String, CaseRow>,
    projects: HashMap<String, ProjectRow>,
    buyers: HashMap<String, Vec<BuyerRow>>,
    facts: rows::UnitFacts,
    /// To remember once the batch committed.
    learned: KnownFacts,
}

async fn load<R>(
    engine: &Engine,
    tx: &mut Tx<'_>,
    jobs: &[Job<R>],
    leaders: &[usize],
    measured: Measured,
) -> Result<Loaded, StoreError> {
    let db = &engine.db;
    // Lock the cases in one order, so two replicas' batches never deadlock.
    let mut case_ids: Vec<String> = leaders.iter().map(|&i| jobs[i].case_id.clone()).collect();
    case_ids.sort();
    case_ids.dedup();
    let prefix = format!("SELECT {CASE_COLUMNS} FROM registration.cases WHERE case_id");
    let suffix = format!(" ORDER BY case_id{}", db.for_update());
    let cases: HashMap<String, CaseRow> =
        rows::fetch_in::<CaseRow>(tx, &prefix, &case_ids, &suffix)
            .await?
            .into_iter()
            .map(|c| (c.case_id.clone(), c))
            .collect();
    let refs: Vec<&CaseRow> = cases.values().collect();
    let (projects, read) = engine
        .projects_and_facts(tx, &refs, &KnownFacts::default(), measured)
        .await?;
    Ok(Loaded {
        cases,
        projects,
        buyers: read.buyers,
        facts: read.facts,
        learned: read.learned,
    })
}

/// The case and project a request names, if the caller may act on them.
fn target<'a, R>(
    job: &Job<R>,
    loaded: &'a Loaded,
) -> Result<(&'a CaseRow, &'a ProjectRow, &'a [BuyerRow]), ApiError> {
    let case = loaded
        .cases
        .get(&job.case_id)
        .ok_or_else(|| crate::api::not_found("case", &job.case_id))?;
    let project = loaded
        .projects
        .get(&case.project_id)
        .ok_or_else(|| crate::api::not_found("project", &case.project_id))?;
    crate::api::project_access(
        &job.claims,
        &project.developer_credit_code,
        &project.county_code,
    )?;
    let buyers = loaded
        .buyers
        .get(&case.case_id)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    Ok((case, project, buyers))
}

/// Each request's reply: its own, or its leader's. A leader's reply is copied only for the
/// retries that follow it in the same batch, and moved to the leader itself (a certificate reply
/// is a kilobyte; copying every one was a visible share of the counter path).
fn fan_out<R: Clone>(
    mut outcomes: Vec<Option<Outcome<R>>>,
    follows: &[Option<usize>],
) -> Vec<Outcome<R>> {
    let copied: Vec<Option<Outcome<R>>> = follows
        .iter()
        .map(|f| f.and_then(|leader| outcomes[leader].clone()))
        .collect();
    outcomes
        .iter_mut()
        .zip(copied)
        .zip(follows)
        .map(|((own, copy), follows)| {
            let outcome = if follows.is_some() { copy } else { own.take() };
            outcome.unwrap_or_else(|| Err(ApiError::internal("request left unsettled")))
        })
        .collect()
}

/// The case as the caller may see it.
fn shown(claims: &Claims, case: &pb::Case) -> pb::Case {
    let mut shown = case.clone();
    if !crate::api::sees_clear_ids(claims) {
        mask_case(&mut shown);
    }
    shown
}

/// An issuer with the queue of its committed cases.
struct Worker {
    issuer: Issuer,
    published: Publisher,
}

impl Worker {
    async fn reply<R>(&self, jobs: Vec<Job<R>>, settled: Settled<R>, what: &str) {
        let n = jobs.len();
        match settled {
            Ok((outcomes, published)) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
                if !published.is_empty() && self.published.send(published).await.is_err() {
                    tracing::warn!("workflow publisher gone; the mirror catches up on rebuild");
                }
            }
            Err(e) => {
                // The whole transaction rolled back: nothing was recorded, each caller may retry
                // with the same request id.
                tracing::error!(error = %e, requests = n, what, "counter batch failed");
                for job in jobs {
                    let _ = job.reply.send(Err(ApiError::Unavailable(format!(
                        "{what} failed and nothing was recorded; retry with the same request_id (办理失败，未登簿，请用同一请求编号重试)"
                    ))));
                }
            }
        }
    }
}

impl Issuer {
    async fn try_settle(&self, jobs: &[IssueJob]) -> Settled<pb::IssueCertificateResponse> {
        let started = std::time::Instant::now();
        let db = &self.engine.db;
        let mut outcomes: Vec<Option<Outcome<pb::IssueCertificateResponse>>> =
            (0..jobs.len()).map(|_| None).collect();
        let (leaders, follows) = leaders(jobs);
        let mut tx = db.begin().await?;
        // A certificate prints the unit's measured data.
        let loaded = load(&self.engine, &mut tx, jobs, &leaders, Measured::Read).await?;
        let fresh = judge_seen(&self.idem, &mut tx, jobs, &leaders, &mut outcomes).await?;
        let Loaded {
            cases,
            projects,
            facts,
            buyers,
            ..
        } = &loaded;

        // Judge each request in arrival order; a case can be issued once even if asked twice here.
        let today = self.engine.clock.today();
        let year = self.engine.clock.now().year();
        let now = self.engine.clock.now_ms();
        let mut accepted: Vec<usize> = Vec::new();
        // The case as 转移登记 left it, for the jobs that recorded it here.
        let mut transferred: HashMap<usize, CaseRow> = HashMap::new();
        let mut issued_here: HashSet<&str> = HashSet::new();
        for &i in &fresh {
            let job = &jobs[i];
            let verdict = (|| {
                let (case, project, case_buyers) = target(job, &loaded)?;
                if issued_here.contains(case.case_id.as_str()) {
                    return Err(ApiError::conflict(
                        "certificate_issued",
                        "certificate already issued for this case by another counter (该办件已由其他窗口发证)",
                    ));
                }
                let after_transfer =
                    if job.transfer_first && case.state != CaseState::TransferRegistered.as_str() {
                        Some(transfer_row(
                            case,
                            case_buyers,
                            project,
                            facts,
                            today,
                            now,
                            "transfer registration and certificate issuance (转移登记并发证)",
                        )?)
                    } else {
                        crate::api::refuse_unless(
                            case,
                            CaseState::TransferRegistered,
                            "certificate issuance (缮证发证)",
                        )?;
                        None
                    };
                let case = after_transfer.as_ref().unwrap_or(case);
                let missing = case_missing(&case_facts(case, case_buyers, project, facts));
                if !missing.is_empty() {
                    return Err(ApiError::precondition(
                        "the certificate cannot be issued (不能发证)",
                        missing,
                    ));
                }
                Ok(after_transfer)
            })();
            match verdict {
                Ok(after_transfer) => {
                    issued_here.insert(job.case_id.as_str());
                    if let Some(row) = after_transfer {
                        transferred.insert(i, row);
                    }
                    accepted.push(i);
                }
                Err(e) => outcomes[i] = Some(Err(e)),
            }
        }

        let kind = CertificateKind::PropertyCertificate;
        // One counter-row update per county reserves the whole block. Taken last among the
        // reads, so the row is held only for the writes and the commit.
        let mut next_serial: HashMap<String, i64> = HashMap::new();
        let mut per_county: HashMap<String, i64> = HashMap::new();
        for &i in &accepted {
            let county = &projects[&cases[&jobs[i].case_id].project_id].county_code;
            *per_county.entry(county.clone()).or_default() += 1;
        }
        let mut counties: Vec<(&String, &i64)> = per_county.iter().collect();
        counties.sort();
        for (county, k) in counties {
            let last: i64 = sqlx::query_scalar(
                "INSERT INTO registration.cert_counters (county_code, year, kind, last_serial) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (county_code, year, kind) DO UPDATE SET last_serial = registration.cert_counters.last_serial + $4 \
                 RETURNING last_serial",
            )
            .bind(county)
            .bind(i64::from(year))
            .bind(kind.as_str())
            .bind(*k)
            .fetch_one(&mut *tx)
            .await?;
            next_serial.insert(county.clone(), last - k + 1);
        }

        let mut cert_rows = Vec::with_capacity(accepted.len());
        let mut case_rows = Vec::with_capacity(accepted.len());
        let mut log_rows = Vec::with_capacity(accepted.len());
        let mut replies = Vec::with_capacity(accepted.len());
        let mut published = Vec::with_capacity(accepted.len());
        for &i in &accepted {
            let job = &jobs[i];
            let row = transferred.get(&i).unwrap_or(&cases[&job.case_id]);
            let project = &projects[&row.project_id];
            if transferred.contains_key(&i) {
                log_rows.push(transfer_log(row, &job.key.principal, now));
            }
            let serial = next_serial
                .get_mut(&project.county_code)
                .map(|s| {
                    let v = *s;
                    *s += 1;
                    v
                })
                .unwrap_or(1);
            let case_buyers = buyers.get(&row.case_id).cloned().unwrap_or_default();
            let outcome = (|| {
                let region = self
                    .config
                    .county_names
                    .get(&project.county_code)
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::internal(format!("no county name for {}", project.county_code))
                    })?;
                let abbr = province_abbr(&project.county_code).ok_or_else(|| {
                    ApiError::internal(format!("no province for {}", project.county_code))
                })?;
                let number =
                    CertificateNumber::new(abbr, year as u16, region.clone(), kind, serial as u64)
                        .map_err(ApiError::internal)?
                        .to_string();
                let unit_code: UnitCode = row.unit_code.parse().map_err(ApiError::internal)?;
                let printed = printed_fields(
                    project,
                    row,
                    &case_buyers,
                    facts.measured.get(&row.unit_code),
                );
                let certificate = pb::Certificate {
                    certificate_number: number.clone(),
                    kind: pb::CertificateKind::PropertyCertificate as i32,
                    year: year as u32,
                    serial: serial as u64,
                    case_id: row.case_id.clone(),
                    right_holders: printed.right_holders,
                    co_ownership: printed.co_ownership,
                    location: printed.location,
                    unit_code: unit_code.spaced(),
                    right_type: printed.right_type,
                    right_nature: printed.right_nature,
                    usage: printed.usage,
                    area: printed.area,
                    term_of_use: printed.term_of_use,
                    other_info: printed.other_info,
                    remarks: printed.remarks,
                    authority: format!("{region}不动产登记中心"),
                    issued_at: Some(timestamp_ms(now)),
                    unit_code_raw: row.unit_code.clone(),
                };
                let mut next = row.clone();
                next.state =
                    transition(CaseState::TransferRegistered, CaseEvent::CertificateIssued)
                        .map_err(|e| ApiError::conflict("invalid_transition", e.to_string()))?
                        .as_str()
                        .to_owned();
                next.version += 1;
                next.certificate_number = Some(number);
                next.updated_at_ms = now;
                Ok::<_, ApiError>((certificate, next))
            })();
            // Every reserved serial must be used: a failure here fails the whole batch, so the
            // block is given back by the rollback.
            let (certificate, next) = outcome.map_err(|e| StoreError::Corrupt(e.to_string()))?;
            cert_rows.push(vec![
                Val::Text(certificate.certificate_number.clone()),
                Val::Text(kind.as_str().to_owned()),
                Val::Text(project.county_code.clone()),
                Val::Int(i64::from(year)),
                Val::Int(serial),
                Val::Text(next.case_id.clone()),
                Val::Bytes(certificate.encode_to_vec()),
                Val::Text(job.key.principal.clone()),
                Val::Int(now),
            ]);
            log_rows.push(vec![
                Val::Text(next.case_id.clone()),
                Val::Int(next.version),
                Val::Text(next.state.clone()),
                Val::Text(job.key.principal.clone()),
                Val::Text(format!(
                    "certificate issued (已发证): {}",
                    certificate.certificate_number
                )),
                Val::Int(now),
            ]);
            let case = case_proto(&next, &case_buyers);
            let reply = pb::IssueCertificateResponse {
                certificate: Some(certificate),
                case: Some(shown(&job.claims, &case)),
            };
            replies.push((i, job.key.clone(), reply));
            case_rows.push(rows::case_change_values(&next));
            published.push(case);
        }
        let (certs, cases, log) = (
            Rows::from(cert_rows),
            Rows::from(case_rows),
            Rows::from(log_rows),
        );
        let [case_part, log_part] = case_writes(&cases, &log);
        let certificates = Insert {
            head: "INSERT INTO registration.certificates (certificate_number, kind, county_code, year, serial, case_id, payload, issued_by, issued_at_ms)",
            rows: &certs,
            tail: "",
        };
        let done = replies.len();
        finish(
            &self.idem,
            tx,
            [certificates, case_part, log_part],
            replies,
            &mut outcomes,
        )
        .await?;
        // Nothing of what the batch read is remembered: its issued cases leave the live states, and
        // the memory with them.
        self.engine.forget(
            published
                .iter()
                .map(|c| (c.case_id.as_str(), c.unit_code.as_str())),
        );
        if done > 0 {
            // The batch's time from its first statement to its commit: every request of the batch
            // waited at least this long, so a slow one shows here before it shows in a p99.
            tracing::info!(
                certificates = done,
                requests = jobs.len(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "certificates issued (不动产权证书已发放)"
            );
        }
        let settled = fan_out(outcomes, &follows);
        Ok((settled, published))
    }
}

impl Issuer {
    /// 转移登记 for a batch: each ready case moves to TRANSFER_REGISTERED after its readiness is
    /// re-evaluated from the register inside the transaction.
    async fn try_transfer(&self, jobs: &[TransferJob]) -> Settled<pb::RegisterTransferResponse> {
        let started = std::time::Instant::now();
        let db = &self.engine.db;
        let mut outcomes: Vec<Option<Outcome<pb::RegisterTransferResponse>>> =
            (0..jobs.len()).map(|_| None).collect();
        let (leaders, follows) = leaders(jobs);
        let mut tx = db.begin().await?;
        let loaded = load(&self.engine, &mut tx, jobs, &leaders, Measured::Skip).await?;
        let fresh = judge_seen(&self.idem, &mut tx, jobs, &leaders, &mut outcomes).await?;
        let today = self.engine.clock.today();
        let now = self.engine.clock.now_ms();
        let mut done_here: HashSet<&str> = HashSet::new();
        let mut case_rows = Vec::new();
        let mut log_rows = Vec::new();
        let mut replies = Vec::new();
        let mut published = Vec::new();
        for &i in &fresh {
            let job = &jobs[i];
            let verdict = (|| {
                let (case, project, buyers) = target(job, &loaded)?;
                if done_here.contains(case.case_id.as_str()) {
                    return Err(ApiError::conflict(
                        "transfer_registered",
                        "transfer registration already recorded by another counter (转移登记已由其他窗口办理)",
                    ));
                }
                let row = transfer_row(
                    case,
                    buyers,
                    project,
                    &loaded.facts,
                    today,
                    now,
                    "transfer registration (转移登记)",
                )?;
                Ok((row, buyers))
            })();
            match verdict {
                Ok((row, buyers)) => {
                    done_here.insert(job.case_id.as_str());
                    log_rows.push(transfer_log(&row, &job.key.principal, now));
                    case_rows.push(rows::case_change_values(&row));
                    let case = case_proto(&row, buyers);
                    let reply = pb::RegisterTransferResponse {
                        case: Some(shown(&job.claims, &case)),
                    };
                    replies.push((i, job.key.clone(), reply));
                    published.push(case);
                }
                Err(e) => outcomes[i] = Some(Err(e)),
            }
        }
        let (cases, log) = (Rows::from(case_rows), Rows::from(log_rows));
        let done = replies.len();
        finish(
            &self.idem,
            tx,
            case_writes(&cases, &log),
            replies,
            &mut outcomes,
        )
        .await?;
        self.engine.remember(loaded.learned);
        if done > 0 {
            tracing::info!(
                cases = done,
                requests = jobs.len(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "transfers registered (转移登记)"
            );
        }
        Ok((fan_out(outcomes, &follows), published))
    }
}

/// The case after its 转移登记: readiness is re-evaluated from the register first (the mirror may lag
/// a fact or a deadline), and only a READY case moves on.
fn transfer_row(
    case: &CaseRow,
    buyers: &[BuyerRow],
    project: &ProjectRow,
    facts: &rows::UnitFacts,
    today: time::Date,
    now: i64,
    action: &str,
) -> Result<CaseRow, ApiError> {
    let mut row = case.clone();
    if matches!(row.state.as_str(), "pending" | "ready") {
        let e = evaluate(&row, buyers, project, facts, today);
        row.state = e.state;
        row.missing = e.missing;
        if let Some(reason) = e.lapsed_reason {
            row.lapsed_reason = Some(reason);
        }
    }
    crate::api::refuse_unless(&row, CaseState::Ready, action)?;
    row.state = transition(CaseState::Ready, CaseEvent::TransferRegistered)
        .map_err(|e| ApiError::conflict("invalid_transition", e.to_string()))?
        .as_str()
        .to_owned();
    row.missing = String::new();
    row.version += 1;
    row.transfer_registered_at_ms = Some(now);
    row.updated_at_ms = now;
    Ok(row)
}

/// The case-log entry of a 转移登记.
fn transfer_log(row: &CaseRow, principal: &str, now: i64) -> Vec<Val> {
    vec![
        Val::Text(row.case_id.clone()),
        Val::Int(row.version),
        Val::Text(row.state.clone()),
        Val::Text(principal.to_owned()),
        Val::Text("transfer registration recorded (转移登记登簿)".to_owned()),
        Val::Int(now),
    ]
}

/// Writes the batch's rows and the replies under their request ids in one round trip, commits,
/// and only then hands the replies out.
async fn finish<R: Message, const N: usize>(
    idem: &Idempotency,
    mut tx: Tx<'static>,
    writes: [Insert<'_>; N],
    replies: Vec<(usize, RequestKey, R)>,
    outcomes: &mut [Option<Outcome<R>>],
) -> Result<(), StoreError> {
    let stored = idem.completion_rows(
        replies
            .iter()
            .map(|(_, key, reply)| (key.clone(), reply.encode_to_vec()))
            .collect(),
    );
    let mut parts: Vec<Insert<'_>> = writes.into_iter().collect();
    parts.push(idem.completion(&stored));
    bulk::insert_all(&mut tx, &parts).await?;
    tx.commit().await.map_err(StoreError::from)?;
    for (i, reply) in replies.into_iter().map(|(i, _, reply)| (i, reply)) {
        outcomes[i] = Some(Ok(reply));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(n: usize) -> (mpsc::Sender<usize>, mpsc::Receiver<usize>) {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 2);
        for i in 0..n {
            tx.try_send(i).expect("room");
        }
        (tx, rx)
    }

    #[test]
    fn retries_in_a_batch_get_their_leaders_reply() {
        let outcomes: Vec<Option<Outcome<u32>>> = vec![
            Some(Ok(7)),
            None,
            Some(Err(ApiError::internal("refused"))),
            None,
            None,
        ];
        let follows = [None, Some(0), None, Some(2), None];
        let got = fan_out(outcomes, &follows);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].as_ref().ok(), Some(&7));
        assert_eq!(got[1].as_ref().ok(), Some(&7));
        assert!(got[2].is_err() && got[3].is_err());
        assert!(
            matches!(&got[4], Err(e) if e.to_string().contains("unsettled")),
            "{:?}",
            got[4]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_request_is_taken_at_once() {
        let (_tx, mut rx) = queue(1);
        let t = tokio::time::Instant::now();
        assert_eq!(gather(&mut rx, 1).await, Some(vec![0]));
        assert_eq!(t.elapsed(), std::time::Duration::ZERO, "no linger");
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_remainder_waits_for_the_rest_of_a_large_group() {
        let (tx, mut rx) = queue(5);
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            for i in 5..40 {
                tx.send(i).await.expect("open");
            }
        });
        let batch = gather(&mut rx, 60).await.expect("batch");
        assert_eq!(batch, (0..40).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn the_linger_is_bounded() {
        let (_tx, mut rx) = queue(5);
        let t = tokio::time::Instant::now();
        assert_eq!(gather(&mut rx, 60).await, Some((0..5).collect()));
        assert_eq!(t.elapsed(), LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_empty_queue_ends_the_worker() {
        let (tx, mut rx) = queue(2);
        drop(tx);
        assert_eq!(gather(&mut rx, 0).await, Some(vec![0, 1]));
        assert_eq!(gather(&mut rx, 2).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_never_exceeds_its_limit() {
        let (_tx, mut rx) = queue(MAX_BATCH + 10);
        let batch = gather(&mut rx, MAX_BATCH * 4).await.expect("batch");
        assert_eq!(batch.len(), MAX_BATCH);
    }
}
