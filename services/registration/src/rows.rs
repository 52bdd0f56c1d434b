//! Rows of the registration schema and the SQL that reads them. Every statement is plain SQL that
//! runs unchanged on PostgreSQL and the sandbox's SQLite.
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

/// Values per IN list: far below both backends' parameter limits.
pub const IN_CHUNK: usize = 500;

/// "$k,$k+1,…" for `n` parameters starting at `start`.
pub fn params(start: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * 5);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('$');
        s.push_str(&(start + i).to_string());
    }
    s
}

/// Rows of `select … WHERE col IN (…)` for many keys, chunked.
pub async fn fetch_in<T>(
    tx: &mut Tx<'_>,
    sql_prefix: &str,
    suffix: &str,
    keys: &[String],
) -> Result<Vec<T>, StoreError>
where
    T: for<'r> FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let mut out = Vec::new();
    for chunk in keys.chunks(IN_CHUNK) {
        // Every distinct statement text is prepared and cached per connection; padding the list
        // to a power of two (repeating the last key, harmless in IN) keeps that to a few shapes.
        let width = chunk.len().next_power_of_two().max(4);
        let sql = format!("{sql_prefix} ({}){suffix}", params(1, width));
        let mut q = sqlx::query_as::<_, T>(AssertSqlSafe(sql));
        for i in 0..width {
            q = q.bind(chunk[i.min(chunk.len() - 1)].clone());
        }
        out.extend(q.fetch_all(&mut **tx).await?);
    }
    Ok(out)
}

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
    let prefix = format!("SELECT {PROJECT_COLUMNS} FROM registration.projects WHERE project_id IN");
    let rows: Vec<ProjectRow> = fetch_in(tx, &prefix, "", ids).await?;
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
        "SELECT case_id, position, name, resident_id, share_bp FROM registration.case_buyers WHERE case_id IN",
        " ORDER BY case_id, position",
        case_ids,
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
    let prefix = format!("SELECT {CASE_COLUMNS} FROM registration.cases WHERE case_id IN");
    fetch_in(tx, &prefix, &format!(" ORDER BY case_id{lock}"), ids).await
}

/// What the other services have told registration about a set of units.
#[derive(Default, Debug)]
pub struct UnitFacts {
    /// unit code → project it was surveyed under.
    pub surveyed: HashMap<String, String>,
    pub funds: HashSet<String>,
    pub deed_taxes: HashSet<(String, String)>,
    pub land_fees: HashSet<String>,
}

pub async fn unit_facts(
    tx: &mut Tx<'_>,
    units: &[String],
    parcels: &[String],
) -> Result<UnitFacts, StoreError> {
    let surveyed: Vec<(String, String)> = fetch_in(
        tx,
        "SELECT unit_code, project_id FROM registration.units WHERE unit_code IN",
        "",
        units,
    )
    .await?;
    let funds: Vec<(String,)> = fetch_in(
        tx,
        "SELECT unit_code FROM registration.maintenance_funds WHERE unit_code IN",
        "",
        units,
    )
    .await?;
    let taxes: Vec<(String, String)> = fetch_in(
        tx,
        "SELECT unit_code, buyer_id FROM registration.deed_taxes WHERE unit_code IN",
        "",
        units,
    )
    .await?;
    let fees: Vec<(String,)> = fetch_in(
        tx,
        "SELECT parcel_code FROM registration.land_fees WHERE parcel_code IN",
        "",
        parcels,
    )
    .await?;
    Ok(UnitFacts {
        surveyed: surveyed.into_iter().collect(),
        funds: funds.into_iter().map(|(u,)| u).collect(),
        deed_taxes: taxes.into_iter().collect(),
        land_fees: fees.into_iter().map(|(p,)| p).collect(),
    })
}

/// Surveyed units by code.
pub async fn units(
    tx: &mut Tx<'_>,
    codes: &[String],
) -> Result<HashMap<String, UnitRow>, StoreError> {
    let rows: Vec<UnitRow> = fetch_in(
        tx,
        "SELECT unit_code, floor_number, location, planned_usage, structure, total_floors, gfa_centi, \
         internal_centi, shared_centi FROM registration.units WHERE unit_code IN",
        "",
        codes,
    )
    .await?;
    Ok(rows.into_iter().map(|u| (u.unit_code.clone(), u)).collect())
}

/// A case row as the values of `INSERT … (CASE_COLUMNS)`.
pub fn case_values(row: &CaseRow) -> Vec<Val> {
    let text = |s: &Option<String>| s.clone().map(Val::Text).unwrap_or(Val::NullText);
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
        text(&row.lapsed_reason),
        text(&row.certificate_number),
        row.transfer_registered_at_ms
            .map(Val::Int)
            .unwrap_or(Val::NullInt),
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

/// One bound value of a multi-row insert.
pub enum Val {
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
    NullText,
    NullInt,
}

/// Multi-row INSERT in chunks: one round trip per chunk, not per row.
pub async fn insert_rows(
    tx: &mut Tx<'_>,
    prefix: &str,
    rows: Vec<Vec<Val>>,
    suffix: &str,
) -> Result<(), StoreError> {
    let Some(width) = rows.first().map(Vec::len) else {
        return Ok(());
    };
    let total = rows.len();
    let mut rows = rows.into_iter();
    for size in tongjiao_store::pow2_chunks(total, 30_000 / width) {
        let chunk: Vec<Vec<Val>> = rows.by_ref().take(size).collect();
        let mut sql = String::from(prefix);
        sql.push_str(" VALUES ");
        for (i, _) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push('(');
            sql.push_str(&params(i * width + 1, width));
            sql.push(')');
        }
        sql.push_str(suffix);
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in chunk {
            for val in row {
                q = match val {
                    Val::Text(s) => q.bind(s),
                    Val::Int(n) => q.bind(n),
                    Val::Bytes(b) => q.bind(b),
                    Val::NullText => q.bind(None::<String>),
                    Val::NullInt => q.bind(None::<i64>),
                };
            }
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
