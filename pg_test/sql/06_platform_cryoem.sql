-- 06: the cryo-EM example platform (policies/examples/cryoem_sessions.sql), loaded as written,
-- seen by each of its identities: admin, operator, viewer, a group member, a user without roles,
-- anonymous, and the embargo deny.
\set SHOW_CONTEXT never
CREATE EXTENSION pg_authz;
SET client_min_messages = warning;
\o /dev/null
-- pg_regress feeds this file to psql on stdin, so \ir resolves against the repository root
-- (scripts/regress.sh runs there): the example file itself is what is tested.
\ir policies/examples/cryoem_sessions.sql
\o
RESET client_min_messages;

-- What the example set up.
SELECT name, tbl, id_column, parent_type, parent_column, public_column FROM authz.resource_types
WHERE tbl IS NOT NULL ORDER BY name;
SELECT table_name, id_column, resource_type, owner_column, soft_delete_column, rls_forced, policies
FROM authz.protected_tables;
SELECT role, inherits FROM authz.role_inheritance ORDER BY 1, 2;
SELECT role, resource_type, pattern, action, effect FROM authz.rules ORDER BY role, resource_type, pattern, action;
SELECT principal, role, resource_type, resource_id FROM authz.role_assignments ORDER BY principal, role;
SELECT group_id, member_id FROM authz.memberships ORDER BY 1, 2;
-- sessions per project: 11, 12, 13 (embargoed) in project 1; 21, 22 in 2; 31 in public project 3.
SELECT p.id AS project, p.public, array_agg(s.id ORDER BY s.id) AS sessions, bool_or(s.embargoed) AS has_embargo
FROM projects p JOIN sessions s ON s.project_id = p.id GROUP BY p.id, p.public ORDER BY p.id;

-- Database logins for the example's principals (an analyst in psql needs no token).
CREATE ROLE regress_06_admin1 LOGIN;
CREATE ROLE regress_06_operator1 LOGIN;
CREATE ROLE regress_06_viewer1 LOGIN;
CREATE ROLE regress_06_member1 LOGIN;
CREATE ROLE regress_06_newbie LOGIN;    -- a principal without any role
CREATE ROLE regress_06_anon LOGIN;      -- no principal: anonymous
GRANT SELECT, INSERT, UPDATE, DELETE ON images TO regress_06_admin1, regress_06_operator1, regress_06_viewer1,
    regress_06_member1, regress_06_newbie, regress_06_anon;
GRANT USAGE ON SEQUENCE images_id_seq TO regress_06_admin1, regress_06_operator1, regress_06_viewer1,
    regress_06_member1, regress_06_newbie, regress_06_anon;
SELECT authz.map_login('admin1', 'regress_06_admin1');
SELECT authz.map_login('operator1', 'regress_06_operator1');
SELECT authz.map_login('viewer1', 'regress_06_viewer1');
SELECT authz.map_login('member1', 'regress_06_member1');
SELECT authz.create_principal('newbie', 'user', 'regress_06_newbie');

-- What each identity sees: images per session.
-- admin1 holds admin, which inherits operator: the embargo deny on operator reaches admin1 too,
-- so session 13 is hidden from every principal (only superusers see it).
SET SESSION AUTHORIZATION regress_06_admin1;
SELECT authz.user_id(), authz.identity()->>'source' AS source;
SELECT session_id, count(*) FROM images GROUP BY 1 ORDER BY 1;
RESET SESSION AUTHORIZATION;
-- operator1: operator on project 1 (11, 12; 13 denied) and the public project.
SET SESSION AUTHORIZATION regress_06_operator1;
SELECT session_id, count(*) FROM images GROUP BY 1 ORDER BY 1;
SELECT authz.permitted_ids('session', 'write') AS write, authz.permitted_ids('session', 'delete_own') AS delete_own;
RESET SESSION AUTHORIZATION;
-- viewer1: viewer on session 21 only, and the public project.
SET SESSION AUTHORIZATION regress_06_viewer1;
SELECT session_id, count(*) FROM images GROUP BY 1 ORDER BY 1;
RESET SESSION AUTHORIZATION;
-- member1: in spike-team, which is viewer on project 2.
SET SESSION AUTHORIZATION regress_06_member1;
SELECT session_id, count(*) FROM images GROUP BY 1 ORDER BY 1;
RESET SESSION AUTHORIZATION;
-- newbie: authenticated, no roles: public only.
SET SESSION AUTHORIZATION regress_06_newbie;
SELECT session_id, count(*) FROM images GROUP BY 1 ORDER BY 1;
RESET SESSION AUTHORIZATION;
-- anonymous: public only.
SET SESSION AUTHORIZATION regress_06_anon;
SELECT authz.user_id() IS NULL AS anonymous, authz.identity()->>'source' AS source;
SELECT session_id, count(*) FROM images GROUP BY 1 ORDER BY 1;
RESET SESSION AUTHORIZATION;
-- The superuser bypasses row level security: all six sessions.
SELECT session_id, count(*) FROM images GROUP BY 1 ORDER BY 1;

-- Two images to work with: the first of session 11 and the first of session 12.
SELECT min(id) AS img11 FROM images WHERE session_id = 11 \gset
SELECT min(id) AS img12 FROM images WHERE session_id = 12 \gset

-- Writes as operator1: write on 11 and 12, nothing on 13, 21, 22 or the public 31.
SET SESSION AUTHORIZATION regress_06_operator1;
INSERT INTO images (session_id, filename, uploaded_by) VALUES (11, 'ribo-2026-01_0101.mrc', 'operator1')
RETURNING session_id, filename, uploaded_by;
INSERT INTO images (session_id, filename, uploaded_by) VALUES (13, 'ribo-embargo_0101.mrc', 'operator1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
INSERT INTO images (session_id, filename, uploaded_by) VALUES (21, 'spike-a_0101.mrc', 'operator1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
INSERT INTO images (session_id, filename, uploaded_by) VALUES (31, 'tutorial_0101.mrc', 'operator1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Moving an image into the embargoed session is refused.
UPDATE images SET session_id = 13 WHERE id = :img11;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Rows operator1 cannot see are not touched: 0 rows, no error.
UPDATE images SET defocus = 0 WHERE session_id IN (13, 21, 31);
DELETE FROM images WHERE session_id IN (13, 21, 31);
-- delete_own: operator1 uploaded every image, so deleting one marks it deleted (soft delete).
DELETE FROM images WHERE id = :img12;
SELECT count(*) AS operator1_sees_it FROM images WHERE id = :img12;
-- restore needs the restore permission, which operators lack.
SELECT authz.restore('images', :'img12');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SELECT session_id, deleted_at IS NOT NULL AS deleted FROM images WHERE id = :img12;

-- admin1 (admin: * on every project, so restore and purge) sees the deleted row and restores it.
SET SESSION AUTHORIZATION regress_06_admin1;
SELECT session_id, deleted_at IS NOT NULL AS deleted FROM images WHERE id = :img12;
SELECT authz.restore('images', :'img12');
-- admin1 writes in project 2 too, but not in the embargoed session.
INSERT INTO images (session_id, filename, uploaded_by) VALUES (22, 'spike-b_0101.mrc', 'admin1')
RETURNING session_id, filename;
INSERT INTO images (session_id, filename, uploaded_by) VALUES (13, 'ribo-embargo_0102.mrc', 'admin1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_06_operator1;
SELECT count(*) AS operator1_sees_it_again FROM images WHERE id = :img12;
RESET SESSION AUTHORIZATION;

-- viewer1, member1 and anonymous cannot write anything.
SET SESSION AUTHORIZATION regress_06_viewer1;
INSERT INTO images (session_id, filename, uploaded_by) VALUES (21, 'spike-a_0102.mrc', 'viewer1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE images SET defocus = 0 WHERE session_id = 21;
DELETE FROM images WHERE session_id = 21;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_06_member1;
INSERT INTO images (session_id, filename, uploaded_by) VALUES (22, 'spike-b_0102.mrc', 'member1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_06_anon;
INSERT INTO images (session_id, filename, uploaded_by) VALUES (31, 'tutorial_0102.mrc', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
DELETE FROM images WHERE session_id = 31;
RESET SESSION AUTHORIZATION;
SELECT session_id, count(*) FROM images WHERE session_id IN (21, 22, 31) GROUP BY 1 ORDER BY 1;

-- explain(): the embargo denies admin1 through admin -> operator; member1 reads 21 through its group.
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('admin1', 'session', '13', 'read');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('member1', 'session', '21', 'read');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('operator1', 'session', '12', 'delete_own');
-- A user may explain their own access, not anyone else's.
SET SESSION AUTHORIZATION regress_06_viewer1;
SELECT outcome, rule FROM authz.explain('viewer1', 'session', '22', 'read');
SELECT outcome FROM authz.explain('member1', 'session', '22', 'read');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;

-- Clean up.
DROP OWNED BY regress_06_admin1, regress_06_operator1, regress_06_viewer1, regress_06_member1,
    regress_06_newbie, regress_06_anon;
DROP ROLE regress_06_admin1, regress_06_operator1, regress_06_viewer1, regress_06_member1,
    regress_06_newbie, regress_06_anon;
SET client_min_messages = warning;
SELECT authz.uninstall() >= 0 AS uninstalled;
DROP EXTENSION pg_authz CASCADE;
DROP TABLE images, sessions, projects;
RESET client_min_messages;
