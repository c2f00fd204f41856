-- authz.doctor(): what would let rows escape the policies pg_authz installed, and how to fix it.
CREATE FUNCTION authz.doctor()
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
