-- 09: the lab records example platform (policies/examples/lab_records.sql): experimenter-owned
-- rows (write_own, delete_own), temporary deletes that only the lab manager can restore or purge,
-- a lab group, a read-only collaborator with a deny, another lab, and an unknown login.
\set SHOW_CONTEXT never
CREATE EXTENSION pg_authz;
SET client_min_messages = warning;
\o /dev/null
-- pg_regress feeds this file to psql on stdin, so \ir resolves against the repository root
-- (scripts/regress.sh runs there): the example file itself is what is tested.
\ir policies/examples/lab_records.sql
\o
RESET client_min_messages;

-- What the example set up.
SELECT name, tbl, id_column, parent_type, parent_column FROM authz.resource_types WHERE tbl IS NOT NULL ORDER BY name;
SELECT table_name, id_column, resource_type, owner_column, soft_delete_column, rls_forced, policies
FROM authz.protected_tables ORDER BY table_name::text;
SELECT role, inherits FROM authz.role_inheritance ORDER BY 1, 2;
SELECT role, resource_type, pattern, action, effect FROM authz.rules ORDER BY role, resource_type, pattern, action;
SELECT principal, role, resource_type, resource_id FROM authz.role_assignments ORDER BY principal, role;
SELECT group_id, member_id FROM authz.memberships ORDER BY 1, 2;

-- One database login per experimenter (Antelop's model), mapped to the principal of the same name.
CREATE ROLE regress_09_mia LOGIN;
CREATE ROLE regress_09_alice LOGIN;
CREATE ROLE regress_09_bob LOGIN;
CREATE ROLE regress_09_dora LOGIN;
CREATE ROLE regress_09_carl LOGIN;
CREATE ROLE regress_09_anon LOGIN;   -- no principal
GRANT USAGE ON SCHEMA lab TO regress_09_mia, regress_09_alice, regress_09_bob, regress_09_dora,
    regress_09_carl, regress_09_anon;
GRANT SELECT ON lab.labs, lab.experimenters TO regress_09_mia, regress_09_alice, regress_09_bob,
    regress_09_dora, regress_09_carl, regress_09_anon;
GRANT SELECT, INSERT, UPDATE, DELETE ON lab.experiments, lab.sessions TO regress_09_mia, regress_09_alice,
    regress_09_bob, regress_09_dora, regress_09_carl, regress_09_anon;
GRANT USAGE ON SEQUENCE lab.sessions_session_id_seq TO regress_09_mia, regress_09_alice, regress_09_bob,
    regress_09_dora, regress_09_carl, regress_09_anon;
SELECT authz.map_login('mia', 'regress_09_mia');
SELECT authz.map_login('alice', 'regress_09_alice');
SELECT authz.map_login('bob', 'regress_09_bob');
SELECT authz.map_login('dora', 'regress_09_dora');
SELECT authz.map_login('carl', 'regress_09_carl');

\set experiments 'SELECT experiment_id, lab_id, experimenter, experiment_name FROM lab.experiments ORDER BY 1;'
\set sessions 'SELECT session_id, experiment_id, experimenter, session_name, session_deleted FROM lab.sessions ORDER BY 1;'

-- What each identity sees. Members of the Hausser lab (through the group) and its manager read
-- all of the lab's data, whoever owns it.
SET SESSION AUTHORIZATION regress_09_alice;
SELECT authz.user_id(), authz.identity()->>'source' AS source;
:experiments
:sessions
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_09_mia;
:experiments
:sessions
RESET SESSION AUTHORIZATION;
-- dora is in the Margrie lab: only its data.
SET SESSION AUTHORIZATION regress_09_dora;
:experiments
:sessions
RESET SESSION AUTHORIZATION;
-- carl, read-only collaborator on the Hausser lab: not the unpublished experiment 103.
SET SESSION AUTHORIZATION regress_09_carl;
:experiments
:sessions
RESET SESSION AUTHORIZATION;
-- An unknown login: nothing is public.
SET SESSION AUTHORIZATION regress_09_anon;
SELECT count(*) AS experiments FROM lab.experiments;
SELECT count(*) AS sessions FROM lab.sessions;
RESET SESSION AUTHORIZATION;

-- alice updates her own rows only: bob's are not even candidates.
SET SESSION AUTHORIZATION regress_09_alice;
UPDATE lab.sessions SET session_name = session_name || '-qc' RETURNING session_id, experimenter, session_name;
-- She inserts rows as herself, into her lab's experiments (bob's included) ...
INSERT INTO lab.sessions (experiment_id, experimenter, session_name, session_timestamp)
VALUES (101, 'alice', 'img-03', '2026-01-11 10:00+00') RETURNING session_id, experiment_id, experimenter, session_name;
INSERT INTO lab.sessions (experiment_id, experimenter, session_name, session_timestamp)
VALUES (102, 'alice', 'ephys-alice', '2026-01-11 12:00+00') RETURNING session_id, experiment_id, experimenter;
-- ... never as someone else, never in another lab, and she cannot give a row away.
INSERT INTO lab.sessions (experiment_id, experimenter, session_name, session_timestamp)
VALUES (101, 'bob', 'img-forged', '2026-01-11 10:00+00');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
INSERT INTO lab.sessions (experiment_id, experimenter, session_name, session_timestamp)
VALUES (201, 'alice', 'v1-alice', '2026-01-11 10:00+00');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE lab.sessions SET experimenter = 'bob' WHERE session_id = 1;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE lab.sessions SET experiment_id = 201 WHERE session_id = 1;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- She registers a new experiment of her own in her lab (the new row's lab is hers) ...
BEGIN;
INSERT INTO lab.experiments VALUES (104, 'hausser', 'alice', 'cerebellum imaging 2', false)
RETURNING experiment_id, lab_id, experimenter;
ROLLBACK;
-- ... but cannot move one of her experiments into another lab.
BEGIN;
UPDATE lab.experiments SET lab_id = 'margrie' WHERE experiment_id = 101 RETURNING experiment_id, lab_id;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Temporary delete: her own session 2 is flagged, not removed, and disappears for her; bob's
-- session 3 is not hers to delete (0 rows).
DELETE FROM lab.sessions WHERE session_id IN (2, 3);
:sessions
-- Deleting it again needs purge, restoring it needs restore: she has neither.
DELETE FROM lab.sessions WHERE session_id = 2;
SELECT authz.restore('lab.sessions', '2');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SELECT session_id, experimenter, session_deleted FROM lab.sessions WHERE session_id IN (2, 3) ORDER BY 1;
SET SESSION AUTHORIZATION regress_09_bob;
SELECT count(*) AS bob_sees_session_2 FROM lab.sessions WHERE session_id = 2;
RESET SESSION AUTHORIZATION;

-- mia (lab manager) still sees the deleted session and restores it.
SET SESSION AUTHORIZATION regress_09_mia;
SELECT session_id, experimenter, session_deleted FROM lab.sessions WHERE session_id = 2;
SELECT authz.restore('lab.sessions', '2');
-- A live row cannot be "restored"; a row of another lab gets the same answer as a missing one.
SELECT authz.restore('lab.sessions', '2');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.restore('lab.sessions', '6');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Like everyone, she writes and deletes only her own live rows: bob's are untouched (0 rows).
UPDATE lab.sessions SET session_name = 'x' WHERE session_id = 3;
DELETE FROM lab.sessions WHERE session_id = 3;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_09_bob;
SELECT count(*) AS bob_sees_session_2 FROM lab.sessions WHERE session_id = 2;
-- bob deletes his own session 4 (temporary) ...
DELETE FROM lab.sessions WHERE session_id = 4;
RESET SESSION AUTHORIZATION;
-- ... and mia deletes it for good: the second step of a real delete, which needs purge.
SET SESSION AUTHORIZATION regress_09_mia;
DELETE FROM lab.sessions WHERE session_id = 4 RETURNING session_id, session_deleted;
RESET SESSION AUTHORIZATION;
SELECT count(*) AS session_4_left FROM lab.sessions WHERE session_id = 4;

-- carl cannot write at all; dora cannot touch the Hausser lab.
SET SESSION AUTHORIZATION regress_09_carl;
INSERT INTO lab.sessions (experiment_id, experimenter, session_name, session_timestamp)
VALUES (101, 'carl', 'visit', '2026-01-12 10:00+00');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE lab.sessions SET session_name = 'x';
DELETE FROM lab.sessions;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_09_dora;
INSERT INTO lab.sessions (experiment_id, experimenter, session_name, session_timestamp)
VALUES (101, 'dora', 'img-dora', '2026-01-12 10:00+00');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE lab.sessions SET session_name = session_name || '-qc' RETURNING session_id, session_name;
RESET SESSION AUTHORIZATION;
SELECT session_id, experiment_id, experimenter, session_name, session_deleted FROM lab.sessions ORDER BY 1;

-- explain(): carl is denied experiment 103; alice's write_own on 101 comes through her group;
-- mia's purge through her manager role.
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('carl', 'experiment', '103', 'read');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('alice', 'experiment', '101', 'write_own');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('mia', 'experiment', '102', 'purge');
SET SESSION AUTHORIZATION regress_09_alice;
SELECT outcome, rule FROM authz.explain('alice', 'experiment', '102', 'write');
RESET SESSION AUTHORIZATION;

-- Clean up.
DROP OWNED BY regress_09_mia, regress_09_alice, regress_09_bob, regress_09_dora, regress_09_carl, regress_09_anon;
DROP ROLE regress_09_mia, regress_09_alice, regress_09_bob, regress_09_dora, regress_09_carl, regress_09_anon;
SET client_min_messages = warning;
SELECT authz.uninstall() >= 0 AS uninstalled;
DROP EXTENSION pg_authz CASCADE;
DROP SCHEMA lab CASCADE;
RESET client_min_messages;
