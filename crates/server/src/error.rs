//! The one place where errors become gRPC statuses.
use tongjiao_auth::AuthError;
use tongjiao_domain::{FieldViolation, Missing, Violations};
use tongjiao_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

const DOMAIN: &str = "tongjiao.gov.cn";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Bad input: every offending field with its rule. Nothing was written.
    #[error("invalid argument (参数无效): {0}")]
    InvalidArgument(Violations),
    /// A precondition of the domain is not met; each violation names one missing item or the
    /// conflicting state (type, subject, description), as google.rpc.PreconditionFailure.
    #[error("{summary}")]
    FailedPrecondition {
        summary: String,
        violations: Vec<PreconditionViolation>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Unavailable(String),
    /// Something on our side failed; the cause is logged, never returned to the caller.
    #[error("internal error (内部错误): {0}")]
    Internal(String),
}

/// One unmet precondition: `kind` is a stable snake_case code (e.g. `deed_tax`, `already_issued`),
/// `subject` what it concerns (e.g. a masked buyer id), `description` English with the Chinese term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreconditionViolation {
    pub kind: String,
    pub subject: String,
    pub description: String,
}

/// A single-field INVALID_ARGUMENT.
pub fn field_error(field: &str, description: impl Into<String>) -> ApiError {
    let mut v = Violations::new();
    v.push(field, description.into());
    ApiError::InvalidArgument(v)
}

impl ApiError {
    /// Refusal listing what is still missing.
    pub fn precondition(summary: impl Into<String>, missing: Vec<Missing>) -> Self {
        ApiError::FailedPrecondition {
            summary: summary.into(),
            violations: missing
                .into_iter()
                .map(|m| PreconditionViolation {
                    kind: m.kind.as_str().to_owned(),
                    subject: m.buyer_id.unwrap_or_default(),
                    description: m.detail,
                })
                .collect(),
        }
    }

    /// Refusal because of the state of things rather than a missing item, e.g. `already_issued`.
    pub fn conflict(kind: &str, summary: impl Into<String>) -> Self {
        let summary = summary.into();
        ApiError::FailedPrecondition {
            violations: vec![PreconditionViolation {
                kind: kind.to_owned(),
                subject: String::new(),
                description: summary.clone(),
            }],
            summary,
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }
}

impl From<Violations> for ApiError {
    fn from(v: Violations) -> Self {
        ApiError::InvalidArgument(v)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::RequestIdReused { .. } => ApiError::AlreadyExists(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthenticated(e.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::InvalidArgument(v) => invalid_argument(v),
            ApiError::FailedPrecondition {
                summary,
                violations,
            } => {
                let mut details = ErrorDetails::new();
                let mut message = summary.clone();
                let parts: Vec<&str> = violations
                    .iter()
                    .map(|v| v.description.as_str())
                    .filter(|d| *d != summary)
                    .collect();
                if !parts.is_empty() {
                    message.push_str(": ");
                    message.push_str(&parts.join("; "));
                }
                for v in violations {
                    details.add_precondition_failure_violation(v.kind, v.subject, v.description);
                }
                details.set_error_info(
                    "FAILED_PRECONDITION",
                    DOMAIN,
                    std::collections::HashMap::<String, String>::new(),
                );
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::AlreadyExists(m) => Status::already_exists(m),
            ApiError::PermissionDenied(m) => Status::permission_denied(m),
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Status::internal("internal error, see server logs (内部错误，请查看服务日志)")
            }
        }
    }
}

/// Bytes of violation text the `grpc-message` header may carry (percent-encoded, a Chinese character
/// costs 9 bytes there).
const MESSAGE_BUDGET: usize = 1_000;
/// Bytes of violations the `grpc-status-details-bin` header may carry before base64. HTTP/2 peers
/// refuse header lists over 16 KiB (hyper's default) with an opaque protocol error, so a reply with
/// thousands of violations lists those that fit and then says how many more there are.
const DETAILS_BUDGET: usize = 5_000;

fn invalid_argument(v: Violations) -> Status {
    let total = v.len();
    let mut details = ErrorDetails::new();
    let mut message = String::from("invalid argument (参数无效): ");
    let mut in_message = 0;
    let mut used = 0;
    let mut listed = 0;
    let mut first_omitted = None;
    for FieldViolation { field, description } in v.iter() {
        let cost = field.len() + description.len() + 8;
        if used + cost > DETAILS_BUDGET {
            first_omitted = Some(field.clone());
            break;
        }
        used += cost;
        listed += 1;
        details.add_bad_request_violation(field.clone(), description.clone());
        if in_message + cost <= MESSAGE_BUDGET {
            if in_message > 0 {
                message.push_str("; ");
            }
            message.push_str(field);
            message.push_str(": ");
            message.push_str(description);
            in_message += cost;
        } else if in_message <= MESSAGE_BUDGET {
            message.push_str("; … (see the field violations in the error details, 详见错误详情)");
            in_message = MESSAGE_BUDGET + 1;
        }
    }
    if let Some(field) = first_omitted {
        let more = total - listed;
        // The omitted ones are reported on their top-level field, e.g. `buildings`.
        let top = field
            .split(['[', '.'])
            .next()
            .unwrap_or(field.as_str())
            .to_owned();
        let note = format!(
            "and {more} more violations not listed ({total} in all); fix the ones above and send again (另有{more}处错误未列出)"
        );
        message.push_str("; ");
        message.push_str(&note);
        details.add_bad_request_violation(top, note);
    }
    details.set_error_info(
        "INVALID_ARGUMENT",
        DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}
