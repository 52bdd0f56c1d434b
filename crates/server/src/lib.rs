//! What every tongjiao gRPC service shares: one error type mapped to gRPC status in one place, JWT
//! authentication and role checks, idempotent write transactions, resumable change feeds, and a
//! server with health and reflection.

mod auth;
mod config;
mod error;
mod feed;
mod mutation;
mod serve;
mod telemetry;

pub use auth::{Authenticator, caller, require_role};
pub use config::{CommonArgs, shutdown_signal};
pub use error::{ApiError, PreconditionViolation, field_error};
pub use feed::{FeedStream, feed_stream};
pub use mutation::{Begun, begin_mutation, finish_mutation};
pub use serve::{ServiceSet, serve};
pub use telemetry::init_tracing;

/// Converts milliseconds since the epoch to a protobuf timestamp.
pub fn timestamp_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}
