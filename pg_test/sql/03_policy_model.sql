-- 03: the policy model: resource types, roles with inheritance, groups, scoped assignments,
-- wildcard and glob rules, deny over allow, public resources, explain() and permitted_ids().
\set SHOW_CONTEXT never
CREATE EXTENSION pg_authz;

CREATE TABLE regress_03_projects (id bigint PRIMARY KEY, public boolean NOT NULL DEFAULT false);
CREATE TABLE regress_03_sessions (id bigint PRIMARY KEY, project_id bigint NOT NULL REFERENCES regress_03_projects);
CREATE TABLE regress_03_runs (id text PRIMARY KEY);
INSERT INTO regress_03_projects VALUES (1, false), (2, false), (3, true);
-- sessions 1-4 in project 1, 5-8 in project 2, 9-12 in project 3 (public)
INSERT INTO regress_03_sessions SELECT g, 1 + (g - 1) / 4 FROM generate_series(1, 12) g;
INSERT INTO regress_03_runs VALUES ('lb12345-1'), ('lb12345-2'), ('lb12399-1'), ('xx12345-1'), ('lb1-1');

-- Resource types: sessions are children of projects; projects have a public flag.
SET client_min_messages = warning;
SELECT authz.register_resource_type('project', 'regress_03_projects', 'id', public_column => 'public');
SELECT authz.register_resource_type('session', 'regress_03_sessions', 'id', 'project', 'project_id');
SELECT authz.register_resource_type('run', 'regress_03_runs', 'id');
RESET client_min_messages;
SELECT name, tbl, id_column, parent_type, parent_column, public_column FROM authz.resource_types ORDER BY name;
-- Errors: bad names, missing columns, unknown parent, non-boolean public column.
SELECT authz.register_resource_type('bad name', 'regress_03_runs', 'id');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.register_resource_type('authz', 'regress_03_runs', 'id');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.register_resource_type('x', 'regress_03_runs', 'nope');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.register_resource_type('x', 'regress_03_sessions', 'id', 'nope', 'project_id');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.register_resource_type('x', 'regress_03_sessions', 'id', public_column => 'project_id');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- Roles: admin inherits operator inherits viewer; editor inherits viewer.
SELECT authz.create_role('viewer');
SELECT authz.create_role('operator', ARRAY['viewer']);
SELECT authz.create_role('admin', ARRAY['operator']);
SELECT authz.create_role('editor', ARRAY['viewer']);
SELECT authz.create_role('auditor');
SELECT role, inherits FROM authz.role_inheritance ORDER BY 1, 2;
-- An inheritance cycle is rejected and the error names it.
SELECT authz.add_inheritance('viewer', 'admin');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.add_inheritance('viewer', 'viewer');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.create_role('viewer');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Built-in roles cannot be dropped.
SELECT authz.drop_role('anonymous');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- Rules.
SELECT authz.allow('viewer', 'session', '*', 'read') > 0 AS ok;
SELECT authz.allow('operator', 'session', '*', 'write') > 0 AS ok;
SELECT authz.allow('admin', 'project', '*', '*') > 0 AS ok;
SELECT authz.allow('editor', 'session', '*', 'write') > 0 AS ok;
-- Globs over text ids: 'lb12345-*' matches both runs of lb12345; '?' is exactly one character.
SELECT authz.allow('auditor', 'run', 'lb12345-*', 'read') > 0 AS ok;
SELECT authz.allow('auditor', 'run', 'lb1239?-1', 'read') > 0 AS ok;
-- The same rule twice is one rule.
SELECT authz.allow('viewer', 'session', '*', 'read') = authz.allow('viewer', 'session', '*', 'read') AS same_id;
SELECT role, resource_type, pattern, action, effect FROM authz.rules ORDER BY role, resource_type, pattern, action;
-- Rule errors.
SELECT authz.allow('viewer', 'nosuchtype', '*', 'read');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.allow('viewer', 'session', 'abc\', 'read');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.allow('viewer', 'session', '', 'read');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.allow('viewer', 'session', E'a\nb', 'read');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.allow('nosuchrole', 'session', '*', 'read');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.allow('viewer', 'session', '*', '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- Principals mapped to database logins, and groups.
CREATE ROLE regress_03_alice LOGIN;
CREATE ROLE regress_03_bob LOGIN;
CREATE ROLE regress_03_carol LOGIN;
CREATE ROLE regress_03_dan LOGIN;
CREATE ROLE regress_03_nobody LOGIN;
SELECT authz.create_principal('alice', 'user', 'regress_03_alice');
SELECT authz.create_principal('bob', 'user', 'regress_03_bob');
SELECT authz.create_principal('carol', 'user', 'regress_03_carol');
SELECT authz.create_principal('dan', 'user', 'regress_03_dan');
SELECT authz.create_principal('staff', 'group');
SELECT authz.create_principal('ops', 'group');
-- ops is nested inside staff; carol is in ops.
SELECT authz.add_member('staff', 'ops');
SELECT authz.add_member('ops', 'carol');
-- Membership cycles are rejected and the error names the cycle.
SELECT authz.add_member('ops', 'staff');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.add_member('ops', 'ops');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Only groups have members.
SELECT authz.add_member('alice', 'bob');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Errors naming missing principals and roles.
SELECT authz.add_member('staff', 'nosuchuser');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.assign_role('nosuchuser', 'viewer');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.assign_role('alice', 'nosuchrole');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.assign_role('alice', 'viewer', 'nosuchtype', '1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.assign_role('alice', 'viewer', 'project', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.create_principal('alice');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.create_principal('zed', 'user', 'regress_03_no_such_login');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.create_principal('zed', 'robot');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- Assignments: alice is editor of project 1 only; bob is a global admin;
-- the staff group (so ops, so carol) holds viewer on project 2; dan is an auditor.
SELECT authz.assign_role('alice', 'editor', 'project', '1');
SELECT authz.assign_role('bob', 'admin');
SELECT authz.assign_role('staff', 'viewer', 'project', '2');
SELECT authz.assign_role('dan', 'auditor');
SELECT principal, role, resource_type, resource_id FROM authz.role_assignments ORDER BY principal, role;

-- What each identity may do (sessions 9-12 are in public project 3, readable by all).
SET SESSION AUTHORIZATION regress_03_alice;
SELECT authz.user_id(), authz.identity()->>'source' AS source;
SELECT authz.permitted_ids('session', 'read') AS read, authz.permitted_ids('session', 'write') AS write,
       authz.permitted_ids('project', 'read') AS projects;
SELECT authz.check('session', '1', 'write') AS s1_write, authz.check('session', '5', 'write') AS s5_write,
       authz.check('session', '10', 'read') AS s10_read, authz.check('session', '999', 'read') AS missing;
SELECT authz.require('session', '5', 'write');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.require('session', '1', 'write');
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION regress_03_bob;
SELECT authz.permitted_ids('session', 'read') AS read, authz.permitted_ids('session', 'write') AS write,
       authz.permitted_ids('project', 'delete') AS project_delete;
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION regress_03_carol;
SELECT authz.permitted_ids('session', 'read') AS read, authz.permitted_ids('session', 'write') AS write;
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION regress_03_dan;
SELECT authz.permitted_ids('run', 'read') AS runs, authz.permitted_ids('session', 'read') AS sessions;
RESET SESSION AUTHORIZATION;

-- A login with no principal is anonymous: public resources only.
SET SESSION AUTHORIZATION regress_03_nobody;
SELECT authz.user_id() IS NULL AS anonymous, authz.permitted_ids('session', 'read') AS read,
       authz.permitted_ids('session', 'write') AS write, authz.permitted_ids('project', 'read') AS projects;
RESET SESSION AUTHORIZATION;

-- Unknown resource type and bad action.
SELECT authz.permitted_ids('nosuchtype', 'read');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.check('session', '1', '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- Deny beats allow, and beats public readability.
SELECT authz.deny('viewer', 'session', '2', '*') > 0 AS ok;
SELECT authz.deny('anonymous', 'session', '12', 'read') > 0 AS ok;
SET SESSION AUTHORIZATION regress_03_alice;
SELECT authz.permitted_ids('session', 'read') AS read, authz.permitted_ids('session', 'write') AS write;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_03_bob;
SELECT authz.permitted_ids('session', 'read') AS read;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_03_nobody;
SELECT authz.permitted_ids('session', 'read') AS read;
RESET SESSION AUTHORIZATION;

-- explain(): which rules decided, through which role, grant and match (rule ids are not shown).
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('alice', 'session', '1', 'write');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('alice', 'session', '2', 'read');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('carol', 'session', '6', 'read');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('carol', 'session', '6', 'write');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('dan', 'session', '10', 'read');
SELECT outcome, effect, rule, role, granted_via, matched FROM authz.explain('dan', 'session', '999', 'read');
-- A user may explain their own access but not someone else's.
SET SESSION AUTHORIZATION regress_03_alice;
SELECT outcome, rule FROM authz.explain('alice', 'session', '5', 'write');
SELECT outcome FROM authz.explain('bob', 'session', '5', 'write');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;

-- remove_rule takes the deny on session 2 away again.
SELECT authz.remove_rule('viewer', 'session', '2', '*');
SET SESSION AUTHORIZATION regress_03_alice;
SELECT authz.permitted_ids('session', 'read') AS read;
RESET SESSION AUTHORIZATION;

-- Casbin import: all or nothing; a bad line is named by its number.
SELECT authz.import_casbin(E'p, casbin_reader, run:xx*, read\n# a comment\n\ng, casbin_lead, casbin_reader\nthis is not a policy line\n');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- A good block followed by a line that parses but cannot be applied (unknown type, line 3).
SELECT authz.import_casbin(E'p, casbin_reader, run:xx*, read\ng, casbin_lead, casbin_reader\np, casbin_reader, nosuchtype:*, read\n');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Nothing was imported.
SELECT count(*) AS casbin_roles FROM authz.roles WHERE name LIKE 'casbin%';
SELECT count(*) AS casbin_principals FROM authz.principals WHERE id LIKE 'casbin%';
-- The good policy: casbin_lead inherits casbin_reader (its name is a role: it has p lines and
-- is the role of another g line), erin holds casbin_lead. Casbin does not tell users from roles:
-- casbin_lead is also a subject (the first name of a g line), so it is a principal holding its own role.
SELECT authz.import_casbin(E'p, casbin_reader, run:xx*, read\n# a comment\n\ng, casbin_lead, casbin_reader\ng, erin, casbin_lead\np, casbin_lead, run:lb1-1, read, deny\n');
SELECT role, resource_type, pattern, action, effect FROM authz.rules WHERE role LIKE 'casbin%' ORDER BY 1, 3;
SELECT role, inherits FROM authz.role_inheritance WHERE role LIKE 'casbin%';
SELECT id, kind FROM authz.principals WHERE id IN ('erin', 'casbin_lead', 'casbin_reader') ORDER BY id;
SELECT principal, role FROM authz.role_assignments WHERE principal = 'erin';
-- erin reads run xx12345-1 through casbin_lead -> casbin_reader.
SELECT DISTINCT outcome FROM authz.explain('erin', 'run', 'xx12345-1', 'read');

-- Clean up.
DROP ROLE regress_03_alice, regress_03_bob, regress_03_carol, regress_03_dan, regress_03_nobody;
SET client_min_messages = warning;
SELECT authz.uninstall() >= 0 AS uninstalled;
DROP EXTENSION pg_authz CASCADE;
RESET client_min_messages;
DROP TABLE regress_03_sessions, regress_03_projects, regress_03_runs;
