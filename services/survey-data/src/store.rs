//! SQL of the survey schema. Every statement runs unchanged on PostgreSQL and SQLite (sqlx Any),
//! but the claim of an upload's unit codes (see [`claim_units`]).
use tongjiao_proto::survey::{Structure, Unit};
use tongjiao_store::{
    Backend, Db, Rows, StoreError, Tx, Val, bulk,
    sqlx::{self, AssertSqlSafe, Row, any::AnyRow},
};

use crate::validate::{ValidBuilding, ValidTable};

/// Columns of a unit row, in the order [`unit_from_row`] reads them.
const UNIT_COLUMNS: &str = "unit_code, room_number, floor_number, location, planned_usage, \
     measured_gfa_centi_sqm, internal_area_centi_sqm, shared_area_centi_sqm, building_number, \
     structure, total_floors, project_id, version";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("survey: {what} out of range"))
}

fn to_u32(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(what))
}

/// Reads a unit row selected with [`UNIT_COLUMNS`].
pub fn unit_from_row(r: &AnyRow) -> Result<Unit, StoreError> {
    let structure: i64 = r.try_get(9)?;
    let structure = i32::try_from(structure)
        .ok()
        .and_then(|s| Structure::try_from(s).ok())
        .ok_or_else(|| corrupt("structure"))?;
    Ok(Unit {
        unit_code: r.try_get(0)?,
        room_number: r.try_get(1)?,
        floor_number: i32::try_from(r.try_get::<i64, _>(2)?).map_err(|_| corrupt("floor"))?,
        location: r.try_get(3)?,
        planned_usage: r.try_get(4)?,
        measured_gfa_centi_sqm: r.try_get(5)?,
        internal_area_centi_sqm: r.try_get(6)?,
        shared_area_centi_sqm: r.try_get(7)?,
        building_number: to_u32(r.try_get(8)?, "building_number")?,
        structure: structure.into(),
        total_floors: to_u32(r.try_get(10)?, "total_floors")?,
        project_id: r.try_get(11)?,
        table_version: to_u32(r.try_get(12)?, "version")?,
    })
}

/// The full reply form of one uploaded unit.
pub fn unit_message(
    table: &ValidTable,
    version: u32,
    b: &ValidBuilding,
    u: &crate::validate::ValidUnit,
) -> Unit {
    Unit {
        unit_code: u.code.as_str().to_owned(),
        room_number: u.room_number.clone(),
        floor_number: u.floor_number,
        location: u.location.clone(),
        planned_usage: u.planned_usage.clone(),
        measured_gfa_centi_sqm: u.measured_gfa.centi(),
        internal_area_centi_sqm: u.internal_area.centi(),
        shared_area_centi_sqm: u.shared_area.centi(),
        building_number: b.number,
        structure: b.structure.into(),
        total_floors: b.total_floors,
        project_id: table.project_id.as_str().to_owned(),
        table_version: version,
    }
}

/// A project's head row, locked for the rest of the transaction.
pub struct ProjectHead {
    pub parcel_code: String,
    pub latest_version: u32,
}

/// Creates the project's head row if needed and locks it, so versions of one project are
/// assigned one at a time.
pub async fn lock_project(
    db: &Db,
    tx: &mut Tx<'static>,
    project_id: &str,
    parcel_code: &str,
    now: i64,
) -> Result<ProjectHead, StoreError> {
    sqlx::query(
        "INSERT INTO survey.projects (project_id, parcel_code, latest_version, created_at_ms) \
         VALUES ($1, $2, 0, $3) ON CONFLICT (project_id) DO NOTHING",
    )
    .bind(project_id)
    .bind(parcel_code)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT parcel_code, latest_version FROM survey.projects WHERE project_id = $1{}",
        db.for_update()
    )))
    .bind(project_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(ProjectHead {
        parcel_code: row.try_get(0)?,
        latest_version: to_u32(row.try_get(1)?, "latest_version")?,
    })
}

/// Writes version `version` of the table: its summary, buildings, units and unit owners.
pub async fn insert_version(
    tx: &mut Tx<'static>,
    table: &ValidTable,
    version: u32,
    principal: &str,
    now: i64,
) -> Result<(), StoreError> {
    let project = table.project_id.as_str();
    let version = i64::from(version);
    let unit_count = table.unit_count() as i64;
    sqlx::query(
        "INSERT INTO survey.tables (project_id, version, parcel_code, unit_count, building_count, \
         uploaded_at_ms, uploaded_by, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(project)
    .bind(version)
    .bind(table.parcel_code.as_str())
    .bind(unit_count)
    .bind(table.buildings.len() as i64)
    .bind(now)
    .bind(principal)
    .bind(table.request_id.as_str())
    .execute(&mut **tx)
    .await?;

    let mut buildings = Rows::with_capacity(11, table.buildings.len());
    for b in &table.buildings {
        buildings.push([
            Val::from(project),
            Val::Int(version),
            Val::Int(i64::from(b.number)),
            Val::Text(b.name.clone()),
            Val::Int(i64::from(b.total_floors)),
            Val::Int(i64::from(b.floors_above_ground)),
            Val::Int(i64::from(b.floors_below_ground)),
            Val::Int(i64::from(i32::from(b.structure))),
            Val::Text(b.planned_usage.clone()),
            Val::opt_text(b.completion_date.clone()),
            Val::Int(b.units.len() as i64),
        ]);
    }
    bulk::insert(
        tx,
        "INSERT INTO survey.buildings (project_id, version, building_number, name, total_floors, \
         floors_above_ground, floors_below_ground, structure, planned_usage, completion_date, unit_count)",
        &buildings,
        "",
    )
    .await?;

    // Units in code order, the order of the primary key and of the owner claims (`claim_units`).
    let mut units: Vec<(&ValidBuilding, &crate::validate::ValidUnit)> = table
        .buildings
        .iter()
        .flat_map(|b| b.units.iter().map(move |u| (b, u)))
        .collect();
    units.sort_by(|a, b| a.1.code.as_str().cmp(b.1.code.as_str()));

    let mut rows = Rows::with_capacity(13, units.len());
    for (b, u) in units {
        rows.push([
            Val::from(project),
            Val::Int(version),
            Val::from(u.code.as_str()),
            Val::Int(i64::from(b.number)),
            Val::from(u.room_number.as_str()),
            Val::Int(i64::from(u.floor_number)),
            Val::from(u.location.as_str()),
            Val::from(u.planned_usage.as_str()),
            Val::Int(u.measured_gfa.centi()),
            Val::Int(u.internal_area.centi()),
            Val::Int(u.shared_area.centi()),
            Val::Int(i64::from(i32::from(b.structure))),
            Val::Int(i64::from(b.total_floors)),
        ]);
    }
    bulk::insert(
        tx,
        "INSERT INTO survey.units (project_id, version, unit_code, building_number, room_number, \
         floor_number, location, planned_usage, measured_gfa_centi_sqm, internal_area_centi_sqm, \
         shared_area_centi_sqm, structure, total_floors)",
        &rows,
        "",
    )
    .await?;
    Ok(())
}

/// Claims the codes of version `version` for its project and returns the codes another project
/// already owns: up to `limit` (code, owner) pairs and their total count. Codes are claimed from
/// the rows just written, in code order, so concurrent uploads lock owner rows in the same order;
/// a code another upload is claiming waits for that upload's outcome.
///
/// On PostgreSQL one statement claims and reports: a code owned by another project "updates" its
/// owner row to the same owner, which returns it (the caller then rolls the whole upload back).
/// That replaced a claim and a second pass joining the owners to the units (2,000 → 10,000-unit
/// uploads in isolation: the three statements of units, claim and check 151 → 117 ms with the
/// key order below). A new version of a project's own table locks its owner rows to the commit
/// (the update's condition is false for them, but the row is locked to decide that); uploads of one
/// project wait for each other on the project row anyway. SQLite has no data-modifying `WITH`, so
/// the sandbox claims, then checks.
pub async fn claim_units(
    tx: &mut Tx<'static>,
    backend: Backend,
    project_id: &str,
    version: u32,
    limit: i64,
) -> Result<(Vec<(String, String)>, i64), StoreError> {
    let version = i64::from(version);
    if backend == Backend::Postgres {
        let rows = sqlx::query(
            "WITH claimed AS ( \
               INSERT INTO survey.unit_owners (unit_code, project_id, first_version) \
               SELECT unit_code, project_id, version FROM survey.units \
               WHERE project_id = $1 AND version = $2 ORDER BY unit_code \
               ON CONFLICT (unit_code) DO UPDATE SET project_id = survey.unit_owners.project_id \
               WHERE survey.unit_owners.project_id <> excluded.project_id \
               RETURNING unit_code, project_id), \
             foreign_owned AS (SELECT unit_code, project_id FROM claimed WHERE project_id <> $1) \
             SELECT unit_code, project_id, (SELECT CAST(COUNT(*) AS BIGINT) FROM foreign_owned) \
             FROM foreign_owned ORDER BY unit_code LIMIT $3",
        )
        .bind(project_id)
        .bind(version)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
        let total = match rows.first() {
            Some(r) => r.try_get(2)?,
            None => 0,
        };
        let found = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(String, String)>, sqlx::Error>>()?;
        return Ok((found, total));
    }
    sqlx::query(
        "INSERT INTO survey.unit_owners (unit_code, project_id, first_version) \
         SELECT unit_code, project_id, version FROM survey.units \
         WHERE project_id = $1 AND version = $2 ORDER BY unit_code \
         ON CONFLICT (unit_code) DO NOTHING",
    )
    .bind(project_id)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    let rows = sqlx::query(
        "SELECT o.unit_code, o.project_id FROM survey.unit_owners o \
         JOIN survey.units u ON u.unit_code = o.unit_code \
         WHERE u.project_id = $1 AND u.version = $2 AND o.project_id <> $1 \
         ORDER BY o.unit_code LIMIT $3",
    )
    .bind(project_id)
    .bind(version)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    let found = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(String, String)>, sqlx::Error>>()?;
    if (found.len() as i64) < limit {
        let n = found.len() as i64;
        return Ok((found, n));
    }
    let total: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM survey.unit_owners o \
         JOIN survey.units u ON u.unit_code = o.unit_code \
         WHERE u.project_id = $1 AND u.version = $2 AND o.project_id <> $1",
    )
    .bind(project_id)
    .bind(version)
    .fetch_one(&mut **tx)
    .await?;
    Ok((found, total))
}

pub async fn set_latest_version(
    tx: &mut Tx<'static>,
    project_id: &str,
    version: u32,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE survey.projects SET latest_version = $2 WHERE project_id = $1")
        .bind(project_id)
        .bind(i64::from(version))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The latest stored version of a unit code. Only its owner's versions hold it (an upload naming
/// another project's code is refused), and on PostgreSQL the units are keyed by project, code and
/// version, so the owner row leads to the one key range.
pub async fn get_unit(db: &Db, unit_code: &str) -> Result<Option<Unit>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {UNIT_COLUMNS} FROM survey.units \
         WHERE project_id = (SELECT project_id FROM survey.unit_owners WHERE unit_code = $1) \
         AND unit_code = $1 ORDER BY version DESC LIMIT 1"
    )))
    .bind(unit_code)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(unit_from_row).transpose()
}

/// Summary of one version.
#[derive(Debug, Clone)]
pub struct TableSummary {
    pub project_id: String,
    pub parcel_code: String,
    pub version: u32,
    pub unit_count: u32,
    pub building_count: u32,
    pub uploaded_at_ms: i64,
}

const SUMMARY_COLUMNS: &str =
    "t.project_id, t.parcel_code, t.version, t.unit_count, t.building_count, t.uploaded_at_ms";

fn summary_from_row(r: &AnyRow) -> Result<TableSummary, StoreError> {
    Ok(TableSummary {
        project_id: r.try_get(0)?,
        parcel_code: r.try_get(1)?,
        version: to_u32(r.try_get(2)?, "version")?,
        unit_count: to_u32(r.try_get(3)?, "unit_count")?,
        building_count: to_u32(r.try_get(4)?, "building_count")?,
        uploaded_at_ms: r.try_get(5)?,
    })
}

/// The latest version's summary, or `None` when the project has no table.
pub async fn latest_table(db: &Db, project_id: &str) -> Result<Option<TableSummary>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM survey.tables t \
         JOIN survey.projects p ON p.project_id = t.project_id AND p.latest_version = t.version \
         WHERE t.project_id = $1"
    )))
    .bind(project_id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(summary_from_row).transpose()
}

/// One version's summary, or `None` when it does not exist.
pub async fn table_version(
    db: &Db,
    project_id: &str,
    version: u32,
) -> Result<Option<TableSummary>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM survey.tables t WHERE t.project_id = $1 AND t.version = $2"
    )))
    .bind(project_id)
    .bind(i64::from(version))
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(summary_from_row).transpose()
}

/// Up to `limit` units of a version with codes after `after`, in code order.
pub async fn list_units(
    db: &Db,
    project_id: &str,
    version: u32,
    after: &str,
    limit: i64,
) -> Result<Vec<Unit>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {UNIT_COLUMNS} FROM survey.units \
         WHERE project_id = $1 AND version = $2 AND unit_code > $3 \
         ORDER BY unit_code LIMIT $4"
    )))
    .bind(project_id)
    .bind(i64::from(version))
    .bind(after)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(unit_from_row).collect()
}
