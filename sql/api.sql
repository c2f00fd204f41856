-- pg_authz management API: thin SECURITY DEFINER wrappers over the policy tables. Each one asks
-- authz._require_manage() first (42501 before any argument is looked at), then validates, then
-- writes. search_path is pinned so a caller's objects can never be picked up.

-- Cache invalidation: any committed change to a policy table or a registered resource table
-- reaches every backend's caches. A row trigger, so that only rows that really changed count.
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

SELECT authz._watch_table(format('authz.%I', t)::regclass)
FROM unnest(ARRAY['principals', 'memberships', 'roles', 'role_inheritance', 'resource_types',
                  'role_assignments', 'rules', 'keys', 'claim_mappings']) t;

-- Audit of policy changes: rows written only here, never key material.
-- Only the policy tables' owner can write them, directly or through the SECURITY DEFINER API, so
-- the trigger needs no rights of its own; it is not SECURITY DEFINER, and it can therefore see the
-- writer's settings. A restore (pg_restore, or psql running a pg_dump script) loads the policy
-- tables — with COPY or INSERTs — under pg_dump's empty search_path, which the API never runs
-- under (it pins its own), so no caller can make a change of its own look like a restore: the
-- restored rows were audited when they were first made, the restored audit table already holds
-- them, and a restore writes no audit rows of its own. Every name is qualified.
CREATE FUNCTION authz._audit_change() RETURNS trigger
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

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['principals', 'memberships', 'roles', 'role_inheritance', 'resource_types',
                             'role_assignments', 'rules', 'keys', 'protected', 'claim_mappings', 'casbin_model'] LOOP
        EXECUTE format('CREATE TRIGGER authz_audit AFTER INSERT OR UPDATE OR DELETE ON authz.%I
                        FOR EACH ROW EXECUTE FUNCTION authz._audit_change()', t);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Principals and groups
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION authz.create_principal(id text, kind text DEFAULT 'user', db_role name DEFAULT NULL)
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

CREATE FUNCTION authz.map_login(principal text, db_role name)
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

CREATE FUNCTION authz.drop_principal(id text)
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

CREATE FUNCTION authz._require_principal(id text, expected_kind text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE k text;
BEGIN
    SELECT p.kind INTO k FROM authz.principals p WHERE p.id = _require_principal.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'principal "%" does not exist', id USING ERRCODE = '23503',
            HINT = 'Create it with authz.create_principal().';
    END IF;
    IF expected_kind IS NOT NULL AND k <> expected_kind THEN
        RAISE EXCEPTION 'principal "%" is a %, not a %', id, k, expected_kind USING ERRCODE = '22023';
    END IF;
END
$$;

CREATE FUNCTION authz.add_member(group_id text, member_id text)
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

CREATE FUNCTION authz.remove_member(group_id text, member_id text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_manage('principals');
    PERFORM authz._require_may_remove('principal', remove_member.group_id);
    DELETE FROM authz.memberships m WHERE m.group_id = remove_member.group_id AND m.member_id = remove_member.member_id;
    RETURN FOUND;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Roles
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION authz._require_role(name text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM authz.roles r WHERE r.name = _require_role.name) THEN
        RAISE EXCEPTION 'role "%" does not exist', name USING ERRCODE = '23503',
            HINT = 'Create it with authz.create_role().';
    END IF;
END
$$;

CREATE FUNCTION authz.add_inheritance(role text, inherits text)
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

CREATE FUNCTION authz.remove_inheritance(role text, inherits text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_manage('roles');
    PERFORM authz._require_may_remove('role', remove_inheritance.inherits);
    DELETE FROM authz.role_inheritance i WHERE i.role = remove_inheritance.role AND i.inherits = remove_inheritance.inherits;
    RETURN FOUND;
END
$$;

CREATE FUNCTION authz.create_role(name text, inherits text[] DEFAULT '{}')
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE parent text;
BEGIN
    PERFORM authz._require_manage('roles');
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'role name must not be empty' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT FROM authz.roles r WHERE r.name = create_role.name) THEN
        RAISE EXCEPTION 'role "%" already exists', name USING ERRCODE = '42710';
    END IF;
    INSERT INTO authz.roles (name) VALUES (name);
    FOREACH parent IN ARRAY coalesce(inherits, '{}') LOOP
        PERFORM authz.add_inheritance(name, parent);
    END LOOP;
    RETURN name;
END
$$;

CREATE FUNCTION authz._ensure_role(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_manage('roles');
    INSERT INTO authz.roles (name) VALUES (name) ON CONFLICT DO NOTHING;
END
$$;

CREATE FUNCTION authz.drop_role(name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._require_manage('roles');
    IF EXISTS (SELECT FROM authz.roles r WHERE r.name = drop_role.name AND r.builtin) THEN
        RAISE EXCEPTION 'role "%" is built in and cannot be dropped', name USING ERRCODE = '42501';
    END IF;
    DELETE FROM authz.roles r WHERE r.name = drop_role.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" does not exist', name USING ERRCODE = '23503';
    END IF;
END
$$;

CREATE FUNCTION authz._require_scope(resource_type text, resource_id text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (resource_type IS NULL) <> (resource_id IS NULL) THEN
        RAISE EXCEPTION 'a scoped assignment needs both resource_type and resource_id' USING ERRCODE = '22023';
    END IF;
    IF resource_type IS NOT NULL AND NOT EXISTS (SELECT FROM authz.resource_types t WHERE t.name = resource_type) THEN
        RAISE EXCEPTION 'unknown resource type "%"', resource_type USING ERRCODE = '22023',
            HINT = 'Register it with authz.register_resource_type().';
    END IF;
END
$$;

CREATE FUNCTION authz.assign_role(principal text, role text, resource_type text DEFAULT NULL, resource_id text DEFAULT NULL)
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

CREATE FUNCTION authz.unassign_role(principal text, role text, resource_type text DEFAULT NULL, resource_id text DEFAULT NULL)
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

-- ---------------------------------------------------------------------------------------------
-- Roles and groups from token claims
-- ---------------------------------------------------------------------------------------------

-- The values of a verified token's claim (a string or an array of strings at a dotted path) name
-- roles (kind 'role') or group principals (kind 'group') its subject holds for the token's life.
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

-- ---------------------------------------------------------------------------------------------
-- Rules
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION authz._add_rule(role text, resource_type text, pattern text, action text, effect text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE rule_id bigint;
BEGIN
    PERFORM authz._require_manage('rules');
    PERFORM authz._require_role(role);
    IF resource_type IS NULL THEN
        RAISE EXCEPTION 'resource_type must not be NULL' USING ERRCODE = '22023';
    END IF;
    PERFORM authz._require_scope(resource_type, '');
    PERFORM authz._validate_pattern(pattern);
    IF action IS NULL OR action = '' OR action ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid action' USING ERRCODE = '22023', DETAIL = 'An action is a non-empty name, or *.';
    END IF;
    INSERT INTO authz.rules (role, resource_type, pattern, action, effect)
    VALUES (role, resource_type, pattern, action, effect)
    ON CONFLICT ON CONSTRAINT rules_role_resource_type_pattern_action_effect_key DO NOTHING
    RETURNING id INTO rule_id;
    IF rule_id IS NULL THEN
        SELECT r.id INTO rule_id FROM authz.rules r
        WHERE (r.role, r.resource_type, r.pattern, r.action, r.effect) = (_add_rule.role, _add_rule.resource_type, _add_rule.pattern, _add_rule.action, _add_rule.effect);
    END IF;
    RETURN rule_id;
END
$$;

CREATE FUNCTION authz.allow(role text, resource_type text, pattern text, action text)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT authz._add_rule(role, resource_type, pattern, action, 'allow') $$;

CREATE FUNCTION authz.deny(role text, resource_type text, pattern text, action text)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT authz._add_rule(role, resource_type, pattern, action, 'deny') $$;

CREATE FUNCTION authz.remove_rule(role text, resource_type text, pattern text, action text)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n integer;
BEGIN
    PERFORM authz._require_manage('rules');
    DELETE FROM authz.rules r
    WHERE (r.role, r.resource_type, r.pattern, r.action) = (remove_rule.role, remove_rule.resource_type, remove_rule.pattern, remove_rule.action);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Resource types
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION authz._require_column(tbl regclass, col name, what text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF col IS NOT NULL AND NOT EXISTS (
        SELECT FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped) THEN
        RAISE EXCEPTION '% column "%" does not exist in table %', what, col, tbl USING ERRCODE = '42703';
    END IF;
END
$$;

-- With a table: its ids are listed from it (and row-level security can protect tables by them).
-- Without one (just a name): a virtual type whose ids are free strings — API routes, file paths,
-- Casbin objects — answered by check(), require() and explain(), never listed.
CREATE FUNCTION authz.register_resource_type(name text, tbl regclass DEFAULT NULL, id_column name DEFAULT NULL,
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

CREATE FUNCTION authz.unregister_resource_type(name text)
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

REVOKE ALL ON FUNCTION authz._audit_change(), authz._require_principal(text, text), authz._require_role(text),
    authz._require_scope(text, text), authz._require_column(regclass, name, text),
    authz._ensure_role(text), authz._add_rule(text, text, text, text, text) FROM PUBLIC;

-- The delegation checks describe what other principals hold: only the API (running as the
-- extension owner, judging the real caller) asks them.
REVOKE ALL ON FUNCTION authz._require_may_confer(text, text, text), authz._require_may_confer_principal(text),
    authz._require_may_map_login(text, text), authz._require_may_remove(text, text),
    authz._require_readable_table(oid, text[]) FROM PUBLIC;

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
