//! SurveyDataService against a real PostgreSQL, over gRPC, as clients see it.
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tongjiao_auth::Role;
use tongjiao_proto::survey::{
    GetBuildingTableRequest, GetUnitRequest, ListUnitsRequest, ListUnitsResponse, PhysicalBuilding,
    Structure, SurveyEvent, Unit, UploadBuildingTableRequest, UploadBuildingTableResponse,
    WatchSurveyEventsRequest, survey_data_service_client::SurveyDataServiceClient,
    survey_event::Payload,
};
use tongjiao_server::ServiceSet;
use tongjiao_store::{
    Db,
    sqlx::{self, AssertSqlSafe},
};
use tongjiao_testkit::{RunningServer, TestKeys, authed, fresh_database, fresh_sqlite_dir, spawn};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

const COUNTY: &str = "140827";
const PARCEL: &str = "140827001002GB00012";
const PROJECT: &str = "YQ-2022-001";

struct Env {
    keys: TestKeys,
    db: Db,
    client: SurveyDataServiceClient<Channel>,
    _server: RunningServer,
}

impl Env {
    async fn new() -> Env {
        let url = fresh_database().await;
        let db = Db::connect(&url, 8).await.expect("connect");
        let service = tongjiao_survey_data::build(db.clone())
            .await
            .expect("build runs migrations");
        let keys = TestKeys::new();
        let mut set = ServiceSet::new();
        service.register(&mut set, keys.authenticator());
        let server = spawn(set).await;
        let client = SurveyDataServiceClient::new(server.channel().await)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        Env {
            keys,
            db,
            client,
            _server: server,
        }
    }

    fn token(&self, role: Role) -> String {
        let county = matches!(role, Role::Clerk | Role::Registrar).then_some(COUNTY);
        self.keys
            .token(role, &format!("{}-1", role.as_str()), None, county)
    }

    async fn upload(
        &self,
        req: UploadBuildingTableRequest,
    ) -> Result<UploadBuildingTableResponse, Status> {
        self.upload_as(Role::HousingBureau, req).await
    }

    async fn upload_as(
        &self,
        role: Role,
        req: UploadBuildingTableRequest,
    ) -> Result<UploadBuildingTableResponse, Status> {
        let token = self.token(role);
        self.client
            .clone()
            .upload_building_table(authed(req, &token))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn get_unit(&self, code: &str) -> Result<Unit, Status> {
        let token = self.token(Role::Registrar);
        self.client
            .clone()
            .get_unit(authed(
                GetUnitRequest {
                    unit_code: code.to_owned(),
                },
                &token,
            ))
            .await
            .map(|r| r.into_inner().unit.expect("unit is set"))
    }

    async fn list(
        &self,
        project: &str,
        version: u32,
        page_size: u32,
        page_token: &str,
    ) -> Result<ListUnitsResponse, Status> {
        let token = self.token(Role::TaxBureau);
        self.client
            .clone()
            .list_units(authed(
                ListUnitsRequest {
                    project_id: project.to_owned(),
                    page_size,
                    page_token: page_token.to_owned(),
                    table_version: version,
                },
                &token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every event of the feed after `after`, ending once caught up.
    async fn backlog(&self, after: u64) -> Vec<SurveyEvent> {
        let token = self.token(Role::Registrar);
        let mut stream = self
            .client
            .clone()
            .watch_survey_events(authed(
                WatchSurveyEventsRequest {
                    after_sequence: after,
                    backlog_only: true,
                },
                &token,
            ))
            .await
            .expect("watch")
            .into_inner();
        let mut events = Vec::new();
        while let Some(item) = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("backlog ends in time")
        {
            events.push(item.expect("event").event.expect("event is set"));
        }
        events
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM survey.{table}"
        )))
        .fetch_one(self.db.pool())
        .await
        .expect("count")
    }

    /// Row counts of every table a write touches.
    async fn written(&self) -> [i64; 7] {
        [
            self.count("projects").await,
            self.count("tables").await,
            self.count("buildings").await,
            self.count("units").await,
            self.count("unit_owners").await,
            self.count("events").await,
            self.count("requests").await,
        ]
    }
}

fn unit_code(building: u32, seq: u32) -> String {
    format!("{PARCEL}F{building:04}{seq:04}")
}

/// A valid table: `buildings` buildings numbered 1.., each with `units` units F<bbbb><uuuu>,
/// 30 floors (28 above ground, 2 below), units on floors 1-28.
fn table(
    request_id: &str,
    project: &str,
    buildings: u32,
    units: u32,
) -> UploadBuildingTableRequest {
    UploadBuildingTableRequest {
        request_id: request_id.to_owned(),
        project_id: project.to_owned(),
        parcel_code: PARCEL.to_owned(),
        buildings: (1..=buildings)
            .map(|b| PhysicalBuilding {
                building_number: b,
                name: format!("{b}号楼"),
                total_floors: 30,
                floors_above_ground: 28,
                floors_below_ground: 2,
                structure: Structure::ReinforcedConcrete.into(),
                planned_usage: "住宅".to_owned(),
                completion_date: "2022-08-30".to_owned(),
                units: (1..=units)
                    .map(|u| Unit {
                        unit_code: unit_code(b, u),
                        room_number: format!("{}单元{}", (u - 1) / 56 + 1, u),
                        floor_number: i32::try_from((u - 1) % 28 + 1).expect("small"),
                        location: format!("垣曲县新城路8号{b}号楼{u}室"),
                        planned_usage: "住宅".to_owned(),
                        measured_gfa_centi_sqm: 10461,
                        internal_area_centi_sqm: 8561,
                        shared_area_centi_sqm: 1900,
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str) {
    let status = result.expect_err("should be rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = bad_fields(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "expected a violation on {field}, got {fields:?} ({})",
        status.message()
    );
}

#[tokio::test]
async fn upload_then_read_unit_table_and_page() {
    let env = Env::new().await;
    let resp = env
        .upload(table("req-1", PROJECT, 2, 3))
        .await
        .expect("upload");
    assert_eq!(
        resp,
        UploadBuildingTableResponse {
            project_id: PROJECT.to_owned(),
            version: 1,
            unit_count: 6,
            building_count: 2,
        }
    );
    assert_eq!(env.written().await, [1, 1, 2, 6, 6, 7, 1]);

    // GetUnit fills every field, including the ones taken from the building and the version.
    let unit = env.get_unit(&unit_code(2, 3)).await.expect("get unit");
    assert_eq!(
        unit,
        Unit {
            unit_code: unit_code(2, 3),
            room_number: "1单元3".to_owned(),
            floor_number: 3,
            location: "垣曲县新城路8号2号楼3室".to_owned(),
            planned_usage: "住宅".to_owned(),
            measured_gfa_centi_sqm: 10461,
            internal_area_centi_sqm: 8561,
            shared_area_centi_sqm: 1900,
            building_number: 2,
            structure: Structure::ReinforcedConcrete.into(),
            total_floors: 30,
            project_id: PROJECT.to_owned(),
            table_version: 1,
        }
    );
    // The display form with spaces and lower case finds the same unit.
    let spaced = env
        .get_unit("140827 001002 gb00012 f00020003")
        .await
        .expect("spaced code");
    assert_eq!(spaced.unit_code, unit_code(2, 3));

    let token = env.token(Role::Auditor);
    let summary = env
        .client
        .clone()
        .get_building_table(authed(
            GetBuildingTableRequest {
                project_id: PROJECT.to_owned(),
            },
            &token,
        ))
        .await
        .expect("get table")
        .into_inner();
    assert_eq!(summary.project_id, PROJECT);
    assert_eq!(summary.parcel_code, PARCEL);
    assert_eq!(summary.latest_version, 1);
    assert_eq!(summary.unit_count, 6);
    assert_eq!(summary.building_count, 2);
    let uploaded = summary.uploaded_at.expect("uploaded_at");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!((now - uploaded.seconds).abs() < 300, "{uploaded:?}");

    let page = env.list(PROJECT, 0, 0, "").await.expect("list");
    assert_eq!(page.total_size, 6);
    assert!(page.next_page_token.is_empty());
    let codes: Vec<&str> = page.units.iter().map(|u| u.unit_code.as_str()).collect();
    let mut want: Vec<String> = (1..=2)
        .flat_map(|b| (1..=3).map(move |u| unit_code(b, u)))
        .collect();
    want.sort();
    assert_eq!(codes, want);
    assert!(
        page.units
            .iter()
            .all(|u| u.table_version == 1 && u.project_id == PROJECT)
    );
}

#[tokio::test]
async fn second_upload_is_version_2_and_version_1_stays_listable() {
    let env = Env::new().await;
    env.upload(table("req-1", PROJECT, 1, 4)).await.expect("v1");
    // Version 2 corrects one unit's areas and drops unit 4.
    let mut v2 = table("req-2", PROJECT, 1, 3);
    let u = &mut v2.buildings[0].units[0];
    u.measured_gfa_centi_sqm = 9000;
    u.internal_area_centi_sqm = 7000;
    u.shared_area_centi_sqm = 2000;
    let resp = env.upload(v2).await.expect("v2");
    assert_eq!(resp.version, 2);
    assert_eq!(resp.unit_count, 3);

    let v1 = env.list(PROJECT, 1, 0, "").await.expect("v1 list");
    assert_eq!(v1.total_size, 4);
    assert_eq!(v1.units.len(), 4);
    assert!(v1.units.iter().all(|u| u.table_version == 1));
    assert_eq!(v1.units[0].measured_gfa_centi_sqm, 10461);

    let latest = env.list(PROJECT, 0, 0, "").await.expect("latest list");
    assert_eq!(latest.total_size, 3);
    assert!(latest.units.iter().all(|u| u.table_version == 2));
    assert_eq!(latest.units[0].measured_gfa_centi_sqm, 9000);
    assert_eq!(
        env.list(PROJECT, 2, 0, "").await.expect("v2").units,
        latest.units
    );

    // GetUnit: the latest version that contains the unit.
    let corrected = env.get_unit(&unit_code(1, 1)).await.expect("unit 1");
    assert_eq!(
        (corrected.table_version, corrected.measured_gfa_centi_sqm),
        (2, 9000)
    );
    let dropped = env.get_unit(&unit_code(1, 4)).await.expect("unit 4");
    assert_eq!(dropped.table_version, 1);

    // Versions are stored side by side, nothing overwritten.
    assert_eq!(env.count("tables").await, 2);
    assert_eq!(env.count("units").await, 7);

    let missing = env.list(PROJECT, 3, 0, "").await.expect_err("no v3");
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn every_validated_field_is_rejected_and_nothing_written() {
    let env = Env::new().await;
    type Mutate = fn(&mut UploadBuildingTableRequest);
    let cases: Vec<(&str, Mutate)> = vec![
        ("request_id", |r| r.request_id.clear()),
        ("request_id", |r| r.request_id = "x".repeat(129)),
        ("project_id", |r| r.project_id.clear()),
        ("project_id", |r| r.project_id = "YQ 001".into()),
        ("parcel_code", |r| {
            r.parcel_code = "140827001002GB0001".into()
        }),
        ("parcel_code", |r| {
            r.parcel_code = "140827001002GB00000".into()
        }),
        ("buildings", |r| r.buildings.clear()),
        ("buildings[0].building_number", |r| {
            r.buildings[0].building_number = 0
        }),
        ("buildings[0].building_number", |r| {
            r.buildings[0].building_number = 10000
        }),
        ("buildings[1].building_number", |r| {
            r.buildings[1].building_number = 1;
            for (i, u) in r.buildings[1].units.iter_mut().enumerate() {
                u.unit_code = unit_code(1, 11 + u32::try_from(i).expect("small"));
            }
        }),
        ("buildings[0].total_floors", |r| {
            let b = &mut r.buildings[0];
            (b.total_floors, b.floors_above_ground, b.floors_below_ground) = (0, 0, 0);
        }),
        ("buildings[0].total_floors", |r| {
            let b = &mut r.buildings[0];
            (b.total_floors, b.floors_above_ground, b.floors_below_ground) = (201, 200, 1);
        }),
        ("buildings[0].floors_above_ground", |r| {
            r.buildings[0].floors_above_ground = 27
        }),
        ("buildings[0].floors_above_ground", |r| {
            r.buildings[0].floors_below_ground = 0
        }),
        ("buildings[0].structure", |r| {
            r.buildings[0].structure = Structure::Unspecified.into()
        }),
        ("buildings[0].structure", |r| r.buildings[0].structure = 99),
        ("buildings[0].planned_usage", |r| {
            r.buildings[0].planned_usage = "  ".into()
        }),
        ("buildings[0].completion_date", |r| {
            r.buildings[0].completion_date = "2022-02-30".into()
        }),
        ("buildings[0].completion_date", |r| {
            r.buildings[0].completion_date = "2022/08/30".into()
        }),
        ("buildings[0].units", |r| r.buildings[0].units.clear()),
        ("buildings[1].units[2].unit_code", |r| {
            r.buildings[1].units[2].unit_code = "140827001002GB00012F0002000".into()
        }),
        ("buildings[1].units[2].unit_code", |r| {
            r.buildings[1].units[2].unit_code = "140827001002GB00012Q00020003".into()
        }),
        ("buildings[1].units[2].unit_code", |r| {
            r.buildings[1].units[2].unit_code = "140827001002GB00013F00020003".into()
        }),
        ("buildings[1].units[2].unit_code", |r| {
            r.buildings[1].units[2].unit_code = unit_code(3, 3)
        }),
        ("buildings[1].units[2].unit_code", |r| {
            r.buildings[1].units[2].unit_code = unit_code(2, 1)
        }),
        ("buildings[1].units[2].room_number", |r| {
            r.buildings[1].units[2].room_number.clear()
        }),
        ("buildings[1].units[2].room_number", |r| {
            r.buildings[1].units[2].room_number = "房".repeat(33)
        }),
        ("buildings[1].units[2].floor_number", |r| {
            r.buildings[1].units[2].floor_number = 0
        }),
        ("buildings[1].units[2].floor_number", |r| {
            r.buildings[1].units[2].floor_number = 29
        }),
        ("buildings[1].units[2].floor_number", |r| {
            r.buildings[1].units[2].floor_number = -3
        }),
        ("buildings[1].units[2].floor_number", |r| {
            // Without the above/below split, floors run 1..=total_floors.
            let b = &mut r.buildings[1];
            (b.floors_above_ground, b.floors_below_ground) = (0, 0);
            b.units[2].floor_number = -1;
        }),
        ("buildings[1].units[2].location", |r| {
            r.buildings[1].units[2].location.clear()
        }),
        ("buildings[1].units[2].location", |r| {
            r.buildings[1].units[2].location = "路".repeat(201)
        }),
        ("buildings[1].units[2].planned_usage", |r| {
            r.buildings[1].units[2].planned_usage.clear()
        }),
        ("buildings[1].units[2].measured_gfa_centi_sqm", |r| {
            r.buildings[1].units[2].measured_gfa_centi_sqm = -1
        }),
        ("buildings[1].units[2].measured_gfa_centi_sqm", |r| {
            r.buildings[1].units[2].measured_gfa_centi_sqm = 10463
        }),
        ("buildings[1].units[2].measured_gfa_centi_sqm", |r| {
            let u = &mut r.buildings[1].units[2];
            (
                u.measured_gfa_centi_sqm,
                u.internal_area_centi_sqm,
                u.shared_area_centi_sqm,
            ) = (0, 0, 0);
        }),
        ("buildings[1].units[2].internal_area_centi_sqm", |r| {
            r.buildings[1].units[2].internal_area_centi_sqm = -5
        }),
        ("buildings[1].units[2].internal_area_centi_sqm", |r| {
            let u = &mut r.buildings[1].units[2];
            (u.internal_area_centi_sqm, u.shared_area_centi_sqm) = (0, 10461);
        }),
        ("buildings[1].units[2].shared_area_centi_sqm", |r| {
            r.buildings[1].units[2].shared_area_centi_sqm = -1
        }),
    ];
    for (i, (field, mutate)) in cases.iter().enumerate() {
        let mut req = table(&format!("bad-{i}"), PROJECT, 2, 3);
        mutate(&mut req);
        assert_invalid(env.upload(req).await, field);
    }
    // Identity tolerance: 0.01 ㎡ off is accepted (rounding), so the control case passes.
    let mut ok = table("ok", PROJECT, 2, 3);
    ok.buildings[1].units[2].measured_gfa_centi_sqm = 10462;
    assert_eq!(
        env.written().await,
        [0; 7],
        "a rejected upload writes nothing"
    );
    env.upload(ok).await.expect("within tolerance");
}

#[tokio::test]
async fn every_violation_is_reported_at_once() {
    let env = Env::new().await;
    let mut req = table("multi", PROJECT, 3, 4);
    req.parcel_code = "bad".into();
    req.buildings[0].structure = 0;
    req.buildings[1].units[3].measured_gfa_centi_sqm = 1;
    req.buildings[2].units[0].room_number.clear();
    req.buildings[2].units[1].floor_number = 0;
    let status = env.upload(req).await.expect_err("rejected");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = bad_fields(&status);
    assert_eq!(
        fields,
        vec![
            "parcel_code",
            "buildings[0].structure",
            "buildings[1].units[3].measured_gfa_centi_sqm",
            "buildings[2].units[0].room_number",
            "buildings[2].units[1].floor_number",
        ],
        "{}",
        status.message()
    );
    // A big table with a systematic error: the reply lists, in order and with exact paths, as
    // many violations as fit in HTTP/2 trailers, then how many more there are.
    type Spoil = fn(&mut Unit);
    let spoilers: [(&str, Spoil); 4] = [
        ("measured_gfa_centi_sqm", |u| u.shared_area_centi_sqm = 0),
        ("unit_code", |u| {
            u.unit_code = u.unit_code.replace("GB00012", "GB00013")
        }),
        ("unit_code", |u| u.unit_code.push('9')),
        ("location", |u| u.location = "坐".repeat(201)),
    ];
    for (i, (field, spoil)) in spoilers.iter().enumerate() {
        let mut big = table(&format!("big-bad-{i}"), PROJECT, 2, 500);
        for b in &mut big.buildings {
            b.units.iter_mut().for_each(spoil);
        }
        let status = env.upload(big).await.expect_err("rejected");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("bad request").field_violations;
        let (last, listed) = violations.split_last().expect("some");
        assert!(listed.len() >= 5, "{field}: only {} listed", listed.len());
        for (j, v) in listed.iter().enumerate() {
            assert_eq!(v.field, format!("buildings[0].units[{j}].{field}"));
        }
        assert_eq!(last.field, "buildings");
        let more = 1000 - listed.len();
        assert!(
            last.description.starts_with(&format!(
                "and {more} more violations not listed (1000 in all)"
            )),
            "{}",
            last.description
        );
    }
    assert_eq!(env.written().await, [0; 7]);
}

#[tokio::test]
async fn roles_and_tokens_are_enforced() {
    let env = Env::new().await;
    // Registrar may upload as well as the housing bureau.
    env.upload_as(Role::Registrar, table("r-1", PROJECT, 1, 1))
        .await
        .expect("registrar uploads");
    for role in [Role::Developer, Role::Clerk, Role::TaxBureau, Role::Auditor] {
        let err = env
            .upload_as(role, table("r-2", PROJECT, 1, 1))
            .await
            .expect_err("role may not upload");
        assert_eq!(err.code(), Code::PermissionDenied, "{role}");
    }
    assert_eq!(env.count("tables").await, 1);

    let dev = env.token(Role::Developer);
    let err = env
        .client
        .clone()
        .get_unit(authed(
            GetUnitRequest {
                unit_code: unit_code(1, 1),
            },
            &dev,
        ))
        .await
        .expect_err("developer may not read");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = env
        .client
        .clone()
        .list_units(authed(
            ListUnitsRequest {
                project_id: PROJECT.into(),
                ..Default::default()
            },
            &dev,
        ))
        .await
        .expect_err("developer may not list");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = env
        .client
        .clone()
        .get_building_table(authed(
            GetBuildingTableRequest {
                project_id: PROJECT.into(),
            },
            &dev,
        ))
        .await
        .expect_err("developer may not read the table");
    assert_eq!(err.code(), Code::PermissionDenied);
    for role in [Role::Clerk, Role::Developer] {
        let token = env.token(role);
        let err = env
            .client
            .clone()
            .watch_survey_events(authed(WatchSurveyEventsRequest::default(), &token))
            .await
            .expect_err("may not watch");
        assert_eq!(err.code(), Code::PermissionDenied, "{role}");
    }
    // Every reading role may read.
    for role in [
        Role::HousingBureau,
        Role::Registrar,
        Role::Clerk,
        Role::TaxBureau,
        Role::Auditor,
    ] {
        let token = env.token(role);
        env.client
            .clone()
            .get_unit(authed(
                GetUnitRequest {
                    unit_code: unit_code(1, 1),
                },
                &token,
            ))
            .await
            .unwrap_or_else(|e| panic!("{role} reads: {e:?}"));
    }
    // A clerk reads only the county on their token.
    let other_clerk = env.keys.token(Role::Clerk, "clerk-2", None, Some("110105"));
    let err = env
        .client
        .clone()
        .get_unit(authed(
            GetUnitRequest {
                unit_code: unit_code(1, 1),
            },
            &other_clerk,
        ))
        .await
        .expect_err("other county");
    assert_eq!(err.code(), Code::PermissionDenied);

    // No token at all.
    let err = env
        .client
        .clone()
        .upload_building_table(Request::new(table("r-3", PROJECT, 1, 1)))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = env
        .client
        .clone()
        .get_unit(Request::new(GetUnitRequest {
            unit_code: unit_code(1, 1),
        }))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = env
        .client
        .clone()
        .watch_survey_events(Request::new(WatchSurveyEventsRequest::default()))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    // A token signed by someone else.
    let stranger = TestKeys::new().token(Role::HousingBureau, "x", None, None);
    let err = env
        .upload_with_token(table("r-4", PROJECT, 1, 1), &stranger)
        .await
        .expect_err("foreign key");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(env.count("tables").await, 1);
}

impl Env {
    async fn upload_with_token(
        &self,
        req: UploadBuildingTableRequest,
        token: &str,
    ) -> Result<UploadBuildingTableResponse, Status> {
        self.client
            .clone()
            .upload_building_table(authed(req, token))
            .await
            .map(tonic::Response::into_inner)
    }
}

#[tokio::test]
async fn retry_replays_and_reused_request_id_is_refused() {
    let env = Env::new().await;
    let first = env
        .upload(table("same", PROJECT, 2, 2))
        .await
        .expect("first");
    let written = env.written().await;
    let again = env
        .upload(table("same", PROJECT, 2, 2))
        .await
        .expect("retry");
    assert_eq!(first, again);
    assert_eq!(env.written().await, written, "the retry writes nothing");
    assert_eq!(env.count("tables").await, 1);
    assert_eq!(env.count("events").await, 5);

    let mut different = table("same", PROJECT, 2, 2);
    different.buildings[0].name = "别的楼".into();
    let err = env.upload(different).await.expect_err("reused id");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(env.written().await, written);

    // The idempotency key is per caller: another caller's same id is a new request.
    let other = env
        .upload_as(Role::Registrar, table("same", PROJECT, 2, 2))
        .await
        .expect("other caller");
    assert_eq!(other.version, 2);
}

#[tokio::test]
async fn preconditions_parcel_and_foreign_units() {
    let env = Env::new().await;
    env.upload(table("p-1", PROJECT, 1, 2)).await.expect("v1");
    let before = env.written().await;

    // A later version on another parcel.
    let mut moved = table("p-2", PROJECT, 1, 2);
    moved.parcel_code = "140827001002GB00013".into();
    for u in &mut moved.buildings[0].units {
        u.unit_code = u.unit_code.replace("GB00012", "GB00013");
    }
    let err = env.upload(moved).await.expect_err("parcel changed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("宗地代码"), "{}", err.message());
    assert_eq!(env.written().await, before);

    // Another project claiming this project's unit.
    let err = env
        .upload(table("p-3", "YQ-2022-002", 1, 3))
        .await
        .expect_err("foreign unit");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&unit_code(1, 1)),
        "{}",
        err.message()
    );
    assert!(err.message().contains(PROJECT), "{}", err.message());
    assert!(
        err.message().starts_with("2 unit code(s) already belong"),
        "two of its three codes are taken: {}",
        err.message()
    );
    assert_eq!(
        env.written().await,
        before,
        "nothing of the refused upload stays"
    );

    // Disjoint units in the other project are fine.
    let mut other = table("p-4", "YQ-2022-002", 1, 2);
    other.buildings[0].building_number = 7;
    for (i, u) in other.buildings[0].units.iter_mut().enumerate() {
        u.unit_code = unit_code(7, u32::try_from(i).expect("small") + 1);
    }
    assert_eq!(env.upload(other).await.expect("other project").version, 1);

    // Many taken codes: the count is exact, the first twenty are named, the rest elided.
    let in_building_9 = |request: &str, project: &str, units: u32| {
        let mut t = table(request, project, 1, units);
        t.buildings[0].building_number = 9;
        for (i, u) in t.buildings[0].units.iter_mut().enumerate() {
            u.unit_code = unit_code(9, u32::try_from(i).expect("small") + 1);
        }
        t
    };
    env.upload(in_building_9("p-5", "YQ-2022-003", 30))
        .await
        .expect("thirty units");
    let before = env.written().await;
    let err = env
        .upload(in_building_9("p-6", "YQ-2022-004", 31))
        .await
        .expect_err("thirty taken");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let msg = err.message();
    assert!(msg.starts_with("30 unit code(s) already belong"), "{msg}");
    assert_eq!(msg.matches("(project YQ-2022-003)").count(), 20, "{msg}");
    assert!(msg.contains(&unit_code(9, 1)), "{msg}");
    assert!(!msg.contains(&unit_code(9, 21)), "{msg}");
    assert!(msg.ends_with(", …"), "{msg}");
    assert_eq!(env.written().await, before, "nothing of it stays");
}

#[tokio::test]
async fn reads_validate_and_report_not_found() {
    let env = Env::new().await;
    assert_eq!(
        env.get_unit(&unit_code(1, 1))
            .await
            .expect_err("none")
            .code(),
        Code::NotFound
    );
    assert_invalid(env.get_unit("140827001002GB00012F0001").await, "unit_code");
    let token = env.token(Role::HousingBureau);
    let err = env
        .client
        .clone()
        .get_building_table(authed(
            GetBuildingTableRequest {
                project_id: PROJECT.into(),
            },
            &token,
        ))
        .await
        .expect_err("no table");
    assert_eq!(err.code(), Code::NotFound);
    assert_invalid(
        env.client
            .clone()
            .get_building_table(authed(
                GetBuildingTableRequest {
                    project_id: "no spaces".into(),
                },
                &token,
            ))
            .await,
        "project_id",
    );
    assert_eq!(
        env.list(PROJECT, 0, 0, "").await.expect_err("none").code(),
        Code::NotFound
    );
    assert_invalid(env.list("", 0, 0, "").await, "project_id");

    env.upload(table("l-1", PROJECT, 1, 5))
        .await
        .expect("upload");
    assert_invalid(env.list(PROJECT, 0, 1001, "").await, "page_size");
    assert_eq!(
        env.list(PROJECT, 0, 1000, "")
            .await
            .expect("max")
            .units
            .len(),
        5
    );
    for garbage in ["garbage", "00", &hex_of("v1|YQ-2022-001|1|nope")] {
        assert_invalid(env.list(PROJECT, 0, 2, garbage).await, "page_token");
    }
    let first = env.list(PROJECT, 0, 2, "").await.expect("page 1");
    // A token is bound to its project.
    assert_invalid(
        env.list("YQ-2022-002", 0, 2, &first.next_page_token).await,
        "page_token",
    );
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn pagination_walks_every_unit_exactly_once() {
    let env = Env::new().await;
    env.upload(table("w-1", PROJECT, 3, 83))
        .await
        .expect("upload");
    let default_page = env.list(PROJECT, 0, 0, "").await.expect("default size");
    assert_eq!(default_page.units.len(), 100);
    assert_eq!(default_page.total_size, 249);

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = env.list(PROJECT, 0, 7, &token).await.expect("page");
        assert_eq!(page.total_size, 249);
        assert!(page.units.len() <= 7);
        seen.extend(page.units.into_iter().map(|u| u.unit_code));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // A new version in the middle of the walk does not change the walk.
        if pages == 3 {
            env.upload(table("w-2", PROJECT, 1, 1)).await.expect("v2");
        }
    }
    assert_eq!(pages, 36);
    let mut want: Vec<String> = (1..=3)
        .flat_map(|b| (1..=83).map(move |u| unit_code(b, u)))
        .collect();
    want.sort();
    assert_eq!(seen, want, "every unit once, in unit-code order");
    assert_eq!(
        env.list(PROJECT, 0, 0, "")
            .await
            .expect("latest")
            .total_size,
        1
    );
}

#[tokio::test]
async fn ten_thousand_units_upload() {
    let env = Env::new().await;
    let req = table("big-1", PROJECT, 10, 1000);
    let started = Instant::now();
    let resp = env.upload(req).await.expect("10,000-unit upload");
    let elapsed = started.elapsed();
    eprintln!("10,000-unit building table upload took {elapsed:?} (end to end over gRPC)");
    assert_eq!(
        (resp.version, resp.unit_count, resp.building_count),
        (1, 10_000, 10)
    );
    assert_eq!(env.count("units").await, 10_000);
    assert_eq!(env.count("events").await, 10_001);
    let page = env.list(PROJECT, 0, 1000, "").await.expect("list");
    assert_eq!(page.total_size, 10_000);
    assert_eq!(page.units.len(), 1000);
    let unit = env.get_unit(&unit_code(10, 1000)).await.expect("last unit");
    assert_eq!(unit.building_number, 10);
}

#[tokio::test]
async fn watch_feed_orders_resumes_and_follows() {
    let env = Env::new().await;
    env.upload(table("f-1", PROJECT, 2, 2)).await.expect("v1");
    let events = env.backlog(0).await;
    assert_eq!(events.len(), 5);
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert!(
        events
            .iter()
            .all(|e| e.project_id == PROJECT && e.recorded_at.is_some())
    );
    match &events[0].payload {
        Some(Payload::BuildingTablePublished(p)) => {
            assert_eq!(
                (p.version, p.parcel_code.as_str(), p.unit_count),
                (1, PARCEL, 4)
            );
        }
        other => panic!("first event should be BuildingTablePublished, got {other:?}"),
    }
    let mut units = Vec::new();
    for e in &events[1..] {
        match &e.payload {
            Some(Payload::UnitMeasured(m)) => {
                let u = m.unit.clone().expect("unit");
                assert_eq!(e.event_id, format!("{PROJECT}:1:{}", u.unit_code));
                assert_eq!(u.project_id, PROJECT);
                assert_eq!(u.table_version, 1);
                assert_eq!(u.total_floors, 30);
                assert_eq!(u.structure, i32::from(Structure::ReinforcedConcrete));
                assert_eq!(Some(u.building_number), u.unit_code[20..24].parse().ok());
                assert_eq!(u.measured_gfa_centi_sqm, 10461);
                units.push(u.unit_code);
            }
            other => panic!("expected UnitMeasured, got {other:?}"),
        }
    }
    assert_eq!(
        units,
        vec![
            unit_code(1, 1),
            unit_code(1, 2),
            unit_code(2, 1),
            unit_code(2, 2)
        ]
    );
    let mut ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "event ids are unique");

    // Resume after a sequence.
    let rest = env.backlog(3).await;
    assert_eq!(
        rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert_eq!(rest, events[3..].to_vec());
    assert!(env.backlog(5).await.is_empty());

    // Follow: a live stream sees the next version's events as they commit.
    let token = env.token(Role::TaxBureau);
    let mut live = env
        .client
        .clone()
        .watch_survey_events(authed(
            WatchSurveyEventsRequest {
                after_sequence: 5,
                backlog_only: false,
            },
            &token,
        ))
        .await
        .expect("watch")
        .into_inner();
    env.upload(table("f-2", PROJECT, 1, 1)).await.expect("v2");
    let mut got = Vec::new();
    while got.len() < 2 {
        let item = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("live event in time")
            .expect("stream open")
            .expect("event");
        got.push(item.event.expect("event"));
    }
    assert_eq!(got[0].sequence, 6);
    assert!(matches!(
        &got[0].payload,
        Some(Payload::BuildingTablePublished(p)) if p.version == 2
    ));
    assert_eq!(got[1].sequence, 7);
    assert_eq!(got[1].event_id, format!("{PROJECT}:2:{}", unit_code(1, 1)));
}

#[tokio::test]
async fn concurrent_uploads_get_distinct_versions() {
    let env = Env::new().await;
    let mut tasks = Vec::new();
    for i in 0..4 {
        let req = table(&format!("c-{i}"), PROJECT, 2, 50);
        let token = env.token(Role::HousingBureau);
        let mut client = env.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .upload_building_table(authed(req, &token))
                .await
                .map(|r| r.into_inner().version)
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.expect("join").expect("upload"));
    }
    versions.sort_unstable();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    let events = env.backlog(0).await;
    assert_eq!(events.len(), 4 * 101);
    assert!(
        events
            .windows(2)
            .all(|w| w[1].sequence == w[0].sequence + 1)
    );
}

/// The sandbox runs the same SQL on SQLite: one pass over every RPC there.
#[tokio::test]
async fn sqlite_sandbox_backend_runs_the_same_sql() {
    let dir = fresh_sqlite_dir("survey");
    let db = Db::connect(&format!("sqlite://{}/tongjiao.db", dir.display()), 1)
        .await
        .expect("sqlite");
    let service = tongjiao_survey_data::build(db.clone())
        .await
        .expect("migrate");
    let keys = TestKeys::new();
    let mut set = ServiceSet::new();
    service.register(&mut set, keys.authenticator());
    let server = spawn(set).await;
    let env = Env {
        client: SurveyDataServiceClient::new(server.channel().await),
        keys,
        db,
        _server: server,
    };
    assert_eq!(
        env.upload(table("s-1", PROJECT, 2, 1500))
            .await
            .expect("v1")
            .version,
        1
    );
    assert_eq!(
        env.upload(table("s-2", PROJECT, 1, 2))
            .await
            .expect("v2")
            .version,
        2
    );
    assert_eq!(
        env.upload(table("s-2", PROJECT, 1, 2))
            .await
            .expect("replay")
            .version,
        2
    );
    let err = env
        .upload(table("s-3", "YQ-2022-002", 1, 1))
        .await
        .expect_err("foreign unit");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(env.written().await, [1, 2, 3, 3002, 3000, 3004, 2]);
    let v1 = env.list(PROJECT, 1, 1000, "").await.expect("v1");
    assert_eq!((v1.total_size, v1.units.len()), (3000, 1000));
    let next = env
        .list(PROJECT, 0, 1000, &v1.next_page_token)
        .await
        .expect("page 2");
    assert_eq!(next.units[0].table_version, 1, "the token pins version 1");
    assert_eq!(
        env.get_unit(&unit_code(2, 1500))
            .await
            .expect("unit")
            .table_version,
        1
    );
    assert_eq!(
        env.get_unit(&unit_code(1, 1))
            .await
            .expect("unit")
            .table_version,
        2
    );
    let events = env.backlog(3001).await;
    assert_eq!(events.len(), 3);
    assert!(
        matches!(&events[0].payload, Some(Payload::BuildingTablePublished(p)) if p.version == 2)
    );
    drop(env);
    let _ = std::fs::remove_dir_all(dir);
}
