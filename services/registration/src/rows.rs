//! Rows of the registration schema and the SQL that reads them. Statements are plain SQL that runs
//! unchanged on PostgreSQL and the sandbox's SQLite, except where PostgreSQL gets one combined read
//! (with array parameters) in place of several.
use std::collections::{HashMap, HashSet};

use sqlx::{AssertSqlSafe, FromRow};
use tongjiao_store::{StoreError, Tx};

#[derive(Debug, Clone, FromRow)]
pub struct ProjectRow {
    pub project_id: String,
    pub name: String,
    pub kind: String,
    pub county_code: String,
    pub parcel_code: String,
    pub developer_credit_code: String,
    pub developer_name: String,
    pub agreement_number: String,
    pub agreement_signed_on: String,
    pub land_usage: String,
    pub land_right_nature: String,
    pub land_term_start: String,
    pub land_term_end: String,
    pub parcel_area_centi: i64,
    pub first_registration: String,
    pub enrolled_at_ms: i64,
    pub first_applied_at_ms: Option<i64>,
    pub first_registered_at_ms: Option<i64>,
}

impl ProjectRow {
    pub fn is_land(&self) -> bool {
        self.kind == KIND_LAND
    }
    pub fn first_registration_done(&self) -> bool {
        self.first_registration == FIRST_COMPLETED
    }
}

pub const KIND_HOUSING: &str = "housing";
pub const KIND_LAND: &str = "land";
pub const FIRST_NONE: &str = "none";
pub const FIRST_APPLIED: &str = "applied";
pub const FIRST_COMPLETED: &str = "completed";

pub const PROJECT_COLUMNS: &str = "project_id, name, kind, county_code, parcel_code, developer_credit_code, \
    developer_name, agreement_number, agreement_signed_on, land_usage, land_right_nature, land_term_start, \
    land_term_end, parcel_area_centi, first_registration, enrolled_at_ms, first_applied_at_ms, first_registered_at_ms";

#[derive(Debug, Clone, FromRow)]
pub struct CaseRow {
    pub case_id: String,
    pub batch_id: String,
    pub project_id: String,
    pub unit_code: String,
    pub co_ownership: String,
    pub contract_number: String,
    pub opt_in: i64,
    pub state: String,
    pub missing: String,
    pub version: i64,
    pub active: i64,
    pub material_deadline: String,
    pub handover_date: String,
    pub lapsed_reason: Option<String>,
    pub certificate_number: Option<String>,
    pub transfer_registered_at_ms: Option<i64>,
    pub updated_at_ms: i64,
}

pub const CASE_COLUMNS: &str = "case_id, batch_id, project_id, unit_code, co_ownership, contract_number, opt_in, \
    state, missing, version, active, material_deadline, handover_date, lapsed_reason, certificate_number, \
    transfer_registered_at_ms, updated_at_ms";

#[derive(Debug, Clone, FromRow)]
pub struct BuyerRow {
    pub case_id: String,
    pub position: i64,
    pub name: String,
    pub resident_id: String,
    pub share_bp: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct UnitRow {
    pub unit_code: String,
    pub floor_number: i64,
    pub location: String,
    pub planned_usage: String,
    pub structure: i64,
    pub total_floors: i64,
    pub gfa_centi: i64,
    pub internal_centi: i64,
    pub shared_centi: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct BatchRow {
    pub batch_id: String,
    pub project_id: String,
    pub handover_date: String,
    pub material_deadline: String,
    pub submitted_by: String,
    pub submitted_at_ms: i64,
    pub case_count: i64,
}

pub use tongjiao_store::bulk::{Val, fetch_in};

pub async fn project(tx: &mut Tx<'_>, project_id: &str) -> Result<Option<ProjectRow>, StoreError> {
    let sql = format!("SELECT {PROJECT_COLUMNS} FROM registration.projects WHERE project_id = $1");
    Ok(sqlx::query_as::<_, ProjectRow>(AssertSqlSafe(sql))
        .bind(project_id)
        .fetch_optional(&mut **tx)
        .await?)
}

pub async fn projects(
    tx: &mut Tx<'_>,
    ids: &[String],
) -> Result<HashMap<String, ProjectRow>, StoreError> {
    let prefix = format!("SELECT {PROJECT_COLUMNS} FROM registration.projects WHERE project_id");
    let rows: Vec<ProjectRow> = fetch_in(tx, &prefix, ids, "").await?;
    Ok(rows
        .into_iter()
        .map(|p| (p.project_id.clone(), p))
        .collect())
}

pub async fn buyers_of(
    tx: &mut Tx<'_>,
    case_ids: &[String],
) -> Result<HashMap<String, Vec<BuyerRow>>, StoreError> {
    let rows: Vec<BuyerRow> = fetch_in(
        tx,
        "SELECT case_id, position, name, resident_id, share_bp FROM registration.case_buyers WHERE case_id",
        case_ids,
        " ORDER BY case_id, position",
    )
    .await?;
    let mut map: HashMap<String, Vec<BuyerRow>> = HashMap::new();
    for b in rows {
        map.entry(b.case_id.clone()).or_default().push(b);
    }
    Ok(map)
}

pub async fn cases_by_ids(
    tx: &mut Tx<'_>,
    ids: &[String],
    lock: &str,
) -> Result<Vec<CaseRow>, StoreError> {
    let prefix = format!("SELECT {CASE_COLUMNS} FROM registration.cases WHERE case_id");
    fetch_in(tx, &prefix, ids, &format!(" ORDER BY case_id{lock}")).await
}

/// What the other services have told registration about a set of units.
#[derive(Default, Debug)]
pub struct UnitFacts {
    /// unit code → project it was surveyed under.
    pub surveyed: HashMap<String, String>,
    pub funds: HashSet<String>,
    pub deed_taxes: HashSet<(String, String)>,
    pub land_fees: HashSet<String>,
    /// unit code → its measured data, printed on the certificate.
    pub measured: HashMap<String, UnitRow>,
}

pub async fn unit_facts(
    tx: &mut Tx<'_>,
    units: &[String],
    parcels: &[String],
) -> Result<UnitFacts, StoreError> {
    if tongjiao_store::bulk::is_postgres(tx) {
        return Ok(
            buyers_and_facts(tx, &[], units, units, parcels, Measured::Skip)
                .await?
                .1,
        );
    }
    unit_facts_each(tx, units, units, parcels, Measured::Skip).await
}

/// Whether to read the units' measured data ([`UnitFacts::measured`]): only a certificate prints
/// it, and the feed follower and transfers would decode nine columns per unit for nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    Read,
    Skip,
}

/// [`unit_facts`] with one query per fact table.
async fn unit_facts_each(
    tx: &mut Tx<'_>,
    unit_codes: &[String],
    taxed: &[String],
    parcels: &[String],
    measured: Measured,
) -> Result<UnitFacts, StoreError> {
    let surveyed: Vec<(String, String)> = fetch_in(
        tx,
        "SELECT unit_code, project_id FROM registration.units WHERE unit_code",
        unit_codes,
        "",
    )
    .await?;
    let funds: Vec<(String,)> = fetch_in(
        tx,
        "SELECT unit_code FROM registration.maintenance_funds WHERE unit_code",
        taxed,
        "",
    )
    .await?;
    let taxes: Vec<(String, String)> = fetch_in(
        tx,
        "SELECT unit_code, buyer_id FROM registration.deed_taxes WHERE unit_code",
        taxed,
        "",
    )
    .await?;
    let fees: Vec<(String,)> = fetch_in(
        tx,
        "SELECT parcel_code FROM registration.land_fees WHERE parcel_code",
        parcels,
        "",
    )
    .await?;
    Ok(UnitFacts {
        surveyed: surveyed.into_iter().collect(),
        funds: funds.into_iter().map(|(u,)| u).collect(),
        deed_taxes: taxes.into_iter().collect(),
        land_fees: fees.into_iter().map(|(p,)| p).collect(),
        measured: match measured {
            Measured::Read => units(tx, unit_codes).await?,
            Measured::Skip => HashMap::new(),
        },
    })
}

/// One row of [`buyers_and_facts`]' tagged union: tag, key, three texts, six numbers.
type FactRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

/// The buyers of some cases and the facts about units, in one round trip on PostgreSQL: the
/// counter's batch transaction holds its case locks while it waits on each read. `units` are read
/// from the survey (surveyed, and measured when asked), `taxed` for their 维修资金 and 契税 facts,
/// `parcels` for their land fees.
pub async fn buyers_and_facts(
    tx: &mut Tx<'_>,
    case_ids: &[String],
    units: &[String],
    taxed: &[String],
    parcels: &[String],
    measured: Measured,
) -> Result<(HashMap<String, Vec<BuyerRow>>, UnitFacts), StoreError> {
    if !tongjiao_store::bulk::is_postgres(tx) {
        let buyers = buyers_of(tx, case_ids).await?;
        return Ok((
            buyers,
            unit_facts_each(tx, units, taxed, parcels, measured).await?,
        ));
    }
    use tongjiao_store::bulk::text_array;
    // Every branch yields (tag, key, three texts, six numbers); the units' branch carries the
    // measured data only when asked.
    macro_rules! union_with_units {
        ($units:literal) => {
            concat!(
                "SELECT 'b', case_id, name, resident_id, '', position, share_bp, 0, 0, 0, 0 \
                     FROM registration.case_buyers WHERE case_id IN (SELECT unnest($1::text[])) \
                 UNION ALL SELECT 'u', unit_code, project_id, ",
                $units,
                " FROM registration.units WHERE unit_code IN (SELECT unnest($2::text[])) \
                 UNION ALL SELECT 'f', unit_code, '', '', '', 0, 0, 0, 0, 0, 0 FROM registration.maintenance_funds \
                     WHERE unit_code IN (SELECT unnest($3::text[])) \
                 UNION ALL SELECT 't', unit_code, buyer_id, '', '', 0, 0, 0, 0, 0, 0 FROM registration.deed_taxes \
                     WHERE unit_code IN (SELECT unnest($3::text[])) \
                 UNION ALL SELECT 'l', parcel_code, '', '', '', 0, 0, 0, 0, 0, 0 FROM registration.land_fees \
                     WHERE parcel_code IN (SELECT unnest($4::text[]))"
            )
        };
    }
    let sql = match measured {
        Measured::Read => union_with_units!(
            "location, planned_usage, floor_number, structure, total_floors, gfa_centi, \
             internal_centi, shared_centi"
        ),
        Measured::Skip => union_with_units!("'', '', 0, 0, 0, 0, 0, 0"),
    };
    let rows: Vec<FactRow> = sqlx::query_as(sql)
        .bind(text_array(case_ids))
        .bind(text_array(units))
        .bind(text_array(taxed))
        .bind(text_array(parcels))
        .fetch_all(&mut **tx)
        .await?;
    let mut buyers: HashMap<String, Vec<BuyerRow>> = HashMap::new();
    let mut facts = UnitFacts::default();
    for (tag, key, a, b, c, n, m, i, j, k, l) in rows {
        match tag.as_str() {
            "b" => buyers.entry(key.clone()).or_default().push(BuyerRow {
                case_id: key,
                position: n,
                name: a,
                resident_id: b,
                share_bp: m,
            }),
            "u" => {
                if measured == Measured::Read {
                    facts.measured.insert(
                        key.clone(),
                        UnitRow {
                            unit_code: key.clone(),
                            floor_number: n,
                            location: b,
                            planned_usage: c,
                            structure: m,
                            total_floors: i,
                            gfa_centi: j,
                            internal_centi: k,
                            shared_centi: l,
                        },
                    );
                }
                facts.surveyed.insert(key, a);
            }
            "f" => {
                facts.funds.insert(key);
            }
            "t" => {
                facts.deed_taxes.insert((key, a));
            }
            "l" => {
                facts.land_fees.insert(key);
            }
            other => {
                return Err(StoreError::Corrupt(format!("unexpected fact tag {other}")));
            }
        }
    }
    for list in buyers.values_mut() {
        list.sort_by_key(|b| b.position);
    }
    Ok((buyers, facts))
}

/// Surveyed units by code.
async fn units(tx: &mut Tx<'_>, codes: &[String]) -> Result<HashMap<String, UnitRow>, StoreError> {
    let rows: Vec<UnitRow> = fetch_in(
        tx,
        "SELECT unit_code, floor_number, location, planned_usage, structure, total_floors, gfa_centi, \
         internal_centi, shared_centi FROM registration.units WHERE unit_code",
        codes,
        "",
    )
    .await?;
    Ok(rows.into_iter().map(|u| (u.unit_code.clone(), u)).collect())
}

/// What a readiness step, a transfer or a certificate changes in an existing case, key first: the
/// values of [`crate::engine::case_writes`].
pub fn case_change_values(row: &CaseRow) -> Vec<Val> {
    vec![
        Val::Text(row.case_id.clone()),
        Val::Text(row.state.clone()),
        Val::Text(row.missing.clone()),
        Val::Int(row.version),
        Val::Int(row.active),
        Val::opt_text(row.lapsed_reason.clone()),
        Val::opt_text(row.certificate_number.clone()),
        Val::opt_int(row.transfer_registered_at_ms),
        Val::Int(row.updated_at_ms),
    ]
}

/// A case row as the values of `INSERT … (CASE_COLUMNS)`.
pub fn case_values(row: &CaseRow) -> Vec<Val> {
    vec![
        Val::Text(row.case_id.clone()),
        Val::Text(row.batch_id.clone()),
        Val::Text(row.project_id.clone()),
        Val::Text(row.unit_code.clone()),
        Val::Text(row.co_ownership.clone()),
        Val::Text(row.contract_number.clone()),
        Val::Int(row.opt_in),
        Val::Text(row.state.clone()),
        Val::Text(row.missing.clone()),
        Val::Int(row.version),
        Val::Int(row.active),
        Val::Text(row.material_deadline.clone()),
        Val::Text(row.handover_date.clone()),
        Val::opt_text(row.lapsed_reason.clone()),
        Val::opt_text(row.certificate_number.clone()),
        Val::opt_int(row.transfer_registered_at_ms),
        Val::Int(row.updated_at_ms),
    ]
}

/// Facts about a project before its 首次登记.
pub async fn project_facts(
    tx: &mut Tx<'_>,
    p: &ProjectRow,
) -> Result<tongjiao_domain::ProjectFacts, StoreError> {
    let table: Option<(i64,)> = sqlx::query_as(
        "SELECT latest_version FROM registration.building_tables WHERE project_id = $1",
    )
    .bind(&p.project_id)
    .fetch_optional(&mut **tx)
    .await?;
    let gate: Option<(i64, String)> =
        sqlx::query_as("SELECT complete, missing FROM registration.gates WHERE project_id = $1")
            .bind(&p.project_id)
            .fetch_optional(&mut **tx)
            .await?;
    let dev_tax: Option<(String,)> = sqlx::query_as(
        "SELECT voucher_number FROM registration.developer_taxes WHERE project_id = $1",
    )
    .bind(&p.project_id)
    .fetch_optional(&mut **tx)
    .await?;
    let fees: Option<(String,)> =
        sqlx::query_as("SELECT voucher_number FROM registration.land_fees WHERE parcel_code = $1")
            .bind(&p.parcel_code)
            .fetch_optional(&mut **tx)
            .await?;
    let (acceptance_complete, acceptance_missing) = match gate {
        Some((complete, missing)) => (
            complete == 1,
            missing
                .split('\n')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        None => (false, Vec::new()),
    };
    Ok(tongjiao_domain::ProjectFacts {
        land: p.is_land(),
        building_table_uploaded: table.is_some(),
        acceptance_complete,
        acceptance_missing,
        developer_tax_cleared: dev_tax.is_some(),
        land_fees_paid: fees.is_some(),
    })
}

/// Many rows in one statement (see [`tongjiao_store::bulk`]).
pub async fn insert_rows(
    tx: &mut Tx<'_>,
    head: &str,
    rows: Vec<Vec<Val>>,
    tail: &str,
) -> Result<(), StoreError> {
    tongjiao_store::bulk::insert(tx, head, &rows.into(), tail).await?;
    Ok(())
}
