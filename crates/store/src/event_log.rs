//! Each service's append-only event log. It is the service's change feed and its outbox: a fact and
//! its event commit in one transaction. Sequences come from a one-row head that the appending
//! transaction locks, so sequences are gap-free and become visible in order — a reader resuming
//! "after N" can never skip an event that commits late.
use std::sync::Arc;

use sqlx::{AssertSqlSafe, Row};
use tokio::sync::watch;

use crate::{Db, Schema, StoreError, Tx, Val};

/// An event as stored: the payload is the service's encoded protobuf event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub sequence: i64,
    pub event_id: String,
    pub payload: Vec<u8>,
    pub recorded_at_ms: i64,
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub kind: &'static str,
    pub subject: String,
    pub payload: Vec<u8>,
    /// Digest of the producer's content when the event id is the producer's (see [`EventLog::recorded`]).
    pub content_sha256: Option<String>,
}

/// An event id already in the log, with its content digest and sequence.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RecordedEvent {
    pub event_id: String,
    pub content_sha256: Option<String>,
    pub sequence: i64,
}

#[derive(Clone, Debug)]
pub struct EventLog {
    schema: Schema,
    reserve_sql: String,
    read_sql: String,
    head_sql: String,
    lock_sql: String,
    insert_head: String,
    recorded_head: String,
    committed: Arc<watch::Sender<i64>>,
}

impl EventLog {
    pub fn new(schema: Schema) -> Self {
        let s = schema.name();
        let (committed, _) = watch::channel(0);
        EventLog {
            schema,
            reserve_sql: format!(
                "UPDATE {s}.feed_head SET last_sequence = last_sequence + $1 WHERE id = 1 RETURNING last_sequence"
            ),
            read_sql: format!(
                "SELECT sequence, event_id, payload, recorded_at_ms FROM {s}.events \
                 WHERE sequence > $1 ORDER BY sequence LIMIT $2"
            ),
            head_sql: format!("SELECT last_sequence FROM {s}.feed_head WHERE id = 1"),
            lock_sql: format!("SELECT last_sequence FROM {s}.feed_head WHERE id = 1 FOR UPDATE"),
            insert_head: format!(
                "INSERT INTO {s}.events (sequence, event_id, kind, subject, payload, recorded_at_ms, content_sha256)"
            ),
            recorded_head: format!(
                "SELECT event_id, content_sha256, sequence FROM {s}.events WHERE event_id"
            ),
            committed: Arc::new(committed),
        }
    }

    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// Takes the feed head's lock now rather than at [`EventLog::append`]: the caller's transaction
    /// then runs alone among the log's writers, so what it reads afterwards (for example which event
    /// ids are already recorded) cannot be changed by a concurrent writer before it commits. SQLite
    /// has one writer at a time anyway.
    ///
    /// Returns the head (the last committed sequence) on PostgreSQL, where it stays put until the
    /// transaction ends; `None` on SQLite, which takes its write lock at the first write instead.
    pub async fn lock(&self, tx: &mut Tx<'_>) -> Result<Option<i64>, StoreError> {
        if crate::bulk::is_postgres(tx) {
            let head: i64 = sqlx::query_scalar(AssertSqlSafe(self.lock_sql.clone()))
                .fetch_one(&mut **tx)
                .await?;
            return Ok(Some(head));
        }
        Ok(None)
    }

    /// Appends events inside the caller's transaction and returns their sequences. Call it last
    /// before commit: it holds the feed head's lock until the transaction ends. `recorded_at_ms` is
    /// the time the caller put in the events' payloads, so the row and the payload agree.
    pub async fn append(
        &self,
        tx: &mut Tx<'_>,
        events: Vec<NewEvent>,
        recorded_at_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        self.append_with(tx, events, recorded_at_ms, &[]).await
    }

    /// [`EventLog::append`], with the facts the events record written by the same statement
    /// (`bulk::insert_all`): a writer that holds the feed head's lock while it writes waits for one
    /// round trip instead of one per table.
    pub async fn append_with(
        &self,
        tx: &mut Tx<'_>,
        events: Vec<NewEvent>,
        recorded_at_ms: i64,
        facts: &[crate::bulk::Insert<'_>],
    ) -> Result<Vec<i64>, StoreError> {
        if events.is_empty() {
            crate::bulk::insert_all(tx, facts).await?;
            return Ok(Vec::new());
        }
        let n = events.len() as i64;
        let last: i64 = sqlx::query_scalar(AssertSqlSafe(self.reserve_sql.clone()))
            .bind(n)
            .fetch_one(&mut **tx)
            .await?;
        let first = last - n + 1;
        let mut seqs = Vec::with_capacity(events.len());
        let mut rows = crate::Rows::with_capacity(7, events.len());
        for (e, seq) in events.into_iter().zip(first..) {
            seqs.push(seq);
            rows.push([
                Val::Int(seq),
                Val::Text(e.event_id),
                Val::Text(e.kind.to_owned()),
                Val::Text(e.subject),
                Val::Bytes(e.payload),
                Val::Int(recorded_at_ms),
                Val::opt_text(e.content_sha256),
            ]);
        }
        let mut parts = facts.to_vec();
        parts.push(crate::bulk::Insert {
            head: &self.insert_head,
            rows: &rows,
            tail: "",
        });
        crate::bulk::insert_all(tx, &parts).await?;
        Ok(seqs)
    }

    /// Which of `event_ids` the log already holds (each once), read inside the caller's
    /// transaction: after [`EventLog::lock`] no other writer can add one of them before it commits.
    pub async fn recorded(
        &self,
        tx: &mut Tx<'_>,
        event_ids: &[String],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        crate::bulk::fetch_in(tx, &self.recorded_head, event_ids, "").await
    }

    /// Tells in-process followers that events up to `sequence` are committed. Call after commit.
    pub fn notify_committed(&self, sequence: i64) {
        self.committed.send_if_modified(|cur| {
            if sequence > *cur {
                *cur = sequence;
                true
            } else {
                false
            }
        });
    }

    /// A receiver that changes whenever this process commits new events.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.committed.subscribe()
    }

    /// Up to `limit` committed events after `after`, in order.
    pub async fn read_after(
        &self,
        db: &Db,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(self.read_sql.clone()))
            .bind(after)
            .bind(limit)
            .fetch_all(db.pool())
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredEvent {
                    sequence: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    payload: r.try_get(2)?,
                    recorded_at_ms: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The last committed sequence.
    pub async fn head(&self, db: &Db) -> Result<i64, StoreError> {
        self.head_in(db.pool()).await
    }

    /// [`EventLog::head`] as `db` (the pool, or a transaction's connection) sees it.
    pub async fn head_in<'e>(
        &self,
        db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(AssertSqlSafe(self.head_sql.clone()))
            .fetch_one(db)
            .await?)
    }
}
