//! SQL of the `acceptance` schema. The same statements run on PostgreSQL and SQLite (sqlx Any).
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use tongjiao_domain::format_date;
use tongjiao_proto::acceptance::{Document, Filing, GateStatus};
use tongjiao_server::timestamp_ms;
use tongjiao_store::{Db, StoreError};

use crate::{gate, validate::ValidFiling};

/// A project's gate as stored, and whether its requirements were ever declared.
pub struct Loaded {
    pub declared: bool,
    pub gate: GateStatus,
}

/// Makes sure the project row exists and locks it until the transaction ends, so gate changes of
/// one project are computed one after another.
pub async fn lock_project(
    conn: &mut AnyConnection,
    db: &Db,
    project_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    ensure_project(conn, project_id, now).await?;
    let sql = format!(
        "SELECT filings_recorded FROM acceptance.projects WHERE project_id = $1{}",
        db.for_update()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(project_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(())
}

/// Locks the project row and hands out the ordinal of its next filing (1, 2, ...).
pub async fn next_filing_ordinal(
    conn: &mut AnyConnection,
    project_id: &str,
    now: i64,
) -> Result<i64, StoreError> {
    ensure_project(conn, project_id, now).await?;
    Ok(sqlx::query_scalar(
        "UPDATE acceptance.projects SET filings_recorded = filings_recorded + 1 \
         WHERE project_id = $1 RETURNING filings_recorded",
    )
    .bind(project_id)
    .fetch_one(&mut *conn)
    .await?)
}

async fn ensure_project(
    conn: &mut AnyConnection,
    project_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO acceptance.projects (project_id, filings_recorded, created_at_ms) \
         VALUES ($1, 0, $2) ON CONFLICT (project_id) DO NOTHING",
    )
    .bind(project_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores the 人防 requirement of a project (insert or replace).
pub async fn upsert_requirements(
    conn: &mut AnyConnection,
    project_id: &str,
    civil_air_defense_required: bool,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO acceptance.requirements (project_id, civil_air_defense_required, declared_at_ms) \
         VALUES ($1, $2, $3) \
         ON CONFLICT (project_id) DO UPDATE SET \
         civil_air_defense_required = excluded.civil_air_defense_required, \
         declared_at_ms = excluded.declared_at_ms",
    )
    .bind(project_id)
    .bind(i64::from(civil_air_defense_required))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts a filing and its documents; returns it as the API shows it.
pub async fn insert_filing(
    conn: &mut AnyConnection,
    filing_id: &str,
    ordinal: i64,
    f: &ValidFiling,
    now: i64,
) -> Result<Filing, StoreError> {
    let completed_on = format_date(f.completed_on);
    sqlx::query(
        "INSERT INTO acceptance.filings (filing_id, project_id, ordinal, kind, document_number, \
         authority, completed_on, recorded_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(filing_id)
    .bind(f.project_id.as_str())
    .bind(ordinal)
    .bind(i64::from(f.kind as i32))
    .bind(f.document_number.clone())
    .bind(f.authority.as_str())
    .bind(completed_on.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;

    // At most 50 documents (validated), so one multi-row INSERT suffices.
    if !f.documents.is_empty() {
        let mut sql = String::from(
            "INSERT INTO acceptance.filing_documents (filing_id, position, name, sha256) VALUES ",
        );
        for i in 0..f.documents.len() {
            let p = i * 4;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("(${},${},${},${})", p + 1, p + 2, p + 3, p + 4));
        }
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (i, (name, sha)) in f.documents.iter().enumerate() {
            q = q
                .bind(filing_id)
                .bind(i as i64)
                .bind(name.as_str())
                .bind(sha.as_str());
        }
        q.execute(&mut *conn).await?;
    }

    Ok(Filing {
        filing_id: filing_id.to_owned(),
        project_id: f.project_id.as_str().to_owned(),
        kind: f.kind as i32,
        document_number: f.document_number.clone().unwrap_or_default(),
        authority: f.authority.clone(),
        completed_on,
        documents: f
            .documents
            .iter()
            .map(|(name, sha)| Document {
                name: name.clone(),
                sha256: sha.as_str().to_owned(),
            })
            .collect(),
        recorded_at: Some(timestamp_ms(now)),
    })
}

/// The filings that count (latest per kind) of a project with their documents, in one statement so
/// the rows come from one snapshot.
const LATEST_FILINGS: &str = "SELECT f.filing_id, f.kind, f.document_number, f.authority, \
     f.completed_on, f.recorded_at_ms, d.name, d.sha256 \
     FROM acceptance.filings f LEFT JOIN acceptance.filing_documents d ON d.filing_id = f.filing_id \
     WHERE f.project_id = $1 AND f.ordinal = (SELECT MAX(g.ordinal) FROM acceptance.filings g \
     WHERE g.project_id = f.project_id AND g.kind = f.kind) ORDER BY f.kind, d.position";

/// A project's requirements and latest filings, as its gate. A project with nothing recorded has
/// an incomplete gate missing every base kind.
pub async fn load_gate(conn: &mut AnyConnection, project_id: &str) -> Result<Loaded, StoreError> {
    let required: Option<i64> = sqlx::query_scalar(
        "SELECT civil_air_defense_required FROM acceptance.requirements WHERE project_id = $1",
    )
    .bind(project_id)
    .fetch_optional(&mut *conn)
    .await?;

    let rows = sqlx::query(LATEST_FILINGS)
        .bind(project_id)
        .fetch_all(&mut *conn)
        .await?;
    let mut filings: Vec<Filing> = Vec::new();
    for r in rows {
        let filing_id: String = r.try_get(0)?;
        if filings.last().is_none_or(|f| f.filing_id != filing_id) {
            let kind: i64 = r.try_get(1)?;
            let kind = i32::try_from(kind)
                .map_err(|_| StoreError::Corrupt(format!("filing kind {kind} out of range")))?;
            let document_number: Option<String> = r.try_get(2)?;
            let recorded_at_ms: i64 = r.try_get(5)?;
            filings.push(Filing {
                filing_id: filing_id.clone(),
                project_id: project_id.to_owned(),
                kind,
                document_number: document_number.unwrap_or_default(),
                authority: r.try_get(3)?,
                completed_on: r.try_get(4)?,
                documents: Vec::new(),
                recorded_at: Some(timestamp_ms(recorded_at_ms)),
            });
        }
        let name: Option<String> = r.try_get(6)?;
        let sha256: Option<String> = r.try_get(7)?;
        if let (Some(name), Some(sha256), Some(f)) = (name, sha256, filings.last_mut()) {
            f.documents.push(Document { name, sha256 });
        }
    }

    Ok(Loaded {
        declared: required.is_some(),
        gate: gate::gate_of(project_id, required == Some(1), filings),
    })
}
