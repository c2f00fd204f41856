//! A Casbin model file (`[request_definition]`, `[policy_definition]`, `[role_definition]`,
//! `[policy_effect]`, `[matchers]`) read into the one shape pg_authz can map faithfully onto its
//! rules: who (subject through roles, or by name), where (an optional domain), what (the object,
//! compared by equality, a Casbin function or resource roles `g2`), and the action. Anything else
//! is refused with 22023 naming the construct: importing a different meaning would be worse.

use crate::pg::errors::{AuthzError, AuthzResult};
use crate::pg::text::printable;
use crate::policy::casbin::matcher::{self, Term};
use crate::policy::key_match::Function;

/// How a policy's effects combine (Casbin's `[policy_effect]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// `some(where (p.eft == allow))`: deny lines have no effect.
    AllowOverride,
    /// `some(where (p.eft == allow)) && !some(where (p.eft == deny))`: pg_authz's own rule.
    DenyOverride,
    /// `!some(where (p.eft == deny))`: allowed unless a deny matches.
    DefaultAllow,
    /// `priority(p.eft) || deny`: the first matching line (by priority, then file order) decides.
    Priority,
}

/// How a request's subject meets a policy's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectMatch {
    /// `g(r.sub, p.sub)`, or `g(r.sub, p.sub, r.dom)` with roles held per domain.
    Roles { per_domain: bool },
    /// `r.sub == p.sub`.
    Equal,
    /// `(r.sub == p.sub || p.sub == "*")`.
    EqualOrAny,
}

/// How a request's object meets a policy's object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectMatch {
    Equal,
    EqualOrAny,
    KeyMatch,
    Function(Function),
    /// `g2(r.obj, p.obj)`: resource roles.
    Group,
}

/// How a request's action meets a policy's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionMatch {
    Equal,
    EqualOrAny,
}

/// A model pg_authz can honour, with the positions of each part in `r` and `p`.
#[derive(Debug, Clone)]
pub struct CasbinModel {
    pub request: Vec<String>,
    pub policy: Vec<String>,
    pub effect: Effect,
    pub subject: (SubjectMatch, usize),
    pub domain: Option<usize>,
    pub object: (ObjectMatch, usize),
    pub action: (ActionMatch, usize),
    pub eft: Option<usize>,
    pub priority: Option<usize>,
    /// `g` is defined (with a domain when `g = _, _, _`).
    pub roles: Option<bool>,
    pub resource_roles: bool,
}

/// Request positions: the subject first, then an optional domain, the object and the action.
pub struct RequestSlots {
    pub subject: usize,
    pub domain: Option<usize>,
    pub object: usize,
    pub action: usize,
}

impl CasbinModel {
    pub fn slots(&self) -> RequestSlots {
        match self.request.len() {
            4 => RequestSlots { subject: 0, domain: Some(1), object: 2, action: 3 },
            _ => RequestSlots { subject: 0, domain: None, object: 1, action: 2 },
        }
    }

    /// `r = sub, obj, act`, for messages.
    pub fn request_definition(&self) -> String {
        format!("r = {}", self.request.join(", "))
    }
}

fn refuse(construct: impl Into<String>, why: impl Into<String>) -> AuthzError {
    AuthzError::invalid(format!("casbin model: {} is not supported", construct.into()))
        .detail(why.into())
        .hint("pg_authz imports request r = sub, [dom,] obj, act; roles g (optionally with a domain) and g2; the effects allow-override, deny-override, default-allow and priority; and matchers joining g(), ==, keyMatch, keyMatch2, keyMatch3, globMatch, regexMatch and p.x == \"*\" wildcards with &&.")
}

/// The `key = value` lines of each section, with Casbin's `\` line continuation.
fn sections(text: &str) -> AuthzResult<Vec<(String, String, String)>> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    let mut section: Option<String> = None;
    let mut pending = String::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if pending.is_empty() && line.starts_with('[') {
            let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
                return Err(AuthzError::invalid(format!("casbin model line {}: malformed section header", number + 1)));
            };
            section = Some(name.trim().to_string());
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            pending.push_str(continued.trim());
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let Some(section) = &section else {
            return Err(AuthzError::invalid(format!(
                "casbin model line {}: a definition outside any section",
                number + 1
            )));
        };
        let Some((key, value)) = full.split_once('=') else {
            return Err(AuthzError::invalid(format!("casbin model line {}: expected key = value", number + 1))
                .detail(format!("The line reads: {}", printable(&full, 200))));
        };
        out.push((section.clone(), key.trim().to_string(), value.trim().to_string()));
    }
    Ok(out)
}

fn field_list(value: &str, what: &str) -> AuthzResult<Vec<String>> {
    let fields: Vec<String> = value.split(',').map(|f| f.trim().to_string()).collect();
    if fields.iter().any(|f| f.is_empty() || !f.chars().all(|c| c.is_alphanumeric() || c == '_')) {
        return Err(AuthzError::invalid(format!("casbin model: malformed {what} \"{}\"", printable(value, 200))));
    }
    Ok(fields)
}

pub fn parse(text: &str) -> AuthzResult<CasbinModel> {
    let mut request = None;
    let mut policy = None;
    let mut effect_text = None;
    let mut matcher_text = None;
    let mut roles = None;
    let mut resource_roles = false;
    for (section, key, value) in sections(text)? {
        match (section.as_str(), key.as_str()) {
            ("request_definition", "r") => request = Some(field_list(&value, "request definition")?),
            ("policy_definition", "p") => policy = Some(field_list(&value, "policy definition")?),
            ("role_definition", "g") | ("role_definition", "g2") => {
                let arity = value.split(',').map(str::trim).collect::<Vec<_>>();
                if arity.iter().any(|a| *a != "_") || !(2..=3).contains(&arity.len()) {
                    return Err(refuse(format!("{key} = {value}"), "A role definition is _, _ or _, _, _."));
                }
                if key == "g" {
                    roles = Some(arity.len() == 3);
                } else if arity.len() == 3 {
                    return Err(refuse(
                        format!("{key} = {value}"),
                        "Resource roles with a domain have no faithful mapping onto pg_authz rules.",
                    ));
                } else {
                    resource_roles = true;
                }
            }
            ("policy_effect", "e") => effect_text = Some(value),
            ("matchers", "m") => matcher_text = Some(value),
            (s, k) => {
                return Err(refuse(
                    format!("[{s}] {k}"),
                    "Only r, p, g, g2, e and m are understood (one request and one policy type).",
                ))
            }
        }
    }
    let (Some(request), Some(policy), Some(effect_text), Some(matcher_text)) =
        (request, policy, effect_text, matcher_text)
    else {
        return Err(AuthzError::invalid("casbin model: incomplete model").detail(
            "A model needs r (request_definition), p (policy_definition), e (policy_effect) and m (matchers).",
        ));
    };
    if resource_roles && roles.is_none() {
        return Err(refuse(
            "g2 without g",
            "Casbin reads g2 only when g is defined (its model loader stops at the first missing gN).",
        ));
    }
    if !(3..=4).contains(&request.len()) {
        return Err(refuse(
            format!("r = {}", request.join(", ")),
            "A request is sub, obj, act or sub, dom, obj, act (subject first).",
        ));
    }
    let compact: String = effect_text.chars().filter(|c| !c.is_whitespace()).collect();
    let effect = match compact.as_str() {
        "some(where(p.eft==allow))" => Effect::AllowOverride,
        "some(where(p.eft==allow))&&!some(where(p.eft==deny))" => Effect::DenyOverride,
        "!some(where(p.eft==deny))" => Effect::DefaultAllow,
        "priority(p.eft)||deny" => Effect::Priority,
        _ => return Err(refuse(format!("e = {effect_text}"), "Unknown policy effect.")),
    };
    let position = |fields: &[String], name: &str| fields.iter().position(|f| f == name);
    let eft = position(&policy, "eft");
    let priority = position(&policy, "priority");
    if priority.is_some() && effect != Effect::Priority {
        return Err(refuse(
            "a priority field",
            "p.priority only has a meaning with the effect priority(p.eft) || deny.",
        ));
    }
    let mut model = CasbinModel {
        request,
        policy,
        effect,
        subject: (SubjectMatch::Equal, 0),
        domain: None,
        object: (ObjectMatch::Equal, 0),
        action: (ActionMatch::Equal, 0),
        eft,
        priority,
        roles,
        resource_roles,
    };
    compile_matcher(&mut model, &matcher_text)?;
    Ok(model)
}

/// Read the matcher into the model's subject, domain, object and action matching.
fn compile_matcher(model: &mut CasbinModel, text: &str) -> AuthzResult<()> {
    let terms = matcher::parse(text).map_err(|why| refuse(format!("m = {text}"), why))?;
    let slots = model.slots();
    let mut subject = None;
    let mut domain_eq = None;
    let mut object = None;
    let mut action = None;
    let mut g_domain_arg = None;
    let request_index = |name: &str| model.request.iter().position(|f| f == name);
    let policy_index = |name: &str| model.policy.iter().position(|f| f == name);
    for term in terms {
        let shown = term.to_string();
        // The request and policy fields a term compares, by position.
        let fields = |r: &str, p: &str| -> AuthzResult<(usize, usize)> {
            let ri = request_index(r).ok_or_else(|| refuse(&shown, format!("r has no field {r}")))?;
            let pi = policy_index(p).ok_or_else(|| refuse(&shown, format!("p has no field {p}")))?;
            Ok((ri, pi))
        };
        fn set_once<T>(slot: &mut Option<T>, value: T, shown: &str) -> AuthzResult<()> {
            if slot.replace(value).is_some() {
                return Err(refuse(shown, "each request field is matched by exactly one term"));
            }
            Ok(())
        }
        match &term {
            Term::Call { name, r, p, domain } if name == "g" => {
                let (ri, pi) = fields(r, p)?;
                let Some(per_domain) = model.roles else {
                    return Err(refuse(&shown, "the model defines no g in [role_definition]"));
                };
                if ri != slots.subject || per_domain != domain.is_some() {
                    return Err(refuse(&shown, "g relates the request's subject (first field) to p's, with r's domain exactly when g = _, _, _"));
                }
                if let Some(d) = domain {
                    g_domain_arg = Some(request_index(d).ok_or_else(|| refuse(&shown, format!("r has no field {d}")))?);
                }
                set_once(&mut subject, (SubjectMatch::Roles { per_domain }, pi), &shown)?;
            }
            Term::Call { name, r, p, domain: None } if name == "g2" => {
                let (ri, pi) = fields(r, p)?;
                if !model.resource_roles || ri != slots.object {
                    return Err(refuse(&shown, "g2 relates the request's object to p's, and needs g2 = _, _"));
                }
                set_once(&mut object, (ObjectMatch::Group, pi), &shown)?;
            }
            Term::Call { name, r, p, domain: None } => {
                let kind = match name.as_str() {
                    "keyMatch" => ObjectMatch::KeyMatch,
                    "keyMatch2" => ObjectMatch::Function(Function::KeyMatch2),
                    "keyMatch3" => ObjectMatch::Function(Function::KeyMatch3),
                    "globMatch" => ObjectMatch::Function(Function::GlobMatch),
                    "regexMatch" => ObjectMatch::Function(Function::RegexMatch),
                    _ => return Err(refuse(&shown, format!("the function {name} has no pg_authz equivalent"))),
                };
                let (ri, pi) = fields(r, p)?;
                if ri != slots.object {
                    return Err(refuse(
                        &shown,
                        "pg_authz rules carry a pattern for the object only; subjects, domains and actions are compared by equality",
                    ));
                }
                set_once(&mut object, (kind, pi), &shown)?;
            }
            Term::Call { .. } => return Err(refuse(&shown, "only g takes a domain argument")),
            Term::Equal { r, p, or_any } => {
                let (ri, pi) = fields(r, p)?;
                if Some(ri) == slots.domain {
                    if *or_any {
                        return Err(refuse(&shown, "a domain wildcard has no faithful mapping"));
                    }
                    set_once(&mut domain_eq, pi, &shown)?;
                } else if ri == slots.subject {
                    set_once(
                        &mut subject,
                        (if *or_any { SubjectMatch::EqualOrAny } else { SubjectMatch::Equal }, pi),
                        &shown,
                    )?;
                } else if ri == slots.object {
                    set_once(
                        &mut object,
                        (if *or_any { ObjectMatch::EqualOrAny } else { ObjectMatch::Equal }, pi),
                        &shown,
                    )?;
                } else {
                    set_once(
                        &mut action,
                        (if *or_any { ActionMatch::EqualOrAny } else { ActionMatch::Equal }, pi),
                        &shown,
                    )?;
                }
            }
        }
    }
    let missing =
        |what: &str| refuse(format!("m = {text}"), format!("the matcher does not compare the request's {what}"));
    model.subject = subject.ok_or_else(|| missing("subject"))?;
    model.object = object.ok_or_else(|| missing("object"))?;
    model.action = action.ok_or_else(|| missing("action"))?;
    if slots.domain.is_some() {
        model.domain = Some(domain_eq.ok_or_else(|| missing("domain (r.dom == p.dom)"))?);
    }
    if let (Some(g), Some(d)) = (g_domain_arg, slots.domain) {
        if g != d {
            return Err(refuse(format!("m = {text}"), "g's third argument must be the request's domain"));
        }
    }
    if model.roles.is_some() && !matches!(model.subject.0, SubjectMatch::Roles { .. }) {
        return Err(refuse("g = …", "the model defines g but its matcher does not use it"));
    }
    if model.resource_roles && model.object.0 != ObjectMatch::Group {
        return Err(refuse("g2 = _, _", "the model defines g2 but its matcher does not use it"));
    }
    if model.effect == Effect::Priority
        && (model.domain.is_some()
            || model.object.0 != ObjectMatch::Equal
            || model.action.0 != ActionMatch::Equal
            || model.subject.0 == SubjectMatch::EqualOrAny)
    {
        return Err(refuse(
            "priority(p.eft) || deny with patterns, wildcards or domains",
            "A priority policy is imported by deciding each (subject, object, action) the file names; that needs exact objects and actions and no domains.",
        ));
    }
    Ok(())
}
