-- 05: every administrative change is recorded in authz.audit_changes, never with key material.
\set SHOW_CONTEXT never
CREATE EXTENSION pg_authz;
SET client_min_messages = warning;
CREATE TABLE regress_05_projects (id bigint PRIMARY KEY);
CREATE ROLE regress_05_admin LOGIN;
GRANT authz_admin TO regress_05_admin;

-- The audit rows written since the last look, without volatile fields (created_at, serial ids).
CREATE TEMP TABLE seen (id bigint);
CREATE FUNCTION pg_temp.changes() RETURNS TABLE (table_name text, operation text, token_sub text, old_value jsonb, new_value jsonb)
LANGUAGE sql AS $$
    WITH n AS (INSERT INTO seen SELECT a.id FROM authz.audit_changes a WHERE a.id NOT IN (SELECT id FROM seen) RETURNING id)
    SELECT a.table_name, a.operation, a.token_sub,
           CASE WHEN a.table_name IN ('rules', 'role_assignments') THEN a.old_value - 'id' ELSE a.old_value END - 'created_at',
           CASE WHEN a.table_name IN ('rules', 'role_assignments') THEN a.new_value - 'id' ELSE a.new_value END - 'created_at'
    FROM authz.audit_changes a JOIN n ON n.id = a.id ORDER BY a.id
$$;
-- Who made the change (the session user) is recorded too.
SELECT DISTINCT changed_by FROM authz.audit_changes;

SELECT authz.register_resource_type('project', 'regress_05_projects', 'id');
SELECT * FROM pg_temp.changes();
SELECT authz.create_principal('alice');
SELECT * FROM pg_temp.changes();
SELECT authz.create_principal('team', 'group');
SELECT authz.add_member('team', 'alice');
SELECT * FROM pg_temp.changes();
SELECT authz.create_role('viewer');
SELECT authz.create_role('editor', ARRAY['viewer']);
SELECT * FROM pg_temp.changes();
SELECT authz.assign_role('alice', 'editor', 'project', '1');
SELECT * FROM pg_temp.changes();
SELECT authz.allow('viewer', 'project', '*', 'read') > 0 AS ok;
SELECT * FROM pg_temp.changes();
SELECT authz.deny('viewer', 'project', '2', 'read') > 0 AS ok;
SELECT * FROM pg_temp.changes();
SELECT authz.remove_rule('viewer', 'project', '2', 'read');
SELECT * FROM pg_temp.changes();
SELECT authz.unassign_role('alice', 'editor', 'project', '1');
SELECT * FROM pg_temp.changes();

-- Keys: the row is audited, the secret is not.
SELECT authz.add_key('k1', 'HS256', 'regress-05-secret-0123456789abcdef-XYZ', issuer => 'https://idp');
SELECT * FROM pg_temp.changes();
SELECT authz.add_key('k1', 'HS256', 'regress-05-other-secret-0123456789abcdef', replace => true);
SELECT * FROM pg_temp.changes();
SELECT authz.revoke_key('k1');
SELECT * FROM pg_temp.changes();
SELECT count(*) AS rows_with_material FROM authz.audit_changes
WHERE coalesce(new_value ? 'material', false) OR coalesce(old_value ? 'material', false)
   OR new_value::text LIKE '%secret-0123456789%' OR old_value::text LIKE '%secret-0123456789%';

-- A failed change leaves no audit row.
SELECT authz.create_principal('alice');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pg_temp.changes();

-- Dropping a principal records its deletion and the cascaded membership.
SELECT authz.drop_principal('alice');
SELECT * FROM pg_temp.changes();

-- authz_admin members read the audit but cannot write it.
SET SESSION AUTHORIZATION regress_05_admin;
SELECT count(*) > 0 AS can_read FROM authz.audit_changes;
INSERT INTO authz.audit_changes (table_name, operation) VALUES ('x', 'insert');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE authz.audit_changes SET operation = 'x';
\echo SQLSTATE :LAST_ERROR_SQLSTATE
DELETE FROM authz.audit_changes;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
TRUNCATE authz.audit_changes;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- and they still cannot read key material.
SELECT material FROM authz.keys;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Changes made by an authz_admin member are attributed to that login.
SELECT authz.create_principal('bob');
RESET SESSION AUTHORIZATION;
SELECT changed_by, table_name, operation, new_value->>'id' AS id FROM authz.audit_changes WHERE new_value->>'id' = 'bob';
SELECT * FROM pg_temp.changes();

-- Clean up.
DROP ROLE regress_05_admin;
SELECT authz.uninstall() >= 0 AS uninstalled;
DROP EXTENSION pg_authz CASCADE;
DROP TABLE regress_05_projects;
RESET client_min_messages;
