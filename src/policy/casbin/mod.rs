//! Casbin as written: `authz.import_casbin(policy, model, resource_type, replace)` turns a Casbin
//! model and policy into native roles, assignments and rules (visible in `authz.rules`, honoured
//! by check(), require(), explain() and protect()), and `authz.enforce(VARIADIC text[])` answers
//! Casbin's enforce() in the model's request order with the imported model.
//!
//! - `model_file`, `matcher`: the model file and its matcher, refused unless it maps faithfully
//! - `policy_file`: the policy lines, read as PyCasbin reads them
//! - `plan`: the native operations a model and policy mean
//! - `apply`: running them through the management functions, recording what was created
//! - `enforce`: the request, mapped onto a native decision

mod apply;
mod enforce;
mod matcher;
mod model_file;
mod plan;
mod policy_file;

use std::collections::HashSet;

use pgrx::prelude::*;

use crate::pg::errors::{AuthzError, AuthzResult, OrRaise};
use crate::pg::text::printable;
use crate::policy::admin::require_manage;
use crate::policy::casbin::plan::{Op, Plan};
use crate::policy::casbin::policy_file::{line_error, PolicyLine};
use crate::policy::key_match;

/// Registered resource types (but the built-in `authz`, which Casbin objects never name by prefix).
fn registered_types() -> AuthzResult<HashSet<String>> {
    Ok(Spi::connect(|client| {
        let mut out = HashSet::new();
        for row in client.select(
            "SELECT t.name FROM authz.resource_types t WHERE t.name OPERATOR(pg_catalog.<>) 'authz'",
            None,
            &[],
        )? {
            out.extend(row.get::<String>(1)?);
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?)
}

fn role_exists(name: &str) -> AuthzResult<bool> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM authz.roles r WHERE r.name OPERATOR(pg_catalog.=) $1)",
        &[name.into()],
    )?
    .unwrap_or(false))
}

fn principal_exists(name: &str) -> AuthzResult<bool> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM authz.principals p WHERE p.id OPERATOR(pg_catalog.=) $1)",
        &[name.into()],
    )?
    .unwrap_or(false))
}

/// The one-argument form (no model): `p, role, type:object, action[, allow|deny]` with keyMatch
/// objects and deny-override, `g, member, role`. A name is a role if it already is one or the
/// policy uses it as one anywhere (decided before anything is applied, so line order cannot
/// matter); a role that is also a subject (a g member, or an existing principal) holds itself.
fn plan_without_model(lines: &[PolicyLine], text: &str, default_type: Option<&str>) -> AuthzResult<Plan> {
    let raw = |n: usize| text.lines().nth(n - 1).unwrap_or_default().to_string();
    let reserved_allowed = text.lines().any(|l| l.trim() == plan::RESERVED_DIRECTIVE);
    let mut role_names = HashSet::new();
    let mut subjects = HashSet::new();
    for l in lines {
        let names: Vec<&String> = match l.key.as_str() {
            "p" => {
                if !(3..=4).contains(&l.fields.len()) {
                    return Err(line_error(
                        l.number,
                        &raw(l.number),
                        "a p line is: p, role, resource_type:pattern, action[, allow|deny]",
                    ));
                }
                role_names.insert(l.fields[0].clone());
                vec![&l.fields[0]]
            }
            "g" => {
                if l.fields.len() != 2 {
                    return Err(line_error(l.number, &raw(l.number), "a g line is: g, user_or_role, role"));
                }
                role_names.insert(l.fields[1].clone());
                subjects.insert(l.fields[0].clone());
                vec![&l.fields[0], &l.fields[1]]
            }
            _ => return Err(line_error(l.number, &raw(l.number), "lines start with p or g")),
        };
        if let Some(name) = names.into_iter().find(|n| plan::RESERVED_ROLES.contains(&n.as_str())) {
            if !reserved_allowed {
                return Err(AuthzError::invalid(format!("casbin policy line {} names the built-in role \"{name}\"", l.number))
                    .detail(format!("\"{name}\" is held by every caller pg_authz knows of that kind: the line would apply to all of them."))
                    .hint(format!("If that is the intent, add the line \"{}\" to the file.", plan::RESERVED_DIRECTIVE)));
            }
        }
    }
    let mut plan = Plan::default();
    for l in lines {
        let n = l.number;
        if l.key == "p" {
            let (resource_type, object) = match l.fields[1].split_once(':') {
                Some(split) => split,
                None => match default_type {
                    Some(d) => (d, l.fields[1].as_str()),
                    None => {
                        return Err(line_error(
                            n,
                            &raw(n),
                            "the object must be written resource_type:pattern, e.g. session:*",
                        ))
                    }
                },
            };
            let allow = match l.fields.get(3).map(String::as_str).unwrap_or("allow") {
                "allow" => true,
                "deny" => false,
                _ => return Err(line_error(n, &raw(n), "the effect must be allow or deny")),
            };
            plan.push(n, Op::Role(l.fields[0].clone()));
            plan.push(
                n,
                Op::Rule {
                    role: l.fields[0].clone(),
                    resource_type: resource_type.to_string(),
                    pattern: key_match::key_match_as_native_glob(object),
                    action: l.fields[2].clone(),
                    allow,
                },
            );
        } else {
            let (member, role) = (&l.fields[0], &l.fields[1]);
            plan.push(n, Op::Role(role.clone()));
            if role_names.contains(member) || role_exists(member)? {
                plan.push(n, Op::Role(member.clone()));
                plan.push(n, Op::Inherit { role: member.clone(), inherits: role.clone() });
            } else {
                plan.push(n, Op::Principal(member.clone()));
                plan.push(n, Op::Assign { principal: member.clone(), role: role.clone() });
            }
        }
    }
    // Casbin does not tell users from roles: a role that is also a subject holds its own role.
    let mut names: Vec<&String> = role_names.iter().collect();
    names.sort();
    for name in names {
        if subjects.contains(name) || principal_exists(name)? {
            plan.push(0, Op::Principal(name.clone()));
            plan.push(0, Op::Assign { principal: name.clone(), role: name.clone() });
        }
    }
    Ok(plan)
}

/// Load a Casbin policy, interpreted with its model. All or nothing: an error names the line or
/// the model construct, and nothing is imported. Returns the number of policy lines read.
#[pg_extern(volatile, security_definer, name = "import_casbin")]
#[search_path(pg_catalog, pg_temp)]
fn import_casbin(
    policy: Option<&str>,
    model: default!(Option<&str>, "NULL"),
    resource_type: default!(Option<&str>, "NULL"),
    replace: default!(Option<bool>, "false"),
) -> i32 {
    require_manage("rules").or_raise();
    let Some(policy) = policy else {
        AuthzError::invalid("the policy must not be NULL").raise();
    };
    let known_types = registered_types().or_raise();
    if let Some(t) = resource_type {
        if !known_types.contains(t) {
            AuthzError::invalid(format!("unknown resource type \"{}\"", printable(t, 64)))
                .hint("Register it first: authz.register_resource_type(name) makes a virtual type (free-string ids).")
                .raise();
        }
    }
    let keys: &[&str] = if model.is_some() { &["p", "g", "g2"] } else { &["p", "g"] };
    let lines = policy_file::parse(policy, keys).or_raise();
    let plan = match model {
        None => plan_without_model(&lines, policy, resource_type).or_raise(),
        Some(text) => {
            let parsed = model_file::parse(text).or_raise();
            plan::plan(&parsed, &lines, policy, resource_type, &known_types).or_raise()
        }
    };
    if replace.unwrap_or(false) {
        apply::remove_previous_imports().or_raise();
    }
    apply::apply(&plan.steps);
    if let Some(text) = model {
        apply::store_model(text, resource_type, plan.object_types.iter().cloned().collect());
    }
    i32::try_from(lines.len()).unwrap_or(i32::MAX)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::{model_file, plan, plan::Op, plan_without_model, policy_file};
    use pgrx::prelude::*;

    fn rules_of(model: &str, text: &str) -> Vec<(String, String, bool)> {
        let model = model_file::parse(model).unwrap();
        let lines = policy_file::parse(text, &["p", "g", "g2"]).unwrap();
        let plan = plan::plan(&model, &lines, text, Some("obj"), &Default::default()).unwrap();
        let mut out: Vec<_> = plan
            .steps
            .iter()
            .filter_map(|s| match &s.op {
                Op::Rule { role, pattern, allow, .. } => Some((role.clone(), pattern.clone(), *allow)),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    #[pg_test]
    fn priority_is_decided_per_subject_and_domains_qualify_roles_and_ids() {
        let priority = "[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act, eft\n\
            [role_definition]\ng = _, _\n[policy_effect]\ne = priority(p.eft) || deny\n\
            [matchers]\nm = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act";
        // alice's own allow comes first; bob only has the group's deny.
        let text = "p, alice, data1, read, allow\np, g1, data1, read, deny\ng, alice, g1\ng, bob, g1";
        assert_eq!(
            rules_of(priority, text),
            vec![
                ("alice".into(), "data1".into(), true),
                ("bob".into(), "data1".into(), false),
                ("g1".into(), "data1".into(), false)
            ]
        );
        let domains = "[request_definition]\nr = sub, dom, obj, act\n[policy_definition]\np = sub, dom, obj, act\n\
            [role_definition]\ng = _, _, _\n[policy_effect]\ne = some(where (p.eft == allow))\n\
            [matchers]\nm = g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.obj == p.obj && r.act == p.act";
        assert_eq!(
            rules_of(domains, "p, admin, t1, data*, read\ng, alice, admin, t1"),
            vec![("t1::admin".into(), "t1::data\\*".into(), true)]
        );
    }

    #[pg_test]
    fn casbin_lines_without_a_model_keep_their_meaning() {
        let text = "p, viewer, session:*, read\n# comment\ng, alice, viewer";
        let lines = policy_file::parse(text, &["p", "g"]).unwrap();
        let plan = plan_without_model(&lines, text, None).unwrap();
        assert!(plan.steps.iter().any(|s| s.op
            == Op::Rule {
                role: "viewer".into(),
                resource_type: "session".into(),
                pattern: "*".into(),
                action: "read".into(),
                allow: true
            }));
        assert!(plan.steps.iter().any(|s| s.op == Op::Assign { principal: "alice".into(), role: "viewer".into() }));
        let bad = "p, viewer, session, read";
        assert!(plan_without_model(&policy_file::parse(bad, &["p", "g"]).unwrap(), bad, None).is_err());
    }
}
