use std::{fmt, str::FromStr};

use crate::UnknownValueError;

/// 办件状态: where one buyer's same-day-certificate case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum CaseState {
    /// Waiting for facts (首次登记, 契税, 维修资金 …).
    Pending,
    /// Every condition met; can be registered on handover day.
    Ready,
    /// 转移登记 entered in the 登簿; certificate not yet issued.
    TransferRegistered,
    /// 不动产权证书 issued. Final.
    CertificateIssued,
    /// Deadline missed while pending: 视为放弃 (treated as opting out). Final.
    Lapsed,
    /// The buyer declined 房证同交. Final.
    OptedOut,
}

impl CaseState {
    /// Every state, in lifecycle order.
    pub const ALL: [CaseState; 6] = [
        Self::Pending,
        Self::Ready,
        Self::TransferRegistered,
        Self::CertificateIssued,
        Self::Lapsed,
        Self::OptedOut,
    ];

    const IDS: &'static [&'static str] = &[
        "pending",
        "ready",
        "transfer_registered",
        "certificate_issued",
        "lapsed",
        "opted_out",
    ];

    /// Stable lowercase id, used in storage and the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::TransferRegistered => "transfer_registered",
            Self::CertificateIssued => "certificate_issued",
            Self::Lapsed => "lapsed",
            Self::OptedOut => "opted_out",
        }
    }

    /// Chinese label for UIs and notices.
    #[must_use]
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::Pending => "待补齐材料",
            Self::Ready => "可办理",
            Self::TransferRegistered => "已转移登记",
            Self::CertificateIssued => "已发证",
            Self::Lapsed => "逾期视为放弃",
            Self::OptedOut => "已放弃房证同交",
        }
    }

    fn label_en(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::TransferRegistered => "transfer registered",
            Self::CertificateIssued => "certificate issued",
            Self::Lapsed => "lapsed",
            Self::OptedOut => "opted out",
        }
    }

    /// True for states no event moves out of.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::CertificateIssued | Self::Lapsed | Self::OptedOut
        )
    }
}

impl fmt::Display for CaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CaseState {
    type Err = UnknownValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownValueError {
                value: s.to_owned(),
                expected: Self::IDS,
                term_zh: "办件状态",
            })
    }
}

/// Something that happened to a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(tag = "type", rename_all = "snake_case")
)]
pub enum CaseEvent {
    /// The readiness check was re-run; `complete` when nothing is missing.
    ReadinessChanged {
        /// True when [`crate::case_missing`] returned nothing.
        complete: bool,
    },
    /// The deadline announced in the 收房通知 passed.
    DeadlinePassed,
    /// The registry entered the 转移登记 in the 登簿.
    TransferRegistered,
    /// The certificate was issued.
    CertificateIssued,
    /// The buyer declined 房证同交 (the clause in the 购房合同 is optional).
    OptedOut,
}

impl CaseEvent {
    /// Stable lowercase id of the event type.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadinessChanged { .. } => "readiness_changed",
            Self::DeadlinePassed => "deadline_passed",
            Self::TransferRegistered => "transfer_registered",
            Self::CertificateIssued => "certificate_issued",
            Self::OptedOut => "opted_out",
        }
    }

    fn action(self) -> (&'static str, &'static str) {
        match self {
            Self::ReadinessChanged { .. } => ("change readiness", "变更办理条件"),
            Self::DeadlinePassed => ("apply the deadline", "按逾期处理"),
            Self::TransferRegistered => ("register transfer", "办理转移登记"),
            Self::CertificateIssued => ("issue the certificate", "发证"),
            Self::OptedOut => ("opt out", "放弃房证同交"),
        }
    }
}

impl fmt::Display for CaseEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadinessChanged { complete } => {
                write!(f, "readiness_changed(complete={complete})")
            }
            other => f.write_str(other.as_str()),
        }
    }
}

/// An event that the current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionError {
    /// State the case was in.
    pub from: CaseState,
    /// The rejected event.
    pub event: CaseEvent,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CaseEvent as E;
        use CaseState as S;
        let (action, action_zh) = self.event.action();
        match (self.from, self.event) {
            (S::Pending, E::TransferRegistered) => f.write_str(
                "case is pending, not ready: cannot register transfer (办件材料未齐，不能办理转移登记)",
            ),
            (S::Pending | S::Ready, E::CertificateIssued) => write!(
                f,
                "case is {}, transfer not registered: cannot issue the certificate (尚未办理转移登记，不能发证)",
                self.from.label_en()
            ),
            (S::TransferRegistered, E::TransferRegistered) => f.write_str(
                "transfer is already registered: cannot register it again (已办理转移登记，不能重复登簿)",
            ),
            (S::TransferRegistered, E::OptedOut) => f.write_str(
                "transfer is already registered: cannot opt out (已办理转移登记，不能放弃房证同交)",
            ),
            (S::CertificateIssued, _) => write!(
                f,
                "certificate already issued, case is closed: cannot {action} (证书已发放，办件已办结，不能{action_zh})"
            ),
            (S::Lapsed, _) => write!(
                f,
                "case lapsed after the deadline: cannot {action} (已逾期视为放弃房证同交，不能{action_zh})"
            ),
            (S::OptedOut, _) => write!(
                f,
                "buyer opted out of same-day certificate: cannot {action} (买受人已放弃房证同交，不能{action_zh})"
            ),
            (from, _) => write!(
                f,
                "case is {}: cannot {action} ({}状态下不能{action_zh})",
                from.label_en(),
                from.label_zh()
            ),
        }
    }
}

impl std::error::Error for TransitionError {}

/// The case state machine.
///
/// Repeated facts are no-ops rather than errors so that re-delivered events
/// are harmless. A ready case keeps its place when the deadline passes; if it
/// later falls back to pending, the caller must apply `DeadlinePassed` again
/// for it to lapse, because the machine does not remember the deadline.
pub fn transition(state: CaseState, event: CaseEvent) -> Result<CaseState, TransitionError> {
    use CaseEvent as E;
    use CaseState as S;
    let next = match (state, event) {
        (S::Pending, E::ReadinessChanged { complete: true }) => S::Ready,
        (S::Pending, E::ReadinessChanged { complete: false }) => S::Pending,
        (S::Ready, E::ReadinessChanged { complete: true }) => S::Ready,
        (S::Ready, E::ReadinessChanged { complete: false }) => S::Pending,
        (S::Pending, E::DeadlinePassed) => S::Lapsed,
        (S::Ready, E::DeadlinePassed) => S::Ready,
        (S::Pending | S::Ready, E::OptedOut) => S::OptedOut,
        (S::Ready, E::TransferRegistered) => S::TransferRegistered,
        // Facts arriving after 登簿 cannot undo a registration.
        (S::TransferRegistered, E::ReadinessChanged { .. } | E::DeadlinePassed) => {
            S::TransferRegistered
        }
        (S::TransferRegistered, E::CertificateIssued) => S::CertificateIssued,
        (S::OptedOut, E::OptedOut) => S::OptedOut,
        (s, E::ReadinessChanged { .. } | E::DeadlinePassed) if s.is_final() => s,
        _ => return Err(TransitionError { from: state, event }),
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CaseEvent as E;
    use CaseState as S;
    use proptest::prelude::*;

    const EVENTS: [CaseEvent; 6] = [
        E::ReadinessChanged { complete: true },
        E::ReadinessChanged { complete: false },
        E::DeadlinePassed,
        E::TransferRegistered,
        E::CertificateIssued,
        E::OptedOut,
    ];

    #[test]
    fn ids_round_trip() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<CaseState>(), Ok(s));
            assert!(!s.label_zh().is_empty());
        }
        assert!("Pending".parse::<CaseState>().is_err());
        assert_eq!(
            S::ALL.iter().filter(|s| s.is_final()).count(),
            3,
            "CertificateIssued, Lapsed, OptedOut"
        );
    }

    #[test]
    fn full_transition_table() {
        let t = E::ReadinessChanged { complete: true };
        let f = E::ReadinessChanged { complete: false };
        let ok: &[(CaseState, CaseEvent, CaseState)] = &[
            (S::Pending, t, S::Ready),
            (S::Pending, f, S::Pending),
            (S::Pending, E::DeadlinePassed, S::Lapsed),
            (S::Pending, E::OptedOut, S::OptedOut),
            (S::Ready, t, S::Ready),
            (S::Ready, f, S::Pending),
            (S::Ready, E::DeadlinePassed, S::Ready),
            (S::Ready, E::TransferRegistered, S::TransferRegistered),
            (S::Ready, E::OptedOut, S::OptedOut),
            (S::TransferRegistered, t, S::TransferRegistered),
            (S::TransferRegistered, f, S::TransferRegistered),
            (
                S::TransferRegistered,
                E::DeadlinePassed,
                S::TransferRegistered,
            ),
            (
                S::TransferRegistered,
                E::CertificateIssued,
                S::CertificateIssued,
            ),
            (S::CertificateIssued, t, S::CertificateIssued),
            (S::CertificateIssued, f, S::CertificateIssued),
            (
                S::CertificateIssued,
                E::DeadlinePassed,
                S::CertificateIssued,
            ),
            (S::Lapsed, t, S::Lapsed),
            (S::Lapsed, f, S::Lapsed),
            (S::Lapsed, E::DeadlinePassed, S::Lapsed),
            (S::OptedOut, t, S::OptedOut),
            (S::OptedOut, f, S::OptedOut),
            (S::OptedOut, E::DeadlinePassed, S::OptedOut),
            (S::OptedOut, E::OptedOut, S::OptedOut),
        ];
        for from in S::ALL {
            for event in EVENTS {
                let want = ok
                    .iter()
                    .find(|(s, e, _)| *s == from && *e == event)
                    .map(|(_, _, to)| *to)
                    .ok_or(TransitionError { from, event });
                assert_eq!(transition(from, event), want, "{from} + {event}");
            }
        }
    }

    #[test]
    fn error_messages() {
        let msg = |from, event| transition(from, event).unwrap_err().to_string();
        assert_eq!(
            msg(S::Pending, E::TransferRegistered),
            "case is pending, not ready: cannot register transfer (办件材料未齐，不能办理转移登记)"
        );
        assert_eq!(
            msg(S::Ready, E::CertificateIssued),
            "case is ready, transfer not registered: cannot issue the certificate (尚未办理转移登记，不能发证)"
        );
        assert_eq!(
            msg(S::Lapsed, E::TransferRegistered),
            "case lapsed after the deadline: cannot register transfer (已逾期视为放弃房证同交，不能办理转移登记)"
        );
        for from in S::ALL {
            for event in EVENTS {
                if let Err(e) = transition(from, event) {
                    let m = e.to_string();
                    assert!(m.contains('(') && m.contains('不'), "{m}");
                }
            }
        }
    }

    fn state() -> impl Strategy<Value = CaseState> {
        proptest::sample::select(S::ALL.to_vec())
    }

    fn event() -> impl Strategy<Value = CaseEvent> {
        proptest::sample::select(EVENTS.to_vec())
    }

    proptest! {
        #[test]
        fn final_states_never_change(s in state(), e in event()) {
            if s.is_final() {
                match transition(s, e) {
                    Ok(next) => prop_assert_eq!(next, s),
                    Err(err) => prop_assert_eq!(err, TransitionError { from: s, event: e }),
                }
            }
        }

        #[test]
        fn certificate_only_after_transfer_registration(
            events in proptest::collection::vec(event(), 0..40),
        ) {
            let mut current = S::Pending;
            let mut registered = false;
            for e in events {
                let Ok(next) = transition(current, e) else { continue };
                if current.is_final() {
                    prop_assert_eq!(next, current);
                }
                if next == S::TransferRegistered {
                    registered = true;
                }
                if next == S::CertificateIssued && current != S::CertificateIssued {
                    prop_assert!(registered);
                    prop_assert_eq!(current, S::TransferRegistered);
                }
                current = next;
            }
        }
    }
}
