//! Facts that never change once committed, remembered so that later evaluations of the same cases
//! need not read them again (the feed follower evaluates a case once per tax fact that arrives, and
//! the counter once more at 转移登记): a case's buyers, written in the case's own transaction and
//! never changed after, and the tax facts (维修资金, 契税, land fees), kept first-come and never
//! removed. Only presence is remembered. A fact not remembered is read from the register, so what
//! another replica recorded is never missed; and nothing is remembered before the transaction that
//! read or wrote it committed, so nothing is taken for present that a rollback undid.
//!
//! Absence is remembered only per unit and only together with the tax feed's cursor: a unit is
//! *complete* when every 契税 and 维修资金 row of it in the register is remembered, as of the cursor
//! in `tax_cursor`. Tax facts enter the register only through the tax follower, which applies
//! events after the cursor under the cursor row's lock; so while the cursor still stands where this
//! process left it, no one else added a fact, and a fact a complete unit does not show is absent.
//! The follower checks that under the lock before it trusts the memory ([`KnownFacts::trusts`]),
//! and moves the cursor here after each commit with everything the pass wrote
//! ([`KnownFacts::advance`]); any other cursor (another replica applied events, or the memory
//! started over) drops every complete unit. During a burst of the feed a case is then evaluated
//! without reading its facts at all: its buyers are remembered from the batch's submission, and
//! its unit was read complete there or at its previous evaluation.
use std::collections::{HashMap, HashSet};

use crate::rows::{BuyerRow, CaseRow, ProjectRow, UnitFacts};

/// Buyers by case and present tax facts (see the module documentation).
#[derive(Default, Debug, Clone)]
pub struct KnownFacts {
    pub buyers: HashMap<String, Vec<BuyerRow>>,
    pub funds: HashSet<String>,
    /// (unit code, buyer's resident id)
    pub deed_taxes: HashSet<(String, String)>,
    /// Parcel codes.
    pub land_fees: HashSet<String>,
    /// Units whose tax facts are all remembered (see the module documentation). In what a
    /// transaction learned: the units whose facts it read in full.
    pub complete_units: HashSet<String>,
    /// The tax feed cursor `complete_units` holds at. In what a transaction learned: the cursor it
    /// read before its facts, when it did; in what it recorded: the cursor the follower holds locked.
    pub tax_cursor: Option<i64>,
    /// The live case of each housing unit, by unit code, as this process's submissions made them
    /// (see [`KnownFacts::still_lacking`]).
    pub live_cases: HashMap<String, String>,
}

/// Entries remembered at most; past this the memory starts over. An entry is ≈ 170 bytes (a case's
/// buyers ≈ 300, a fund ≈ 80, a 契税 ≈ 130), so this bounds the memory near 35 MB; cases leave it
/// when their certificate is issued, and a county has far fewer live cases at a time.
pub const KNOWN_MAX: usize = 200_000;

impl KnownFacts {
    pub fn len(&self) -> usize {
        self.buyers.len()
            + self.funds.len()
            + self.deed_taxes.len()
            + self.land_fees.len()
            + self.complete_units.len()
            + self.live_cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops a case that left the live states (its certificate issued) and its unit's facts:
    /// nothing evaluates it again, and the memory stays the size of the live cases.
    pub fn forget(&mut self, case_id: &str, unit_code: &str) {
        if let Some(buyers) = self.buyers.remove(case_id) {
            for b in buyers {
                self.deed_taxes
                    .remove(&(unit_code.to_owned(), b.resident_id));
            }
        }
        self.funds.remove(unit_code);
        self.complete_units.remove(unit_code);
        if self.live_cases.get(unit_code).is_some_and(|c| c == case_id) {
            self.live_cases.remove(unit_code);
        }
    }

    /// Adds what a committed transaction learned. Its complete units count only when it read them
    /// at the cursor the memory holds: a read before the cursor moved may lack what the move added.
    pub fn merge(&mut self, other: KnownFacts) {
        self.buyers.extend(other.buyers);
        self.funds.extend(other.funds);
        self.deed_taxes.extend(other.deed_taxes);
        self.land_fees.extend(other.land_fees);
        self.live_cases.extend(other.live_cases);
        if other.tax_cursor.is_some() && other.tax_cursor == self.tax_cursor {
            self.complete_units.extend(other.complete_units);
        }
    }

    /// Whether a transaction holding the tax cursor at `cursor` may take a complete unit's missing
    /// facts for absent.
    pub fn trusts(&self, cursor: Option<i64>) -> bool {
        cursor.is_some() && cursor == self.tax_cursor
    }

    /// After the tax follower committed the events from `from` (exclusive) to `to`: `written` holds
    /// the facts they carried, `read` the units whose facts the pass read in full (and remembered
    /// already). Only if the cursor stood at `from`, where this memory left it, do the complete
    /// units stay complete and the read ones join them: any other cursor means another replica
    /// applied events, or the memory started over since and lost what the pass remembered.
    pub fn advance(&mut self, from: i64, to: i64, written: KnownFacts, read: HashSet<String>) {
        self.funds.extend(written.funds);
        self.deed_taxes.extend(written.deed_taxes);
        self.land_fees.extend(written.land_fees);
        if to == from {
            // Nothing applied, the cursor unmoved: trust stands as it was. Taking `to` as the cursor
            // would trust again, at the very cursor a failed pass left, what a submission read
            // before that pass committed part of its facts.
            return;
        }
        if self.tax_cursor == Some(from) {
            self.complete_units.extend(read);
        } else {
            self.complete_units.clear();
        }
        self.tax_cursor = Some(to);
    }

    /// Trusts nothing absent any more, until the tax follower's next pass (a pass that failed
    /// may have committed part of its facts without moving the cursor).
    pub fn distrust(&mut self) {
        self.complete_units.clear();
        self.tax_cursor = None;
    }

    /// Whether the unit's tax facts may be taken from memory alone in a transaction that recorded
    /// `recorded` (see [`KnownFacts::trusts`]).
    pub fn unit_complete(&self, unit: &str, recorded: &KnownFacts) -> bool {
        self.trusts(recorded.tax_cursor) && self.complete_units.contains(unit)
    }

    /// Whether the register holds no 维修资金 of the unit yet, for a pass of the tax follower that
    /// holds the cursor as `recorded` says: as [`KnownFacts::unit_complete`] vouches for absence.
    /// Only that pass writes tax facts, so its plain insert of one cannot meet another.
    pub fn vouches_absent_fund(&self, unit: &str, recorded: &KnownFacts) -> bool {
        self.unit_complete(unit, recorded) && !self.funds.contains(unit)
    }

    /// [`KnownFacts::vouches_absent_fund`] for a buyer's 契税 on the unit.
    pub fn vouches_absent_deed_tax(&self, unit: &str, buyer: &str, recorded: &KnownFacts) -> bool {
        self.unit_complete(unit, recorded)
            && !self
                .deed_taxes
                .contains(&(unit.to_owned(), buyer.to_owned()))
    }

    /// Whether the live case of this housing unit still lacks a 维修资金 or a buyer's 契税 after a
    /// pass of the tax follower that recorded `recorded`: then evaluating it could only leave it
    /// pending with a shorter list of what it lacks, a write the follower defers anyway (see
    /// `engine::Deferred`), and it is deferred without reading it. Absence is vouched for as by
    /// [`KnownFacts::unit_complete`]. The case is the one this process's submission made live; if
    /// another replica has since made another case of the unit live (the register keeps one per
    /// unit), that case is evaluated when the deferral is written, within a second.
    pub fn still_lacking(&self, unit: &str, recorded: &KnownFacts) -> bool {
        if !self.unit_complete(unit, recorded) {
            return false;
        }
        let Some(buyers) = self
            .live_cases
            .get(unit)
            .and_then(|case| self.buyers.get(case))
        else {
            return false;
        };
        if !(self.funds.contains(unit) || recorded.funds.contains(unit)) {
            return true;
        }
        buyers.iter().any(|b| {
            let key = (unit.to_owned(), b.resident_id.clone());
            !(self.deed_taxes.contains(&key) || recorded.deed_taxes.contains(&key))
        })
    }

    /// The case's buyers when every tax fact its readiness can ask about is known present, here or
    /// in `recorded` (what the caller's own transaction wrote): then a read of the register would
    /// answer nothing more, because such facts are never removed. `None` when anything is unknown.
    pub fn complete(
        &self,
        case: &CaseRow,
        project: Option<&ProjectRow>,
        recorded: &KnownFacts,
    ) -> Option<&[BuyerRow]> {
        let buyers = self.buyers.get(&case.case_id)?;
        let project = project?;
        let unit = &case.unit_code;
        if !(self.funds.contains(unit) || recorded.funds.contains(unit)) {
            return None;
        }
        for b in buyers {
            let key = (unit.clone(), b.resident_id.clone());
            if !(self.deed_taxes.contains(&key) || recorded.deed_taxes.contains(&key)) {
                return None;
            }
        }
        if project.is_land()
            && !(self.land_fees.contains(&project.parcel_code)
                || recorded.land_fees.contains(&project.parcel_code))
        {
            return None;
        }
        Some(buyers)
    }

    /// Adds the facts of a complete unit present here or in `recorded` to `facts`: those of the
    /// case's buyers and its unit (see [`KnownFacts::unit_complete`]).
    pub fn fill_present(
        &self,
        case: &CaseRow,
        buyers: &[BuyerRow],
        recorded: &KnownFacts,
        facts: &mut UnitFacts,
    ) {
        let unit = &case.unit_code;
        if self.funds.contains(unit) || recorded.funds.contains(unit) {
            facts.funds.insert(unit.clone());
        }
        for b in buyers {
            let key = (unit.clone(), b.resident_id.clone());
            if self.deed_taxes.contains(&key) || recorded.deed_taxes.contains(&key) {
                facts.deed_taxes.insert(key);
            }
        }
    }

    /// Adds the facts `complete` vouched for to `facts`, for the readiness rules.
    pub fn fill(&self, case: &CaseRow, project: &ProjectRow, facts: &mut UnitFacts) {
        facts.funds.insert(case.unit_code.clone());
        if let Some(buyers) = self.buyers.get(&case.case_id) {
            for b in buyers {
                facts
                    .deed_taxes
                    .insert((case.unit_code.clone(), b.resident_id.clone()));
            }
        }
        if project.is_land() {
            facts.land_fees.insert(project.parcel_code.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn case(id: &str, unit: &str) -> CaseRow {
        CaseRow {
            case_id: id.into(),
            batch_id: "b".into(),
            project_id: "p".into(),
            unit_code: unit.into(),
            co_ownership: String::new(),
            contract_number: String::new(),
            opt_in: 1,
            state: "pending".into(),
            missing: String::new(),
            version: 1,
            active: 1,
            material_deadline: "2026-12-31".into(),
            handover_date: "2026-11-30".into(),
            lapsed_reason: None,
            certificate_number: None,
            transfer_registered_at_ms: None,
            updated_at_ms: 0,
        }
    }

    fn project(kind: &str) -> ProjectRow {
        ProjectRow {
            project_id: "p".into(),
            name: String::new(),
            kind: kind.into(),
            county_code: "140827".into(),
            parcel_code: "parcel".into(),
            developer_credit_code: String::new(),
            developer_name: String::new(),
            agreement_number: String::new(),
            agreement_signed_on: String::new(),
            land_usage: String::new(),
            land_right_nature: String::new(),
            land_term_start: String::new(),
            land_term_end: String::new(),
            parcel_area_centi: 0,
            first_registration: crate::rows::FIRST_COMPLETED.into(),
            enrolled_at_ms: 0,
            first_applied_at_ms: None,
            first_registered_at_ms: None,
        }
    }

    fn buyer(case: &str, id: &str) -> BuyerRow {
        BuyerRow {
            case_id: case.into(),
            position: 0,
            name: String::new(),
            resident_id: id.into(),
            share_bp: 10_000,
        }
    }

    proptest! {
        /// Memory vouches for a case exactly when the fund, every buyer's 契税 and (for land) the
        /// land fee are each known, from memory or from the caller's own writes.
        #[test]
        fn complete_only_when_every_fact_is_known(
            n_buyers in 0usize..3,
            land in any::<bool>(),
            fund in 0u8..3,
            taxes in proptest::collection::vec(0u8..3, 3),
            fee in 0u8..3,
            buyers_known in any::<bool>(),
        ) {
            // 0: unknown, 1: remembered, 2: recorded by the caller's transaction.
            let c = case("c1", "u1");
            let p = project(if land { crate::rows::KIND_LAND } else { crate::rows::KIND_HOUSING });
            let ids: Vec<String> = (0..n_buyers).map(|i| format!("id{i}")).collect();
            let (mut mem, mut rec) = (KnownFacts::default(), KnownFacts::default());
            if buyers_known {
                mem.buyers.insert("c1".into(), ids.iter().map(|i| buyer("c1", i)).collect());
            }
            let put = |src: u8, mem: &mut KnownFacts, rec: &mut KnownFacts, f: &dyn Fn(&mut KnownFacts)| match src {
                1 => f(mem),
                2 => f(rec),
                _ => {}
            };
            put(fund, &mut mem, &mut rec, &|k| { k.funds.insert("u1".into()); });
            for (i, id) in ids.iter().enumerate() {
                put(taxes[i], &mut mem, &mut rec, &|k| { k.deed_taxes.insert(("u1".into(), id.clone())); });
            }
            put(fee, &mut mem, &mut rec, &|k| { k.land_fees.insert("parcel".into()); });
            let all_known = buyers_known
                && fund != 0
                && taxes[..n_buyers].iter().all(|&t| t != 0)
                && (!land || fee != 0);
            prop_assert_eq!(mem.complete(&c, Some(&p), &rec).is_some(), all_known);
            prop_assert!(mem.complete(&c, None, &rec).is_none());
            if all_known {
                let mut facts = UnitFacts::default();
                mem.fill(&c, &p, &mut facts);
                prop_assert!(facts.funds.contains("u1"));
                for id in &ids {
                    prop_assert!(facts.deed_taxes.contains(&("u1".to_owned(), id.clone())));
                }
                prop_assert_eq!(facts.land_fees.contains("parcel"), land);
            }
        }
    }

    /// One step of the register and of the processes around one memory (see
    /// `a_complete_unit_never_lacks_a_registered_fact`).
    #[derive(Debug, Clone)]
    enum Step {
        /// This process's follower applies facts (unit, buyer or `None` for the 维修资金) and,
        /// in the same transaction, reads these units in full; with the flag, the memory starts
        /// over (too large: another thread's `remember`) between the pass's remembering and its
        /// advance.
        OwnPass(Vec<(u8, Option<u8>)>, Vec<u8>, bool),
        /// This process's follower commits part of a pass's facts and then fails: the cursor
        /// stays where it was.
        FailedPass(Vec<(u8, Option<u8>)>),
        /// Another replica's follower applies facts.
        OtherPass(Vec<(u8, Option<u8>)>),
        /// A submission reads the cursor (then, in later steps, the facts, then remembers).
        SubmitCursor(Vec<u8>),
        SubmitFacts,
        SubmitMerge,
        Forget(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        let fact = (0u8..4, proptest::option::of(0u8..2));
        prop_oneof![
            3 => (
                proptest::collection::vec(fact.clone(), 0..4),
                proptest::collection::vec(0u8..4, 0..3),
                proptest::bool::weighted(0.1),
            )
                .prop_map(|(f, r, reset)| Step::OwnPass(f, r, reset)),
            1 => proptest::collection::vec(fact.clone(), 1..3).prop_map(Step::FailedPass),
            1 => proptest::collection::vec(fact, 1..3).prop_map(Step::OtherPass),
            2 => proptest::collection::vec(0u8..4, 1..3).prop_map(Step::SubmitCursor),
            2 => Just(Step::SubmitFacts),
            2 => Just(Step::SubmitMerge),
            1 => (0u8..4).prop_map(Step::Forget),
        ]
    }

    /// The register: every fact applied so far, and the feed cursor.
    #[derive(Default)]
    struct Register {
        cursor: i64,
        funds: HashSet<String>,
        deed_taxes: HashSet<(String, String)>,
    }

    impl Register {
        fn apply(&mut self, facts: &[(u8, Option<u8>)]) -> KnownFacts {
            let mut written = KnownFacts::default();
            for (u, b) in facts {
                match b {
                    Some(b) => {
                        let key = (format!("u{u}"), format!("b{b}"));
                        self.deed_taxes.insert(key.clone());
                        written.deed_taxes.insert(key);
                    }
                    None => {
                        self.funds.insert(format!("u{u}"));
                        written.funds.insert(format!("u{u}"));
                    }
                }
            }
            self.cursor += facts.len() as i64;
            written
        }

        /// What a read of these units in full finds.
        fn read(&self, units: &[u8]) -> KnownFacts {
            let names: HashSet<String> = units.iter().map(|u| format!("u{u}")).collect();
            KnownFacts {
                funds: self.funds.intersection(&names).cloned().collect(),
                deed_taxes: self
                    .deed_taxes
                    .iter()
                    .filter(|(u, _)| names.contains(u))
                    .cloned()
                    .collect(),
                complete_units: names,
                ..KnownFacts::default()
            }
        }
    }

    proptest! {
        /// Whenever the follower would trust the memory (the cursor stands where it holds it), no
        /// complete unit lacks a fact the register has: absence is never wrongly vouched for,
        /// whatever another replica, a submission or a forgotten case did in between.
        #[test]
        fn a_complete_unit_never_lacks_a_registered_fact(steps in proptest::collection::vec(step(), 1..40)) {
            let mut reg = Register::default();
            let mut mem = KnownFacts::default();
            // A submission in flight: units, the cursor it read, then what its facts read found.
            let mut submit: Option<(Vec<u8>, i64, Option<KnownFacts>)> = None;
            for step in steps {
                match step {
                    Step::OwnPass(facts, read, reset) => {
                        let from = reg.cursor;
                        let written = reg.apply(&facts);
                        // The pass remembers what it read and wrote, then moves the cursor.
                        let learned = reg.read(&read);
                        let units = learned.complete_units.clone();
                        mem.merge(KnownFacts { complete_units: HashSet::new(), ..learned });
                        if reset {
                            mem = KnownFacts::default();
                        }
                        mem.advance(from, reg.cursor, written, units);
                    }
                    Step::FailedPass(facts) => {
                        // Part of the facts committed, the cursor unmoved, nothing remembered.
                        let cursor = reg.cursor;
                        reg.apply(&facts);
                        reg.cursor = cursor;
                        mem.distrust();
                    }
                    Step::OtherPass(facts) => {
                        reg.apply(&facts);
                    }
                    Step::SubmitCursor(units) => submit = Some((units, reg.cursor, None)),
                    Step::SubmitFacts => {
                        if let Some((units, _, found)) = submit.as_mut() {
                            *found = Some(reg.read(units));
                        }
                    }
                    Step::SubmitMerge => {
                        if let Some((_, cursor, Some(found))) = submit.take() {
                            // Each submitted unit's live case, with two buyers.
                            let live_cases = found
                                .complete_units
                                .iter()
                                .map(|u| (u.clone(), format!("c{u}")))
                                .collect();
                            let buyers = found
                                .complete_units
                                .iter()
                                .map(|u| {
                                    let case = format!("c{u}");
                                    let list = vec![buyer(&case, "b0"), buyer(&case, "b1")];
                                    (case, list)
                                })
                                .collect();
                            mem.merge(KnownFacts {
                                tax_cursor: Some(cursor),
                                live_cases,
                                buyers,
                                ..found
                            });
                        }
                    }
                    Step::Forget(u) => {
                        let unit = format!("u{u}");
                        mem.deed_taxes.retain(|(x, _)| *x != unit);
                        mem.forget("no-such-case", &unit);
                    }
                }
                if mem.trusts(Some(reg.cursor)) {
                    for unit in &mem.complete_units {
                        prop_assert_eq!(mem.funds.contains(unit), reg.funds.contains(unit));
                        for key in reg.deed_taxes.iter().filter(|(u, _)| u == unit) {
                            prop_assert!(mem.deed_taxes.contains(key), "{:?} missing", key);
                        }
                    }
                }
                // A pass holding the cursor here never defers, unread, a case whose facts the
                // register holds in full.
                let pass = KnownFacts { tax_cursor: Some(reg.cursor), ..KnownFacts::default() };
                for u in 0..4u8 {
                    let unit = format!("u{u}");
                    let all_in = reg.funds.contains(&unit)
                        && ["b0", "b1"]
                            .iter()
                            .all(|b| reg.deed_taxes.contains(&(unit.clone(), (*b).to_owned())));
                    prop_assert!(
                        !(all_in && mem.still_lacking(&unit, &pass)),
                        "{} deferred though the register holds its facts", unit
                    );
                    // Nor writes without a conflict check a fact the register holds.
                    prop_assert!(
                        !(reg.funds.contains(&unit) && mem.vouches_absent_fund(&unit, &pass)),
                        "{} fund vouched absent", unit
                    );
                    for b in ["b0", "b1"] {
                        let held = reg.deed_taxes.contains(&(unit.clone(), b.to_owned()));
                        prop_assert!(
                            !(held && mem.vouches_absent_deed_tax(&unit, b, &pass)),
                            "{} {} deed tax vouched absent", unit, b
                        );
                    }
                }
            }
        }
    }

    fn units(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn another_cursor_drops_every_complete_unit() {
        let mut k = KnownFacts::default();
        // The first pass finds no cursor in memory: what it read counts from the next one on.
        k.advance(0, 2, KnownFacts::default(), units(&["u0"]));
        assert!(k.trusts(Some(2)) && k.complete_units.is_empty());
        k.advance(2, 3, KnownFacts::default(), units(&["u1"]));
        assert!(k.trusts(Some(3)) && k.complete_units.contains("u1"));
        assert!(!k.trusts(Some(2)) && !k.trusts(None));
        // A read at an older cursor adds nothing complete.
        k.merge(KnownFacts {
            complete_units: units(&["u2"]),
            tax_cursor: Some(2),
            ..KnownFacts::default()
        });
        assert!(!k.complete_units.contains("u2"));
        // Someone else moved the cursor from 3 to 5: this pass starts at 5.
        k.advance(5, 6, KnownFacts::default(), units(&["u3"]));
        assert!(k.complete_units.is_empty() && k.trusts(Some(6)));
        k.advance(6, 7, KnownFacts::default(), units(&["u3"]));
        assert_eq!(k.complete_units, units(&["u3"]));
        k.forget("c", "u3");
        assert!(k.complete_units.is_empty());
        k.advance(7, 8, KnownFacts::default(), units(&["u4"]));
        k.distrust();
        assert!(k.complete_units.is_empty() && !k.trusts(Some(8)));
    }

    #[test]
    fn a_case_still_lacks_a_fact_only_where_memory_vouches_for_its_absence() {
        let mut k = KnownFacts::default();
        k.advance(0, 5, KnownFacts::default(), HashSet::new());
        k.advance(5, 6, KnownFacts::default(), units(&["u1", "u2"]));
        k.live_cases.insert("u1".into(), "c1".into());
        k.buyers
            .insert("c1".into(), vec![buyer("c1", "id1"), buyer("c1", "id2")]);
        let pass = |funds: &[&str], deeds: &[(&str, &str)]| KnownFacts {
            funds: units(funds),
            deed_taxes: deeds
                .iter()
                .map(|(u, b)| ((*u).to_owned(), (*b).to_owned()))
                .collect(),
            tax_cursor: Some(6),
            ..KnownFacts::default()
        };
        // No 维修资金 yet, then no second buyer's 契税: still lacking.
        assert!(k.still_lacking("u1", &pass(&[], &[])));
        assert!(k.still_lacking("u1", &pass(&["u1"], &[("u1", "id1")])));
        // Everything, from this pass or from memory: evaluate it.
        assert!(!k.still_lacking("u1", &pass(&["u1"], &[("u1", "id1"), ("u1", "id2")])));
        k.funds.insert("u1".into());
        k.deed_taxes.insert(("u1".into(), "id1".into()));
        assert!(!k.still_lacking("u1", &pass(&[], &[("u1", "id2")])));
        assert!(k.still_lacking("u1", &pass(&[], &[])));
        // What a pass may write without a conflict check: facts memory vouches are absent.
        assert!(!k.vouches_absent_fund("u1", &pass(&[], &[])));
        assert!(k.vouches_absent_fund("u2", &pass(&[], &[])));
        assert!(!k.vouches_absent_deed_tax("u1", "id1", &pass(&[], &[])));
        assert!(k.vouches_absent_deed_tax("u1", "id2", &pass(&[], &[])));
        assert!(!k.vouches_absent_fund("u3", &pass(&[], &[])));
        // Not vouched for: another cursor, a unit not complete, no live case known, buyers unknown.
        let elsewhere = KnownFacts {
            tax_cursor: Some(7),
            ..KnownFacts::default()
        };
        assert!(!k.still_lacking("u1", &elsewhere));
        k.live_cases.insert("u3".into(), "c1".into());
        assert!(!k.still_lacking("u3", &pass(&[], &[])));
        assert!(!k.still_lacking("u2", &pass(&[], &[])));
        k.live_cases.insert("u2".into(), "c2".into());
        assert!(!k.still_lacking("u2", &pass(&[], &[])));
        // A forgotten case takes its unit's live case along, not another case's; and its unit is
        // no longer complete, so nothing is deferred unread there any more.
        k.forget("c9", "u1");
        assert_eq!(k.live_cases.get("u1").map(String::as_str), Some("c1"));
        assert!(!k.still_lacking("u1", &pass(&[], &[])));
        k.forget("c1", "u1");
        assert!(!k.live_cases.contains_key("u1"));
    }

    #[test]
    fn a_forgotten_case_takes_its_facts_along_and_leaves_the_others() {
        let mut k = KnownFacts::default();
        k.buyers
            .insert("c1".into(), vec![buyer("c1", "id1"), buyer("c1", "id2")]);
        k.buyers.insert("c2".into(), vec![buyer("c2", "id3")]);
        for (u, b) in [("u1", "id1"), ("u1", "id2"), ("u2", "id3")] {
            k.deed_taxes.insert((u.into(), b.into()));
        }
        k.funds.extend(["u1".to_owned(), "u2".to_owned()]);
        k.forget("c1", "u1");
        assert_eq!(k.len(), 3);
        assert!(k.buyers.contains_key("c2") && k.funds.contains("u2"));
        assert!(k.deed_taxes.contains(&("u2".to_owned(), "id3".to_owned())));
        // Forgetting what is not there changes nothing.
        k.forget("c9", "u9");
        assert_eq!(k.len(), 3);
    }

    #[test]
    fn merge_adds_and_len_counts_every_entry() {
        let mut a = KnownFacts::default();
        a.funds.insert("u1".into());
        let mut b = KnownFacts::default();
        b.funds.insert("u2".into());
        b.deed_taxes.insert(("u2".into(), "id".into()));
        b.buyers.insert("c".into(), vec![]);
        a.merge(b);
        assert_eq!(a.len(), 4);
        assert!(!a.is_empty());
    }
}
