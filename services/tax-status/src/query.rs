//! What is paid (完税查询). Facts are kept as history; each answer takes, per key, the earliest fact by
//! the bureau's occurred_at (events without one after those with one), then by event id — an order
//! that depends only on the set of facts, never on the order they were delivered in.
use sqlx::{Row, any::AnyRow};
use tongjiao_auth::Role;
use tongjiao_domain::{ProjectId, ResidentId, UnitCode, Violations};
use tongjiao_proto::tax::{
    DeedTaxRecord, GetBuyerTaxStatusResponse, GetProjectTaxStatusResponse, GetUnitTaxStatusResponse,
};
use tongjiao_server::{ApiError, timestamp_ms};

use crate::TaxStatus;

/// The fact order every query uses.
const EARLIEST: &str =
    "CASE WHEN occurred_at_ms IS NULL THEN 1 ELSE 0 END, occurred_at_ms, event_id";

/// Callers that see resident ids masked (`110105********002X`).
pub(crate) fn masks_buyer(role: Role) -> bool {
    matches!(role, Role::Clerk | Role::Auditor)
}

/// A stored buyer id as the caller may see it.
pub(crate) fn buyer_for(stored: &str, mask: bool) -> Result<String, ApiError> {
    if !mask {
        return Ok(stored.to_owned());
    }
    stored
        .parse::<ResidentId>()
        .map(|id| id.masked())
        .map_err(|e| ApiError::internal(format!("stored buyer id is invalid: {e}")))
}

fn deed_record(row: &AnyRow, mask: bool) -> Result<DeedTaxRecord, ApiError> {
    let get = |e: sqlx::Error| ApiError::internal(e);
    let buyer: String = row.try_get(1).map_err(get)?;
    let relieved: i64 = row.try_get(4).map_err(get)?;
    let recorded: i64 = row.try_get(5).map_err(get)?;
    Ok(DeedTaxRecord {
        unit_code: row.try_get(0).map_err(get)?,
        buyer_id: buyer_for(&buyer, mask)?,
        amount_fen: row.try_get(2).map_err(get)?,
        voucher_number: row.try_get(3).map_err(get)?,
        relieved: relieved != 0,
        recorded_at: Some(timestamp_ms(recorded)),
    })
}

fn db_err(e: sqlx::Error) -> ApiError {
    ApiError::from(tongjiao_store::StoreError::from(e))
}

impl TaxStatus {
    pub(crate) async fn unit_status(
        &self,
        unit_code: &str,
        role: Role,
    ) -> Result<GetUnitTaxStatusResponse, ApiError> {
        let mut v = Violations::new();
        let unit = v.check("unit_code", unit_code.parse::<UnitCode>());
        let Some(unit) = unit else {
            return Err(ApiError::InvalidArgument(v));
        };
        let mask = masks_buyer(role);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT unit_code, buyer_id, amount_fen, voucher_number, relieved, recorded_at_ms \
             FROM tax.deed_tax WHERE unit_code = $1 ORDER BY buyer_id, {EARLIEST}"
        )))
        .bind(unit.as_str().to_owned())
        .fetch_all(self.db.pool())
        .await
        .map_err(db_err)?;
        let mut deed_taxes = Vec::new();
        let mut last_buyer: Option<String> = None;
        for row in &rows {
            let buyer: String = row.try_get(1).map_err(db_err)?;
            if last_buyer.as_deref() == Some(buyer.as_str()) {
                continue;
            }
            deed_taxes.push(deed_record(row, mask)?);
            last_buyer = Some(buyer);
        }
        let fund = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT amount_fen, receipt_number FROM tax.maintenance_fund WHERE unit_code = $1 \
             ORDER BY {EARLIEST} LIMIT 1"
        )))
        .bind(unit.as_str().to_owned())
        .fetch_optional(self.db.pool())
        .await
        .map_err(db_err)?;
        let (deposited, fen, receipt) = match fund {
            Some(row) => (
                true,
                row.try_get::<i64, _>(0).map_err(db_err)?,
                row.try_get::<String, _>(1).map_err(db_err)?,
            ),
            None => (false, 0, String::new()),
        };
        Ok(GetUnitTaxStatusResponse {
            unit_code: unit.into_string(),
            deed_taxes,
            maintenance_fund_deposited: deposited,
            maintenance_fund_fen: fen,
            maintenance_fund_receipt: receipt,
        })
    }

    pub(crate) async fn buyer_status(
        &self,
        buyer_id: &str,
        role: Role,
    ) -> Result<GetBuyerTaxStatusResponse, ApiError> {
        let mut v = Violations::new();
        let Some(buyer) = v.check("buyer_id", buyer_id.parse::<ResidentId>()) else {
            return Err(ApiError::InvalidArgument(v));
        };
        let mask = masks_buyer(role);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT unit_code, buyer_id, amount_fen, voucher_number, relieved, recorded_at_ms \
             FROM tax.deed_tax WHERE buyer_id = $1 ORDER BY unit_code, {EARLIEST}"
        )))
        .bind(buyer.as_str().to_owned())
        .fetch_all(self.db.pool())
        .await
        .map_err(db_err)?;
        let mut deed_taxes = Vec::new();
        let mut last_unit: Option<String> = None;
        for row in &rows {
            let unit: String = row.try_get(0).map_err(db_err)?;
            if last_unit.as_deref() == Some(unit.as_str()) {
                continue;
            }
            deed_taxes.push(deed_record(row, mask)?);
            last_unit = Some(unit);
        }
        Ok(GetBuyerTaxStatusResponse { deed_taxes })
    }

    pub(crate) async fn project_status(
        &self,
        project_id: &str,
    ) -> Result<GetProjectTaxStatusResponse, ApiError> {
        let mut v = Violations::new();
        let Some(project) = v.check("project_id", project_id.parse::<ProjectId>()) else {
            return Err(ApiError::InvalidArgument(v));
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT voucher_number FROM tax.developer_tax WHERE project_id = $1 \
             ORDER BY {EARLIEST} LIMIT 1"
        )))
        .bind(project.as_str().to_owned())
        .fetch_optional(self.db.pool())
        .await
        .map_err(db_err)?;
        let voucher = match row {
            Some(r) => Some(r.try_get::<String, _>(0).map_err(db_err)?),
            None => None,
        };
        Ok(GetProjectTaxStatusResponse {
            project_id: project.into_string(),
            developer_tax_cleared: voucher.is_some(),
            voucher_number: voucher.unwrap_or_default(),
        })
    }
}
