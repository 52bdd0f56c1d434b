//! The system of record (登记簿数据库). Production uses PostgreSQL; the `tongjiao dev` sandbox uses SQLite
//! files. Both are reached through sqlx's `Any` driver so every service runs the same SQL on both: each
//! service owns one schema (`survey`, `acceptance`, `tax`, `registration`), which is a PostgreSQL schema
//! or an attached SQLite database of the same name.

mod db;
mod event_log;
mod idempotency;

pub use db::{Backend, Db, Schema, StoreError, now_ms};
pub use event_log::{EventLog, NewEvent, StoredEvent};
pub use idempotency::{Claim, Idempotency, RequestKey, payload_digest};
pub use sqlx;

/// A transaction on the store.
pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;
