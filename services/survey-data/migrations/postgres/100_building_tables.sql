-- 楼盘表 (building/unit table): every uploaded version is kept as it was; nothing is updated in place
-- except the per-project head row that serialises version numbers.

-- One row per project: its parcel (宗地代码, fixed by the first upload) and its latest version.
CREATE TABLE survey.projects (
    project_id TEXT PRIMARY KEY,
    parcel_code TEXT NOT NULL,
    latest_version BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- One row per uploaded version (版本).
CREATE TABLE survey.tables (
    project_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    parcel_code TEXT NOT NULL,
    unit_count BIGINT NOT NULL,
    building_count BIGINT NOT NULL,
    uploaded_at_ms BIGINT NOT NULL,
    uploaded_by TEXT NOT NULL,
    request_id TEXT NOT NULL,
    PRIMARY KEY (project_id, version)
);

-- 自然幢 (physical buildings) of a version.
CREATE TABLE survey.buildings (
    project_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    building_number BIGINT NOT NULL,
    name TEXT NOT NULL,
    total_floors BIGINT NOT NULL,
    floors_above_ground BIGINT NOT NULL,
    floors_below_ground BIGINT NOT NULL,
    structure BIGINT NOT NULL,
    planned_usage TEXT NOT NULL,
    completion_date TEXT,
    unit_count BIGINT NOT NULL,
    PRIMARY KEY (project_id, version, building_number)
);

-- 户 (units) of a version, with the building facts copied in so a unit reads in one row.
CREATE TABLE survey.units (
    project_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    unit_code TEXT NOT NULL,
    building_number BIGINT NOT NULL,
    room_number TEXT NOT NULL,
    floor_number BIGINT NOT NULL,
    location TEXT NOT NULL,
    planned_usage TEXT NOT NULL,
    measured_gfa_centi_sqm BIGINT NOT NULL,
    internal_area_centi_sqm BIGINT NOT NULL,
    shared_area_centi_sqm BIGINT NOT NULL,
    structure BIGINT NOT NULL,
    total_floors BIGINT NOT NULL,
    PRIMARY KEY (project_id, version, unit_code)
);
CREATE INDEX units_code_version_idx ON survey.units (unit_code, version);

-- Which project a 不动产单元代码 belongs to: a unit code may appear in one project only.
CREATE TABLE survey.unit_owners (
    unit_code TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    first_version BIGINT NOT NULL
);
