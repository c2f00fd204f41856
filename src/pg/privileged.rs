//! The privileged executor: every SQL statement pg_authz runs with rights its caller lacks goes
//! through `run`, and nothing else changes the current user.
//!
//! Two kinds of rights, and the environment both run in:
//! - `Rights::Superuser` reads and writes pg_authz's own tables (owned by the extension's owner,
//!   with no trigger, rule or default anyone else controls).
//! - `Rights::OwnerOf(rel)` reads or changes an application table as the role that owns it, the
//!   way PostgreSQL runs foreign-key checks: exempt from the owner's own FORCE ROW LEVEL SECURITY,
//!   inside a security-restricted operation. Whatever user code that table carries (triggers,
//!   casts of its column types, index expressions, defaults, view bodies) therefore runs with the
//!   rights of the role that wrote it, never with more.
//! - In both, `search_path` is `pg_catalog, pg_temp` (the caller's temporary schema searched last,
//!   so a temporary type or table can never stand in for a catalog one) and the settings that
//!   change how SQL text means are fixed; every statement still names its objects fully.
//!
//! Restoring: on return this function restores the user and pops its settings level itself; on
//! an ERROR, transaction or subtransaction abort does both (as for PostgreSQL's own
//! `SetUserIdAndSecContext` callers), so no state outlives the statement either way.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::pg::db;
use crate::pg::errors::{AuthzError, AuthzResult};

const SAVE: pg_sys::GucAction::Type = pg_sys::GucAction::GUC_ACTION_SAVE;
const ERROR: u32 = pgrx::PgLogLevel::ERROR as u32;

#[derive(Clone, Copy, Debug)]
pub enum Rights {
    Superuser,
    OwnerOf(pg_sys::Oid),
}

/// The settings a caller could use to change what pg_authz's SQL text means.
const PINNED_SETTINGS: &[(&CStr, &CStr)] = &[
    (c"search_path", c"pg_catalog, pg_temp"),
    (c"standard_conforming_strings", c"on"),
    (c"transform_null_equals", c"off"),
    (c"array_nulls", c"on"),
    (c"backslash_quote", c"safe_encoding"),
];

thread_local! {
    /// How many `run` frames are active: statements pg_authz runs for itself never carry the
    /// caller's identity to other nodes (they read pg_authz's tables, as their owner).
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Inside `run`: the statement being started is one of pg_authz's own.
pub fn active() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// After an ERROR: no `run` frame survives a (sub)transaction abort.
pub fn reset() {
    DEPTH.with(|d| d.set(0));
}

/// Citus's settings, applied when Citus defines them. pg_authz's tables are reference tables:
/// reading them from a statement a worker runs for a shard is a "nested distributed execution",
/// refused unless allowed — safe for these reads, as a reference table has a placement on every
/// node and is read locally. And the triggers `protect()` puts on a distributed table (soft delete)
/// need `enable_unsafe_triggers`: they act on the node they fire on only.
const CITUS_SETTINGS: &[&CStr] = &[c"citus.allow_nested_distributed_execution", c"citus.enable_unsafe_triggers"];

/// The role that owns a relation, or 42P01 when there is no such relation.
pub fn relation_owner(rel: pg_sys::Oid) -> AuthzResult<pg_sys::Oid> {
    // SAFETY: a syscache lookup by oid; the tuple is released before returning and only its fixed
    // part (pg_class's relowner, never null) is read.
    unsafe {
        let tuple =
            pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, pg_sys::Datum::from(rel.to_u32()));
        if tuple.is_null() {
            return Err(AuthzError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation with OID {} does not exist", rel.to_u32()),
            ));
        }
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple);
        let owner = (*form).relowner;
        pg_sys::ReleaseSysCache(tuple);
        Ok(owner)
    }
}

/// Run `f` with the given rights in the pinned environment.
pub fn run<T, E>(rights: Rights, f: impl FnOnce() -> Result<T, E>) -> AuthzResult<T>
where
    AuthzError: From<E>,
{
    let (user, flags) = match rights {
        Rights::Superuser => (pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID), pg_sys::SECURITY_LOCAL_USERID_CHANGE),
        Rights::OwnerOf(rel) => (
            relation_owner(rel)?,
            pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION | pg_sys::SECURITY_NOFORCE_RLS,
        ),
    };
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: plain calls into the backend's user-id and GUC machinery, in a transaction (every
    // caller runs inside a statement). The values set here are restored below, or by abort.
    let nest_level = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(user, saved_context | flags as i32);
        let level = pg_sys::NewGUCNestLevel();
        for (name, value) in PINNED_SETTINGS {
            db::set_config(name, value, pg_sys::GucContext::PGC_USERSET, SAVE, ERROR);
        }
        for name in CITUS_SETTINGS {
            // A lookup by a static name: NULL when Citus did not define the setting.
            if !pg_sys::GetConfigOption(name.as_ptr(), true, false).is_null() {
                db::set_config(name, c"on", pg_sys::GucContext::PGC_SUSET, SAVE, ERROR);
            }
        }
        level
    };
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = f();
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    // SAFETY: undoes exactly what was done above, at the level NewGUCNestLevel returned.
    unsafe {
        pg_sys::AtEOXact_GUC(true, nest_level);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
    }
    Ok(result?)
}

/// Refuse identifiers pg_authz would have to render that contain control characters: a newline
/// in a name is legal in PostgreSQL but has no business in a policy, and refusing it means no
/// rendered statement can ever be split by one.
pub fn require_printable_identifier(what: &str, ident: &str) -> AuthzResult<()> {
    if ident.chars().any(char::is_control) {
        return Err(AuthzError::invalid(format!("{what} name contains a control character"))
            .detail(format!("The name is {}.", crate::pg::text::printable(ident, 64)))
            .hint("Rename it without newlines, tabs or other control characters."));
    }
    Ok(())
}
