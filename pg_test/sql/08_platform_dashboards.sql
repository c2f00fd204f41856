-- 08: the dashboards example platform (policies/examples/dashboards.sql): owner, editor and
-- viewer per project, dashboards inheriting their project's permissions, the built-in owner role
-- on a dashboard's creator, a (nested) group, public projects and dashboards, a deny for
-- external collaborators, and anonymous visitors.
\set SHOW_CONTEXT never
CREATE EXTENSION pg_authz;
SET client_min_messages = warning;
\o /dev/null
-- pg_regress feeds this file to psql on stdin, so \ir resolves against the repository root
-- (scripts/regress.sh runs there): the example file itself is what is tested.
\ir policies/examples/dashboards.sql
\o
RESET client_min_messages;

-- What the example set up.
SELECT name, tbl, id_column, parent_type, parent_column, public_column, owner_column FROM authz.resource_types
WHERE tbl IS NOT NULL ORDER BY name;
SELECT table_name, id_column, resource_type, rls_forced, policies FROM authz.protected_tables ORDER BY table_name::text;
SELECT role, inherits FROM authz.role_inheritance ORDER BY 1, 2;
SELECT role, resource_type, pattern, action, effect FROM authz.rules ORDER BY role, resource_type, pattern, action;
SELECT principal, role, resource_type, resource_id FROM authz.role_assignments ORDER BY principal, role;
SELECT group_id, member_id FROM authz.memberships ORDER BY 1, 2;
SELECT d.project_id, p.is_public AS project_public, right(d.id::text, 2) AS dashboard, d.title, d.owner, d.is_public
FROM dash.dashboards d JOIN dash.projects p ON p.id = d.project_id ORDER BY d.id;

-- Logins for the example's principals; regress_08_anon has none (anonymous).
CREATE ROLE regress_08_root LOGIN;
CREATE ROLE regress_08_olivia LOGIN;
CREATE ROLE regress_08_eddie LOGIN;
CREATE ROLE regress_08_vic LOGIN;
CREATE ROLE regress_08_xena LOGIN;
CREATE ROLE regress_08_owen LOGIN;
CREATE ROLE regress_08_gwen LOGIN;
CREATE ROLE regress_08_anon LOGIN;
GRANT USAGE ON SCHEMA dash TO regress_08_root, regress_08_olivia, regress_08_eddie, regress_08_vic,
    regress_08_xena, regress_08_owen, regress_08_gwen, regress_08_anon;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA dash TO regress_08_root, regress_08_olivia,
    regress_08_eddie, regress_08_vic, regress_08_xena, regress_08_owen, regress_08_gwen, regress_08_anon;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA dash TO regress_08_root, regress_08_olivia, regress_08_eddie,
    regress_08_vic, regress_08_xena, regress_08_owen, regress_08_gwen, regress_08_anon;
SELECT authz.map_login('root', 'regress_08_root');
SELECT authz.map_login('olivia', 'regress_08_olivia');
SELECT authz.map_login('eddie', 'regress_08_eddie');
SELECT authz.map_login('vic', 'regress_08_vic');
SELECT authz.map_login('xena', 'regress_08_xena');
SELECT authz.map_login('owen', 'regress_08_owen');
SELECT authz.map_login('gwen', 'regress_08_gwen');

-- The same queries for everyone: visible projects; visible dashboards with their visible components.
\set projects 'SELECT id, name, is_public FROM dash.projects ORDER BY id;'
\set dashboards 'SELECT d.project_id, right(d.id::text, 2) AS dashboard, d.title, d.owner, (SELECT count(*) FROM dash.components c WHERE c.dashboard_id = d.id) AS components FROM dash.dashboards d ORDER BY d.id;'

-- root: system administrator, everything.
SET SESSION AUTHORIZATION regress_08_root;
:projects
:dashboards
RESET SESSION AUTHORIZATION;
-- olivia, eddie, vic: owner, editor, viewer of project 1: its dashboards, plus the public project 3.
SET SESSION AUTHORIZATION regress_08_olivia;
:projects
:dashboards
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_08_eddie;
:dashboards
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_08_vic;
:dashboards
SELECT authz.permitted_ids('dashboard', 'write') AS vic_writes;
RESET SESSION AUTHORIZATION;
-- xena: viewer of project 1 but external: never dashboard 13 (nor its components).
SET SESSION AUTHORIZATION regress_08_xena;
:dashboards
SELECT count(*) AS components_of_13 FROM dash.components WHERE dashboard_id = 'd0000000-0000-4000-8000-000000000013';
RESET SESSION AUTHORIZATION;
-- owen: no role anywhere, but created dashboard 21: that one, plus the public ones. Owning a
-- dashboard does not open its project.
SET SESSION AUTHORIZATION regress_08_owen;
:projects
:dashboards
RESET SESSION AUTHORIZATION;
-- gwen: in core-facility, inside proteomics-team, viewer of project 2: project 2's dashboards.
SET SESSION AUTHORIZATION regress_08_gwen;
:projects
:dashboards
RESET SESSION AUTHORIZATION;
-- anonymous: public project 3 and the public dashboard 12 of private project 1.
SET SESSION AUTHORIZATION regress_08_anon;
SELECT authz.user_id() IS NULL AS anonymous;
:projects
:dashboards
RESET SESSION AUTHORIZATION;

-- Writes. eddie (editor of project 1) edits any dashboard of project 1 and adds components.
SET SESSION AUTHORIZATION regress_08_eddie;
UPDATE dash.dashboards SET title = title || ' (v2)' WHERE project_id = 1 RETURNING right(id::text, 2) AS dashboard, title;
INSERT INTO dash.components (dashboard_id, kind, title)
VALUES ('d0000000-0000-4000-8000-000000000013', 'text', 'reviewer notes') RETURNING kind, title;
-- He creates a dashboard in project 1 (editors create dashboards): the new row's project is one
-- he may write in ...
BEGIN;
INSERT INTO dash.dashboards (id, project_id, title, owner)
VALUES ('d0000000-0000-4000-8000-000000000014', 1, 'Doublets', 'eddie') RETURNING project_id, title, owner;
ROLLBACK;
-- ... but not in project 2, where he has no role.
INSERT INTO dash.dashboards (id, project_id, title, owner)
VALUES ('d0000000-0000-4000-8000-000000000024', 2, 'Doublets', 'eddie');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Nor may he move a project 1 dashboard into project 2: the new row must be writable too.
BEGIN;
UPDATE dash.dashboards SET project_id = 2 WHERE id = 'd0000000-0000-4000-8000-000000000011'
RETURNING right(id::text, 2) AS dashboard, project_id;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Nor move a component to a dashboard of project 2.
UPDATE dash.components SET dashboard_id = 'd0000000-0000-4000-8000-000000000021'
WHERE dashboard_id = 'd0000000-0000-4000-8000-000000000011' AND kind = 'card';
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Editors cannot delete other people's dashboards (0 rows); eddie created 11, so that one he may.
DELETE FROM dash.dashboards WHERE id = 'd0000000-0000-4000-8000-000000000012';
BEGIN;
DELETE FROM dash.dashboards WHERE id = 'd0000000-0000-4000-8000-000000000011' RETURNING title;
ROLLBACK;
-- Project settings are not his to change (0 rows).
UPDATE dash.projects SET name = 'renamed' WHERE id = 1;
RESET SESSION AUTHORIZATION;

-- olivia (project owner) deletes any dashboard of project 1 and changes project settings.
SET SESSION AUTHORIZATION regress_08_olivia;
BEGIN;
DELETE FROM dash.dashboards WHERE id = 'd0000000-0000-4000-8000-000000000011' RETURNING title;
ROLLBACK;
UPDATE dash.projects SET name = 'single-cell atlas 2026' WHERE id = 1 RETURNING id, name;
-- Not project 3's, which is public but not hers (0 rows).
UPDATE dash.projects SET name = 'mine now' WHERE id = 3;
RESET SESSION AUTHORIZATION;

-- vic (viewer) and xena cannot write; rows they cannot write are simply not updated.
SET SESSION AUTHORIZATION regress_08_vic;
UPDATE dash.dashboards SET title = 'x' WHERE project_id = 1;
INSERT INTO dash.components (dashboard_id, kind, title) VALUES ('d0000000-0000-4000-8000-000000000011', 'card', 'x');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
DELETE FROM dash.components;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_08_xena;
INSERT INTO dash.components (dashboard_id, kind, title) VALUES ('d0000000-0000-4000-8000-000000000013', 'card', 'x');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;

-- owen does anything with his own dashboard 21, nothing with gwen's 22 next to it.
SET SESSION AUTHORIZATION regress_08_owen;
UPDATE dash.dashboards SET title = 'Mass spec runs 2026' WHERE project_id = 2 RETURNING right(id::text, 2) AS dashboard, title;
INSERT INTO dash.components (dashboard_id, kind, title)
VALUES ('d0000000-0000-4000-8000-000000000021', 'figure', 'TIC per run') RETURNING kind, title;
UPDATE dash.dashboards SET title = 'x' WHERE id = 'd0000000-0000-4000-8000-000000000022';
BEGIN;
DELETE FROM dash.dashboards WHERE id = 'd0000000-0000-4000-8000-000000000021' RETURNING title;
ROLLBACK;
RESET SESSION AUTHORIZATION;

-- gwen: viewer of project 2, owner of 22: edits 22 only.
SET SESSION AUTHORIZATION regress_08_gwen;
UPDATE dash.dashboards SET is_public = true WHERE project_id = 2 RETURNING right(id::text, 2) AS dashboard, is_public;
RESET SESSION AUTHORIZATION;
-- Dashboard 22 is now public: anonymous visitors see it. They still cannot write anything.
SET SESSION AUTHORIZATION regress_08_anon;
:dashboards
INSERT INTO dash.components (dashboard_id, kind, title) VALUES ('d0000000-0000-4000-8000-000000000022', 'card', 'x');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE dash.dashboards SET title = 'x';
DELETE FROM dash.components;
RESET SESSION AUTHORIZATION;

-- A dashboard created (by a superuser) in project 1 is visible to project 1's viewers at once.
INSERT INTO dash.dashboards (id, project_id, title, owner)
VALUES ('d0000000-0000-4000-8000-000000000015', 1, 'Trajectories', 'olivia');
SET SESSION AUTHORIZATION regress_08_vic;
SELECT right(id::text, 2) AS dashboard, title FROM dash.dashboards ORDER BY id;
RESET SESSION AUTHORIZATION;

-- explain(): xena is denied dashboard 13; owen writes 21 as its owner; gwen reads 22 both through
-- her nested group and as its owner.
SELECT outcome, effect, rule, role, granted_via, matched
FROM authz.explain('xena', 'dashboard', 'd0000000-0000-4000-8000-000000000013', 'read');
SELECT outcome, effect, rule, role, granted_via, matched
FROM authz.explain('owen', 'dashboard', 'd0000000-0000-4000-8000-000000000021', 'write');
SELECT outcome, effect, rule, role, granted_via, matched
FROM authz.explain('gwen', 'dashboard', 'd0000000-0000-4000-8000-000000000022', 'read');
SELECT outcome, effect, rule, role, granted_via, matched
FROM authz.explain('vic', 'dashboard', 'd0000000-0000-4000-8000-000000000011', 'delete');
-- root (admin may manage pg_authz) explains anyone's access; olivia only her own.
SET SESSION AUTHORIZATION regress_08_root;
SELECT DISTINCT outcome FROM authz.explain('olivia', 'project', '1', 'write');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_08_olivia;
SELECT outcome, rule FROM authz.explain('olivia', 'project', '1', 'delete');
SELECT outcome FROM authz.explain('eddie', 'project', '1', 'write');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;

-- Clean up.
DROP OWNED BY regress_08_root, regress_08_olivia, regress_08_eddie, regress_08_vic, regress_08_xena,
    regress_08_owen, regress_08_gwen, regress_08_anon;
DROP ROLE regress_08_root, regress_08_olivia, regress_08_eddie, regress_08_vic, regress_08_xena,
    regress_08_owen, regress_08_gwen, regress_08_anon;
SET client_min_messages = warning;
SELECT authz.uninstall() >= 0 AS uninstalled;
DROP EXTENSION pg_authz CASCADE;
DROP SCHEMA dash CASCADE;
RESET client_min_messages;
