//! From a Casbin model and policy to the native operations that mean the same thing: roles,
//! principals, assignments, inheritance and rules. Computed completely before anything is
//! applied, so a bad line is reported before any change.
//!
//! The mapping (README, "Casbin"):
//! - a policy subject is a role of that name; since Casbin's `g(x, x)` always holds, each name
//!   that is a role and also a subject (a p subject, a g member) is a principal holding its own
//!   role; a g member that is not a role is a principal assigned the role; g between roles is
//!   inheritance. `p.sub == "*"` is the built-in role `anonymous` (everyone).
//! - domains (`g = _, _, _`): role `r` in domain `d` is the role `d::r`; objects in domain `d` are
//!   the ids `d::obj` (patterns `domain(d)…` for Casbin functions). Domains never contain `::`.
//! - resource roles (`g2`): a rule on a group of objects is a rule on each of its members (and the
//!   group itself), resolved at import.
//! - effects: allow-override drops deny lines (they decide nothing), deny-override is pg_authz's
//!   own rule, default-allow is an allow for `anonymous` on every object and action of the types
//!   the file uses, with its deny lines; priority is decided at import for every subject and every
//!   (object, action) the file names, as rules on the subject's own role.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::pg::errors::{AuthzError, AuthzResult};
use crate::pg::text::printable;
use crate::policy::casbin::model_file::{ActionMatch, CasbinModel, Effect, ObjectMatch, SubjectMatch};
use crate::policy::casbin::policy_file::{line_error, PolicyLine};
use crate::policy::key_match::{self, FunctionPattern, DOMAIN_SEPARATOR};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    Role(String),
    Principal(String),
    Assign { principal: String, role: String },
    Inherit { role: String, inherits: String },
    Rule { role: String, resource_type: String, pattern: String, action: String, allow: bool },
}

/// One operation and the policy line it comes from (0: the model itself).
#[derive(Debug, Clone)]
pub struct Step {
    pub line: usize,
    pub op: Op,
}

/// What an import will do, and the object types it routes objects to.
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub object_types: BTreeSet<String>,
    seen: HashSet<Op>,
}

impl Plan {
    pub fn push(&mut self, line: usize, op: Op) {
        if self.seen.insert(op.clone()) {
            self.steps.push(Step { line, op });
        }
    }
}

/// pg_authz's built-in roles: importing them grants or denies everyone (or every owner).
pub const RESERVED_ROLES: [&str; 3] = ["anonymous", "authenticated", "owner"];

/// The comment line that lets a file use the built-in roles on purpose.
pub const RESERVED_DIRECTIVE: &str = "# pg_authz: allow-builtin-roles";

/// Above this many rules a priority policy is refused rather than expanded.
const MAX_DECIDED_RULES: usize = 100_000;

/// Where an object goes: `type:rest` when `type` is one of `known_types`, else `default_type`.
pub fn route_object<'a>(
    object: &'a str,
    default_type: Option<&'a str>,
    known_types: &HashSet<String>,
) -> Option<(&'a str, &'a str)> {
    if let Some((t, rest)) = object.split_once(':') {
        if known_types.contains(t) {
            return Some((t, rest));
        }
    }
    default_type.map(|d| (d, object))
}

/// A domain-qualified id or role name: `domain::name`.
pub fn qualified(domain: Option<&str>, name: &str) -> String {
    match domain {
        Some(d) => format!("{d}{DOMAIN_SEPARATOR}{name}"),
        None => name.to_string(),
    }
}

/// The stored pattern for an object of a rule (relative to its type).
fn object_pattern(kind: ObjectMatch, domain: Option<&str>, object: &str) -> Result<String, String> {
    let domain_prefix = domain.map(|d| key_match::escape_native(&qualified(Some(d), ""))).unwrap_or_default();
    Ok(match kind {
        ObjectMatch::Equal | ObjectMatch::Group => key_match::escape_native(&qualified(domain, object)),
        ObjectMatch::EqualOrAny if object == "*" => format!("{domain_prefix}*"),
        ObjectMatch::EqualOrAny => key_match::escape_native(&qualified(domain, object)),
        ObjectMatch::KeyMatch => format!("{domain_prefix}{}", key_match::key_match_as_native_glob(object)),
        ObjectMatch::Function(f) => {
            FunctionPattern::compile(f, object)?;
            match domain {
                Some(d) => format!("{}{}", key_match::stored_domain_prefix(d), f.stored(object)),
                None => f.stored(object),
            }
        }
    })
}

/// Roles are per domain only with `g = _, _, _`; otherwise global even when requests have a domain.
fn role_domain(per_domain: bool, domain: Option<&str>) -> Option<&str> {
    if per_domain {
        domain
    } else {
        None
    }
}

/// The policy fields of a p line, by the model's positions.
struct PLine<'a> {
    line: &'a PolicyLine,
    subject: &'a str,
    domain: Option<&'a str>,
    object: &'a str,
    action: &'a str,
    allow: bool,
}

fn read_p_lines<'a>(model: &CasbinModel, lines: &'a [PolicyLine], text: &str) -> AuthzResult<Vec<PLine<'a>>> {
    let raw = |l: &PolicyLine| text.lines().nth(l.number - 1).unwrap_or_default().to_string();
    let mut out = Vec::new();
    for l in lines.iter().filter(|l| l.key == "p") {
        if l.fields.len() != model.policy.len() {
            return Err(line_error(
                l.number,
                &raw(l),
                format!(
                    "p = {} has {} fields, the line {}",
                    model.policy.join(", "),
                    model.policy.len(),
                    l.fields.len()
                ),
            ));
        }
        let allow = match model.eft.map(|i| l.fields[i].as_str()) {
            None | Some("allow") => true,
            Some("deny") => false,
            Some(other) => {
                return Err(line_error(
                    l.number,
                    &raw(l),
                    format!("the effect must be allow or deny, not \"{}\"", printable(other, 32)),
                ))
            }
        };
        let domain = model.domain.map(|i| l.fields[i].as_str());
        if let Some(d) = domain {
            if d.contains(DOMAIN_SEPARATOR) {
                return Err(line_error(l.number, &raw(l), format!("a domain cannot contain \"{DOMAIN_SEPARATOR}\"")));
            }
        }
        out.push(PLine {
            line: l,
            subject: &l.fields[model.subject.1],
            domain,
            object: &l.fields[model.object.1],
            action: &l.fields[model.action.1],
            allow,
        });
    }
    Ok(out)
}

/// The native operations for a Casbin model and policy.
pub fn plan(
    model: &CasbinModel,
    lines: &[PolicyLine],
    text: &str,
    default_type: Option<&str>,
    known_types: &HashSet<String>,
) -> AuthzResult<Plan> {
    let raw = |n: usize| text.lines().nth(n.saturating_sub(1)).unwrap_or_default().to_string();
    let reserved_allowed = text.lines().any(|l| l.trim() == RESERVED_DIRECTIVE);
    let check_reserved = |n: usize, name: &str| -> AuthzResult<()> {
        if RESERVED_ROLES.contains(&name) && !reserved_allowed {
            return Err(AuthzError::invalid(format!("casbin policy line {n} names the built-in role \"{name}\""))
                .detail(format!("\"{name}\" is held by every caller pg_authz knows of that kind: the line would apply to all of them."))
                .hint(format!("If that is the intent, add the line \"{RESERVED_DIRECTIVE}\" to the file.")));
        }
        Ok(())
    };
    let p_lines = read_p_lines(model, lines, text)?;
    let per_domain = matches!(model.subject.0, SubjectMatch::Roles { per_domain: true });

    // g and g2 lines.
    let mut groupings: Vec<(&PolicyLine, &str, &str, Option<&str>)> = Vec::new();
    let mut resource_parents: HashMap<&str, Vec<&str>> = HashMap::new();
    for l in lines.iter().filter(|l| l.key != "p") {
        match (l.key.as_str(), model.roles) {
            ("g", Some(with_domain)) => {
                let want = if with_domain { 3 } else { 2 };
                if l.fields.len() != want {
                    return Err(line_error(
                        l.number,
                        &raw(l.number),
                        format!("g = {} takes {want} fields", vec!["_"; want].join(", ")),
                    ));
                }
                let domain = l.fields.get(2).map(String::as_str);
                if domain.is_some_and(|d| d.contains(DOMAIN_SEPARATOR)) {
                    return Err(line_error(
                        l.number,
                        &raw(l.number),
                        format!("a domain cannot contain \"{DOMAIN_SEPARATOR}\""),
                    ));
                }
                check_reserved(l.number, &l.fields[0])?;
                check_reserved(l.number, &l.fields[1])?;
                groupings.push((l, &l.fields[0], &l.fields[1], domain));
            }
            ("g2", _) if model.resource_roles => {
                if l.fields.len() != 2 {
                    return Err(line_error(l.number, &raw(l.number), "g2 = _, _ takes 2 fields"));
                }
                resource_parents.entry(&l.fields[0]).or_default().push(&l.fields[1]);
            }
            (key, _) => {
                return Err(line_error(l.number, &raw(l.number), format!("the model defines no {key}")));
            }
        }
    }
    for p in &p_lines {
        if !(model.subject.0 == SubjectMatch::EqualOrAny && p.subject == "*") {
            check_reserved(p.line.number, p.subject)?;
        }
    }

    let mut plan = Plan::default();
    if model.effect == Effect::Priority {
        decide_priorities(model, &p_lines, &groupings, default_type, known_types, &mut plan, text)?;
        return Ok(plan);
    }

    // Names that are roles, and names that are subjects, per domain (None: roles are global).
    let mut roles: Vec<(Option<&str>, &str, usize)> = Vec::new();
    let mut subjects: HashSet<(Option<&str>, &str)> = HashSet::new();
    for p in &p_lines {
        if model.subject.0 == SubjectMatch::EqualOrAny && p.subject == "*" {
            continue;
        }
        roles.push((role_domain(per_domain, p.domain), p.subject, p.line.number));
        subjects.insert((role_domain(per_domain, p.domain), p.subject));
    }
    for (l, member, role, domain) in &groupings {
        roles.push((*domain, role, l.number));
        subjects.insert((*domain, member));
    }
    let role_set: HashSet<(Option<&str>, &str)> = roles.iter().map(|(d, n, _)| (*d, *n)).collect();
    for (domain, name, line) in &roles {
        plan.push(*line, Op::Role(qualified(*domain, name)));
        if subjects.contains(&(*domain, *name)) {
            plan.push(*line, Op::Principal(name.to_string()));
            plan.push(*line, Op::Assign { principal: name.to_string(), role: qualified(*domain, name) });
        }
    }
    for (l, member, role, domain) in &groupings {
        if role_set.contains(&(*domain, *member)) {
            plan.push(l.number, Op::Inherit { role: qualified(*domain, member), inherits: qualified(*domain, role) });
        } else {
            plan.push(l.number, Op::Principal(member.to_string()));
            plan.push(l.number, Op::Assign { principal: member.to_string(), role: qualified(*domain, role) });
        }
    }

    // g2: the objects in a group, the group included (Casbin's g2(x, x) holds).
    let members_of = |group: &str| -> Vec<String> {
        let mut out = vec![group.to_string()];
        let mut seen: HashSet<String> = out.iter().cloned().collect();
        let mut i = 0;
        while i < out.len() {
            let current = out[i].clone();
            for (child, parents) in &resource_parents {
                if parents.iter().any(|p| *p == current) && seen.insert(child.to_string()) {
                    out.push(child.to_string());
                }
            }
            i += 1;
        }
        out
    };

    for p in &p_lines {
        let applies = match model.effect {
            Effect::AllowOverride => p.allow,
            Effect::DefaultAllow => !p.allow,
            _ => true,
        };
        if !applies {
            continue;
        }
        let n = p.line.number;
        let role = if model.subject.0 == SubjectMatch::EqualOrAny && p.subject == "*" {
            "anonymous".to_string()
        } else {
            qualified(role_domain(per_domain, p.domain), p.subject)
        };
        if model.action.0 == ActionMatch::Equal && p.action == "*" {
            return Err(line_error(
                n,
                &raw(n),
                "the action \"*\" means every action in pg_authz, but this matcher compares it literally",
            )
            .hint("Match actions with (r.act == p.act || p.act == \"*\") to make * a wildcard."));
        }
        let objects =
            if model.object.0 == ObjectMatch::Group { members_of(p.object) } else { vec![p.object.to_string()] };
        for object in objects {
            let Some((resource_type, rest)) = route_object(&object, default_type, known_types) else {
                return Err(line_error(
                    n,
                    &raw(n),
                    format!(
                        "the object \"{}\" has no type: prefix naming a registered resource type",
                        printable(&object, 64)
                    ),
                )
                .hint("Pass resource_type => '…' for objects without a prefix."));
            };
            plan.object_types.insert(resource_type.to_string());
            let pattern = object_pattern(model.object.0, p.domain, rest).map_err(|why| line_error(n, &raw(n), why))?;
            plan.push(n, Op::Role(role.clone()));
            plan.push(
                n,
                Op::Rule {
                    role: role.clone(),
                    resource_type: resource_type.to_string(),
                    pattern,
                    action: p.action.to_string(),
                    allow: p.allow,
                },
            );
        }
    }
    if model.effect == Effect::DefaultAllow {
        let mut types = plan.object_types.clone();
        types.extend(default_type.map(str::to_string));
        for t in types {
            plan.object_types.insert(t.clone());
            plan.push(
                0,
                Op::Rule {
                    role: "anonymous".into(),
                    resource_type: t,
                    pattern: "*".into(),
                    action: "*".into(),
                    allow: true,
                },
            );
        }
    }
    Ok(plan)
}

/// `priority(p.eft) || deny`: the first matching line decides. Decided here for every subject
/// the file names and every (object, action) it names, as exact rules on the subject's own role;
/// the roles themselves carry no rules (under deny-override a role's deny would beat a subject's
/// earlier allow).
fn decide_priorities(
    model: &CasbinModel,
    p_lines: &[PLine<'_>],
    groupings: &[(&PolicyLine, &str, &str, Option<&str>)],
    default_type: Option<&str>,
    known_types: &HashSet<String>,
    plan: &mut Plan,
    text: &str,
) -> AuthzResult<()> {
    let raw = |n: usize| text.lines().nth(n.saturating_sub(1)).unwrap_or_default().to_string();
    let mut ordered: Vec<&PLine<'_>> = p_lines.iter().collect();
    if let Some(i) = model.priority {
        let mut keyed = Vec::new();
        for p in ordered {
            let v = &p.line.fields[i];
            let Ok(priority) = v.parse::<u64>() else {
                return Err(line_error(p.line.number, &raw(p.line.number), "a priority is a non-negative integer"));
            };
            keyed.push((priority, p));
        }
        keyed.sort_by_key(|(priority, _)| *priority); // stable: file order breaks ties, as in PyCasbin
        ordered = keyed.into_iter().map(|(_, p)| p).collect();
    }
    let mut parents: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for (_, member, role, _) in groupings {
        parents.entry(member).or_default().push(role);
        names.insert(member);
        names.insert(role);
    }
    for p in p_lines {
        names.insert(p.subject);
    }
    let closure = |name: &str| -> HashSet<String> {
        let mut out = HashSet::from([name.to_string()]);
        let mut stack = vec![name.to_string()];
        while let Some(n) = stack.pop() {
            for p in parents.get(n.as_str()).into_iter().flatten() {
                if out.insert(p.to_string()) {
                    stack.push(p.to_string());
                }
            }
        }
        out
    };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for p in &ordered {
        if !pairs.contains(&(p.object, p.action)) {
            pairs.push((p.object, p.action));
        }
    }
    if names.len().saturating_mul(pairs.len()) > MAX_DECIDED_RULES {
        return Err(AuthzError::invalid("casbin priority policy too large to decide at import").detail(format!(
            "{} subjects × {} (object, action) pairs exceeds {MAX_DECIDED_RULES}.",
            names.len(),
            pairs.len()
        )));
    }
    for name in names {
        let held = closure(name);
        for (object, action) in &pairs {
            if *action == "*" {
                return Err(line_error(
                    0,
                    "",
                    "the action \"*\" means every action in pg_authz, but this matcher compares it literally",
                ));
            }
            let Some(first) =
                ordered.iter().find(|p| held.contains(p.subject) && p.object == *object && p.action == *action)
            else {
                continue;
            };
            let n = first.line.number;
            let Some((resource_type, rest)) = route_object(object, default_type, known_types) else {
                return Err(line_error(
                    n,
                    &raw(n),
                    format!(
                        "the object \"{}\" has no type: prefix naming a registered resource type",
                        printable(object, 64)
                    ),
                ));
            };
            plan.object_types.insert(resource_type.to_string());
            plan.push(n, Op::Role(name.to_string()));
            plan.push(n, Op::Principal(name.to_string()));
            plan.push(n, Op::Assign { principal: name.to_string(), role: name.to_string() });
            plan.push(
                n,
                Op::Rule {
                    role: name.to_string(),
                    resource_type: resource_type.to_string(),
                    pattern: key_match::escape_native(rest),
                    action: action.to_string(),
                    allow: first.allow,
                },
            );
        }
    }
    Ok(())
}
