use std::fmt;

/// One invalid request field, shaped like `google.rpc.BadRequest.FieldViolation`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FieldViolation {
    /// Path of the field, e.g. `buyers[1].resident_id`.
    pub field: String,
    /// Reason in English with the Chinese term.
    pub description: String,
}

impl FieldViolation {
    /// Builds a violation from anything string-like.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Collects every invalid field of a request so a client can fix them all in
/// one round trip instead of discovering them one by one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// An empty collector.
    #[must_use]
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Records one violation.
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Unwraps a parse result, recording the error's `Display` under `field`
    /// so validation can continue past the first bad field.
    pub fn check<T, E: fmt::Display>(
        &mut self,
        field: impl Into<String>,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.push(field, err.to_string());
                None
            }
        }
    }

    /// Moves the violations of a nested message in, prefixing their fields
    /// with `prefix.` (e.g. `buyers[0]`).
    pub fn extend_nested(&mut self, prefix: &str, nested: Violations) {
        self.0.extend(nested.0.into_iter().map(|v| FieldViolation {
            field: format!("{prefix}.{}", v.field),
            description: v.description,
        }));
    }

    /// True when nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of recorded violations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The recorded violations in insertion order.
    pub fn iter(&self) -> std::slice::Iter<'_, FieldViolation> {
        self.0.iter()
    }

    /// The recorded violations in insertion order.
    #[must_use]
    pub fn into_vec(self) -> Vec<FieldViolation> {
        self.0
    }

    /// `Ok(())` when empty, otherwise `Err(self)`.
    pub fn into_result(self) -> Result<(), Violations> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl From<FieldViolation> for Violations {
    fn from(v: FieldViolation) -> Self {
        Self(vec![v])
    }
}

impl From<Vec<FieldViolation>> for Violations {
    fn from(v: Vec<FieldViolation>) -> Self {
        Self(v)
    }
}

impl Extend<FieldViolation> for Violations {
    fn extend<I: IntoIterator<Item = FieldViolation>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl IntoIterator for Violations {
    type Item = FieldViolation;
    type IntoIter = std::vec::IntoIter<FieldViolation>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Violations {
    type Item = &'a FieldViolation;
    type IntoIter = std::slice::Iter<'a, FieldViolation>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no invalid fields (无字段错误)");
        }
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_records_display_and_keeps_going() {
        let mut v = Violations::new();
        let ok: Option<u8> = v.check("a", Ok::<u8, String>(1));
        assert_eq!(ok, Some(1));
        let bad: Option<u8> = v.check("b", "x".parse::<u8>());
        assert_eq!(bad, None);
        v.push("c", "must not be empty (不能为空)");
        assert_eq!(v.len(), 2);
        assert_eq!(v.iter().next().map(|f| f.field.as_str()), Some("b"));
        assert_eq!(
            v.to_string(),
            "b: invalid digit found in string; c: must not be empty (不能为空)"
        );
        let err = v.clone().into_result().unwrap_err();
        assert_eq!(err, v);
        assert_eq!(Violations::new().into_result(), Ok(()));
    }

    #[test]
    fn nested_fields_are_prefixed() {
        let mut inner = Violations::new();
        inner.push("resident_id", "bad (错误)");
        let mut outer = Violations::new();
        outer.extend_nested("buyers[0]", inner);
        assert_eq!(
            outer.into_vec(),
            vec![FieldViolation::new("buyers[0].resident_id", "bad (错误)")]
        );
    }
}
