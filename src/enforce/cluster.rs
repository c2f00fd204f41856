//! pg_authz's registrations on a Citus cluster (`authz.distribute()`, README "Citus").
//!
//! The registrations (`authz.resource_types.tbl`, `authz.protected.tbl`) are regclass columns of
//! reference tables: one copy per node, each holding that node's oid of the table. They stay right
//! because every write names the table by name, never by oid (a regclass travels to the other
//! nodes as its name, which each resolves itself), and because of two things done here:
//! - a table registered or protected while the database is distributed is first made known to
//!   every node (`citus_add_local_table_to_metadata`, unless Citus already manages it), so that the
//!   other nodes have a table of that name to resolve;
//! - Citus converts tables by recreating them (a Citus local table becoming distributed gets new
//!   tables on the workers; becoming a Citus local table renames the original into a shard). When
//!   a statement dropped a table in a distributed database, the registrations are written again
//!   from the coordinator's view, by name, before the transaction commits.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use pgrx::prelude::*;

use crate::auth::{assertion, identity};
use crate::pg::citus;
use crate::pg::db;
use crate::pg::errors::{AuthzResult, OrRaise};
use crate::pg::privileged::{self, Rights};

thread_local! {
    /// A statement of this transaction dropped a table in a distributed database.
    static RESYNC_AT_COMMIT: Cell<bool> = const { Cell::new(false) };
    /// The tables it dropped, by oid, with their names: Citus drops a table to create it again
    /// (under the same name, with a new oid) when it converts it.
    static DROPPED: RefCell<HashMap<u32, String>> = RefCell::new(HashMap::new());
}

/// `tbl`, made known to every node of the cluster when the database is distributed: a table Citus
/// does not manage yet becomes a Citus local table, with the tables its foreign keys connect it to
/// (data stays on the coordinator; the other nodes get their definitions). Returns the table's oid
/// afterwards, which that conversion changes.
pub fn known_to_every_node(tbl: pg_sys::Oid) -> AuthzResult<pg_sys::Oid> {
    if !assertion::distributed()? {
        return Ok(tbl);
    }
    // A table an earlier conversion (of a table its foreign keys connect it to) made a shard.
    let tbl = citus::logical_relation(tbl);
    if citus::is_citus_table(tbl) {
        return Ok(tbl);
    }
    let name = db::qualified_name(tbl)?;
    // As superuser, like pg_authz's other DDL on Citus tables (see templates::run_as_owner).
    privileged::run(Rights::Superuser, || {
        // With the tables its foreign keys connect it to: Citus requires them to come along.
        Spi::run_with_args(
            "SELECT pg_catalog.citus_add_local_table_to_metadata($1::pg_catalog.regclass, cascade_via_foreign_keys => true)",
            &[name.clone().into()],
        )
    })?;
    let converted = db::select_one::<pg_sys::Oid>("SELECT $1::pg_catalog.regclass::pg_catalog.oid", &[name.into()])?;
    Ok(converted.unwrap_or(tbl))
}

/// Before a statement whose plan reaches other nodes: make this transaction's connections to them
/// carry the caller's identity, signed (src/auth/assertion.rs).
pub fn propagate() -> AuthzResult<()> {
    if !citus::is_active() {
        return Ok(());
    }
    let who = identity::current()?;
    if let Some(signed) = assertion::for_identity(who.source.as_str(), who.user_id.as_deref(), who.token.as_deref())? {
        citus::set_local_on_workers("authz.cluster_assertion", &signed);
    }
    Ok(())
}

/// For register_resource_type(): the table as every node knows it (see `known_to_every_node`).
#[pg_extern(volatile)]
fn _known_to_every_node(tbl: pg_sys::Oid) -> pg_sys::Oid {
    known_to_every_node(tbl).or_raise()
}

/// For the drop event trigger: true when it has nothing to do here — on a connection Citus opened
/// (the node the DROP was issued on takes care of the replicated registrations), or in a
/// distributed database, where the registrations are rewritten before this transaction commits.
/// False on a single node: forget the dropped tables by oid.
#[pg_extern(volatile)]
fn _resync_if_distributed(dropped: Vec<pg_sys::Oid>, names: Vec<String>) -> bool {
    if citus::is_internal_backend() {
        return true;
    }
    let distributed = assertion::distributed().or_raise();
    if distributed {
        RESYNC_AT_COMMIT.with(|r| r.set(true));
        DROPPED.with(|d| d.borrow_mut().extend(dropped.iter().map(|o| o.to_u32()).zip(names)));
    }
    distributed
}

/// The table a registration's oid stands for now: the table itself, the table a Citus shard
/// placement belongs to, or — when this transaction dropped it — the table of the same name Citus
/// created in its place. `None` when the table is gone.
fn current_table(tbl: pg_sys::Oid) -> Option<String> {
    if let Ok(name) = db::qualified_name(citus::logical_relation(tbl)) {
        return Some(name);
    }
    let name = DROPPED.with(|d| d.borrow().get(&tbl.to_u32()).cloned())?;
    let exists = db::select_one::<bool>("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[name.clone().into()]);
    exists.ok().flatten().unwrap_or(false).then_some(name)
}

/// Before commit (hooks.rs): rewrite the registrations if a statement asked for it.
pub fn before_commit() -> AuthzResult<()> {
    if !RESYNC_AT_COMMIT.with(|r| r.replace(false)) || citus::is_internal_backend() {
        return Ok(());
    }
    // Before commit no statement is running: these queries need a snapshot of their own.
    // SAFETY: pushed and popped here (an ERROR aborts the transaction, which pops it).
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let result = if assertion::distributed()? { resync().map(|_| ()) } else { Ok(()) };
    // SAFETY: pops the snapshot pushed above.
    unsafe { pg_sys::PopActiveSnapshot() };
    result
}

/// The end of a transaction: nothing is pending any more.
pub fn forget() {
    RESYNC_AT_COMMIT.with(|r| r.set(false));
    DROPPED.with(|d| d.borrow_mut().clear());
}

/// Write the registrations again, by name, from this node's view: every node's copy then holds its
/// own oid of each table; protected tables that no longer exist are forgotten. A table Citus turned
/// into a shard here (`sessions_102008`) is registered as the table it belongs to.
pub fn resync() -> AuthzResult<usize> {
    privileged::run(Rights::Superuser, || -> AuthzResult<usize> {
        // These writes change no key another table references, and may follow a parallel
        // statement of the same transaction (create_distributed_table): Citus's check against
        // foreign-key deadlocks would refuse them. Local to this function's settings level.
        Spi::run(
            "SELECT pg_catalog.set_config('citus.enforce_foreign_key_restrictions', 'off', true)
             WHERE pg_catalog.current_setting('citus.enforce_foreign_key_restrictions', true) IS NOT NULL",
        )?;
        let types: Vec<(String, pg_sys::Oid)> = Spi::connect(|c| {
            c.select("SELECT name, tbl::pg_catalog.oid FROM authz.resource_types WHERE tbl IS NOT NULL", None, &[])?
                .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<pg_sys::Oid>(2)?.unwrap_or_default())))
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })?;
        let mut rewritten = 0;
        for (name, tbl) in types {
            let Some(table) = current_table(tbl) else { continue };
            Spi::run_with_args(
                "UPDATE authz.resource_types SET tbl = $2::pg_catalog.regclass
                 WHERE name OPERATOR(pg_catalog.=) $1 AND tbl IS DISTINCT FROM $2::pg_catalog.regclass",
                &[name.into(), table.into()],
            )?;
            rewritten += 1;
        }
        type Row =
            (pg_sys::Oid, String, String, Option<String>, Option<String>, Option<pgrx::datum::TimestampWithTimeZone>);
        let protected: Vec<Row> = Spi::connect(|c| {
            c.select(
                "SELECT tbl::pg_catalog.oid, id_column::pg_catalog.text, resource_type, owner_column::pg_catalog.text,
                        soft_delete_column::pg_catalog.text, protected_at FROM authz.protected",
                None,
                &[],
            )?
            .map(|r| {
                Ok((
                    r.get(1)?.unwrap_or_default(),
                    r.get(2)?.unwrap_or_default(),
                    r.get(3)?.unwrap_or_default(),
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })?;
        let mut kept = Vec::new();
        for (tbl, id, ty, owner, soft, at) in protected {
            // A table dropped since it was protected is forgotten (its policies went with it).
            if let Some(table) = current_table(tbl) {
                kept.push((table, id, ty, owner, soft, at));
            }
        }
        Spi::run("DELETE FROM authz.protected")?;
        for (table, id, ty, owner, soft, at) in &kept {
            record_protected(table, id, ty, owner.as_deref(), soft.as_deref(), *at)?;
        }
        Ok(rewritten + kept.len())
    })
}

/// Record a protected table (run with pg_authz's rights). One row, its table by name: on Citus the
/// statement runs on every node's copy, and each resolves the name to its own oid (a set-returning
/// INSERT ... SELECT would be evaluated here and copied as oids).
pub fn record_protected(
    table: &str,
    id_column: &str,
    resource_type: &str,
    owner_column: Option<&str>,
    soft_delete_column: Option<&str>,
    protected_at: Option<pgrx::datum::TimestampWithTimeZone>,
) -> Result<(), pgrx::spi::SpiError> {
    Spi::run_with_args(
        "INSERT INTO authz.protected (tbl, id_column, resource_type, owner_column, soft_delete_column, protected_at)
         VALUES ($1::pg_catalog.regclass, $2, $3, $4, $5, coalesce($6, pg_catalog.now()))
         ON CONFLICT (tbl) DO UPDATE SET id_column = excluded.id_column, resource_type = excluded.resource_type,
             owner_column = excluded.owner_column, soft_delete_column = excluded.soft_delete_column,
             protected_at = excluded.protected_at",
        &[
            table.into(),
            id_column.into(),
            resource_type.into(),
            owner_column.into(),
            soft_delete_column.into(),
            protected_at.into(),
        ],
    )
}

/// For authz.distribute(): make every registered and protected table known to every node.
#[pg_extern(volatile)]
fn _prepare_registrations_for_cluster() {
    let tables: Vec<pg_sys::Oid> = privileged::run(Rights::Superuser, || {
        Spi::connect(|c| {
            c.select(
                "SELECT DISTINCT t FROM (SELECT tbl::pg_catalog.oid FROM authz.resource_types WHERE tbl IS NOT NULL
                                         UNION SELECT tbl::pg_catalog.oid FROM authz.protected) AS r(t)",
                None,
                &[],
            )?
            .filter_map(|r| r.get::<pg_sys::Oid>(1).transpose())
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
    })
    .or_raise();
    for tbl in tables {
        // A registration of a table that no longer exists is left as it is.
        if db::qualified_name(tbl).is_ok() {
            known_to_every_node(tbl).or_raise();
        }
    }
}

/// For authz.distribute(): write the registrations again by name (a reference table's rows are
/// copied between nodes in binary, oids and all: when pg_authz's tables are converted, and when
/// Citus copies them to a node added later). Returns how many were written.
#[pg_extern(volatile)]
fn _resync_registrations() -> i64 {
    resync().or_raise() as i64
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn distribute_without_citus_is_a_no_op() {
        let r = Spi::get_one::<String>("SELECT authz.distribute()").unwrap();
        assert_eq!(r.as_deref(), Some("single node: nothing to distribute"));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM authz.cluster").unwrap(), Some(0));
        // Nothing else changed: a table still registers and protects as on any single node.
        Spi::run(
            "CREATE TABLE projects (id bigint PRIMARY KEY);
             SELECT authz.register_resource_type('project', 'projects', 'id');
             SELECT authz.protect('projects', 'id', 'project');",
        )
        .unwrap();
        let tbl = Spi::get_one::<String>("SELECT tbl::text FROM authz.protected").unwrap();
        assert_eq!(tbl.as_deref(), Some("projects"));
    }

    #[pg_test]
    fn a_dropped_protected_table_is_forgotten_without_citus() {
        Spi::run(
            "CREATE TABLE projects (id bigint PRIMARY KEY);
             SELECT authz.register_resource_type('project', 'projects', 'id');
             SELECT authz.protect('projects', 'id', 'project');
             DROP TABLE projects;",
        )
        .unwrap();
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM authz.protected").unwrap(), Some(0));
    }
}
