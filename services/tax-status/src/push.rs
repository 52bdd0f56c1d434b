//! The completion feed's write path (完税推送入库). One batch = one transaction:
//! 1. read the feed head, then look the batch's distinct valid event ids up in the feed
//!    (`tax.events`, which keeps each event's content digest): those are DUPLICATE (same digest) or
//!    REJECTED (different digest); the feed never forgets an id, so that answer stands;
//! 2. write the facts of the others (`tax.deed_tax` and the other fact tables, which have no unique
//!    keys: the feed's unique event id is the one that refuses a second row), except those of ids
//!    the stream's previous batch carries too, which that batch is about to record;
//!    on PostgreSQL, for a stream alone on the process whose previous batch is still in flight,
//!    steps 1 and 2 run while that batch holds the lock (otherwise the batch waits first, as on
//!    SQLite, see `one_writer_batch`);
//! 3. take the feed head's lock, so batches of concurrent streams (and replicas) apply one at a time,
//!    and learn which of the others were recorded meanwhile: from the previous batch's own account
//!    when the head moved by exactly its events since step 1, else by looking them up again. The
//!    fact rows this transaction wrote for such an id are deleted; the held-back ids that are still
//!    new get their facts now;
//! 4. reserve the new events' sequences and append them with their digests (`EventLog::append_with`);
//! 5. commit, hand the stream's next batch what was appended, notify followers, and only then build
//!    the acks, one per request, in arrival order.
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
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

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

/// The stream's previous batch, as the next one waits for it.
pub(crate) struct Previous {
    /// Resolves when that batch has committed (with what it appended) or given up (dropped).
    pub(crate) finished: Finished,
    /// Its valid event ids. The next batch leaves their facts to it rather than write them before
    /// the lock only to delete them again once that batch has recorded them.
    pub(crate) ids: Arc<HashSet<String>>,
}

/// The receiving half of [`Done`].
pub(crate) type Finished = tokio::sync::oneshot::Receiver<Committed>;
/// Sent by a batch once it committed, dropped if it appended nothing or failed; the stream's next
/// batch takes the feed head's lock only then.
pub(crate) type Done = tokio::sync::oneshot::Sender<Committed>;

/// What a batch appended to the feed.
pub(crate) struct Committed {
    /// The head before its events.
    after: i64,
    /// Its events' ids and content digests, in sequence order from `after + 1`.
    events: Vec<(String, String)>,
}

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
    /// and on PostgreSQL writes its facts, but takes the feed head's lock only once that batch has
    /// finished, so a stream's events get sequences in arrival order and the first content of an id
    /// wins. `done` goes once this batch has committed or given up, before its acknowledgements are
    /// built.
    pub(crate) async fn write_batch(
        &self,
        items: &[Item],
        mut after: Option<Previous>,
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
            let _ = previous.finished.await;
        }
        drop(done);
        acks(items, &written?)
    }

    async fn try_batch(
        &self,
        items: &[Item],
        after: &mut Option<Previous>,
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
        // Writing ahead pays only while the previous batch still holds (or waits for) the lock; a
        // batch on its own, the feed's usual trickle, would only add two round trips. And only for
        // a stream alone on this process: beside others, most ids recorded meanwhile are theirs,
        // which costs a second look-up and a delete under the lock (four streams: 34.3k against
        // 37.0k events/s, two: 41.7k against 43.7k, writing ahead and not).
        let overlaps = match after.as_mut().map(|p| p.finished.try_recv()) {
            Some(Err(tokio::sync::oneshot::error::TryRecvError::Empty)) => true,
            // Finished (committed or gave up): nothing left to wait for, nor to overlap.
            Some(_) => {
                *after = None;
                false
            }
            None => false,
        };
        let alone = self.push_streams.load(std::sync::atomic::Ordering::Relaxed) <= 1;
        if self.db.backend() != Backend::Postgres || !overlaps || !alone {
            return self
                .one_writer_batch(firsts, &first_index, recorded, after, done)
                .await;
        }

        let mut tx = self.db.begin().await?;
        // Read before the look-up, so every event up to it is in what the look-up sees.
        let seen_up_to = self.log.head_in(&mut *tx).await?;
        // Ids the feed holds already stay so (it never forgets one): a replayed backlog writes no
        // facts at all and never takes the lock.
        self.look_up(&mut tx, &firsts, &mut known).await?;
        let unseen: Vec<&ValidEvent> = firsts
            .into_iter()
            .filter(|ev| !known.contains_key(&ev.event_id))
            .collect();
        let previous_ids = after.as_ref().map(|p| p.ids.clone()).unwrap_or_default();
        let (held_back, written_early): (Vec<&ValidEvent>, Vec<&ValidEvent>) = unseen
            .iter()
            .partition(|ev| previous_ids.contains(&ev.event_id));
        if !written_early.is_empty() {
            let facts = FactRows::of(&written_early, recorded);
            bulk::insert_all(&mut tx, &facts.inserts()).await?;
        }
        // Resolves when the previous batch's future ends, whatever its outcome.
        let previous = match after.take() {
            Some(p) => p.finished.await.ok(),
            None => None,
        };
        if unseen.is_empty() {
            tx.rollback().await?;
            done.take();
            return Ok(known);
        }

        let started = std::time::Instant::now();
        let head = self.log.lock(&mut tx).await?;
        // Under the lock, what the feed holds stands until this transaction ends. When nothing but
        // the previous batch of this stream was appended since the look-up, its own account says
        // which of our ids it recorded; anything else, and the feed is asked again.
        let only_previous = previous.as_ref().is_some_and(|p| {
            p.after == seen_up_to && head == Some(p.after + p.events.len() as i64)
        });
        if head == Some(seen_up_to) {
            // Nothing appended since the look-up.
        } else if let (true, Some(p)) = (only_previous, &previous) {
            let ours: HashSet<&str> = unseen.iter().map(|ev| ev.event_id.as_str()).collect();
            for (at, (id, digest)) in (p.after + 1..).zip(&p.events) {
                if ours.contains(id.as_str()) {
                    known.insert(
                        id.clone(),
                        Known {
                            content_sha256: digest.clone(),
                            sequence: at,
                            accepted_at: None,
                        },
                    );
                }
            }
        } else {
            self.look_up(&mut tx, &unseen, &mut known).await?;
        }
        let is_fresh = |ev: &&ValidEvent| !known.contains_key(&ev.event_id);
        let fresh: Vec<&ValidEvent> = unseen.iter().copied().filter(is_fresh).collect();
        if fresh.is_empty() {
            // Rolling back removes the facts written above.
            tx.rollback().await?;
            done.take();
            return Ok(known);
        }
        let recorded_meanwhile: Vec<&ValidEvent> = written_early
            .iter()
            .copied()
            .filter(|ev| !is_fresh(ev))
            .collect();
        if !recorded_meanwhile.is_empty() {
            delete_facts(&mut tx, &recorded_meanwhile).await?;
        }
        let late: Vec<&ValidEvent> = held_back.into_iter().filter(is_fresh).collect();
        let late_facts = FactRows::of(&late, recorded);
        let seqs = self
            .log
            .append_with(
                &mut tx,
                new_events(&fresh, recorded),
                recorded,
                &late_facts.inserts(),
            )
            .await?;
        self.committed(tx, &fresh, &seqs, &first_index, started, done, &mut known)
            .await?;
        Ok(known)
    }

    /// The batch that waits for the previous one first, then looks its ids up under the lock and
    /// writes the facts of its new events in the statement that appends them: on SQLite (one
    /// connection, one writer), and on PostgreSQL when no batch of the stream is in flight.
    async fn one_writer_batch(
        &self,
        firsts: Vec<&ValidEvent>,
        first_index: &HashMap<&str, usize>,
        recorded: i64,
        after: &mut Option<Previous>,
        done: &mut Option<Done>,
    ) -> Result<HashMap<String, Known>, BatchError> {
        // Awaited before this batch takes a connection: a small pool (the sandbox has one
        // connection for everything) must not give it to this batch while the previous one still
        // waits for one.
        if let Some(previous) = after.take() {
            let _ = previous.finished.await;
        }
        let mut tx = self.db.begin().await?;
        let started = std::time::Instant::now();
        self.log.lock(&mut tx).await?;
        let mut known = HashMap::new();
        self.look_up(&mut tx, &firsts, &mut known).await?;
        let fresh: Vec<&ValidEvent> = firsts
            .into_iter()
            .filter(|ev| !known.contains_key(&ev.event_id))
            .collect();
        if fresh.is_empty() {
            tx.rollback().await?;
            done.take();
            return Ok(known);
        }
        let facts = FactRows::of(&fresh, recorded);
        let seqs = self
            .log
            .append_with(
                &mut tx,
                new_events(&fresh, recorded),
                recorded,
                &facts.inserts(),
            )
            .await?;
        self.committed(tx, &fresh, &seqs, first_index, started, done, &mut known)
            .await?;
        Ok(known)
    }

    /// Commits the batch that appended `fresh` as `seqs`, hands the stream's next batch what it
    /// appended, tells the followers, and adds the new events to `known`.
    #[allow(clippy::too_many_arguments)]
    async fn committed(
        &self,
        tx: Tx<'_>,
        fresh: &[&ValidEvent],
        seqs: &[i64],
        first_index: &HashMap<&str, usize>,
        started: std::time::Instant,
        done: &mut Option<Done>,
        known: &mut HashMap<String, Known>,
    ) -> Result<(), BatchError> {
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
            return Err(StoreError::Corrupt("feed append returned no sequences".into()).into());
        };
        if seqs.len() != fresh.len() || last - first + 1 != seqs.len() as i64 {
            return Err(StoreError::Corrupt(format!(
                "feed append returned sequences {first}..={last} for {} events",
                fresh.len()
            ))
            .into());
        }
        let events: Vec<(String, String)> = fresh
            .iter()
            .map(|ev| (ev.event_id.clone(), ev.content_sha256.clone()))
            .collect();
        tx.commit().await?;
        if let Some(done) = done.take() {
            let _ = done.send(Committed {
                after: first - 1,
                events,
            });
        }
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
        for (ev, &sequence) in fresh.iter().zip(seqs) {
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
        Ok(())
    }
}

/// The feed events of `fresh`, in order.
fn new_events(fresh: &[&ValidEvent], recorded: i64) -> Vec<NewEvent> {
    fresh
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
        .collect()
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

#[cfg(test)]
mod tests {
    use tongjiao_proto::tax::{
        MaintenanceFundDeposited, PushCompletionsRequest, push_completions_request::Payload,
    };
    use tongjiao_store::Db;

    use super::*;
    use crate::validate;

    fn fund(id: &str, n: u32) -> Item {
        validate::check(PushCompletionsRequest {
            event_id: id.to_owned(),
            occurred_at: None,
            payload: Some(Payload::MaintenanceFundDeposited(
                MaintenanceFundDeposited {
                    unit_code: format!("140827001002GB00012F0001{n:04}"),
                    amount_fen: 500,
                    receipt_number: format!("R{n}"),
                },
            )),
        })
    }

    async fn service() -> (Db, TaxStatus) {
        let url = tongjiao_testkit::fresh_database().await;
        let db = Db::connect(&url, 4).await.expect("connect test database");
        let svc = crate::build(db.clone()).await.expect("build tax-status");
        (db, svc)
    }

    /// The stream's previous batch: `finished` its end, `ids` what it carries.
    fn previous(finished: Finished, ids: &[&str]) -> Option<Previous> {
        Some(Previous {
            finished,
            ids: Arc::new(ids.iter().map(|id| (*id).to_owned()).collect()),
        })
    }

    /// Writes `items` as a batch after `previous`: its acks as (status, sequence), and what it
    /// hands the stream's next batch.
    async fn write(
        svc: &TaxStatus,
        items: &[Item],
        previous: Option<Previous>,
    ) -> (Vec<(i32, u64)>, Finished) {
        let (done, finished) = tokio::sync::oneshot::channel();
        let acks = svc
            .write_batch(items, previous, done)
            .await
            .expect("batch written");
        let outcome = acks.iter().map(|a| (a.status, a.sequence)).collect();
        (outcome, finished)
    }

    async fn funds(db: &Db) -> Vec<String> {
        sqlx::query_scalar("SELECT event_id FROM tax.maintenance_fund ORDER BY event_id")
            .fetch_all(db.pool())
            .await
            .expect("read funds")
    }

    /// A batch leaves the facts of ids its stream's previous batch also carries to that batch. When
    /// that batch gave up instead (its write failed, the stream ended), they are this batch's to
    /// record, facts and all.
    #[tokio::test]
    async fn ids_left_to_a_previous_batch_that_gave_up_are_recorded_with_their_facts() {
        let (db, svc) = service().await;
        let (gave_up, finished) = tokio::sync::oneshot::channel::<Committed>();
        // Still in flight when this batch starts, so it writes F-2's fact ahead and holds F-1's
        // back; it gives up while this batch waits for it.
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            drop(gave_up);
        });
        let items = [fund("F-1", 1), fund("F-2", 2)];
        let (outcome, _) = write(&svc, &items, previous(finished, &["F-1"])).await;
        assert_eq!(
            outcome,
            vec![
                (AckStatus::Accepted as i32, 1),
                (AckStatus::Accepted as i32, 2)
            ]
        );
        assert_eq!(funds(&db).await, vec!["F-1", "F-2"]);
    }

    /// Another replica records one of a batch's ids after the batch wrote its facts ahead of the
    /// lock: the batch answers it as recorded and takes back its own fact row for it, leaving the
    /// other replica's.
    #[tokio::test]
    async fn a_fact_written_ahead_for_an_id_another_replica_recorded_is_taken_back() {
        let (db, svc) = service().await;
        let other = crate::build(db.clone()).await.expect("a second replica");
        let (previous_done, finished) = tokio::sync::oneshot::channel::<Committed>();
        let batch = tokio::spawn(async move {
            let items = [fund("F-1", 1), fund("F-2", 2)];
            write(&svc, &items, previous(finished, &[])).await.0
        });
        // Until the batch has written its facts and waits for the one before it.
        let started = std::time::Instant::now();
        loop {
            let writing: i64 = sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE c.relname = 'maintenance_fund' AND l.mode = 'RowExclusiveLock' \
                 AND l.pid <> pg_backend_pid()",
            )
            .fetch_one(db.pool())
            .await
            .expect("read locks");
            if writing > 0 {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the batch never wrote its facts ahead"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let (theirs, _) = write(&other, &[fund("F-1", 1)], None).await;
        assert_eq!(theirs, vec![(AckStatus::Accepted as i32, 1)]);
        drop(previous_done);
        let outcome = batch.await.expect("task");
        assert_eq!(
            outcome,
            vec![
                (AckStatus::Duplicate as i32, 1),
                (AckStatus::Accepted as i32, 2)
            ]
        );
        assert_eq!(funds(&db).await, vec!["F-1", "F-2"]);
    }

    /// What a batch hands the next one of its stream once it committed: the head before its
    /// events and their ids in sequence order (the first occurrence of each).
    #[tokio::test]
    async fn a_batch_hands_the_next_one_what_it_appended() {
        let (db, svc) = service().await;
        let first = [fund("F-1", 1), fund("F-2", 2), fund("F-1", 1)];
        let (_, finished) = write(&svc, &first, None).await;
        let committed = finished.await.expect("the first batch committed");
        assert_eq!(committed.after, 0);
        let ids: Vec<&str> = committed.events.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["F-1", "F-2"]);

        // The next batch of the stream resends F-2 beside a new id: a duplicate with F-2's
        // sequence, and one fact each.
        let (handed, from_first) = tokio::sync::oneshot::channel();
        let _ = handed.send(committed);
        let second = [fund("F-2", 2), fund("F-3", 3)];
        let (outcome, finished) = write(&svc, &second, previous(from_first, &["F-1", "F-2"])).await;
        assert_eq!(
            outcome,
            vec![
                (AckStatus::Duplicate as i32, 2),
                (AckStatus::Accepted as i32, 3)
            ]
        );
        assert_eq!(finished.await.expect("second committed").after, 2);
        assert_eq!(funds(&db).await, vec!["F-1", "F-2", "F-3"]);
    }
}
