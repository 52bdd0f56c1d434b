//! Errors of the command line: usage mistakes exit 2, everything else 1; gRPC statuses are shown
//! with their code, message, field violations (google.rpc.BadRequest) and missing items
//! (google.rpc.PreconditionFailure).
use std::fmt;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A mistake in how the command was called (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for a usage error wrapped in anyhow.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// The process exit code for an error: 2 for usage, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err
        .chain()
        .any(|e| e.downcast_ref::<UsageError>().is_some())
    {
        2
    } else {
        1
    }
}

/// gRPC code name with its Chinese meaning.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK (成功)",
        Code::Cancelled => "CANCELLED (已取消)",
        Code::Unknown => "UNKNOWN (未知错误)",
        Code::InvalidArgument => "INVALID_ARGUMENT (参数无效)",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED (超时)",
        Code::NotFound => "NOT_FOUND (不存在)",
        Code::AlreadyExists => "ALREADY_EXISTS (已存在)",
        Code::PermissionDenied => "PERMISSION_DENIED (无权限)",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED (资源耗尽)",
        Code::FailedPrecondition => "FAILED_PRECONDITION (条件未满足)",
        Code::Aborted => "ABORTED (已中止)",
        Code::OutOfRange => "OUT_OF_RANGE (超出范围)",
        Code::Unimplemented => "UNIMPLEMENTED (未实现)",
        Code::Internal => "INTERNAL (内部错误)",
        Code::Unavailable => "UNAVAILABLE (服务不可用)",
        Code::DataLoss => "DATA_LOSS (数据丢失)",
        Code::Unauthenticated => "UNAUTHENTICATED (未认证)",
    }
}

/// A gRPC status as several lines: code, message, then each field violation and missing item.
pub fn format_status(s: &Status) -> String {
    let mut out = format!(
        "gRPC 状态 status: {}\n信息 message: {}",
        code_label(s.code()),
        s.message()
    );
    let details = s.get_error_details();
    if let Some(bad) = details.bad_request()
        && !bad.field_violations.is_empty()
    {
        out.push_str("\n字段错误 field violations:");
        for v in &bad.field_violations {
            out.push_str(&format!("\n  - {}: {}", v.field, v.description));
        }
    }
    if let Some(pre) = details.precondition_failure()
        && !pre.violations.is_empty()
    {
        out.push_str("\n尚缺 missing:");
        for v in &pre.violations {
            if v.subject.is_empty() {
                out.push_str(&format!("\n  - {}: {}", v.r#type, v.description));
            } else {
                out.push_str(&format!(
                    "\n  - {} [{}]: {}",
                    v.r#type, v.subject, v.description
                ));
            }
        }
    }
    out
}

/// The whole error for stderr: the outermost message, its causes, and any gRPC status in full.
pub fn describe(err: &anyhow::Error) -> String {
    let mut out = format!("错误 error: {err}");
    let mut previous = err.to_string();
    for cause in err.chain().skip(1) {
        if let Some(status) = cause.downcast_ref::<Status>() {
            out.push('\n');
            out.push_str(&format_status(status));
        } else {
            let text = cause.to_string();
            // Transport errors repeat their source's message; show each message once.
            if text != previous {
                out.push_str(&format!("\n原因 caused by: {text}"));
            }
            previous = text;
        }
    }
    if let Some(status) = err.downcast_ref::<Status>()
        && err.chain().count() == 1
    {
        out = format!(
            "错误 error: gRPC call failed (调用失败)\n{}",
            format_status(status)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn usage_errors_exit_2_others_1() {
        assert_eq!(exit_code(&usage("bad flag")), 2);
        assert_eq!(exit_code(&usage("bad flag").context("while x")), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("boom")), 1);
    }

    #[test]
    fn status_shows_code_message_and_field_violations() {
        let mut d = ErrorDetails::new();
        d.add_bad_request_violation("cases[0].unit_code", "must be 28 characters");
        let s = Status::with_error_details(Code::InvalidArgument, "invalid argument", d);
        let err = anyhow::Error::new(s).context("submitting batch (提交批次)");
        let text = describe(&err);
        assert!(text.starts_with("错误 error: submitting batch (提交批次)"));
        assert!(text.contains("INVALID_ARGUMENT (参数无效)"));
        assert!(text.contains("  - cases[0].unit_code: must be 28 characters"));
    }

    #[test]
    fn bare_status_is_described() {
        let err = anyhow::Error::new(Status::not_found("case x not found (办件不存在)"));
        let text = describe(&err);
        assert!(text.contains("NOT_FOUND (不存在)"));
        assert!(text.contains("case x not found"));
    }
}
