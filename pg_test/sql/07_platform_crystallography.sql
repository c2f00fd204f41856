-- 07: the crystallography example platform (policies/examples/crystallography_projects.sql):
-- projects are proposal visits ('lb12345-20'), public projects, visit-scoped visitors, a proposal's
-- whole visit range by glob, staff with a deny, a suspended account, a group, anonymous visitors.
-- The web application connects on one pooled login and passes each user's token (SET LOCAL);
-- a staff analyst uses psql on a login mapped to her principal.
\set SHOW_CONTEXT never
CREATE EXTENSION pg_authz;
SET client_min_messages = warning;
\o /dev/null
-- pg_regress feeds this file to psql on stdin, so \ir resolves against the repository root
-- (scripts/regress.sh runs there): the example file itself is what is tested.
\ir policies/examples/crystallography_projects.sql
\o
RESET client_min_messages;

-- Tokens of the identity provider (HS256, kid k07, expiring in year 2100), one per user;
-- "stranger" is a valid login unknown to the policy.
\set ada 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazA3In0.eyJzdWIiOiAiYWRhIiwgImV4cCI6IDQxMDI0NDQ4MDAsICJpYXQiOiAxNzAwMDAwMDAwfQ.NjwR8k57gxIwvCkUpApYbrHaM8o2NBgBj4W-kM2Yyg0'
\set sam 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazA3In0.eyJzdWIiOiAic2FtIiwgImV4cCI6IDQxMDI0NDQ4MDAsICJpYXQiOiAxNzAwMDAwMDAwfQ.Cc9_5gXb6kalk9yfhT3VEpTL8cwlSYqCxKmp1lnmric'
\set pat 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazA3In0.eyJzdWIiOiAicGF0IiwgImV4cCI6IDQxMDI0NDQ4MDAsICJpYXQiOiAxNzAwMDAwMDAwfQ.7RShVHqkjvnfVOkZk9lNljeB-ZcIOkGQA_KkFIWPmlo'
\set ann 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazA3In0.eyJzdWIiOiAiYW5uIiwgImV4cCI6IDQxMDI0NDQ4MDAsICJpYXQiOiAxNzAwMDAwMDAwfQ.ggQom4Qk659fWlZqQMqWrSg5ubZcfdgFgVfQndxfn1g'
\set sid 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazA3In0.eyJzdWIiOiAic2lkIiwgImV4cCI6IDQxMDI0NDQ4MDAsICJpYXQiOiAxNzAwMDAwMDAwfQ.kvvqIEhHGjYkA-ceWY696KgOch5scCLnB9mQ8ZLp1NE'
\set gus 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazA3In0.eyJzdWIiOiAiZ3VzIiwgImV4cCI6IDQxMDI0NDQ4MDAsICJpYXQiOiAxNzAwMDAwMDAwfQ.Mv1oyzX9pig1-nA6i-jb02Dr45swjyovW9jBln-Gx4c'
\set stranger 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazA3In0.eyJzdWIiOiAic3RyYW5nZXIiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDB9.8CyLEf-OhIyI6309cOcAiPmAku_kVnjQiNZFc8sRZzg'
SELECT authz.add_key('k07', 'HS256', 'regress-07-fragalysis-secret-0123456789abcdef');

-- What the example set up.
SELECT name, tbl, id_column, parent_type, parent_column, public_column FROM authz.resource_types
WHERE tbl IS NOT NULL ORDER BY name;
SELECT table_name, id_column, resource_type, rls_forced, policies FROM authz.protected_tables ORDER BY table_name::text;
SELECT role, resource_type, pattern, action, effect FROM authz.rules ORDER BY role, resource_type, pattern, action;
SELECT principal, role, resource_type, resource_id FROM authz.role_assignments ORDER BY principal, role;
SELECT id, open_to_public, (SELECT array_agg(t.id ORDER BY t.id) FROM xtal.targets t WHERE t.project_id = p.id) AS targets
FROM xtal.projects p ORDER BY id;

-- The web application's pooled login (no principal of its own: anonymous without a token) and
-- a staff analyst's own login.
CREATE ROLE regress_07_web LOGIN;
CREATE ROLE regress_07_sam LOGIN;
GRANT USAGE ON SCHEMA xtal TO regress_07_web, regress_07_sam;
GRANT SELECT ON xtal.projects TO regress_07_web, regress_07_sam;
GRANT SELECT, INSERT, UPDATE, DELETE ON xtal.targets, xtal.site_observations TO regress_07_web, regress_07_sam;
GRANT USAGE ON SEQUENCE xtal.site_observations_id_seq TO regress_07_web, regress_07_sam;
SELECT authz.map_login('sam', 'regress_07_sam');

-- The same two queries for everyone: visible projects, and targets with their observations.
\set projects 'SELECT id, open_to_public FROM xtal.projects ORDER BY id;'
\set targets 'SELECT t.project_id, t.title, count(o.id) AS observations FROM xtal.targets t LEFT JOIN xtal.site_observations o ON o.target_id = t.id GROUP BY 1, 2 ORDER BY 1;'

SET SESSION AUTHORIZATION regress_07_web;
-- Anonymous (no token): the public project only.
SELECT authz.user_id() IS NULL AS anonymous, authz.identity()->>'source' AS source;
:projects
:targets
-- ann: visitor on visit lb12345-20 only (a scoped assignment), plus the public project.
BEGIN;
SET LOCAL authz.token = :'ann';
SELECT authz.user_id(), authz.identity()->>'source' AS source;
:projects
:targets
COMMIT;
-- pat: role proposal-lb12345, whose glob lb12345-* covers visits 3, 20 and 21, not lb123456-1.
BEGIN;
SET LOCAL authz.token = :'pat';
:projects
:targets
SELECT authz.permitted_ids('project', 'write') AS pat_writes;
COMMIT;
-- gus: member of zika-team, visitor on lb12346-1.
BEGIN;
SET LOCAL authz.token = :'gus';
:targets
COMMIT;
-- sam: staff read everything except the proprietary sw30001 proposal (deny), write nothing.
BEGIN;
SET LOCAL authz.token = :'sam';
:targets
SELECT authz.permitted_ids('project', 'write') AS sam_writes;
COMMIT;
-- ada: administrator, everything.
BEGIN;
SET LOCAL authz.token = :'ada';
:targets
COMMIT;
-- sid: visitor on lb12345-20 but suspended: the deny beats the visit and even public readability.
BEGIN;
SET LOCAL authz.token = :'sid';
:projects
:targets
COMMIT;
-- stranger: a verified identity with no principal: public data only.
BEGIN;
SET LOCAL authz.token = :'stranger';
SELECT authz.user_id(), authz.identity()->>'source' AS source;
:targets
COMMIT;
-- After COMMIT the token is gone: the pooled connection is anonymous again.
SELECT authz.user_id() IS NULL AS anonymous, count(*) AS targets FROM xtal.targets;
RESET SESSION AUTHORIZATION;

-- The staff analyst in psql: no token needed, same answer as her token.
SET SESSION AUTHORIZATION regress_07_sam;
SELECT authz.user_id(), authz.identity()->>'source' AS source;
:projects
SELECT authz.check('project', 'sw30001-1', 'read') AS sw30001, authz.check('project', 'lb12346-1', 'read') AS lb12346;
SELECT authz.require('project', 'sw30001-1', 'read');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Staff cannot write.
INSERT INTO xtal.site_observations (target_id, code) VALUES (2, 'Mpro-x9999_A');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE xtal.targets SET title = 'renamed' WHERE id = 2;
RESET SESSION AUTHORIZATION;

-- Writes through the web application.
SET SESSION AUTHORIZATION regress_07_web;
-- ann adds an observation to her visit's target; not to another visit's, not to the public one.
BEGIN;
SET LOCAL authz.token = :'ann';
INSERT INTO xtal.site_observations (target_id, code, resolution) VALUES (2, 'Mpro-x0301_A', 1.5)
RETURNING target_id, code;
COMMIT;
BEGIN;
SET LOCAL authz.token = :'ann';
INSERT INTO xtal.site_observations (target_id, code) VALUES (3, 'NSP3-x0301_A');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL authz.token = :'ann';
INSERT INTO xtal.site_observations (target_id, code) VALUES (6, 'A71EV2A-x0301_A');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- ann cannot move her target to another visit, nor her observation to another target.
BEGIN;
SET LOCAL authz.token = :'ann';
UPDATE xtal.targets SET project_id = 'lb12345-21' WHERE id = 2;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL authz.token = :'ann';
UPDATE xtal.site_observations SET target_id = 3 WHERE code = 'Mpro-x0301_A';
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Rows of other visits are invisible to her UPDATE and DELETE: 0 rows.
BEGIN;
SET LOCAL authz.token = :'ann';
UPDATE xtal.targets SET upload_status = 'FAILURE' WHERE id IN (1, 3, 6);
DELETE FROM xtal.site_observations WHERE target_id IN (1, 3, 6);
COMMIT;
-- pat (glob) writes in visit lb12345-21 and may move a target between the proposal's visits.
BEGIN;
SET LOCAL authz.token = :'pat';
UPDATE xtal.targets SET title = 'NSP3 macrodomain' WHERE id = 3 RETURNING id, project_id, title;
UPDATE xtal.targets SET project_id = 'lb12345-21' WHERE id = 1 RETURNING id, project_id;
COMMIT;
-- ... but not into lb123456-1, which the glob does not match.
BEGIN;
SET LOCAL authz.token = :'pat';
UPDATE xtal.targets SET project_id = 'lb123456-1' WHERE id = 1;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Anonymous visitors cannot modify the public project.
INSERT INTO xtal.site_observations (target_id, code) VALUES (6, 'A71EV2A-x0302_A');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE xtal.targets SET title = 'x' WHERE id = 6;
DELETE FROM xtal.site_observations WHERE target_id = 6;
-- Nobody but a superuser may change a project (logins have SELECT only on xtal.projects).
BEGIN;
SET LOCAL authz.token = :'ada';
UPDATE xtal.projects SET open_to_public = true WHERE id = 'lb12345-20';
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- ada (admin) writes even in the proprietary project.
BEGIN;
SET LOCAL authz.token = :'ada';
INSERT INTO xtal.site_observations (target_id, code) VALUES (7, 'ENPP1-x0301_A') RETURNING target_id, code;
COMMIT;
RESET SESSION AUTHORIZATION;
SELECT t.project_id, t.id, t.title, count(o.id) AS observations
FROM xtal.targets t LEFT JOIN xtal.site_observations o ON o.target_id = t.id GROUP BY 1, 2, 3 ORDER BY 2;

-- explain(): sam is denied sw30001-1 by the staff deny; pat reads target 3 through the glob;
-- sid is denied even the public project.
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('sam', 'project', 'sw30001-1', 'read');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('pat', 'target', '3', 'read');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('pat', 'project', 'lb123456-1', 'read');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('sid', 'target', '6', 'read');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('gus', 'target', '5', 'write');
-- Users explain their own access through the web application, not other people's.
SET SESSION AUTHORIZATION regress_07_web;
BEGIN;
SET LOCAL authz.token = :'ann';
SELECT outcome, rule FROM authz.explain('ann', 'project', 'lb12345-21', 'read');
SELECT outcome FROM authz.explain('pat', 'project', 'lb12345-21', 'read');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- ada's admin role may manage pg_authz, so she may explain anyone's access.
BEGIN;
SET LOCAL authz.token = :'ada';
SELECT DISTINCT outcome FROM authz.explain('pat', 'project', 'lb12345-21', 'read');
ROLLBACK;
RESET SESSION AUTHORIZATION;

-- Clean up.
DROP OWNED BY regress_07_web, regress_07_sam;
DROP ROLE regress_07_web, regress_07_sam;
SET client_min_messages = warning;
SELECT authz.uninstall() >= 0 AS uninstalled;
DROP EXTENSION pg_authz CASCADE;
DROP SCHEMA xtal CASCADE;
RESET client_min_messages;
