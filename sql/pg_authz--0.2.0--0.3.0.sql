-- pg_authz 0.2.0 -> 0.3.0. Policy data (principals, roles, rules, keys, protected tables, audit)
-- is untouched. This brings the privilege boundary (#13) and the operations work (#14): functions
-- whose bodies or signatures changed are replaced, the cache-invalidation triggers become row
-- triggers, the policy tables' sequences are marked for pg_dump, DROP EXTENSION is guarded, and
-- every protected table's policies are re-rendered with the 0.3.0 templates.
\echo Use "ALTER EXTENSION pg_authz UPDATE TO '0.3.0'" to load this file. \quit

-- Roles and groups from token claims (authz.map_claim()).
CREATE TABLE authz.claim_mappings (
    id     bigserial PRIMARY KEY,
    claim  text NOT NULL CHECK (claim ~ '^[^.]+(\.[^.]+)*$' AND claim !~ '[[:cntrl:]]'),
    kind   text NOT NULL CHECK (kind IN ('role', 'group')),
    prefix text NOT NULL DEFAULT '' CHECK (prefix !~ '[[:cntrl:]]'),
    issuer text,
    UNIQUE NULLS NOT DISTINCT (claim, kind, prefix, issuer)
);
REVOKE ALL ON authz.claim_mappings FROM PUBLIC;
REVOKE ALL ON SEQUENCE authz.claim_mappings_id_seq FROM PUBLIC;
GRANT SELECT ON authz.claim_mappings TO authz_admin;
SELECT pg_catalog.pg_extension_config_dump('authz.claim_mappings', '');
SELECT pg_catalog.pg_extension_config_dump('authz.claim_mappings_id_seq', '');
CREATE TRIGGER authz_audit AFTER INSERT OR UPDATE OR DELETE ON authz.claim_mappings
    FOR EACH ROW EXECUTE FUNCTION authz._audit_change();

-- Virtual resource types (no table) are policy too: backups keep every type but the built-in one.
SELECT pg_catalog.pg_extension_config_dump('authz.resource_types', 'WHERE name <> ''authz''');

-- Backups keep where the policy tables' sequences stand.
SELECT pg_catalog.pg_extension_config_dump('authz.role_assignments_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('authz.rules_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('authz.audit_changes_id_seq', '');

-- Delegated administration: a delegate can confer only what it holds.
CREATE FUNCTION authz."_require_may_confer"(
	"role" TEXT, /* & str */
	"resource_type" TEXT, /* Option < & str > */
	"resource_id" TEXT /* Option < & str > */
) RETURNS void
STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_require_may_confer_wrapper';

CREATE FUNCTION authz."_require_may_confer_principal"(
	"principal" TEXT /* & str */
) RETURNS void
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_require_may_confer_principal_wrapper';

CREATE FUNCTION authz."_require_may_map_login"(
	"db_role" TEXT, /* & str */
	"principal" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_require_may_map_login_wrapper';
CREATE FUNCTION authz."_require_may_remove"(
	"kind" TEXT, /* & str */
	"name" TEXT /* & str */
) RETURNS void
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_require_may_remove_wrapper';
CREATE FUNCTION authz."_require_privileged"(
	"what" TEXT /* & str */
) RETURNS void
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_require_privileged_wrapper';
CREATE FUNCTION authz."_require_readable_table"(
	"tbl" oid, /* pg_sys :: Oid */
	"columns" TEXT[] /* Vec < Option < String > > */
) RETURNS void
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_require_readable_table_wrapper';
REVOKE ALL ON FUNCTION authz._require_may_confer(text, text, text), authz._require_may_confer_principal(text),
    authz._require_may_map_login(text, text), authz._require_may_remove(text, text),
    authz._require_readable_table(oid, text[]) FROM PUBLIC;

-- Versions: the installed SQL, and the loaded library.
CREATE OR REPLACE FUNCTION authz."version"() RETURNS TEXT /* String */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'version_wrapper';

CREATE FUNCTION authz."library_version"() RETURNS TEXT /* & '_ str */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'library_version_wrapper';

-- Keys: an existing kid is 42710 unless replace; a JWKS keeps its signing keys and skips the rest.
DROP FUNCTION authz.add_key(text, text, text, text, text);
CREATE FUNCTION authz."add_key"(
	"kid" TEXT, /* & str */
	"alg" TEXT, /* & str */
	"key" TEXT, /* & str */
	"issuer" TEXT DEFAULT NULL, /* Option < & str > */
	"audience" TEXT DEFAULT NULL, /* Option < & str > */
	"replace" bool DEFAULT false /* bool */
) RETURNS TEXT /* String */
SECURITY DEFINER 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'add_key_or_replace_wrapper';

DROP FUNCTION authz.add_jwks(jsonb);
CREATE FUNCTION authz."add_jwks"(
	"jwks" jsonb, /* pgrx :: JsonB */
	"replace" bool DEFAULT false /* bool */
) RETURNS TEXT[] /* Vec < String > */
STRICT SECURITY DEFINER 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'add_jwks_or_replace_wrapper';

-- Callers allowed every id but a few: permits() for an id a foreign key guarantees is stored.
CREATE FUNCTION authz.permits_stored(id bigint, resource_type text, action text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE COST 1 SUPPORT authz.permits_support
    AS 'MODULE_PATHNAME', 'authz_permits_stored_int8';
CREATE FUNCTION authz.permits_stored(id integer, resource_type text, action text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE COST 1 SUPPORT authz.permits_support
    AS 'MODULE_PATHNAME', 'authz_permits_stored_int4';
CREATE FUNCTION authz.permits_stored(id uuid, resource_type text, action text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE COST 1 SUPPORT authz.permits_support
    AS 'MODULE_PATHNAME', 'authz_permits_stored_uuid';

-- The soft-delete trigger is now C and elevates only to the owner of the table it fires on.
CREATE OR REPLACE FUNCTION authz._soft_delete() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', '_soft_delete_wrapper';
GRANT EXECUTE ON FUNCTION authz._soft_delete() TO PUBLIC;

-- Partitions are protected with their owner's rights, not as SECURITY DEFINER.
ALTER FUNCTION authz._protect_new_partitions() SECURITY INVOKER RESET search_path;
GRANT EXECUTE ON FUNCTION authz._protect_new_partitions() TO PUBLIC;
CREATE OR REPLACE FUNCTION authz._on_ddl_protect_partitions() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._protect_new_partitions();
END
$$;
CREATE OR REPLACE FUNCTION authz._on_drop_forget_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped oid[];
    names text[];
BEGIN
    SELECT coalesce(pg_catalog.array_agg(d.objid), '{}'), coalesce(pg_catalog.array_agg(d.object_identity), '{}')
      INTO dropped, names
      FROM pg_catalog.pg_event_trigger_dropped_objects() d WHERE d.object_type OPERATOR(pg_catalog.=) 'table';
    IF authz._resync_if_distributed(dropped, names) THEN
        RETURN;
    END IF;
    DELETE FROM authz.protected WHERE tbl::pg_catalog.oid OPERATOR(pg_catalog.=) ANY (dropped);
END
$$;

-- Uninstalling: DROP EXTENSION is refused while tables are protected; uninstall() unprotects them.
CREATE FUNCTION authz."uninstall"() RETURNS INT /* i32 */
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'uninstall_wrapper';

CREATE FUNCTION authz._guard_drop_extension() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'authz_guard_drop_extension';
REVOKE ALL ON FUNCTION authz._guard_drop_extension() FROM PUBLIC;
CREATE EVENT TRIGGER authz_guard_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION authz._guard_drop_extension();

-- Row-level invalidation: only rows that really changed reach other backends' caches.
CREATE FUNCTION authz._unwatch_table(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid OPERATOR(pg_catalog.=) tbl AND g.tgname OPERATOR(pg_catalog.=) 'authz_invalidate') THEN
        EXECUTE format('DROP TRIGGER authz_invalidate ON %s', tbl);
    END IF;
    IF EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid OPERATOR(pg_catalog.=) tbl AND g.tgname OPERATOR(pg_catalog.=) 'authz_invalidate_truncate') THEN
        EXECUTE format('DROP TRIGGER authz_invalidate_truncate ON %s', tbl);
    END IF;
END
$$;

-- (On Citus, triggers on its tables need citus.enable_unsafe_triggers: these fire on each node's
-- placement and only announce changes to that node's backends.)
CREATE FUNCTION authz._watch_table(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET citus.enable_unsafe_triggers = on AS $$
BEGIN
    PERFORM authz._unwatch_table(tbl);
    EXECUTE format('CREATE TRIGGER authz_invalidate AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION authz.invalidate_caches()', tbl);
    EXECUTE format('CREATE TRIGGER authz_invalidate_truncate AFTER TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION authz.invalidate_caches()', tbl);
END
$$;
REVOKE ALL ON FUNCTION authz._watch_table(regclass), authz._unwatch_table(regclass) FROM PUBLIC;

-- A restore writes no audit rows of its own.
CREATE OR REPLACE FUNCTION authz._audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF pg_catalog.current_setting('search_path') OPERATOR(pg_catalog.=) '' THEN
        RETURN NULL;
    END IF;
    INSERT INTO authz.audit_changes (token_sub, table_name, operation, old_value, new_value)
    VALUES (authz._audit_actor(), TG_TABLE_NAME, pg_catalog.lower(TG_OP),
            CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN pg_catalog.to_jsonb(OLD) OPERATOR(pg_catalog.-) 'material' END,
            CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN pg_catalog.to_jsonb(NEW) OPERATOR(pg_catalog.-) 'material' END);
    RETURN NULL;
END
$$;
ALTER FUNCTION authz._audit_change() SECURITY INVOKER RESET search_path;

CREATE FUNCTION authz.map_claim(claim text, kind text DEFAULT 'role', prefix text DEFAULT '', issuer text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE mapping_id bigint;
BEGIN
    -- Trusting the identity provider's claims for roles is the DBA's decision, not a delegate's.
    PERFORM authz._require_privileged('map token claims to roles or groups');
    IF map_claim.claim IS NULL OR map_claim.claim !~ '^[^.]+(\.[^.]+)*$' OR map_claim.claim ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid claim path "%"', map_claim.claim USING ERRCODE = '22023',
            DETAIL = 'A claim is a name, or a dotted path such as realm_access.roles.';
    END IF;
    IF map_claim.kind IS NULL OR map_claim.kind NOT IN ('role', 'group') THEN
        RAISE EXCEPTION 'invalid claim mapping kind "%"', map_claim.kind USING ERRCODE = '22023',
            HINT = 'Use ''role'' or ''group''.';
    END IF;
    IF map_claim.prefix IS NULL OR map_claim.prefix ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid prefix' USING ERRCODE = '22023';
    END IF;
    INSERT INTO authz.claim_mappings (claim, kind, prefix, issuer)
    VALUES (map_claim.claim, map_claim.kind, map_claim.prefix, map_claim.issuer)
    ON CONFLICT (claim, kind, prefix, issuer) DO NOTHING
    RETURNING id INTO mapping_id;
    IF mapping_id IS NULL THEN
        SELECT m.id INTO mapping_id FROM authz.claim_mappings m
        WHERE (m.claim, m.kind, m.prefix) = (map_claim.claim, map_claim.kind, map_claim.prefix)
          AND m.issuer IS NOT DISTINCT FROM map_claim.issuer;
    END IF;
    RETURN mapping_id;
END
$$;

CREATE FUNCTION authz.unmap_claim(claim text, kind text DEFAULT 'role', prefix text DEFAULT '', issuer text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_privileged('map token claims to roles or groups');
    DELETE FROM authz.claim_mappings m
    WHERE (m.claim, m.kind, m.prefix) = (unmap_claim.claim, unmap_claim.kind, unmap_claim.prefix)
      AND m.issuer IS NOT DISTINCT FROM unmap_claim.issuer;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION authz.create_principal(id text, kind text DEFAULT 'user', db_role name DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_manage('principals');
    IF id IS NULL OR id = '' THEN
        RAISE EXCEPTION 'principal id must not be empty' USING ERRCODE = '22023';
    END IF;
    IF kind IS NULL OR kind NOT IN ('user', 'group') THEN
        RAISE EXCEPTION 'invalid principal kind "%"', kind USING ERRCODE = '22023', HINT = 'Use ''user'' or ''group''.';
    END IF;
    IF db_role IS NOT NULL AND NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = db_role) THEN
        RAISE EXCEPTION 'database role "%" does not exist', db_role USING ERRCODE = '42704';
    END IF;
    IF db_role IS NOT NULL AND kind = 'group' THEN
        RAISE EXCEPTION 'a group cannot be a login''s identity' USING ERRCODE = '22023',
            DETAIL = 'Map the login to a user principal and make that user a member of the group.';
    END IF;
    IF db_role IS NOT NULL THEN
        PERFORM authz._require_may_map_login(db_role);
    END IF;
    IF EXISTS (SELECT FROM authz.principals p WHERE p.id = create_principal.id) THEN
        RAISE EXCEPTION 'principal "%" already exists', id USING ERRCODE = '42710';
    END IF;
    IF db_role IS NOT NULL AND EXISTS (SELECT FROM authz.principals p WHERE p.db_role = create_principal.db_role) THEN
        RAISE EXCEPTION 'database role "%" is already mapped to a principal', db_role USING ERRCODE = '42710';
    END IF;
    INSERT INTO authz.principals (id, kind, db_role) VALUES (id, kind, db_role);
    RETURN id;
END
$$;

CREATE OR REPLACE FUNCTION authz.drop_principal(id text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_manage('principals');
    -- Dropping a group lifts what it denies its members: not a delegate's call.
    IF EXISTS (SELECT FROM authz.principals p WHERE p.id = drop_principal.id AND p.kind = 'group') THEN
        PERFORM authz._require_may_remove('principal', drop_principal.id);
    END IF;
    DELETE FROM authz.principals p WHERE p.id = drop_principal.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'principal "%" does not exist', id USING ERRCODE = '23503';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION authz.remove_member(group_id text, member_id text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_manage('principals');
    PERFORM authz._require_may_remove('principal', remove_member.group_id);
    DELETE FROM authz.memberships m WHERE m.group_id = remove_member.group_id AND m.member_id = remove_member.member_id;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION authz.add_inheritance(role text, inherits text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE cycle text;
BEGIN
    PERFORM authz._require_manage('roles');
    PERFORM authz._require_role(role);
    PERFORM authz._require_role(inherits);
    -- Every holder of role gains what inherits carries: a delegate may only confer what it holds.
    PERFORM authz._require_may_confer(inherits, NULL, NULL);
    WITH RECURSIVE down(name, path) AS (
        SELECT inherits, ARRAY[role, inherits]
        UNION ALL
        SELECT i.inherits, down.path || i.inherits
        FROM authz.role_inheritance i JOIN down ON i.role = down.name
        WHERE NOT i.inherits = ANY(down.path[2:])
    )
    SELECT array_to_string(path, ' -> ') INTO cycle FROM down WHERE name = role LIMIT 1;
    IF role = inherits OR cycle IS NOT NULL THEN
        RAISE EXCEPTION 'role inheritance cycle: %', coalesce(cycle, role || ' -> ' || inherits)
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO authz.role_inheritance VALUES (role, inherits) ON CONFLICT DO NOTHING;
END
$$;

CREATE OR REPLACE FUNCTION authz.remove_inheritance(role text, inherits text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_manage('roles');
    PERFORM authz._require_may_remove('role', remove_inheritance.inherits);
    DELETE FROM authz.role_inheritance i WHERE i.role = remove_inheritance.role AND i.inherits = remove_inheritance.inherits;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION authz.unassign_role(principal text, role text, resource_type text DEFAULT NULL, resource_id text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_manage('principals');
    PERFORM authz._require_may_remove('role', unassign_role.role);
    DELETE FROM authz.role_assignments a
    WHERE a.principal = unassign_role.principal AND a.role = unassign_role.role
      AND a.resource_type IS NOT DISTINCT FROM unassign_role.resource_type
      AND a.resource_id IS NOT DISTINCT FROM unassign_role.resource_id;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION authz.map_login(principal text, db_role name)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_manage('principals');
    IF db_role IS NOT NULL AND NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = db_role) THEN
        RAISE EXCEPTION 'database role "%" does not exist', db_role USING ERRCODE = '42704';
    END IF;
    PERFORM authz._require_principal(principal);
    IF db_role IS NOT NULL THEN
        IF (SELECT p.kind FROM authz.principals p WHERE p.id = principal) = 'group' THEN
            RAISE EXCEPTION 'a group cannot be a login''s identity' USING ERRCODE = '22023',
                DETAIL = 'Map the login to a user principal and make that user a member of the group.';
        END IF;
        -- A delegate may map a login only to a principal whose every grant it could confer itself,
        -- and never move a login that already has an identity.
        PERFORM authz._require_may_map_login(db_role, principal);
        PERFORM authz._require_may_confer_principal(principal);
    END IF;
    UPDATE authz.principals p SET db_role = map_login.db_role WHERE p.id = principal;
END
$$;

CREATE OR REPLACE FUNCTION authz.add_member(group_id text, member_id text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE cycle text;
BEGIN
    PERFORM authz._require_manage('principals');
    PERFORM authz._require_principal(group_id, 'group');
    PERFORM authz._require_principal(member_id);
    -- The member gains everything the group holds: a delegate may only confer what it holds.
    PERFORM authz._require_may_confer_principal(group_id);
    -- Would group_id become a member of itself? Walk up from group_id looking for member_id.
    WITH RECURSIVE up(id, path) AS (
        SELECT group_id, ARRAY[member_id, group_id]
        UNION ALL
        SELECT m.group_id, up.path || m.group_id
        FROM authz.memberships m JOIN up ON m.member_id = up.id
        WHERE NOT m.group_id = ANY(up.path[2:])
    )
    SELECT array_to_string(path, ' -> ') INTO cycle FROM up WHERE id = member_id LIMIT 1;
    IF group_id = member_id OR cycle IS NOT NULL THEN
        RAISE EXCEPTION 'group membership cycle: %', coalesce(cycle, group_id || ' -> ' || member_id)
            USING ERRCODE = '22023', DETAIL = 'Groups may nest, but never in a circle.';
    END IF;
    INSERT INTO authz.memberships VALUES (group_id, member_id) ON CONFLICT DO NOTHING;
END
$$;

CREATE OR REPLACE FUNCTION authz.assign_role(principal text, role text, resource_type text DEFAULT NULL, resource_id text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM authz._require_manage('principals');
    PERFORM authz._require_principal(assign_role.principal);
    PERFORM authz._require_role(assign_role.role);
    PERFORM authz._require_scope(assign_role.resource_type, assign_role.resource_id);
    PERFORM authz._require_may_confer(assign_role.role, assign_role.resource_type, assign_role.resource_id);
    -- The conflict target is the natural key only: any other unique violation is an error, never a
    -- silent "done" for a row that was not written.
    INSERT INTO authz.role_assignments (principal, role, resource_type, resource_id)
    VALUES (assign_role.principal, assign_role.role, assign_role.resource_type, assign_role.resource_id)
    ON CONFLICT (principal, role, coalesce(resource_type, ''), coalesce(resource_id, '')) DO NOTHING;
END
$$;

CREATE OR REPLACE FUNCTION authz.register_resource_type(name text, tbl regclass DEFAULT NULL, id_column name DEFAULT NULL,
    parent_type text DEFAULT NULL, parent_column name DEFAULT NULL,
    public_column name DEFAULT NULL, owner_column name DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    previous regclass;
    cycle boolean;
BEGIN
    PERFORM authz._require_manage('resource_types');
    IF name IS NULL OR name !~ '^[A-Za-z_][A-Za-z0-9_.-]*$' THEN
        RAISE EXCEPTION 'invalid resource type name "%"', name USING ERRCODE = '22023',
            DETAIL = 'Names start with a letter or underscore and contain letters, digits, _ . or -.';
    END IF;
    IF name = 'authz' THEN
        RAISE EXCEPTION 'resource type "authz" is built in' USING ERRCODE = '42501';
    END IF;
    IF tbl IS NULL AND id_column IS NULL THEN
        IF parent_type IS NOT NULL OR parent_column IS NOT NULL OR public_column IS NOT NULL OR owner_column IS NOT NULL THEN
            RAISE EXCEPTION 'a virtual resource type (no table) has no parent, public or owner column' USING ERRCODE = '22023',
                HINT = 'Register it over a table to give it those.';
        END IF;
        IF EXISTS (SELECT FROM authz.protected p WHERE p.resource_type = register_resource_type.name)
           OR EXISTS (SELECT FROM authz.resource_types t WHERE t.parent_type = register_resource_type.name) THEN
            RAISE EXCEPTION 'resource type "%" protects tables or is a parent type: it needs its table', name
                USING ERRCODE = '2BP01';
        END IF;
        SELECT t.tbl INTO previous FROM authz.resource_types t WHERE t.name = register_resource_type.name;
        INSERT INTO authz.resource_types AS t (name) VALUES (register_resource_type.name)
        ON CONFLICT ON CONSTRAINT resource_types_pkey DO UPDATE SET tbl = NULL, id_column = NULL,
            parent_type = NULL, parent_column = NULL, public_column = NULL, owner_column = NULL;
        IF previous IS NOT NULL AND NOT EXISTS (SELECT FROM authz.resource_types r WHERE r.tbl = previous) THEN
            PERFORM authz._unwatch_table(previous);
        END IF;
        RETURN register_resource_type.name;
    END IF;
    IF tbl IS NULL OR id_column IS NULL THEN
        RAISE EXCEPTION 'a resource type over a table needs the table and its id column' USING ERRCODE = '22023',
            HINT = 'Pass both, or neither for a virtual type.';
    END IF;
    IF (parent_type IS NULL) <> (parent_column IS NULL) THEN
        RAISE EXCEPTION 'parent_type and parent_column go together' USING ERRCODE = '22023';
    END IF;
    -- An existing ordinary or partitioned table (42P01, 42809), not pg_authz's or a catalog, whose
    -- named columns the caller can read: pg_authz will read them and hand them out as ids.
    PERFORM authz._require_readable_table(tbl::oid, ARRAY[id_column, parent_column, public_column, owner_column]::text[]);
    PERFORM authz._require_column(tbl, id_column, 'id');
    PERFORM authz._require_column(tbl, parent_column, 'parent');
    PERFORM authz._require_column(tbl, public_column, 'public');
    PERFORM authz._require_column(tbl, owner_column, 'owner');
    IF public_column IS NOT NULL AND (SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = public_column) <> 'boolean'::regtype THEN
        RAISE EXCEPTION 'public column "%" must be boolean', public_column USING ERRCODE = '42804';
    END IF;
    IF parent_type IS NOT NULL THEN
        IF NOT EXISTS (SELECT FROM authz.resource_types t WHERE t.name = register_resource_type.parent_type AND t.tbl IS NOT NULL) THEN
            RAISE EXCEPTION 'unknown parent resource type "%"', parent_type USING ERRCODE = '23503';
        END IF;
        WITH RECURSIVE up(n) AS (
            SELECT register_resource_type.parent_type
            UNION
            SELECT t.parent_type FROM authz.resource_types t JOIN up ON t.name = up.n WHERE t.parent_type IS NOT NULL)
        SELECT bool_or(n = name) INTO cycle FROM up;
        IF cycle THEN
            RAISE EXCEPTION 'resource type cycle: % is an ancestor of %', name, parent_type USING ERRCODE = '22023';
        END IF;
    END IF;
    -- On Citus, a table the other nodes do not know yet becomes one they do (a new oid here).
    tbl := authz._known_to_every_node(tbl::pg_catalog.oid)::pg_catalog.regclass;
    INSERT INTO authz.resource_types AS t (name, tbl, id_column, parent_type, parent_column, public_column, owner_column)
    VALUES (name, tbl, id_column, parent_type, parent_column, public_column, owner_column)
    ON CONFLICT ON CONSTRAINT resource_types_pkey DO UPDATE SET tbl = excluded.tbl, id_column = excluded.id_column,
        parent_type = excluded.parent_type, parent_column = excluded.parent_column,
        public_column = excluded.public_column, owner_column = excluded.owner_column;
    -- Rows added to or removed from the resource table change permission sets: invalidate on commit.
    PERFORM authz._watch_table(tbl);
    RETURN name;
END
$$;

CREATE OR REPLACE FUNCTION authz.unregister_resource_type(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE t regclass;
BEGIN
    PERFORM authz._require_manage('resource_types');
    IF EXISTS (SELECT FROM authz.protected p WHERE p.resource_type = name) THEN
        RAISE EXCEPTION 'resource type "%" still protects tables', name USING ERRCODE = '2BP01',
            HINT = 'Run authz.unprotect() on them first.';
    END IF;
    DELETE FROM authz.resource_types r WHERE r.name = unregister_resource_type.name AND r.name <> 'authz' RETURNING r.tbl INTO t;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown resource type "%"', name USING ERRCODE = '22023';
    END IF;
    IF t IS NOT NULL AND NOT EXISTS (SELECT FROM authz.resource_types r WHERE r.tbl = t) THEN
        PERFORM authz._unwatch_table(t);
    END IF;
END
$$;

-- authz.doctor(): what would let rows escape the policies pg_authz installed, and how to fix it.
CREATE OR REPLACE FUNCTION authz.doctor()
RETURNS TABLE (severity text, object text, problem text, fix text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_manage('tables');

    -- Protected tables whose protection is incomplete.
    RETURN QUERY
    SELECT 'error', p.tbl::text, 'row level security is not enabled and forced',
           format('SELECT authz.protect(%L, %L, %L);', p.tbl::text, p.id_column, p.resource_type)
    FROM authz.protected p JOIN pg_class c ON c.oid = p.tbl
    WHERE NOT (c.relrowsecurity AND c.relforcerowsecurity);

    RETURN QUERY
    SELECT 'error', p.tbl::text, 'some pg_authz policies are missing',
           format('SELECT authz.protect(%L, %L, %L);', p.tbl::text, p.id_column, p.resource_type)
    FROM authz.protected p
    WHERE (SELECT count(*) FROM pg_policy WHERE polrelid = p.tbl AND polname IN ('authz_select', 'authz_insert', 'authz_update', 'authz_delete')) < 4;

    -- Permissive policies are OR-ed: any other one lets rows through that pg_authz denies.
    RETURN QUERY
    SELECT 'error', format('%s policy %I', pol.polrelid::regclass, pol.polname),
           'another permissive policy on a protected table widens what pg_authz allows',
           'Make it AS RESTRICTIVE, or drop it.'
    FROM pg_policy pol JOIN authz.protected p ON p.tbl = pol.polrelid
    WHERE pol.polpermissive AND pol.polname NOT IN ('authz_select', 'authz_insert', 'authz_update', 'authz_delete');

    -- A policy asking about a resource type nobody registered fails every query on its table.
    RETURN QUERY
    SELECT DISTINCT 'error', format('%s policy %I', pol.polrelid::regclass, pol.polname),
           format('calls pg_authz for resource type %L, which is not registered', m[1]),
           format('SELECT authz.register_resource_type(%L, ...); or fix the policy.', m[1])
    FROM pg_policy pol,
         LATERAL regexp_matches(coalesce(pg_get_expr(pol.polqual, pol.polrelid), '') || ' ' ||
                                coalesce(pg_get_expr(pol.polwithcheck, pol.polrelid), ''),
                                'authz\.(?:permits|permits_row|check|require|permitted_ids)\([^'']*''((?:[^'']|'''')*)''', 'g') m
    WHERE NOT EXISTS (SELECT FROM authz.resource_types t WHERE t.name = replace(m[1], '''''', ''''));

    -- A new library with the old SQL (or the reverse) works only as far as they agree.
    RETURN QUERY
    SELECT 'warning', 'extension pg_authz',
           format('the installed SQL is version %s but the loaded library is %s', authz.version(), authz.library_version()),
           'ALTER EXTENSION pg_authz UPDATE;'
    WHERE authz.version() IS DISTINCT FROM authz.library_version();

    -- Tokens stay out of pg_stat_statements and the server log only in backends where the library
    -- was loaded before the first statement.
    RETURN QUERY
    SELECT 'warning', 'setting session_preload_libraries',
           'pg_authz is not preloaded: a token in statement text reaches pg_stat_statements and the server log unmasked until something loads the library',
           'ALTER SYSTEM SET session_preload_libraries = ''pg_authz''; SELECT pg_reload_conf(); (new sessions), or add pg_authz to shared_preload_libraries after pg_stat_statements and pgaudit'
    WHERE NOT EXISTS (
        SELECT FROM unnest(string_to_array(current_setting('shared_preload_libraries') || ',' ||
                                           current_setting('session_preload_libraries'), ',')) lib
        WHERE regexp_replace(trim(lib), '^\$libdir/', '') = 'pg_authz');

    -- Hooks run in reverse load order: a statistics or audit library loaded after pg_authz sees
    -- statements before pg_authz masks them.
    RETURN QUERY
    SELECT 'warning', 'setting shared_preload_libraries',
           format('%s is loaded after pg_authz and records statements before pg_authz masks their tokens', l.lib),
           'List pg_authz after pg_stat_statements and pgaudit in shared_preload_libraries (or use session_preload_libraries).'
    FROM (SELECT regexp_replace(trim(lib), '^\$libdir/', '') AS lib, n
          FROM unnest(string_to_array(current_setting('shared_preload_libraries'), ',')) WITH ORDINALITY AS x(lib, n)) l
    WHERE l.lib IN ('pg_stat_statements', 'pgaudit')
      AND l.n > (SELECT min(n) FROM unnest(string_to_array(current_setting('shared_preload_libraries'), ',')) WITH ORDINALITY AS y(lib, n)
                 WHERE regexp_replace(trim(lib), '^\$libdir/', '') = 'pg_authz');

    -- Partitions can be queried directly; each must carry the policies itself.
    RETURN QUERY
    SELECT 'error', i.inhrelid::regclass::text,
           format('%s of protected table %s is not protected',
                  CASE WHEN c.relispartition THEN 'partition' ELSE 'inheritance child' END, i.inhparent::regclass),
           format('SELECT authz.protect(%L, %L, %L);',
                  CASE WHEN c.relispartition THEN p.tbl::text ELSE i.inhrelid::regclass::text END, p.id_column, p.resource_type)
    FROM pg_inherits i JOIN authz.protected p ON p.tbl = i.inhparent JOIN pg_class c ON c.oid = i.inhrelid
    WHERE NOT EXISTS (SELECT FROM authz.protected q WHERE q.tbl = i.inhrelid);

    RETURN QUERY
    SELECT 'warning', p.tbl::text, format('no index leads with column %I: every query scans the table', p.id_column),
           format('CREATE INDEX ON %s (%I);', p.tbl, p.id_column)
    FROM authz.protected p
    WHERE NOT EXISTS (
        SELECT FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
        WHERE x.indrelid = p.tbl AND a.attname = p.id_column)
      AND (SELECT relkind FROM pg_class WHERE oid = p.tbl) = 'r';

    -- Views run with their owner's rights unless security_invoker is set.
    RETURN QUERY
    SELECT DISTINCT 'error', v.oid::regclass::text,
           format('view reads protected table %s with its owner''s rights', d.refobjid::regclass),
           format('ALTER VIEW %s SET (security_invoker = true);', v.oid::regclass)
    FROM pg_rewrite r
    JOIN pg_class v ON v.oid = r.ev_class AND v.relkind = 'v'
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
    JOIN authz.protected p ON p.tbl = d.refobjid
    WHERE NOT coalesce(v.reloptions && ARRAY['security_invoker=true', 'security_invoker=on', 'security_invoker=1'], false);

    -- Materialized views copy rows out from under row level security.
    RETURN QUERY
    SELECT DISTINCT 'error', v.oid::regclass::text,
           format('materialized view holds rows of protected table %s without row level security', d.refobjid::regclass),
           format('DROP MATERIALIZED VIEW %s; (or protect a table built from it)', v.oid::regclass)
    FROM pg_rewrite r
    JOIN pg_class v ON v.oid = r.ev_class AND v.relkind = 'm'
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
    JOIN authz.protected p ON p.tbl = d.refobjid;

    -- Roles that skip row level security entirely.
    RETURN QUERY
    SELECT 'warning', format('role %I', r.rolname),
           CASE WHEN r.rolsuper THEN 'superuser login bypasses row level security' ELSE 'login with BYPASSRLS bypasses row level security' END,
           CASE WHEN r.rolsuper THEN 'Keep applications and analysts off superuser logins.'
                ELSE format('ALTER ROLE %I NOBYPASSRLS;', r.rolname) END
    FROM pg_roles r
    WHERE r.rolcanlogin AND (r.rolsuper OR r.rolbypassrls);

    -- SECURITY DEFINER functions without a pinned search_path can be hijacked.
    RETURN QUERY
    SELECT 'warning', f.oid::regprocedure::text, 'SECURITY DEFINER function without a fixed search_path',
           format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp;', f.oid::regprocedure)
    FROM pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace
    WHERE f.prosecdef
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'authz')
      AND NOT EXISTS (SELECT FROM unnest(coalesce(f.proconfig, '{}')) c WHERE c LIKE 'search\_path=%');

    -- Tables that carry a registered resource's id but are not protected.
    RETURN QUERY
    SELECT DISTINCT 'warning', c.oid::regclass::text,
           format('column %I looks like a %s id but the table is not protected', a.attname, t.name),
           format('SELECT authz.protect(%L, %L, %L);', c.oid::regclass::text, a.attname, t.name)
    FROM authz.resource_types t
    JOIN pg_attribute a ON a.attname IN (t.name || '_id', t.name || 'id') AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p')
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE t.tbl IS NOT NULL
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'authz')
      AND NOT EXISTS (SELECT FROM authz.protected p WHERE p.tbl = c.oid)
      AND NOT EXISTS (SELECT FROM authz.resource_types r WHERE r.tbl = c.oid);
END
$$;

SELECT authz._watch_table(format('authz.%I', t)::regclass)
FROM unnest(ARRAY['principals', 'memberships', 'roles', 'role_inheritance', 'resource_types',
                  'role_assignments', 'rules', 'keys', 'claim_mappings']) t;
SELECT authz._watch_table(t.tbl) FROM authz.resource_types t WHERE t.tbl IS NOT NULL GROUP BY t.tbl;

-- Re-render every protected table's policies with 0.3.0's templates. Partitions follow their root.
SELECT authz.protect(p.tbl, p.id_column, p.resource_type, p.owner_column, p.soft_delete_column)
FROM authz.protected p
WHERE NOT EXISTS (SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid AND c.relispartition
                  JOIN authz.protected q ON q.tbl = i.inhparent WHERE i.inhrelid = p.tbl);

-- Casbin as written (#17): the model enforce() answers with, and what imports created.
CREATE TABLE authz.casbin_model (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model         text NOT NULL,
    resource_type text REFERENCES authz.resource_types (name) ON DELETE CASCADE,
    object_types  text[] NOT NULL DEFAULT '{}',
    imported_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE authz.casbin_imported (
    rule_id       bigint REFERENCES authz.rules (id) ON DELETE CASCADE,
    assignment_id bigint REFERENCES authz.role_assignments (id) ON DELETE CASCADE,
    role          text,
    inherits      text,
    FOREIGN KEY (role, inherits) REFERENCES authz.role_inheritance (role, inherits) ON DELETE CASCADE,
    CHECK (pg_catalog.num_nonnulls(rule_id, assignment_id, inherits) = 1 AND (role IS NULL) = (inherits IS NULL))
);
CREATE INDEX ON authz.casbin_imported (rule_id);
CREATE INDEX ON authz.casbin_imported (assignment_id);
CREATE INDEX ON authz.casbin_imported (role, inherits);
REVOKE ALL ON authz.casbin_model, authz.casbin_imported FROM PUBLIC;
GRANT SELECT ON authz.casbin_model, authz.casbin_imported TO authz_admin;
SELECT pg_catalog.pg_extension_config_dump('authz.casbin_model', '');
SELECT pg_catalog.pg_extension_config_dump('authz.casbin_imported', '');
CREATE TRIGGER authz_audit AFTER INSERT OR UPDATE OR DELETE ON authz.casbin_model
    FOR EACH ROW EXECUTE FUNCTION authz._audit_change();

-- Patterns starting with keyMatch2(, keyMatch3(, globMatch(, regexMatch( or domain( are now
-- Casbin patterns; in 0.2.0 they were literal ids, and stay so with their first character escaped.
UPDATE authz.rules r SET pattern = '\' OPERATOR(pg_catalog.||) r.pattern
WHERE r.pattern OPERATOR(pg_catalog.~) '^(keyMatch2|keyMatch3|globMatch|regexMatch|domain)\(';

-- import_casbin(policy) gains the model, the default resource type and replace; g lines are
-- planned in Rust now.
DROP FUNCTION authz.import_casbin(text);
CREATE FUNCTION authz."import_casbin"(
	"policy" TEXT, /* Option < & str > */
	"model" TEXT DEFAULT NULL, /* Option < & str > */
	"resource_type" TEXT DEFAULT NULL, /* Option < & str > */
	"replace" bool DEFAULT false /* Option < bool > */
) RETURNS INT /* i32 */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_casbin_wrapper';
DROP FUNCTION authz._casbin_group(text, text, boolean);

CREATE FUNCTION authz."enforce"(
	"request" VARIADIC TEXT[] /* VariadicArray < '_, String > */
) RETURNS bool /* bool */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'enforce_wrapper';

-- Citus (authz.distribute()): the key that signs the identity a node vouches for to the others.
-- One row, made by distribute(), never dumped (a restored database is distributed again), and
-- readable by no one but pg_authz's owner.
CREATE TABLE authz.cluster (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    secret         bytea NOT NULL CHECK (pg_catalog.length(secret) >= 32),
    distributed_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON authz.cluster FROM PUBLIC;

CREATE FUNCTION authz."_new_cluster_secret"() RETURNS bytea
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_new_cluster_secret_wrapper';
CREATE FUNCTION authz."_known_to_every_node"("tbl" oid) RETURNS oid
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_known_to_every_node_wrapper';
CREATE FUNCTION authz."_resync_if_distributed"("dropped" oid[], "names" text[]) RETURNS bool
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_resync_if_distributed_wrapper';
CREATE FUNCTION authz."_prepare_registrations_for_cluster"() RETURNS void
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_prepare_registrations_for_cluster_wrapper';
CREATE FUNCTION authz."_resync_registrations"() RETURNS bigint
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_resync_registrations_wrapper';

-- ---------------------------------------------------------------------------------------------
-- Citus
-- ---------------------------------------------------------------------------------------------

SELECT authz._watch_table('authz.cluster');


-- Make pg_authz's state work cluster-wide: its policy tables become Citus reference tables (one
-- copy on every node, changed by two-phase commit, their invalidation and audit triggers firing on
-- every node's copy), a cluster key signs the identity the node a client is connected to vouches
-- for to the others, and tables may carry pg_authz's triggers when Citus distributes them.
-- Idempotent; without Citus a notice and nothing else.
CREATE FUNCTION authz.distribute() RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET client_min_messages = warning
    SET citus.enable_unsafe_triggers = on AS $$
DECLARE
    -- Referenced tables before the tables referencing them.
    tables text[] := ARRAY['principals', 'roles', 'keys', 'resource_types', 'claim_mappings', 'cluster',
                           'memberships', 'role_inheritance', 'role_assignments', 'rules', 'protected',
                           'casbin_model', 'casbin_imported'];
    pending text[];
    fk_tables text[];
    fk_names text[];
    fk_defs text[];
    t text;
    i int;
    registrations bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) CURRENT_USER AND rolsuper) THEN
        RAISE EXCEPTION 'permission denied to distribute pg_authz'
            USING ERRCODE = '42501', DETAIL = 'Converting pg_authz''s tables into Citus reference tables needs a superuser.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE NOTICE 'Citus is not installed in this database: pg_authz stays a single-node install';
        RETURN 'single node: nothing to distribute';
    END IF;
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'authz.distribute() runs on the coordinator'
            USING ERRCODE = '55000', HINT = 'Connect to the coordinator and call it there; it reaches every node.';
    END IF;

    pending := ARRAY(SELECT u FROM pg_catalog.unnest(tables) WITH ORDINALITY AS x(u, n)
                     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p
                                       WHERE p.logicalrelid OPERATOR(pg_catalog.=) pg_catalog.format('authz.%I', u)::pg_catalog.regclass)
                     ORDER BY n);
    IF pg_catalog.cardinality(pending) OPERATOR(pg_catalog.>) 0 THEN
        INSERT INTO authz.cluster (secret) VALUES (authz._new_cluster_secret()) ON CONFLICT (singleton) DO NOTHING;
        -- Foreign keys between pg_authz's tables are dropped while the tables are converted one by
        -- one (Citus would convert a referencing table's neighbours itself, and collide with the
        -- copies the workers' own CREATE EXTENSION made), then made again between reference tables.
        SELECT pg_catalog.array_agg(c.conrelid::pg_catalog.regclass::pg_catalog.text ORDER BY c.oid),
               pg_catalog.array_agg(c.conname::pg_catalog.text ORDER BY c.oid),
               pg_catalog.array_agg(pg_catalog.pg_get_constraintdef(c.oid) ORDER BY c.oid)
          INTO fk_tables, fk_names, fk_defs
          FROM pg_catalog.pg_constraint c
         WHERE c.connamespace OPERATOR(pg_catalog.=) 'authz'::pg_catalog.regnamespace AND c.contype OPERATOR(pg_catalog.=) 'f';
        -- Tables registered before: the other nodes must know them to resolve the registrations.
        PERFORM authz._prepare_registrations_for_cluster();
        FOR i IN 1 .. coalesce(pg_catalog.cardinality(fk_names), 0) LOOP
            EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', fk_tables[i], fk_names[i]);
        END LOOP;
        FOREACH t IN ARRAY pending LOOP
            PERFORM pg_catalog.create_reference_table(pg_catalog.format('authz.%I', t)::pg_catalog.regclass);
            PERFORM pg_catalog.truncate_local_data_after_distributing_table(pg_catalog.format('authz.%I', t)::pg_catalog.regclass);
        END LOOP;
        FOR i IN 1 .. coalesce(pg_catalog.cardinality(fk_names), 0) LOOP
            -- The workers' copies still have theirs: Citus relays the DROP to them, then the ADD.
            EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', fk_tables[i], fk_names[i]);
            EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', fk_tables[i], fk_names[i], fk_defs[i]);
        END LOOP;
    END IF;
    -- Every node's copy of the registrations names its own oids (also repairs a node Citus copied
    -- pg_authz's tables to later, in binary: run distribute() again after citus_add_node()).
    registrations := authz._resync_registrations();
    -- Registered and protected tables carry pg_authz's triggers (invalidation, soft delete): Citus
    -- distributes such tables, and creates such triggers on them, only with this setting.
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET citus.enable_unsafe_triggers = on', pg_catalog.current_database());
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', false);
    RETURN pg_catalog.format('distributed: %s of pg_authz''s %s tables converted to reference tables now, %s registrations written',
                             coalesce(pg_catalog.cardinality(pending), 0), pg_catalog.cardinality(tables), registrations);
END
$$;
REVOKE ALL ON FUNCTION authz.distribute() FROM PUBLIC;
-- Its helpers (and the drop trigger's) act with pg_authz's rights: never callable directly.
REVOKE ALL ON FUNCTION authz._new_cluster_secret(), authz._known_to_every_node(oid),
    authz._resync_if_distributed(oid[], text[]), authz._prepare_registrations_for_cluster(),
    authz._resync_registrations() FROM PUBLIC;
