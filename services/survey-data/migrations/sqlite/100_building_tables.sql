-- 楼盘表 (building/unit table): every uploaded version is kept as it was; nothing is updated in place
-- except the per-project head row that serialises version numbers.

-- One row per project: its parcel (宗地代码, fixed by the first upload) and its latest version.
CREATE TABLE survey.projects (
    project_id TEXT PRIMARY KEY,
    parcel_code TEXT NOT NULL,
    latest_version INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- One row per uploaded version (版本).
CREATE TABLE survey.tables (
    project_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    parcel_code TEXT NOT NULL,
    unit_count INTEGER NOT NULL,
    building_count INTEGER NOT NULL,
    uploaded_at_ms INTEGER NOT NULL,
    uploaded_by TEXT NOT NULL,
    request_id TEXT NOT NULL,
    PRIMARY KEY (project_id, version)
);

-- 自然幢 (physical buildings) of a version.
CREATE TABLE survey.buildings (
    project_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    building_number INTEGER NOT NULL,
    name TEXT NOT NULL,
    total_floors INTEGER NOT NULL,
    floors_above_ground INTEGER NOT NULL,
    floors_below_ground INTEGER NOT NULL,
    structure INTEGER NOT NULL,
    planned_usage TEXT NOT NULL,
    completion_date TEXT,
    unit_count INTEGER NOT NULL,
    PRIMARY KEY (project_id, version, building_number)
);

-- 户 (units) of a version, with the building facts copied in so a unit reads in one row.
CREATE TABLE survey.units (
    project_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    unit_code TEXT NOT NULL,
    building_number INTEGER NOT NULL,
    room_number TEXT NOT NULL,
    floor_number INTEGER NOT NULL,
    location TEXT NOT NULL,
    planned_usage TEXT NOT NULL,
    measured_gfa_centi_sqm INTEGER NOT NULL,
    internal_area_centi_sqm INTEGER NOT NULL,
    shared_area_centi_sqm INTEGER NOT NULL,
    structure INTEGER NOT NULL,
    total_floors INTEGER NOT NULL,
    PRIMARY KEY (project_id, version, unit_code)
);
CREATE INDEX survey.units_code_version_idx ON units (unit_code, version);

-- Which project a 不动产单元代码 belongs to: a unit code may appear in one project only.
CREATE TABLE survey.unit_owners (
    unit_code TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    first_version INTEGER NOT NULL
);
