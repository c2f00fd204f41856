-- The row-level security authz.protect() installs on one table (rendered by authz.protect_sql()).
-- Each statement below is run on its own; {{table}} and {{column}} are quoted identifiers and every
-- other value is a literal or one of pg_authz's own fully qualified expressions. FORCE confines the
-- table owner too; only superusers and BYPASSRLS roles are exempt.
ALTER TABLE {{table}} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{table}} FORCE ROW LEVEL SECURITY;
CREATE POLICY authz_select ON {{table}} FOR SELECT TO PUBLIC
    USING ({{read}});
CREATE POLICY authz_insert ON {{table}} FOR INSERT TO PUBLIC
    WITH CHECK ({{insert}});
CREATE POLICY authz_update ON {{table}} FOR UPDATE TO PUBLIC
    USING ({{update_old}})
    WITH CHECK ({{update_new}});
CREATE POLICY authz_delete ON {{table}} FOR DELETE TO PUBLIC
    USING ({{delete}});
