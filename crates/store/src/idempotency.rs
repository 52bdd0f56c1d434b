//! Request-id records: every mutating RPC claims its (caller, request_id) inside the transaction that
//! does the work, and stores its reply there, so a retry returns the first reply and a concurrent
//! duplicate waits on the first one's row and then replays it.
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};

use std::collections::HashMap;

use crate::{Schema, StoreError, Tx, Val, now_ms};

#[derive(Debug)]
pub enum Claim {
    /// First time: do the work, then `complete`.
    New,
    /// Seen before with the same payload: return this stored reply.
    Replay(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Idempotency {
    claim_sql: String,
    complete_many_head: String,
    get_sql: String,
    complete_sql: String,
    release_sql: String,
    get_many_sql: String,
}

/// SHA-256 of the encoded request, to tell a retry from a different request under the same id.
pub fn payload_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Idempotency {
    pub fn new(schema: Schema) -> Self {
        let s = schema.name();
        Idempotency {
            claim_sql: format!(
                "INSERT INTO {s}.requests (principal, request_id, method, payload_sha256, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
            ),
            complete_many_head: format!(
                "INSERT INTO {s}.requests (principal, request_id, method, payload_sha256, created_at_ms, response)"
            ),
            release_sql: format!(
                "DELETE FROM {s}.requests WHERE principal = $1 AND request_id = $2 AND response IS NULL"
            ),
            // Composite keys as two parallel arrays: one statement for a whole batch.
            get_many_sql: format!(
                "SELECT r.principal, r.request_id, r.method, r.payload_sha256, r.response FROM {s}.requests r \
                 JOIN unnest($1::text[], $2::text[]) AS k(principal, request_id) \
                 ON r.principal = k.principal AND r.request_id = k.request_id"
            ),
            get_sql: format!(
                "SELECT method, payload_sha256, response FROM {s}.requests WHERE principal = $1 AND request_id = $2"
            ),
            complete_sql: format!(
                "UPDATE {s}.requests SET response = $3 WHERE principal = $1 AND request_id = $2"
            ),
        }
    }

    pub async fn claim(
        &self,
        tx: &mut Tx<'_>,
        principal: &str,
        request_id: &str,
        method: &str,
        digest: &str,
    ) -> Result<Claim, StoreError> {
        let inserted = sqlx::query(AssertSqlSafe(self.claim_sql.clone()))
            .bind(principal)
            .bind(request_id)
            .bind(method)
            .bind(digest)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if inserted == 1 {
            return Ok(Claim::New);
        }
        let row = sqlx::query(AssertSqlSafe(self.get_sql.clone()))
            .bind(principal)
            .bind(request_id)
            .fetch_one(&mut **tx)
            .await?;
        let stored_method: String = row.try_get(0)?;
        let stored_digest: String = row.try_get(1)?;
        let response: Option<Vec<u8>> = row.try_get(2)?;
        if stored_method != method || stored_digest != digest {
            return Err(StoreError::RequestIdReused {
                request_id: request_id.to_owned(),
            });
        }
        response
            .map(Claim::Replay)
            .ok_or_else(|| StoreError::Corrupt(format!("request {request_id} has no stored reply")))
    }

    pub async fn complete(
        &self,
        tx: &mut Tx<'_>,
        principal: &str,
        request_id: &str,
        response: Vec<u8>,
    ) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.complete_sql.clone()))
            .bind(principal)
            .bind(request_id)
            .bind(response)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// One request of a group settled together (see [`Idempotency::seen_many`]).
#[derive(Debug, Clone)]
pub struct RequestKey {
    pub principal: String,
    pub request_id: String,
    pub method: &'static str,
    pub digest: String,
}

impl Idempotency {
    /// What each of a group of requests was, if it was seen before: `None` for a new request,
    /// `Some(Ok(reply))` for a retry, `Some(Err(RequestIdReused))` for an id reused with another
    /// payload. Writes nothing: the new requests are recorded with their replies by
    /// [`Idempotency::completion`], in the same transaction.
    ///
    /// For requests settled in batches under row locks (the counter). Call it after taking the locks
    /// that serialise the requests' subjects: a concurrent duplicate has then either committed, and
    /// is seen here, or waits for us; a key raced in by another subject makes the completion insert
    /// fail on the primary key, so the batch rolls back and nothing is applied twice.
    pub async fn seen_many(
        &self,
        tx: &mut Tx<'_>,
        keys: &[RequestKey],
    ) -> Result<Vec<Option<Result<Vec<u8>, StoreError>>>, StoreError> {
        let mut out: Vec<Option<Result<Vec<u8>, StoreError>>> =
            (0..keys.len()).map(|_| None).collect();
        let position: HashMap<(&str, &str), usize> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| ((k.principal.as_str(), k.request_id.as_str()), i))
            .collect();
        let wanted: Vec<(&str, &str)> = keys
            .iter()
            .map(|k| (k.principal.as_str(), k.request_id.as_str()))
            .collect();
        for (principal, request_id, method, digest, response) in self.stored(tx, &wanted).await? {
            let Some(&i) = position.get(&(principal.as_str(), request_id.as_str())) else {
                continue;
            };
            let k = &keys[i];
            out[i] = Some(if method != k.method || digest != k.digest {
                Err(StoreError::RequestIdReused {
                    request_id: k.request_id.clone(),
                })
            } else {
                response.ok_or_else(|| {
                    StoreError::Corrupt(format!("request {} has no stored reply", k.request_id))
                })
            });
        }
        Ok(out)
    }

    /// The replies of new requests as rows for [`Idempotency::completion`].
    pub fn completion_rows(&self, done: Vec<(RequestKey, Vec<u8>)>) -> crate::Rows {
        let now = now_ms();
        let mut rows = crate::Rows::with_capacity(6, done.len());
        for (k, response) in done {
            rows.push([
                Val::Text(k.principal),
                Val::Text(k.request_id),
                Val::Text(k.method.to_owned()),
                Val::Text(k.digest),
                Val::Int(now),
                Val::Bytes(response),
            ]);
        }
        rows
    }

    /// Records new requests with their replies (see [`Idempotency::seen_many`]), as one part of a
    /// caller's [`crate::bulk::insert_all`]. A plain insert: a key recorded meanwhile fails it.
    pub fn completion<'a>(&'a self, rows: &'a crate::Rows) -> crate::bulk::Insert<'a> {
        crate::bulk::Insert {
            head: &self.complete_many_head,
            rows,
            tail: "",
        }
    }

    /// Forgets claims whose work was refused, so a later retry is judged afresh.
    pub async fn release(
        &self,
        tx: &mut Tx<'_>,
        principal: &str,
        request_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.release_sql.clone()))
            .bind(principal)
            .bind(request_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The stored (principal, request_id, method, digest, reply) of those of `keys` seen before.
    async fn stored(
        &self,
        tx: &mut Tx<'_>,
        keys: &[(&str, &str)],
    ) -> Result<Vec<StoredRequest>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if crate::bulk::is_postgres(tx) {
            let (principals, request_ids) = split_keys(keys);
            return Ok(sqlx::query_as(AssertSqlSafe(self.get_many_sql.clone()))
                .bind(principals)
                .bind(request_ids)
                .fetch_all(&mut **tx)
                .await?);
        }
        let mut out = Vec::with_capacity(keys.len());
        for (principal, request_id) in keys {
            let row: Option<(String, String, Option<Vec<u8>>)> =
                sqlx::query_as(AssertSqlSafe(self.get_sql.clone()))
                    .bind(*principal)
                    .bind(*request_id)
                    .fetch_optional(&mut **tx)
                    .await?;
            let Some((method, digest, response)) = row else {
                continue;
            };
            out.push((
                (*principal).to_owned(),
                (*request_id).to_owned(),
                method,
                digest,
                response,
            ));
        }
        Ok(out)
    }
}

type StoredRequest = (String, String, String, String, Option<Vec<u8>>);

/// Composite keys as two PostgreSQL `text[]` literals.
fn split_keys(keys: &[(&str, &str)]) -> (String, String) {
    let principals: Vec<String> = keys.iter().map(|(p, _)| (*p).to_owned()).collect();
    let request_ids: Vec<String> = keys.iter().map(|(_, r)| (*r).to_owned()).collect();
    (
        crate::bulk::text_array(&principals),
        crate::bulk::text_array(&request_ids),
    )
}
