//! Readiness (办理条件): re-evaluates live cases from the facts in PostgreSQL inside the caller's
//! transaction, records every transition, and after commit mirrors the cases to the workflow store.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use sqlx::AssertSqlSafe;
use tokio::sync::{broadcast, mpsc};
use tongjiao_domain::{
    BuyerFacts, CaseEvent, CaseFacts, CaseState, ResidentId, case_missing, parse_date, transition,
};
use tongjiao_proto::registration as pb;
use tongjiao_store::{
    Db, Rows, StoreError, Tx,
    bulk::{self, Insert},
};
use tongjiao_workflow::{CaseSnapshot, Workflow};

use crate::{
    config::Clock,
    convert::{case_proto, encode_missing},
    known::{KNOWN_MAX, KnownFacts},
    rows::{self, BuyerRow, CASE_COLUMNS, CaseRow, Measured, ProjectRow, UnitFacts, Val},
};

/// A case that changed, for batch watchers.
#[derive(Clone, Debug)]
pub struct CaseChanged {
    pub batch_id: String,
    pub case: pb::Case,
}

#[derive(Clone)]
pub struct Engine {
    pub db: Db,
    pub workflow: Workflow,
    pub clock: Clock,
    pub changes: broadcast::Sender<CaseChanged>,
    /// Projects whose 首次登记 is complete: nothing changes such a row any more, so the counter
    /// and the feed follower read it from here instead of spending a round trip per batch.
    pub settled_projects: Arc<RwLock<HashMap<String, ProjectRow>>>,
    /// Buyers and tax facts known present (see [`KnownFacts`]).
    pub known: Arc<RwLock<KnownFacts>>,
    /// Pending cases re-evaluated but not yet written (see [`Deferred`]).
    pub deferred: Arc<Deferred>,
}

/// What [`Engine::read_facts`] found.
pub struct ReadFacts {
    pub buyers: HashMap<String, Vec<BuyerRow>>,
    pub facts: UnitFacts,
    /// What the read learned, for [`Engine::remember`] once the transaction committed.
    pub learned: KnownFacts,
}

/// Where committed cases go to be mirrored (see [`Engine::spawn_publisher`]).
pub type Publisher = mpsc::Sender<Vec<pb::Case>>;

/// Tax facts the register does not hold, as memory vouches (see [`Engine::vouched_absent`]).
#[derive(Default, Debug)]
pub struct Absent {
    /// (unit code, buyer's resident id)
    pub deed_taxes: HashSet<(String, String)>,
    pub funds: HashSet<String>,
}

/// What a re-evaluation did.
#[derive(Default)]
pub struct Reevaluated {
    /// The cases written (clear ids).
    pub changed: Vec<pb::Case>,
    /// What to remember once the transaction committed (see [`Engine::read_facts`]).
    pub learned: KnownFacts,
    /// Units of the cases left unwritten (see [`Engine::reevaluate_units`]).
    pub deferred: Vec<String>,
}

/// Units whose pending cases the tax follower found lacking less but did not write, until they are
/// written (see `follow::flush_deferred`). During a burst of the feed a case's 契税 and 维修资金
/// arrive in different passes; writing each intermediate list of what it lacks (a row version, a
/// log entry, a Redis write) was half of the follower's case writes. A case that becomes READY is
/// written at once; one that stays pending is written once, when the feed has been quiet a moment
/// or the oldest deferral reaches its bound, with what it lacks then. Nothing here is durable:
/// on start, and every ten minutes, every pending case is evaluated again
/// ([`Engine::refresh_pending`]), so a process that stopped before writing leaves no stale list for
/// longer than that. Whether a case may be transferred or issued is always decided from the facts
/// inside the counter's own transaction, never from a stored list.
#[derive(Default)]
pub struct Deferred {
    state: std::sync::Mutex<DeferredState>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct DeferredState {
    units: HashSet<String>,
    /// When the oldest unit in `units` was deferred.
    since: Option<std::time::Instant>,
    /// When the tax follower last committed a pass.
    last_pass: Option<std::time::Instant>,
}

impl Deferred {
    fn state(&self) -> std::sync::MutexGuard<'_, DeferredState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a tax pass committed: the units whose cases it wrote (their deferral is over: the
    /// write holds every fact up to the pass) and those it deferred, and the pass's time.
    pub fn add<'a>(&self, written: impl IntoIterator<Item = &'a str>, units: Vec<String>) {
        let now = std::time::Instant::now();
        let mut st = self.state();
        st.last_pass = Some(now);
        for unit in written {
            st.units.remove(unit);
        }
        if units.is_empty() {
            if st.units.is_empty() {
                st.since = None;
            }
            return;
        }
        if st.units.is_empty() {
            st.since = Some(now);
        }
        st.units.extend(units);
        drop(st);
        self.wake.notify_one();
    }

    /// How long until the deferred units are due: `quiet` after the last pass, or `bound` after
    /// the oldest deferral, whichever comes first; `None` when there are none.
    pub fn due_in(
        &self,
        quiet: std::time::Duration,
        bound: std::time::Duration,
    ) -> Option<std::time::Duration> {
        let st = self.state();
        if st.units.is_empty() {
            return None;
        }
        let now = std::time::Instant::now();
        let quiet_at = st.last_pass.map_or(now, |t| t + quiet);
        let bound_at = st.since.map_or(now, |t| t + bound);
        Some(quiet_at.min(bound_at).saturating_duration_since(now))
    }

    /// Takes every deferred unit.
    pub fn take(&self) -> Vec<String> {
        let mut st = self.state();
        st.since = None;
        st.units.drain().collect()
    }

    /// Resolves once a unit is deferred (at once if one was since the last `take`).
    pub async fn added(&self) {
        self.wake.notified().await;
    }
}

/// States whose readiness still moves with the facts.
const LIVE_STATES: &str = "('pending', 'ready')";

impl Engine {
    /// The projects by id: settled ones from memory, the others from the register.
    pub async fn projects(
        &self,
        tx: &mut Tx<'_>,
        ids: &[String],
    ) -> Result<HashMap<String, ProjectRow>, StoreError> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let settled = self
                .settled_projects
                .read()
                .unwrap_or_else(|p| p.into_inner());
            for id in ids {
                match settled.get(id) {
                    Some(p) => {
                        found.insert(id.clone(), p.clone());
                    }
                    None => missing.push(id.clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let loaded = rows::projects(tx, &missing).await?;
        let done: Vec<&ProjectRow> = loaded
            .values()
            .filter(|p| p.first_registration_done())
            .collect();
        if !done.is_empty() {
            let mut settled = self
                .settled_projects
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for p in done {
                settled.insert(p.project_id.clone(), p.clone());
            }
        }
        found.extend(loaded);
        Ok(found)
    }

    /// The buyers of `cases` and the facts about their units. A case whose buyers and tax facts are
    /// all known present (remembered, or in `recorded`: what this transaction wrote) costs only the
    /// read of its unit's survey row, and so does one whose buyers are remembered and whose unit the
    /// memory holds complete at the tax cursor this transaction holds (see [`KnownFacts::trusts`]).
    /// Only what is not known is read from the register. One statement either way.
    pub async fn read_facts(
        &self,
        tx: &mut Tx<'_>,
        cases: &[&CaseRow],
        projects: &HashMap<String, ProjectRow>,
        recorded: &KnownFacts,
        measured: Measured,
    ) -> Result<ReadFacts, StoreError> {
        let mut buyers: HashMap<String, Vec<BuyerRow>> = HashMap::with_capacity(cases.len());
        let mut known = UnitFacts::default();
        let mut buyers_unknown: Vec<&CaseRow> = Vec::new();
        let mut facts_unknown: Vec<&CaseRow> = Vec::new();
        {
            let memory = self.known.read().unwrap_or_else(|p| p.into_inner());
            for &case in cases {
                let project = projects.get(&case.project_id);
                if let (Some(list), Some(project)) =
                    (memory.complete(case, project, recorded), project)
                {
                    buyers.insert(case.case_id.clone(), list.to_vec());
                    memory.fill(case, project, &mut known);
                    continue;
                }
                match memory.buyers.get(&case.case_id) {
                    Some(list) => {
                        let land = project.is_none_or(ProjectRow::is_land);
                        if !land && memory.unit_complete(&case.unit_code, recorded) {
                            memory.fill_present(case, list, recorded, &mut known);
                        } else {
                            facts_unknown.push(case);
                        }
                        buyers.insert(case.case_id.clone(), list.clone());
                    }
                    None => {
                        buyers_unknown.push(case);
                        facts_unknown.push(case);
                    }
                }
            }
        }
        let units: Vec<String> = cases.iter().map(|c| c.unit_code.clone()).collect();
        let ids: Vec<String> = buyers_unknown.iter().map(|c| c.case_id.clone()).collect();
        let taxed: Vec<String> = facts_unknown.iter().map(|c| c.unit_code.clone()).collect();
        let parcels: Vec<String> = facts_unknown
            .iter()
            .filter_map(|c| projects.get(&c.project_id))
            .filter(|p| p.is_land())
            .map(|p| p.parcel_code.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let (read_buyers, mut facts) =
            rows::buyers_and_facts(tx, &ids, &units, &taxed, &parcels, measured).await?;
        // What this transaction wrote and what it read; the buyers of every case read below.
        let mut learned = KnownFacts {
            buyers: HashMap::with_capacity(ids.len()),
            funds: recorded.funds.union(&facts.funds).cloned().collect(),
            deed_taxes: recorded
                .deed_taxes
                .union(&facts.deed_taxes)
                .cloned()
                .collect(),
            land_fees: recorded
                .land_fees
                .union(&facts.land_fees)
                .cloned()
                .collect(),
            // Read in full here: complete once the tax follower's pass that did it has committed.
            complete_units: taxed.into_iter().collect(),
            tax_cursor: None,
            live_cases: HashMap::new(),
        };
        for id in ids {
            let list = read_buyers.get(&id).cloned().unwrap_or_default();
            learned.buyers.insert(id.clone(), list.clone());
            buyers.insert(id, list);
        }
        facts.funds.extend(known.funds);
        facts.deed_taxes.extend(known.deed_taxes);
        facts.land_fees.extend(known.land_fees);
        Ok(ReadFacts {
            buyers,
            facts,
            learned,
        })
    }

    /// The projects of `cases`, and what [`Engine::read_facts`] finds for them.
    pub async fn projects_and_facts(
        &self,
        tx: &mut Tx<'_>,
        cases: &[&CaseRow],
        recorded: &KnownFacts,
        measured: Measured,
    ) -> Result<(HashMap<String, ProjectRow>, ReadFacts), StoreError> {
        let project_ids: Vec<String> = cases
            .iter()
            .map(|c| c.project_id.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let projects = self.projects(tx, &project_ids).await?;
        let read = self
            .read_facts(tx, cases, &projects, recorded, measured)
            .await?;
        Ok((projects, read))
    }

    /// Remembers what a committed transaction read or wrote (see [`KnownFacts`]).
    pub fn remember(&self, learned: KnownFacts) {
        if learned.is_empty() {
            return;
        }
        self.with_room(learned.len()).merge(learned);
    }

    /// After the tax follower committed a pass (see [`KnownFacts::advance`]).
    pub fn advance_tax(&self, from: i64, to: i64, written: KnownFacts, read: HashSet<String>) {
        self.with_room(written.len() + read.len())
            .advance(from, to, written, read);
    }

    /// The memory, started over if `more` entries would take it past [`KNOWN_MAX`].
    fn with_room(&self, more: usize) -> std::sync::RwLockWriteGuard<'_, KnownFacts> {
        let mut memory = self.known.write().unwrap_or_else(|p| p.into_inner());
        if memory.len() + more > KNOWN_MAX {
            *memory = KnownFacts::default();
        }
        memory
    }

    /// Splits the units a pass of the tax follower touched into those whose live case still lacks
    /// a tax fact (see [`KnownFacts::still_lacking`]) and the rest, to evaluate.
    pub fn still_lacking(
        &self,
        units: Vec<String>,
        recorded: &KnownFacts,
    ) -> (Vec<String>, Vec<String>) {
        let memory = self.known.read().unwrap_or_else(|p| p.into_inner());
        units
            .into_iter()
            .partition(|unit| memory.still_lacking(unit, recorded))
    }

    /// Which of the tax facts a pass of the tax follower is about to write the register cannot
    /// hold yet (see [`KnownFacts::vouches_absent`]): those go in without a conflict check.
    pub fn vouched_absent(&self, recorded: &KnownFacts) -> Absent {
        let memory = self.known.read().unwrap_or_else(|p| p.into_inner());
        Absent {
            deed_taxes: recorded
                .deed_taxes
                .iter()
                .filter(|(unit, buyer)| memory.vouches_absent_deed_tax(unit, buyer, recorded))
                .cloned()
                .collect(),
            funds: recorded
                .funds
                .iter()
                .filter(|unit| memory.vouches_absent_fund(unit, recorded))
                .cloned()
                .collect(),
        }
    }

    /// After the tax follower failed a pass (see [`KnownFacts::distrust`]).
    pub fn distrust_tax(&self) {
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .distrust();
    }

    /// Forgets cases that left the live states (see [`KnownFacts::forget`]).
    pub fn forget<'a>(&self, cases: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut memory = self.known.write().unwrap_or_else(|p| p.into_inner());
        for (case_id, unit_code) in cases {
            memory.forget(case_id, unit_code);
        }
    }

    /// Re-evaluates the live cases on these units. `recorded` holds the tax facts this transaction
    /// wrote; the returned facts are to be remembered once it committed. With `defer`, a case that
    /// stays pending and only lacks less is not written: its unit is returned instead, for
    /// [`Deferred`] once the transaction committed.
    pub async fn reevaluate_units(
        &self,
        tx: &mut Tx<'_>,
        units: &[String],
        actor: &str,
        recorded: &KnownFacts,
        defer: bool,
    ) -> Result<Reevaluated, StoreError> {
        if units.is_empty() {
            return Ok(Reevaluated::default());
        }
        let prefix = format!(
            "SELECT {CASE_COLUMNS} FROM registration.cases WHERE state IN {LIVE_STATES} AND unit_code"
        );
        let suffix = format!(" ORDER BY case_id{}", self.db.for_update());
        let cases: Vec<CaseRow> = rows::fetch_in(tx, &prefix, units, &suffix).await?;
        self.reevaluate_with(tx, cases, actor, recorded, defer)
            .await
    }

    /// Re-evaluates every live case of a project.
    pub async fn reevaluate_project(
        &self,
        tx: &mut Tx<'_>,
        project_id: &str,
        actor: &str,
    ) -> Result<Vec<pb::Case>, StoreError> {
        let sql = format!(
            "SELECT {CASE_COLUMNS} FROM registration.cases WHERE project_id = $1 AND state IN {LIVE_STATES} \
             ORDER BY case_id{}",
            self.db.for_update()
        );
        let cases: Vec<CaseRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(project_id)
            .fetch_all(&mut **tx)
            .await?;
        self.reevaluate(tx, cases, actor).await
    }

    /// Lapses pending cases whose material deadline has passed. `since` is the day of an earlier
    /// sweep that committed: every pending case with an earlier deadline was lapsed then, and no case
    /// can become pending with a passed deadline afterwards (each evaluation lapses it on the spot),
    /// so only deadlines from that day on are read, not every issued case in the register's history.
    /// `today` is the sweep's own day: deadlines before it have passed.
    pub async fn lapse_overdue(
        &self,
        tx: &mut Tx<'_>,
        today: &str,
        since: Option<&str>,
    ) -> Result<Vec<pb::Case>, StoreError> {
        // `active = 1` holds for every pending case and lets the partial deadline index serve.
        let sql = format!(
            "SELECT {CASE_COLUMNS} FROM registration.cases WHERE active = 1 AND state = 'pending' \
             AND material_deadline < $1 AND material_deadline >= $2 ORDER BY case_id{}",
            self.db.for_update()
        );
        let cases: Vec<CaseRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(today)
            .bind(since.unwrap_or(""))
            .fetch_all(&mut **tx)
            .await?;
        self.reevaluate(tx, cases, "deadline-sweeper").await
    }

    /// Evaluates every pending case again, a page at a time, writing those whose evaluation changed.
    /// On start and every ten minutes: a pending case whose facts changed while its write was
    /// deferred (see [`Deferred`]) may still show what it lacked before, if the process that
    /// deferred it stopped before writing it.
    pub async fn refresh_pending(&self, actor: &str) -> Result<usize, StoreError> {
        let mut after = String::new();
        let mut written = 0;
        loop {
            let mut tx = self.db.begin().await?;
            let sql = format!(
                "SELECT {CASE_COLUMNS} FROM registration.cases WHERE active = 1 AND state = 'pending' \
                 AND case_id > $1 ORDER BY case_id LIMIT 500{}",
                self.db.for_update()
            );
            let cases: Vec<CaseRow> = sqlx::query_as(AssertSqlSafe(sql))
                .bind(&after)
                .fetch_all(&mut *tx)
                .await?;
            let Some(last) = cases.last() else {
                tx.rollback().await?;
                return Ok(written);
            };
            after = last.case_id.clone();
            let changed = self.reevaluate(&mut tx, cases, actor).await?;
            tx.commit().await?;
            written += changed.len();
            self.publish(changed).await;
        }
    }

    /// Recomputes what each case lacks and moves it through the state machine; writes the changed
    /// ones with a new version and a log entry. Returns the changed cases (clear ids).
    pub async fn reevaluate(
        &self,
        tx: &mut Tx<'_>,
        cases: Vec<CaseRow>,
        actor: &str,
    ) -> Result<Vec<pb::Case>, StoreError> {
        Ok(self
            .reevaluate_with(tx, cases, actor, &KnownFacts::default(), false)
            .await?
            .changed)
    }

    /// [`Engine::reevaluate`] with the tax facts this transaction wrote, returning also what to
    /// remember once it committed (see [`Engine::read_facts`]), and with `defer` the units of the
    /// cases left unwritten (see [`Engine::reevaluate_units`]).
    pub async fn reevaluate_with(
        &self,
        tx: &mut Tx<'_>,
        cases: Vec<CaseRow>,
        actor: &str,
        recorded: &KnownFacts,
        defer: bool,
    ) -> Result<Reevaluated, StoreError> {
        if cases.is_empty() {
            return Ok(Reevaluated::default());
        }
        let refs: Vec<&CaseRow> = cases.iter().collect();
        let (
            projects,
            ReadFacts {
                buyers,
                facts,
                learned,
            },
        ) = self
            .projects_and_facts(tx, &refs, recorded, Measured::Skip)
            .await?;
        let today = self.clock.today();
        let now = self.clock.now_ms();
        let mut changed = Vec::new();
        let mut deferred = Vec::new();
        let mut case_rows = Vec::new();
        let mut log_rows = Vec::new();
        for case in cases {
            let Some(project) = projects.get(&case.project_id) else {
                continue;
            };
            let case_buyers = buyers.get(&case.case_id).map(Vec::as_slice).unwrap_or(&[]);
            let evaluation = evaluate(&case, case_buyers, project, &facts, today);
            if evaluation.state == case.state && evaluation.missing == case.missing {
                continue;
            }
            if defer
                && evaluation.state == case.state
                && case.state == CaseState::Pending.as_str()
                && evaluation.lapsed_reason.is_none()
            {
                deferred.push(case.unit_code);
                continue;
            }
            let mut row = case;
            row.state = evaluation.state.clone();
            row.missing = evaluation.missing;
            row.version += 1;
            row.updated_at_ms = now;
            if evaluation.lapsed_reason.is_some() {
                row.lapsed_reason = evaluation.lapsed_reason;
                row.active = 0;
            }
            log_rows.push(vec![
                Val::Text(row.case_id.clone()),
                Val::Int(row.version),
                Val::Text(row.state.clone()),
                Val::Text(actor.to_owned()),
                Val::Text(evaluation.note),
                Val::Int(now),
            ]);
            case_rows.push(rows::case_change_values(&row));
            changed.push(case_proto(&row, case_buyers));
        }
        write_cases(tx, case_rows, log_rows).await?;
        Ok(Reevaluated {
            changed,
            learned,
            deferred,
        })
    }

    /// Mirrors committed cases to the workflow store and tells batch watchers. A workflow store
    /// failure is logged, not returned: PostgreSQL already holds the truth and reads fall back to it.
    pub async fn publish(&self, cases: Vec<pb::Case>) {
        if cases.is_empty() {
            return;
        }
        let snapshots: Vec<CaseSnapshot> = cases.iter().map(snapshot).collect();
        if let Err(e) = self.workflow.put_cases(&snapshots).await {
            tracing::warn!(error = %e, cases = cases.len(), "workflow store update failed");
        }
        for case in cases {
            let _ = self.changes.send(CaseChanged {
                batch_id: case.batch_id.clone(),
                case,
            });
        }
    }

    /// Starts a task that publishes committed cases in the order they are sent. A writer that hands
    /// its cases here goes on to its next transaction while the workflow store catches up; the
    /// store is a version-guarded mirror, so only order per writer matters, and `queue` batches in
    /// flight bound how far a writer runs ahead of it.
    pub fn spawn_publisher(&self, queue: usize) -> Publisher {
        let (published, mut to_publish) = mpsc::channel::<Vec<pb::Case>>(queue);
        let engine = self.clone();
        tokio::spawn(async move {
            while let Some(cases) = to_publish.recv().await {
                engine.publish(cases).await;
            }
        });
        published
    }

    /// Loads cases from PostgreSQL (clear ids).
    pub async fn load_cases(&self, ids: &[String]) -> Result<Vec<pb::Case>, StoreError> {
        let mut tx = self.db.begin().await?;
        let rows_ = rows::cases_by_ids(&mut tx, ids, "").await?;
        let buyers = rows::buyers_of(&mut tx, ids).await?;
        tx.commit().await?;
        Ok(rows_
            .iter()
            .map(|r| case_proto(r, buyers.get(&r.case_id).map(Vec::as_slice).unwrap_or(&[])))
            .collect())
    }

    /// Drops the workflow state and rebuilds it from PostgreSQL (on start, on loss, on request).
    pub async fn rebuild(&self, project_id: Option<&str>) -> Result<u64, anyhow::Error> {
        if project_id.is_none() {
            self.workflow.clear().await?;
        }
        let mut after = String::new();
        let mut total = 0u64;
        loop {
            let ids: Vec<(String,)> = match project_id {
                Some(p) => {
                    sqlx::query_as(
                        "SELECT case_id FROM registration.cases WHERE project_id = $1 AND case_id > $2 \
                         ORDER BY case_id LIMIT 1000",
                    )
                    .bind(p)
                    .bind(&after)
                    .fetch_all(self.db.pool())
                    .await?
                }
                None => {
                    sqlx::query_as(
                        "SELECT case_id FROM registration.cases WHERE case_id > $1 ORDER BY case_id LIMIT 1000",
                    )
                    .bind(&after)
                    .fetch_all(self.db.pool())
                    .await?
                }
            };
            let Some(last) = ids.last() else { break };
            after = last.0.clone();
            let ids: Vec<String> = ids.into_iter().map(|(i,)| i).collect();
            let snapshots: Vec<CaseSnapshot> =
                self.load_cases(&ids).await?.iter().map(snapshot).collect();
            self.workflow.put_cases(&snapshots).await?;
            total += snapshots.len() as u64;
        }
        Ok(total)
    }
}

pub fn snapshot(case: &pb::Case) -> CaseSnapshot {
    use prost::Message;
    CaseSnapshot {
        case_id: case.case_id.clone(),
        batch_id: case.batch_id.clone(),
        unit_code: case.unit_code.clone(),
        buyer_ids: case.buyers.iter().map(|b| b.resident_id.clone()).collect(),
        version: case.version as i64,
        state: pb::CaseState::try_from(case.state)
            .map(|s| s.as_str_name().to_owned())
            .unwrap_or_default(),
        payload: case.encode_to_vec(),
    }
}

pub struct Evaluation {
    pub state: String,
    pub missing: String,
    pub lapsed_reason: Option<String>,
    pub note: String,
}

/// What the register knows about one case, for the domain's readiness rules.
pub fn case_facts(
    case: &CaseRow,
    buyers: &[BuyerRow],
    project: &ProjectRow,
    facts: &rows::UnitFacts,
) -> CaseFacts {
    CaseFacts {
        land_only: project.is_land(),
        first_registration_done: project.first_registration_done(),
        unit_surveyed: facts
            .surveyed
            .get(&case.unit_code)
            .is_some_and(|p| *p == case.project_id),
        maintenance_fund_deposited: facts.funds.contains(&case.unit_code),
        land_fees_paid: facts.land_fees.contains(&project.parcel_code),
        buyers: buyers
            .iter()
            .filter_map(|b| {
                let id = b.resident_id.parse::<ResidentId>().ok()?;
                Some(BuyerFacts {
                    deed_tax_done: facts
                        .deed_taxes
                        .contains(&(case.unit_code.clone(), b.resident_id.clone())),
                    resident_id: id,
                })
            })
            .collect(),
    }
}

/// Pure: what a live case lacks given the facts, and the state that follows.
pub fn evaluate(
    case: &CaseRow,
    buyers: &[BuyerRow],
    project: &ProjectRow,
    facts: &rows::UnitFacts,
    today: time::Date,
) -> Evaluation {
    let case_facts = case_facts(case, buyers, project, facts);
    let missing = case_missing(&case_facts);
    let current = case
        .state
        .parse::<CaseState>()
        .unwrap_or(CaseState::Pending);
    let mut state = transition(
        current,
        CaseEvent::ReadinessChanged {
            complete: missing.is_empty(),
        },
    )
    .unwrap_or(current);
    let mut lapsed_reason = None;
    let mut note = format!("readiness: {} missing", missing.len());
    let overdue = parse_date(&case.material_deadline).is_ok_and(|d| today > d);
    if overdue && let Ok(next) = transition(state, CaseEvent::DeadlinePassed) {
        if next == CaseState::Lapsed && state != CaseState::Lapsed {
            let items: Vec<&str> = missing.iter().map(|m| m.detail.as_str()).collect();
            lapsed_reason = Some(format!(
                "material deadline {} passed with items missing: {} (逾期未补齐材料，视为放弃房证同交)",
                case.material_deadline,
                items.join("; ")
            ));
            note = "lapsed: material deadline passed (视为放弃)".into();
        }
        state = next;
    }
    Evaluation {
        state: state.as_str().to_owned(),
        missing: if state.is_final() || state == CaseState::Ready {
            // A ready, lapsed or finished case shows no open items; a lapsed one keeps them in
            // its reason.
            String::new()
        } else {
            encode_missing(&missing)
        },
        lapsed_reason,
        note,
    }
}

/// Changed cases are updated, not upserted: an `INSERT … ON CONFLICT DO UPDATE` of every column
/// inserted speculatively, met the key and then updated, and sent seventeen arrays where nine say
/// what changed. The rows come as a `WITH` list so the one statement reads the same on both backends
/// (`SELECT * FROM UNNEST(…)` on PostgreSQL, `VALUES …` on SQLite).
const CASE_UPDATE: &str = "WITH u (case_id, state, missing, version, active, lapsed_reason, \
    certificate_number, transfer_registered_at_ms, updated_at_ms) AS (";
const CASE_UPDATE_TAIL: &str = ") UPDATE registration.cases AS c SET state = u.state, missing = u.missing, \
    version = u.version, active = u.active, lapsed_reason = u.lapsed_reason, \
    certificate_number = u.certificate_number, \
    transfer_registered_at_ms = u.transfer_registered_at_ms, updated_at_ms = u.updated_at_ms \
    FROM u WHERE c.case_id = u.case_id";
const CASE_LOG: &str =
    "INSERT INTO registration.case_log (case_id, version, state, actor, note, at_ms)";

/// Changed cases ([`rows::case_change_values`]) and their log entries, as parts of one
/// [`bulk::insert_all`].
pub fn case_writes<'a>(cases: &'a Rows, log: &'a Rows) -> [Insert<'a>; 2] {
    [
        Insert {
            head: CASE_UPDATE,
            rows: cases,
            tail: CASE_UPDATE_TAIL,
        },
        Insert {
            head: CASE_LOG,
            rows: log,
            tail: "",
        },
    ]
}

/// Writes case rows and their log entries.
pub async fn write_cases(
    tx: &mut Tx<'_>,
    case_rows: Vec<Vec<Val>>,
    log_rows: Vec<Vec<Val>>,
) -> Result<(), StoreError> {
    let (cases, log) = (Rows::from(case_rows), Rows::from(log_rows));
    bulk::insert_all(tx, &case_writes(&cases, &log)).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Deferred;

    const QUIET: Duration = Duration::from_secs(60);
    const BOUND: Duration = Duration::from_secs(600);

    #[test]
    fn nothing_deferred_is_never_due() {
        let d = Deferred::default();
        d.add([], Vec::new());
        assert_eq!(d.due_in(QUIET, BOUND), None);
    }

    #[test]
    fn a_deferral_is_due_after_the_quiet_and_a_write_ends_it() {
        let d = Deferred::default();
        d.add([], vec!["u1".into(), "u2".into()]);
        let due = d.due_in(QUIET, BOUND).expect("due");
        assert!(due <= QUIET && due > QUIET / 2, "{due:?}");
        // A later pass that wrote u1's case: only u2 is left to write.
        d.add(["u1"], Vec::new());
        assert_eq!(d.take(), ["u2".to_owned()]);
        assert_eq!(d.due_in(QUIET, BOUND), None, "taken");
    }

    #[test]
    fn a_busy_feed_still_writes_within_the_bound() {
        let d = Deferred::default();
        d.add([], vec!["u1".into()]);
        // Passes keep coming: the quiet never arrives, the bound from the first deferral does.
        let due = d.due_in(Duration::from_secs(3600), Duration::from_millis(1));
        assert!(
            due.is_some_and(|w| w <= Duration::from_millis(1)),
            "{due:?}"
        );
        d.add([], vec!["u2".into()]);
        let mut all = d.take();
        all.sort();
        assert_eq!(all, ["u1".to_owned(), "u2".to_owned()]);
    }
}
