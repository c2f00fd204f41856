-- Soft delete: a DELETE of a live row marks it deleted instead (the trigger updates exactly that
-- row, as the table's owner); deleting an already deleted row, which needs purge, removes it.
-- Created on the root table only: PostgreSQL clones it onto every partition.
CREATE TRIGGER authz_soft_delete BEFORE DELETE ON {{table}} FOR EACH ROW
    EXECUTE FUNCTION authz._soft_delete({{soft_delete_column_literal}}, {{soft_delete_kind}});
