//! Registration follows the survey, acceptance and tax feeds. Each batch of events is applied, the
//! feed's cursor advanced and the affected cases re-evaluated in one transaction, so a restart
//! resumes exactly after the last applied event and never applies one twice.
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    time::Duration,
};

use futures::StreamExt;
use sqlx::AssertSqlSafe;
use tongjiao_proto::{acceptance as acc, survey, tax};
use tongjiao_store::{
    Backend, Rows, StoreError, Tx,
    bulk::{self, Insert},
};
use tonic::{Request, transport::Channel};

use crate::{
    Registration,
    engine::{Absent, Publisher, Reevaluated},
    known::KnownFacts,
    rows::{self, Val},
};

/// Events applied in one transaction at most. A backlog (a tax bureau's burst) fills whole batches:
/// the larger the batch, the more of a case's facts arrive together and cost one re-evaluation and
/// one case write instead of one each (500 → 2,000 cut the drain after a 4,666-event burst by a third).
const BATCH: usize = 2000;
/// Applied batches whose cases wait for the workflow store, at most.
const PUBLISH_QUEUE: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    Survey,
    Acceptance,
    Tax,
}

impl Feed {
    pub fn name(self) -> &'static str {
        match self {
            Feed::Survey => "survey",
            Feed::Acceptance => "acceptance",
            Feed::Tax => "tax",
        }
    }
}

/// What applying a batch of events touched.
#[derive(Default)]
struct Touched {
    units: BTreeSet<String>,
    land_parcels: BTreeSet<String>,
}

/// The feed's cursor as `db` (the pool, or a transaction's connection) sees it.
pub async fn cursor<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    feed: Feed,
) -> Result<i64, StoreError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT last_sequence FROM registration.feed_cursors WHERE feed = $1")
            .bind(feed.name())
            .fetch_optional(db)
            .await?;
    Ok(row.map(|r| r.0).unwrap_or(0))
}

async fn set_cursor(tx: &mut Tx<'_>, feed: Feed, seq: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO registration.feed_cursors (feed, last_sequence) VALUES ($1, $2) \
         ON CONFLICT (feed) DO UPDATE SET last_sequence = excluded.last_sequence",
    )
    .bind(feed.name())
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Follows one feed forever, reconnecting with back-off.
pub async fn follow(reg: Registration, feed: Feed) {
    let mut backoff = Duration::from_millis(200);
    // Publishing a batch's cases overlaps applying the next one: on a burst the follower is the
    // slower side, and the workflow store's write was a fifth of each batch.
    let published = reg.engine.spawn_publisher(PUBLISH_QUEUE);
    loop {
        match follow_once(&reg, feed, &published).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(feed = feed.name(), error = %e, "feed follower interrupted; reconnecting");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

fn authed<T>(reg: &Registration, msg: T) -> anyhow::Result<Request<T>> {
    let mut req = Request::new(msg);
    let token = reg.config.tokens.token()?;
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

async fn follow_once(reg: &Registration, feed: Feed, published: &Publisher) -> anyhow::Result<()> {
    let after = cursor(reg.engine.db.pool(), feed).await?;
    match feed {
        Feed::Survey => {
            let mut client = survey::survey_data_service_client::SurveyDataServiceClient::new(
                channel(&reg.config.survey_url).await?,
            )
            .max_decoding_message_size(64 << 20);
            let stream = client
                .watch_survey_events(authed(
                    reg,
                    survey::WatchSurveyEventsRequest {
                        after_sequence: after as u64,
                        backlog_only: false,
                    },
                )?)
                .await?
                .into_inner();
            consume(reg, feed, published, stream, |m| m.event, Facts::survey).await?;
        }
        Feed::Acceptance => {
            let mut client = acc::acceptance_service_client::AcceptanceServiceClient::new(
                channel(&reg.config.acceptance_url).await?,
            );
            let stream = client
                .watch_acceptance_events(authed(
                    reg,
                    acc::WatchAcceptanceEventsRequest {
                        after_sequence: after as u64,
                        backlog_only: false,
                    },
                )?)
                .await?
                .into_inner();
            consume(
                reg,
                feed,
                published,
                stream,
                |m| m.event,
                |f, e, _| f.acceptance(e),
            )
            .await?;
        }
        Feed::Tax => {
            let mut client = tax::tax_status_service_client::TaxStatusServiceClient::new(
                channel(&reg.config.tax_url).await?,
            );
            let stream = client
                .watch_tax_events(authed(
                    reg,
                    tax::WatchTaxEventsRequest {
                        after_sequence: after as u64,
                        backlog_only: false,
                    },
                )?)
                .await?
                .into_inner();
            consume(reg, feed, published, stream, |m| m.event, Facts::tax).await?;
        }
    }
    Ok(())
}

/// Applies a feed's events in batches of whatever has arrived, up to `BATCH`.
async fn consume<M, E: Sequenced + Default>(
    reg: &Registration,
    feed: Feed,
    published: &Publisher,
    stream: tonic::Streaming<M>,
    event: fn(M) -> Option<E>,
    gather: fn(&mut Facts, &E, &mut Touched),
) -> anyhow::Result<()> {
    let mut chunks = stream.ready_chunks(BATCH);
    while let Some(chunk) = chunks.next().await {
        let events: Vec<E> = chunk
            .into_iter()
            .map(|r| r.map(|m| event(m).unwrap_or_default()))
            .collect::<Result<_, _>>()?;
        if let Err(e) = apply_batch(reg, feed, published, events, gather).await {
            // Parts of the pass may have committed facts that nothing remembered, the cursor
            // unmoved: absence is no longer the memory's to vouch for.
            if feed == Feed::Tax {
                reg.engine.distrust_tax();
            }
            return Err(e);
        }
    }
    Ok(())
}

trait Sequenced {
    fn sequence(&self) -> i64;
}
impl Sequenced for survey::SurveyEvent {
    fn sequence(&self) -> i64 {
        self.sequence as i64
    }
}
impl Sequenced for acc::AcceptanceEvent {
    fn sequence(&self) -> i64 {
        self.sequence as i64
    }
}
impl Sequenced for tax::TaxEvent {
    fn sequence(&self) -> i64 {
        self.sequence as i64
    }
}

/// The facts of a batch of events, gathered so each table gets one multi-row write per batch rather
/// than one round trip per event. Later events win where a fact is replaced (keyed maps).
#[derive(Default)]
struct Facts {
    tables: BTreeMap<String, (i64, String, i64)>,
    units: BTreeMap<String, (String, survey::Unit)>,
    gates: BTreeMap<String, (i64, String)>,
    deed_taxes: BTreeMap<(String, String), String>,
    funds: BTreeMap<String, (i64, String)>,
    developer_taxes: BTreeMap<String, (String, String)>,
    land_fees: BTreeMap<String, String>,
}

impl Facts {
    fn survey(&mut self, ev: &survey::SurveyEvent, touched: &mut Touched) {
        match &ev.payload {
            Some(survey::survey_event::Payload::BuildingTablePublished(t)) => {
                let entry =
                    self.tables
                        .entry(ev.project_id.clone())
                        .or_insert((0, String::new(), 0));
                if i64::from(t.version) >= entry.0 {
                    *entry = (
                        i64::from(t.version),
                        t.parcel_code.clone(),
                        i64::from(t.unit_count),
                    );
                }
            }
            Some(survey::survey_event::Payload::UnitMeasured(m)) => {
                if let Some(u) = &m.unit {
                    let newer = self
                        .units
                        .get(&u.unit_code)
                        .is_none_or(|(_, old)| u.table_version >= old.table_version);
                    if newer {
                        self.units
                            .insert(u.unit_code.clone(), (ev.project_id.clone(), u.clone()));
                    }
                    touched.units.insert(u.unit_code.clone());
                }
            }
            None => {}
        }
    }

    fn acceptance(&mut self, ev: &acc::AcceptanceEvent) {
        if let Some(acc::acceptance_event::Payload::GateChanged(g)) = &ev.payload {
            let missing: Vec<&str> = g.missing.iter().map(|k| filing_name(*k)).collect();
            self.gates.insert(
                g.project_id.clone(),
                (i64::from(g.complete), missing.join("\n")),
            );
        }
    }

    fn tax(&mut self, ev: &tax::TaxEvent, touched: &mut Touched) {
        use tax::tax_event::Payload;
        match &ev.payload {
            Some(Payload::DeedTaxPaid(d)) => {
                self.deed_taxes
                    .entry((d.unit_code.clone(), d.buyer_id.clone()))
                    .or_insert_with(|| d.voucher_number.clone());
                touched.units.insert(d.unit_code.clone());
            }
            Some(Payload::MaintenanceFundDeposited(m)) => {
                self.funds
                    .entry(m.unit_code.clone())
                    .or_insert((m.amount_fen, m.receipt_number.clone()));
                touched.units.insert(m.unit_code.clone());
            }
            Some(Payload::DeveloperTaxCleared(d)) => {
                self.developer_taxes
                    .entry(d.project_id.clone())
                    .or_insert((d.developer_credit_code.clone(), d.voucher_number.clone()));
            }
            Some(Payload::LandFeesPaid(l)) => {
                self.land_fees
                    .entry(l.parcel_code.clone())
                    .or_insert_with(|| l.voucher_number.clone());
                touched.land_parcels.insert(l.parcel_code.clone());
            }
            None => {}
        }
    }

    /// Splits unit-level facts into `n` parts by unit code, each with its units: no two parts
    /// touch the same case, so their transactions never wait on each other.
    fn split_by_unit(self, n: usize) -> Vec<(Facts, Vec<String>)> {
        let part_of = |unit: &str| {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(unit, &mut h);
            (std::hash::Hasher::finish(&h) % n as u64) as usize
        };
        let mut parts: Vec<(Facts, BTreeSet<String>)> =
            (0..n).map(|_| Default::default()).collect();
        for ((unit, buyer), voucher) in self.deed_taxes {
            let (facts, units) = &mut parts[part_of(&unit)];
            units.insert(unit.clone());
            facts.deed_taxes.insert((unit, buyer), voucher);
        }
        for (unit, fund) in self.funds {
            let (facts, units) = &mut parts[part_of(&unit)];
            units.insert(unit.clone());
            facts.funds.insert(unit, fund);
        }
        parts
            .into_iter()
            .filter(|(_, units)| !units.is_empty())
            .map(|(facts, units)| (facts, units.into_iter().collect()))
            .collect()
    }

    /// The tax facts of the batch, as its transaction's own reads will see them; `cursor` is the
    /// tax feed cursor the transaction holds locked, if it follows that feed (see
    /// [`KnownFacts::trusts`]).
    fn recorded(&self, cursor: Option<i64>) -> KnownFacts {
        KnownFacts {
            funds: self.funds.keys().cloned().collect(),
            deed_taxes: self.deed_taxes.keys().cloned().collect(),
            land_fees: self.land_fees.keys().cloned().collect(),
            tax_cursor: cursor,
            ..KnownFacts::default()
        }
    }

    /// Writes the facts: those in `absent` (which memory vouches the register does not hold, see
    /// [`crate::engine::Engine::vouched_absent`]) as plain inserts, the others first-come (`ON
    /// CONFLICT DO NOTHING`). The check before each row was a fifth of registration's PostgreSQL
    /// CPU in a burst (11.0 against 8.8 µs per event sent, means of eight pairs). Should memory be
    /// wrong, the key refuses the row, the pass fails and the next one trusts nothing.
    async fn write(self, tx: &mut Tx<'_>, absent: &Absent) -> Result<(), StoreError> {
        use rows::Val::{Int, Text};
        let (new_deeds, deed_taxes): (Vec<_>, Vec<_>) = self
            .deed_taxes
            .into_iter()
            .partition(|(key, _)| absent.deed_taxes.contains(key));
        let (new_funds, funds): (Vec<_>, Vec<_>) = self
            .funds
            .into_iter()
            .partition(|(unit, _)| absent.funds.contains(unit));
        let deed_rows = |rows: Vec<((String, String), String)>| -> Vec<Vec<Val>> {
            rows.into_iter()
                .map(|((u, b), v)| vec![Text(u), Text(b), Text(v)])
                .collect()
        };
        let fund_rows = |rows: Vec<(String, (i64, String))>| -> Vec<Vec<Val>> {
            rows.into_iter()
                .map(|(u, (a, r))| vec![Text(u), Int(a), Text(r)])
                .collect()
        };
        // Every table's rows in one statement (one round trip; see `bulk::insert_all`).
        let parts: [(&str, Vec<Vec<Val>>, &str); 9] = [
            (
                "INSERT INTO registration.building_tables (project_id, latest_version, parcel_code, unit_count)",
                self.tables
                    .into_iter()
                    .map(|(p, (v, parcel, n))| vec![Text(p), Int(v), Text(parcel), Int(n)])
                    .collect(),
                " ON CONFLICT (project_id) DO UPDATE SET latest_version = excluded.latest_version, \
             parcel_code = excluded.parcel_code, unit_count = excluded.unit_count \
             WHERE excluded.latest_version > registration.building_tables.latest_version",
            ),
            (
                "INSERT INTO registration.units (unit_code, project_id, table_version, building_number, room_number, \
             floor_number, location, planned_usage, structure, total_floors, gfa_centi, internal_centi, shared_centi)",
                self.units
                    .into_values()
                    .map(|(project, u)| {
                        vec![
                            Text(u.unit_code),
                            Text(project),
                            Int(i64::from(u.table_version)),
                            Int(i64::from(u.building_number)),
                            Text(u.room_number),
                            Int(i64::from(u.floor_number)),
                            Text(u.location),
                            Text(u.planned_usage),
                            Int(i64::from(u.structure)),
                            Int(i64::from(u.total_floors)),
                            Int(u.measured_gfa_centi_sqm),
                            Int(u.internal_area_centi_sqm),
                            Int(u.shared_area_centi_sqm),
                        ]
                    })
                    .collect(),
                " ON CONFLICT (unit_code) DO UPDATE SET project_id = excluded.project_id, table_version = excluded.table_version, \
             building_number = excluded.building_number, room_number = excluded.room_number, floor_number = excluded.floor_number, \
             location = excluded.location, planned_usage = excluded.planned_usage, structure = excluded.structure, \
             total_floors = excluded.total_floors, gfa_centi = excluded.gfa_centi, internal_centi = excluded.internal_centi, \
             shared_centi = excluded.shared_centi WHERE excluded.table_version >= registration.units.table_version",
            ),
            (
                "INSERT INTO registration.gates (project_id, complete, missing)",
                self.gates
                    .into_iter()
                    .map(|(p, (c, m))| vec![Text(p), Int(c), Text(m)])
                    .collect(),
                " ON CONFLICT (project_id) DO UPDATE SET complete = excluded.complete, missing = excluded.missing",
            ),
            // Tax facts only ever accumulate: the first record of a fact stands.
            (
                "INSERT INTO registration.deed_taxes (unit_code, buyer_id, voucher_number)",
                deed_rows(new_deeds),
                "",
            ),
            (
                "INSERT INTO registration.deed_taxes (unit_code, buyer_id, voucher_number)",
                deed_rows(deed_taxes),
                " ON CONFLICT (unit_code, buyer_id) DO NOTHING",
            ),
            (
                "INSERT INTO registration.maintenance_funds (unit_code, amount_fen, receipt_number)",
                fund_rows(new_funds),
                "",
            ),
            (
                "INSERT INTO registration.maintenance_funds (unit_code, amount_fen, receipt_number)",
                fund_rows(funds),
                " ON CONFLICT (unit_code) DO NOTHING",
            ),
            (
                "INSERT INTO registration.developer_taxes (project_id, credit_code, voucher_number)",
                self.developer_taxes
                    .into_iter()
                    .map(|(p, (c, v))| vec![Text(p), Text(c), Text(v)])
                    .collect(),
                " ON CONFLICT (project_id) DO NOTHING",
            ),
            (
                "INSERT INTO registration.land_fees (parcel_code, voucher_number)",
                self.land_fees
                    .into_iter()
                    .map(|(p, v)| vec![Text(p), Text(v)])
                    .collect(),
                " ON CONFLICT (parcel_code) DO NOTHING",
            ),
        ];
        let parts: Vec<(&str, Rows, &str)> = parts
            .into_iter()
            .map(|(head, rows, tail)| (head, Rows::from(rows), tail))
            .collect();
        let inserts: Vec<Insert<'_>> = parts
            .iter()
            .map(|(head, rows, tail)| Insert { head, rows, tail })
            .collect();
        bulk::insert_all(tx, &inserts).await
    }
}

async fn apply_batch<E: Sequenced>(
    reg: &Registration,
    feed: Feed,
    published: &Publisher,
    events: Vec<E>,
    gather: fn(&mut Facts, &E, &mut Touched),
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut tx = reg.engine.db.begin().await?;
    // The cursor row is the follower's lock: a second replica following the same feed waits here
    // and then skips what the first one applied.
    let current: i64 = {
        let sql = format!(
            "SELECT last_sequence FROM registration.feed_cursors WHERE feed = $1{}",
            reg.engine.db.for_update()
        );
        let row: Option<(i64,)> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(feed.name())
            .fetch_optional(&mut *tx)
            .await?;
        row.map(|r| r.0).unwrap_or(0)
    };
    let mut touched = Touched::default();
    let mut facts = Facts::default();
    let mut last = current;
    for ev in &events {
        if ev.sequence() <= last {
            continue;
        }
        gather(&mut facts, ev, &mut touched);
        last = ev.sequence();
    }
    if last == current {
        tx.rollback().await?;
        return Ok(());
    }
    let actor = format!("feed:{}", feed.name());
    // Only the tax follower writes tax facts, so only it can vouch for their absence.
    let tax_cursor = (feed == Feed::Tax).then_some(current);
    let parts = parallel_parts(reg, &facts, &touched);
    let applied = if parts > 1 {
        // The parts commit on their own connections while this transaction holds the cursor; it
        // advances only once all of them have committed. A part that committed before another
        // failed is applied again from the old cursor: fact rows are kept first-come (ON CONFLICT
        // DO NOTHING) and a re-evaluation of unchanged facts writes nothing, so nothing doubles.
        let applied = futures::future::try_join_all(
            facts
                .split_by_unit(parts)
                .into_iter()
                .map(|(part, units)| apply_part(reg, part, units, &actor, published, tax_cursor)),
        )
        .await?;
        set_cursor(&mut tx, feed, last).await?;
        tx.commit().await?;
        applied
            .into_iter()
            .fold(Applied::default(), |mut all, part| {
                all.changed += part.changed;
                all.read.extend(part.read);
                all.written.merge(part.written);
                all
            })
    } else {
        let recorded = facts.recorded(tax_cursor);
        let absent = reg.engine.vouched_absent(&recorded);
        facts.write(&mut tx, &absent).await?;
        set_cursor(&mut tx, feed, last).await?;
        let mut units: Vec<String> = touched.units.into_iter().collect();
        if !touched.land_parcels.is_empty() {
            let parcels: Vec<String> = touched.land_parcels.into_iter().collect();
            let land_units: Vec<(String,)> = rows::fetch_in(
                &mut tx,
                "SELECT c.unit_code FROM registration.cases c JOIN registration.projects p ON p.project_id = c.project_id \
                 WHERE p.kind = 'land' AND p.parcel_code",
                &parcels,
                "",
            )
            .await?;
            units.extend(land_units.into_iter().map(|(u,)| u));
        }
        let (lacking, units) = if feed == Feed::Tax {
            reg.engine.still_lacking(units, &recorded)
        } else {
            (Vec::new(), units)
        };
        let Reevaluated {
            changed,
            mut learned,
            mut deferred,
        } = reg
            .engine
            .reevaluate_units(&mut tx, &units, &actor, &recorded, feed == Feed::Tax)
            .await?;
        tx.commit().await?;
        let read = std::mem::take(&mut learned.complete_units);
        reg.engine.remember(learned);
        if feed == Feed::Tax {
            deferred.extend(lacking);
            reg.engine
                .deferred
                .add(changed.iter().map(|c| c.unit_code.as_str()), deferred);
        }
        Applied {
            changed: publish(published, changed).await?,
            read,
            written: recorded,
        }
    };
    if feed == Feed::Tax {
        reg.engine
            .advance_tax(current, last, applied.written, applied.read);
    }
    tracing::debug!(
        feed = feed.name(),
        events = events.len(),
        last,
        parts,
        changed = applied.changed,
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "applied feed events"
    );
    Ok(())
}

/// Hands committed cases to the publisher; returns how many.
async fn publish(
    published: &Publisher,
    changed: Vec<tongjiao_proto::registration::Case>,
) -> anyhow::Result<usize> {
    let n = changed.len();
    if n > 0 && published.send(changed).await.is_err() {
        anyhow::bail!("the workflow publisher stopped");
    }
    Ok(n)
}

/// How many transactions to apply a batch in: one, unless the batch holds only facts of single
/// units (契税, 维修资金), enough of them, and the store takes concurrent writers. Project-wide and
/// parcel-wide facts re-evaluate cases across any split, so those batches stay whole.
fn parallel_parts(reg: &Registration, facts: &Facts, touched: &Touched) -> usize {
    let unit_level_only = facts.tables.is_empty()
        && facts.units.is_empty()
        && facts.gates.is_empty()
        && facts.developer_taxes.is_empty()
        && facts.land_fees.is_empty()
        && touched.land_parcels.is_empty();
    if !unit_level_only
        || touched.units.len() < reg.config.parallel_apply_min_units.max(2)
        || reg.engine.db.backend() != Backend::Postgres
    {
        return 1;
    }
    // The batch's own transaction holds a connection while the parts take theirs, and the counter
    // and the other followers need some too: a small pool applies batches whole rather than wait
    // for itself.
    let pool_share = (reg.engine.db.pool().options().get_max_connections() / 4) as usize;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(pool_share).clamp(1, 4)
}

/// What a batch, or a part of it, applied.
#[derive(Default)]
struct Applied {
    /// Cases changed.
    changed: usize,
    /// Units whose tax facts were read in full.
    read: HashSet<String>,
    /// The tax facts written.
    written: KnownFacts,
}

/// Writes one part's facts and re-evaluates its units in a transaction of its own, then hands the
/// changed cases to the publisher at once: they are committed, whatever the other parts do.
async fn apply_part(
    reg: &Registration,
    facts: Facts,
    units: Vec<String>,
    actor: &str,
    published: &Publisher,
    tax_cursor: Option<i64>,
) -> anyhow::Result<Applied> {
    let recorded = facts.recorded(tax_cursor);
    let absent = reg.engine.vouched_absent(&recorded);
    let mut tx = reg.engine.db.begin().await?;
    facts.write(&mut tx, &absent).await?;
    // Parts carry single-unit tax facts only (see `parallel_parts`).
    let (lacking, units) = reg.engine.still_lacking(units, &recorded);
    let Reevaluated {
        changed,
        mut learned,
        mut deferred,
    } = reg
        .engine
        .reevaluate_units(&mut tx, &units, actor, &recorded, true)
        .await?;
    tx.commit().await?;
    deferred.extend(lacking);
    let read = std::mem::take(&mut learned.complete_units);
    reg.engine.remember(learned);
    reg.engine
        .deferred
        .add(changed.iter().map(|c| c.unit_code.as_str()), deferred);
    Ok(Applied {
        changed: publish(published, changed).await?,
        read,
        written: recorded,
    })
}

/// How long the tax feed stays quiet before the deferred pending cases are written. Longer than
/// the gap between two passes inside a burst (one intake batch, ≈ 50 ms on a slow 2-core host): at
/// 20 ms the writes ran between the passes of a burst, each case read once more for it, and the
/// burst took more CPU than writing every intermediate list had.
const QUIET: Duration = Duration::from_millis(100);
/// How long a pending case's write is deferred at most, however busy the feed.
const DEFERRED_AT_MOST: Duration = Duration::from_secs(1);
/// Units written per transaction when the deferred cases are written.
const FLUSH_UNITS: usize = 1000;

/// Writes the pending cases the tax follower deferred (see `engine::Deferred`): each is evaluated
/// again under its row lock, so whatever happened to it meanwhile (another fact, the counter, a
/// second replica) is what gets written. Runs until aborted.
pub async fn flush_deferred(reg: Registration) {
    let deferred = reg.engine.deferred.clone();
    loop {
        match deferred.due_in(QUIET, DEFERRED_AT_MOST) {
            None => deferred.added().await,
            Some(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
            Some(_) => {
                let units = deferred.take();
                for chunk in units.chunks(FLUSH_UNITS) {
                    if let Err(e) = write_deferred(&reg, chunk).await {
                        tracing::warn!(error = %e, units = chunk.len(), "writing deferred cases failed; retrying");
                        deferred.add([], chunk.to_vec());
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
}

async fn write_deferred(reg: &Registration, units: &[String]) -> anyhow::Result<()> {
    let mut tx = reg.engine.db.begin().await?;
    let Reevaluated {
        changed,
        mut learned,
        ..
    } = reg
        .engine
        .reevaluate_units(&mut tx, units, "feed:tax", &KnownFacts::default(), false)
        .await?;
    tx.commit().await?;
    // Complete units are vouched for only by the follower holding the tax cursor.
    learned.complete_units.clear();
    reg.engine.remember(learned);
    reg.engine.publish(changed).await;
    Ok(())
}

fn filing_name(kind: i32) -> &'static str {
    match acc::FilingKind::try_from(kind) {
        Ok(acc::FilingKind::PlanningAcceptance) => "planning acceptance (规划验收)",
        Ok(acc::FilingKind::CompletionFiling) => "completion filing (竣工验收备案)",
        Ok(acc::FilingKind::CivilAirDefenseAcceptance) => "civil air defence acceptance (人防验收)",
        Ok(acc::FilingKind::CadastralSurvey) => "cadastral survey (权籍调查)",
        _ => "unknown filing (未知备案)",
    }
}
