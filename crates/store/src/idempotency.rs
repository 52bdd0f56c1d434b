//! Request-id records: every mutating RPC claims its (caller, request_id) inside the transaction that
//! does the work, and stores its reply there, so a retry returns the first reply and a concurrent
//! duplicate waits on the first one's row and then replays it.
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};

use crate::{Schema, StoreError, Tx, now_ms};

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
    get_sql: String,
    complete_sql: String,
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
