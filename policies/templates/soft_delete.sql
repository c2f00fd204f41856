-- Soft delete: a DELETE of a live row marks it deleted instead; deleting an already deleted row
-- (which needs the purge permission) removes it for good.
CREATE TRIGGER authz_soft_delete BEFORE DELETE ON {{table}} FOR EACH ROW
    EXECUTE FUNCTION authz._soft_delete({{soft_delete_column_literal}}, {{soft_delete_kind}});
