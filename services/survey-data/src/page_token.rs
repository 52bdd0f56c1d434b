//! ListUnits page tokens: opaque to clients, hex of `v1|<project>|<version>|<last unit code>`. The
//! token pins the version the walk started on, so a new upload in the middle of a walk does not
//! mix two versions.
use tongjiao_domain::UnitCode;

const PREFIX: &str = "v1";

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    pub project_id: String,
    pub version: u32,
    /// The last unit code of the previous page.
    pub after: String,
}

impl PageToken {
    pub fn encode(&self) -> String {
        hex::encode(format!(
            "{PREFIX}|{}|{}|{}",
            self.project_id, self.version, self.after
        ))
    }

    /// `None` for anything this service did not issue.
    pub fn decode(token: &str) -> Option<PageToken> {
        let bytes = hex::decode(token).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.split('|');
        if parts.next()? != PREFIX {
            return None;
        }
        let project_id = parts.next()?.to_owned();
        let version: u32 = parts.next()?.parse().ok()?;
        let after = parts.next()?;
        if parts.next().is_some() || version == 0 || project_id.is_empty() {
            return None;
        }
        let code: UnitCode = after.parse().ok()?;
        if code.as_str() != after {
            return None;
        }
        Some(PageToken {
            project_id,
            version,
            after: after.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let t = PageToken {
            project_id: "P-1".into(),
            version: 3,
            after: "140827001002GB00012F00030101".into(),
        };
        assert_eq!(PageToken::decode(&t.encode()), Some(t.clone()));
        for bad in [
            "",
            "zz",
            "abc",
            &hex::encode("v2|P-1|3|140827001002GB00012F00030101"),
            &hex::encode("v1|P-1|0|140827001002GB00012F00030101"),
            &hex::encode("v1|P-1|x|140827001002GB00012F00030101"),
            &hex::encode("v1|P-1|3|140827001002GB00012F0003010"),
            &hex::encode("v1|P-1|3|140827001002GB00012F00030101|x"),
            &hex::encode("v1||3|140827001002GB00012F00030101"),
        ] {
            assert_eq!(PageToken::decode(bad), None, "{bad}");
        }
    }
}
