//! survey-data: the 楼盘表 (building/unit table) service of the 住建局 (housing bureau).
//!
//! Each upload of a project's table becomes its next version; versions are immutable. Units carry
//! their 实测面积 (as-built areas) and are served to the registration office and the tax bureau, by
//! unit code, by page, and on a resumable change feed whose events commit with the facts.

#![forbid(unsafe_code)]

mod page_token;
mod store;
mod validate;

use prost::Message;
use tongjiao_auth::{Claims, Role};
use tongjiao_domain::{ProjectId, UnitCode, Violations};
use tongjiao_proto::survey::{
    BuildingTablePublished, GetBuildingTableRequest, GetBuildingTableResponse, GetUnitRequest,
    GetUnitResponse, ListUnitsRequest, ListUnitsResponse, SurveyEvent, UnitMeasured,
    UploadBuildingTableRequest, UploadBuildingTableResponse, WatchSurveyEventsRequest,
    WatchSurveyEventsResponse,
    survey_data_service_server::{SurveyDataService, SurveyDataServiceServer},
    survey_event,
};
use tongjiao_server::{
    ApiError, Authenticator, Begun, FeedStream, ServiceSet, begin_mutation, caller, feed_stream,
    field_error, finish_mutation, require_role, timestamp_ms,
};
use tongjiao_store::{
    Db, EventLog, Idempotency, NewEvent, Schema, StoreError, now_ms, sqlx::migrate::Migrator,
};
use tonic::{Request, Response, Status};

pub use page_token::PageToken;

/// Default listen address of the `survey-data` binary.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// Largest accepted request (a whole 楼盘表 in one message).
pub const MAX_DECODING_MESSAGE_SIZE: usize = 64 << 20;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

const UPLOAD_ROLES: &[Role] = &[Role::HousingBureau, Role::Registrar];
const READ_ROLES: &[Role] = &[
    Role::HousingBureau,
    Role::Registrar,
    Role::Clerk,
    Role::TaxBureau,
    Role::Auditor,
];
const WATCH_ROLES: &[Role] = &[
    Role::Registrar,
    Role::TaxBureau,
    Role::HousingBureau,
    Role::Auditor,
];

const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;
/// How many foreign unit codes a FAILED_PRECONDITION names.
const FOREIGN_UNITS_LISTED: i64 = 20;

const KIND_PUBLISHED: &str = "BuildingTablePublished";
const KIND_UNIT: &str = "UnitMeasured";

/// The SurveyDataService handlers.
#[derive(Clone, Debug)]
pub struct SurveyData {
    db: Db,
    log: EventLog,
    idem: Idempotency,
}

/// Runs the survey schema's migrations and returns the service.
pub async fn build(db: Db) -> Result<SurveyData, StoreError> {
    let migrator = match db.backend() {
        tongjiao_store::Backend::Postgres => &POSTGRES_MIGRATIONS,
        tongjiao_store::Backend::Sqlite => &SQLITE_MIGRATIONS,
    };
    db.migrate(Schema::Survey, migrator).await?;
    Ok(SurveyData {
        db,
        log: EventLog::new(Schema::Survey),
        idem: Idempotency::new(Schema::Survey),
    })
}

impl SurveyData {
    /// Adds the service, behind `auth`, to `set`. Accepts requests up to 64 MiB (big tables).
    pub fn register(self, set: &mut ServiceSet, auth: Authenticator) {
        let server =
            SurveyDataServiceServer::new(self).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        set.named(<SurveyDataServiceServer<SurveyData> as tonic::server::NamedService>::NAME)
            .add_service(tonic::service::interceptor::InterceptedService::new(
                server, auth,
            ));
    }

    async fn upload(
        &self,
        claims: &Claims,
        req: &UploadBuildingTableRequest,
    ) -> Result<UploadBuildingTableResponse, ApiError> {
        let started = std::time::Instant::now();
        let table = validate::validate_upload(req).map_err(ApiError::InvalidArgument)?;
        let principal = format!("{}:{}", claims.role.as_str(), claims.sub);
        let mut tx = match begin_mutation::<_, UploadBuildingTableResponse>(
            &self.db,
            &self.idem,
            &principal,
            &req.request_id,
            "UploadBuildingTable",
            req,
        )
        .await?
        {
            Begun::Replay(resp) => {
                tracing::info!(
                    request_id = %req.request_id,
                    project_id = %resp.project_id,
                    version = resp.version,
                    "replayed building table upload"
                );
                return Ok(resp);
            }
            Begun::New(tx) => tx,
        };

        let project = table.project_id.as_str();
        let now = now_ms();
        let head = store::lock_project(&self.db, &mut tx, project, table.parcel_code.as_str(), now)
            .await?;
        if head.parcel_code != table.parcel_code.as_str() {
            return Err(ApiError::precondition(
                format!(
                    "project {project} is on parcel {}, this upload names parcel {}; a project keeps its parcel across versions (项目的宗地代码不能变更)",
                    head.parcel_code, table.parcel_code
                ),
                Vec::new(),
            ));
        }
        let version = head
            .latest_version
            .checked_add(1)
            .ok_or_else(|| ApiError::internal("table version overflow"))?;

        store::insert_version(&mut tx, &table, version, &principal, now).await?;
        let (foreign, total) = store::claim_units(
            &mut tx,
            self.db.backend(),
            project,
            version,
            FOREIGN_UNITS_LISTED,
        )
        .await?;
        if total > 0 {
            let listed: Vec<String> = foreign
                .iter()
                .map(|(code, owner)| format!("{code} (project {owner})"))
                .collect();
            return Err(ApiError::precondition(
                format!(
                    "{total} unit code(s) already belong to another project (不动产单元代码已属于其他项目): {}{}",
                    listed.join(", "),
                    if total > foreign.len() as i64 {
                        ", …"
                    } else {
                        ""
                    }
                ),
                Vec::new(),
            ));
        }
        store::set_latest_version(&mut tx, project, version).await?;

        let unit_count = table.unit_count();
        let events = self.events(&table, version, now)?;
        let seqs = self.log.append(&mut tx, events, now).await?;
        let resp = UploadBuildingTableResponse {
            project_id: project.to_owned(),
            version,
            unit_count: u32::try_from(unit_count)
                .map_err(|_| ApiError::internal("unit count overflow"))?,
            building_count: u32::try_from(table.buildings.len())
                .map_err(|_| ApiError::internal("building count overflow"))?,
        };
        finish_mutation(&self.idem, tx, &principal, table.request_id.as_str(), &resp).await?;
        if let Some(last) = seqs.last() {
            self.log.notify_committed(*last);
        }
        tracing::info!(
            request_id = %table.request_id,
            project_id = project,
            parcel_code = %table.parcel_code,
            version,
            units = unit_count,
            buildings = table.buildings.len(),
            principal = %principal,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "building table version recorded (楼盘表版本已记录)"
        );
        Ok(resp)
    }

    /// One BuildingTablePublished, then one UnitMeasured per unit in upload order.
    fn events(
        &self,
        table: &validate::ValidTable,
        version: u32,
        now: i64,
    ) -> Result<Vec<NewEvent>, ApiError> {
        let project = table.project_id.as_str();
        let recorded_at = Some(timestamp_ms(now));
        let mut events = Vec::with_capacity(table.unit_count() + 1);
        let published = SurveyEvent {
            sequence: 0,
            event_id: format!("{project}:{version}:published"),
            recorded_at,
            project_id: project.to_owned(),
            payload: Some(survey_event::Payload::BuildingTablePublished(
                BuildingTablePublished {
                    version,
                    parcel_code: table.parcel_code.as_str().to_owned(),
                    unit_count: u32::try_from(table.unit_count())
                        .map_err(|_| ApiError::internal("unit count overflow"))?,
                },
            )),
        };
        events.push(NewEvent {
            event_id: published.event_id.clone(),
            kind: KIND_PUBLISHED,
            subject: project.to_owned(),
            payload: published.encode_to_vec(),
            content_sha256: None,
        });
        for b in &table.buildings {
            for u in &b.units {
                let unit = store::unit_message(table, version, b, u);
                let event = SurveyEvent {
                    sequence: 0,
                    event_id: format!("{project}:{version}:{}", unit.unit_code),
                    recorded_at,
                    project_id: project.to_owned(),
                    payload: Some(survey_event::Payload::UnitMeasured(UnitMeasured {
                        unit: Some(unit),
                    })),
                };
                events.push(NewEvent {
                    event_id: event.event_id.clone(),
                    kind: KIND_UNIT,
                    subject: project.to_owned(),
                    payload: event.encode_to_vec(),
                    content_sha256: None,
                });
            }
        }
        Ok(events)
    }

    async fn get_unit_inner(
        &self,
        claims: &Claims,
        req: &GetUnitRequest,
    ) -> Result<GetUnitResponse, ApiError> {
        let code: UnitCode = req
            .unit_code
            .parse()
            .map_err(|e: tongjiao_domain::UnitCodeError| field_error("unit_code", e.to_string()))?;
        check_county(claims, code.county_code())?;
        let unit = store::get_unit(&self.db, code.as_str())
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "unit {code} not found in any building table (不动产单元不存在)"
                ))
            })?;
        Ok(GetUnitResponse { unit: Some(unit) })
    }

    async fn list_units_inner(
        &self,
        claims: &Claims,
        req: &ListUnitsRequest,
    ) -> Result<ListUnitsResponse, ApiError> {
        let mut v = Violations::new();
        let project = v.check("project_id", req.project_id.parse::<ProjectId>());
        if req.page_size > MAX_PAGE_SIZE {
            v.push(
                "page_size",
                format!(
                    "must be at most {MAX_PAGE_SIZE}, got {} (每页条数不能超过1000)",
                    req.page_size
                ),
            );
        }
        let token = if req.page_token.is_empty() {
            None
        } else {
            match PageToken::decode(&req.page_token) {
                None => {
                    v.push(
                        "page_token",
                        "is not a token this service issued; pass next_page_token unchanged (分页标记无效)",
                    );
                    None
                }
                Some(t) => {
                    if project.as_ref().is_some_and(|p| p.as_str() != t.project_id) {
                        v.push(
                            "page_token",
                            "was issued for another project (分页标记不属于该项目)",
                        );
                    } else if req.table_version != 0 && req.table_version != t.version {
                        v.push(
                            "page_token",
                            "was issued for another table_version (分页标记与楼盘表版本不一致)",
                        );
                    }
                    Some(t)
                }
            }
        };
        v.into_result()?;
        let project = project.ok_or_else(|| ApiError::internal("validated project id missing"))?;
        let project = project.as_str();

        let version = token
            .as_ref()
            .map(|t| t.version)
            .unwrap_or(req.table_version);
        let summary = if version == 0 {
            store::latest_table(&self.db, project)
                .await?
                .ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "project {project} has no building table (项目无楼盘表)"
                    ))
                })?
        } else {
            store::table_version(&self.db, project, version)
                .await?
                .ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "project {project} has no building table version {version} (楼盘表版本不存在)"
                    ))
                })?
        };
        check_county(claims, &summary.parcel_code)?;

        let page_size = if req.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            req.page_size
        };
        let after = token.map(|t| t.after).unwrap_or_default();
        let mut units = store::list_units(
            &self.db,
            project,
            summary.version,
            &after,
            i64::from(page_size) + 1,
        )
        .await?;
        let more = units.len() > page_size as usize;
        units.truncate(page_size as usize);
        let next_page_token = match units.last() {
            Some(last) if more => PageToken {
                project_id: project.to_owned(),
                version: summary.version,
                after: last.unit_code.clone(),
            }
            .encode(),
            _ => String::new(),
        };
        Ok(ListUnitsResponse {
            units,
            next_page_token,
            total_size: summary.unit_count,
        })
    }

    async fn get_building_table_inner(
        &self,
        claims: &Claims,
        req: &GetBuildingTableRequest,
    ) -> Result<GetBuildingTableResponse, ApiError> {
        let project: ProjectId =
            req.project_id
                .parse()
                .map_err(|e: tongjiao_domain::ProjectIdError| {
                    field_error("project_id", e.to_string())
                })?;
        let summary = store::latest_table(&self.db, project.as_str())
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "project {project} has no building table (项目无楼盘表)"
                ))
            })?;
        check_county(claims, &summary.parcel_code)?;
        Ok(GetBuildingTableResponse {
            project_id: summary.project_id,
            parcel_code: summary.parcel_code,
            latest_version: summary.version,
            unit_count: summary.unit_count,
            building_count: summary.building_count,
            uploaded_at: Some(timestamp_ms(summary.uploaded_at_ms)),
        })
    }
}

/// A clerk (窗口人员) works in one county: units of other counties are not theirs to read.
/// `code` starts with the 6-digit county code (a unit or parcel code).
fn check_county(claims: &Claims, code: &str) -> Result<(), ApiError> {
    if claims.role != Role::Clerk {
        return Ok(());
    }
    let county = code.get(0..6).unwrap_or_default();
    match claims.county.as_deref() {
        Some(c) if c == county => Ok(()),
        Some(c) => Err(ApiError::PermissionDenied(format!(
            "clerk of county {c} may not read data of county {county} (窗口人员只能查看本县数据)"
        ))),
        None => Err(ApiError::PermissionDenied(
            "clerk token carries no county (窗口人员令牌缺少所属县)".to_owned(),
        )),
    }
}

#[tonic::async_trait]
impl SurveyDataService for SurveyData {
    async fn upload_building_table(
        &self,
        req: Request<UploadBuildingTableRequest>,
    ) -> Result<Response<UploadBuildingTableResponse>, Status> {
        let claims = caller(&req)?;
        require_role(&claims, UPLOAD_ROLES)?;
        Ok(Response::new(self.upload(&claims, req.get_ref()).await?))
    }

    async fn get_unit(
        &self,
        req: Request<GetUnitRequest>,
    ) -> Result<Response<GetUnitResponse>, Status> {
        let claims = caller(&req)?;
        require_role(&claims, READ_ROLES)?;
        Ok(Response::new(
            self.get_unit_inner(&claims, req.get_ref()).await?,
        ))
    }

    async fn list_units(
        &self,
        req: Request<ListUnitsRequest>,
    ) -> Result<Response<ListUnitsResponse>, Status> {
        let claims = caller(&req)?;
        require_role(&claims, READ_ROLES)?;
        Ok(Response::new(
            self.list_units_inner(&claims, req.get_ref()).await?,
        ))
    }

    async fn get_building_table(
        &self,
        req: Request<GetBuildingTableRequest>,
    ) -> Result<Response<GetBuildingTableResponse>, Status> {
        let claims = caller(&req)?;
        require_role(&claims, READ_ROLES)?;
        Ok(Response::new(
            self.get_building_table_inner(&claims, req.get_ref())
                .await?,
        ))
    }

    type WatchSurveyEventsStream = FeedStream<WatchSurveyEventsResponse>;

    async fn watch_survey_events(
        &self,
        req: Request<WatchSurveyEventsRequest>,
    ) -> Result<Response<Self::WatchSurveyEventsStream>, Status> {
        let claims = caller(&req)?;
        require_role(&claims, WATCH_ROLES)?;
        let req = req.into_inner();
        let after = i64::try_from(req.after_sequence).map_err(|_| {
            field_error(
                "after_sequence",
                "must be at most 9223372036854775807 (序号过大)",
            )
        })?;
        let stream = feed_stream(
            self.db.clone(),
            self.log.clone(),
            after,
            req.backlog_only,
            |stored| {
                let mut event = SurveyEvent::decode(stored.payload.as_slice()).map_err(|e| {
                    Status::from(ApiError::internal(format!(
                        "survey event {} does not decode: {e}",
                        stored.sequence
                    )))
                })?;
                event.sequence = u64::try_from(stored.sequence)
                    .map_err(|_| Status::from(ApiError::internal("negative event sequence")))?;
                event.event_id = stored.event_id;
                event.recorded_at = Some(timestamp_ms(stored.recorded_at_ms));
                Ok(WatchSurveyEventsResponse { event: Some(event) })
            },
        );
        Ok(Response::new(stream))
    }
}
