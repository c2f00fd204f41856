//! `authz.protect()`: render the policy templates in policies/templates/ for one table and install
//! them. The predicates call `authz.permits(col, type, action)` — resolved once per statement, an
//! index condition where an index helps — and never a per-row subquery or array scan.

use pgrx::prelude::*;
use pgrx::PgRelation;

use crate::db::{self, quote_ident, quote_literal};
use crate::errors::{AuthzError, AuthzResult, OrRaise};
use crate::{model, policy, resolve};

const PROTECT_TEMPLATE: &str = include_str!("../policies/templates/protect.sql");
const SOFT_DELETE_TEMPLATE: &str = include_str!("../policies/templates/soft_delete.sql");
const UNPROTECT_TEMPLATE: &str = include_str!("../policies/templates/unprotect.sql");

fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("{{{{{name}}}}}", name = name), value);
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum SoftDeleteKind {
    Flag,
    Timestamp,
}

struct ColumnInfo {
    type_oid: pg_sys::Oid,
}

fn column(table: pg_sys::Oid, name: &str, what: &str) -> AuthzResult<ColumnInfo> {
    let type_oid = db::select_one::<pg_sys::Oid>(
        "SELECT atttypid FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2::name AND attnum > 0 AND NOT attisdropped",
        &[table.into(), name.into()],
    )?;
    match type_oid {
        Some(type_oid) => Ok(ColumnInfo { type_oid }),
        None => Err(AuthzError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!(
                "{what} column \"{}\" does not exist in table {}",
                crate::keys::printable(name, 64),
                db::qualified_name(table)?
            ),
        )),
    }
}

struct Plan {
    table: pg_sys::Oid,
    sql: String,
}

/// Validate the arguments and render the SQL for the table and each of its partitions.
fn plan(
    table: pg_sys::Oid,
    id_column: &str,
    resource_type: &str,
    owner_column: Option<&str>,
    soft_delete_column: Option<&str>,
) -> AuthzResult<Vec<Plan>> {
    let model = model::current()?;
    let rt = model.resource_type(resource_type)?;
    if rt.table.is_none() {
        return Err(AuthzError::invalid(format!("resource type \"{resource_type}\" has no table"))
            .hint("Register it over the table that lists its ids with authz.register_resource_type()."));
    }
    let id_type = column(table, id_column, "id")?.type_oid;
    if ![pg_sys::INT8OID, pg_sys::INT4OID, pg_sys::UUIDOID, pg_sys::TEXTOID, pg_sys::VARCHAROID].contains(&id_type) {
        return Err(AuthzError::new(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("column \"{}\" has a type pg_authz cannot protect", crate::keys::printable(id_column, 64)),
        )
        .hint("Supported id types: bigint, integer, uuid, text, varchar."));
    }
    let owner_is_text = match owner_column {
        Some(c) => {
            let t = column(table, c, "owner")?.type_oid;
            t == pg_sys::TEXTOID || t == pg_sys::VARCHAROID
        }
        None => true,
    };
    let soft = match soft_delete_column {
        Some(c) => match column(table, c, "soft delete")?.type_oid {
            pg_sys::BOOLOID => Some((c, SoftDeleteKind::Flag)),
            pg_sys::TIMESTAMPTZOID | pg_sys::TIMESTAMPOID => Some((c, SoftDeleteKind::Timestamp)),
            _ => {
                return Err(AuthzError::new(
                    PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                    format!("soft delete column \"{}\" must be boolean or a timestamp", crate::keys::printable(c, 64)),
                ))
            }
        },
        None => None,
    };

    let col = quote_ident(id_column);
    let rt_lit = quote_literal(resource_type);
    let permits = |action: &str| format!("authz.permits({col}, {rt_lit}, {})", quote_literal(action));
    let owned = owner_column.map(|c| {
        let c = quote_ident(c);
        if owner_is_text {
            format!("{c} = (SELECT authz.user_id())")
        } else {
            format!("{c}::text = (SELECT authz.user_id())")
        }
    });
    // A table protected by its own id (the resource table itself) checks a new or updated row
    // against the parent it names, not against what is stored: otherwise a new id could never be
    // inserted and a row could be moved under a parent the caller may not write.
    let self_protected = rt.table == Some(table) && rt.id_column.as_deref() == Some(id_column);
    let parent_expr = match (&rt.parent_column, self_protected) {
        (Some(p), true) => format!("{}::text", quote_ident(p)),
        _ => "NULL".to_string(),
    };
    let permits_new = |action: &str| {
        if self_protected {
            format!("authz.permits_row({rt_lit}, {col}::text, {parent_expr}, {})", quote_literal(action))
        } else {
            permits(action)
        }
    };
    let either_with = |check: &dyn Fn(&str) -> String, full: &str, own: &str| match &owned {
        Some(o) => format!("({} OR ({} AND {o}))", check(full), check(own)),
        None => check(full),
    };
    let either = |full: &str, own: &str| either_with(&permits, full, own);
    let (live, deleted) = match soft {
        Some((c, SoftDeleteKind::Flag)) => {
            (format!("{} IS NOT TRUE", quote_ident(c)), format!("{} IS TRUE", quote_ident(c)))
        }
        Some((c, SoftDeleteKind::Timestamp)) => {
            (format!("{} IS NULL", quote_ident(c)), format!("{} IS NOT NULL", quote_ident(c)))
        }
        None => (String::new(), String::new()),
    };
    let write = either("write", "write_own");
    let write_new = either_with(&permits_new, "write", "write_own");
    let delete = either("delete", "delete_own");
    // Rows this very statement inserted are not in the cached id set yet; for the resource table
    // itself (INSERT … RETURNING needs the read policy) they are checked by the parent they name.
    let readable = if self_protected {
        format!(
            "(authz.permits({col}, {rt_lit}, 'read') OR authz.permits_row({rt_lit}, {col}::text, {parent_expr}, 'read', true))"
        )
    } else {
        permits("read")
    };
    let (read, update_old, update_new, delete_pred) = if soft.is_some() {
        (
            format!("{readable} AND ({live} OR {})", permits("restore")),
            format!("{write} AND ({live} OR {})", permits("restore")),
            format!("{write_new} AND ({live} OR {delete})"),
            format!("({live} AND {delete}) OR ({deleted} AND {})", permits("purge")),
        )
    } else {
        (readable, write.clone(), write_new.clone(), delete)
    };

    let mut targets = vec![table];
    for row in Spi::connect(|client| {
        client
            .select(
                "SELECT relid FROM pg_catalog.pg_partition_tree($1) WHERE relid <> $1 AND isleaf IS NOT NULL",
                None,
                &[table.into()],
            )?
            .map(|r| r.get::<pg_sys::Oid>(1))
            .collect::<Result<Vec<_>, _>>()
    })? {
        targets.extend(row);
    }
    let mut plans = Vec::new();
    for t in targets {
        let name = db::qualified_name(t)?;
        let mut vars = vec![
            ("table", name.as_str()),
            ("column", col.as_str()),
            ("resource_type", rt_lit.as_str()),
            ("read", read.as_str()),
            ("insert", write_new.as_str()),
            ("update_old", update_old.as_str()),
            ("update_new", update_new.as_str()),
            ("delete", delete_pred.as_str()),
        ];
        let mut sql = render(PROTECT_TEMPLATE, &vars);
        if let Some((c, kind)) = soft {
            let lit = quote_literal(c);
            let kind_lit = if kind == SoftDeleteKind::Flag { "'flag'" } else { "'timestamp'" };
            vars.push(("soft_delete_column_literal", lit.as_str()));
            vars.push(("soft_delete_kind", kind_lit));
            sql.push_str(&render(SOFT_DELETE_TEMPLATE, &vars));
        }
        plans.push(Plan { table: t, sql });
    }
    Ok(plans)
}

fn require_owner(table: pg_sys::Oid) -> AuthzResult<()> {
    let caller = db::outer_user();
    let owns = Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.pg_has_role($1, c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid = $2",
        &[caller.into(), table.into()],
    )?;
    if owns == Some(true) || db::is_superuser(caller) {
        Ok(())
    } else {
        Err(AuthzError::privilege(format!("must be owner of table {}", db::qualified_name(table)?)))
    }
}

fn has_leading_index(table: pg_sys::Oid, column_name: &str) -> AuthzResult<bool> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
                 ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = $1 AND a.attname = $2::name)",
        &[table.into(), column_name.into()],
    )?
    .unwrap_or(false))
}

/// The exact SQL authz.protect() would run, for review.
#[pg_extern(stable)]
fn protect_sql(
    relation: PgRelation,
    id_column: &str,
    resource_type: &str,
    owner_column: default!(Option<&str>, "NULL"),
    soft_delete_column: default!(Option<&str>, "NULL"),
) -> String {
    let tbl = relation.oid();
    drop(relation); // an open relation would block the ALTER TABLEs below
    plan(tbl, id_column, resource_type, owner_column, soft_delete_column)
        .or_raise()
        .into_iter()
        .map(|p| p.sql)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Make PostgreSQL confine every client to its permitted rows of `tbl` (and its partitions).
/// Idempotent: re-running replaces pg_authz's policies and leaves other policies alone.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn protect(
    relation: PgRelation,
    id_column: &str,
    resource_type: &str,
    owner_column: default!(Option<&str>, "NULL"),
    soft_delete_column: default!(Option<&str>, "NULL"),
) -> String {
    let tbl = relation.oid();
    drop(relation); // an open relation would block the ALTER TABLEs below
    policy::require_manage("tables").or_raise();
    require_owner(tbl).or_raise();
    let installed = install(tbl, id_column, resource_type, owner_column, soft_delete_column).or_raise();
    let name = db::qualified_name(tbl).or_raise();
    if !has_leading_index(tbl, id_column).or_raise() {
        pgrx::warning!(
            "{name} has no index on \"{id_column}\": every protected query will scan the whole table (CREATE INDEX ON {name} ({}))",
            quote_ident(id_column)
        );
    }
    format!("protected {name} ({installed} table{})", if installed == 1 { "" } else { "s" })
}

thread_local! {
    /// Set while pg_authz itself runs DDL, so the partition event trigger does not re-enter.
    static INSTALLING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run the rendered SQL on the table and its partitions and record them; no privilege checks here.
fn install(
    tbl: pg_sys::Oid,
    id_column: &str,
    resource_type: &str,
    owner_column: Option<&str>,
    soft_delete_column: Option<&str>,
) -> AuthzResult<usize> {
    let plans = plan(tbl, id_column, resource_type, owner_column, soft_delete_column)?;
    let was = INSTALLING.with(|f| f.replace(true));
    let result = (|| {
        for p in &plans {
            Spi::run(&p.sql)?;
        }
        Spi::run_with_args(
            "INSERT INTO authz.protected (tbl, id_column, resource_type, owner_column, soft_delete_column)
             SELECT t, $2, $3, $4, $5 FROM unnest($1::oid[]) t
             ON CONFLICT (tbl) DO UPDATE SET id_column = excluded.id_column, resource_type = excluded.resource_type,
                 owner_column = excluded.owner_column, soft_delete_column = excluded.soft_delete_column, protected_at = now()",
            &[
                plans.iter().map(|p| p.table).collect::<Vec<_>>().into(),
                id_column.into(),
                resource_type.into(),
                owner_column.into(),
                soft_delete_column.into(),
            ],
        )
    })();
    INSTALLING.with(|f| f.set(was));
    result?;
    Ok(plans.len())
}

/// Called by the `authz_protect_partitions` event trigger after CREATE/ALTER TABLE: a partition
/// created or attached under a protected table gets the same policies in the same statement, so
/// it can never be queried directly unprotected. Returns how many parents were re-applied.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn _protect_new_partitions() -> i32 {
    if INSTALLING.with(|f| f.get()) {
        return 0;
    }
    let parents = Spi::connect(|client| {
        client
            .select(
                "SELECT DISTINCT p.tbl::oid, p.id_column::text, p.resource_type, p.owner_column::text, p.soft_delete_column::text
                 FROM authz.protected p, pg_partition_tree(p.tbl) t
                 WHERE t.relid <> p.tbl AND NOT EXISTS (SELECT FROM authz.protected q WHERE q.tbl = t.relid)
                   AND NOT EXISTS (SELECT FROM pg_inherits i JOIN authz.protected pp ON pp.tbl = i.inhparent
                                   WHERE i.inhrelid = p.tbl)",
                None,
                &[],
            )?
            .map(|r| {
                Ok::<_, pgrx::spi::SpiError>((
                    r.get::<pg_sys::Oid>(1)?,
                    r.get::<String>(2)?,
                    r.get::<String>(3)?,
                    r.get::<String>(4)?,
                    r.get::<String>(5)?,
                ))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(AuthzError::from)
    .or_raise();
    let mut n = 0;
    for (tbl, id_column, resource_type, owner, soft) in parents {
        let (Some(tbl), Some(id_column), Some(resource_type)) = (tbl, id_column, resource_type) else { continue };
        install(tbl, &id_column, &resource_type, owner.as_deref(), soft.as_deref()).or_raise();
        n += 1;
    }
    n
}

/// Undo authz.protect(): drop pg_authz's policies and trigger; disable row-level security only
/// where no other policy remains.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn unprotect(relation: PgRelation) -> bool {
    let tbl = relation.oid();
    drop(relation); // an open relation would block the ALTER TABLEs below
    policy::require_manage("tables").or_raise();
    require_owner(tbl).or_raise();
    let tables = Spi::connect(|client| {
        client
            .select("SELECT tbl::oid FROM authz.protected WHERE tbl = $1 OR tbl IN (SELECT relid FROM pg_partition_tree($1))", None, &[tbl.into()])?
            .map(|r| r.get::<pg_sys::Oid>(1))
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(AuthzError::from)
    .or_raise();
    for t in tables.iter().flatten() {
        let name = db::qualified_name(*t).or_raise();
        Spi::run(&render(UNPROTECT_TEMPLATE, &[("table", name.as_str())])).map_err(AuthzError::from).or_raise();
        let others =
            Spi::get_one_with_args::<bool>("SELECT EXISTS (SELECT FROM pg_policy WHERE polrelid = $1)", &[(*t).into()])
                .map_err(AuthzError::from)
                .or_raise();
        if others != Some(true) {
            Spi::run(&format!(
                "ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY; ALTER TABLE {name} DISABLE ROW LEVEL SECURITY"
            ))
            .map_err(AuthzError::from)
            .or_raise();
        }
        Spi::run_with_args("DELETE FROM authz.protected WHERE tbl = $1", &[(*t).into()])
            .map_err(AuthzError::from)
            .or_raise();
    }
    !tables.is_empty()
}

/// Undelete a soft-deleted row (by primary key) when the caller holds `restore` on its resource.
/// A missing row and a forbidden one get the same answer, so existence does not leak.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn restore(relation: PgRelation, id: &str) -> bool {
    let tbl = relation.oid();
    drop(relation); // an open relation would block the ALTER TABLEs below
    let config = db::select_one::<Vec<Option<String>>>(
        "SELECT ARRAY[id_column::text, resource_type, soft_delete_column::text] FROM authz.protected WHERE tbl = $1",
        &[tbl.into()],
    )
    .or_raise()
    .unwrap_or_default();
    let (Some(Some(id_column)), Some(Some(resource_type)), Some(Some(soft))) =
        (config.first().cloned(), config.get(1).cloned(), config.get(2).cloned())
    else {
        AuthzError::invalid(format!(
            "{} is not protected with a soft delete column",
            db::qualified_name(tbl).or_raise()
        ))
        .raise();
    };
    let pk = db::select_one::<String>(
        "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = $1 AND i.indisprimary AND i.indnatts = 1",
        &[tbl.into()],
    )
    .or_raise()
    .unwrap_or_else(|| {
        AuthzError::invalid("authz.restore() needs a single-column primary key")
            .detail(format!("{} has none.", db::qualified_name(tbl).unwrap_or_default()))
            .raise()
    });
    let name = db::qualified_name(tbl).or_raise();
    let soft_type = column(tbl, &soft, "soft delete").or_raise().type_oid;
    let (deleted, undelete) = if soft_type == pg_sys::BOOLOID {
        (format!("{} IS TRUE", quote_ident(&soft)), "false")
    } else {
        (format!("{} IS NOT NULL", quote_ident(&soft)), "NULL")
    };
    let resource = db::select_one::<String>(
        &format!(
            "SELECT {}::text FROM {name} WHERE {}::text = $1 AND {deleted}",
            quote_ident(&id_column),
            quote_ident(&pk)
        ),
        &[id.into()],
    )
    .or_raise();
    let allowed = match &resource {
        Some(r) => resolve::check_current(&resource_type, r, "restore").or_raise(),
        None => false,
    };
    if !allowed {
        AuthzError::privilege(format!(
            "no deleted row with id {} in {name} that you may restore",
            crate::keys::printable(id, 64)
        ))
        .raise();
    }
    Spi::run_with_args(
        &format!("UPDATE {name} SET {} = {undelete} WHERE {}::text = $1", quote_ident(&soft), quote_ident(&pk)),
        &[id.into()],
    )
    .map_err(AuthzError::from)
    .or_raise();
    true
}

pgrx::extension_sql!(
    r#"
-- Soft delete trigger: runs as the extension owner so the row it marks is updated regardless of
-- the UPDATE policy (the DELETE policy already decided this caller may delete it).
CREATE FUNCTION authz._soft_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col text := TG_ARGV[0];
    kind text := TG_ARGV[1];
    value jsonb := to_jsonb(OLD) -> col;
BEGIN
    IF value IS NOT NULL AND value <> 'null'::jsonb AND value <> 'false'::jsonb THEN
        RETURN OLD;  -- already soft-deleted: a real delete (the policy required purge)
    END IF;
    EXECUTE format('UPDATE %s SET %I = %s WHERE ctid = $1', TG_RELID::regclass, col,
                   CASE kind WHEN 'flag' THEN 'true' ELSE 'now()' END) USING OLD.ctid;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION authz._soft_delete() FROM PUBLIC;

-- New partitions of protected tables are protected in the statement that creates or attaches them.
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

-- A dropped table is no longer protected: forget it (its policies went with it).
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

CREATE VIEW authz.protected_tables AS
SELECT p.tbl AS table_name, p.id_column, p.resource_type, p.owner_column, p.soft_delete_column,
       c.relrowsecurity AS rls_enabled, c.relforcerowsecurity AS rls_forced,
       ARRAY(SELECT polname::text FROM pg_catalog.pg_policy WHERE polrelid = p.tbl AND polname::text LIKE 'authz\_%' ORDER BY 1) AS policies
FROM authz.protected p JOIN pg_catalog.pg_class c ON c.oid = p.tbl;
REVOKE ALL ON authz.protected_tables FROM PUBLIC;
GRANT SELECT ON authz.protected_tables TO authz_admin;
"#,
    name = "soft_delete_and_views",
    requires = ["bootstrap", _protect_new_partitions],
);
