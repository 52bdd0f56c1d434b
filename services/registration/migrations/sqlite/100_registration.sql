-- 不动产登记 (registration): projects, the facts followed from the other services' feeds, handover
-- batches and their cases, and certificates with their gap-free counters.
CREATE TABLE registration.projects (
    project_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    county_code TEXT NOT NULL,
    parcel_code TEXT NOT NULL,
    developer_credit_code TEXT NOT NULL,
    developer_name TEXT NOT NULL,
    agreement_number TEXT NOT NULL,
    agreement_signed_on TEXT NOT NULL,
    land_usage TEXT NOT NULL,
    land_right_nature TEXT NOT NULL,
    land_term_start TEXT NOT NULL,
    land_term_end TEXT NOT NULL,
    parcel_area_centi BIGINT NOT NULL,
    first_registration TEXT NOT NULL,
    enrolled_at_ms BIGINT NOT NULL,
    first_applied_at_ms BIGINT,
    first_registered_at_ms BIGINT
);
CREATE INDEX registration.projects_developer_idx ON projects (developer_credit_code);

CREATE TABLE registration.feed_cursors (
    feed TEXT PRIMARY KEY,
    last_sequence BIGINT NOT NULL
);
INSERT INTO registration.feed_cursors (feed, last_sequence) VALUES ('survey', 0), ('acceptance', 0), ('tax', 0);

CREATE TABLE registration.units (
    unit_code TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    table_version BIGINT NOT NULL,
    building_number BIGINT NOT NULL,
    room_number TEXT NOT NULL,
    floor_number BIGINT NOT NULL,
    location TEXT NOT NULL,
    planned_usage TEXT NOT NULL,
    structure BIGINT NOT NULL,
    total_floors BIGINT NOT NULL,
    gfa_centi BIGINT NOT NULL,
    internal_centi BIGINT NOT NULL,
    shared_centi BIGINT NOT NULL
);
CREATE INDEX registration.units_project_idx ON units (project_id);

CREATE TABLE registration.building_tables (
    project_id TEXT PRIMARY KEY,
    latest_version BIGINT NOT NULL,
    parcel_code TEXT NOT NULL,
    unit_count BIGINT NOT NULL
);

CREATE TABLE registration.gates (
    project_id TEXT PRIMARY KEY,
    complete BIGINT NOT NULL,
    missing TEXT NOT NULL
);

CREATE TABLE registration.deed_taxes (
    unit_code TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    voucher_number TEXT NOT NULL,
    PRIMARY KEY (unit_code, buyer_id)
);

CREATE TABLE registration.maintenance_funds (
    unit_code TEXT PRIMARY KEY,
    amount_fen BIGINT NOT NULL,
    receipt_number TEXT NOT NULL
);

CREATE TABLE registration.developer_taxes (
    project_id TEXT PRIMARY KEY,
    credit_code TEXT NOT NULL,
    voucher_number TEXT NOT NULL
);

CREATE TABLE registration.land_fees (
    parcel_code TEXT PRIMARY KEY,
    voucher_number TEXT NOT NULL
);

CREATE TABLE registration.batches (
    batch_id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    handover_date TEXT NOT NULL,
    material_deadline TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    submitted_at_ms BIGINT NOT NULL,
    case_count BIGINT NOT NULL
);
CREATE INDEX registration.batches_project_idx ON batches (project_id);

CREATE TABLE registration.cases (
    case_id TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    unit_code TEXT NOT NULL,
    co_ownership TEXT NOT NULL,
    contract_number TEXT NOT NULL,
    opt_in BIGINT NOT NULL,
    state TEXT NOT NULL,
    missing TEXT NOT NULL,
    version BIGINT NOT NULL,
    active BIGINT NOT NULL,
    material_deadline TEXT NOT NULL,
    handover_date TEXT NOT NULL,
    lapsed_reason TEXT,
    certificate_number TEXT,
    transfer_registered_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL
);
-- A unit is in at most one live case; a lapsed or opted-out case frees it for a later batch.
CREATE UNIQUE INDEX registration.cases_active_unit_idx ON cases (unit_code) WHERE active = 1;
CREATE INDEX registration.cases_batch_idx ON cases (batch_id, case_id);
CREATE INDEX registration.cases_unit_idx ON cases (unit_code);
CREATE INDEX registration.cases_project_state_idx ON cases (project_id, state);
CREATE INDEX registration.cases_state_deadline_idx ON cases (state, material_deadline);

CREATE TABLE registration.case_buyers (
    case_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    resident_id TEXT NOT NULL,
    share_bp BIGINT NOT NULL,
    PRIMARY KEY (case_id, position)
);
CREATE INDEX registration.case_buyers_resident_idx ON case_buyers (resident_id);

-- Every transition of every case, in order (办件流转记录).
CREATE TABLE registration.case_log (
    case_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    state TEXT NOT NULL,
    actor TEXT NOT NULL,
    note TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (case_id, version)
);

CREATE TABLE registration.cert_counters (
    county_code TEXT NOT NULL,
    year BIGINT NOT NULL,
    kind TEXT NOT NULL,
    last_serial BIGINT NOT NULL,
    PRIMARY KEY (county_code, year, kind)
);

CREATE TABLE registration.certificates (
    certificate_number TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    county_code TEXT NOT NULL,
    year BIGINT NOT NULL,
    serial BIGINT NOT NULL,
    case_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    issued_by TEXT NOT NULL,
    issued_at_ms BIGINT NOT NULL,
    UNIQUE (county_code, year, kind, serial),
    UNIQUE (case_id, kind)
);
