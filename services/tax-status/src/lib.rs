//! 完税 (tax completion) service. The tax bureau pushes its completion feed (契税 paid or relieved per
//! buyer, 维修资金 deposited, the developer's 税费 cleared, land 出让金 paid) on a bidirectional stream,
//! delivered at least once: every event carries the bureau's event id, duplicates are acknowledged
//! without effect and the recorded state does not depend on delivery order. Registration and the
//! counters ask what is paid, or follow the resumable change feed.

mod push;
mod query;
mod validate;

use std::{
    collections::HashSet,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures::{StreamExt, stream::FuturesOrdered};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tongjiao_auth::Role;
use tongjiao_proto::tax::{
    GetBuyerTaxStatusRequest, GetBuyerTaxStatusResponse, GetProjectTaxStatusRequest,
    GetProjectTaxStatusResponse, GetUnitTaxStatusRequest, GetUnitTaxStatusResponse,
    PushCompletionsRequest, PushCompletionsResponse, TaxEvent, WatchTaxEventsRequest,
    WatchTaxEventsResponse, tax_event,
    tax_status_service_server::{TaxStatusService, TaxStatusServiceServer},
};
use tongjiao_server::{
    ApiError, Authenticator, FeedStream, ServiceSet, caller, feed_stream, field_error, require_role,
};
use tongjiao_store::{Backend, Db, EventLog, Schema, StoreError};
use tonic::{Request, Response, Status, Streaming};

/// Default listen address of the `tax-status` binary.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50053";

/// Most events written in one transaction. A backlog fills whole batches; each costs a commit, a
/// look-up and an insert statement under the feed head's lock, and a pass of each follower. On the
/// handover benchmark's 5,111-event burst (eight interleaved runs each) 1,000 → 2,000 took the feed
/// from 36.5k to 43.1k events/s with readiness 71 → 80 ms after the last ack; 3,000 reached 47.4k
/// but readiness went over 100 ms in 3 of 8 runs: the followers wait longer for each batch.
const BATCH: usize = 2000;
/// Validated events buffered between the stream reader and the writer, so the next batch fills up
/// while the current one commits.
const PIPELINE: usize = 4 * BATCH;
/// Batches of one stream written at once (see `run_push`).
const IN_FLIGHT: usize = 2;

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Who may push the completion feed.
const PUSH_ROLES: &[Role] = &[Role::TaxBureau];
/// Who may ask for tax status.
const READ_ROLES: &[Role] = &[Role::TaxBureau, Role::Registrar, Role::Clerk, Role::Auditor];
/// Who may follow the change feed.
const WATCH_ROLES: &[Role] = &[Role::Registrar, Role::TaxBureau, Role::Auditor];

/// The TaxStatusService handlers.
#[derive(Clone)]
pub struct TaxStatus {
    db: Db,
    log: EventLog,
    /// Completion feed streams open on this process: only a stream alone writes its batches'
    /// facts ahead of the feed head's lock (see `push`).
    pub(crate) push_streams: Arc<AtomicUsize>,
}

/// Connects the service to its schema, applying its migrations.
pub async fn build(db: Db) -> Result<TaxStatus, StoreError> {
    let migrator = match db.backend() {
        Backend::Postgres => &PG_MIGRATIONS,
        Backend::Sqlite => &SQLITE_MIGRATIONS,
    };
    db.migrate(Schema::Tax, migrator).await?;
    Ok(TaxStatus {
        db,
        log: EventLog::new(Schema::Tax),
        push_streams: Arc::default(),
    })
}

impl TaxStatus {
    /// Adds the service, behind `auth`, to `set`.
    pub fn register(self, set: &mut ServiceSet, auth: Authenticator) {
        set.named(<TaxStatusServiceServer<TaxStatus> as tonic::server::NamedService>::NAME)
            .add_service(TaxStatusServiceServer::with_interceptor(self, auth));
    }

    /// Writes batches of whatever the reader has ready and sends their acknowledgements, in order,
    /// until the client half-closes, the client goes away, or a write fails (then nothing of that
    /// batch was acknowledged and the client resends it; a later batch that committed meanwhile is
    /// not acknowledged either, and its resend is answered DUPLICATE).
    ///
    /// Up to `IN_FLIGHT` batches run at once, each in a task of its own: the next one is gathered,
    /// grouped and (on PostgreSQL, for a stream alone on the process) has its facts written while
    /// the current one holds the feed head's lock, and takes the lock the moment that one
    /// committed, so neither the acknowledgements nor the gather sit between two commits. A batch
    /// takes the lock and looks its ids up only after the one before it finished (see
    /// `write_batch`), so a stream's events still get sequences in arrival order and each batch
    /// sees what the previous one recorded. A batch already taken up is written even if the stream
    /// ends meanwhile; its resend is then answered DUPLICATE.
    async fn run_push(
        self,
        mut items: mpsc::Receiver<Result<validate::Item, Status>>,
        out: mpsc::Sender<Result<PushCompletionsResponse, Status>>,
    ) {
        let mut in_flight = FuturesOrdered::new();
        let mut previous: Option<push::Previous> = None;
        let mut broken: Option<Status> = None;
        let mut open = true;
        loop {
            tokio::select! {
                // Acknowledge finished batches first: their callers wait on them.
                biased;
                Some(written) = in_flight.next(), if !in_flight.is_empty() => match written {
                    Ok(acks) => {
                        for ack in acks {
                            if out.send(Ok(ack)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = out.send(Err(Status::from(e))).await;
                        return;
                    }
                },
                // Waits for one event, then takes whatever else is already queued, up to BATCH.
                // (Not `ready_chunks` over a ReceiverStream: tokio's cooperative budget makes that
                // stream report Pending after 128 items, which capped batches at 128.)
                ready = next_batch(&mut items), if open && in_flight.len() < IN_FLIGHT => {
                    let (ready, status) = ready;
                    if ready.is_empty() && status.is_none() {
                        open = false;
                    }
                    if !ready.is_empty() {
                        let me = self.clone();
                        let (done, finished) = tokio::sync::oneshot::channel();
                        let ids: HashSet<String> = ready
                            .iter()
                            .filter_map(|item| match item {
                                validate::Item::Valid(ev) => Some(ev.event_id.clone()),
                                validate::Item::Invalid { .. } => None,
                            })
                            .collect();
                        let after = previous.replace(push::Previous {
                            finished,
                            ids: Arc::new(ids),
                        });
                        // A task of its own: the batch takes the lock the moment the one before it
                        // committed, not once this loop has forwarded that one's acknowledgements.
                        let batch = tokio::spawn(async move { me.write_batch(&ready, after, done).await });
                        in_flight.push_back(async move {
                            batch.await.unwrap_or_else(|e| {
                                Err(ApiError::internal(format!("completion batch task failed: {e}")))
                            })
                        });
                    }
                    if status.is_some() {
                        broken = status;
                        open = false;
                    }
                },
                else => break,
            }
        }
        if let Some(status) = broken {
            tracing::info!(%status, "completion feed stream ended with an error");
            let _ = out.send(Err(status)).await;
        }
    }
}

/// Counts a completion feed stream as open until dropped.
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(count: &Arc<AtomicUsize>) -> OpenStream {
        count.fetch_add(1, Ordering::Relaxed);
        OpenStream(count.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The next batch of valid and invalid items, up to BATCH; with the reader's error if it ended with
/// one (the items before it still count). Empty and no error: the client half-closed.
async fn next_batch(
    items: &mut mpsc::Receiver<Result<validate::Item, Status>>,
) -> (Vec<validate::Item>, Option<Status>) {
    let mut batch = Vec::with_capacity(BATCH);
    items.recv_many(&mut batch, BATCH).await;
    let mut ready = Vec::with_capacity(batch.len());
    for item in batch {
        match item {
            Ok(i) => ready.push(i),
            Err(status) => return (ready, Some(status)),
        }
    }
    (ready, None)
}

/// Reads the client's stream, validating each event, into the writer's queue.
async fn read_push(
    mut inbound: Streaming<PushCompletionsRequest>,
    items: mpsc::Sender<Result<validate::Item, Status>>,
) {
    loop {
        tokio::select! {
            msg = inbound.next() => match msg {
                None => return,
                Some(Ok(req)) => {
                    let item = validate::check(req);
                    if let validate::Item::Invalid { event_id, error } = &item {
                        tracing::info!(event_id = %event_id.escape_debug(), %error, "rejected tax completion");
                    }
                    if items.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
                Some(Err(status)) => {
                    let _ = items.send(Err(status)).await;
                    return;
                }
            },
            _ = items.closed() => return,
        }
    }
}

type PushStream = Pin<Box<dyn Stream<Item = Result<PushCompletionsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TaxStatusService for TaxStatus {
    type PushCompletionsStream = PushStream;
    type WatchTaxEventsStream = FeedStream<WatchTaxEventsResponse>;

    async fn push_completions(
        &self,
        request: Request<Streaming<PushCompletionsRequest>>,
    ) -> Result<Response<Self::PushCompletionsStream>, Status> {
        let claims = caller(&request)?;
        require_role(&claims, PUSH_ROLES)?;
        tracing::info!(principal = %format!("{}:{}", claims.role.as_str(), claims.sub),
            "completion feed opened (完税推送开始)");
        let (items_tx, items_rx) = mpsc::channel(PIPELINE);
        let (out_tx, out_rx) = mpsc::channel(PIPELINE);
        tokio::spawn(read_push(request.into_inner(), items_tx));
        let open = OpenStream::new(&self.push_streams);
        let me = self.clone();
        tokio::spawn(async move {
            me.run_push(items_rx, out_tx).await;
            drop(open);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn get_unit_tax_status(
        &self,
        request: Request<GetUnitTaxStatusRequest>,
    ) -> Result<Response<GetUnitTaxStatusResponse>, Status> {
        let claims = caller(&request)?;
        require_role(&claims, READ_ROLES)?;
        let reply = self
            .unit_status(&request.get_ref().unit_code, claims.role)
            .await?;
        Ok(Response::new(reply))
    }

    async fn get_buyer_tax_status(
        &self,
        request: Request<GetBuyerTaxStatusRequest>,
    ) -> Result<Response<GetBuyerTaxStatusResponse>, Status> {
        let claims = caller(&request)?;
        require_role(&claims, READ_ROLES)?;
        let reply = self
            .buyer_status(&request.get_ref().buyer_id, claims.role)
            .await?;
        Ok(Response::new(reply))
    }

    async fn get_project_tax_status(
        &self,
        request: Request<GetProjectTaxStatusRequest>,
    ) -> Result<Response<GetProjectTaxStatusResponse>, Status> {
        let claims = caller(&request)?;
        require_role(&claims, READ_ROLES)?;
        let reply = self.project_status(&request.get_ref().project_id).await?;
        Ok(Response::new(reply))
    }

    async fn watch_tax_events(
        &self,
        request: Request<WatchTaxEventsRequest>,
    ) -> Result<Response<Self::WatchTaxEventsStream>, Status> {
        let claims = caller(&request)?;
        require_role(&claims, WATCH_ROLES)?;
        let req = request.into_inner();
        let after = i64::try_from(req.after_sequence).map_err(|_| {
            field_error(
                "after_sequence",
                format!("must be at most {} (序号超出范围)", i64::MAX),
            )
        })?;
        let mask = query::masks_buyer(claims.role);
        let stream = feed_stream(
            self.db.clone(),
            self.log.clone(),
            after,
            req.backlog_only,
            move |stored| {
                let mut event = TaxEvent::decode(stored.payload.as_slice()).map_err(|e| {
                    ApiError::internal(format!(
                        "feed event {} does not decode: {e}",
                        stored.sequence
                    ))
                })?;
                event.sequence = u64::try_from(stored.sequence).unwrap_or_default();
                if mask && let Some(tax_event::Payload::DeedTaxPaid(d)) = &mut event.payload {
                    d.buyer_id = query::buyer_for(&d.buyer_id, true)?;
                }
                Ok(WatchTaxEventsResponse { event: Some(event) })
            },
        );
        Ok(Response::new(stream))
    }
}
