//! The extension's own lifecycle: which version is installed, and leaving cleanly.
//!
//! `DROP EXTENSION pg_authz` while tables are protected would leave them forced under row-level
//! security with their policies dropped (CASCADE takes the policies, which call pg_authz, but not
//! the FORCE flag): unreadable for everyone, owner included. So the drop is refused while any
//! table is protected, naming `authz.uninstall()`, which returns every protected table to plain
//! PostgreSQL first and removes pg_authz's triggers from registered resource tables.

use pgrx::prelude::*;

use crate::pg::db;
use crate::pg::errors::{AuthzError, OrRaise};
use crate::pg::privileged::{self, Rights};

/// The installed SQL version (`pg_extension.extversion`): what `ALTER EXTENSION … UPDATE` moves.
#[pg_extern(stable, parallel_safe)]
fn version() -> String {
    db::select_one::<String>(
        "SELECT extversion::pg_catalog.text FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'pg_authz'",
        &[],
    )
    .or_raise()
    .unwrap_or_default()
}

/// The version of the loaded library (the .so). After installing a new package it differs from
/// `version()` until `ALTER EXTENSION pg_authz UPDATE`; `authz.doctor()` says so.
#[pg_extern(immutable, parallel_safe)]
fn library_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Per-backend cache sizes, for monitoring memory: entries and approximate bytes of the verified
/// tokens, the resolved permission sets (with grants) and the resource rows read for them.
#[pg_extern(volatile)]
fn cache_stats() -> pgrx::JsonB {
    let token_bytes = crate::auth::token::cached_token_bytes();
    let set_bytes = crate::policy::resolve::cached_set_bytes();
    let row_bytes = crate::policy::lineage::cached_bytes();
    pgrx::JsonB(serde_json::json!({
        "generation": crate::pg::cache::generation(),
        "tokens": crate::auth::token::cached_tokens(),
        "permission_sets": crate::policy::resolve::cached_sets(),
        "resource_rows": crate::policy::lineage::cached_rows(),
        "token_bytes": token_bytes,
        "permission_set_bytes": set_bytes,
        "resource_row_bytes": row_bytes,
        "bytes": token_bytes + set_bytes + row_bytes,
    }))
}

/// Return every protected table to plain PostgreSQL (pg_authz's policies and triggers dropped,
/// row-level security disabled where no other policy remains) and remove the invalidation
/// triggers from registered resource tables, so that `DROP EXTENSION pg_authz` leaves nothing
/// behind. Superusers and `authz_admin` members only. Returns how many tables were unprotected.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn uninstall() -> i32 {
    db::require_privileged("uninstall pg_authz").or_raise();
    let roots: Vec<pg_sys::Oid> = privileged::run(Rights::Superuser, || {
        Spi::connect(|client| {
            client
                .select(
                    // Partitions follow their root; a protected inheritance child is its own root.
                    "SELECT p.tbl::pg_catalog.oid FROM authz.protected p
                     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_inherits i
                                       JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid AND c.relispartition
                                       JOIN authz.protected q ON q.tbl OPERATOR(pg_catalog.=) i.inhparent
                                       WHERE i.inhrelid OPERATOR(pg_catalog.=) p.tbl)",
                    None,
                    &[],
                )?
                .map(|r| r.get::<pg_sys::Oid>(1))
                .collect::<Result<Vec<_>, _>>()
        })
    })
    .or_raise()
    .into_iter()
    .flatten()
    .collect();
    for t in &roots {
        crate::enforce::templates::unprotect_table(*t).or_raise();
    }
    privileged::run(Rights::Superuser, || {
        Spi::run(
            "SELECT authz._unwatch_table(t.tbl) FROM authz.resource_types t WHERE t.tbl IS NOT NULL
             GROUP BY t.tbl",
        )
    })
    .or_raise();
    i32::try_from(roots.len()).unwrap_or(i32::MAX)
}

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_authz_guard_drop_extension() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// Does this DROP statement drop the extension pg_authz?
unsafe fn drops_pg_authz(parsetree: *mut pg_sys::Node) -> bool {
    // SAFETY: `parsetree` is null (checked) or the statement of the current event; a DropStmt's objects list is walked within its length and each element is tag-checked.
    unsafe {
        if parsetree.is_null() || (*parsetree).type_ != pg_sys::NodeTag::T_DropStmt {
            return false;
        }
        let stmt = parsetree as *mut pg_sys::DropStmt;
        if (*stmt).removeType != pg_sys::ObjectType::OBJECT_EXTENSION {
            return false;
        }
        let objects = (*stmt).objects;
        (0..if objects.is_null() { 0 } else { (*objects).length }).any(|i| {
            let node = (*(*objects).elements.add(i as usize)).ptr_value as *mut pg_sys::Node;
            !node.is_null()
                && (*node).type_ == pg_sys::NodeTag::T_String
                && !(*(node as *mut pg_sys::String)).sval.is_null()
                && std::ffi::CStr::from_ptr((*(node as *mut pg_sys::String)).sval).to_bytes() == b"pg_authz"
        })
    }
}

/// The `ddl_command_start` event trigger on DROP EXTENSION: refuse to drop pg_authz while it
/// still protects tables.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn authz_guard_drop_extension(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: PostgreSQL calls event trigger functions with an EventTriggerData context (null- and tag-checked).
    unsafe {
        // SAFETY: PostgreSQL calls event trigger functions with an EventTriggerData context.
        let data = (*fcinfo).context as *mut pg_sys::EventTriggerData;
        if data.is_null() || (*data).type_ != pg_sys::NodeTag::T_EventTriggerData || !drops_pg_authz((*data).parsetree)
        {
            return pg_sys::Datum::from(0usize);
        }
        let protected = privileged::run(Rights::Superuser, || {
            db::select_one::<i64>("SELECT pg_catalog.count(*) FROM authz.protected", &[])
        })
        .or_raise()
        .unwrap_or(0);
        if protected > 0 {
            AuthzError::new(
                PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                format!("pg_authz still protects {protected} table{}", if protected == 1 { "" } else { "s" }),
            )
            .detail(
                "Dropping it now would leave them under FORCE ROW LEVEL SECURITY with no policy: unreadable for everyone.",
            )
            .hint("Run SELECT authz.uninstall(); first, then DROP EXTENSION pg_authz.")
            .raise();
        }
        pg_sys::Datum::from(0usize)
    }
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION authz._guard_drop_extension() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'authz_guard_drop_extension';
REVOKE ALL ON FUNCTION authz._guard_drop_extension() FROM PUBLIC;
CREATE EVENT TRIGGER authz_guard_drop_extension ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION authz._guard_drop_extension();
"#,
    name = "guard_drop_extension",
    requires = ["bootstrap"],
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn versions_are_the_installed_sql_and_the_loaded_library() {
        let installed =
            Spi::get_one::<String>("SELECT extversion::text FROM pg_extension WHERE extname = 'pg_authz'").unwrap();
        assert_eq!(Spi::get_one::<String>("SELECT authz.version()").unwrap(), installed);
        assert_eq!(
            Spi::get_one::<String>("SELECT authz.library_version()").unwrap().as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }
}
