//! The acceptance gate (验收闸口): which filings a project needs before 首次登记, and what is missing.
use tongjiao_proto::acceptance::{Filing, FilingKind, GateStatus};

/// Every filing kind in enum order.
const ALL_KINDS: [FilingKind; 4] = [
    FilingKind::PlanningAcceptance,
    FilingKind::CompletionFiling,
    FilingKind::CivilAirDefenseAcceptance,
    FilingKind::CadastralSurvey,
];

/// The kinds a project needs, in enum order: 规划验收, 竣工验收备案, 权籍调查, plus 人防验收 when
/// declared required.
pub fn required_kinds(civil_air_defense_required: bool) -> Vec<FilingKind> {
    ALL_KINDS
        .into_iter()
        .filter(|k| civil_air_defense_required || *k != FilingKind::CivilAirDefenseAcceptance)
        .collect()
}

/// The gate of a project from its latest filing per kind (any order, at most one per kind).
pub fn gate_of(
    project_id: &str,
    civil_air_defense_required: bool,
    mut latest: Vec<Filing>,
) -> GateStatus {
    latest.sort_by_key(|f| f.kind);
    let missing: Vec<i32> = required_kinds(civil_air_defense_required)
        .into_iter()
        .map(|k| k as i32)
        .filter(|k| !latest.iter().any(|f| f.kind == *k))
        .collect();
    GateStatus {
        project_id: project_id.to_owned(),
        complete: missing.is_empty(),
        filings: latest,
        missing,
        civil_air_defense_required,
    }
}

/// The gate after `filing` is recorded: it replaces the previous filing of its kind.
pub fn with_filing(gate: &GateStatus, filing: Filing) -> GateStatus {
    let mut latest: Vec<Filing> = gate
        .filings
        .iter()
        .filter(|f| f.kind != filing.kind)
        .cloned()
        .collect();
    latest.push(filing);
    gate_of(&gate.project_id, gate.civil_air_defense_required, latest)
}

/// True when a GateChanged event is due: completeness, the missing kinds or the 人防 requirement differ.
pub fn changed(before: &GateStatus, after: &GateStatus) -> bool {
    before.complete != after.complete
        || before.missing != after.missing
        || before.civil_air_defense_required != after.civil_air_defense_required
}

/// English and Chinese name of a kind, for logs and messages.
pub fn kind_label(kind: FilingKind) -> &'static str {
    match kind {
        FilingKind::Unspecified => "unspecified (未填写)",
        FilingKind::PlanningAcceptance => "planning acceptance (规划验收)",
        FilingKind::CompletionFiling => "completion filing (竣工验收备案)",
        FilingKind::CivilAirDefenseAcceptance => "civil air defence acceptance (人防验收)",
        FilingKind::CadastralSurvey => "cadastral survey (权籍调查)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filing(kind: FilingKind, id: &str) -> Filing {
        Filing {
            filing_id: id.into(),
            project_id: "P-1".into(),
            kind: kind as i32,
            ..Default::default()
        }
    }

    #[test]
    fn nothing_recorded_misses_the_three_base_kinds() {
        let g = gate_of("P-1", false, vec![]);
        assert!(!g.complete);
        assert_eq!(
            g.missing,
            [
                FilingKind::PlanningAcceptance as i32,
                FilingKind::CompletionFiling as i32,
                FilingKind::CadastralSurvey as i32
            ]
        );
        let g = gate_of("P-1", true, vec![]);
        assert_eq!(g.missing, [1, 2, 3, 4]);
    }

    #[test]
    fn complete_when_every_required_kind_is_there() {
        let g = gate_of(
            "P-1",
            false,
            vec![
                filing(FilingKind::CadastralSurvey, "c"),
                filing(FilingKind::PlanningAcceptance, "a"),
                filing(FilingKind::CompletionFiling, "b"),
            ],
        );
        assert!(g.complete);
        assert!(g.missing.is_empty());
        let kinds: Vec<i32> = g.filings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [1, 2, 4]);
        let required = gate_of("P-1", true, g.filings.clone());
        assert!(!required.complete);
        assert_eq!(required.missing, [3]);
        assert!(changed(&g, &required));
    }

    #[test]
    fn a_later_filing_replaces_its_kind() {
        let g = gate_of(
            "P-1",
            false,
            vec![filing(FilingKind::PlanningAcceptance, "a")],
        );
        let g2 = with_filing(&g, filing(FilingKind::PlanningAcceptance, "a2"));
        assert_eq!(g2.filings.len(), 1);
        assert_eq!(g2.filings[0].filing_id, "a2");
        assert!(!changed(&g, &g2));
        let g3 = with_filing(&g2, filing(FilingKind::CivilAirDefenseAcceptance, "d"));
        assert_eq!(g3.filings.len(), 2);
        assert!(
            !changed(&g2, &g3),
            "人防 not required: the gate did not move"
        );
    }
}
