-- A case row changes on every readiness step (feed follower) and at the counter (转移登记 + 发证).
-- With `state` in two indexes every such change was a new tuple with six new index entries: half
-- of the follower's write time on a tax-feed burst. Without an index on a column these updates
-- touch, PostgreSQL updates the row in place on its page (a heap-only tuple) when the page has room,
-- which the fill factor keeps.
DROP INDEX registration.cases_project_state_idx;
DROP INDEX registration.cases_state_deadline_idx;
-- Live cases of a project (reevaluate_project filters the state on the row).
CREATE INDEX cases_project_idx ON registration.cases (project_id);
-- The deadline sweeper reads deadlines in the window since its last sweep (lapse_overdue).
CREATE INDEX cases_active_deadline_idx ON registration.cases (material_deadline) WHERE active = 1;
ALTER TABLE registration.cases SET (fillfactor = 70);
