-- pg_authz row-level security for {{table}}: column {{column}} holds {{resource_type}} ids.
-- Rendered by authz.protect_sql(); every identifier is quoted and every value is a literal.
-- FORCE confines the table owner too; only superusers and BYPASSRLS roles are exempt.
ALTER TABLE {{table}} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{table}} FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS authz_select ON {{table}};
DROP POLICY IF EXISTS authz_insert ON {{table}};
DROP POLICY IF EXISTS authz_update ON {{table}};
DROP POLICY IF EXISTS authz_delete ON {{table}};
CREATE POLICY authz_select ON {{table}} FOR SELECT TO PUBLIC
    USING ({{read}});
CREATE POLICY authz_insert ON {{table}} FOR INSERT TO PUBLIC
    WITH CHECK ({{insert}});
CREATE POLICY authz_update ON {{table}} FOR UPDATE TO PUBLIC
    USING ({{update_old}})
    WITH CHECK ({{update_new}});
CREATE POLICY authz_delete ON {{table}} FOR DELETE TO PUBLIC
    USING ({{delete}});
DROP TRIGGER IF EXISTS authz_soft_delete ON {{table}};
