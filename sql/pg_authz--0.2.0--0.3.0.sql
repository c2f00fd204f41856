-- pg_authz 0.2.0 -> 0.3.0: the privilege boundary (issue #13). Policy data (principals, roles,
-- rules, keys, protected tables, audit) is untouched. This replaces the functions whose bodies
-- changed, turns the cache-invalidation triggers into row triggers, and re-renders the policies
-- of every protected table with the 0.3.0 templates (fully qualified operators and casts).
\echo Use "ALTER EXTENSION pg_authz UPDATE TO '0.3.0'" to load this file. \quit

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
BEGIN
    DELETE FROM authz.protected
    WHERE tbl::pg_catalog.oid OPERATOR(pg_catalog.=) ANY (ARRAY(
        SELECT objid FROM pg_catalog.pg_event_trigger_dropped_objects() WHERE object_type OPERATOR(pg_catalog.=) 'table'));
END
$$;

-- Row-level invalidation: only rows that really changed reach other backends' caches.
CREATE FUNCTION authz._watch_table(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid OPERATOR(pg_catalog.=) tbl AND g.tgname OPERATOR(pg_catalog.=) 'authz_invalidate') THEN
        EXECUTE format('DROP TRIGGER authz_invalidate ON %s', tbl);
    END IF;
    IF EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid OPERATOR(pg_catalog.=) tbl AND g.tgname OPERATOR(pg_catalog.=) 'authz_invalidate_truncate') THEN
        EXECUTE format('DROP TRIGGER authz_invalidate_truncate ON %s', tbl);
    END IF;
    EXECUTE format('CREATE TRIGGER authz_invalidate AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION authz.invalidate_caches()', tbl);
    EXECUTE format('CREATE TRIGGER authz_invalidate_truncate AFTER TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION authz.invalidate_caches()', tbl);
END
$$;
REVOKE ALL ON FUNCTION authz._watch_table(regclass) FROM PUBLIC;

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
BEGIN
    PERFORM authz._require_manage('principals');
    PERFORM authz._require_principal(principal);
    PERFORM authz._require_role(role);
    PERFORM authz._require_scope(resource_type, resource_id);
    PERFORM authz._require_may_confer(role, resource_type, resource_id);
    INSERT INTO authz.role_assignments (principal, role, resource_type, resource_id)
    VALUES (principal, role, resource_type, resource_id) ON CONFLICT DO NOTHING;
END
$$;

CREATE OR REPLACE FUNCTION authz.register_resource_type(name text, tbl regclass, id_column name,
    parent_type text DEFAULT NULL, parent_column name DEFAULT NULL,
    public_column name DEFAULT NULL, owner_column name DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
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
    IF tbl IS NULL OR id_column IS NULL THEN
        RAISE EXCEPTION 'a resource type needs a table and an id column' USING ERRCODE = '22023';
    END IF;
    IF (parent_type IS NULL) <> (parent_column IS NULL) THEN
        RAISE EXCEPTION 'parent_type and parent_column go together' USING ERRCODE = '22023';
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = tbl) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tbl USING ERRCODE = '42809',
            DETAIL = 'A resource type lists its ids in an ordinary or partitioned table, read as that table''s owner.';
    END IF;
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
        EXECUTE format('DROP TRIGGER IF EXISTS authz_invalidate ON %s', t);
        EXECUTE format('DROP TRIGGER IF EXISTS authz_invalidate_truncate ON %s', t);
    END IF;
END
$$;

SELECT authz._watch_table(format('authz.%I', t)::regclass)
FROM unnest(ARRAY['principals', 'memberships', 'roles', 'role_inheritance', 'resource_types',
                  'role_assignments', 'rules', 'keys']) t;
SELECT authz._watch_table(t.tbl) FROM authz.resource_types t WHERE t.tbl IS NOT NULL;

-- Re-render every protected table's policies with 0.3.0's templates. Partitions follow their root.
SELECT authz.protect(p.tbl, p.id_column, p.resource_type, p.owner_column, p.soft_delete_column)
FROM authz.protected p
WHERE NOT EXISTS (SELECT FROM pg_inherits i JOIN authz.protected q ON q.tbl = i.inhparent WHERE i.inhrelid = p.tbl);
