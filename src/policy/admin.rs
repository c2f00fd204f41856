//! Self-governing administration: managing principals, roles, rules and resource types is the
//! action `manage` on resource type `authz` (ids: principals, roles, rules, resource_types,
//! tables), so an application admin holding that permission can manage users through a token-bearing
//! session while the database enforces who may. Superusers and `authz_admin` members always may.
//!
//! The management functions themselves are thin SQL wrappers (sql/api.sql) that call
//! `authz._require_manage()` before looking at their arguments.

use pgrx::prelude::*;

use std::rc::Rc;

use crate::auth::identity;
use crate::auth::identity::Identity;
use crate::pg::db;
use crate::pg::errors::{AuthzError, AuthzResult, OrRaise};
use crate::pg::text::printable;
use crate::policy::model::{self, action_matches, Model, Pattern, Rule};
use crate::policy::resolve;
use crate::policy::resolve::Grant;

pub fn require_manage(area: &str) -> AuthzResult<()> {
    let caller = db::outer_user();
    if db::is_privileged(caller) {
        return Ok(());
    }
    let who = identity::current()?;
    if resolve::decide(&who, "authz", area, "manage")?.allowed {
        crate::audit::decision(&who.actor(), "authz", "manage", Some(area), true, None);
        return Ok(());
    }
    crate::audit::decision(&who.actor(), "authz", "manage", Some(area), false, None);
    Err(AuthzError::privilege(format!("permission denied to manage pg_authz {area}"))
        .detail(format!(
            "Role \"{}\" (identity: {}) holds no rule allowing manage on authz:{area}.",
            db::role_name(caller),
            who.user_id.as_deref().unwrap_or("anonymous")
        ))
        .hint(
            "A superuser or authz_admin member can grant it, e.g. SELECT authz.allow('admin', 'authz', '*', 'manage').",
        ))
}

/// Validate a rule pattern (22023 when malformed); used by the management functions.
#[pg_extern(immutable, parallel_safe)]
fn _validate_pattern(pattern: &str) {
    crate::policy::model::Pattern::parse(pattern).map(|_| ()).or_raise();
}

/// Raise 42501 unless the caller may manage this area of pg_authz. Called first by every
/// management function, before any argument is validated.
#[pg_extern(volatile)]
fn _require_manage(area: &str) {
    require_manage(area).or_raise();
}

/// True when the caller may manage this area (for applications that want to show or hide admin UI).
#[pg_extern(stable)]
fn can_manage(area: default!(&str, "'principals'")) -> bool {
    let caller = db::outer_user();
    if db::is_privileged(caller) {
        return true;
    }
    let who = identity::current().or_raise();
    resolve::decide(&who, "authz", area, "manage").or_raise().allowed
}

/// A delegate (a caller allowed to manage an area, but neither superuser nor `authz_admin`) and
/// what it holds; `None` for privileged callers, who may confer anything.
struct Delegate {
    who: Identity,
    model: Rc<Model>,
    grants: Rc<Vec<Grant>>,
}

fn delegate() -> AuthzResult<Option<Delegate>> {
    if db::is_privileged(db::outer_user()) {
        return Ok(None);
    }
    let who = identity::current()?;
    let model = model::current()?;
    let grants = resolve::grants(&model, &who)?;
    Ok(Some(Delegate { who, model, grants }))
}

impl Delegate {
    /// Does the delegate itself hold everything `rule` allows, within `scope`? Conservatively:
    /// an allow of its own on the same type, for the same action or `*`, with the same pattern
    /// or `*`, held unscoped or in exactly that scope — and no deny of its own that could
    /// take any of it away.
    fn holds(&self, rule: &Rule, scope: Option<(&str, &str)>) -> bool {
        let overlaps = |a: &str, b: &str| a == "*" || b == "*" || a == b;
        let rules_of = |role: &str| self.model.rules_by_role.get(role).into_iter().flatten();
        // A deny on the rule's type or on any ancestor type (a denied project takes its sessions
        // away) means the delegate does not hold all of it; an unknown chain counts as denied.
        let chain: Vec<String> = match self.model.type_chain(&rule.resource_type) {
            Ok(chain) => chain.iter().map(|t| t.name.clone()).collect(),
            Err(_) => return false,
        };
        let denied = self.grants.iter().any(|g| {
            rules_of(&g.role).any(|r| !r.allow && chain.contains(&r.resource_type) && overlaps(&r.action, &rule.action))
        });
        !denied
            && self.grants.iter().any(|g| {
                let in_scope = match (&g.scope, scope) {
                    (None, _) => true,
                    (Some((t, i)), Some((st, si))) => t == st && i == si,
                    (Some(_), None) => false,
                };
                in_scope
                    && rules_of(&g.role).any(|r| {
                        r.allow
                            && r.resource_type == rule.resource_type
                            && action_matches(&r.action, &rule.action)
                            && (matches!(r.pattern, Pattern::Any) || r.pattern_text == rule.pattern_text)
                    })
            })
    }

    fn require_holds_role(&self, role: &str, scope: Option<(&str, &str)>) -> AuthzResult<()> {
        for path in self.model.role_closure(role) {
            let Some(held) = path.last() else { continue };
            for rule in self.model.rules_by_role.get(held).into_iter().flatten() {
                if rule.allow && !self.holds(rule, scope) {
                    return Err(AuthzError::privilege(format!(
                        "permission denied to confer role \"{}\"",
                        printable(role, 64)
                    ))
                    .detail(format!(
                        "Through {} it allows {} on {}:{}, which {} does not hold{}.",
                        path.join(" -> "),
                        printable(&rule.action, 64),
                        printable(&rule.resource_type, 64),
                        printable(&rule.pattern_text, 64),
                        self.who.user_id.as_deref().unwrap_or("an anonymous caller"),
                        scope.map(|(t, i)| format!(" on {t}:{}", printable(i, 64))).unwrap_or_default()
                    ))
                    .hint("A delegate can only hand out permissions it holds itself; a superuser or authz_admin member can assign this role."));
                }
            }
        }
        Ok(())
    }
}

/// 42501 unless the caller may hand out `role` (in the given scope): privileged callers always
/// may; a delegate only when it holds every permission the role carries (see Delegate::holds).
#[pg_extern(stable)]
fn _require_may_confer(role: &str, resource_type: Option<&str>, resource_id: Option<&str>) {
    let Some(d) = delegate().or_raise() else { return };
    let scope = resource_type.zip(resource_id);
    d.require_holds_role(role, scope).or_raise();
}

/// 42501 unless the caller may confer everything `principal` holds (its own assignments and its
/// groups'): asked before making someone a member of a group or mapping a login to a principal.
#[pg_extern(stable)]
fn _require_may_confer_principal(principal: &str) {
    let Some(d) = delegate().or_raise() else { return };
    let target = Identity::of_principal(principal);
    let held = resolve::grants(&d.model, &target).or_raise();
    for g in held.iter() {
        d.require_holds_role(&g.role, g.scope.as_ref().map(|(t, i)| (t.as_str(), i.as_str())))
            .map_err(|e| {
                AuthzError::privilege(format!(
                    "permission denied to confer what principal \"{}\" holds",
                    printable(principal, 64)
                ))
                .detail(e.detail.unwrap_or_default())
                .hint("A delegate can only hand out permissions it holds itself.")
            })
            .or_raise();
    }
}

/// 42501 for a delegate: mapping a login to a principal decides who that login's user is (a
/// token-only user who owns rows, an existing login's identity), so only superusers and
/// `authz_admin` members map logins. (`principal` is kept for the SQL signature.)
#[pg_extern(stable)]
fn _require_may_map_login(db_role: &str, principal: default!(Option<&str>, "NULL")) {
    let _ = principal;
    if delegate().or_raise().is_some() {
        AuthzError::privilege(format!("permission denied to map login \"{}\"", printable(db_role, 64)))
            .detail("Mapping a login to a principal decides who that login's user is.")
            .hint("Only a superuser or authz_admin member maps logins.")
            .raise();
    }
}

/// 42501 unless the caller is a superuser or `authz_admin` member (decisions no delegate makes,
/// such as trusting the identity provider's claims for roles).
#[pg_extern(stable)]
fn _require_privileged(what: &str) {
    db::require_privileged(&printable(what, 64)).or_raise();
}

/// 42501 unless the caller may read every named column of `tbl` itself: registering a resource
/// type makes pg_authz read those columns (as the table's owner) and hand them out as ids, so it
/// must never become a way to read what the registering caller cannot. pg_authz's own tables and
/// the system catalogs are never resource tables.
#[pg_extern(stable)]
fn _require_readable_table(tbl: pg_sys::Oid, columns: Vec<Option<String>>) {
    crate::policy::model::require_resource_table(tbl).or_raise();
    let caller = db::outer_user();
    if db::is_superuser(caller) {
        return;
    }
    for column in columns.into_iter().flatten() {
        let readable = db::select_one::<bool>(
            "SELECT pg_catalog.has_column_privilege($1, $2, $3::pg_catalog.text, 'SELECT')",
            &[caller.into(), tbl.into(), column.as_str().into()],
        )
        .or_raise()
        .unwrap_or(false);
        if !readable {
            AuthzError::privilege(format!(
                "permission denied to register column \"{}\" of {} as resource ids",
                printable(&column, 64),
                db::qualified_name(tbl).unwrap_or_default()
            ))
            .detail("pg_authz reads a resource type's columns and hands them out as ids: the caller must be able to read them.")
            .hint("Register it as the table's owner, or GRANT SELECT on those columns first.")
            .raise();
        }
    }
}

/// 42501 when a delegate would remove something that carries a deny — an assignment of a role
/// (`kind` 'role': the role or what it inherits denies something), or a membership in or the
/// principal of a group (`kind` 'principal': what the group holds denies something): removing a
/// deny widens access, which a delegate may not do on its own behalf or anyone's.
#[pg_extern(stable)]
fn _require_may_remove(kind: &str, name: &str) {
    let Some(d) = delegate().or_raise() else { return };
    let roles: Vec<String> = match kind {
        "role" => vec![name.to_string()],
        "principal" => {
            let target = Identity::of_principal(name);
            resolve::grants(&d.model, &target).or_raise().iter().map(|g| g.role.clone()).collect()
        }
        _ => AuthzError::invalid(format!("unknown kind \"{}\"", printable(kind, 32))).raise(),
    };
    for role in roles {
        for path in d.model.role_closure(&role) {
            let Some(held) = path.last() else { continue };
            if d.model.rules_by_role.get(held).into_iter().flatten().any(|r| !r.allow) {
                AuthzError::privilege(format!(
                    "permission denied to remove what carries a deny (role \"{}\")",
                    printable(held, 64)
                ))
                .detail("Removing it would lift a deny, which widens access.")
                .hint("A superuser or authz_admin member can.")
                .raise();
            }
        }
    }
}

/// Which rules decide (principal, type, id, action), through which role, group or scope.
/// Users may explain their own access; explaining another principal's needs the right to manage.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn explain(
    principal: &str,
    resource_type: &str,
    id: &str,
    action: &str,
) -> TableIterator<
    'static,
    (
        name!(outcome, String),
        name!(effect, Option<String>),
        name!(rule_id, Option<i64>),
        name!(rule, Option<String>),
        name!(role, Option<String>),
        name!(granted_via, Option<String>),
        name!(matched, Option<String>),
    ),
> {
    let me = identity::current().or_raise();
    if me.user_id.as_deref() != Some(principal) {
        require_manage("principals").or_raise();
    }
    let subject = if me.user_id.as_deref() == Some(principal) { me } else { Identity::of_principal(principal) };
    let decision = resolve::decide(&subject, resource_type, id, action).or_raise();
    let outcome = if decision.allowed { "allow" } else { "deny" }.to_string();
    let mut rows: Vec<_> = decision
        .matches
        .iter()
        .map(|m| {
            (
                outcome.clone(),
                Some(if m.rule.allow { "allow" } else { "deny" }.to_string()),
                Some(m.rule.id),
                Some(m.rule.describe()),
                Some(m.grant.role.clone()),
                Some(m.grant.describe()),
                Some(m.matched.clone()),
            )
        })
        .collect();
    rows.push((outcome.clone(), None, None, Some(decision.reason), None, None, None));
    TableIterator::new(rows)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    #[should_panic(expected = "permission denied to manage pg_authz principals")]
    fn plain_roles_cannot_manage() {
        Spi::run("CREATE ROLE nobody_special; SET ROLE nobody_special; SELECT authz.create_principal('x')").unwrap();
    }
}
