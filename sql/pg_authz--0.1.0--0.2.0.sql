-- pg_authz 0.1.0 -> 0.2.0. Policy data (principals, roles, rules, keys, protected tables, audit)
-- is untouched; this adds what 0.2.0 introduced and re-renders the policies of protected tables.
\echo Use "ALTER EXTENSION pg_authz UPDATE TO '0.2.0'" to load this file. \quit

-- Validate a token without adopting it.
CREATE FUNCTION "verify_token"(
	"token" TEXT
) RETURNS TEXT
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'verify_token_wrapper';

-- Empty this backend's caches (measurement, memory).
CREATE FUNCTION "flush_caches"(
	"sets_only" bool DEFAULT false
) RETURNS void
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'flush_caches_wrapper';

-- Row check for tables protected by their own id: new rows are judged by the parent they name.
CREATE FUNCTION "permits_row"(
	"resource_type" TEXT,
	"id" TEXT,
	"parent_id" TEXT,
	"action" TEXT,
	"unstored_only" bool DEFAULT false
) RETURNS bool
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'permits_row_wrapper';

-- Partitions created or attached after authz.protect() are protected in the same statement.
CREATE FUNCTION "_protect_new_partitions"() RETURNS INT
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', '_protect_new_partitions_wrapper';

CREATE FUNCTION authz._on_ddl_protect_partitions() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM authz.protected p, pg_partition_tree(p.tbl) t
               WHERE t.relid <> p.tbl AND NOT EXISTS (SELECT FROM authz.protected q WHERE q.tbl = t.relid)) THEN
        PERFORM authz._protect_new_partitions();
    END IF;
END
$$;
CREATE EVENT TRIGGER authz_protect_partitions ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE') EXECUTE FUNCTION authz._on_ddl_protect_partitions();

-- A dropped table is no longer protected: forget it.
CREATE FUNCTION authz._on_drop_forget_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM authz.protected
    WHERE tbl::oid IN (SELECT objid FROM pg_event_trigger_dropped_objects() WHERE object_type = 'table');
END
$$;
CREATE EVENT TRIGGER authz_forget_dropped_tables ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED') EXECUTE FUNCTION authz._on_drop_forget_tables();
REVOKE ALL ON FUNCTION authz._on_ddl_protect_partitions(), authz._on_drop_forget_tables(),
    authz._protect_new_partitions() FROM PUBLIC;

-- Forget tables that were dropped while 0.1.0 was installed.
DELETE FROM authz.protected WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = tbl::oid);

-- Re-render every protected table's policies with 0.2.0's templates (a table protected by its own
-- id now judges INSERT and UPDATE by the parent the new row names). Partitions follow their root.
SELECT authz.protect(p.tbl, p.id_column, p.resource_type, p.owner_column, p.soft_delete_column)
FROM authz.protected p
WHERE NOT EXISTS (SELECT FROM pg_inherits i JOIN authz.protected q ON q.tbl = i.inhparent WHERE i.inhrelid = p.tbl);
