//! Resumable change feeds: the backlog after the caller's sequence, then new events as they commit.
use std::{pin::Pin, time::Duration};

use tokio_stream::{Stream, wrappers::ReceiverStream};
use tongjiao_store::{Db, EventLog, StoredEvent};
use tonic::Status;

pub type FeedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Events read per query and buffered per subscriber: enough to fill a follower's batch.
const PAGE: i64 = 2000;
/// Another process may commit to the same log (several replicas); poll at least this often.
const POLL: Duration = Duration::from_millis(250);

/// Streams events after `after`; with `backlog_only` it ends once caught up. `wrap` turns a stored
/// event into the RPC's reply.
pub fn feed_stream<T, F>(
    db: Db,
    log: EventLog,
    after: i64,
    backlog_only: bool,
    wrap: F,
) -> FeedStream<T>
where
    T: Send + 'static,
    F: Fn(StoredEvent) -> Result<T, Status> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<T, Status>>(PAGE as usize);
    let mut committed = log.subscribe();
    tokio::spawn(async move {
        let mut cursor = after;
        loop {
            let page = match log.read_after(&db, cursor, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "reading change feed");
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "change feed read failed, resume later (变更订阅暂不可用)",
                        )))
                        .await;
                    return;
                }
            };
            let full = page.len() as i64 == PAGE;
            for ev in page {
                cursor = ev.sequence;
                if tx.send(wrap(ev)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            if backlog_only {
                return;
            }
            tokio::select! {
                _ = committed.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
