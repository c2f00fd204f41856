//! Principal rows an identity depends on: which principal a database login is mapped to, and
//! whether a token's subject names a group (a group is never an identity). Read with pg_authz's
//! rights (the caller may not read the policy tables) and cached until the policy changes.

use std::cell::RefCell;

use pgrx::pg_sys;

use crate::pg::cache::{self, Dep, GenMap};
use crate::pg::db;
use crate::pg::errors::AuthzResult;
use crate::pg::privileged::{self, Rights};

thread_local! {
    static LOGINS: RefCell<GenMap<u32, Option<String>>> = RefCell::new(GenMap::with_capacity(1024, Dep::PolicyAndGrants));
    static GROUPS: RefCell<GenMap<String, bool>> = RefCell::new(GenMap::with_capacity(4096, Dep::PolicyAndGrants));
}

/// The user principal mapped to a database login, if any (a group mapped to a login, which the
/// API refuses, is no identity either).
pub fn for_login(role: pg_sys::Oid) -> AuthzResult<Option<String>> {
    if let Some(p) = LOGINS.with(|l| l.borrow_mut().get(&role.to_u32())) {
        return Ok(p);
    }
    let generation = cache::generation_of(Dep::PolicyAndGrants);
    cache::watch_policy_tables();
    let name = db::role_name(role);
    let principal = privileged::run(Rights::Superuser, || {
        db::select_one::<String>(
            "SELECT id FROM authz.principals
             WHERE db_role OPERATOR(pg_catalog.=) $1::pg_catalog.name AND kind OPERATOR(pg_catalog.=) 'user'",
            &[name.into()],
        )
    })?;
    LOGINS.with(|l| l.borrow_mut().insert(generation, role.to_u32(), principal.clone()));
    Ok(principal)
}

/// Is this principal id a group?
pub fn is_group(id: &str) -> AuthzResult<bool> {
    if let Some(g) = GROUPS.with(|g| g.borrow_mut().get(id)) {
        return Ok(g);
    }
    let generation = cache::generation_of(Dep::PolicyAndGrants);
    cache::watch_policy_tables();
    let group = privileged::run(Rights::Superuser, || {
        db::select_one::<bool>(
            "SELECT kind OPERATOR(pg_catalog.=) 'group' FROM authz.principals WHERE id OPERATOR(pg_catalog.=) $1",
            &[id.into()],
        )
    })?
    .unwrap_or(false);
    GROUPS.with(|g| g.borrow_mut().insert(generation, id.to_string(), group));
    Ok(group)
}
