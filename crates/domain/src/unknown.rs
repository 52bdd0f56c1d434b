/// A stable lowercase id (state, kind, ownership form) that is not recognised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {value:?}; expected one of {} ({term_zh}取值无效)", expected.join(", "))]
pub struct UnknownValueError {
    /// The rejected input.
    pub value: String,
    /// The accepted ids, in declaration order.
    pub expected: &'static [&'static str],
    /// The Chinese term of the thing being parsed, e.g. 办件状态.
    pub term_zh: &'static str,
}
