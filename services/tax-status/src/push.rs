//! The completion feed's write path (完税推送入库). One batch = one transaction:
//! 1. look the batch's distinct valid event ids up in the feed (`tax.events`, which keeps each
//!    event's content digest): those are DUPLICATE (same digest) or REJECTED (different digest);
//!    the feed never forgets an id, so that answer stands;
//! 2. write the facts of the others (`tax.deed_tax` and the other fact tables, which have no unique
//!    keys: the feed's unique event id is the one that refuses a second row);
//!    on PostgreSQL, steps 1 and 2 run while the stream's previous batch still holds the lock;
//! 3. take the feed head's lock, so batches of concurrent streams (and replicas) apply one at a time,
//!    and look those others up again: an id recorded meanwhile (by the previous batch, or another
//!    stream) is answered as in 1, and the fact rows this transaction wrote for it are deleted;
//! 4. reserve the new events' sequences and append them with their digests (`EventLog::append`);
//! 5. commit, let the stream's next batch take the lock, notify followers, and only then build the
//!    acks, one per request, in arrival order.
//!
//! The facts go in before the lock because the lock is the feed's bottleneck: every batch of every
//! stream passes it one after the other, and the fact rows were nearly half of PostgreSQL's work
//! under it (in isolation ≈ 8 µs a 契税 row against ≈ 10 a feed row). Writing them waits for no
//! one (no unique key, and no other transaction can see or lock rows not yet committed), so a batch
//! holds nothing another batch could wait for while it waits, in the service, for the batch before
//! it. A batch of ids the feed holds already (a replayed
//! backlog) writes nothing and never takes the lock. On SQLite (one connection, one writer) the
//! batch waits first, takes the lock, looks its ids up once and writes only the facts of its new
//! events, in the statement that appends them.
//!
//! The feed is the idempotency record: a separate table of received ids (`tax.received`, dropped by
//! migration 101) repeated the event id, digest and sequence of every event, and its insert was a
//! sixth of the batch's time in PostgreSQL.
//!
//! Two streams delivering the same new event at once: the second batch waits for the head lock,
//! and its SELECT (a new snapshot) then sees the event as recorded. Before the lock came first, the
//! second batch failed on the key and retried, and replays of one feed over several streams could
//! run out of attempts (many_streams_replaying_overlapping_feeds_are_all_acknowledged). A key
//! conflict can still only come from a writer that ignores the lock; the attempt is then rolled back
//! and retried. Nothing is acknowledged from an attempt that did not commit.
use std::collections::HashMap;

use prost::Message;
use tongjiao_proto::tax::{AckStatus, PushCompletionsResponse, TaxEvent};
use tongjiao_server::{ApiError, timestamp_ms};
use tongjiao_store::{
    Backend, NewEvent, Rows, StoreError, Tx, Val,
    bulk::{self, Insert},
    now_ms,
};

use crate::{
    TaxStatus,
    validate::{Fact, Item, ValidEvent},
};

/// Attempts when a concurrent stream recorded one of the batch's event ids first.
const ATTEMPTS: usize = 5;

pub(crate) const REUSED: &str = "event_id reused with different content (事件编号重复但内容不同)";

/// Resolves when a batch has committed or given up: the batch holds the sending half ([`Done`])
/// and drops it. The stream's next batch takes the feed head's lock only then.
pub(crate) type Finished = tokio::sync::oneshot::Receiver<()>;
/// The sending half of [`Finished`].
pub(crate) type Done = tokio::sync::oneshot::Sender<()>;

/// Why one attempt at a batch did not commit.
enum BatchError {
    /// Another stream committed one of our new event ids meanwhile; the next attempt sees it.
    Raced,
    Store(StoreError),
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        // A key of the batch was committed by another stream after our look-up: the feed refuses
        // a second row for one event id (the fact rows go in the same statement).
        if e.is_unique_violation() {
            BatchError::Raced
        } else {
            BatchError::Store(e)
        }
    }
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

/// How each distinct valid event id of a batch stands after the commit.
struct Known {
    content_sha256: String,
    sequence: i64,
    /// Index (in the batch) of the occurrence that this batch recorded, if it did.
    accepted_at: Option<usize>,
}

impl TaxStatus {
    /// Writes one batch and returns its acknowledgements, one per item, in order. On error nothing of
    /// the batch was committed and nothing may be acknowledged.
    ///
    /// `after` is the previous batch of the same stream: this one is validated and grouped at once,
    /// and on PostgreSQL writes its facts, but takes the feed head's lock and looks its ids up only
    /// once that batch has finished, so a stream's events get sequences in arrival order and the
    /// first content of an id wins. `done` is dropped once this batch has committed or given up,
    /// before its acknowledgements are built.
    pub(crate) async fn write_batch(
        &self,
        items: &[Item],
        mut after: Option<Finished>,
        done: Done,
    ) -> Result<Vec<PushCompletionsResponse>, ApiError> {
        let mut done = Some(done);
        let mut attempt = 0;
        let written = loop {
            attempt += 1;
            match self.try_batch(items, &mut after, &mut done).await {
                Ok(known) => break Ok(known),
                Err(BatchError::Raced) if attempt < ATTEMPTS => {
                    tracing::info!(
                        attempt,
                        "event ids recorded concurrently by another stream, retrying batch"
                    );
                }
                Err(BatchError::Raced) => {
                    break Err(ApiError::Unavailable(
                        "event ids are being recorded by another stream; resend (事件正由其他推送写入，请重发)"
                            .into(),
                    ));
                }
                Err(BatchError::Store(e)) => break Err(e.into()),
            }
        };
        // A batch that wrote nothing (only invalid items) or failed before the lock still ends after
        // the one before it, so the next batch never overtakes that one.
        if let Some(previous) = after.take() {
            let _ = previous.await;
        }
        drop(done);
        acks(items, &written?)
    }

    async fn try_batch(
        &self,
        items: &[Item],
        after: &mut Option<Finished>,
        done: &mut Option<Done>,
    ) -> Result<HashMap<String, Known>, BatchError> {
        // First valid occurrence of each event id, in arrival order.
        let mut firsts: Vec<&ValidEvent> = Vec::new();
        let mut first_index: HashMap<&str, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            if let Item::Valid(ev) = item
                && !first_index.contains_key(ev.event_id.as_str())
            {
                first_index.insert(ev.event_id.as_str(), i);
                firsts.push(ev);
            }
        }
        let mut known: HashMap<String, Known> = HashMap::new();
        if firsts.is_empty() {
            return Ok(known);
        }

        // One time for the facts and the events of the batch: when the service took it up.
        let recorded = now_ms();
        let early = self.db.backend() == Backend::Postgres;
        let (mut tx, unseen) = if early {
            let mut tx = self.db.begin().await?;
            // Ids the feed holds already stay so (it never forgets one): a replayed backlog writes
            // no facts at all, and needs neither the lock nor a second look-up.
            self.look_up(&mut tx, &firsts, &mut known).await?;
            let unseen: Vec<&ValidEvent> = firsts
                .into_iter()
                .filter(|ev| !known.contains_key(&ev.event_id))
                .collect();
            if !unseen.is_empty() {
                let facts = FactRows::of(&unseen, recorded);
                bulk::insert_all(&mut tx, &facts.inserts()).await?;
            }
            // Resolves when the previous batch's future ends, whatever its outcome.
            if let Some(previous) = after.take() {
                let _ = previous.await;
            }
            if unseen.is_empty() {
                tx.rollback().await?;
                done.take();
                return Ok(known);
            }
            (tx, unseen)
        } else {
            // Awaited before this batch takes a connection: a small pool (the sandbox has one
            // connection for everything) must not give it to this batch while the previous one
            // still waits for one.
            if let Some(previous) = after.take() {
                let _ = previous.await;
            }
            (self.db.begin().await?, firsts)
        };
        let started = std::time::Instant::now();
        self.log.lock(&mut tx).await?;
        // Under the lock, the answer stands until this transaction ends.
        self.look_up(&mut tx, &unseen, &mut known).await?;
        let (fresh, recorded_meanwhile): (Vec<&ValidEvent>, Vec<&ValidEvent>) = unseen
            .into_iter()
            .partition(|ev| !known.contains_key(&ev.event_id));
        if fresh.is_empty() {
            // Rolling back removes the facts written above.
            tx.rollback().await?;
            done.take();
            return Ok(known);
        }
        if early && !recorded_meanwhile.is_empty() {
            delete_facts(&mut tx, &recorded_meanwhile).await?;
        }

        let events = fresh
            .iter()
            .map(|ev| NewEvent {
                event_id: ev.event_id.clone(),
                kind: ev.fact.kind(),
                subject: ev.fact.subject().to_owned(),
                payload: TaxEvent {
                    sequence: 0,
                    event_id: ev.event_id.clone(),
                    recorded_at: Some(timestamp_ms(recorded)),
                    payload: Some(ev.fact.event_payload()),
                }
                .encode_to_vec(),
                content_sha256: Some(ev.content_sha256.clone()),
            })
            .collect();
        let seqs = if early {
            self.log.append(&mut tx, events, recorded).await?
        } else {
            let facts = FactRows::of(&fresh, recorded);
            self.log
                .append_with(&mut tx, events, recorded, &facts.inserts())
                .await?
        };
        if seqs.len() != fresh.len() {
            return Err(
                StoreError::Corrupt("feed append returned too few sequences".into()).into(),
            );
        }
        let (first, last) = (seqs[0], seqs[seqs.len() - 1]);
        tx.commit().await?;
        done.take();
        self.log.notify_committed(last);
        tracing::info!(
            accepted = fresh.len(),
            first_sequence = first,
            last_sequence = last,
            first_event_id = %fresh[0].event_id,
            last_event_id = %fresh[fresh.len() - 1].event_id,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "recorded tax completions (完税信息已入库)"
        );
        for (ev, &sequence) in fresh.iter().zip(&seqs) {
            tracing::debug!(event_id = %ev.event_id, kind = ev.fact.kind(), subject = ev.fact.subject(),
                sequence, "recorded tax completion");
            known.insert(
                ev.event_id.clone(),
                Known {
                    content_sha256: ev.content_sha256.clone(),
                    sequence,
                    accepted_at: first_index.get(ev.event_id.as_str()).copied(),
                },
            );
        }
        Ok(known)
    }
}

impl TaxStatus {
    /// Adds to `known` those of `events` the feed holds, with their digests and sequences.
    async fn look_up(
        &self,
        tx: &mut Tx<'_>,
        events: &[&ValidEvent],
        known: &mut HashMap<String, Known>,
    ) -> Result<(), StoreError> {
        let ids: Vec<String> = events.iter().map(|ev| ev.event_id.clone()).collect();
        for r in self.log.recorded(tx, &ids).await? {
            known.insert(
                r.event_id,
                Known {
                    // Every tax event is appended with its digest; one without could only be
                    // told apart as different content.
                    content_sha256: r.content_sha256.unwrap_or_default(),
                    sequence: r.sequence,
                    accepted_at: None,
                },
            );
        }
        Ok(())
    }
}

/// Deletes the fact rows this transaction wrote for events the feed turned out to hold already
/// (resent or reused ids). Each table is probed by the key its queries use, and only rows of this
/// transaction (`xmin`) go: the fact an earlier event recorded under the same id and key stays.
/// Land fees have no such index; they are few, and this runs only for a batch that met a recorded id.
async fn delete_facts(tx: &mut Tx<'_>, events: &[&ValidEvent]) -> Result<(), StoreError> {
    let mut deed: [Vec<Val>; 3] = Default::default();
    let mut fund: [Vec<Val>; 2] = Default::default();
    let mut developer: [Vec<Val>; 2] = Default::default();
    let mut land: [Vec<Val>; 2] = Default::default();
    for ev in events {
        let id = Val::Text(ev.event_id.clone());
        match &ev.fact {
            Fact::DeedTax {
                unit_code,
                buyer_id,
                ..
            } => {
                deed[0].push(id);
                deed[1].push(Val::Text(unit_code.as_str().to_owned()));
                deed[2].push(Val::Text(buyer_id.as_str().to_owned()));
            }
            Fact::MaintenanceFund { unit_code, .. } => {
                fund[0].push(id);
                fund[1].push(Val::Text(unit_code.as_str().to_owned()));
            }
            Fact::DeveloperTax { project_id, .. } => {
                developer[0].push(id);
                developer[1].push(Val::Text(project_id.as_str().to_owned()));
            }
            Fact::LandFees { parcel_code, .. } => {
                land[0].push(id);
                land[1].push(Val::Text(parcel_code.as_str().to_owned()));
            }
        }
    }
    let mut query = sqlx::query(DELETE_FACTS);
    for column in deed.iter().chain(&fund).chain(&developer).chain(&land) {
        query = query.bind(bulk::array_literal(column.iter()));
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// One statement (one round trip) for the four fact tables; an empty array deletes nothing.
const DELETE_FACTS: &str = "WITH deed AS (DELETE FROM tax.deed_tax t \
     USING UNNEST($1::text[], $2::text[], $3::text[]) AS k(id, unit, buyer) \
     WHERE t.unit_code = k.unit AND t.buyer_id = k.buyer AND t.event_id = k.id \
     AND t.xmin = pg_current_xact_id()::xid), \
 fund AS (DELETE FROM tax.maintenance_fund t USING UNNEST($4::text[], $5::text[]) AS k(id, unit) \
     WHERE t.unit_code = k.unit AND t.event_id = k.id AND t.xmin = pg_current_xact_id()::xid), \
 developer AS (DELETE FROM tax.developer_tax t USING UNNEST($6::text[], $7::text[]) AS k(id, project) \
     WHERE t.project_id = k.project AND t.event_id = k.id AND t.xmin = pg_current_xact_id()::xid) \
 DELETE FROM tax.land_fees t USING UNNEST($8::text[], $9::text[]) AS k(id, parcel) \
     WHERE t.parcel_code = k.parcel AND t.event_id = k.id AND t.xmin = pg_current_xact_id()::xid";

/// The facts of a batch, one set of rows per table, in arrival order. With no unique key on them,
/// no order is needed to keep two writers from waiting on each other.
struct FactRows {
    deed: Rows,
    fund: Rows,
    developer: Rows,
    land: Rows,
}

impl FactRows {
    fn of(events: &[&ValidEvent], recorded: i64) -> FactRows {
        let mut rows = FactRows {
            deed: Rows::new(9),
            fund: Rows::new(6),
            developer: Rows::new(6),
            land: Rows::new(6),
        };
        for ev in events {
            let id = Val::Text(ev.event_id.clone());
            let occurred = Val::opt_int(ev.occurred_at_ms);
            let recorded = Val::Int(recorded);
            match &ev.fact {
                Fact::DeedTax {
                    unit_code,
                    buyer_id,
                    amount,
                    voucher_number,
                    relieved,
                    relief_basis,
                } => rows.deed.push([
                    id,
                    Val::Text(unit_code.as_str().to_owned()),
                    Val::Text(buyer_id.as_str().to_owned()),
                    Val::Int(amount.fen()),
                    Val::Text(voucher_number.clone()),
                    Val::Int(i64::from(*relieved)),
                    Val::Text(relief_basis.clone()),
                    occurred,
                    recorded,
                ]),
                Fact::MaintenanceFund {
                    unit_code,
                    amount,
                    receipt_number,
                } => rows.fund.push([
                    id,
                    Val::Text(unit_code.as_str().to_owned()),
                    Val::Int(amount.fen()),
                    Val::Text(receipt_number.clone()),
                    occurred,
                    recorded,
                ]),
                Fact::DeveloperTax {
                    project_id,
                    developer_credit_code,
                    voucher_number,
                } => rows.developer.push([
                    id,
                    Val::Text(project_id.as_str().to_owned()),
                    Val::Text(developer_credit_code.as_str().to_owned()),
                    Val::Text(voucher_number.clone()),
                    occurred,
                    recorded,
                ]),
                Fact::LandFees {
                    parcel_code,
                    amount,
                    voucher_number,
                } => rows.land.push([
                    id,
                    Val::Text(parcel_code.as_str().to_owned()),
                    Val::Int(amount.fen()),
                    Val::Text(voucher_number.clone()),
                    occurred,
                    recorded,
                ]),
            }
        }
        rows
    }

    fn inserts(&self) -> [Insert<'_>; 4] {
        [
            Insert {
                head: "INSERT INTO tax.deed_tax (event_id, unit_code, buyer_id, amount_fen, voucher_number, \
                       relieved, relief_basis, occurred_at_ms, recorded_at_ms)",
                rows: &self.deed,
                tail: "",
            },
            Insert {
                head: "INSERT INTO tax.maintenance_fund (event_id, unit_code, amount_fen, receipt_number, \
                       occurred_at_ms, recorded_at_ms)",
                rows: &self.fund,
                tail: "",
            },
            Insert {
                head: "INSERT INTO tax.developer_tax (event_id, project_id, developer_credit_code, \
                       voucher_number, occurred_at_ms, recorded_at_ms)",
                rows: &self.developer,
                tail: "",
            },
            Insert {
                head: "INSERT INTO tax.land_fees (event_id, parcel_code, amount_fen, voucher_number, \
                       occurred_at_ms, recorded_at_ms)",
                rows: &self.land,
                tail: "",
            },
        ]
    }
}

/// One acknowledgement per item, in order: the occurrence this batch recorded is ACCEPTED, every other
/// occurrence with the recorded content is a DUPLICATE of it, any other content is REJECTED.
fn acks(
    items: &[Item],
    known: &HashMap<String, Known>,
) -> Result<Vec<PushCompletionsResponse>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Item::Invalid { event_id, error } => Ok(rejected(event_id, error)),
            Item::Valid(ev) => match known.get(&ev.event_id) {
                Some(k) if k.content_sha256 != ev.content_sha256 => {
                    Ok(rejected(&ev.event_id, REUSED))
                }
                Some(k) => Ok(PushCompletionsResponse {
                    event_id: ev.event_id.clone(),
                    status: if k.accepted_at == Some(i) {
                        AckStatus::Accepted
                    } else {
                        AckStatus::Duplicate
                    } as i32,
                    sequence: u64::try_from(k.sequence).map_err(|_| {
                        ApiError::internal(format!(
                            "event {} has sequence {}",
                            ev.event_id, k.sequence
                        ))
                    })?,
                    error: String::new(),
                }),
                // Every valid id was either recorded earlier or by this batch.
                None => Err(ApiError::internal(format!(
                    "event {} neither recorded nor found",
                    ev.event_id
                ))),
            },
        })
        .collect()
}

fn rejected(event_id: &str, error: &str) -> PushCompletionsResponse {
    PushCompletionsResponse {
        event_id: event_id.to_owned(),
        status: AckStatus::Rejected as i32,
        sequence: 0,
        error: error.to_owned(),
    }
}
