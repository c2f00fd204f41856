//! `authz.protect()`: render the policy templates in policies/templates/ for one table and install
//! them. The predicates call `authz.permits(col, type, action)` — resolved once per statement, an
//! index condition where an index helps — and never a per-row subquery or array scan.
//!
//! Rendering is the attack surface of this module, so it follows three rules: a template is split
//! into statements before anything is substituted (a value can never add a statement), values are
//! substituted in one pass (a value is never re-read as a placeholder), and every identifier is
//! quoted and free of control characters. The rendered DDL runs as the table's owner, never as
//! superuser; only the fixed, parameterized registration row is written with pg_authz's rights.

use std::collections::HashMap;

use pgrx::pgrx_sql_entity_graph::metadata::{ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable};
use pgrx::prelude::*;

use crate::enforce::cluster;
use crate::pg::db::{self, quote_ident, quote_literal};
use crate::pg::errors::{AuthzError, AuthzResult, OrRaise};
use crate::pg::privileged::{self, require_printable_identifier, Rights};
use crate::policy::{admin, model, resolve};

const PROTECT_TEMPLATE: &str = include_str!("../../policies/templates/protect.sql");
const SOFT_DELETE_TEMPLATE: &str = include_str!("../../policies/templates/soft_delete.sql");
const POLICY_NAMES: [&str; 4] = ["authz_select", "authz_insert", "authz_update", "authz_delete"];
const SOFT_DELETE_TRIGGER: &str = "authz_soft_delete";

/// POLICY_NAMES as an SPI argument (text[]).
fn policy_names() -> Vec<String> {
    POLICY_NAMES.iter().map(|s| s.to_string()).collect()
}

/// A `regclass` argument that is not opened on the way in: a dangling oid gets 42P01 from our own
/// lookup instead of an internal error from the relation cache.
pub struct RelId(pub pg_sys::Oid);

impl FromDatum for RelId {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _typoid: pg_sys::Oid) -> Option<Self> {
        // SAFETY: a regclass datum is an oid passed by value.
        (!is_null).then(|| RelId(unsafe { pg_sys::Oid::from_datum(datum, false) }.unwrap_or(pg_sys::InvalidOid)))
    }
}

impl IntoDatum for RelId {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.0))
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::REGCLASSOID
    }
}

// SAFETY: a regclass argument is an oid datum, unboxed by RelId's FromDatum.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for RelId {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        // SAFETY: the caller guarantees a non-null regclass argument.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or(RelId(pg_sys::InvalidOid))
    }
}

// SAFETY: RelId is passed exactly as PostgreSQL's regclass (an oid by value).
unsafe impl SqlTranslatable for RelId {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::RelId");
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("regclass"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("regclass")));
}

/// The statements of a template, split at `;` line ends before any substitution; comment lines
/// are dropped.
fn statements(template: &str) -> Vec<String> {
    let body: String =
        template.lines().filter(|l| !l.trim_start().starts_with("--")).map(|l| format!("{l}\n")).collect();
    body.split(";\n").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Substitute `{{name}}` placeholders in one pass: substituted text is never scanned again.
fn render(statement: &str, vars: &HashMap<&str, String>) -> AuthzResult<String> {
    let mut out = String::with_capacity(statement.len() * 2);
    let mut rest = statement;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end =
            after.find("}}").ok_or_else(|| AuthzError::config("unterminated placeholder in a policy template"))?;
        let value = vars
            .get(&after[..end])
            .ok_or_else(|| AuthzError::config(format!("policy template placeholder {} has no value", &after[..end])))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[derive(Clone, Copy, PartialEq)]
enum SoftDeleteKind {
    Flag,
    Timestamp,
}

fn column_type(table: pg_sys::Oid, name: &str, what: &str) -> AuthzResult<pg_sys::Oid> {
    require_printable_identifier(&format!("{what} column"), name)?;
    let type_oid = db::select_one::<pg_sys::Oid>(
        "SELECT atttypid FROM pg_catalog.pg_attribute
         WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attname OPERATOR(pg_catalog.=) $2::pg_catalog.name
           AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
        &[table.into(), name.into()],
    )?;
    type_oid.ok_or_else(|| {
        AuthzError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!(
                "{what} column \"{}\" does not exist in table {}",
                crate::pg::text::printable(name, 64),
                db::qualified_name(table).unwrap_or_default()
            ),
        )
    })
}

/// A table's name as rendered: schema-qualified, quoted, and without control characters.
fn rendered_name(table: pg_sys::Oid) -> AuthzResult<String> {
    let name = db::qualified_name(table)?;
    require_printable_identifier("table", &name)?;
    Ok(name)
}

/// One table's share of a protect(): the statements to run on it as its owner.
struct Target {
    table: pg_sys::Oid,
    statements: Vec<String>,
}

/// The relations protect() covers: the table and every partition below it.
fn partition_tree(table: pg_sys::Oid) -> AuthzResult<Vec<pg_sys::Oid>> {
    let mut tree = vec![table];
    let below = Spi::connect(|client| {
        client
            .select(
                "SELECT relid FROM pg_catalog.pg_partition_tree($1)
                 WHERE relid OPERATOR(pg_catalog.<>) $1::pg_catalog.regclass ORDER BY level, relid",
                None,
                &[table.into()],
            )?
            .map(|r| r.get::<pg_sys::Oid>(1))
            .collect::<Result<Vec<_>, _>>()
    })?;
    tree.extend(below.into_iter().flatten());
    Ok(tree)
}

/// The pg_authz policies and the root soft-delete trigger that exist on a table now.
fn installed_objects(table: pg_sys::Oid) -> AuthzResult<(Vec<String>, bool)> {
    let policies = db::select_one::<Vec<String>>(
        "SELECT coalesce(pg_catalog.array_agg(polname::pg_catalog.text ORDER BY polname), '{}')
         FROM pg_catalog.pg_policy
         WHERE polrelid OPERATOR(pg_catalog.=) $1 AND polname::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($2)",
        &[table.into(), policy_names().into()],
    )?
    .unwrap_or_default();
    // A trigger cloned from a partitioned parent (tgparentid set) goes with its parent's.
    let trigger = db::select_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) $1
             AND tgname OPERATOR(pg_catalog.=) $2::pg_catalog.name AND tgparentid OPERATOR(pg_catalog.=) 0)",
        &[table.into(), SOFT_DELETE_TRIGGER.into()],
    )?
    .unwrap_or(false);
    Ok((policies, trigger))
}

fn drop_statements(table_name: &str, policies: &[String], trigger: bool) -> Vec<String> {
    let mut out: Vec<String> =
        policies.iter().map(|p| format!("DROP POLICY {} ON {table_name}", quote_ident(p))).collect();
    if trigger {
        out.push(format!("DROP TRIGGER {} ON {table_name}", quote_ident(SOFT_DELETE_TRIGGER)));
    }
    out
}

/// What protect() would run: validate the arguments, then render every statement for the table
/// and its partitions (or only the partitions in `only`, for partitions created later).
fn plan(
    table: pg_sys::Oid,
    id_column: &str,
    resource_type: &str,
    owner_column: Option<&str>,
    soft_delete_column: Option<&str>,
    only: Option<&[pg_sys::Oid]>,
) -> AuthzResult<Vec<Target>> {
    rendered_name(table)?;
    // SAFETY: a syscache lookup by oid returning a plain char.
    let relkind = unsafe { pg_sys::get_rel_relkind(table) } as u8;
    if relkind != b'r' && relkind != b'p' {
        return Err(AuthzError::new(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("{} is not a table", db::qualified_name(table)?),
        )
        .hint("Row-level security applies to ordinary and partitioned tables; protect the tables a view reads."));
    }
    let model = model::current()?;
    let rt = model.resource_type(resource_type)?;
    if rt.table.is_none() {
        return Err(AuthzError::invalid(format!("resource type \"{resource_type}\" has no table"))
            .hint("Register it over the table that lists its ids with authz.register_resource_type()."));
    }
    let id_type = column_type(table, id_column, "id")?;
    if ![pg_sys::INT8OID, pg_sys::INT4OID, pg_sys::UUIDOID, pg_sys::TEXTOID, pg_sys::VARCHAROID].contains(&id_type) {
        return Err(AuthzError::new(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("column \"{}\" has a type pg_authz cannot protect", crate::pg::text::printable(id_column, 64)),
        )
        .hint("Supported id types: bigint, integer, uuid, text, varchar."));
    }
    let owner_is_text = match owner_column {
        Some(c) => column_type(table, c, "owner")? == pg_sys::TEXTOID,
        None => true,
    };
    let soft = match soft_delete_column {
        Some(c) => match column_type(table, c, "soft delete")? {
            pg_sys::BOOLOID => Some((c, SoftDeleteKind::Flag)),
            pg_sys::TIMESTAMPTZOID | pg_sys::TIMESTAMPOID => Some((c, SoftDeleteKind::Timestamp)),
            _ => {
                return Err(AuthzError::new(
                    PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                    format!(
                        "soft delete column \"{}\" must be boolean or a timestamp",
                        crate::pg::text::printable(c, 64)
                    ),
                ))
            }
        },
        None => None,
    };

    // Every name is quoted, every value a literal, every operator and cast qualified: the policy
    // means the same whatever search_path a later reader has.
    let col = quote_ident(id_column);
    let rt_lit = quote_literal(resource_type);
    let permits = |action: &str| format!("authz.permits({col}, {rt_lit}, {})", quote_literal(action));
    let owned = owner_column.map(|c| {
        let c = quote_ident(c);
        let lhs = if owner_is_text { c } else { format!("{c}::pg_catalog.text") };
        format!("{lhs} OPERATOR(pg_catalog.=) (SELECT authz.user_id())")
    });
    // A table protected by its own id (the resource table itself) checks a new or updated row
    // against the parent it names, not against what is stored: otherwise a new id could never be
    // inserted and a row could be moved under a parent the caller may not write.
    let self_protected = rt.table == Some(table) && rt.id_column.as_deref() == Some(id_column);
    let parent_expr = match (&rt.parent_column, self_protected) {
        (Some(p), true) => format!("{}::pg_catalog.text", quote_ident(p)),
        _ => "NULL".to_string(),
    };
    let permits_new = |action: &str| {
        if self_protected {
            format!("authz.permits_row({rt_lit}, {col}::pg_catalog.text, {parent_expr}, {})", quote_literal(action))
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
            "(authz.permits({col}, {rt_lit}, 'read') OR authz.permits_row({rt_lit}, {col}::pg_catalog.text, {parent_expr}, 'read', true))"
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

    let mut vars: HashMap<&str, String> = HashMap::from([
        ("column", col.clone()),
        ("read", read),
        ("insert", write_new),
        ("update_old", update_old),
        ("update_new", update_new),
        ("delete", delete_pred),
    ]);
    if let Some((c, kind)) = soft {
        vars.insert("soft_delete_column_literal", quote_literal(c));
        vars.insert(
            "soft_delete_kind",
            (if kind == SoftDeleteKind::Flag { "'flag'" } else { "'timestamp'" }).to_string(),
        );
    }
    let mut targets = Vec::new();
    for t in partition_tree(table)? {
        if only.is_some_and(|o| !o.contains(&t)) {
            continue;
        }
        let name = rendered_name(t)?;
        vars.insert("table", name.clone());
        let (policies, trigger) = installed_objects(t)?;
        let mut sql = drop_statements(&name, &policies, trigger);
        for s in statements(PROTECT_TEMPLATE) {
            sql.push(render(&s, &vars)?);
        }
        // The trigger goes on the root only: PostgreSQL clones it onto every partition.
        if soft.is_some() && t == table {
            for s in statements(SOFT_DELETE_TEMPLATE) {
                sql.push(render(&s, &vars)?);
            }
        }
        targets.push(Target { table: t, statements: sql });
    }
    Ok(targets)
}

/// The caller must own the table (or hold its owner's privileges), or be a superuser.
fn require_owner(table: pg_sys::Oid) -> AuthzResult<()> {
    let caller = db::outer_user();
    let owner = privileged::relation_owner(table)?;
    // SAFETY: a catalog lookup of role membership.
    if db::is_superuser(caller) || unsafe { pg_sys::has_privs_of_role(caller, owner) } {
        Ok(())
    } else {
        Err(AuthzError::privilege(format!("must be owner of table {}", db::qualified_name(table)?)))
    }
}

fn has_leading_index(table: pg_sys::Oid, column_name: &str) -> AuthzResult<bool> {
    Ok(db::select_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
                 ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) i.indkey[0]
             WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND a.attname OPERATOR(pg_catalog.=) $2::pg_catalog.name)",
        &[table.into(), column_name.into()],
    )?
    .unwrap_or(false))
}

/// The registration of a protected table: (id column, resource type, owner column, soft delete column).
type Registration = (String, String, Option<String>, Option<String>);

fn registration(table: pg_sys::Oid) -> AuthzResult<Option<Registration>> {
    let row = privileged::run(Rights::Superuser, || {
        db::select_one::<Vec<Option<String>>>(
            "SELECT ARRAY[id_column::pg_catalog.text, resource_type, owner_column::pg_catalog.text,
                          soft_delete_column::pg_catalog.text]
             FROM authz.protected WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
            &[table.into()],
        )
    })?;
    Ok(row.and_then(|r| match r.as_slice() {
        [Some(id), Some(rt), owner, soft] => Some((id.clone(), rt.clone(), owner.clone(), soft.clone())),
        _ => None,
    }))
}

/// Re-protecting a table without naming its soft delete column keeps the one it has: dropping
/// soft delete is a decision (authz.unprotect(), then protect()), never a side effect.
fn effective_soft_delete(table: pg_sys::Oid, given: Option<&str>) -> AuthzResult<Option<String>> {
    match given {
        Some(c) => Ok(Some(c.to_string())),
        None => Ok(registration(table)?.and_then(|r| r.3)),
    }
}

/// The exact SQL authz.protect() would run, for review: one statement per line group, in order.
#[pg_extern(stable)]
fn protect_sql(
    relation: RelId,
    id_column: &str,
    resource_type: &str,
    owner_column: default!(Option<&str>, "NULL"),
    soft_delete_column: default!(Option<&str>, "NULL"),
) -> String {
    let tbl = relation.0;
    let soft = effective_soft_delete(tbl, soft_delete_column).or_raise();
    plan(tbl, id_column, resource_type, owner_column, soft.as_deref(), None)
        .or_raise()
        .into_iter()
        .flat_map(|t| t.statements)
        .map(|s| format!("{s};\n"))
        .collect()
}

/// Make PostgreSQL confine every client to its permitted rows of `tbl` (and its partitions).
/// Idempotent: re-running replaces pg_authz's policies and leaves other policies alone.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn protect(
    relation: RelId,
    id_column: &str,
    resource_type: &str,
    owner_column: default!(Option<&str>, "NULL"),
    soft_delete_column: default!(Option<&str>, "NULL"),
) -> String {
    let name = db::qualified_name(relation.0).or_raise();
    admin::require_manage("tables").or_raise();
    require_owner(relation.0).or_raise();
    // On Citus, a table the other nodes do not know yet becomes one they do (a new oid here).
    let tbl = cluster::known_to_every_node(relation.0).or_raise();
    let soft = effective_soft_delete(tbl, soft_delete_column).or_raise();
    let installed = install(tbl, id_column, resource_type, owner_column, soft.as_deref(), None).or_raise();
    if !has_leading_index(tbl, id_column).or_raise() {
        pgrx::warning!(
            "{name} has no index on \"{}\": every protected query will scan the whole table (CREATE INDEX ON {name} ({}))",
            crate::pg::text::printable(id_column, 64),
            quote_ident(id_column)
        );
    }
    format!("protected {name} ({installed} table{})", if installed == 1 { "" } else { "s" })
}

thread_local! {
    /// Set while pg_authz itself runs DDL, so the partition event trigger does not re-enter.
    static INSTALLING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Holds INSTALLING for its lifetime; dropping it (also while an ERROR unwinds) restores it.
struct Installing(bool);

impl Installing {
    fn enter() -> Installing {
        Installing(INSTALLING.with(|f| f.replace(true)))
    }
}

impl Drop for Installing {
    fn drop(&mut self) {
        INSTALLING.with(|f| f.set(self.0));
    }
}

/// Run a table's statements one at a time as its owner — or, for a Citus table, as superuser, like
/// the rest of pg_authz's DDL on it: Citus relays DDL over connections of the role that issues it,
/// and two roles' DDL on the same shards in one transaction (register_resource_type()'s trigger,
/// then protect()'s policies) deadlock. These statements run no code of the table's owner either way
/// (policy expressions are stored, not evaluated).
fn run_as_owner(table: pg_sys::Oid, statements: &[String]) -> AuthzResult<()> {
    let rights = if crate::pg::citus::is_citus_table(table) { Rights::Superuser } else { Rights::OwnerOf(table) };
    privileged::run(rights, || {
        for s in statements {
            Spi::run(s)?;
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
}

/// Run the rendered SQL on the table and its partitions and record them; no privilege checks here.
fn install(
    tbl: pg_sys::Oid,
    id_column: &str,
    resource_type: &str,
    owner_column: Option<&str>,
    soft_delete_column: Option<&str>,
    only: Option<&[pg_sys::Oid]>,
) -> AuthzResult<usize> {
    let targets = plan(tbl, id_column, resource_type, owner_column, soft_delete_column, only)?;
    let _installing = Installing::enter();
    for t in &targets {
        run_as_owner(t.table, &t.statements)?;
    }
    privileged::run(Rights::Superuser, || {
        for t in &targets {
            let name = db::qualified_name(t.table)?;
            cluster::record_protected(&name, id_column, resource_type, owner_column, soft_delete_column, None)?;
        }
        Ok::<_, AuthzError>(())
    })?;
    Ok(targets.len())
}

/// Called by the `authz_protect_partitions` event trigger after CREATE/ALTER TABLE: a partition
/// created or attached under a protected table gets the same policies in the same statement, so
/// it can never be queried directly unprotected (a name it cannot carry safely fails the DDL).
/// Runs with the caller's rights: the policies are created as each partition's owner, and only the
/// registration row is written with pg_authz's, extending a protection a manager already chose.
/// Returns how many protected tables gained partitions.
#[pg_extern(volatile)]
fn _protect_new_partitions() -> i32 {
    if INSTALLING.with(|f| f.get()) {
        return 0;
    }
    type Pending =
        (Option<pg_sys::Oid>, Option<String>, Option<String>, Option<String>, Option<String>, Option<Vec<pg_sys::Oid>>);
    let pending: Vec<Pending> = privileged::run(Rights::Superuser, || {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT p.tbl::pg_catalog.oid, p.id_column::pg_catalog.text, p.resource_type,
                            p.owner_column::pg_catalog.text, p.soft_delete_column::pg_catalog.text,
                            pg_catalog.array_agg(t.relid::pg_catalog.oid)
                     FROM authz.protected p, pg_catalog.pg_partition_tree(p.tbl) t
                     WHERE t.relid OPERATOR(pg_catalog.<>) p.tbl
                       AND NOT EXISTS (SELECT FROM authz.protected q WHERE q.tbl OPERATOR(pg_catalog.=) t.relid)
                       AND NOT EXISTS (SELECT FROM pg_catalog.pg_inherits i
                                       JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid AND c.relispartition
                                       JOIN authz.protected pp ON pp.tbl OPERATOR(pg_catalog.=) i.inhparent
                                       WHERE i.inhrelid OPERATOR(pg_catalog.=) p.tbl)
                     GROUP BY 1, 2, 3, 4, 5",
                    None,
                    &[],
                )?
                .map(|r| Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
    })
    .or_raise();
    let mut n = 0;
    for (tbl, id_column, resource_type, owner, soft, partitions) in pending {
        let (Some(tbl), Some(id_column), Some(resource_type), Some(partitions)) =
            (tbl, id_column, resource_type, partitions)
        else {
            continue;
        };
        install(tbl, &id_column, &resource_type, owner.as_deref(), soft.as_deref(), Some(&partitions)).or_raise();
        n += 1;
    }
    n
}

/// Undo authz.protect(): drop pg_authz's policies and trigger; disable row-level security only
/// where no other policy remains.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn unprotect(relation: RelId) -> bool {
    let tbl = relation.0;
    db::qualified_name(tbl).or_raise();
    admin::require_manage("tables").or_raise();
    require_owner(tbl).or_raise();
    unprotect_table(tbl).or_raise()
}

/// Unprotect a table and its partitions (no privilege checks here); false when none was protected.
pub fn unprotect_table(tbl: pg_sys::Oid) -> AuthzResult<bool> {
    let tree = partition_tree(tbl)?;
    let registered: Vec<pg_sys::Oid> = privileged::run(Rights::Superuser, || {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT tbl::pg_catalog.oid FROM authz.protected WHERE tbl::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($1)",
                    None,
                    &[tree.clone().into()],
                )?
                .map(|r| r.get::<pg_sys::Oid>(1))
                .collect::<Result<Vec<_>, _>>()
        })
    })?
    .into_iter()
    .flatten()
    .collect();
    for t in tree.iter().filter(|t| registered.contains(t)) {
        let name = db::qualified_name(*t)?;
        let (policies, trigger) = installed_objects(*t)?;
        let mut sql = drop_statements(&name, &policies, trigger);
        let others = db::select_one::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_policy WHERE polrelid OPERATOR(pg_catalog.=) $1
                 AND polname::pg_catalog.text OPERATOR(pg_catalog.<>) ALL ($2))",
            &[(*t).into(), policy_names().into()],
        )?;
        if others != Some(true) {
            sql.push(format!("ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY"));
            sql.push(format!("ALTER TABLE {name} DISABLE ROW LEVEL SECURITY"));
        }
        run_as_owner(*t, &sql)?;
    }
    // By name, like every write of a registration (src/enforce/cluster.rs).
    let names = registered.iter().map(|t| db::qualified_name(*t)).collect::<AuthzResult<Vec<_>>>()?;
    privileged::run(Rights::Superuser, || {
        Spi::run_with_args(
            "DELETE FROM authz.protected WHERE tbl OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]::pg_catalog.regclass[])",
            &[names.into()],
        )
    })?;
    Ok(!registered.is_empty())
}

/// Undelete a soft-deleted row (by primary key) when the caller holds `restore` on its resource.
/// A missing row and a forbidden one get the same answer, so existence does not leak. The row is
/// read and updated as the table's owner, and identified exactly: its own table and its ctid.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn restore(relation: RelId, id: &str) -> bool {
    let tbl = relation.0;
    let name = db::qualified_name(tbl).or_raise();
    let Some((id_column, resource_type, _, Some(soft))) = registration(tbl).or_raise() else {
        AuthzError::invalid(format!("{name} is not protected with a soft delete column")).raise();
    };
    let pk = db::select_one::<Vec<String>>(
        "SELECT ARRAY[a.attname::pg_catalog.text, pg_catalog.format_type(a.atttypid, a.atttypmod)]
         FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
              ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) i.indkey[0]
         WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary AND i.indnatts OPERATOR(pg_catalog.=) 1",
        &[tbl.into()],
    )
    .or_raise();
    let Some([pk, pk_type]) = pk.as_deref() else {
        AuthzError::invalid("authz.restore() needs a single-column primary key")
            .detail(format!("{name} has none."))
            .raise()
    };
    let soft_type = column_type(tbl, &soft, "soft delete").or_raise();
    let (deleted, undelete) = if soft_type == pg_sys::BOOLOID {
        (format!("{} IS TRUE", quote_ident(&soft)), "false")
    } else {
        (format!("{} IS NOT NULL", quote_ident(&soft)), "NULL")
    };
    let rows: Vec<(Option<pg_sys::Oid>, Option<String>, Option<String>)> =
        privileged::run(Rights::OwnerOf(tbl), || {
            Spi::connect(|client| {
                client
                    .select(
                        &format!(
                            "SELECT t.tableoid, t.ctid::pg_catalog.text, {}::pg_catalog.text FROM {name} t
                             WHERE {} OPERATOR(pg_catalog.=) CAST($1 AS {pk_type}) AND {deleted} LIMIT 2",
                            quote_ident(&id_column),
                            quote_ident(pk)
                        ),
                        None,
                        &[id.into()],
                    )?
                    .map(|r| Ok((r.get(1)?, r.get(2)?, r.get(3)?)))
                    .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
            })
        })
        .or_raise();
    if rows.len() > 1 {
        AuthzError::new(
            PgSqlErrorCode::ERRCODE_CARDINALITY_VIOLATION,
            format!("more than one deleted row with id {} in {name}", crate::pg::text::printable(id, 64)),
        )
        .detail("The primary key is unique per table; this table has inheritance children that repeat it.")
        .hint("Restore from the child table that holds the row.")
        .raise();
    }
    let found = rows.into_iter().next();
    let allowed = match &found {
        Some((_, _, Some(resource))) => resolve::check_current(&resource_type, resource, "restore").or_raise(),
        _ => false,
    };
    let (true, Some((Some(holder), Some(ctid), _))) = (allowed, found) else {
        AuthzError::privilege(format!(
            "no deleted row with id {} in {name} that you may restore",
            crate::pg::text::printable(id, 64)
        ))
        .raise();
    };
    let holder_name = db::qualified_name(holder).or_raise();
    privileged::run(Rights::OwnerOf(holder), || {
        Spi::run_with_args(
            &format!(
                "UPDATE ONLY {holder_name} SET {} = {undelete} WHERE ctid OPERATOR(pg_catalog.=) $1::pg_catalog.tid",
                quote_ident(&soft)
            ),
            &[ctid.into()],
        )
    })
    .or_raise();
    true
}

/// The soft-delete trigger (BEFORE DELETE, FOR EACH ROW; arguments: column, 'flag'|'timestamp').
/// A live row is marked deleted instead of removed — by an UPDATE of exactly that row (its own
/// table, ONLY, by ctid) run as the table's owner, so the owner's triggers run with the owner's
/// rights and the UPDATE policy (which the caller may not pass) does not apply; the DELETE policy
/// already decided the caller may delete it. An already deleted row is removed for good.
#[pg_trigger]
fn _soft_delete<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let misuse = |why: &str| {
        AuthzError::config(format!("authz._soft_delete() {why}"))
            .hint("It is installed by authz.protect(..., soft_delete_column => ...) and used by no one else.")
            .raise()
    };
    if !matches!(trigger.level(), pgrx::PgTriggerLevel::Row)
        || !matches!(trigger.when()?, pgrx::PgTriggerWhen::Before)
        || !matches!(trigger.op()?, pgrx::PgTriggerOperation::Delete)
    {
        misuse("must be a BEFORE DELETE row trigger");
    }
    let args = trigger.extra_args()?;
    let [column, kind] = args.as_slice() else { misuse("takes a column name and a kind") };
    let value = match kind.as_str() {
        "flag" => "true",
        "timestamp" => "pg_catalog.now()",
        _ => misuse("kind must be 'flag' or 'timestamp'"),
    };
    let Some(old) = trigger.old() else { misuse("fired without a row") };
    let already_deleted = if kind == "flag" {
        old.get_by_name::<bool>(column).map_err(|e| AuthzError::config(e.to_string())).or_raise() == Some(true)
    } else {
        let tuple = trigger.trigger_data().tg_trigtuple;
        let column_c = std::ffi::CString::new(column.as_str()).unwrap_or_default();
        // SAFETY: the trigger's own tuple and its relation's descriptor, both valid for this call.
        unsafe {
            let desc = (*trigger.trigger_data().tg_relation).rd_att;
            let attnum = pg_sys::SPI_fnumber(desc, column_c.as_ptr());
            if attnum <= 0 {
                misuse("names a column the table does not have");
            }
            !pg_sys::heap_attisnull(tuple, attnum, desc)
        }
    };
    if already_deleted {
        return Ok(Some(old));
    }
    let rel = trigger.relid()?;
    // SAFETY: tg_trigtuple is the row being deleted; its t_self is that row's ctid.
    let ctid = unsafe { (*trigger.trigger_data().tg_trigtuple).t_self };
    let ctid_text =
        format!("({},{})", (u32::from(ctid.ip_blkid.bi_hi) << 16) | u32::from(ctid.ip_blkid.bi_lo), ctid.ip_posid);
    let name = db::qualified_name(rel).or_raise();
    privileged::run(Rights::OwnerOf(rel), || {
        Spi::run_with_args(
            &format!(
                "UPDATE ONLY {name} SET {} = {value} WHERE ctid OPERATOR(pg_catalog.=) $1::pg_catalog.tid",
                quote_ident(column)
            ),
            &[ctid_text.into()],
        )
    })
    .or_raise();
    Ok(None)
}

pgrx::extension_sql!(
    r#"
-- A trigger function creates nothing by itself and elevates only to the owner of the table it
-- fires on: any table owner may attach it (authz.protect() runs as the owner).
GRANT EXECUTE ON FUNCTION authz._soft_delete() TO PUBLIC;
-- Protecting new partitions only ever adds protection; the DDL's issuer calls it.
GRANT EXECUTE ON FUNCTION authz._protect_new_partitions() TO PUBLIC;

-- New partitions of protected tables are protected in the statement that creates or attaches them.
CREATE FUNCTION authz._on_ddl_protect_partitions() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM authz._protect_new_partitions();
END
$$;
CREATE EVENT TRIGGER authz_protect_partitions ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE') EXECUTE FUNCTION authz._on_ddl_protect_partitions();

-- A dropped table is no longer protected: forget it (its policies went with it). On Citus the node
-- the DROP was issued on rewrites the (replicated) registrations by name before commit, and the
-- nodes Citus relays the DROP to do nothing (src/enforce/cluster.rs).
CREATE FUNCTION authz._on_drop_forget_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped oid[];
    names text[];
BEGIN
    SELECT coalesce(pg_catalog.array_agg(d.objid), '{}'), coalesce(pg_catalog.array_agg(d.object_identity), '{}')
      INTO dropped, names
      FROM pg_catalog.pg_event_trigger_dropped_objects() d WHERE d.object_type OPERATOR(pg_catalog.=) 'table';
    IF authz._resync_if_distributed(dropped, names) THEN
        RETURN;
    END IF;
    DELETE FROM authz.protected WHERE tbl::pg_catalog.oid OPERATOR(pg_catalog.=) ANY (dropped);
END
$$;
CREATE EVENT TRIGGER authz_forget_dropped_tables ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED') EXECUTE FUNCTION authz._on_drop_forget_tables();
REVOKE ALL ON FUNCTION authz._on_ddl_protect_partitions(), authz._on_drop_forget_tables() FROM PUBLIC;

CREATE VIEW authz.protected_tables AS
SELECT p.tbl AS table_name, p.id_column, p.resource_type, p.owner_column, p.soft_delete_column,
       c.relrowsecurity AS rls_enabled, c.relforcerowsecurity AS rls_forced,
       ARRAY(SELECT polname::text FROM pg_catalog.pg_policy WHERE polrelid = p.tbl AND polname::text LIKE 'authz\_%' ORDER BY 1) AS policies
FROM authz.protected p JOIN pg_catalog.pg_class c ON c.oid = p.tbl;
REVOKE ALL ON authz.protected_tables FROM PUBLIC;
GRANT SELECT ON authz.protected_tables TO authz_admin;
"#,
    name = "soft_delete_and_views",
    requires = ["bootstrap", _protect_new_partitions, _soft_delete, _resync_if_distributed],
);
