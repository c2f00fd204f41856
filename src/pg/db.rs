//! Small helpers for talking to PostgreSQL from Rust: who the caller really is, quoting, and
//! single-value SPI reads. Running SQL with other rights is src/privileged.rs's job alone.

use std::ffi::CStr;

use pgrx::prelude::*;

use crate::pg::errors::{AuthzError, AuthzResult};

/// The role the caller acts as, ignoring any SECURITY DEFINER function on the stack: privilege
/// checks inside our own definer functions must judge the caller, not the function's owner.
pub fn outer_user() -> pg_sys::Oid {
    // SAFETY: returns an oid; no pointer is involved.
    unsafe { pg_sys::GetOuterUserId() }
}

pub fn session_user() -> pg_sys::Oid {
    // SAFETY: returns an oid; no pointer is involved.
    unsafe { pg_sys::GetSessionUserId() }
}

pub fn role_name(oid: pg_sys::Oid) -> String {
    // SAFETY: a syscache lookup; the returned name (or null, checked) is palloc'd and copied at once.
    unsafe {
        let name = pg_sys::GetUserNameFromId(oid, true);
        if name.is_null() {
            format!("oid {}", oid.to_u32())
        } else {
            CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }
}

pub fn is_superuser(role: pg_sys::Oid) -> bool {
    // SAFETY: a catalog check by oid.
    unsafe { pg_sys::superuser_arg(role) }
}

/// Member of `authz_admin` (directly or through other roles, inherited or not).
pub fn is_authz_admin(role: pg_sys::Oid) -> bool {
    // SAFETY: a role lookup by a static name, then a membership check by oid.
    unsafe {
        let admin = pg_sys::get_role_oid(c"authz_admin".as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::is_member_of_role(role, admin)
    }
}

/// 42501 unless the caller (ignoring SECURITY DEFINER frames) is a superuser or `authz_admin`
/// member: for what no delegate may do (keys, login and claim mappings, uninstalling).
pub fn require_privileged(what: &str) -> AuthzResult<()> {
    let caller = outer_user();
    if is_privileged(caller) {
        return Ok(());
    }
    Err(AuthzError::privilege(format!("permission denied to {what}"))
        .detail(format!("Role \"{}\" is neither a superuser nor a member of authz_admin.", role_name(caller)))
        .hint("Ask a superuser to GRANT authz_admin TO your role."))
}

/// Superuser or `authz_admin` member: may always manage pg_authz.
pub fn is_privileged(role: pg_sys::Oid) -> bool {
    is_superuser(role) || is_authz_admin(role)
}

/// Quote an identifier exactly as PostgreSQL's quote_ident() does.
pub fn quote_ident(ident: &str) -> String {
    match std::ffi::CString::new(ident) {
        // SAFETY: `c` is a NUL-terminated string; quote_identifier returns it or a palloc'd quoted copy, read at once.
        Ok(c) => unsafe { CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr())).to_string_lossy().into_owned() },
        // PostgreSQL names cannot contain NUL; quote defensively anyway.
        Err(_) => format!("\"{}\"", ident.replace('\0', "").replace('"', "\"\"")),
    }
}

/// Quote a string literal (standard_conforming_strings on; E'' never needed since we double quotes
/// and reject NUL, which PostgreSQL text cannot hold anyway).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Look up a relation's schema-qualified, quoted name.
pub fn qualified_name(rel: pg_sys::Oid) -> AuthzResult<String> {
    // SAFETY: syscache lookups by oid; returned names are null-checked and copied at once.
    unsafe {
        let relname = pg_sys::get_rel_name(rel);
        if relname.is_null() {
            return Err(AuthzError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation with OID {} does not exist", rel.to_u32()),
            ));
        }
        let nsp = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(rel));
        let relname = CStr::from_ptr(relname).to_string_lossy();
        let nsp = if nsp.is_null() { "".into() } else { CStr::from_ptr(nsp).to_string_lossy() };
        Ok(format!("{}.{}", quote_ident(&nsp), quote_ident(&relname)))
    }
}

/// The first column of the first row, or `None` when the query returns no row (pgrx's
/// `Spi::get_one` treats "no row" as an error).
pub fn select_one<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(
    query: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> AuthzResult<Option<T>> {
    Ok(Spi::connect(|client| {
        let table = client.select(query, Some(1), args)?;
        if table.is_empty() {
            Ok::<_, pgrx::spi::SpiError>(None)
        } else {
            table.first().get_one::<T>()
        }
    })?)
}

/// `set_config_option` for a session-sourced value: `GUC_ACTION_SAVE` sets it at the current
/// settings level (`NewGUCNestLevel`), undone when that level is popped or the transaction aborts.
pub fn set_config(
    name: &CStr,
    value: &CStr,
    context: pg_sys::GucContext::Type,
    action: pg_sys::GucAction::Type,
    elevel: u32,
) {
    // SAFETY: NUL-terminated name and value that outlive the call; PostgreSQL copies the value, and
    // an unacceptable one raises `elevel`.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            context,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            elevel as i32,
            false,
        );
    }
}
