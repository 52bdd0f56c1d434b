//! The handover day, phase by phase, through the generated gRPC clients with a token per role.
use std::{
    collections::{BTreeMap, HashSet},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use tokio_stream::StreamExt;
use tongjiao_auth::{Role, TokenIssuer, TokenSpec};
use tongjiao_proto::{
    acceptance::acceptance_service_client::AcceptanceServiceClient,
    registration::{self as reg, registration_service_client::RegistrationServiceClient},
    survey::survey_data_service_client::SurveyDataServiceClient,
    tax::{self, tax_status_service_client::TaxStatusServiceClient},
};
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

use crate::{
    data::{self, CasePlan, Project},
    procs::{CpuMeter, CpuSnapshot, CpuUse, channel},
    stats::{Latency, Samples, rate, round3},
};

/// Bearer tokens per role, parsed once.
pub struct Tokens {
    pub developer: MetadataValue<Ascii>,
    pub housing: MetadataValue<Ascii>,
    pub tax: MetadataValue<Ascii>,
    pub clerk: MetadataValue<Ascii>,
    pub registrar: MetadataValue<Ascii>,
}

impl Tokens {
    pub fn new(issuer: &TokenIssuer, developer_org: &str) -> anyhow::Result<Tokens> {
        let mk = |role: Role, sub: &str, org: Option<&str>, county: Option<&str>| {
            let t = issuer.issue(&TokenSpec {
                role,
                subject: sub.to_owned(),
                org: org.map(str::to_owned),
                county: county.map(str::to_owned),
                ttl: Duration::from_secs(6 * 3600),
            })?;
            format!("Bearer {t}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|e| anyhow!("token is not ASCII: {e}"))
        };
        Ok(Tokens {
            developer: mk(
                Role::Developer,
                "bench-developer",
                Some(developer_org),
                None,
            )?,
            housing: mk(Role::HousingBureau, "bench-housing", None, None)?,
            tax: mk(Role::TaxBureau, "bench-tax", None, None)?,
            clerk: mk(Role::Clerk, "bench-clerk", None, Some(data::COUNTY))?,
            registrar: mk(Role::Registrar, "bench-registrar", None, None)?,
        })
    }
}

fn authed<T>(msg: T, token: &MetadataValue<Ascii>) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", token.clone());
    r.set_timeout(Duration::from_secs(120));
    r
}

/// One timed phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub description: String,
    pub wall_s: f64,
    pub items: u64,
    pub unit: String,
    pub rate_per_s: f64,
    /// Latency per RPC (and per counter iteration), milliseconds.
    pub latency: BTreeMap<String, Latency>,
    pub cpu: CpuUse,
    /// Phase-specific figures.
    pub detail: serde_json::Value,
}

/// Certificates issued at the counters.
#[derive(Debug, Clone)]
pub struct Issued {
    pub serial: u64,
    pub number: String,
    pub case_id: String,
}

/// How a counter settles a case after its look-up.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterFlow {
    /// One RegisterTransferAndIssue call (转移登记并发证): 2 RPCs per certificate.
    Combined,
    /// RegisterTransfer, then IssueCertificate: 3 RPCs per certificate.
    Separate,
}

impl CounterFlow {
    pub fn rpcs_per_certificate(self) -> u64 {
        match self {
            CounterFlow::Combined => 2,
            CounterFlow::Separate => 3,
        }
    }
}

pub struct Suite {
    pub survey: String,
    pub acceptance: String,
    pub tax: String,
    pub registration: String,
    pub tokens: Tokens,
    pub counters: usize,
    pub channels: usize,
    pub counter_flow: CounterFlow,
    pub tax_streams: usize,
    pub dup_percent: u32,
    pub seed: u64,
    pub meter: CpuMeter,
    /// The run's database, for the server's WAL position at phase boundaries.
    pub pg: sqlx::PgPool,
    pub phases: Vec<Phase>,
    pub failures: Vec<String>,
    pub batch_ids: Vec<String>,
    pub issued: Vec<Issued>,
    pub tax_acks: serde_json::Value,
    /// Tax events kept out of the burst, sent one at a time afterwards (readiness_single).
    pub held_events: Vec<tax::PushCompletionsRequest>,
}

type RegClient = RegistrationServiceClient<Channel>;

/// Where a phase starts: CPU ticks and the server's WAL insert position.
pub struct Mark {
    cpu: CpuSnapshot,
    wal: Option<u64>,
}

/// Pause between GetHandoverBatch polls while waiting for readiness: fine enough for a 100 ms
/// target, coarse enough not to steal the registration process's CPU on a small machine.
const READINESS_POLL: Duration = Duration::from_millis(5);
/// Poll pause of readiness_single: one event in flight, so the poll may be tight.
const SINGLE_POLL: Duration = Duration::from_millis(1);
/// Tax events sent one at a time after the burst (at most a tenth of the cases).
const SINGLE_EVENTS: usize = 20;

const TRANSIENT: [Code; 5] = [
    Code::Unavailable,
    Code::Aborted,
    Code::ResourceExhausted,
    Code::DeadlineExceeded,
    Code::Unknown,
];

/// Calls `f` again (same request id) on transient errors, at most 5 retries.
async fn retrying<T, F, Fut>(retries: &AtomicU64, mut f: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut attempt = 0u64;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(s) if TRANSIENT.contains(&s.code()) && attempt < 5 => {
                attempt += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
            }
            Err(s) => return Err(s),
        }
    }
}

impl Suite {
    /// The server's WAL insert position in bytes; `None` if it cannot be read (the phase's WAL is
    /// then reported unknown rather than failing the run).
    async fn wal_position(&self) -> Option<u64> {
        let pos: i64 = sqlx::query_scalar(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint",
        )
        .fetch_one(&self.pg)
        .await
        .ok()?;
        u64::try_from(pos).ok()
    }

    async fn mark(&self) -> Mark {
        let wal = self.wal_position().await;
        Mark {
            cpu: self.meter.snapshot(),
            wal,
        }
    }

    /// CPU and WAL since `start`.
    async fn used(&self, start: &Mark) -> CpuUse {
        let mut cpu = self.meter.since(&start.cpu);
        let end = self.wal_position().await;
        cpu.wal_bytes = start.wal.zip(end).map(|(a, b)| b.saturating_sub(a));
        cpu
    }

    async fn reg(&self) -> anyhow::Result<RegClient> {
        Ok(RegClient::new(channel(&self.registration).await?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    async fn reg_channels(&self) -> anyhow::Result<Vec<RegClient>> {
        let mut v = Vec::new();
        for _ in 0..self.channels.max(1) {
            v.push(
                RegClient::new(channel(&self.registration).await?)
                    .max_decoding_message_size(64 << 20),
            );
        }
        Ok(v)
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        name: &str,
        description: &str,
        wall: Duration,
        items: u64,
        unit: &str,
        latency: BTreeMap<String, Latency>,
        cpu: CpuUse,
        detail: serde_json::Value,
    ) {
        let p = Phase {
            name: name.into(),
            description: description.into(),
            wall_s: round3(wall.as_secs_f64()),
            items,
            unit: unit.into(),
            rate_per_s: rate(items, wall),
            latency,
            cpu,
            detail,
        };
        eprintln!(
            "  {:<20} {:>9.3} s  {:>7} {:<13} {:>12.1}/s",
            p.name, p.wall_s, p.items, p.unit, p.rate_per_s
        );
        self.phases.push(p);
    }

    /// Phase a: the handover project's 楼盘表, then the separate big table, each one RPC.
    pub async fn upload_tables(&mut self, project: &Project, big: &Project) -> anyhow::Result<()> {
        let mut client = SurveyDataServiceClient::new(channel(&self.survey).await?)
            .max_encoding_message_size(256 << 20)
            .max_decoding_message_size(64 << 20);
        for (name, desc, p) in [
            (
                "survey_upload",
                "UploadBuildingTable of the handover project (accepted and durable = RPC returned)",
                project,
            ),
            (
                "big_table_upload",
                "UploadBuildingTable of a separate project's big table, alone",
                big,
            ),
        ] {
            let req = p.building_table();
            let units = p.unit_count() as u64;
            let bytes = prost::Message::encoded_len(&req);
            let cpu0 = self.mark().await;
            let t = Instant::now();
            let resp = client
                .upload_building_table(authed(req, &self.tokens.housing))
                .await
                .with_context(|| format!("UploadBuildingTable {}", p.project_id))?
                .into_inner();
            let wall = t.elapsed();
            let cpu = self.used(&cpu0).await;
            if u64::from(resp.unit_count) != units {
                self.failures.push(format!(
                    "{name}: the service stored {} units, {units} sent",
                    resp.unit_count
                ));
            }
            let mut s = Samples::default();
            s.push(wall);
            self.record(
                name,
                desc,
                wall,
                units,
                "units",
                BTreeMap::from([("UploadBuildingTable".into(), s.summary())]),
                cpu,
                serde_json::json!({
                    "project_id": p.project_id,
                    "buildings": resp.building_count,
                    "units": resp.unit_count,
                    "version": resp.version,
                    "request_bytes": bytes,
                }),
            );
        }
        Ok(())
    }

    /// Phase b: enrol, the three acceptance filings, the developer's tax, wait for the feeds, apply
    /// and complete 首次登记.
    pub async fn first_registration(&mut self, project: &Project) -> anyhow::Result<()> {
        let cpu0 = self.mark().await;
        let t0 = Instant::now();
        let mut steps = serde_json::Map::new();
        let mut lat = BTreeMap::new();
        let step = |steps: &mut serde_json::Map<String, serde_json::Value>,
                    lat: &mut BTreeMap<String, Latency>,
                    name: &str,
                    t: Instant| {
            let d = t.elapsed();
            steps.insert(
                format!("{name}_ms"),
                round3(d.as_secs_f64() * 1000.0).into(),
            );
            let mut s = Samples::default();
            s.push(d);
            lat.insert(name.to_owned(), s.summary());
        };
        let mut r = self.reg().await?;
        let t = Instant::now();
        r.enroll_project(authed(project.enroll(), &self.tokens.developer))
            .await
            .context("EnrollProject")?;
        step(&mut steps, &mut lat, "EnrollProject", t);

        let mut a = AcceptanceServiceClient::new(channel(&self.acceptance).await?);
        let t = Instant::now();
        for f in project.filings() {
            a.record_filing(authed(f, &self.tokens.housing))
                .await
                .context("RecordFiling")?;
        }
        step(&mut steps, &mut lat, "RecordFiling_x3", t);

        let t = Instant::now();
        let acks = push_feed(
            &self.tax,
            &self.tokens.tax,
            vec![project.developer_tax_event()],
        )
        .await?
        .acks;
        if acks.first().map(|a| a.status) != Some(tax::AckStatus::Accepted as i32) {
            bail!("developer tax event not accepted: {acks:?}");
        }
        step(&mut steps, &mut lat, "PushCompletions_developer_tax", t);

        let t = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut polls = 0u64;
        loop {
            polls += 1;
            let p = r
                .get_project(authed(
                    reg::GetProjectRequest {
                        project_id: project.project_id.clone(),
                    },
                    &self.tokens.developer,
                ))
                .await
                .context("GetProject")?
                .into_inner()
                .project
                .context("GetProject without project")?;
            if p.first_registration_missing.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "首次登记 preconditions still missing after 300 s: {:?}",
                    p.first_registration_missing
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        step(&mut steps, &mut lat, "wait_feeds_followed", t);
        steps.insert("get_project_polls".into(), polls.into());

        let t = Instant::now();
        r.apply_first_registration(authed(
            reg::ApplyFirstRegistrationRequest {
                request_id: format!("apply-{}", project.project_id),
                project_id: project.project_id.clone(),
            },
            &self.tokens.developer,
        ))
        .await
        .context("ApplyFirstRegistration")?;
        step(&mut steps, &mut lat, "ApplyFirstRegistration", t);
        let t = Instant::now();
        r.complete_first_registration(authed(
            reg::CompleteFirstRegistrationRequest {
                request_id: format!("complete-{}", project.project_id),
                project_id: project.project_id.clone(),
            },
            &self.tokens.registrar,
        ))
        .await
        .context("CompleteFirstRegistration")?;
        step(&mut steps, &mut lat, "CompleteFirstRegistration", t);
        let wall = t0.elapsed();
        let cpu = self.used(&cpu0).await;
        self.record(
            "first_registration",
            "enrol, 3 acceptance filings, developer tax, wait until GetProject lacks nothing, apply + complete 首次登记",
            wall,
            1,
            "projects",
            lat,
            cpu,
            serde_json::Value::Object(steps),
        );
        Ok(())
    }

    /// Phase c: the handover batch(es), ≤ 20,000 cases each.
    pub async fn submit_batches(
        &mut self,
        project: &Project,
        today: time::Date,
    ) -> anyhow::Result<()> {
        let mut r = self.reg().await?;
        let batches = project.batches(today);
        let cpu0 = self.mark().await;
        let t0 = Instant::now();
        let mut lat = Samples::default();
        let mut counts = Vec::new();
        for b in batches {
            let n = b.cases.len();
            let t = Instant::now();
            let resp = r
                .submit_handover_batch(authed(b, &self.tokens.developer))
                .await
                .context("SubmitHandoverBatch")?
                .into_inner();
            lat.push(t.elapsed());
            let batch = resp.batch.context("SubmitHandoverBatch without batch")?;
            let c = batch.counts.unwrap_or_default();
            if c.total as usize != n {
                self.failures.push(format!(
                    "batch {}: {} cases stored, {n} sent",
                    batch.batch_id, c.total
                ));
            }
            counts.push(serde_json::json!({
                "batch_id": batch.batch_id, "total": c.total, "pending": c.pending, "ready": c.ready,
            }));
            self.batch_ids.push(batch.batch_id);
        }
        let wall = t0.elapsed();
        let cpu = self.used(&cpu0).await;
        self.record(
            "handover_batch",
            "SubmitHandoverBatch for every unit (1 or 2 buyers each, sole/joint)",
            wall,
            project.cases.len() as u64,
            "cases",
            BTreeMap::from([("SubmitHandoverBatch".into(), lat.summary())]),
            cpu,
            serde_json::json!({
                "batches": counts,
                "buyers": project.buyer_count(),
            }),
        );
        Ok(())
    }

    /// Phase d: the tax feed with duplicates, shuffled; then how long until every case shows READY.
    pub async fn tax_feed(&mut self, project: &Project) -> anyhow::Result<()> {
        // The 维修资金 of the last few cases stays out of the burst: readiness_single sends those
        // one at a time, to time ack → READY without a backlog.
        let held_ids: HashSet<String> = project
            .cases
            .iter()
            .rev()
            .take(SINGLE_EVENTS.min(project.cases.len() / 10))
            .map(|c| format!("fund-{}", c.unit_code))
            .collect();
        let (held, events): (Vec<_>, Vec<_>) = project
            .tax_events()
            .into_iter()
            .partition(|e| held_ids.contains(&e.event_id));
        self.held_events = held;
        let unique = events.len();
        let mut rng = data::Rng::new(self.seed);
        let (feed, dups) = data::with_duplicates_shuffled(events, self.dup_percent, &mut rng);
        let sent = feed.len();
        let streams = self.tax_streams.clamp(1, sent.max(1));
        let mut parts: Vec<Vec<tax::PushCompletionsRequest>> = vec![Vec::new(); streams];
        for (i, e) in feed.into_iter().enumerate() {
            parts[i % streams].push(e);
        }
        let cpu0 = self.mark().await;
        let mut tasks = Vec::new();
        for part in parts {
            let url = self.tax.clone();
            let token = self.tokens.tax.clone();
            tasks.push(tokio::spawn(
                async move { push_feed(&url, &token, part).await },
            ));
        }
        let mut first_send: Option<Instant> = None;
        let mut last_ack: Option<Instant> = None;
        let mut ack_lat = Samples::with_capacity(sent);
        let (mut accepted, mut duplicate, mut rejected, mut acks_n) =
            (0usize, 0usize, 0usize, 0usize);
        let mut first_rejection = None;
        for t in tasks {
            let r = t.await.context("tax stream task")??;
            first_send = match (first_send, r.first_send) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            last_ack = match (last_ack, r.last_ack) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            ack_lat.merge(r.ack_latency);
            for a in &r.acks {
                acks_n += 1;
                match tax::AckStatus::try_from(a.status) {
                    Ok(tax::AckStatus::Accepted) => accepted += 1,
                    Ok(tax::AckStatus::Duplicate) => duplicate += 1,
                    _ => {
                        rejected += 1;
                        if first_rejection.is_none() {
                            first_rejection = Some(format!("{}: {}", a.event_id, a.error));
                        }
                    }
                }
            }
        }
        let cpu = self.used(&cpu0).await;
        let (Some(first_send), Some(last_ack)) = (first_send, last_ack) else {
            bail!("the tax feed sent nothing");
        };
        let wall = last_ack.duration_since(first_send);
        let ok = acks_n == sent && accepted == unique && duplicate == dups && rejected == 0;
        if !ok {
            self.failures.push(format!(
                "tax feed: {acks_n} acks for {sent} events; accepted {accepted} (expected {unique}), duplicate {duplicate} (expected {dups}), rejected {rejected} {}",
                first_rejection.clone().unwrap_or_default()
            ));
        }
        self.tax_acks = serde_json::json!({
            "sent": sent, "unique": unique, "duplicates_sent": dups, "acks": acks_n,
            "accepted": accepted, "duplicate": duplicate, "rejected": rejected, "ok": ok,
        });
        self.record(
            "tax_feed",
            "PushCompletions: 契税 per buyer + 维修资金 per unit, +duplicates, shuffled; first send → last durable ack",
            wall,
            sent as u64,
            "events",
            BTreeMap::from([("PushCompletions_ack".into(), ack_lat.summary())]),
            cpu,
            serde_json::json!({
                "streams": streams,
                "unique_events": unique,
                "duplicates": dups,
                "accepted": accepted,
                "duplicate_acks": duplicate,
                "rejected": rejected,
            }),
        );

        // Readiness visible: poll the batches until every case of the burst is READY.
        let cpu0 = self.mark().await;
        let mut r = self.reg().await?;
        let total_cases = (project.cases.len() - self.held_events.len()) as u64;
        let mut polls = 0u64;
        let mut poll_lat = Samples::default();
        let mut ready_at_first_poll = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        let seen = loop {
            polls += 1;
            let ready = self.ready_cases(&mut r, &mut poll_lat).await?;
            if ready_at_first_poll.is_none() {
                ready_at_first_poll = Some(ready);
            }
            if ready >= total_cases {
                break Instant::now();
            }
            if Instant::now() > deadline {
                self.failures.push(format!(
                    "readiness: only {ready} of {total_cases} cases READY 300 s after the last ack"
                ));
                break Instant::now();
            }
            tokio::time::sleep(READINESS_POLL).await;
        };
        let visible = seen.saturating_duration_since(last_ack);
        let cpu = self.used(&cpu0).await;
        let mut s = Samples::default();
        s.push(visible);
        let mut latency = BTreeMap::from([("GetHandoverBatch_poll".into(), poll_lat.summary())]);
        latency.insert("ready_after_last_ack".into(), s.summary());
        self.record(
            "readiness_visible",
            "last durable tax ack → GetHandoverBatch shows every case READY (5 ms poll; the time the poll answered)",
            visible,
            total_cases,
            "cases",
            latency,
            cpu,
            serde_json::json!({
                "visible_after_last_ack_ms": round3(visible.as_secs_f64() * 1000.0),
                // What a handover day feels: from the bureau's first event to every case READY.
                "first_send_to_all_ready_ms":
                    round3(seen.saturating_duration_since(first_send).as_secs_f64() * 1000.0),
                "polls": polls,
                "ready_at_first_poll": ready_at_first_poll,
            }),
        );
        Ok(())
    }

    /// READY cases over all batches, by one GetHandoverBatch per batch.
    async fn ready_cases(&self, r: &mut RegClient, poll_lat: &mut Samples) -> anyhow::Result<u64> {
        let mut ready = 0u64;
        for id in &self.batch_ids {
            let t = Instant::now();
            let b = r
                .get_handover_batch(authed(
                    reg::GetHandoverBatchRequest {
                        batch_id: id.clone(),
                    },
                    &self.tokens.registrar,
                ))
                .await
                .context("GetHandoverBatch")?
                .into_inner()
                .batch
                .context("GetHandoverBatch without batch")?;
            poll_lat.push(t.elapsed());
            ready += u64::from(b.counts.map(|c| c.ready).unwrap_or(0));
        }
        Ok(ready)
    }

    /// Phase d (cont.): the held-back events one at a time, with no backlog: for each, from its
    /// durable ack until GetHandoverBatch counts its case READY (1 ms poll).
    pub async fn readiness_single(&mut self) -> anyhow::Result<()> {
        let events = std::mem::take(&mut self.held_events);
        if events.is_empty() {
            return Ok(());
        }
        let cpu0 = self.mark().await;
        let mut r = self.reg().await?;
        let mut poll_lat = Samples::default();
        let mut visible = Samples::default();
        let mut acks = Samples::default();
        let mut ready = self.ready_cases(&mut r, &mut poll_lat).await?;
        let t0 = Instant::now();
        for e in &events {
            let pushed = push_feed(&self.tax, &self.tokens.tax, vec![e.clone()]).await?;
            let accepted = pushed
                .acks
                .first()
                .is_some_and(|a| a.status == tax::AckStatus::Accepted as i32);
            if !accepted {
                self.failures.push(format!(
                    "readiness_single: {} not accepted: {:?}",
                    e.event_id,
                    pushed.acks.first()
                ));
                continue;
            }
            acks.merge(pushed.ack_latency);
            let Some(acked) = pushed.last_ack else {
                continue;
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let now_ready = self.ready_cases(&mut r, &mut poll_lat).await?;
                if now_ready > ready {
                    visible.push(acked.elapsed());
                    ready = now_ready;
                    break;
                }
                if Instant::now() > deadline {
                    self.failures.push(format!(
                        "readiness_single: the case of {} not READY 60 s after its ack",
                        e.event_id
                    ));
                    break;
                }
                tokio::time::sleep(SINGLE_POLL).await;
            }
        }
        let wall = t0.elapsed();
        let cpu = self.used(&cpu0).await;
        self.record(
            "readiness_single",
            "one tax event at a time, no backlog: durable ack → its case READY in GetHandoverBatch (1 ms poll)",
            wall,
            events.len() as u64,
            "events",
            BTreeMap::from([
                ("PushCompletions_ack".into(), acks.summary()),
                ("ready_after_ack".into(), visible.summary()),
                ("GetHandoverBatch_poll".into(), poll_lat.summary()),
            ]),
            cpu,
            serde_json::json!({ "events": events.len() }),
        );
        Ok(())
    }

    /// Phase d (cont.): readiness look-ups at the counters' concurrency: FindCases by unit, then
    /// GetCase of what it found.
    pub async fn readiness_lookups(&mut self, project: &Project) -> anyhow::Result<()> {
        let clients = self.reg_channels().await?;
        let cases: Arc<Vec<CasePlan>> = Arc::new(project.cases.clone());
        let next = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let cpu0 = self.mark().await;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..self.counters.max(1) {
            let mut c = clients[w % clients.len()].clone();
            let cases = cases.clone();
            let next = next.clone();
            let errors = errors.clone();
            let token = self.tokens.clerk.clone();
            tasks.push(tokio::spawn(async move {
                let mut find = Samples::default();
                let mut get = Samples::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(plan) = cases.get(i) else { break };
                    let t = Instant::now();
                    let found = c
                        .find_cases(authed(
                            reg::FindCasesRequest {
                                key: Some(reg::find_cases_request::Key::UnitCode(
                                    plan.unit_code.clone(),
                                )),
                            },
                            &token,
                        ))
                        .await;
                    find.push(t.elapsed());
                    let case = match found {
                        Ok(r) => r.into_inner().cases.into_iter().next(),
                        Err(s) => {
                            push_err(&errors, format!("FindCases {}: {s}", plan.unit_code));
                            continue;
                        }
                    };
                    let Some(case) = case else {
                        push_err(&errors, format!("FindCases {}: no case", plan.unit_code));
                        continue;
                    };
                    let t = Instant::now();
                    let got = c
                        .get_case(authed(
                            reg::GetCaseRequest {
                                case_id: case.case_id.clone(),
                            },
                            &token,
                        ))
                        .await;
                    get.push(t.elapsed());
                    match got.map(|r| r.into_inner().case) {
                        Ok(Some(c)) if c.state == reg::CaseState::Ready as i32 => {}
                        Ok(c) => push_err(
                            &errors,
                            format!(
                                "GetCase {}: not READY before the counters open (state {:?})",
                                case.case_id,
                                c.map(|c| c.state)
                            ),
                        ),
                        Err(s) => push_err(&errors, format!("GetCase {}: {s}", case.case_id)),
                    }
                }
                (find, get)
            }));
        }
        let mut find = Samples::default();
        let mut get = Samples::default();
        for t in tasks {
            let (f, g) = t.await?;
            find.merge(f);
            get.merge(g);
        }
        let wall = t0.elapsed();
        let cpu = self.used(&cpu0).await;
        let errs = errors.lock().map(|e| e.clone()).unwrap_or_default();
        if !errs.is_empty() {
            self.failures.push(format!(
                "readiness look-ups: {} errors, first: {}",
                errs.len(),
                errs[0]
            ));
        }
        let items = (find.len() + get.len()) as u64;
        let mut all = find.clone();
        all.merge(get.clone());
        self.record(
            "readiness_lookups",
            "FindCases by unit code, then GetCase, every case, at the counters' concurrency",
            wall,
            items,
            "look-ups",
            BTreeMap::from([
                ("FindCases".into(), find.summary()),
                ("GetCase".into(), get.summary()),
                ("all_lookups".into(), all.summary()),
            ]),
            cpu,
            serde_json::json!({
                "concurrency": self.counters,
                "channels": self.channels,
                "errors": errs.len(),
                "all_ready": errs.is_empty(),
            }),
        );
        Ok(())
    }

    /// Phase e: C counters over the channels: look-up, 转移登记, certificate, until all are issued.
    pub async fn counters(&mut self, project: &Project) -> anyhow::Result<()> {
        let clients = self.reg_channels().await?;
        let cases: Arc<Vec<CasePlan>> = Arc::new(project.cases.clone());
        let next = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let retries = Arc::new(AtomicU64::new(0));
        let cpu0 = self.mark().await;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..self.counters.max(1) {
            let c = clients[w % clients.len()].clone();
            let cases = cases.clone();
            let next = next.clone();
            let errors = errors.clone();
            let retries = retries.clone();
            let token = self.tokens.clerk.clone();
            let flow = self.counter_flow;
            tasks.push(tokio::spawn(async move {
                let mut lat: [Samples; 4] = Default::default();
                let mut issued = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(plan) = cases.get(i) else { break };
                    let t_all = Instant::now();
                    match counter_once(&c, &token, plan, flow, &retries, &mut lat).await {
                        Ok(cert) => {
                            lat[3].push(t_all.elapsed());
                            issued.push(cert);
                        }
                        Err(e) => push_err(&errors, format!("{}: {e:#}", plan.unit_code)),
                    }
                }
                (lat, issued)
            }));
        }
        let mut lat: [Samples; 4] = Default::default();
        for t in tasks {
            let (l, issued) = t.await?;
            for (a, b) in lat.iter_mut().zip(l) {
                a.merge(b);
            }
            self.issued.extend(issued);
        }
        let wall = t0.elapsed();
        let cpu = self.used(&cpu0).await;
        let errs = errors.lock().map(|e| e.clone()).unwrap_or_default();
        if !errs.is_empty() {
            self.failures.push(format!(
                "counters: {} cases failed, first: {}",
                errs.len(),
                errs[0]
            ));
        }
        let [find, transfer, issue, total] = lat;
        let (description, latency) = match self.counter_flow {
            CounterFlow::Combined => (
                "C counters: FindCases → RegisterTransferAndIssue per case until all are issued",
                BTreeMap::from([
                    ("FindCases".into(), find.summary()),
                    ("RegisterTransferAndIssue".into(), issue.summary()),
                    ("counter_total".into(), total.summary()),
                ]),
            ),
            CounterFlow::Separate => (
                "C counters: FindCases → RegisterTransfer → IssueCertificate per case until all are issued",
                BTreeMap::from([
                    ("FindCases".into(), find.summary()),
                    ("RegisterTransfer".into(), transfer.summary()),
                    ("IssueCertificate".into(), issue.summary()),
                    ("counter_total".into(), total.summary()),
                ]),
            ),
        };
        self.record(
            "counters",
            description,
            wall,
            self.issued.len() as u64,
            "certificates",
            latency,
            cpu,
            serde_json::json!({
                "counters": self.counters,
                "channels": self.channels,
                "counter_flow": self.counter_flow,
                "rpcs_per_certificate": self.counter_flow.rpcs_per_certificate(),
                "retries": retries.load(Ordering::Relaxed),
                "failed_cases": errs.len(),
                "errors": errs.iter().take(20).collect::<Vec<_>>(),
            }),
        );
        Ok(())
    }

    /// Batch counts of every batch (summed).
    pub async fn batch_counts(&self) -> anyhow::Result<reg::BatchCounts> {
        let mut r = self.reg().await?;
        let mut sum = reg::BatchCounts::default();
        for id in &self.batch_ids {
            let c = r
                .get_handover_batch(authed(
                    reg::GetHandoverBatchRequest {
                        batch_id: id.clone(),
                    },
                    &self.tokens.registrar,
                ))
                .await?
                .into_inner()
                .batch
                .and_then(|b| b.counts)
                .unwrap_or_default();
            sum.total += c.total;
            sum.pending += c.pending;
            sum.ready += c.ready;
            sum.transfer_registered += c.transfer_registered;
            sum.certificate_issued += c.certificate_issued;
            sum.lapsed += c.lapsed;
            sum.opted_out += c.opted_out;
        }
        Ok(sum)
    }
}

fn push_err(errors: &Mutex<Vec<String>>, e: String) {
    if let Ok(mut v) = errors.lock() {
        v.push(e);
    }
}

/// One counter iteration; latencies go to `lat[0..3]` (FindCases, RegisterTransfer, then
/// IssueCertificate or RegisterTransferAndIssue).
async fn counter_once(
    client: &RegClient,
    token: &MetadataValue<Ascii>,
    plan: &CasePlan,
    flow: CounterFlow,
    retries: &AtomicU64,
    lat: &mut [Samples; 4],
) -> anyhow::Result<Issued> {
    let t = Instant::now();
    let found = retrying(retries, || {
        let mut c = client.clone();
        let req = authed(
            reg::FindCasesRequest {
                key: Some(reg::find_cases_request::Key::UnitCode(
                    plan.unit_code.clone(),
                )),
            },
            token,
        );
        async move { c.find_cases(req).await }
    })
    .await
    .context("FindCases")?
    .into_inner();
    lat[0].push(t.elapsed());
    let case = found
        .cases
        .into_iter()
        .find(|c| c.unit_code == plan.unit_code && c.state == reg::CaseState::Ready as i32)
        .context("FindCases found no READY case for the unit")?;
    let case_id = case.case_id;
    if flow == CounterFlow::Combined {
        let t = Instant::now();
        let resp = retrying(retries, || {
            let mut c = client.clone();
            let req = authed(
                reg::RegisterTransferAndIssueRequest {
                    request_id: format!("hand-{case_id}"),
                    case_id: case_id.clone(),
                },
                token,
            );
            async move { c.register_transfer_and_issue(req).await }
        })
        .await
        .context("RegisterTransferAndIssue")?
        .into_inner();
        lat[2].push(t.elapsed());
        return issued(resp.certificate, case_id);
    }

    let t = Instant::now();
    retrying(retries, || {
        let mut c = client.clone();
        let req = authed(
            reg::RegisterTransferRequest {
                request_id: format!("rt-{case_id}"),
                case_id: case_id.clone(),
            },
            token,
        );
        async move { c.register_transfer(req).await }
    })
    .await
    .context("RegisterTransfer")?;
    lat[1].push(t.elapsed());

    let t = Instant::now();
    let resp = retrying(retries, || {
        let mut c = client.clone();
        let req = authed(
            reg::IssueCertificateRequest {
                request_id: format!("ic-{case_id}"),
                case_id: case_id.clone(),
            },
            token,
        );
        async move { c.issue_certificate(req).await }
    })
    .await
    .context("IssueCertificate")?
    .into_inner();
    lat[2].push(t.elapsed());
    issued(resp.certificate, case_id)
}

/// The certificate a counter call returned, checked against the case it asked for.
fn issued(cert: Option<reg::Certificate>, case_id: String) -> anyhow::Result<Issued> {
    let cert = cert.context("reply without certificate")?;
    if cert.case_id != case_id {
        bail!(
            "certificate {} names case {}",
            cert.certificate_number,
            cert.case_id
        );
    }
    Ok(Issued {
        serial: cert.serial,
        number: cert.certificate_number,
        case_id,
    })
}

/// What one PushCompletions stream did.
pub struct FeedResult {
    pub acks: Vec<tax::PushCompletionsResponse>,
    pub first_send: Option<Instant>,
    pub last_ack: Option<Instant>,
    pub ack_latency: Samples,
}

/// Streams `events` over one PushCompletions call and collects one ack per event (acks come in
/// arrival order, so ack i answers event i).
pub async fn push_feed(
    url: &str,
    token: &MetadataValue<Ascii>,
    events: Vec<tax::PushCompletionsRequest>,
) -> anyhow::Result<FeedResult> {
    let n = events.len();
    let mut client = TaxStatusServiceClient::new(channel(url).await?);
    let sent_at: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let stamps = sent_at.clone();
    let stream = tokio_stream::iter(events).map(move |e| {
        if let Ok(mut v) = stamps.lock() {
            v.push(Instant::now());
        }
        e
    });
    let mut acks_stream = client
        .push_completions(authed(stream, token))
        .await
        .context("PushCompletions")?
        .into_inner();
    let mut acks = Vec::with_capacity(n);
    let mut ack_at = Vec::with_capacity(n);
    while acks.len() < n {
        match acks_stream
            .message()
            .await
            .context("PushCompletions ack stream")?
        {
            Some(a) => {
                ack_at.push(Instant::now());
                acks.push(a);
            }
            None => break,
        }
    }
    let sent = sent_at.lock().map(|v| v.clone()).unwrap_or_default();
    let mut ack_latency = Samples::with_capacity(n);
    for (s, a) in sent.iter().zip(&ack_at) {
        ack_latency.push(a.saturating_duration_since(*s));
    }
    Ok(FeedResult {
        acks,
        first_send: sent.first().copied(),
        last_ack: ack_at.last().copied(),
        ack_latency,
    })
}

/// The certificate checks: N certificates, serials exactly 1..=N, numbers unique, every case once.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CertificateCheck {
    pub expected: u64,
    pub count: u64,
    pub serial_first: u64,
    pub serial_last: u64,
    pub gap_free: bool,
    pub numbers_unique: bool,
    pub cases_unique: bool,
    /// Every printed number parses and carries its serial.
    pub numbers_match_serials: bool,
    /// GetHandoverBatch: certificate_issued summed over the batches.
    pub batch_certificate_issued: u64,
    /// The register itself (registration.certificates), when readable.
    pub db: serde_json::Value,
    pub ok: bool,
}

pub fn check_certificates(issued: &[Issued], expected: u64) -> CertificateCheck {
    let mut serials: Vec<u64> = issued.iter().map(|c| c.serial).collect();
    serials.sort_unstable();
    let gap_free = serials.len() as u64 == expected
        && serials.iter().enumerate().all(|(i, s)| *s == i as u64 + 1);
    let numbers: HashSet<&str> = issued.iter().map(|c| c.number.as_str()).collect();
    let cases: HashSet<&str> = issued.iter().map(|c| c.case_id.as_str()).collect();
    let numbers_match_serials = issued.iter().all(|c| {
        c.number
            .parse::<tongjiao_domain::CertificateNumber>()
            .is_ok_and(|n| n.serial == c.serial)
    });
    let count = issued.len() as u64;
    CertificateCheck {
        expected,
        count,
        serial_first: serials.first().copied().unwrap_or(0),
        serial_last: serials.last().copied().unwrap_or(0),
        gap_free,
        numbers_unique: numbers.len() == issued.len(),
        cases_unique: cases.len() == issued.len(),
        numbers_match_serials,
        batch_certificate_issued: 0,
        db: serde_json::Value::Null,
        ok: count == expected
            && gap_free
            && numbers.len() == issued.len()
            && cases.len() == issued.len()
            && numbers_match_serials,
    }
}
