//! The policy model as loaded from the policy tables: roles and their inheritance, rules, resource
//! types and claim mappings. Cached per backend until a policy table changes (the resource rows
//! themselves are read by src/policy/lineage.rs).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use pgrx::prelude::*;

use crate::pg::cache::{self, Generational};
use crate::pg::db;
use crate::pg::errors::{AuthzError, AuthzResult};
use crate::pg::privileged::{self, Rights};
use crate::policy::key_match;

/// A rule's id pattern: exact, `*`, or a glob with `*` and `?` (`\` escapes either); or, as
/// imported from Casbin, one of Casbin's functions (`keyMatch2(/users/:id)`, `keyMatch3(…)`,
/// `globMatch(…)`, `regexMatch(…)`) with PyCasbin's exact semantics, possibly restricted to one
/// Casbin domain (`domain(tenant1)inner`: ids `tenant1::…` whose rest matches `inner`). Those
/// prefixes are reserved: a literal id that starts like one escapes its first character.
///
/// Casbin patterns are carried as the sole token of a `Glob` (`GlobToken::Casbin`): the resolver
/// scans ids and calls `matches()` for every `Glob`, which is exactly what they need.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    Any,
    Exact(String),
    Glob(Vec<GlobToken>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum GlobToken {
    Char(char),
    AnyOne,
    AnyRun,
    /// A whole Casbin pattern; only ever the sole token of a `Pattern::Glob`.
    Casbin(Box<CasbinPattern>),
}

/// A pattern imported from Casbin.
#[derive(Debug, Clone, PartialEq)]
pub enum CasbinPattern {
    /// keyMatch2, keyMatch3, globMatch or regexMatch on the whole id.
    Function(key_match::FunctionPattern),
    /// Ids `domain::rest` whose `rest` matches the inner pattern.
    InDomain(String, Pattern),
}

impl CasbinPattern {
    fn into_pattern(self) -> Pattern {
        Pattern::Glob(vec![GlobToken::Casbin(Box::new(self))])
    }
}

impl Pattern {
    pub fn parse(text: &str) -> AuthzResult<Pattern> {
        if text.is_empty() || text.chars().any(|c| c.is_control()) {
            return Err(AuthzError::invalid("malformed pattern")
                .detail("A pattern is a non-empty id, \"*\", or a glob using * and ? without control characters."));
        }
        if text == "*" {
            return Ok(Pattern::Any);
        }
        let reserved = |why: String| {
            AuthzError::invalid(format!("malformed pattern \"{}\"", crate::pg::text::printable(text, 64)))
                .detail(why)
                .hint("keyMatch2(, keyMatch3(, globMatch(, regexMatch( and domain( start Casbin patterns; escape the first character (\\k…) for a literal id.")
        };
        if let Some(rest) = text.strip_prefix(key_match::DOMAIN_PREFIX) {
            let (domain, inner) = key_match::parse_stored_domain(rest).map_err(reserved)?;
            if inner.starts_with(key_match::DOMAIN_PREFIX) {
                return Err(reserved("a domain pattern cannot hold another domain pattern".into()));
            }
            return Ok(CasbinPattern::InDomain(domain, Pattern::parse(inner)?).into_pattern());
        }
        if let Some((function, argument)) = key_match::Function::parse_stored(text).map_err(reserved)? {
            return key_match::FunctionPattern::compile(function, argument)
                .map(|f| CasbinPattern::Function(f).into_pattern())
                .map_err(reserved);
        }
        let mut tokens = Vec::new();
        let mut wild = false;
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped) => tokens.push(GlobToken::Char(escaped)),
                    None => {
                        return Err(AuthzError::invalid(format!(
                            "malformed pattern \"{}\"",
                            crate::pg::text::printable(text, 64)
                        ))
                        .detail("The pattern ends with an unfinished escape (\\)."))
                    }
                },
                '*' => {
                    wild = true;
                    if tokens.last() != Some(&GlobToken::AnyRun) {
                        tokens.push(GlobToken::AnyRun);
                    }
                }
                '?' => {
                    wild = true;
                    tokens.push(GlobToken::AnyOne);
                }
                c => tokens.push(GlobToken::Char(c)),
            }
        }
        if wild {
            Ok(Pattern::Glob(tokens))
        } else {
            Ok(Pattern::Exact(tokens.iter().map(|t| if let GlobToken::Char(c) = t { *c } else { '?' }).collect()))
        }
    }

    pub fn matches(&self, id: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(s) => s == id,
            Pattern::Glob(tokens) => match tokens.as_slice() {
                [GlobToken::Casbin(c)] => match c.as_ref() {
                    CasbinPattern::Function(f) => f.matches(id),
                    CasbinPattern::InDomain(domain, inner) => id
                        .strip_prefix(domain.as_str())
                        .and_then(|rest| rest.strip_prefix(key_match::DOMAIN_SEPARATOR))
                        .is_some_and(|rest| inner.matches(rest)),
                },
                _ => glob_match(tokens, &id.chars().collect::<Vec<_>>()),
            },
        }
    }
}

/// Iterative wildcard matching with single backtrack point: linear in practice, no recursion.
fn glob_match(pattern: &[GlobToken], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(GlobToken::AnyRun) => {
                star = Some((p, t));
                p += 1;
            }
            Some(GlobToken::AnyOne) => {
                p += 1;
                t += 1;
            }
            Some(GlobToken::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    while pattern.get(p) == Some(&GlobToken::AnyRun) {
        p += 1;
    }
    p == pattern.len()
}

pub fn action_matches(rule_action: &str, action: &str) -> bool {
    rule_action == "*" || rule_action == action
}

#[derive(Debug)]
pub struct Rule {
    pub id: i64,
    pub role: String,
    pub resource_type: String,
    pub pattern_text: String,
    pub pattern: Pattern,
    pub action: String,
    pub allow: bool,
}

impl Rule {
    pub fn describe(&self) -> String {
        format!(
            "{} {} {}:{} {}",
            if self.allow { "allow" } else { "deny" },
            self.role,
            self.resource_type,
            self.pattern_text,
            self.action
        )
    }
}

#[derive(Debug)]
pub struct ResourceType {
    pub name: String,
    pub table: Option<pg_sys::Oid>,
    pub id_column: Option<String>,
    pub parent_type: Option<String>,
    pub parent_column: Option<String>,
    pub public_column: Option<String>,
    pub owner_column: Option<String>,
}

/// A token claim that names roles or groups (authz.map_claim()).
#[derive(Debug, Clone)]
pub struct ClaimMapping {
    pub claim: String,
    pub group: bool,
    pub prefix: String,
    pub issuer: Option<String>,
}

pub struct Model {
    pub generation: u64,
    pub roles: HashSet<String>,
    pub claim_mappings: Vec<ClaimMapping>,
    pub inherits: HashMap<String, Vec<String>>,
    pub rules_by_role: HashMap<String, Vec<Rc<Rule>>>,
    pub types: HashMap<String, Rc<ResourceType>>,
}

thread_local! {
    static MODEL: RefCell<Generational<Rc<Model>>> = const { RefCell::new(Generational::on(cache::Dep::Policy)) };
}

/// The current model, reloaded after any committed policy change.
pub fn current() -> AuthzResult<Rc<Model>> {
    if let Some(m) = MODEL.with(|m| m.borrow().get()) {
        return Ok(m);
    }
    let generation = cache::generation_of(cache::Dep::Policy);
    let model = Rc::new(load(generation)?);
    MODEL.with(|m| m.borrow_mut().set(generation, model.clone()));
    Ok(model)
}

type TypeRow = (String, Option<u32>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

fn load(generation: u64) -> AuthzResult<Model> {
    cache::watch_policy_tables();
    let (inheritance, rules, types, roles, claim_mappings) = privileged::run(Rights::Superuser, || {
        Spi::connect(|client| {
            let mut inheritance = Vec::new();
            for row in client.select("SELECT role, inherits FROM authz.role_inheritance ORDER BY 1, 2", None, &[])? {
                inheritance
                    .push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()));
            }
            let mut rules = Vec::new();
            for row in client.select(
                "SELECT id, role, resource_type, pattern, action, effect FROM authz.rules ORDER BY id",
                None,
                &[],
            )? {
                rules.push((
                    row.get::<i64>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<String>(3)?.unwrap_or_default(),
                    row.get::<String>(4)?.unwrap_or_default(),
                    row.get::<String>(5)?.unwrap_or_default(),
                    row.get::<String>(6)?.unwrap_or_default(),
                ));
            }
            let mut types: Vec<TypeRow> = Vec::new();
            for row in client.select(
                "SELECT name, tbl::pg_catalog.oid::pg_catalog.int8, id_column::pg_catalog.text, parent_type,
                        parent_column::pg_catalog.text, public_column::pg_catalog.text, owner_column::pg_catalog.text
                 FROM authz.resource_types",
                None,
                &[],
            )? {
                types.push((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<i64>(2)?.map(|o| o as u32),
                    row.get::<String>(3)?,
                    row.get::<String>(4)?,
                    row.get::<String>(5)?,
                    row.get::<String>(6)?,
                    row.get::<String>(7)?,
                ));
            }
            let mut roles = HashSet::new();
            for row in client.select("SELECT name FROM authz.roles", None, &[])? {
                roles.extend(row.get::<String>(1)?);
            }
            let mut mappings = Vec::new();
            // Absent while the SQL is still 0.2.0 or older (before ALTER EXTENSION … UPDATE).
            let has_mappings = client
                .select("SELECT pg_catalog.to_regclass('authz.claim_mappings') IS NOT NULL", None, &[])?
                .first()
                .get_one::<bool>()?
                .unwrap_or(false);
            let query = if has_mappings {
                "SELECT claim, kind OPERATOR(pg_catalog.=) 'group', prefix, issuer FROM authz.claim_mappings ORDER BY id"
            } else {
                "SELECT NULL::pg_catalog.text, false, NULL::pg_catalog.text, NULL::pg_catalog.text WHERE false"
            };
            for row in client.select(query, None, &[])? {
                mappings.push(ClaimMapping {
                    claim: row.get::<String>(1)?.unwrap_or_default(),
                    group: row.get::<bool>(2)?.unwrap_or(false),
                    prefix: row.get::<String>(3)?.unwrap_or_default(),
                    issuer: row.get::<String>(4)?,
                });
            }
            Ok::<_, pgrx::spi::SpiError>((inheritance, rules, types, roles, mappings))
        })
    })?;

    let mut inherits: HashMap<String, Vec<String>> = HashMap::new();
    for (role, parent) in inheritance {
        inherits.entry(role).or_default().push(parent);
    }
    let mut rules_by_role: HashMap<String, Vec<Rc<Rule>>> = HashMap::new();
    for (id, role, resource_type, pattern_text, action, effect) in rules {
        // Patterns were validated on the way in; an unparsable one can only match nothing.
        let Ok(pattern) = Pattern::parse(&pattern_text) else { continue };
        rules_by_role.entry(role.clone()).or_default().push(Rc::new(Rule {
            id,
            role,
            resource_type,
            pattern_text,
            pattern,
            action,
            allow: effect == "allow",
        }));
    }
    let mut type_map = HashMap::new();
    let mut table_oids = Vec::new();
    for (name, tbl, id_column, parent_type, parent_column, public_column, owner_column) in types {
        let table = tbl.map(pg_sys::Oid::from);
        table_oids.extend(table);
        type_map.insert(
            name.clone(),
            Rc::new(ResourceType { name, table, id_column, parent_type, parent_column, public_column, owner_column }),
        );
    }
    cache::watch(table_oids);
    Ok(Model { generation, roles, claim_mappings, inherits, rules_by_role, types: type_map })
}

impl Model {
    pub fn resource_type(&self, name: &str) -> AuthzResult<Rc<ResourceType>> {
        self.types.get(name).cloned().ok_or_else(|| {
            AuthzError::invalid(format!("unknown resource type \"{}\"", crate::pg::text::printable(name, 64)))
                .hint("Register it with authz.register_resource_type().")
        })
    }

    /// The type and its ancestors, nearest first.
    pub fn type_chain(&self, name: &str) -> AuthzResult<Vec<Rc<ResourceType>>> {
        let mut chain = vec![self.resource_type(name)?];
        while let Some(parent) = chain.last().and_then(|t| t.parent_type.clone()) {
            if chain.iter().any(|t| t.name == parent) || chain.len() > 32 {
                return Err(AuthzError::config(format!("resource type \"{name}\" has a cyclic parent chain")));
            }
            chain.push(self.resource_type(&parent)?);
        }
        Ok(chain)
    }

    /// A role's rules that reach `chain` (a type and its ancestors, nearest first) for `action`,
    /// each with the level of the chain it names.
    pub fn rules_reaching<'a>(
        &'a self,
        chain: &'a [Rc<ResourceType>],
        role: &str,
        action: &'a str,
    ) -> impl Iterator<Item = (usize, &'a Rc<Rule>)> + 'a {
        self.rules_by_role.get(role).into_iter().flatten().filter_map(move |r| {
            if !action_matches(&r.action, action) {
                return None;
            }
            chain.iter().position(|c| c.name == r.resource_type).map(|level| (level, r))
        })
    }

    /// The roles the principal in an owner column holds there (`owner` and what it inherits), if
    /// the identity has a principal and some type of `chain` has an owner column.
    pub fn owner_roles(&self, user: Option<&str>, chain: &[Rc<ResourceType>]) -> Vec<String> {
        if user.is_none() || !chain.iter().any(|t| t.owner_column.is_some()) {
            return Vec::new();
        }
        self.role_closure("owner").into_iter().filter_map(|mut path| path.pop()).collect()
    }

    /// Role and everything it inherits, each with the path that led to it (role first).
    pub fn role_closure(&self, role: &str) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![vec![role.to_string()]];
        while let Some(path) = stack.pop() {
            let Some(last) = path.last() else { continue };
            if !seen.insert(last.clone()) {
                continue;
            }
            if let Some(parents) = self.inherits.get(last) {
                for p in parents.iter().rev() {
                    let mut next = path.clone();
                    next.push(p.clone());
                    stack.push(next);
                }
            }
            out.push(path);
        }
        out
    }
}

/// Roles every caller (or every owner) holds by definition: never conferred by a claim.
pub const BUILTIN_ROLES: [&str; 3] = ["anonymous", "authenticated", "owner"];

/// The actions pg_authz's own templates and administration ask about.
pub const BUILTIN_ACTIONS: [&str; 8] =
    ["read", "write", "write_own", "delete", "delete_own", "restore", "purge", "manage"];

impl Model {
    /// Does any rule name this action (a `*` rule names none), or is it one pg_authz asks about?
    pub fn action_is_known(&self, action: &str) -> bool {
        BUILTIN_ACTIONS.contains(&action) || self.rules_by_role.values().flatten().any(|r| r.action == action)
    }
}

/// A resource type's table must be an ordinary or partitioned table: a view, foreign table or
/// materialized view would run code or read data its reader cannot see (42809 otherwise).
pub fn require_resource_table(table: pg_sys::Oid) -> AuthzResult<()> {
    // SAFETY: a syscache lookup by oid that returns a plain char (0 when there is no relation).
    let kind = unsafe { pg_sys::get_rel_relkind(table) } as u8;
    if kind != 0 {
        // SAFETY: syscache lookups by oid; the namespace name is copied at once (or null).
        let schema = unsafe {
            let nsp = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(table));
            if nsp.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(nsp).to_string_lossy().into_owned()
            }
        };
        if ["pg_catalog", "information_schema", "pg_toast", "authz"].contains(&schema.as_str()) {
            return Err(AuthzError::privilege(format!("{} cannot be a resource table", db::qualified_name(table)?))
                .detail("pg_authz never reads its own tables or the system catalogs as resource ids."));
        }
    }
    match kind {
        b'r' | b'p' => Ok(()),
        0 => Err(AuthzError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation with OID {} does not exist", table.to_u32()),
        )),
        _ => Err(AuthzError::new(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("{} is not a table", db::qualified_name(table)?),
        )
        .detail("A resource type lists its ids in an ordinary or partitioned table, read as that table's owner.")),
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::Pattern;
    use pgrx::prelude::*;

    #[pg_test]
    fn globs_match_like_casbin_key_match() {
        let p = Pattern::parse("lb12345-*").unwrap();
        assert!(p.matches("lb12345-20"));
        assert!(!p.matches("lb12346-20"));
        let q = Pattern::parse("s?-*-x").unwrap();
        assert!(q.matches("s1-abc-x"));
        assert!(!q.matches("s12-abc-x"));
        assert_eq!(Pattern::parse("a\\*b").unwrap(), Pattern::Exact("a*b".into()));
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("bad\\").is_err());
        assert!(Pattern::parse("*").unwrap().matches("anything"));
    }
}
