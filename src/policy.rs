//! Self-governing administration: managing principals, roles, rules and resource types is the
//! action `manage` on resource type `authz` (ids: principals, roles, rules, resource_types,
//! tables), so an application admin holding that permission can manage users through a token-bearing
//! session while the database enforces who may. Superusers and `authz_admin` members always may.
//!
//! The management functions themselves are thin SQL wrappers (sql/api.sql) that call
//! `authz._require_manage()` before looking at their arguments.

use pgrx::prelude::*;

use std::rc::Rc;

use crate::errors::{AuthzError, AuthzResult, OrRaise};
use crate::identity::Identity;
use crate::keys::printable;
use crate::model::{self, action_matches, Model, Pattern, Rule};
use crate::resolve::Grant;
use crate::{db, identity, resolve};

pub fn require_manage(area: &str) -> AuthzResult<()> {
    let caller = db::outer_user();
    if db::is_privileged(caller) {
        return Ok(());
    }
    let who = identity::current()?;
    if resolve::decide(&who, "authz", area, "manage")?.allowed {
        crate::audit::decision(&who, "authz", "manage", Some(area), true, None);
        return Ok(());
    }
    crate::audit::decision(&who, "authz", "manage", Some(area), false, None);
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
        let denied = self.grants.iter().any(|g| {
            rules_of(&g.role)
                .any(|r| !r.allow && r.resource_type == rule.resource_type && overlaps(&r.action, &rule.action))
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
    let target = Identity { source: identity::Source::Token, user_id: Some(principal.to_string()), token: None };
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

/// 42501 when a delegate would move a login that already has an identity (mapping it to another
/// principal would let the delegate decide who that login's user is).
#[pg_extern(stable)]
fn _require_may_map_login(db_role: &str, principal: default!(Option<&str>, "NULL")) {
    if delegate().or_raise().is_none() {
        return;
    }
    let current = crate::privileged::run(crate::privileged::Rights::Superuser, || {
        db::select_one::<String>(
            "SELECT id FROM authz.principals WHERE db_role OPERATOR(pg_catalog.=) $1::pg_catalog.name",
            &[db_role.into()],
        )
    })
    .or_raise();
    if let Some(current) = current {
        if Some(current.as_str()) != principal {
            AuthzError::privilege(format!("permission denied to remap login \"{}\"", printable(db_role, 64)))
                .detail(format!("It is the identity of principal \"{}\".", printable(&current, 64)))
                .hint("Only a superuser or authz_admin member can move a login to another principal.")
                .raise();
        }
    }
}

/// One parsed Casbin line.
#[derive(Debug, PartialEq)]
enum CasbinLine {
    Policy { role: String, resource_type: String, pattern: String, action: String, allow: bool },
    Grouping { member: String, role: String },
}

fn parse_casbin_line(number: usize, line: &str) -> AuthzResult<Option<CasbinLine>> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let fields: Vec<&str> = trimmed.split(',').map(str::trim).collect();
    let bad = |why: &str| {
        AuthzError::invalid(format!("casbin policy line {number}: {why}"))
            .detail(format!("The line reads: {}", crate::keys::printable(trimmed, 200)))
    };
    if fields.iter().any(|f| f.is_empty()) {
        return Err(bad("empty field"));
    }
    match fields[0] {
        "p" => {
            if !(4..=5).contains(&fields.len()) {
                return Err(bad("a p line is: p, role, resource_type:pattern, action[, allow|deny]"));
            }
            let Some((resource_type, pattern)) = fields[2].split_once(':') else {
                return Err(bad("the object must be written resource_type:pattern, e.g. session:*"));
            };
            let allow = match fields.get(4).copied().unwrap_or("allow") {
                "allow" => true,
                "deny" => false,
                _ => return Err(bad("the effect must be allow or deny")),
            };
            Ok(Some(CasbinLine::Policy {
                role: fields[1].into(),
                resource_type: resource_type.into(),
                pattern: pattern.into(),
                action: fields[3].into(),
                allow,
            }))
        }
        "g" => {
            if fields.len() != 3 {
                return Err(bad("a g line is: g, user_or_role, role"));
            }
            Ok(Some(CasbinLine::Grouping { member: fields[1].into(), role: fields[2].into() }))
        }
        _ => Err(bad("lines start with p or g")),
    }
}

fn apply_casbin_line(line: &CasbinLine, role_names: &std::collections::HashSet<String>) {
    let result = match line {
        CasbinLine::Policy { role, resource_type, pattern, action, allow } => {
            Spi::run_with_args("SELECT authz._ensure_role($1)", &[role.as_str().into()]).and_then(|_| {
                Spi::run_with_args(
                    if *allow { "SELECT authz.allow($1, $2, $3, $4)" } else { "SELECT authz.deny($1, $2, $3, $4)" },
                    &[
                        role.as_str().into(),
                        resource_type.as_str().into(),
                        pattern.as_str().into(),
                        action.as_str().into(),
                    ],
                )
            })
        }
        CasbinLine::Grouping { member, role } => Spi::run_with_args(
            "SELECT authz._casbin_group($1, $2, $3)",
            &[member.as_str().into(), role.as_str().into(), role_names.contains(member).into()],
        ),
    };
    if let Err(e) = result {
        AuthzError::invalid("the line could not be applied").detail(e.to_string()).raise();
    }
}

/// Load Casbin policy lines. All or nothing: a bad line names its number and nothing is imported.
/// Returns the number of lines applied.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn import_casbin(policy: &str) -> i32 {
    require_manage("rules").or_raise();
    let mut parsed = Vec::new();
    for (i, line) in policy.lines().enumerate() {
        if let Some(l) = parse_casbin_line(i + 1, line).or_raise() {
            parsed.push((i + 1, l));
        }
    }
    // A name is a role if it already is one or if the policy uses it as one anywhere (subject of a
    // p line, target of a g line): decided before anything is applied, so line order cannot matter.
    let mut role_names = std::collections::HashSet::new();
    for (_, line) in &parsed {
        match line {
            CasbinLine::Policy { role, .. } => role_names.insert(role.clone()),
            CasbinLine::Grouping { role, .. } => role_names.insert(role.clone()),
        };
    }
    let mut applied = 0;
    for (number, line) in parsed {
        // Errors raised inside the management functions are re-raised naming the line, keeping
        // their SQLSTATE; the whole import is one statement, so nothing is half-imported.
        pgrx::PgTryBuilder::new(|| apply_casbin_line(&line, &role_names))
            .catch_others(|cause| {
                let (code, message) = match &cause {
                    pgrx::pg_sys::panic::CaughtError::PostgresError(e)
                    | pgrx::pg_sys::panic::CaughtError::ErrorReport(e)
                    | pgrx::pg_sys::panic::CaughtError::RustPanic { ereport: e, .. } => {
                        (e.sql_error_code(), e.message().to_string())
                    }
                };
                AuthzError::new(code, format!("casbin policy line {number} could not be applied"))
                    .detail(message)
                    .raise()
            })
            .execute();
        applied += 1;
    }
    applied
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::{parse_casbin_line, CasbinLine};
    use pgrx::prelude::*;

    #[pg_test]
    fn casbin_lines_parse() {
        assert_eq!(
            parse_casbin_line(1, "p, viewer, session:*, read").unwrap(),
            Some(CasbinLine::Policy {
                role: "viewer".into(),
                resource_type: "session".into(),
                pattern: "*".into(),
                action: "read".into(),
                allow: true
            })
        );
        assert!(parse_casbin_line(2, "p, viewer, session, read").is_err());
        assert!(parse_casbin_line(3, "x, a, b").is_err());
        assert_eq!(parse_casbin_line(4, "  # comment").unwrap(), None);
    }

    #[pg_test]
    #[should_panic(expected = "permission denied to manage pg_authz principals")]
    fn plain_roles_cannot_manage() {
        Spi::run("CREATE ROLE nobody_special; SET ROLE nobody_special; SELECT authz.create_principal('x')").unwrap();
    }
}
