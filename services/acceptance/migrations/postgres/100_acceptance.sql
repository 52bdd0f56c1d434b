-- 验收备案 (acceptance filings). Flags are BIGINT 0/1, timestamps BIGINT milliseconds, dates TEXT YYYY-MM-DD.

-- Every project the service has heard of; the row is the per-project lock that serialises gate changes,
-- and filings_recorded numbers the project's filings (1, 2, ...) so "latest per kind" never depends on clocks.
CREATE TABLE acceptance.projects (
    project_id TEXT PRIMARY KEY,
    filings_recorded BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- 验收要求: whether 人防验收 applies. No row = not declared = not required.
CREATE TABLE acceptance.requirements (
    project_id TEXT PRIMARY KEY,
    civil_air_defense_required BIGINT NOT NULL,
    declared_at_ms BIGINT NOT NULL
);

-- 备案: every filing is kept (history); the one with the highest ordinal per (project, kind) counts.
CREATE TABLE acceptance.filings (
    filing_id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    ordinal BIGINT NOT NULL,
    kind BIGINT NOT NULL,
    document_number TEXT,
    authority TEXT NOT NULL,
    completed_on TEXT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    UNIQUE (project_id, ordinal)
);
CREATE INDEX filings_kind_idx ON acceptance.filings (project_id, kind, ordinal);

-- 材料: the documents of a filing, in request order, unique by digest within a filing.
CREATE TABLE acceptance.filing_documents (
    filing_id TEXT NOT NULL REFERENCES acceptance.filings (filing_id),
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (filing_id, position),
    UNIQUE (filing_id, sha256)
);
