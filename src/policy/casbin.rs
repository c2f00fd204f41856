//! `authz.import_casbin()`: Casbin policy lines into roles, rules and assignments, through the
//! same management functions (and checks) as any other change.

use pgrx::prelude::*;

use crate::pg::errors::{AuthzError, AuthzResult, OrRaise};
use crate::policy::admin::require_manage;

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
            .detail(format!("The line reads: {}", crate::pg::text::printable(trimmed, 200)))
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
                pattern: native_pattern(pattern),
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

/// A Casbin object (keyMatch: `*` matches anything, every other character is itself) as a
/// native pattern, where `?` is also a wildcard and `\` escapes: both are escaped, so the rule
/// means exactly what the file says.
fn native_pattern(object: &str) -> String {
    let mut out = String::with_capacity(object.len());
    for c in object.chars() {
        if c == '\\' || c == '?' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// pg_authz's built-in roles: importing them grants or denies everyone (or every owner).
const RESERVED_ROLES: [&str; 3] = ["anonymous", "authenticated", "owner"];

/// The comment line that lets a file use the built-in roles on purpose.
const RESERVED_DIRECTIVE: &str = "# pg_authz: allow-builtin-roles";

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
    // The built-in roles stand for everyone (or every owner): a file names them only on purpose.
    let reserved_allowed = policy.lines().any(|l| l.trim() == RESERVED_DIRECTIVE);
    for (number, line) in &parsed {
        let names: Vec<&str> = match line {
            CasbinLine::Policy { role, .. } => vec![role],
            CasbinLine::Grouping { member, role } => vec![member, role],
        };
        if let Some(name) = names.into_iter().find(|n| RESERVED_ROLES.contains(n)) {
            if !reserved_allowed {
                AuthzError::invalid(format!("casbin policy line {number} names the built-in role \"{name}\""))
                    .detail(format!("\"{name}\" is held by every caller pg_authz knows of that kind: the line would apply to all of them."))
                    .hint(format!("If that is the intent, add the line \"{RESERVED_DIRECTIVE}\" to the file."))
                    .raise();
            }
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
    for (number, line) in &parsed {
        // Errors raised inside the management functions are re-raised naming the line, keeping
        // their SQLSTATE; the whole import is one statement, so nothing is half-imported.
        pgrx::PgTryBuilder::new(|| apply_casbin_line(line, &role_names))
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
    // Casbin does not tell users from roles: a name that holds rules (or roles) and also appears
    // as a subject — a g line's first field, or an existing principal — holds its own role, so a
    // user with p lines of its own, or named as a g target, keeps them.
    let subjects: std::collections::HashSet<&String> = parsed
        .iter()
        .filter_map(|(_, l)| match l {
            CasbinLine::Grouping { member, .. } => Some(member),
            CasbinLine::Policy { .. } => None,
        })
        .collect();
    for name in &role_names {
        let exists = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT FROM authz.principals WHERE id OPERATOR(pg_catalog.=) $1)",
            &[name.as_str().into()],
        )
        .map_err(AuthzError::from)
        .or_raise()
        .unwrap_or(false);
        if !exists && !subjects.contains(name) {
            continue;
        }
        let result = if exists {
            Ok(())
        } else {
            Spi::run_with_args("SELECT authz.create_principal($1)", &[name.as_str().into()])
        }
        .and_then(|_| Spi::run_with_args("SELECT authz.assign_role($1, $1)", &[name.as_str().into()]));
        if let Err(e) = result {
            AuthzError::invalid(format!(
                "casbin subject \"{}\" could not hold its own role",
                crate::pg::text::printable(name, 64)
            ))
            .detail(e.to_string())
            .raise();
        }
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
}
