//! The one place where errors become gRPC statuses.
use tongjiao_auth::AuthError;
use tongjiao_domain::{FieldViolation, Missing, Violations};
use tongjiao_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

const DOMAIN: &str = "tongjiao.gov.cn";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: every offending field with its rule. Nothing was written.
    #[error("invalid argument (参数无效): {0}")]
    InvalidArgument(Violations),
    /// A precondition of the domain is not met; `missing` names each missing item.
    #[error("{summary}")]
    FailedPrecondition {
        summary: String,
        missing: Vec<Missing>,
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

/// A single-field INVALID_ARGUMENT.
pub fn field_error(field: &str, description: impl Into<String>) -> ApiError {
    let mut v = Violations::new();
    v.push(field, description.into());
    ApiError::InvalidArgument(v)
}

impl ApiError {
    pub fn precondition(summary: impl Into<String>, missing: Vec<Missing>) -> Self {
        ApiError::FailedPrecondition {
            summary: summary.into(),
            missing,
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
            ApiError::InvalidArgument(v) => {
                let mut details = ErrorDetails::new();
                let mut message = String::from("invalid argument (参数无效): ");
                for (i, FieldViolation { field, description }) in v.iter().enumerate() {
                    if i > 0 {
                        message.push_str("; ");
                    }
                    message.push_str(field);
                    message.push_str(": ");
                    message.push_str(description);
                    details.add_bad_request_violation(field.clone(), description.clone());
                }
                details.set_error_info(
                    "INVALID_ARGUMENT",
                    DOMAIN,
                    std::collections::HashMap::<String, String>::new(),
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::FailedPrecondition { summary, missing } => {
                let mut details = ErrorDetails::new();
                let mut message = summary;
                if !missing.is_empty() {
                    message.push_str(": ");
                    let parts: Vec<&str> = missing.iter().map(|m| m.detail.as_str()).collect();
                    message.push_str(&parts.join("; "));
                }
                for m in &missing {
                    details.add_precondition_failure_violation(
                        m.kind.as_str(),
                        m.buyer_id.clone().unwrap_or_default(),
                        m.detail.clone(),
                    );
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
