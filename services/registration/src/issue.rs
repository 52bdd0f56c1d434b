//! Certificate issuance with group commit (合并提交). Counters' IssueCertificate calls queue here;
//! one worker takes every request waiting and settles them in ONE transaction: claims the request
//! ids, locks the cases, re-checks each against the register, reserves a block of consecutive serials
//! per county with one counter-row update, writes the certificates, cases, log and replies with
//! multi-row statements, and commits. The counter row is locked once per batch instead of once per
//! certificate, so numbering stays gap-free and exactly-once while throughput scales with the batch.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tongjiao_auth::Claims;
use tongjiao_domain::{
    CaseEvent, CaseState, CertificateKind, CertificateNumber, UnitCode, case_missing,
    province_abbr, transition,
};
use tongjiao_proto::registration as pb;
use tongjiao_server::{ApiError, timestamp_ms};
use tongjiao_store::{Claim, Idempotency, RequestKey, StoreError, Tx};

use crate::{
    config::RegistrationConfig,
    convert::{case_proto, mask_case, printed_fields},
    engine::{Engine, case_facts},
    rows::{self, CASE_COLUMNS, CaseRow, Val, insert_rows},
};

/// Requests settled in one transaction at most.
const MAX_BATCH: usize = 256;
const METHOD: &str = "IssueCertificate";

pub struct IssueJob {
    pub claims: Claims,
    pub key: RequestKey,
    pub case_id: String,
    pub reply: oneshot::Sender<Result<pb::IssueCertificateResponse, ApiError>>,
}

impl IssueJob {
    pub fn new(
        claims: Claims,
        principal: String,
        request_id: String,
        digest: String,
        case_id: String,
    ) -> (
        Self,
        oneshot::Receiver<Result<pb::IssueCertificateResponse, ApiError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        (
            IssueJob {
                claims,
                key: RequestKey {
                    principal,
                    request_id,
                    method: METHOD,
                    digest,
                },
                case_id,
                reply,
            },
            rx,
        )
    }
}

pub struct Issuer {
    pub engine: Engine,
    pub idem: Idempotency,
    pub config: Arc<RegistrationConfig>,
}

/// Starts the worker; it ends when every sender is gone.
pub fn spawn(issuer: Issuer) -> mpsc::Sender<IssueJob> {
    let (tx, mut rx) = mpsc::channel::<IssueJob>(4 * MAX_BATCH);
    tokio::spawn(async move {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
            issuer.settle(std::mem::take(&mut jobs)).await;
        }
    });
    tx
}

type Outcome = Result<pb::IssueCertificateResponse, ApiError>;

impl Issuer {
    async fn settle(&self, jobs: Vec<IssueJob>) {
        let n = jobs.len();
        match self.try_settle(&jobs).await {
            Ok((outcomes, published)) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
                self.engine.publish(published).await;
            }
            Err(e) => {
                // The whole transaction rolled back: nothing was issued, each caller may retry
                // with the same request id.
                tracing::error!(error = %e, requests = n, "certificate batch failed");
                for job in jobs {
                    let _ = job.reply.send(Err(ApiError::Unavailable(
                        "certificate issuance failed, nothing was issued; retry with the same request_id (发证失败，未发证，请用同一请求编号重试)"
                            .into(),
                    )));
                }
            }
        }
    }

    async fn try_settle(
        &self,
        jobs: &[IssueJob],
    ) -> Result<(Vec<Outcome>, Vec<pb::Case>), StoreError> {
        let db = &self.engine.db;
        let mut outcomes: Vec<Option<Outcome>> = (0..jobs.len()).map(|_| None).collect();
        // A retry that arrives with its original in the same batch gets the original's reply.
        let mut leader: HashMap<(&str, &str), usize> = HashMap::new();
        let mut follows: Vec<Option<usize>> = vec![None; jobs.len()];
        let mut leaders = Vec::new();
        for (i, j) in jobs.iter().enumerate() {
            match leader.get(&(j.key.principal.as_str(), j.key.request_id.as_str())) {
                Some(&l) => follows[i] = Some(l),
                None => {
                    leader.insert((&j.key.principal, &j.key.request_id), i);
                    leaders.push(i);
                }
            }
        }
        let mut tx = db.begin().await?;
        let keys: Vec<RequestKey> = leaders.iter().map(|&i| jobs[i].key.clone()).collect();
        let claims = self.idem.claim_many(&mut tx, &keys).await?;
        let mut fresh = Vec::new();
        for (&i, claim) in leaders.iter().zip(claims) {
            match claim {
                Ok(Claim::New) => fresh.push(i),
                Ok(Claim::Replay(bytes)) => {
                    outcomes[i] = Some(
                        pb::IssueCertificateResponse::decode(bytes.as_slice()).map_err(|e| {
                            ApiError::internal(format!("stored reply does not decode: {e}"))
                        }),
                    );
                }
                Err(e) => outcomes[i] = Some(Err(ApiError::from(e))),
            }
        }

        // Lock the cases in one order, so two replicas' batches never deadlock.
        let mut case_ids: Vec<String> = fresh.iter().map(|&i| jobs[i].case_id.clone()).collect();
        case_ids.sort();
        case_ids.dedup();
        let prefix = format!("SELECT {CASE_COLUMNS} FROM registration.cases WHERE case_id IN");
        let suffix = format!(" ORDER BY case_id{}", db.for_update());
        let cases: HashMap<String, CaseRow> =
            rows::fetch_in::<CaseRow>(&mut tx, &prefix, &suffix, &case_ids)
                .await?
                .into_iter()
                .map(|c| (c.case_id.clone(), c))
                .collect();
        let project_ids: Vec<String> = cases
            .values()
            .map(|c| c.project_id.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let projects = rows::projects(&mut tx, &project_ids).await?;
        let buyers = rows::buyers_of(&mut tx, &case_ids).await?;
        let unit_codes: Vec<String> = cases.values().map(|c| c.unit_code.clone()).collect();
        let land_parcels: Vec<String> = projects
            .values()
            .filter(|p| p.is_land())
            .map(|p| p.parcel_code.clone())
            .collect();
        let facts = rows::unit_facts(&mut tx, &unit_codes, &land_parcels).await?;
        let units = rows::units(&mut tx, &unit_codes).await?;

        // Judge each request in arrival order; a case can be issued once even if asked twice here.
        let mut accepted: Vec<usize> = Vec::new();
        let mut issued_here: HashSet<&str> = HashSet::new();
        for &i in &fresh {
            let job = &jobs[i];
            let verdict = (|| {
                let case = cases
                    .get(&job.case_id)
                    .ok_or_else(|| crate::api::not_found("case", &job.case_id))?;
                let project = projects
                    .get(&case.project_id)
                    .ok_or_else(|| crate::api::not_found("project", &case.project_id))?;
                crate::api::project_access(
                    &job.claims,
                    &project.developer_credit_code,
                    &project.county_code,
                )?;
                if issued_here.contains(case.case_id.as_str()) {
                    return Err(ApiError::conflict(
                        "certificate_issued",
                        "certificate already issued for this case by another counter (该办件已由其他窗口发证)",
                    ));
                }
                crate::api::refuse_unless(
                    case,
                    CaseState::TransferRegistered,
                    "certificate issuance (缮证发证)",
                )?;
                let case_buyers = buyers.get(&case.case_id).map(Vec::as_slice).unwrap_or(&[]);
                let missing = case_missing(&case_facts(case, case_buyers, project, &facts));
                if !missing.is_empty() {
                    return Err(ApiError::precondition(
                        "the certificate cannot be issued (不能发证)",
                        missing,
                    ));
                }
                Ok(())
            })();
            match verdict {
                Ok(()) => {
                    issued_here.insert(job.case_id.as_str());
                    accepted.push(i);
                }
                Err(e) => outcomes[i] = Some(Err(e)),
            }
        }
        // Refused requests leave no claim behind: their retry is judged afresh.
        for &i in &fresh {
            if outcomes[i].is_some() {
                self.idem
                    .release(&mut tx, &jobs[i].key.principal, &jobs[i].key.request_id)
                    .await?;
            }
        }

        let now_dt = self.engine.clock.now();
        let now = self.engine.clock.now_ms();
        let year = now_dt.year();
        let kind = CertificateKind::PropertyCertificate;
        // One counter-row update per county reserves the whole block. Taken last among the
        // reads, so the row is held only for the writes and the commit.
        let mut next_serial: HashMap<String, i64> = HashMap::new();
        let mut per_county: HashMap<String, i64> = HashMap::new();
        for &i in &accepted {
            let county = &projects[&cases[&jobs[i].case_id].project_id].county_code;
            *per_county.entry(county.clone()).or_default() += 1;
        }
        let mut counties: Vec<(&String, &i64)> = per_county.iter().collect();
        counties.sort();
        for (county, k) in counties {
            let last: i64 = sqlx::query_scalar(
                "INSERT INTO registration.cert_counters (county_code, year, kind, last_serial) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (county_code, year, kind) DO UPDATE SET last_serial = registration.cert_counters.last_serial + $4 \
                 RETURNING last_serial",
            )
            .bind(county)
            .bind(i64::from(year))
            .bind(kind.as_str())
            .bind(*k)
            .fetch_one(&mut *tx)
            .await?;
            next_serial.insert(county.clone(), last - k + 1);
        }

        let mut cert_rows = Vec::with_capacity(accepted.len());
        let mut case_rows = Vec::with_capacity(accepted.len());
        let mut log_rows = Vec::with_capacity(accepted.len());
        let mut replies = Vec::with_capacity(accepted.len());
        let mut published = Vec::with_capacity(accepted.len());
        for &i in &accepted {
            let job = &jobs[i];
            let row = &cases[&job.case_id];
            let project = &projects[&row.project_id];
            let serial = next_serial
                .get_mut(&project.county_code)
                .map(|s| {
                    let v = *s;
                    *s += 1;
                    v
                })
                .unwrap_or(1);
            let case_buyers = buyers.get(&row.case_id).cloned().unwrap_or_default();
            let outcome = (|| {
                let region = self
                    .config
                    .county_names
                    .get(&project.county_code)
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::internal(format!("no county name for {}", project.county_code))
                    })?;
                let abbr = province_abbr(&project.county_code).ok_or_else(|| {
                    ApiError::internal(format!("no province for {}", project.county_code))
                })?;
                let number =
                    CertificateNumber::new(abbr, year as u16, region.clone(), kind, serial as u64)
                        .map_err(ApiError::internal)?
                        .to_string();
                let unit_code: UnitCode = row.unit_code.parse().map_err(ApiError::internal)?;
                let printed = printed_fields(project, row, &case_buyers, units.get(&row.unit_code));
                let certificate = pb::Certificate {
                    certificate_number: number.clone(),
                    kind: pb::CertificateKind::PropertyCertificate as i32,
                    year: year as u32,
                    serial: serial as u64,
                    case_id: row.case_id.clone(),
                    right_holders: printed.right_holders,
                    co_ownership: printed.co_ownership,
                    location: printed.location,
                    unit_code: unit_code.spaced(),
                    right_type: printed.right_type,
                    right_nature: printed.right_nature,
                    usage: printed.usage,
                    area: printed.area,
                    term_of_use: printed.term_of_use,
                    other_info: printed.other_info,
                    remarks: printed.remarks,
                    authority: format!("{region}不动产登记中心"),
                    issued_at: Some(timestamp_ms(now)),
                    unit_code_raw: row.unit_code.clone(),
                };
                let mut next = row.clone();
                next.state =
                    transition(CaseState::TransferRegistered, CaseEvent::CertificateIssued)
                        .map_err(|e| ApiError::conflict("invalid_transition", e.to_string()))?
                        .as_str()
                        .to_owned();
                next.version += 1;
                next.certificate_number = Some(number);
                next.updated_at_ms = now;
                Ok::<_, ApiError>((certificate, next))
            })();
            // Every reserved serial must be used: a failure here fails the whole batch, so the
            // block is given back by the rollback.
            let (certificate, next) = outcome.map_err(|e| StoreError::Corrupt(e.to_string()))?;
            cert_rows.push(vec![
                Val::Text(certificate.certificate_number.clone()),
                Val::Text(kind.as_str().to_owned()),
                Val::Text(project.county_code.clone()),
                Val::Int(i64::from(year)),
                Val::Int(serial),
                Val::Text(next.case_id.clone()),
                Val::Bytes(certificate.encode_to_vec()),
                Val::Text(job.key.principal.clone()),
                Val::Int(now),
            ]);
            log_rows.push(vec![
                Val::Text(next.case_id.clone()),
                Val::Int(next.version),
                Val::Text(next.state.clone()),
                Val::Text(job.key.principal.clone()),
                Val::Text(format!(
                    "certificate issued (已发证): {}",
                    certificate.certificate_number
                )),
                Val::Int(now),
            ]);
            let case = case_proto(&next, &case_buyers);
            let mut shown = case.clone();
            if !crate::api::sees_clear_ids(&job.claims) {
                mask_case(&mut shown);
            }
            let reply = pb::IssueCertificateResponse {
                certificate: Some(certificate),
                case: Some(shown),
            };
            replies.push((i, job.key.clone(), reply));
            case_rows.push(rows::case_values(&next));
            published.push(case);
        }
        insert_rows(
            &mut tx,
            "INSERT INTO registration.certificates (certificate_number, kind, county_code, year, serial, case_id, payload, issued_by, issued_at_ms)",
            cert_rows,
            "",
        )
        .await?;
        // Multi-row update of the cases, written as an upsert both backends understand.
        insert_rows(
            &mut tx,
            &format!("INSERT INTO registration.cases ({CASE_COLUMNS})"),
            case_rows,
            " ON CONFLICT (case_id) DO UPDATE SET state = excluded.state, version = excluded.version, \
             certificate_number = excluded.certificate_number, updated_at_ms = excluded.updated_at_ms",
        )
        .await?;
        insert_rows(
            &mut tx,
            "INSERT INTO registration.case_log (case_id, version, state, actor, note, at_ms)",
            log_rows,
            "",
        )
        .await?;
        self.idem
            .complete_many(
                &mut tx,
                replies
                    .iter()
                    .map(|(_, key, reply)| (key.clone(), reply.encode_to_vec()))
                    .collect(),
            )
            .await?;
        commit(tx).await?;
        if !replies.is_empty() {
            tracing::info!(
                certificates = replies.len(),
                requests = jobs.len(),
                "certificates issued (不动产权证书已发放)"
            );
        }
        for (i, _, reply) in replies {
            outcomes[i] = Some(Ok(reply));
        }
        let settled: Vec<Outcome> = (0..jobs.len())
            .map(|i| {
                let source = follows[i].unwrap_or(i);
                match &outcomes[source] {
                    Some(Ok(r)) => Ok(r.clone()),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err(ApiError::internal("request left unsettled")),
                }
            })
            .collect();
        Ok((settled, published))
    }
}

async fn commit(tx: Tx<'static>) -> Result<(), StoreError> {
    tx.commit().await.map_err(StoreError::from)
}
