//! 验收备案 (acceptance filings) service.
//!
//! Records the filings a project needs before 首次登记 — 规划验收, 竣工验收备案, 人防验收 (where
//! declared required) and 权籍调查 — each with its document digests, and answers whether the
//! project's gate (验收闸口) is complete. Every recorded fact goes out on the service's change feed
//! (`FilingRecorded`, and `GateChanged` whenever the gate's completeness or missing kinds move).

#![forbid(unsafe_code)]

mod gate;
mod repo;
mod validate;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use prost::Message;
use sqlx::migrate::Migrator;
use time::{OffsetDateTime, macros::offset};
use tongjiao_auth::{Claims, Role};
use tongjiao_proto::acceptance::{
    AcceptanceEvent, DeclareRequirementsRequest, DeclareRequirementsResponse, GetGateStatusRequest,
    GetGateStatusResponse, RecordFilingRequest, RecordFilingResponse, WatchAcceptanceEventsRequest,
    WatchAcceptanceEventsResponse,
    acceptance_event::Payload,
    acceptance_service_server::{AcceptanceService, AcceptanceServiceServer},
};
use tongjiao_server::{
    ApiError, Authenticator, Begun, FeedStream, ServiceSet, begin_mutation, caller, feed_stream,
    field_error, finish_mutation, require_role, timestamp_ms,
};
use tongjiao_store::{Backend, Db, EventLog, Idempotency, NewEvent, Schema, StoreError, now_ms};
use tonic::{Request, Response, Status};

pub use gate::required_kinds;

/// Where the `acceptance` binary listens unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 50052));

/// Event kinds on the feed (the `kind` column of `acceptance.events`).
pub const EVENT_FILING_RECORDED: &str = "FilingRecorded";
pub const EVENT_GATE_CHANGED: &str = "GateChanged";

static MIGRATIONS_POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static MIGRATIONS_SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

const DECLARE_ROLES: &[Role] = &[Role::HousingBureau, Role::Registrar];
const RECORD_ROLES: &[Role] = &[Role::HousingBureau, Role::Registrar];
const GATE_ROLES: &[Role] = &[
    Role::HousingBureau,
    Role::Registrar,
    Role::Clerk,
    Role::Auditor,
];
const WATCH_ROLES: &[Role] = &[Role::Registrar, Role::HousingBureau, Role::Auditor];

/// The AcceptanceService handlers.
#[derive(Clone, Debug)]
pub struct Acceptance {
    db: Db,
    log: EventLog,
    idem: Idempotency,
}

/// Runs the service's migrations and returns its handlers.
pub async fn build(db: Db) -> Result<Acceptance, StoreError> {
    let migrator = match db.backend() {
        Backend::Postgres => &MIGRATIONS_POSTGRES,
        Backend::Sqlite => &MIGRATIONS_SQLITE,
    };
    db.migrate(Schema::Acceptance, migrator).await?;
    Ok(Acceptance {
        db,
        log: EventLog::new(Schema::Acceptance),
        idem: Idempotency::new(Schema::Acceptance),
    })
}

impl Acceptance {
    /// Adds the service, behind JWT authentication, to `set`.
    pub fn register(self, set: &mut ServiceSet, auth: Authenticator) {
        set.named(<AcceptanceServiceServer<Acceptance> as tonic::server::NamedService>::NAME)
            .add_service(AcceptanceServiceServer::with_interceptor(self, auth));
    }

    async fn declare_requirements(
        &self,
        req: Request<DeclareRequirementsRequest>,
    ) -> Result<DeclareRequirementsResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(&claims, DECLARE_ROLES)?;
        let req = req.into_inner();
        let project_id = validate::declare_requirements(&req)?;
        let principal = principal(&claims);
        let mut tx = match begin_mutation(
            &self.db,
            &self.idem,
            &principal,
            &req.request_id,
            "DeclareRequirements",
            &req,
        )
        .await?
        {
            Begun::Replay(resp) => return Ok(resp),
            Begun::New(tx) => tx,
        };

        let now = now_ms();
        let pid = project_id.as_str();
        repo::lock_project(&mut tx, &self.db, pid, now).await?;
        let before = repo::load_gate(&mut tx, pid).await?;
        repo::upsert_requirements(&mut tx, pid, req.civil_air_defense_required, now).await?;
        let after = gate::gate_of(
            pid,
            req.civil_air_defense_required,
            before.gate.filings.clone(),
        );

        let mut events = Vec::new();
        if !before.declared || gate::changed(&before.gate, &after) {
            events.push(event(
                pid,
                now,
                EVENT_GATE_CHANGED,
                Payload::GateChanged(after.clone()),
            ));
        }
        let resp = DeclareRequirementsResponse {
            gate: Some(after.clone()),
        };
        let seqs = self.log.append(&mut tx, events, now).await?;
        finish_mutation(&self.idem, tx, &principal, &req.request_id, &resp).await?;
        if let Some(last) = seqs.last() {
            self.log.notify_committed(*last);
        }
        tracing::info!(
            project_id = pid,
            civil_air_defense_required = req.civil_air_defense_required,
            complete = after.complete,
            gate_changed = !seqs.is_empty(),
            by = %principal,
            "requirements declared (验收要求已声明)"
        );
        Ok(resp)
    }

    async fn record_filing(
        &self,
        req: Request<RecordFilingRequest>,
    ) -> Result<RecordFilingResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(&claims, RECORD_ROLES)?;
        let req = req.into_inner();
        let valid = validate::record_filing(&req, today_in_china())?;
        let principal = principal(&claims);
        let mut tx = match begin_mutation(
            &self.db,
            &self.idem,
            &principal,
            &req.request_id,
            "RecordFiling",
            &req,
        )
        .await?
        {
            Begun::Replay(resp) => return Ok(resp),
            Begun::New(tx) => tx,
        };

        let now = now_ms();
        let pid = valid.project_id.as_str();
        let ordinal = repo::next_filing_ordinal(&mut tx, pid, now).await?;
        let before = repo::load_gate(&mut tx, pid).await?;
        let filing_id = uuid::Uuid::now_v7().to_string();
        let filing = repo::insert_filing(&mut tx, &filing_id, ordinal, &valid, now).await?;
        let after = gate::with_filing(&before.gate, filing.clone());
        let gate_changed = gate::changed(&before.gate, &after);

        let mut events = vec![event(
            pid,
            now,
            EVENT_FILING_RECORDED,
            Payload::FilingRecorded(filing.clone()),
        )];
        if gate_changed {
            events.push(event(
                pid,
                now,
                EVENT_GATE_CHANGED,
                Payload::GateChanged(after.clone()),
            ));
        }
        let resp = RecordFilingResponse {
            filing: Some(filing),
            gate: Some(after.clone()),
        };
        let seqs = self.log.append(&mut tx, events, now).await?;
        finish_mutation(&self.idem, tx, &principal, &req.request_id, &resp).await?;
        if let Some(last) = seqs.last() {
            self.log.notify_committed(*last);
        }
        tracing::info!(
            project_id = pid,
            filing_id = %filing_id,
            kind = gate::kind_label(valid.kind),
            documents = valid.documents.len(),
            complete = after.complete,
            gate_changed,
            by = %principal,
            "filing recorded (备案已记录)"
        );
        Ok(resp)
    }

    async fn get_gate_status(
        &self,
        req: Request<GetGateStatusRequest>,
    ) -> Result<GetGateStatusResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(&claims, GATE_ROLES)?;
        let project_id = validate::get_gate_status(req.get_ref())?;
        let mut tx = self.db.begin().await?;
        if self.db.backend() == Backend::Postgres {
            // One snapshot for the requirement and the filings.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        }
        let loaded = repo::load_gate(&mut tx, project_id.as_str()).await?;
        tx.rollback().await.map_err(StoreError::from)?;
        Ok(GetGateStatusResponse {
            gate: Some(loaded.gate),
        })
    }

    fn watch_acceptance_events(
        &self,
        req: Request<WatchAcceptanceEventsRequest>,
    ) -> Result<FeedStream<WatchAcceptanceEventsResponse>, ApiError> {
        let claims = caller(&req)?;
        require_role(&claims, WATCH_ROLES)?;
        let req = req.into_inner();
        let after = i64::try_from(req.after_sequence).map_err(|_| {
            field_error(
                "after_sequence",
                format!("must be at most {} (序号过大)", i64::MAX),
            )
        })?;
        Ok(feed_stream(
            self.db.clone(),
            self.log.clone(),
            after,
            req.backlog_only,
            |stored| {
                let mut ev = AcceptanceEvent::decode(stored.payload.as_slice()).map_err(|e| {
                    Status::from(ApiError::internal(format!(
                        "event {} does not decode: {e}",
                        stored.sequence
                    )))
                })?;
                ev.sequence = u64::try_from(stored.sequence).unwrap_or_default();
                Ok(WatchAcceptanceEventsResponse { event: Some(ev) })
            },
        ))
    }
}

#[tonic::async_trait]
impl AcceptanceService for Acceptance {
    async fn declare_requirements(
        &self,
        request: Request<DeclareRequirementsRequest>,
    ) -> Result<Response<DeclareRequirementsResponse>, Status> {
        Acceptance::declare_requirements(self, request)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn record_filing(
        &self,
        request: Request<RecordFilingRequest>,
    ) -> Result<Response<RecordFilingResponse>, Status> {
        Acceptance::record_filing(self, request)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn get_gate_status(
        &self,
        request: Request<GetGateStatusRequest>,
    ) -> Result<Response<GetGateStatusResponse>, Status> {
        Acceptance::get_gate_status(self, request)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    type WatchAcceptanceEventsStream = FeedStream<WatchAcceptanceEventsResponse>;

    async fn watch_acceptance_events(
        &self,
        request: Request<WatchAcceptanceEventsRequest>,
    ) -> Result<Response<Self::WatchAcceptanceEventsStream>, Status> {
        Acceptance::watch_acceptance_events(self, request)
            .map(Response::new)
            .map_err(Status::from)
    }
}

/// The idempotency principal: role and subject of the caller.
fn principal(claims: &Claims) -> String {
    format!("{}:{}", claims.role.as_str(), claims.sub)
}

/// Today's date in China (UTC+8), the reference for "not in the future".
fn today_in_china() -> time::Date {
    OffsetDateTime::now_utc().to_offset(offset!(+8)).date()
}

/// A feed event about `project_id`; the payload is the event encoded without its sequence.
fn event(project_id: &str, now: i64, kind: &'static str, payload: Payload) -> NewEvent {
    let event_id = uuid::Uuid::now_v7().to_string();
    let ev = AcceptanceEvent {
        sequence: 0,
        event_id: event_id.clone(),
        recorded_at: Some(timestamp_ms(now)),
        project_id: project_id.to_owned(),
        payload: Some(payload),
    };
    NewEvent {
        event_id,
        kind,
        subject: project_id.to_owned(),
        payload: ev.encode_to_vec(),
        content_sha256: None,
    }
}
