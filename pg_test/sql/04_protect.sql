-- 04: authz.protect(): row-level security that confines every login to its permitted rows.
\set SHOW_CONTEXT never
CREATE EXTENSION pg_authz;
SET client_min_messages = warning;

CREATE TABLE regress_04_projects (id bigint PRIMARY KEY, public boolean NOT NULL DEFAULT false);
CREATE TABLE regress_04_sessions (id bigint PRIMARY KEY, project_id bigint NOT NULL REFERENCES regress_04_projects);
-- projects 1 and 2 are private, 3 is public; sessions 1-2 in project 1, 3-4 in 2, 5-6 in 3.
INSERT INTO regress_04_projects VALUES (1, false), (2, false), (3, true);
INSERT INTO regress_04_sessions VALUES (1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3);
SELECT authz.register_resource_type('project', 'regress_04_projects', 'id', public_column => 'public');
SELECT authz.register_resource_type('session', 'regress_04_sessions', 'id', 'project', 'project_id');

CREATE TABLE images (id bigserial PRIMARY KEY, session_id bigint NOT NULL, owner text, deleted_at timestamptz);
CREATE INDEX ON images (session_id);
-- two images per session; the second image of sessions 3 and 4 belongs to olga.
INSERT INTO images (session_id, owner)
SELECT s, CASE WHEN s IN (3, 4) AND k = 2 THEN 'olga' ELSE 'someone' END
FROM generate_series(1, 6) s, generate_series(1, 2) k ORDER BY s, k;
-- (client_min_messages stays at warning: protect() runs DROP ... IF EXISTS whose notices are noise)

-- Roles: admin > operator > viewer; contributor edits only its own rows; blocked is denied everything.
SELECT authz.create_role('viewer');
SELECT authz.create_role('operator', ARRAY['viewer']);
SELECT authz.create_role('admin', ARRAY['operator']);
SELECT authz.create_role('contributor', ARRAY['viewer']);
SELECT authz.create_role('blocked');
SELECT authz.allow('viewer', 'session', '*', 'read') > 0 AS ok;
SELECT authz.allow('operator', 'session', '*', 'write') > 0 AS ok;
SELECT authz.allow('operator', 'session', '*', 'delete') > 0 AS ok;
SELECT authz.allow('admin', 'session', '*', '*') > 0 AS ok;
SELECT authz.allow('contributor', 'session', '*', 'write_own') > 0 AS ok;
SELECT authz.deny('blocked', 'session', '*', '*') > 0 AS ok;

CREATE ROLE regress_04_adam LOGIN;   -- admin everywhere
CREATE ROLE regress_04_otto LOGIN;   -- operator on project 1
CREATE ROLE regress_04_vera LOGIN;   -- viewer on project 1
CREATE ROLE regress_04_gina LOGIN;   -- member of group team, which is viewer on project 2
CREATE ROLE regress_04_dave LOGIN;   -- viewer everywhere, but also blocked
CREATE ROLE regress_04_olga LOGIN;   -- contributor on project 2
CREATE ROLE regress_04_anon LOGIN;   -- no principal: anonymous
GRANT SELECT, INSERT, UPDATE, DELETE ON images TO regress_04_adam, regress_04_otto, regress_04_vera,
    regress_04_gina, regress_04_dave, regress_04_olga, regress_04_anon;
GRANT USAGE ON SEQUENCE images_id_seq TO regress_04_adam, regress_04_otto, regress_04_vera,
    regress_04_gina, regress_04_dave, regress_04_olga, regress_04_anon;
SELECT authz.create_principal('adam', 'user', 'regress_04_adam');
SELECT authz.create_principal('otto', 'user', 'regress_04_otto');
SELECT authz.create_principal('vera', 'user', 'regress_04_vera');
SELECT authz.create_principal('gina', 'user', 'regress_04_gina');
SELECT authz.create_principal('dave', 'user', 'regress_04_dave');
SELECT authz.create_principal('olga', 'user', 'regress_04_olga');
SELECT authz.create_principal('team', 'group');
SELECT authz.add_member('team', 'gina');
SELECT authz.assign_role('adam', 'admin');
SELECT authz.assign_role('otto', 'operator', 'project', '1');
SELECT authz.assign_role('vera', 'viewer', 'project', '1');
SELECT authz.assign_role('team', 'viewer', 'project', '2');
SELECT authz.assign_role('dave', 'viewer');
SELECT authz.assign_role('dave', 'blocked');
SELECT authz.assign_role('olga', 'contributor', 'project', '2');

-- The SQL protect() will run, for review: deterministic text.
SELECT authz.protect_sql('images', 'session_id', 'session', owner_column => 'owner', soft_delete_column => 'deleted_at');
-- Argument errors.
SELECT authz.protect_sql('images', 'nope', 'session');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.protect_sql('images', 'session_id', 'nosuchtype');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.protect_sql('images', 'session_id', 'session', soft_delete_column => 'owner');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- Protect.
SELECT authz.protect('images', 'session_id', 'session', owner_column => 'owner', soft_delete_column => 'deleted_at');
SELECT table_name, id_column, resource_type, owner_column, soft_delete_column, rls_enabled, rls_forced, policies
FROM authz.protected_tables;

-- What each identity sees (count of rows, and which sessions).
SET SESSION AUTHORIZATION regress_04_adam;
SELECT count(*), array_agg(DISTINCT session_id) FROM images;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_04_otto;
SELECT count(*), array_agg(DISTINCT session_id) FROM images;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_04_vera;
SELECT count(*), array_agg(DISTINCT session_id) FROM images;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_04_gina;
SELECT count(*), array_agg(DISTINCT session_id) FROM images;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_04_dave;
SELECT count(*), array_agg(DISTINCT session_id) FROM images;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_04_anon;
SELECT count(*), array_agg(DISTINCT session_id) FROM images;
RESET SESSION AUTHORIZATION;

-- Writes as otto (operator on project 1 = sessions 1 and 2).
SET SESSION AUTHORIZATION regress_04_otto;
INSERT INTO images (session_id, owner) VALUES (2, 'otto') RETURNING session_id, owner;
-- Into a forbidden session: refused.
INSERT INTO images (session_id, owner) VALUES (3, 'otto');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Moving a row into a forbidden session: refused.
UPDATE images SET session_id = 3 WHERE id = 1;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Moving within what otto may write: fine.
UPDATE images SET session_id = 2 WHERE id = 1 RETURNING id, session_id;
-- Rows otto cannot see are not updated or deleted (0 rows, no error).
UPDATE images SET owner = 'x' WHERE session_id = 3;
DELETE FROM images WHERE session_id = 4;
-- Public rows are readable but not writable.
UPDATE images SET owner = 'x' WHERE session_id = 5;
RESET SESSION AUTHORIZATION;

-- A viewer cannot write at all.
SET SESSION AUTHORIZATION regress_04_vera;
INSERT INTO images (session_id, owner) VALUES (1, 'vera');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE images SET owner = 'vera' WHERE session_id = 1;
DELETE FROM images WHERE session_id = 1;
-- Turning row security off does not bypass it: it is an error.
SET row_security = off;
SELECT count(*) FROM images;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET row_security;
RESET SESSION AUTHORIZATION;

-- Owner column with write_own: olga (contributor on project 2) edits only her own rows.
SET SESSION AUTHORIZATION regress_04_olga;
SELECT id, session_id, owner FROM images ORDER BY id;
UPDATE images SET deleted_at = NULL WHERE owner = 'olga' RETURNING id, owner;
UPDATE images SET owner = 'olga' WHERE owner = 'someone' AND session_id IN (3, 4);
INSERT INTO images (session_id, owner) VALUES (3, 'olga') RETURNING session_id, owner;
INSERT INTO images (session_id, owner) VALUES (3, 'someone');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Giving her row away is refused too (the new row must still be hers).
UPDATE images SET owner = 'someone' WHERE owner = 'olga' AND session_id = 3;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;

-- Soft delete: otto's DELETE marks the row deleted instead of removing it.
SET SESSION AUTHORIZATION regress_04_otto;
DELETE FROM images WHERE id = 2;
SELECT count(*) AS otto_sees_id_2 FROM images WHERE id = 2;
-- Deleting it again needs purge: the deleted row is not even visible to otto.
DELETE FROM images WHERE id = 2;
-- restore needs the restore permission; a missing and a forbidden row get the same answer.
SELECT authz.restore('images', '2');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SELECT id, session_id, deleted_at IS NOT NULL AS deleted FROM images WHERE id = 2;
SET SESSION AUTHORIZATION regress_04_vera;
SELECT count(*) AS vera_sees_id_2 FROM images WHERE id = 2;
RESET SESSION AUTHORIZATION;
-- adam (admin: restore, purge) still sees the deleted row, and restores it.
SET SESSION AUTHORIZATION regress_04_adam;
SELECT id, deleted_at IS NOT NULL AS deleted FROM images WHERE id = 2;
SELECT authz.restore('images', '2');
SELECT authz.restore('images', '2');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.restore('images', '99999');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_04_vera;
SELECT count(*) AS vera_sees_id_2 FROM images WHERE id = 2;
RESET SESSION AUTHORIZATION;
-- adam deletes twice: the first marks, the second (purge) removes.
SET SESSION AUTHORIZATION regress_04_adam;
DELETE FROM images WHERE id = 2;
SELECT id, deleted_at IS NOT NULL AS deleted FROM images WHERE id = 2;
DELETE FROM images WHERE id = 2;
SELECT count(*) AS left_of_id_2 FROM images WHERE id = 2;
RESET SESSION AUTHORIZATION;
SELECT count(*) AS left_of_id_2 FROM images WHERE id = 2;

-- Quoted identifiers protect cleanly.
CREATE TABLE "odd ""name""; x" ("sess id" bigint, note text);
CREATE INDEX ON "odd ""name""; x" ("sess id");
INSERT INTO "odd ""name""; x" VALUES (1, 'a'), (3, 'b'), (5, 'c');
SELECT authz.protect_sql('"odd ""name""; x"', 'sess id', 'session');
SELECT authz.protect('"odd ""name""; x"', 'sess id', 'session');
GRANT SELECT ON "odd ""name""; x" TO regress_04_vera;
SET SESSION AUTHORIZATION regress_04_vera;
SELECT "sess id", note FROM "odd ""name""; x" ORDER BY 1;
RESET SESSION AUTHORIZATION;
SELECT table_name, id_column, policies FROM authz.protected_tables ORDER BY table_name::text;

-- A table without an index on the id column is protected with a warning.
CREATE TABLE regress_04_noindex (session_id bigint);
SELECT authz.protect('regress_04_noindex', 'session_id', 'session');
SELECT authz.unprotect('regress_04_noindex');

-- Only the table owner (or a superuser) may protect, and only a manager of pg_authz.
SET SESSION AUTHORIZATION regress_04_vera;
SELECT authz.protect('images', 'session_id', 'session');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;

-- doctor(): a view without security_invoker reads protected rows with its owner's rights.
CREATE VIEW regress_04_images_view AS SELECT * FROM images;
SELECT severity, problem FROM authz.doctor() WHERE object LIKE '%regress_04_images_view%';
ALTER VIEW regress_04_images_view SET (security_invoker = true);
SELECT severity, problem FROM authz.doctor() WHERE object LIKE '%regress_04_images_view%';
DROP VIEW regress_04_images_view;

-- unprotect() removes the policies and row level security.
SELECT authz.unprotect('images');
SELECT authz.unprotect('"odd ""name""; x"');
SELECT authz.unprotect('images') AS again;
SELECT count(*) AS authz_policies FROM pg_policy WHERE polrelid IN ('images'::regclass, '"odd ""name""; x"'::regclass);
SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid IN ('images'::regclass, '"odd ""name""; x"'::regclass) ORDER BY 1;
SELECT count(*) FROM authz.protected_tables;
SET SESSION AUTHORIZATION regress_04_anon;
SELECT count(*) FROM images;
RESET SESSION AUTHORIZATION;

-- Clean up.
DROP OWNED BY regress_04_adam, regress_04_otto, regress_04_vera, regress_04_gina, regress_04_dave,
    regress_04_olga, regress_04_anon;
DROP ROLE regress_04_adam, regress_04_otto, regress_04_vera, regress_04_gina, regress_04_dave,
    regress_04_olga, regress_04_anon;
SET client_min_messages = warning;
SELECT authz.uninstall() >= 0 AS uninstalled;
DROP EXTENSION pg_authz CASCADE;
DROP TABLE images, "odd ""name""; x", regress_04_noindex, regress_04_sessions, regress_04_projects;
RESET client_min_messages;
