-- Same indexes as on PostgreSQL (see its 101): no index on a column a case update changes.
DROP INDEX registration.cases_project_state_idx;
DROP INDEX registration.cases_state_deadline_idx;
CREATE INDEX registration.cases_project_idx ON cases (project_id);
CREATE INDEX registration.cases_active_deadline_idx ON cases (material_deadline) WHERE active = 1;
