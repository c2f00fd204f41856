-- Remove what authz.protect() installed on {{table}}; other policies are left alone.
DROP POLICY IF EXISTS authz_select ON {{table}};
DROP POLICY IF EXISTS authz_insert ON {{table}};
DROP POLICY IF EXISTS authz_update ON {{table}};
DROP POLICY IF EXISTS authz_delete ON {{table}};
DROP TRIGGER IF EXISTS authz_soft_delete ON {{table}};
