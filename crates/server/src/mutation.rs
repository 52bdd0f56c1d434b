//! Idempotent writes: a mutating RPC claims its request id in the transaction that does its work.
use prost::Message;
use tongjiao_domain::RequestId;
use tongjiao_store::{Claim, Db, Idempotency, Tx, payload_digest};

use crate::{ApiError, field_error};

pub enum Begun<R> {
    /// A retry of a request already done: its first reply.
    Replay(R),
    /// A new request: do the work in this transaction, then `finish_mutation`.
    New(Tx<'static>),
}

/// Validates the request id, opens a transaction and claims the id for `principal`.
pub async fn begin_mutation<Req: Message, Resp: Message + Default>(
    db: &Db,
    idem: &Idempotency,
    principal: &str,
    request_id: &str,
    method: &str,
    req: &Req,
) -> Result<Begun<Resp>, ApiError> {
    let request_id: RequestId =
        request_id
            .parse()
            .map_err(|e: <RequestId as std::str::FromStr>::Err| {
                field_error("request_id", e.to_string())
            })?;
    let digest = payload_digest(&req.encode_to_vec());
    let mut tx = db.begin().await?;
    match idem
        .claim(&mut tx, principal, request_id.as_str(), method, &digest)
        .await?
    {
        Claim::New => Ok(Begun::New(tx)),
        Claim::Replay(bytes) => {
            tx.rollback()
                .await
                .map_err(tongjiao_store::StoreError::from)?;
            Resp::decode(bytes.as_slice())
                .map(Begun::Replay)
                .map_err(|e| ApiError::internal(format!("stored reply does not decode: {e}")))
        }
    }
}

/// Stores the reply under the request id and commits.
pub async fn finish_mutation<Resp: Message>(
    idem: &Idempotency,
    mut tx: Tx<'static>,
    principal: &str,
    request_id: &str,
    resp: &Resp,
) -> Result<(), ApiError> {
    idem.complete(&mut tx, principal, request_id, resp.encode_to_vec())
        .await?;
    tx.commit()
        .await
        .map_err(tongjiao_store::StoreError::from)?;
    Ok(())
}
