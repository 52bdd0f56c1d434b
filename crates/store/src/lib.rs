//! The system of record (登记簿数据库). Production uses PostgreSQL; the `tongjiao dev` sandbox uses SQLite
//! files. Both are reached through sqlx's `Any` driver so every service runs the same SQL on both: each
//! service owns one schema (`survey`, `acceptance`, `tax`, `registration`), which is a PostgreSQL schema
//! or an attached SQLite database of the same name.

pub mod bulk;
mod db;
mod event_log;
mod idempotency;

pub use bulk::{Rows, Val};
pub use db::{Backend, Db, Schema, StoreError, now_ms};
pub use event_log::{EventLog, NewEvent, RecordedEvent, StoredEvent};
pub use idempotency::{Claim, Idempotency, RequestKey, payload_digest};
pub use sqlx;

/// Sizes to split `total` rows into: powers of two, none above `max`. Every distinct statement
/// text is prepared and cached per connection, so multi-row statements built from these sizes
/// come in a handful of shapes instead of one per batch size.
pub fn pow2_chunks(total: usize, max: usize) -> impl Iterator<Item = usize> {
    let cap = 1usize << max.max(1).ilog2();
    let mut left = total;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let take = 1usize << left.min(cap).ilog2();
        left -= take;
        Some(take)
    })
}

/// A transaction on the store.
pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

#[cfg(test)]
mod tests {
    use super::pow2_chunks;

    #[test]
    fn chunks_cover_every_row_in_powers_of_two_under_the_cap() {
        for total in 0..3000 {
            for max in [1, 3, 64, 1000] {
                let sizes: Vec<usize> = pow2_chunks(total, max).collect();
                assert_eq!(sizes.iter().sum::<usize>(), total);
                assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= max));
            }
        }
    }
}
