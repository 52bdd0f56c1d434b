-- 完税 (tax completion) facts from the tax bureau's feed. Facts are append-only: a repeated fact with a
-- new event id is kept as history; queries pick the earliest by the bureau's occurred_at, then event_id,
-- so the answer does not depend on delivery order.

-- Every event id ever accepted, with the digest of its normalised content and its feed sequence: the
-- idempotency key of the at-least-once feed (重复推送去重).
CREATE TABLE tax.received (
    event_id TEXT PRIMARY KEY,
    content_sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL
);

-- 契税 (deed tax) paid or relieved per (unit, buyer).
CREATE TABLE tax.deed_tax (
    event_id TEXT PRIMARY KEY,
    unit_code TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    voucher_number TEXT NOT NULL,
    relieved BIGINT NOT NULL,
    relief_basis TEXT NOT NULL,
    occurred_at_ms BIGINT,
    recorded_at_ms BIGINT NOT NULL
);
CREATE INDEX deed_tax_unit_idx ON tax.deed_tax (unit_code, buyer_id);
CREATE INDEX deed_tax_buyer_idx ON tax.deed_tax (buyer_id, unit_code);

-- 维修资金 (maintenance fund) deposited per unit.
CREATE TABLE tax.maintenance_fund (
    event_id TEXT PRIMARY KEY,
    unit_code TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    receipt_number TEXT NOT NULL,
    occurred_at_ms BIGINT,
    recorded_at_ms BIGINT NOT NULL
);
CREATE INDEX maintenance_fund_unit_idx ON tax.maintenance_fund (unit_code);

-- 开发企业税费结清 (developer's taxes cleared) per project.
CREATE TABLE tax.developer_tax (
    event_id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    developer_credit_code TEXT NOT NULL,
    voucher_number TEXT NOT NULL,
    occurred_at_ms BIGINT,
    recorded_at_ms BIGINT NOT NULL
);
CREATE INDEX developer_tax_project_idx ON tax.developer_tax (project_id);

-- 土地出让金等 (land fees) paid per parcel. No query reads it by parcel yet (it travels on the feed), so
-- no index beyond the key: add one with the first parcel query.
CREATE TABLE tax.land_fees (
    event_id TEXT PRIMARY KEY,
    parcel_code TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    voucher_number TEXT NOT NULL,
    occurred_at_ms BIGINT,
    recorded_at_ms BIGINT NOT NULL
);
