//! The gRPC surface: authentication, validation and access checks, then the register's transactions.
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use prost::Message;
use sqlx::AssertSqlSafe;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tongjiao_auth::{Claims, Role};
use tongjiao_domain::{
    Area, CaseEvent, CaseState, CertificateNumber, CoOwnership, CreditCode, ParcelCode, ProjectId,
    ResidentId, UnitCode, Violations, check_co_ownership, first_registration_missing, format_date,
    parse_date, transition,
};
use tongjiao_proto::registration::{self as pb, registration_service_server::RegistrationService};
use tongjiao_server::{
    ApiError, Begun, FeedStream, begin_mutation, caller, field_error, finish_mutation,
    require_role, timestamp_ms,
};
use tongjiao_store::{StoreError, Tx};
use tongjiao_workflow::Found;
use tonic::{Request, Response, Status};

use crate::{
    Registration,
    convert::{
        case_proto, co_ownership_from_pb, mask_case, missing_items, project_proto, stored_missing,
    },
    counter::{Job, Queued},
    engine::{evaluate, snapshot},
    known::KnownFacts,
    rows::{
        self, BatchRow, BuyerRow, CASE_COLUMNS, CaseRow, FIRST_APPLIED, FIRST_COMPLETED,
        FIRST_NONE, KIND_HOUSING, KIND_LAND, PROJECT_COLUMNS, ProjectRow, Val, insert_rows,
    },
};

type Res<T> = Result<Response<T>, Status>;

const MAX_CASES: usize = 20_000;
const MAX_BUYERS: usize = 10;

fn principal(c: &Claims) -> String {
    format!("{}:{}", c.role.as_str(), c.sub)
}

/// Whether the caller may see clear resident ids: the counter and the registrar need them to check
/// identity; everyone else sees them masked.
pub(crate) fn sees_clear_ids(c: &Claims) -> bool {
    matches!(c.role, Role::Clerk | Role::Registrar)
}

fn text(v: &mut Violations, field: &str, value: &str, max: usize) {
    let n = value.chars().count();
    if value.trim().is_empty() {
        v.push(field, "is required (必填)");
    } else if n > max {
        v.push(
            field,
            format!("must be at most {max} characters (不得超过{max}个字符)"),
        );
    } else if value.chars().any(char::is_control) {
        v.push(
            field,
            "must not contain control characters (不得包含控制字符)",
        );
    }
}

/// A request's project id, validated.
fn project_id(s: &str) -> Result<ProjectId, ApiError> {
    s.parse::<ProjectId>()
        .map_err(|e| field_error("project_id", e.to_string()))
}

/// A counter request as a job for its batch queue: its ids validated, its payload fingerprinted.
fn counter_job<R>(
    claims: Claims,
    method: &'static str,
    msg: &impl Message,
    request_id: &str,
    case_id: &str,
) -> Result<Queued<R>, ApiError> {
    check_case_id(case_id)?;
    let request_id = request_id
        .parse::<tongjiao_domain::RequestId>()
        .map_err(|e| field_error("request_id", e.to_string()))?;
    Ok(Job::new(
        claims.clone(),
        principal(&claims),
        method,
        request_id.as_str().to_owned(),
        tongjiao_store::payload_digest(&msg.encode_to_vec()),
        case_id.to_owned(),
    ))
}

/// The changes of a watch window worth sending: per case its highest version, and only if newer
/// than the one this watcher was sent before. Counter and follower publish from different tasks,
/// so two versions of a case can arrive out of order; a watcher never goes back.
fn newer_versions(pending: Vec<pb::Case>, sent: &mut HashMap<String, u64>) -> Vec<pb::Case> {
    let mut out: Vec<pb::Case> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for c in pending {
        if sent.get(&c.case_id).is_some_and(|&v| v >= c.version) {
            continue;
        }
        match at.get(&c.case_id) {
            Some(&i) if c.version > out[i].version => out[i] = c,
            Some(_) => {}
            None => {
                at.insert(c.case_id.clone(), out.len());
                out.push(c);
            }
        }
    }
    for c in &out {
        sent.insert(c.case_id.clone(), c.version);
    }
    out
}

/// The caller of a counter write (窗口人员 or 登记员) and its request.
fn counter_caller<M>(req: Request<M>) -> Result<(Claims, M), ApiError> {
    let claims = caller(&req)?;
    require_role(&claims, &[Role::Clerk, Role::Registrar])?;
    Ok((claims, req.into_inner()))
}

/// Queues a counter job and waits for the verdict of its batch.
async fn settle<R>(queue: &mpsc::Sender<Job<R>>, (job, reply): Queued<R>) -> Result<R, ApiError> {
    queue.send(job).await.map_err(|_| shutting_down())?;
    reply.await.map_err(|_| shutting_down())?
}

fn shutting_down() -> ApiError {
    ApiError::Unavailable(
        "the counter service is shutting down; retry with the same request_id (服务正在停止，请用同一请求编号重试)"
            .into(),
    )
}

/// Case ids are UUIDs; anything else cannot name a case.
fn check_case_id(id: &str) -> Result<(), ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| field_error("case_id", "is not a case id (办件编号格式错误)"))
}

pub(crate) fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "{what} {id} not found ({}不存在)",
        match what {
            "project" => "项目",
            "batch" => "批次",
            "case" => "办件",
            "certificate" => "证书",
            _ => "对象",
        }
    ))
}

/// Checks the caller may act on a project: a developer only on its own, a county-scoped clerk or
/// registrar only in its county.
pub(crate) fn project_access(
    c: &Claims,
    developer_credit_code: &str,
    county_code: &str,
) -> Result<(), ApiError> {
    match c.role {
        Role::Developer => {
            if c.org.as_deref() == Some(developer_credit_code) {
                Ok(())
            } else {
                Err(ApiError::PermissionDenied(
                    "this project belongs to another developer (无权访问其他开发企业的项目)".into(),
                ))
            }
        }
        Role::Clerk | Role::Registrar => match &c.county {
            Some(county) if county != county_code => Err(ApiError::PermissionDenied(format!(
                "this project is in county {county_code}, outside your county {county} (无权办理其他区县的业务)"
            ))),
            _ => Ok(()),
        },
        Role::Auditor => Ok(()),
        Role::HousingBureau | Role::TaxBureau => Err(ApiError::PermissionDenied(
            "role may not read registration cases (无权查看登记办件)".into(),
        )),
    }
}

impl Registration {
    fn db(&self) -> &tongjiao_store::Db {
        &self.engine.db
    }

    async fn project_row(
        &self,
        tx: &mut Tx<'_>,
        id: &str,
        lock: bool,
    ) -> Result<ProjectRow, ApiError> {
        let sql = format!(
            "SELECT {PROJECT_COLUMNS} FROM registration.projects WHERE project_id = $1{}",
            if lock { self.db().for_update() } else { "" }
        );
        sqlx::query_as::<_, ProjectRow>(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| not_found("project", id))
    }

    async fn project_with_missing(
        &self,
        tx: &mut Tx<'_>,
        p: &ProjectRow,
    ) -> Result<pb::Project, ApiError> {
        let missing = if p.first_registration_done() {
            Vec::new()
        } else {
            first_registration_missing(&rows::project_facts(tx, p).await?)
        };
        Ok(project_proto(p, missing_items(&missing)))
    }

    /// Cases by id, from the workflow store where it has them, else from PostgreSQL (and then
    /// mirrored again).
    async fn cases(&self, ids: &[String]) -> Result<Vec<pb::Case>, ApiError> {
        let cached = match self.engine.workflow.get_cases(ids).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "workflow store read failed; reading the register");
                vec![None; ids.len()]
            }
        };
        self.cases_from(ids.iter().cloned().zip(cached).collect())
            .await
    }

    /// Decodes the replies the workflow store had and reads the rest from the register (repairing
    /// the store as it goes).
    async fn cases_from(&self, found: Found) -> Result<Vec<pb::Case>, ApiError> {
        let mut out = Vec::with_capacity(found.len());
        let mut missing = Vec::new();
        for (id, bytes) in found {
            match bytes.and_then(|b| pb::Case::decode(b.as_slice()).ok()) {
                Some(c) => out.push(c),
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            let loaded = self.engine.load_cases(&missing).await?;
            for c in &loaded {
                if let Err(e) = self.engine.workflow.put_case(&snapshot(c)).await {
                    tracing::warn!(error = %e, "workflow store repair failed");
                }
            }
            out.extend(loaded);
        }
        Ok(out)
    }

    /// Access to a case goes through its project.
    async fn check_case_access(&self, c: &Claims, case: &pb::Case) -> Result<(), ApiError> {
        if matches!(c.role, Role::Registrar | Role::Auditor) && c.county.is_none() {
            return Ok(());
        }
        self.check_project_access(c, &case.project_id).await
    }

    /// A project's owner and county never change after enrolment, so they are cached: access
    /// checks on the counter's read path cost no database round trip.
    async fn check_project_access(&self, c: &Claims, project_id: &str) -> Result<(), ApiError> {
        let cached = self
            .owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(project_id)
            .cloned();
        let (developer, county) = match cached {
            Some(o) => o,
            None => {
                let mut tx = self.db().begin().await?;
                let p = self.project_row(&mut tx, project_id, false).await?;
                tx.commit().await.map_err(StoreError::from)?;
                let o = (p.developer_credit_code, p.county_code);
                self.owners
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(project_id.to_owned(), o.clone());
                o
            }
        };
        project_access(c, &developer, &county)
    }

    fn shown(&self, c: &Claims, mut case: pb::Case) -> pb::Case {
        if !sees_clear_ids(c) {
            mask_case(&mut case);
        }
        case
    }

    async fn batch_row(&self, batch_id: &str) -> Result<BatchRow, ApiError> {
        sqlx::query_as::<_, BatchRow>(
            "SELECT batch_id, project_id, handover_date, material_deadline, submitted_by, submitted_at_ms, case_count \
             FROM registration.batches WHERE batch_id = $1",
        )
        .bind(batch_id)
        .fetch_optional(self.db().pool())
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| not_found("batch", batch_id))
    }

    async fn batch_proto(&self, b: &BatchRow) -> Result<pb::HandoverBatch, ApiError> {
        let counts = match self.engine.workflow.batch_counts(&b.batch_id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "workflow counts unavailable; counting in the register");
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT state, CAST(COUNT(*) AS BIGINT) FROM registration.cases WHERE batch_id = $1 GROUP BY state",
                )
                .bind(&b.batch_id)
                .fetch_all(self.db().pool())
                .await
                .map_err(StoreError::from)?;
                rows.into_iter()
                    .filter_map(|(s, n)| {
                        let st = s.parse::<CaseState>().ok()?;
                        let pbs = pb::CaseState::try_from(crate::convert::case_state(st)).ok()?;
                        Some((pbs.as_str_name().to_owned(), n))
                    })
                    .collect()
            }
        };
        let get =
            |s: pb::CaseState| counts.get(s.as_str_name()).copied().unwrap_or(0).max(0) as u32;
        Ok(pb::HandoverBatch {
            batch_id: b.batch_id.clone(),
            project_id: b.project_id.clone(),
            handover_date: b.handover_date.clone(),
            material_deadline: b.material_deadline.clone(),
            counts: Some(pb::BatchCounts {
                total: b.case_count as u32,
                pending: get(pb::CaseState::Pending),
                ready: get(pb::CaseState::Ready),
                transfer_registered: get(pb::CaseState::TransferRegistered),
                certificate_issued: get(pb::CaseState::CertificateIssued),
                lapsed: get(pb::CaseState::Lapsed),
                opted_out: get(pb::CaseState::OptedOut),
            }),
            submitted_at: Some(timestamp_ms(b.submitted_at_ms)),
        })
    }

    async fn batch_access(&self, c: &Claims, b: &BatchRow) -> Result<(), ApiError> {
        self.check_project_access(c, &b.project_id).await
    }
}

/// Validated project fields, in the order of the table's columns.
fn validate_project(
    p: &pb::Project,
    counties: &std::collections::HashMap<String, String>,
    today: time::Date,
) -> Result<ProjectRow, ApiError> {
    let mut v = Violations::new();
    let id = v.check("project.project_id", p.project_id.parse::<ProjectId>());
    text(&mut v, "project.name", &p.name, 100);
    let kind = match pb::ProjectKind::try_from(p.kind) {
        Ok(pb::ProjectKind::Housing) => Some(KIND_HOUSING),
        Ok(pb::ProjectKind::Land) => Some(KIND_LAND),
        _ => {
            v.push(
                "project.kind",
                "must be HOUSING (房证同交) or LAND (地证同交) (项目类型必填)",
            );
            None
        }
    };
    if !counties.contains_key(&p.county_code) {
        v.push(
            "project.county_code",
            format!(
                "county {:?} is not served by this registration office (本登记机构不受理该区县); served: {}",
                p.county_code,
                counties.keys().cloned().collect::<Vec<_>>().join(",")
            ),
        );
    }
    if let Some(parcel) = v.check("project.parcel_code", p.parcel_code.parse::<ParcelCode>())
        && parcel.county_code() != p.county_code
    {
        v.push(
            "project.parcel_code",
            "parcel code must start with the project's county code (宗地代码须以项目所在区县代码开头)",
        );
    }
    v.check(
        "project.developer_credit_code",
        p.developer_credit_code.parse::<CreditCode>(),
    );
    text(&mut v, "project.developer_name", &p.developer_name, 100);
    text(&mut v, "project.agreement_number", &p.agreement_number, 64);
    if let Some(d) = v.check(
        "project.agreement_signed_on",
        parse_date(&p.agreement_signed_on),
    ) && d > today
    {
        v.push(
            "project.agreement_signed_on",
            "must not be in the future (签订日期不能晚于今天)",
        );
    }
    let land = p.land.clone().unwrap_or_default();
    if p.land.is_none() {
        v.push("project.land", "land right is required (土地权利信息必填)");
    } else {
        text(&mut v, "project.land.usage", &land.usage, 50);
        text(&mut v, "project.land.right_nature", &land.right_nature, 20);
        let s = v.check("project.land.term_start", parse_date(&land.term_start));
        let e = v.check("project.land.term_end", parse_date(&land.term_end));
        if let (Some(s), Some(e)) = (s, e)
            && e <= s
        {
            v.push(
                "project.land.term_end",
                "must be after term_start (使用期限止须晚于起)",
            );
        }
        if let Some(a) = v.check(
            "project.land.parcel_area_centi_sqm",
            Area::from_centi(land.parcel_area_centi_sqm),
        ) && a.centi() == 0
        {
            v.push(
                "project.land.parcel_area_centi_sqm",
                "must be greater than 0 (宗地面积须大于0)",
            );
        }
    }
    v.into_result()?;
    Ok(ProjectRow {
        project_id: id.map(|i| i.as_str().to_owned()).unwrap_or_default(),
        name: p.name.trim().to_owned(),
        kind: kind.unwrap_or(KIND_HOUSING).to_owned(),
        county_code: p.county_code.clone(),
        parcel_code: p.parcel_code.clone(),
        developer_credit_code: p.developer_credit_code.to_uppercase(),
        developer_name: p.developer_name.trim().to_owned(),
        agreement_number: p.agreement_number.trim().to_owned(),
        agreement_signed_on: p.agreement_signed_on.clone(),
        land_usage: land.usage.trim().to_owned(),
        land_right_nature: land.right_nature.trim().to_owned(),
        land_term_start: land.term_start,
        land_term_end: land.term_end,
        parcel_area_centi: land.parcel_area_centi_sqm,
        first_registration: FIRST_NONE.into(),
        enrolled_at_ms: 0,
        first_applied_at_ms: None,
        first_registered_at_ms: None,
    })
}

/// A validated case of a batch submission.
struct NewCase {
    unit: UnitCode,
    buyers: Vec<(String, ResidentId, u32)>,
    co_ownership: CoOwnership,
    contract_number: String,
    opt_in: bool,
}

fn validate_cases(
    cases: &[pb::CaseSubmission],
    project: &ProjectRow,
    v: &mut Violations,
) -> Vec<NewCase> {
    if cases.is_empty() {
        v.push("cases", "at least one case is required (至少一个办件)");
    }
    if cases.len() > MAX_CASES {
        v.push(
            "cases",
            format!("at most {MAX_CASES} cases per batch (每批最多{MAX_CASES}个办件)"),
        );
        return Vec::new();
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(cases.len());
    for (i, c) in cases.iter().enumerate() {
        let f = |name: &str| format!("cases[{i}].{name}");
        let unit = v.check(f("unit_code"), c.unit_code.parse::<UnitCode>());
        if let Some(u) = &unit {
            if u.parcel_code() != project.parcel_code {
                v.push(
                    f("unit_code"),
                    format!(
                        "unit is not on the project's parcel {} (不动产单元不在本项目宗地上)",
                        project.parcel_code
                    ),
                );
            } else if project.is_land() != u.is_land_only() {
                v.push(
                    f("unit_code"),
                    if project.is_land() {
                        "a land project's unit code must end in W00000000 (地证同交单元代码须以W00000000结尾)"
                    } else {
                        "a housing project's unit must be a house unit (F) (房证同交须为房屋单元)"
                    },
                );
            }
            if !seen.insert(u.as_str().to_owned()) {
                v.push(
                    f("unit_code"),
                    "unit appears twice in this batch (同一批次中单元重复)",
                );
            }
        }
        if c.buyers.is_empty() || c.buyers.len() > MAX_BUYERS {
            v.push(
                f("buyers"),
                format!("1 to {MAX_BUYERS} buyers are required (购房人应为1至{MAX_BUYERS}人)"),
            );
        }
        let mut ids = HashSet::new();
        let mut buyers = Vec::new();
        for (j, b) in c.buyers.iter().enumerate() {
            text(v, &f(&format!("buyers[{j}].name")), &b.name, 50);
            if let Some(id) = v.check(
                f(&format!("buyers[{j}].resident_id")),
                b.resident_id.parse::<ResidentId>(),
            ) {
                if !ids.insert(id.as_str().to_owned()) {
                    v.push(
                        f(&format!("buyers[{j}].resident_id")),
                        "buyer appears twice (购房人重复)",
                    );
                }
                buyers.push((b.name.trim().to_owned(), id, b.share_basis_points));
            }
        }
        let co = co_ownership_from_pb(c.co_ownership);
        match co {
            None => v.push(
                f("co_ownership"),
                "must be SOLE, JOINT or IN_SHARES (共有情况必填)",
            ),
            Some(kind) => {
                let shares: Vec<u32> = c.buyers.iter().map(|b| b.share_basis_points).collect();
                if let Err(e) = check_co_ownership(kind, &shares) {
                    v.push(f("co_ownership"), e.to_string());
                }
            }
        }
        text(v, &f("contract_number"), &c.contract_number, 64);
        if let (Some(unit), Some(co)) = (unit, co) {
            out.push(NewCase {
                unit,
                buyers,
                co_ownership: co,
                contract_number: c.contract_number.trim().to_owned(),
                opt_in: c.same_day_opt_in,
            });
        }
    }
    out
}

impl Registration {
    async fn enroll_project_impl(
        &self,
        req: Request<pb::EnrollProjectRequest>,
    ) -> Result<pb::EnrollProjectResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(&claims, &[Role::Developer, Role::Registrar])?;
        let r = req.into_inner();
        let Some(p) = &r.project else {
            return Err(field_error("project", "is required (项目信息必填)"));
        };
        let mut row = validate_project(p, &self.config.county_names, self.engine.clock.today())?;
        project_access(&claims, &row.developer_credit_code, &row.county_code)?;
        let who = principal(&claims);
        let mut tx = match begin_mutation(
            self.db(),
            &self.idem,
            &who,
            &r.request_id,
            "EnrollProject",
            &r,
        )
        .await?
        {
            Begun::Replay(resp) => return Ok(resp),
            Begun::New(tx) => tx,
        };
        if rows::project(&mut tx, &row.project_id).await?.is_some() {
            return Err(ApiError::AlreadyExists(format!(
                "project {} is already enrolled (项目已纳入房证同交)",
                row.project_id
            )));
        }
        row.enrolled_at_ms = self.engine.clock.now_ms();
        insert_rows(
            &mut tx,
            &format!("INSERT INTO registration.projects ({PROJECT_COLUMNS})"),
            vec![vec![
                Val::Text(row.project_id.clone()),
                Val::Text(row.name.clone()),
                Val::Text(row.kind.clone()),
                Val::Text(row.county_code.clone()),
                Val::Text(row.parcel_code.clone()),
                Val::Text(row.developer_credit_code.clone()),
                Val::Text(row.developer_name.clone()),
                Val::Text(row.agreement_number.clone()),
                Val::Text(row.agreement_signed_on.clone()),
                Val::Text(row.land_usage.clone()),
                Val::Text(row.land_right_nature.clone()),
                Val::Text(row.land_term_start.clone()),
                Val::Text(row.land_term_end.clone()),
                Val::Int(row.parcel_area_centi),
                Val::Text(row.first_registration.clone()),
                Val::Int(row.enrolled_at_ms),
                Val::NullInt,
                Val::NullInt,
            ]],
            "",
        )
        .await?;
        let resp = pb::EnrollProjectResponse {
            project: Some(self.project_with_missing(&mut tx, &row).await?),
        };
        finish_mutation(&self.idem, tx, &who, &r.request_id, &resp).await?;
        tracing::info!(project_id = %row.project_id, developer = %row.developer_credit_code, "project enrolled");
        Ok(resp)
    }

    async fn get_project_impl(
        &self,
        req: Request<pb::GetProjectRequest>,
    ) -> Result<pb::GetProjectResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(
            &claims,
            &[Role::Developer, Role::Registrar, Role::Clerk, Role::Auditor],
        )?;
        let id = project_id(&req.get_ref().project_id)?;
        let mut tx = self.db().begin().await?;
        let p = self.project_row(&mut tx, id.as_str(), false).await?;
        project_access(&claims, &p.developer_credit_code, &p.county_code)?;
        let project = self.project_with_missing(&mut tx, &p).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(pb::GetProjectResponse {
            project: Some(project),
        })
    }

    async fn apply_first_registration_impl(
        &self,
        req: Request<pb::ApplyFirstRegistrationRequest>,
    ) -> Result<pb::ApplyFirstRegistrationResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(&claims, &[Role::Developer, Role::Registrar])?;
        let r = req.into_inner();
        let id = project_id(&r.project_id)?;
        let who = principal(&claims);
        let mut tx = match begin_mutation(
            self.db(),
            &self.idem,
            &who,
            &r.request_id,
            "ApplyFirstRegistration",
            &r,
        )
        .await?
        {
            Begun::Replay(resp) => return Ok(resp),
            Begun::New(tx) => tx,
        };
        let mut p = self.project_row(&mut tx, id.as_str(), true).await?;
        project_access(&claims, &p.developer_credit_code, &p.county_code)?;
        match p.first_registration.as_str() {
            FIRST_APPLIED => {
                return Err(ApiError::conflict(
                    "first_registration_applied",
                    "first registration already applied for, waiting for the registrar (首次登记已申请，待登簿)",
                ));
            }
            FIRST_COMPLETED => {
                return Err(ApiError::conflict(
                    "first_registration_completed",
                    "first registration already completed (首次登记已完成)",
                ));
            }
            _ => {}
        }
        let missing = first_registration_missing(&rows::project_facts(&mut tx, &p).await?);
        if !missing.is_empty() {
            return Err(ApiError::precondition(
                format!(
                    "first registration of project {} cannot be applied for yet (暂不能申请首次登记)",
                    p.project_id
                ),
                missing,
            ));
        }
        let now = self.engine.clock.now_ms();
        sqlx::query(
            "UPDATE registration.projects SET first_registration = $2, first_applied_at_ms = $3 WHERE project_id = $1",
        )
        .bind(&p.project_id)
        .bind(FIRST_APPLIED)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        p.first_registration = FIRST_APPLIED.into();
        p.first_applied_at_ms = Some(now);
        let resp = pb::ApplyFirstRegistrationResponse {
            project: Some(self.project_with_missing(&mut tx, &p).await?),
        };
        finish_mutation(&self.idem, tx, &who, &r.request_id, &resp).await?;
        tracing::info!(project_id = %p.project_id, "first registration applied for");
        Ok(resp)
    }

    async fn complete_first_registration_impl(
        &self,
        req: Request<pb::CompleteFirstRegistrationRequest>,
    ) -> Result<pb::CompleteFirstRegistrationResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(&claims, &[Role::Registrar])?;
        let r = req.into_inner();
        let id = project_id(&r.project_id)?;
        let who = principal(&claims);
        let mut tx = match begin_mutation(
            self.db(),
            &self.idem,
            &who,
            &r.request_id,
            "CompleteFirstRegistration",
            &r,
        )
        .await?
        {
            Begun::Replay(resp) => return Ok(resp),
            Begun::New(tx) => tx,
        };
        let mut p = self.project_row(&mut tx, id.as_str(), true).await?;
        project_access(&claims, &p.developer_credit_code, &p.county_code)?;
        match p.first_registration.as_str() {
            FIRST_COMPLETED => {
                return Err(ApiError::conflict(
                    "first_registration_completed",
                    "first registration already completed (首次登记已完成)",
                ));
            }
            FIRST_APPLIED => {}
            _ => {
                return Err(ApiError::conflict(
                    "first_registration_not_applied",
                    "first registration has not been applied for (开发企业尚未申请首次登记)",
                ));
            }
        }
        let missing = first_registration_missing(&rows::project_facts(&mut tx, &p).await?);
        if !missing.is_empty() {
            return Err(ApiError::precondition(
                format!(
                    "first registration of project {} cannot be completed (不能办理首次登记)",
                    p.project_id
                ),
                missing,
            ));
        }
        let now = self.engine.clock.now_ms();
        sqlx::query(
            "UPDATE registration.projects SET first_registration = $2, first_registered_at_ms = $3 WHERE project_id = $1",
        )
        .bind(&p.project_id)
        .bind(FIRST_COMPLETED)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        p.first_registration = FIRST_COMPLETED.into();
        p.first_registered_at_ms = Some(now);
        let changed = self
            .engine
            .reevaluate_project(&mut tx, &p.project_id, &who)
            .await?;
        let resp = pb::CompleteFirstRegistrationResponse {
            project: Some(self.project_with_missing(&mut tx, &p).await?),
        };
        finish_mutation(&self.idem, tx, &who, &r.request_id, &resp).await?;
        tracing::info!(project_id = %p.project_id, cases = changed.len(), "first registration completed (首次登记登簿)");
        self.engine.publish(changed).await;
        Ok(resp)
    }

    async fn submit_handover_batch_impl(
        &self,
        req: Request<pb::SubmitHandoverBatchRequest>,
    ) -> Result<pb::SubmitHandoverBatchResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(&claims, &[Role::Developer])?;
        let r = req.into_inner();
        let id = project_id(&r.project_id)?;
        let project = {
            let mut tx = self.db().begin().await?;
            let p = self.project_row(&mut tx, id.as_str(), false).await?;
            tx.commit().await.map_err(StoreError::from)?;
            p
        };
        project_access(
            &claims,
            &project.developer_credit_code,
            &project.county_code,
        )?;
        let today = self.engine.clock.today();
        let mut v = Violations::new();
        let handover = v.check("handover_date", parse_date(&r.handover_date));
        let deadline = v.check("material_deadline", parse_date(&r.material_deadline));
        if let Some(h) = handover
            && h < today
        {
            v.push(
                "handover_date",
                "must not be in the past (交房日期不能早于今天)",
            );
        }
        if let Some(d) = deadline {
            if d < today {
                v.push(
                    "material_deadline",
                    "must not be in the past (材料截止日期不能早于今天)",
                );
            }
            if handover.is_some_and(|h| d > h) {
                v.push(
                    "material_deadline",
                    "must not be after the handover date (材料截止日期不能晚于交房日期)",
                );
            }
        }
        let cases = validate_cases(&r.cases, &project, &mut v);
        v.into_result()?;
        let who = principal(&claims);
        let mut tx = match begin_mutation(
            self.db(),
            &self.idem,
            &who,
            &r.request_id,
            "SubmitHandoverBatch",
            &r,
        )
        .await?
        {
            Begun::Replay(resp) => return Ok(resp),
            Begun::New(tx) => tx,
        };
        let units: Vec<String> = cases.iter().map(|c| c.unit.as_str().to_owned()).collect();
        let busy: Vec<(String,)> = rows::fetch_in(
            &mut tx,
            "SELECT unit_code FROM registration.cases WHERE active = 1 AND unit_code",
            &units,
            " ORDER BY unit_code",
        )
        .await?;
        if !busy.is_empty() {
            let list: Vec<String> = busy.iter().take(10).map(|(u,)| u.clone()).collect();
            return Err(ApiError::conflict(
                "unit_in_open_batch",
                format!(
                    "{} unit(s) already have a live case in another batch (单元已在其他交房批次中办理): {}",
                    busy.len(),
                    list.join(", ")
                ),
            ));
        }
        let parcels = if project.is_land() {
            vec![project.parcel_code.clone()]
        } else {
            Vec::new()
        };
        // Read before the facts: what the facts read then shows is complete as of this cursor
        // at least (see `KnownFacts`), so the follower need not read these units again.
        let tax_cursor = crate::follow::cursor(&mut *tx, crate::follow::Feed::Tax).await?;
        let facts = rows::unit_facts(&mut tx, &units, &parcels).await?;
        let foreign: Vec<&String> = units
            .iter()
            .filter(|u| {
                facts
                    .surveyed
                    .get(*u)
                    .is_some_and(|p| *p != project.project_id)
            })
            .take(10)
            .collect();
        if !foreign.is_empty() {
            return Err(ApiError::conflict(
                "unit_of_another_project",
                format!(
                    "units belong to another project's building table (单元属于其他项目的楼盘表): {}",
                    foreign
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let now = self.engine.clock.now_ms();
        let batch_id = uuid::Uuid::now_v7().to_string();
        let (handover, deadline) = (
            format_date(handover.unwrap_or(today)),
            format_date(deadline.unwrap_or(today)),
        );
        let mut case_vals = Vec::with_capacity(cases.len());
        let mut buyer_vals = Vec::new();
        let mut log_vals = Vec::with_capacity(cases.len());
        let mut protos = Vec::with_capacity(cases.len());
        let mut live_buyers = HashMap::with_capacity(cases.len());
        let mut live_units = HashSet::with_capacity(cases.len());
        let mut live_cases = HashMap::with_capacity(cases.len());
        for c in &cases {
            let case_id = uuid::Uuid::now_v7().to_string();
            let buyers: Vec<BuyerRow> = c
                .buyers
                .iter()
                .enumerate()
                .map(|(i, (name, rid, share))| BuyerRow {
                    case_id: case_id.clone(),
                    position: i as i64,
                    name: name.clone(),
                    resident_id: rid.as_str().to_owned(),
                    share_bp: i64::from(*share),
                })
                .collect();
            let mut row = CaseRow {
                case_id: case_id.clone(),
                batch_id: batch_id.clone(),
                project_id: project.project_id.clone(),
                unit_code: c.unit.as_str().to_owned(),
                co_ownership: c.co_ownership.as_str().to_owned(),
                contract_number: c.contract_number.clone(),
                opt_in: i64::from(c.opt_in),
                state: CaseState::Pending.as_str().to_owned(),
                missing: String::new(),
                version: 1,
                active: 1,
                material_deadline: deadline.clone(),
                handover_date: handover.clone(),
                lapsed_reason: None,
                certificate_number: None,
                transfer_registered_at_ms: None,
                updated_at_ms: now,
            };
            let note;
            if c.opt_in {
                let e = evaluate(&row, &buyers, &project, &facts, today);
                row.state = e.state;
                row.missing = e.missing;
                note = e.note;
            } else {
                row.state = transition(CaseState::Pending, CaseEvent::OptedOut)
                    .unwrap_or(CaseState::OptedOut)
                    .as_str()
                    .to_owned();
                row.active = 0;
                note = "buyer did not opt in to 房证同交 (未选择房证同交)".to_owned();
            }
            case_vals.push(rows::case_values(&row));
            for b in &buyers {
                buyer_vals.push(vec![
                    Val::Text(b.case_id.clone()),
                    Val::Int(b.position),
                    Val::Text(b.name.clone()),
                    Val::Text(b.resident_id.clone()),
                    Val::Int(b.share_bp),
                ]);
            }
            log_vals.push(vec![
                Val::Text(row.case_id.clone()),
                Val::Int(row.version),
                Val::Text(row.state.clone()),
                Val::Text(who.clone()),
                Val::Text(note),
                Val::Int(now),
            ]);
            protos.push(case_proto(&row, &buyers));
            if row.active == 1 {
                live_units.insert(row.unit_code.clone());
                if !project.is_land() {
                    live_cases.insert(row.unit_code.clone(), case_id.clone());
                }
                live_buyers.insert(case_id, buyers);
            }
        }
        let batch = BatchRow {
            batch_id: batch_id.clone(),
            project_id: project.project_id.clone(),
            handover_date: handover,
            material_deadline: deadline,
            submitted_by: who.clone(),
            submitted_at_ms: now,
            case_count: cases.len() as i64,
        };
        insert_rows(
            &mut tx,
            "INSERT INTO registration.batches (batch_id, project_id, handover_date, material_deadline, submitted_by, submitted_at_ms, case_count)",
            vec![vec![
                Val::Text(batch.batch_id.clone()),
                Val::Text(batch.project_id.clone()),
                Val::Text(batch.handover_date.clone()),
                Val::Text(batch.material_deadline.clone()),
                Val::Text(batch.submitted_by.clone()),
                Val::Int(batch.submitted_at_ms),
                Val::Int(batch.case_count),
            ]], "")
        .await?;
        insert_rows(
            &mut tx,
            &format!("INSERT INTO registration.cases ({CASE_COLUMNS})"),
            case_vals,
            "",
        )
        .await?;
        insert_rows(
            &mut tx,
            "INSERT INTO registration.case_buyers (case_id, position, name, resident_id, share_bp)",
            buyer_vals,
            "",
        )
        .await?;
        insert_rows(
            &mut tx,
            "INSERT INTO registration.case_log (case_id, version, state, actor, note, at_ms)",
            log_vals,
            "",
        )
        .await?;
        // The reply's counts come from the cases just written, before the workflow store has them.
        let count = |s: CaseState| {
            protos
                .iter()
                .filter(|c| c.state == crate::convert::case_state(s))
                .count() as u32
        };
        let resp = pb::SubmitHandoverBatchResponse {
            batch: Some(pb::HandoverBatch {
                batch_id: batch.batch_id.clone(),
                project_id: batch.project_id.clone(),
                handover_date: batch.handover_date.clone(),
                material_deadline: batch.material_deadline.clone(),
                counts: Some(pb::BatchCounts {
                    total: protos.len() as u32,
                    pending: count(CaseState::Pending),
                    ready: count(CaseState::Ready),
                    transfer_registered: 0,
                    certificate_issued: 0,
                    lapsed: 0,
                    opted_out: count(CaseState::OptedOut),
                }),
                submitted_at: Some(timestamp_ms(now)),
            }),
        };
        finish_mutation(&self.idem, tx, &who, &r.request_id, &resp).await?;
        // The live cases' buyers and their units' tax facts, for the feed follower's evaluations
        // to come (the burst of 契税 and 维修资金 that follows a submission).
        self.engine.remember(KnownFacts {
            buyers: live_buyers,
            funds: facts.funds,
            deed_taxes: facts.deed_taxes,
            land_fees: facts.land_fees,
            complete_units: live_units,
            tax_cursor: Some(tax_cursor),
            live_cases,
        });
        tracing::info!(batch_id = %batch_id, project_id = %project.project_id, cases = protos.len(), "handover batch submitted");
        self.engine.publish(protos).await;
        Ok(resp)
    }

    async fn get_handover_batch_impl(
        &self,
        req: Request<pb::GetHandoverBatchRequest>,
    ) -> Result<pb::GetHandoverBatchResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(
            &claims,
            &[Role::Developer, Role::Registrar, Role::Clerk, Role::Auditor],
        )?;
        let b = self.batch_row(&req.get_ref().batch_id).await?;
        self.batch_access(&claims, &b).await?;
        Ok(pb::GetHandoverBatchResponse {
            batch: Some(self.batch_proto(&b).await?),
        })
    }

    async fn watch_handover_batch_impl(
        &self,
        req: Request<pb::WatchHandoverBatchRequest>,
    ) -> Result<FeedStream<pb::WatchHandoverBatchResponse>, ApiError> {
        let claims = caller(&req)?;
        require_role(
            &claims,
            &[Role::Developer, Role::Registrar, Role::Clerk, Role::Auditor],
        )?;
        let b = self.batch_row(&req.get_ref().batch_id).await?;
        self.batch_access(&claims, &b).await?;
        let mut changes = self.engine.changes.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let me = self.clone();
        tokio::spawn(async move {
            let mut pending_cases: Vec<pb::Case> = Vec::new();
            // The version of each case this watcher was last sent.
            let mut sent: HashMap<String, u64> = HashMap::new();
            let mut first = true;
            loop {
                let batch = match me.batch_proto(&b).await {
                    Ok(batch) => batch,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let open = batch
                    .counts
                    .as_ref()
                    .is_some_and(|c| c.pending + c.ready + c.transfer_registered > 0);
                if first || !pending_cases.is_empty() {
                    let changed_cases = std::mem::take(&mut pending_cases)
                        .into_iter()
                        .map(|c| me.shown(&claims, c))
                        .collect();
                    if tx
                        .send(Ok(pb::WatchHandoverBatchResponse {
                            batch: Some(batch),
                            changed_cases,
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                first = false;
                if !open {
                    return;
                }
                // Wait for a change of this batch, then gather what follows it for a moment so a
                // burst becomes one message.
                let deadline = tokio::time::sleep(Duration::from_secs(3600));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        msg = changes.recv() => match msg {
                            Ok(ch) if ch.batch_id == b.batch_id => {
                                pending_cases.push(ch.case);
                                break;
                            }
                            Ok(_) => {}
                            Err(RecvError::Lagged(_)) => break,
                            Err(RecvError::Closed) => return,
                        },
                        _ = tx.closed() => return,
                        _ = &mut deadline => break,
                    }
                }
                let gather = tokio::time::sleep(Duration::from_millis(100));
                tokio::pin!(gather);
                loop {
                    tokio::select! {
                        msg = changes.recv() => match msg {
                            Ok(ch) if ch.batch_id == b.batch_id => pending_cases.push(ch.case),
                            Ok(_) => {}
                            Err(RecvError::Lagged(_)) => {}
                            Err(RecvError::Closed) => return,
                        },
                        _ = &mut gather => break,
                    }
                }
                pending_cases = newer_versions(std::mem::take(&mut pending_cases), &mut sent);
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn list_cases_impl(
        &self,
        req: Request<pb::ListCasesRequest>,
    ) -> Result<pb::ListCasesResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(
            &claims,
            &[Role::Developer, Role::Registrar, Role::Clerk, Role::Auditor],
        )?;
        let r = req.into_inner();
        let size = match r.page_size {
            0 => 100,
            n if n <= 1000 => n as i64,
            _ => {
                return Err(field_error(
                    "page_size",
                    "must be at most 1000 (每页最多1000条)",
                ));
            }
        };
        let b = self.batch_row(&r.batch_id).await?;
        self.batch_access(&claims, &b).await?;
        let after = if r.page_token.is_empty() {
            String::new()
        } else {
            uuid::Uuid::parse_str(&r.page_token)
                .map_err(|_| {
                    field_error(
                        "page_token",
                        "is not a token from a previous reply (分页标记无效)",
                    )
                })?
                .to_string()
        };
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT case_id FROM registration.cases WHERE batch_id = $1 AND case_id > $2 ORDER BY case_id LIMIT $3",
        )
        .bind(&b.batch_id)
        .bind(&after)
        .bind(size + 1)
        .fetch_all(self.db().pool())
        .await
        .map_err(StoreError::from)?;
        let more = ids.len() as i64 > size;
        let ids: Vec<String> = ids.into_iter().take(size as usize).map(|(i,)| i).collect();
        let mut cases = self.cases(&ids).await?;
        cases.sort_by(|a, b| a.case_id.cmp(&b.case_id));
        let next_page_token = if more {
            ids.last().cloned().unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListCasesResponse {
            cases: cases.into_iter().map(|c| self.shown(&claims, c)).collect(),
            next_page_token,
        })
    }

    async fn get_case_impl(
        &self,
        req: Request<pb::GetCaseRequest>,
    ) -> Result<pb::GetCaseResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(
            &claims,
            &[Role::Developer, Role::Registrar, Role::Clerk, Role::Auditor],
        )?;
        let id = &req.get_ref().case_id;
        check_case_id(id)?;
        let case = self
            .cases(std::slice::from_ref(id))
            .await?
            .pop()
            .ok_or_else(|| not_found("case", id))?;
        self.check_case_access(&claims, &case).await?;
        Ok(pb::GetCaseResponse {
            case: Some(self.shown(&claims, case)),
        })
    }

    async fn find_cases_impl(
        &self,
        req: Request<pb::FindCasesRequest>,
    ) -> Result<pb::FindCasesResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(
            &claims,
            &[Role::Developer, Role::Registrar, Role::Clerk, Role::Auditor],
        )?;
        use pb::find_cases_request::Key;
        let (found, pg_sql, key) = match &req.get_ref().key {
            Some(Key::UnitCode(u)) => {
                let u = u
                    .parse::<UnitCode>()
                    .map_err(|e| field_error("unit_code", e.to_string()))?;
                (
                    self.engine.workflow.cases_by_unit(u.as_str()).await,
                    "SELECT case_id FROM registration.cases WHERE unit_code = $1",
                    u.as_str().to_owned(),
                )
            }
            Some(Key::BuyerId(b)) => {
                let b = b
                    .parse::<ResidentId>()
                    .map_err(|e| field_error("buyer_id", e.to_string()))?;
                (
                    self.engine.workflow.cases_by_buyer(b.as_str()).await,
                    "SELECT DISTINCT case_id FROM registration.case_buyers WHERE resident_id = $1",
                    b.as_str().to_owned(),
                )
            }
            None => {
                return Err(field_error(
                    "key",
                    "give unit_code or buyer_id (请提供不动产单元代码或身份证号)",
                ));
            }
        };
        let found = match found {
            Ok(found) if !found.is_empty() => found,
            // Empty or unavailable workflow state: the register answers.
            _ => sqlx::query_as::<_, (String,)>(pg_sql)
                .bind(&key)
                .fetch_all(self.db().pool())
                .await
                .map_err(StoreError::from)?
                .into_iter()
                .map(|(i,)| (i, None))
                .collect(),
        };
        let mut out = Vec::new();
        for case in self.cases_from(found).await? {
            if self.check_case_access(&claims, &case).await.is_ok() {
                out.push(self.shown(&claims, case));
            }
        }
        out.sort_by(|a, b| b.case_id.cmp(&a.case_id));
        Ok(pb::FindCasesResponse { cases: out })
    }

    async fn register_transfer_impl(
        &self,
        req: Request<pb::RegisterTransferRequest>,
    ) -> Result<pb::RegisterTransferResponse, ApiError> {
        let (claims, r) = counter_caller(req)?;
        let job = counter_job(claims, "RegisterTransfer", &r, &r.request_id, &r.case_id)?;
        settle(&self.counters.transfer, job).await
    }

    async fn issue_certificate_impl(
        &self,
        req: Request<pb::IssueCertificateRequest>,
    ) -> Result<pb::IssueCertificateResponse, ApiError> {
        let (claims, r) = counter_caller(req)?;
        let job = counter_job(claims, "IssueCertificate", &r, &r.request_id, &r.case_id)?;
        settle(&self.counters.issue, job).await
    }

    async fn register_transfer_and_issue_impl(
        &self,
        req: Request<pb::RegisterTransferAndIssueRequest>,
    ) -> Result<pb::RegisterTransferAndIssueResponse, ApiError> {
        let (claims, r) = counter_caller(req)?;
        let job = counter_job(
            claims,
            "RegisterTransferAndIssue",
            &r,
            &r.request_id,
            &r.case_id,
        )?;
        // Settled in the issue queue, so it shares the certificate batches and their serial blocks.
        let (job, reply) = job;
        let issued = settle(&self.counters.issue, (job.with_transfer_first(), reply)).await?;
        Ok(pb::RegisterTransferAndIssueResponse {
            certificate: issued.certificate,
            case: issued.case,
        })
    }

    async fn get_certificate_impl(
        &self,
        req: Request<pb::GetCertificateRequest>,
    ) -> Result<pb::GetCertificateResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(
            &claims,
            &[Role::Developer, Role::Registrar, Role::Clerk, Role::Auditor],
        )?;
        let number = req
            .get_ref()
            .certificate_number
            .parse::<CertificateNumber>()
            .map_err(|e| field_error("certificate_number", e.to_string()))?
            .to_string();
        let row: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT payload FROM registration.certificates WHERE certificate_number = $1",
        )
        .bind(&number)
        .fetch_optional(self.db().pool())
        .await
        .map_err(StoreError::from)?;
        let cert = row
            .and_then(|(b,)| pb::Certificate::decode(b.as_slice()).ok())
            .ok_or_else(|| not_found("certificate", &number))?;
        let case = self
            .cases(std::slice::from_ref(&cert.case_id))
            .await?
            .pop()
            .ok_or_else(|| not_found("case", &cert.case_id))?;
        self.check_case_access(&claims, &case).await?;
        Ok(pb::GetCertificateResponse {
            certificate: Some(cert),
        })
    }

    async fn rebuild_workflow_state_impl(
        &self,
        req: Request<pb::RebuildWorkflowStateRequest>,
    ) -> Result<pb::RebuildWorkflowStateResponse, ApiError> {
        let claims = caller(&req)?;
        require_role(&claims, &[Role::Registrar])?;
        let project = &req.get_ref().project_id;
        let project = if project.is_empty() {
            None
        } else {
            Some(project_id(project)?)
        };
        let n = self
            .engine
            .rebuild(project.as_ref().map(|p| p.as_str()))
            .await
            .map_err(ApiError::internal)?;
        tracing::info!(cases = n, "workflow state rebuilt on request");
        Ok(pb::RebuildWorkflowStateResponse { cases_rebuilt: n })
    }
}

#[tonic::async_trait]
impl RegistrationService for Registration {
    type WatchHandoverBatchStream = FeedStream<pb::WatchHandoverBatchResponse>;

    async fn enroll_project(
        &self,
        req: Request<pb::EnrollProjectRequest>,
    ) -> Res<pb::EnrollProjectResponse> {
        self.enroll_project_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn get_project(
        &self,
        req: Request<pb::GetProjectRequest>,
    ) -> Res<pb::GetProjectResponse> {
        self.get_project_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn apply_first_registration(
        &self,
        req: Request<pb::ApplyFirstRegistrationRequest>,
    ) -> Res<pb::ApplyFirstRegistrationResponse> {
        self.apply_first_registration_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn complete_first_registration(
        &self,
        req: Request<pb::CompleteFirstRegistrationRequest>,
    ) -> Res<pb::CompleteFirstRegistrationResponse> {
        self.complete_first_registration_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn submit_handover_batch(
        &self,
        req: Request<pb::SubmitHandoverBatchRequest>,
    ) -> Res<pb::SubmitHandoverBatchResponse> {
        self.submit_handover_batch_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn get_handover_batch(
        &self,
        req: Request<pb::GetHandoverBatchRequest>,
    ) -> Res<pb::GetHandoverBatchResponse> {
        self.get_handover_batch_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn watch_handover_batch(
        &self,
        req: Request<pb::WatchHandoverBatchRequest>,
    ) -> Res<Self::WatchHandoverBatchStream> {
        self.watch_handover_batch_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn list_cases(&self, req: Request<pb::ListCasesRequest>) -> Res<pb::ListCasesResponse> {
        self.list_cases_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn get_case(&self, req: Request<pb::GetCaseRequest>) -> Res<pb::GetCaseResponse> {
        self.get_case_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn find_cases(&self, req: Request<pb::FindCasesRequest>) -> Res<pb::FindCasesResponse> {
        self.find_cases_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn register_transfer(
        &self,
        req: Request<pb::RegisterTransferRequest>,
    ) -> Res<pb::RegisterTransferResponse> {
        self.register_transfer_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn issue_certificate(
        &self,
        req: Request<pb::IssueCertificateRequest>,
    ) -> Res<pb::IssueCertificateResponse> {
        self.issue_certificate_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn register_transfer_and_issue(
        &self,
        req: Request<pb::RegisterTransferAndIssueRequest>,
    ) -> Res<pb::RegisterTransferAndIssueResponse> {
        self.register_transfer_and_issue_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn get_certificate(
        &self,
        req: Request<pb::GetCertificateRequest>,
    ) -> Res<pb::GetCertificateResponse> {
        self.get_certificate_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn rebuild_workflow_state(
        &self,
        req: Request<pb::RebuildWorkflowStateRequest>,
    ) -> Res<pb::RebuildWorkflowStateResponse> {
        self.rebuild_workflow_state_impl(req)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}

/// Refuses an action unless the case is in `wanted`, naming what stands in the way.
pub(crate) fn refuse_unless(
    row: &CaseRow,
    wanted: CaseState,
    action: &str,
) -> Result<(), ApiError> {
    let state = row.state.parse::<CaseState>().unwrap_or(CaseState::Pending);
    if state == wanted {
        return Ok(());
    }
    let (kind, why) = match state {
        CaseState::Pending => {
            // The stored missing items are the violations.
            let violations = stored_missing(&row.missing)
                .map(
                    |(kind, subject, description)| tongjiao_server::PreconditionViolation {
                        kind: kind.to_owned(),
                        subject: subject.to_owned(),
                        description: description.to_owned(),
                    },
                )
                .collect();
            return Err(ApiError::FailedPrecondition {
                summary: format!("case is pending: {action} needs every item below (办件材料未齐)"),
                violations,
            });
        }
        CaseState::Ready => (
            "transfer_not_registered",
            format!(
                "transfer registration is not recorded yet: {action} must wait (尚未办理转移登记)"
            ),
        ),
        CaseState::TransferRegistered => (
            "transfer_registered",
            "transfer registration is already recorded (转移登记已办理)".to_owned(),
        ),
        CaseState::CertificateIssued => (
            "certificate_issued",
            format!(
                "certificate already issued for this case: {} (该办件已发证)",
                row.certificate_number.clone().unwrap_or_default()
            ),
        ),
        CaseState::Lapsed => (
            "lapsed",
            format!(
                "case lapsed (视为放弃): {}",
                row.lapsed_reason.clone().unwrap_or_default()
            ),
        ),
        CaseState::OptedOut => (
            "opted_out",
            "buyer did not opt in to 房证同交 (未选择房证同交)".to_owned(),
        ),
    };
    Err(ApiError::conflict(kind, why))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn case(id: u8, version: u64) -> pb::Case {
        pb::Case {
            case_id: format!("c{id}"),
            version,
            ..Default::default()
        }
    }

    proptest! {
        /// Whatever order the versions of a few cases arrive in, over any windows, a watcher is
        /// sent each case at most once per window, never an older version than before, and ends on
        /// each case's newest version.
        #[test]
        fn a_watcher_never_goes_back(
            windows in prop::collection::vec(
                prop::collection::vec((0u8..4, 1u64..20), 0..12),
                1..6,
            )
        ) {
            let mut sent: HashMap<String, u64> = HashMap::new();
            let mut last_sent: HashMap<String, u64> = HashMap::new();
            let mut newest: HashMap<String, u64> = HashMap::new();
            for window in &windows {
                let pending: Vec<pb::Case> = window.iter().map(|&(id, v)| case(id, v)).collect();
                for c in &pending {
                    let n = newest.entry(c.case_id.clone()).or_default();
                    *n = (*n).max(c.version);
                }
                let out = newer_versions(pending, &mut sent);
                let ids: HashSet<&str> = out.iter().map(|c| c.case_id.as_str()).collect();
                prop_assert_eq!(ids.len(), out.len(), "one entry per case");
                for c in &out {
                    let before = last_sent.insert(c.case_id.clone(), c.version);
                    prop_assert!(before.is_none_or(|b| b < c.version), "went back on {}", c.case_id);
                }
            }
            prop_assert_eq!(last_sent, newest);
        }
    }

    #[test]
    fn the_newest_of_a_window_wins_and_stale_ones_are_dropped() {
        let mut sent = HashMap::new();
        let out = newer_versions(vec![case(1, 3), case(2, 1), case(1, 2)], &mut sent);
        let got: Vec<(String, u64)> = out.into_iter().map(|c| (c.case_id, c.version)).collect();
        assert_eq!(got, [("c1".to_owned(), 3), ("c2".to_owned(), 1)]);
        assert!(newer_versions(vec![case(1, 2), case(2, 1)], &mut sent).is_empty());
    }
}
