//! The resolver: which ids of a resource type may the current identity use for an action?
//!
//! Decision: default deny; a deny that matches through any of the principal's roles beats every
//! allow (public readability included); otherwise allowed if any allow matches or, for `read`, the
//! resource or one of its ancestors is public. A rule on a parent covers its children; a scoped role
//! assignment applies only to its resource and that resource's descendants.
//!
//! A set is computed from the caller's grants, not from the whole type: the rows its rules, scopes,
//! ownership and public flags can reach are read by index probes (src/policy/lineage.rs) and
//! decided one by one. A caller whose rules allow every id of the type (`type:*`, unscoped) gets the
//! complement instead: the ids its denies take away. Sets are cached per backend by (principal,
//! authenticated, claims, type, action) until the grants, the policy or the rows of one of the
//! type chain's tables change.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::prelude::*;

use crate::audit;
use crate::auth::identity::{self, Identity};
use crate::pg::cache::{self, Dep, GenMap};
use crate::pg::errors::{AuthzError, AuthzResult, OrRaise};
use crate::pg::privileged::{self, Rights};
use crate::pg::text::printable;
use crate::policy::lineage;
use crate::policy::model::{self, action_matches, Model, Pattern, Rule};

/// One role a principal holds, with how it came to hold it.
#[derive(Debug, Clone)]
pub struct Grant {
    pub role: String,
    pub scope: Option<(String, String)>,
    /// The principal (the user or one of its groups) the assignment was made to, or a pseudo-role reason.
    pub via: String,
    /// The inheritance path from the assigned role to `role`.
    pub role_path: Vec<String>,
}

impl Grant {
    pub fn describe(&self) -> String {
        let mut s = format!("role {} via {}", self.role_path.join(" -> "), self.via);
        if let Some((t, id)) = &self.scope {
            s.push_str(&format!(" on {t}:{id}"));
        }
        s
    }
}

/// The ids permitted for one (identity, type, action), plus what decided it for the audit log.
#[derive(Debug)]
pub struct Permitted {
    pub resource_type: String,
    pub action: String,
    /// The permitted ids; with `complement`, the ids taken away from "every id of the type".
    pub ids: Vec<String>,
    pub complement: bool,
    /// The number of ids of the type (an estimate for large tables: the planner's).
    pub total: usize,
    pub deciding_rules: Vec<i64>,
    typed: RefCell<HashMap<&'static str, Rc<dyn std::any::Any>>>,
}

impl Permitted {
    /// A set resolved elsewhere (the parallel leader's handoff).
    pub fn from_parts(
        resource_type: &str,
        action: &str,
        ids: Vec<String>,
        complement: bool,
        total: usize,
    ) -> Permitted {
        Permitted {
            resource_type: resource_type.to_string(),
            action: action.to_string(),
            ids,
            complement,
            total,
            deciding_rules: Vec::new(),
            typed: RefCell::new(HashMap::new()),
        }
    }

    /// What the audit log records of this set.
    pub fn outcome(&self) -> crate::audit::SetOutcome<'_> {
        crate::audit::SetOutcome {
            resource_type: &self.resource_type,
            action: &self.action,
            permitted: self.permitted_count(),
            total: self.total,
            deciding_rules: &self.deciding_rules,
        }
    }

    /// How many ids are permitted (for a complement, estimated from the type's size).
    pub fn permitted_count(&self) -> usize {
        if self.complement {
            self.total.saturating_sub(self.ids.len())
        } else {
            self.ids.len()
        }
    }

    /// The permitted ids themselves: a complement is enumerated (every stored id of the type but
    /// the excluded ones), once per set — only for an index condition a cached plan made for another
    /// caller, or for `permitted_ids()`.
    pub fn listed(&self) -> AuthzResult<Rc<Vec<String>>> {
        if !self.complement {
            return Ok(self.typed("listed", |ids| ids.to_vec()));
        }
        if let Some(existing) = self.typed.borrow().get("listed") {
            if let Ok(t) = existing.clone().downcast::<Vec<String>>() {
                return Ok(t);
            }
        }
        let model = model::current()?;
        let rt = model.resource_type(&self.resource_type)?;
        let excluded: std::collections::HashSet<&String> = self.ids.iter().collect();
        let mut all: Vec<String> = lineage::load_all(&rt)?.into_iter().filter(|id| !excluded.contains(id)).collect();
        sort_ids(&mut all);
        let listed = Rc::new(all);
        self.typed.borrow_mut().insert("listed", listed.clone());
        Ok(listed)
    }

    /// A typed lookup structure built once per set and shared by every statement that uses it.
    pub fn typed<T: 'static>(&self, kind: &'static str, build: impl FnOnce(&[String]) -> T) -> Rc<T> {
        if let Some(existing) = self.typed.borrow().get(kind) {
            if let Ok(t) = existing.clone().downcast::<T>() {
                return t;
            }
        }
        let built = Rc::new(build(&self.ids));
        self.typed.borrow_mut().insert(kind, built.clone());
        built
    }
}

/// (principal, fingerprint of its grants, type, action).
type SetKey = (Option<String>, u64, String, String);

/// A cached set: the data stamp it was computed under, what it read.
type CachedSet = (u64, Rc<lineage::Reads>, Rc<Permitted>);

const MAX_CACHED: usize = 4096;

thread_local! {
    /// Grants with a fingerprint of what sets depend on (each role and its scope).
    static GRANTS: RefCell<GenMap<(Option<String>, bool, u64), (Rc<Vec<Grant>>, u64)>> = RefCell::new(GenMap::with_capacity(MAX_CACHED, Dep::PolicyAndGrants));
    /// Sets with the data stamp of their type chain's tables and the fingerprint of the grants
    /// they were computed from: a new row in one resource table re-resolves only the sets over that
    /// table, and a grant to someone else costs a reader one grants query, not its sets.
    /// And what each read of the resource tables, by change key (src/pg/changes.rs): a new session
    /// under a project the set never read leaves it alone.
    static SETS: RefCell<GenMap<SetKey, CachedSet>> = RefCell::new(GenMap::with_capacity(MAX_CACHED, Dep::Policy));
}

/// What an identity's token claims through the mappings (authz.map_claim()): roles held unscoped,
/// and group principals whose assignments (and their ancestors') it holds, each with the claim
/// that named it. Empty without a token or without mappings.
#[derive(Default, Debug, Clone, Hash, PartialEq, Eq)]
pub struct Claimed {
    pub roles: Vec<(String, String)>,
    pub groups: Vec<(String, String)>,
    pub ignored: usize,
}

impl Claimed {
    /// Part of every cache key: two tokens for one subject may claim different roles.
    fn fingerprint(&self) -> u64 {
        if self.roles.is_empty() && self.groups.is_empty() {
            return 0;
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.roles.hash(&mut h);
        self.groups.hash(&mut h);
        h.finish() | 1
    }
}

pub fn claimed(model: &Model, identity: &Identity) -> Claimed {
    let mut out = Claimed::default();
    let Some(token) = &identity.token else { return out };
    for m in &model.claim_mappings {
        if m.issuer.is_some() && m.issuer != token.iss {
            continue;
        }
        let values: Vec<&str> = match crate::auth::token::lookup_path(token.claims(), &m.claim) {
            Some(serde_json::Value::String(v)) => vec![v.as_str()],
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        for v in values {
            let name = format!("{}{v}", m.prefix);
            if m.group {
                if !out.groups.iter().any(|(g, _)| *g == name) {
                    out.groups.push((name, m.claim.clone()));
                }
            } else if model.roles.contains(&name) && !crate::policy::model::BUILTIN_ROLES.contains(&name.as_str()) {
                if !out.roles.iter().any(|(r, _)| *r == name) {
                    out.roles.push((name, m.claim.clone()));
                }
            } else {
                out.ignored += 1;
            }
        }
    }
    out.roles.sort();
    out.groups.sort();
    out
}

/// Every role the identity holds: its own and its groups' assignments, the roles and groups its
/// token claims (through the claim mappings), inherited roles, and the pseudo-roles `anonymous`
/// (everyone) and `authenticated` (any verified identity).
pub fn grants(model: &Model, identity: &Identity) -> AuthzResult<Rc<Vec<Grant>>> {
    Ok(grants_with_fingerprint(model, identity)?.0)
}

fn grants_with_fingerprint(model: &Model, identity: &Identity) -> AuthzResult<(Rc<Vec<Grant>>, u64)> {
    let claims = claimed(model, identity);
    let key = (identity.user_id.clone(), identity.authenticated(), claims.fingerprint());
    if let Some(g) = GRANTS.with(|c| c.borrow_mut().get(&key)) {
        return Ok(g);
    }
    let generation = GRANTS.with(|c| c.borrow().current_generation());
    let mut assigned: Vec<(String, Option<(String, String)>, String)> =
        vec![("anonymous".into(), None, "everyone".into())];
    if identity.authenticated() {
        assigned.push(("authenticated".into(), None, "verified identity".into()));
    }
    for (role, claim) in &claims.roles {
        assigned.push((role.clone(), None, format!("claim {claim}")));
    }
    let mut mapped_groups = 0;
    if let Some(user) = &identity.user_id {
        let claimed_groups: Vec<String> = claims.groups.iter().map(|(g, _)| g.clone()).collect();
        // The group chain goes through an array so the planner probes the assignments index (a
        // join on the CTE was estimated at 100 rows and hashed the whole table: 5 ms at 20,000
        // assignments; this is 0.3 ms). Claimed groups join the chain only if they are group
        // principals; the query without them keeps the plan measured for the common case.
        let claimed_branch = if claimed_groups.is_empty() {
            ""
        } else {
            "UNION
                     SELECT p.id FROM authz.principals p
                     WHERE p.id OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[])
                       AND p.kind OPERATOR(pg_catalog.=) 'group'"
        };
        let query = format!(
            "SELECT a.role, a.resource_type, a.resource_id, a.principal
             FROM authz.role_assignments a
             WHERE a.principal OPERATOR(pg_catalog.=) ANY (ARRAY(
                 WITH RECURSIVE chain(id) AS (
                     SELECT $1::pg_catalog.text
                     {claimed_branch}
                     UNION
                     SELECT m.group_id FROM authz.memberships m JOIN chain c ON m.member_id OPERATOR(pg_catalog.=) c.id)
                 SELECT id FROM chain))
             ORDER BY a.id"
        );
        let rows = privileged::run(Rights::Superuser, || {
            Spi::connect(|client| {
                let mut rows = Vec::new();
                let args: Vec<pgrx::datum::DatumWithOid> = if claimed_groups.is_empty() {
                    vec![user.as_str().into()]
                } else {
                    vec![user.as_str().into(), claimed_groups.clone().into()]
                };
                for row in client.select(&query, None, &args)? {
                    let role = row.get::<String>(1)?.unwrap_or_default();
                    let scope = match (row.get::<String>(2)?, row.get::<String>(3)?) {
                        (Some(t), Some(id)) => Some((t, id)),
                        _ => None,
                    };
                    rows.push((role, scope, row.get::<String>(4)?.unwrap_or_default()));
                }
                Ok::<_, pgrx::spi::SpiError>(rows)
            })
        })?;
        for (role, scope, via) in rows {
            let via = match claims.groups.iter().find(|(g, _)| *g == via) {
                Some((g, claim)) => {
                    mapped_groups += 1;
                    format!("{g} (claim {claim})")
                }
                None => via,
            };
            assigned.push((role, scope, via));
        }
    }
    if !claims.roles.is_empty() || !claims.groups.is_empty() || claims.ignored > 0 {
        audit::claims_mapped(&identity.actor(), claims.roles.len(), claims.groups.len(), mapped_groups, claims.ignored);
    }
    let mut out = Vec::new();
    for (role, scope, via) in assigned {
        for path in model.role_closure(&role) {
            let Some(effective) = path.last().cloned() else { continue };
            out.push(Grant { role: effective, scope: scope.clone(), via: via.clone(), role_path: path });
        }
    }
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut held: Vec<(&str, Option<&(String, String)>)> =
            out.iter().map(|g| (g.role.as_str(), g.scope.as_ref())).collect();
        held.sort_unstable();
        held.dedup();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        held.hash(&mut h);
        h.finish()
    };
    let out = (Rc::new(out), fingerprint);
    GRANTS.with(|c| c.borrow_mut().insert(generation, key, out.clone()));
    Ok(out)
}

/// Ids in a stable order: numeric when every id is an integer, else by text.
fn sort_ids(ids: &mut [String]) {
    if ids.iter().all(|i| i.parse::<i64>().is_ok()) {
        ids.sort_by_cached_key(|i| i.parse::<i64>().unwrap_or(0));
    } else {
        ids.sort();
    }
}

/// The ids of `chain[level]` a rule's pattern names (loaded).
fn pattern_ids(chain: &[Rc<model::ResourceType>], level: usize, pattern: &Pattern) -> AuthzResult<Vec<String>> {
    let rt = &chain[level];
    match pattern {
        Pattern::Exact(id) => {
            lineage::load_ids(rt, std::slice::from_ref(id))?;
            Ok(lineage::row(rt, id).map(|r| r.id).into_iter().collect())
        }
        Pattern::Any => lineage::load_all(rt),
        _ => Ok(lineage::load_all(rt)?.into_iter().filter(|id| pattern.matches(id)).collect()),
    }
}

fn compute(
    model: &Model,
    identity: &Identity,
    chain: &[Rc<model::ResourceType>],
    resource_type: &str,
    action: &str,
) -> AuthzResult<Permitted> {
    let level_of = |t: &str| chain.iter().position(|c| c.name == t);
    let grants = grants(model, identity)?;
    let mut unscoped: Vec<&str> = Vec::new();
    let mut scoped: Vec<(&str, Vec<(usize, &str)>)> = Vec::new();
    for grant in grants.iter() {
        match &grant.scope {
            None => {
                if !unscoped.contains(&grant.role.as_str()) {
                    unscoped.push(&grant.role);
                }
            }
            Some((scope_type, scope_id)) => {
                let Some(level) = level_of(scope_type) else { continue };
                match scoped.iter_mut().find(|(r, _)| *r == grant.role) {
                    Some((_, scopes)) => scopes.push((level, scope_id)),
                    None => scoped.push((&grant.role, vec![(level, scope_id.as_str())])),
                }
            }
        }
    }
    // A role's rules are the same in every scope it is held in: held unscoped, its scopes add nothing.
    scoped.retain(|(r, _)| !unscoped.contains(r));
    let owner_paths = model.owner_roles(identity.user_id.as_deref(), chain);
    let owner_roles: Vec<&str> = owner_paths.iter().map(String::as_str).collect();
    // Each role's rules that reach this chain for this action, with the level they name.
    let roles: Vec<&str> =
        unscoped.iter().chain(scoped.iter().map(|(r, _)| r)).chain(owner_roles.iter()).copied().collect();
    let reaching: HashMap<&str, Vec<(usize, Rc<Rule>)>> = roles
        .iter()
        .map(|r| (*r, model.rules_reaching(chain, r, action).map(|(l, rule)| (l, rule.clone())).collect()))
        .collect();
    let read = action == "read";
    // Every id of the type itself allowed by an unscoped rule: the set is what the denies take away.
    let complement = unscoped
        .iter()
        .any(|r| reaching[r].iter().any(|(l, rule)| *l == 0 && rule.allow && rule.pattern == Pattern::Any));
    if complement
        && unscoped
            .iter()
            .any(|r| reaching[r].iter().any(|(l, rule)| *l == 0 && !rule.allow && rule.pattern == Pattern::Any))
    {
        // … and every id of it denied: nothing.
        let deciding_rules = unscoped
            .iter()
            .flat_map(|r| reaching[r].iter())
            .filter(|(l, rule)| *l == 0 && rule.pattern == Pattern::Any)
            .map(|(_, rule)| rule.id)
            .collect();
        return Ok(Permitted {
            resource_type: resource_type.to_string(),
            action: action.to_string(),
            ids: Vec::new(),
            complement: false,
            total: lineage::type_size(&chain[0])?,
            deciding_rules,
            typed: RefCell::new(HashMap::new()),
        });
    }
    // The ids a decision can differ on: those an allow can reach (or, for a complement, a deny).
    let wanted = !complement;
    if complement {
        // "Every id but these" changes with every row of the type (its enumeration, for a call
        // site that needs one, must see new ids): any change to the table re-resolves it, which for
        // a complement is cheap (only the denies are read).
        lineage::note_whole(&chain[0]);
    }
    // Seeds per level of the chain: ids named exactly (scopes, exact patterns: probed in one query
    // per level) and ids already loaded (pattern matches, owned and public rows). Their subtrees
    // are read one level at a time, all seeds of a level together.
    let mut named: Vec<Vec<String>> = vec![Vec::new(); chain.len()];
    let mut loaded: Vec<Vec<String>> = vec![Vec::new(); chain.len()];
    for role in &unscoped {
        for (level, rule) in &reaching[role] {
            if rule.allow == wanted {
                match &rule.pattern {
                    Pattern::Exact(id) => named[*level].push(id.clone()),
                    pattern => loaded[*level].extend(pattern_ids(chain, *level, pattern)?),
                }
            }
        }
    }
    for (role, scopes) in &scoped {
        if reaching[role].iter().any(|(_, rule)| rule.allow == wanted) {
            for (level, id) in scopes {
                named[*level].push(id.to_string());
            }
        }
    }
    if let Some(user) = &identity.user_id {
        if owner_roles.iter().any(|r| reaching[r].iter().any(|(_, rule)| rule.allow == wanted)) {
            for (level, rt) in chain.iter().enumerate() {
                if rt.owner_column.is_some() {
                    loaded[level].extend(lineage::load_owned(rt, user)?);
                }
            }
        }
    }
    if read && !complement {
        for (level, rt) in chain.iter().enumerate() {
            if rt.public_column.is_some() {
                loaded[level].extend(lineage::load_public(rt)?);
            }
        }
    }
    let mut universe: Vec<String> = Vec::new();
    for level in (0..chain.len()).rev() {
        let mut seeds = std::mem::take(&mut loaded[level]);
        if !named[level].is_empty() {
            lineage::load_ids(&chain[level], &named[level])?;
            seeds.extend(named[level].iter().filter(|id| lineage::known(&chain[level], id)).cloned());
        }
        if !seeds.is_empty() {
            universe.extend(lineage::descend(chain, level, seeds)?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    universe.retain(|id| seen.insert(id.clone()));
    lineage::load_ancestors(chain, &universe)?;
    // Each scoped role's scope ids by level: a caller scoped on 250 projects asks one hash lookup
    // per level and id, not 250 comparisons.
    let scope_sets: Vec<(&str, Vec<rustc_hash::FxHashSet<&str>>)> = scoped
        .iter()
        .map(|(role, scopes)| {
            let mut by_level = vec![rustc_hash::FxHashSet::default(); chain.len()];
            for (level, id) in scopes {
                by_level[*level].insert(*id);
            }
            (*role, by_level)
        })
        .collect();
    let mut hits: Vec<i64> = Vec::new();
    let mut ids: Vec<String> = lineage::with_chain(chain, |levels| {
        let mut out = Vec::new();
        for id in &universe {
            // The row and its ancestors, one per level (None past a missing parent).
            let mut ancestors: Vec<Option<&lineage::Row>> = Vec::with_capacity(chain.len());
            let mut current = levels[0].get(id);
            for l in 0..chain.len() {
                ancestors.push(current);
                current = current
                    .and_then(|r| r.parent.as_deref())
                    .and_then(|p| levels.get(l + 1).and_then(|level| level.get(p)));
            }
            let (mut allowed, mut denied) = (false, false);
            let mut apply = |role: &str| {
                for (level, rule) in &reaching[role] {
                    if ancestors[*level].is_some_and(|r| rule.pattern.matches(&r.id)) {
                        if rule.allow {
                            allowed = true;
                        } else {
                            denied = true;
                        }
                        hits.push(rule.id);
                    }
                }
            };
            for role in &unscoped {
                apply(role);
            }
            for (role, scopes) in &scope_sets {
                if scopes.iter().zip(&ancestors).any(|(ids, a)| a.is_some_and(|r| ids.contains(r.id.as_str()))) {
                    apply(role);
                }
            }
            if let Some(user) = &identity.user_id {
                let owned = chain
                    .iter()
                    .zip(&ancestors)
                    .any(|(rt, a)| rt.owner_column.is_some() && a.is_some_and(|r| r.owner.as_deref() == Some(user)));
                if owned {
                    for role in &owner_roles {
                        apply(role);
                    }
                }
            }
            let public = read && ancestors.iter().flatten().any(|r| r.public);
            let permitted = !denied && (allowed || complement || public);
            if permitted != complement {
                out.push(id.clone());
            }
        }
        out
    });
    sort_ids(&mut ids);
    hits.sort_unstable();
    hits.dedup();
    if complement {
        // The allow of every id decided too.
        hits.extend(
            unscoped
                .iter()
                .flat_map(|r| reaching[r].iter())
                .filter(|(l, rule)| *l == 0 && rule.allow && rule.pattern == Pattern::Any)
                .map(|(_, rule)| rule.id),
        );
        hits.sort_unstable();
        hits.dedup();
    }
    Ok(Permitted {
        resource_type: resource_type.to_string(),
        action: action.to_string(),
        ids,
        complement,
        total: lineage::type_size(&chain[0])?,
        deciding_rules: hits,
        typed: RefCell::new(HashMap::new()),
    })
}

fn validate_action(action: &str) -> AuthzResult<()> {
    if action.is_empty() || action.chars().any(|c| c.is_control()) {
        return Err(
            AuthzError::invalid("invalid action").detail("An action is a non-empty name without control characters.")
        );
    }
    Ok(())
}

/// The permitted set for the given identity (cached).
pub fn permitted_for(identity: &Identity, resource_type: &str, action: &str) -> AuthzResult<Rc<Permitted>> {
    validate_action(action)?;
    let model = model::current()?;
    let chain = model.type_chain(resource_type)?;
    // What a set depends on of the identity: its principal (ownership) and its grants (claims and
    // "authenticated" included), by fingerprint.
    let (_, held) = grants_with_fingerprint(&model, identity)?;
    let key = (identity.user_id.clone(), held, resource_type.to_string(), action.to_string());
    let stamp = cache::data_stamp(chain.iter().filter_map(|t| t.table));
    if let Some((at, reads, p)) = SETS.with(|c| c.borrow_mut().get(&key)) {
        if at == stamp && reads.still_current() {
            return Ok(p);
        }
    }
    let generation = SETS.with(|c| c.borrow().current_generation());
    lineage::trim();
    let (p, reads) = lineage::recording(|| compute(&model, identity, &chain, resource_type, action));
    let p = Rc::new(p?);
    SETS.with(|c| c.borrow_mut().insert(generation, key, (stamp, Rc::new(reads), p.clone())));
    Ok(p)
}

/// Is every id of the type — existing or created later — permitted to the identity for the
/// action, by rule rather than by enumeration? True only for an unscoped allow rule `*` on the
/// type itself with no deny rule reaching the identity for the type or its ancestors anywhere
/// (held directly, through groups or inheritance, or as owner). Used to drop the row filter at
/// plan time (src/elision.rs); when in doubt it answers false, which only keeps the filter.
pub fn covers_every_id(identity: &Identity, resource_type: &str, action: &str) -> AuthzResult<bool> {
    validate_action(action)?;
    let model = model::current()?;
    let chain = model.type_chain(resource_type)?;
    let grants = grants(&model, identity)?;
    let owner_roles = model.owner_roles(identity.user_id.as_deref(), &chain);
    let mut roles = grants.iter().map(|g| g.role.as_str()).chain(owner_roles.iter().map(String::as_str));
    if roles.any(|role| model.rules_reaching(&chain, role, action).any(|(_, rule)| !rule.allow)) {
        return Ok(false);
    }
    Ok(grants.iter().filter(|g| g.scope.is_none()).any(|g| {
        model
            .rules_reaching(&chain, &g.role, action)
            .any(|(level, rule)| level == 0 && rule.allow && rule.pattern == Pattern::Any)
    }))
}

/// One matched rule in an explanation.
pub struct Match {
    pub grant: Grant,
    pub rule: Rc<Rule>,
    pub matched: String,
}

pub struct Decision {
    pub allowed: bool,
    pub reason: String,
    pub matches: Vec<Match>,
}

/// Decide one (type, id, action) by walking the id's ancestor chain: the same semantics as the set
/// computation, used for types without a table and to explain decisions.
pub fn decide(identity: &Identity, resource_type: &str, id: &str, action: &str) -> AuthzResult<Decision> {
    validate_action(action)?;
    let model = model::current()?;
    let chain = model.type_chain(resource_type)?;
    let nodes = if chain[0].table.is_some() {
        lineage::trim();
        let nodes = ancestry(&chain, 0, id)?;
        if nodes.is_empty() {
            return Ok(Decision {
                allowed: false,
                reason: format!("no {resource_type} with id \"{}\" exists", printable(id, 64)),
                matches: vec![],
            });
        }
        nodes
    } else {
        vec![(resource_type.to_string(), id.to_string(), false, None)]
    };
    decide_nodes(&model, identity, nodes, action)
}

/// (type, id, public, owner) of a stored resource and its ancestors, starting at `level` of `chain`.
type Node = (String, String, bool, Option<String>);

fn ancestry(chain: &[Rc<model::ResourceType>], level: usize, id: &str) -> AuthzResult<Vec<Node>> {
    Ok(lineage::ancestry(chain, level, id)?.into_iter().map(|(t, r)| (t, r.id, r.public, r.owner)).collect())
}

/// Decide `action` on a row of the resource table itself as it would be after an INSERT or UPDATE:
/// its own id under the parent named in the new row. The owner column of the new row grants
/// nothing (naming oneself owner must not authorize a write); stored ownership counts while the row
/// stays under its parent, and ownership of an ancestor always counts. With `stored` false the
/// stored row is not read at all (the caller knows the id is not stored, or accepts judging it
/// without its stored ownership).
pub fn decide_new_row(
    identity: &Identity,
    resource_type: &str,
    id: &str,
    parent_id: Option<&str>,
    action: &str,
) -> AuthzResult<Decision> {
    decide_row(identity, resource_type, id, parent_id, action, true)
}

fn decide_row(
    identity: &Identity,
    resource_type: &str,
    id: &str,
    parent_id: Option<&str>,
    action: &str,
    stored: bool,
) -> AuthzResult<Decision> {
    validate_action(action)?;
    let model = model::current()?;
    let chain = model.type_chain(resource_type)?;
    // An existing row that stays under its parent keeps its stored ownership (owners edit what they
    // own in place); a new id, or a row being moved, is judged without it.
    let stored_owner = if stored && chain[0].table.is_some() {
        lineage::load_ids(&chain[0], &[id.to_string()])?;
        match lineage::row(&chain[0], id) {
            Some(row) if chain.len() == 1 || row.parent.as_deref() == parent_id => row.owner,
            _ => None,
        }
    } else {
        None
    };
    let mut nodes = vec![(resource_type.to_string(), id.to_string(), false, stored_owner)];
    if let (Some(_), Some(pid)) = (chain.get(1), parent_id) {
        nodes.extend(ancestry(&chain, 1, pid)?);
    }
    decide_nodes(&model, identity, nodes, action)
}

fn decide_nodes(model: &Model, identity: &Identity, nodes: Vec<Node>, action: &str) -> AuthzResult<Decision> {
    let mut grants = (*grants(model, identity)?).clone();
    if let Some(user) = &identity.user_id {
        for (t, i, _, owner) in &nodes {
            if owner.as_deref() == Some(user.as_str()) {
                for path in model.role_closure("owner") {
                    let Some(role) = path.last().cloned() else { continue };
                    grants.push(Grant {
                        role,
                        scope: Some((t.clone(), i.clone())),
                        via: format!("owner of {t}:{i}"),
                        role_path: path,
                    });
                }
            }
        }
    }
    let mut matches = Vec::new();
    for grant in grants.iter() {
        if let Some((st, sid)) = &grant.scope {
            if !nodes.iter().any(|(t, i, _, _)| t == st && i == sid) {
                continue;
            }
        }
        let Some(rules) = model.rules_by_role.get(&grant.role) else { continue };
        for rule in rules {
            if !action_matches(&rule.action, action) {
                continue;
            }
            if let Some((t, i, _, _)) =
                nodes.iter().find(|(t, i, _, _)| *t == rule.resource_type && rule.pattern.matches(i))
            {
                matches.push(Match { grant: grant.clone(), rule: rule.clone(), matched: format!("{t}:{i}") });
            }
        }
    }
    let public = action == "read" && nodes.iter().any(|(_, _, p, _)| *p);
    let (allowed, reason) = if let Some(m) = matches.iter().find(|m| !m.rule.allow) {
        (false, format!("denied by rule {} ({})", m.rule.id, m.rule.describe()))
    } else if let Some(m) = matches.iter().find(|m| m.rule.allow) {
        (true, format!("allowed by rule {} ({})", m.rule.id, m.rule.describe()))
    } else if public {
        (true, "public resource".to_string())
    } else {
        (false, "default deny".to_string())
    };
    Ok(Decision { allowed, reason, matches })
}

thread_local! {
    /// Actions already warned about, with the cache generation they were warned under.
    static WARNED_ACTIONS: RefCell<(u64, Vec<String>)> = const { RefCell::new((0, Vec::new())) };
}

/// A WARNING (once per backend and policy generation) for an action no rule and no template uses:
/// `check('session', '1', 'reed')` is default deny, and a typo should not look like a policy.
fn warn_if_unknown_action(action: &str) -> AuthzResult<()> {
    let model = model::current()?;
    if model.action_is_known(action) {
        return Ok(());
    }
    let first = WARNED_ACTIONS.with(|w| {
        let mut w = w.borrow_mut();
        if w.0 != model.generation {
            *w = (model.generation, Vec::new());
        }
        if w.1.iter().any(|a| a == action) || w.1.len() >= 64 {
            return false;
        }
        w.1.push(action.to_string());
        true
    });
    if first {
        pgrx::warning!(
            "no rule mentions action \"{}\": it is always denied (known actions: {} and those in authz.rules)",
            printable(action, 64),
            model::BUILTIN_ACTIONS.join(", ")
        );
    }
    Ok(())
}

/// Check one id: for types with a table this is membership in the cached permitted set, so a check
/// always agrees with what row-level security lets through.
pub fn check_current(resource_type: &str, id: &str, action: &str) -> AuthzResult<bool> {
    validate_action(action)?;
    warn_if_unknown_action(action)?;
    let identity = identity::current()?;
    let model = model::current()?;
    let rt = model.resource_type(resource_type)?;
    let allowed = if rt.table.is_some() {
        let p = permitted_for(&identity, resource_type, action)?;
        let set = p.typed("text", |ids| ids.iter().cloned().collect::<std::collections::HashSet<String>>());
        // A complement names what is taken away; the id must also exist.
        if p.complement {
            !set.contains(id) && lineage::is_stored(&rt, id)?
        } else {
            set.contains(id)
        }
    } else {
        decide(&identity, resource_type, id, action)?.allowed
    };
    audit::decision(&identity.actor(), resource_type, action, Some(id), allowed, None);
    Ok(allowed)
}

/// The read policy's second branch for the resource table itself (the first, `permits()`, decided
/// every stored row): a row this very statement inserted, judged by the parent it names; None for
/// a stored row.
fn unstored_row(
    identity: &Identity,
    resource_type: &str,
    id: &str,
    parent_id: Option<&str>,
    action: &str,
) -> AuthzResult<Option<Decision>> {
    let model = model::current()?;
    let chain = model.type_chain(resource_type)?;
    if lineage::is_stored(&chain[0], id)? {
        return Ok(None);
    }
    decide_row(identity, resource_type, id, parent_id, action, false).map(Some)
}

/// Row check for the resource table itself (used by the policies `authz.protect` installs when a
/// table is protected by its own id): may the caller `action` a row with this id under this parent?
/// With `unstored_only`, answers false at once for ids already stored in the resource table (the
/// read policy's first branch decided those); only a row this very statement inserted is checked.
#[pg_extern(stable, parallel_safe)]
fn permits_row(
    resource_type: &str,
    id: Option<&str>,
    parent_id: Option<&str>,
    action: &str,
    unstored_only: default!(bool, "false"),
) -> bool {
    let Some(id) = id else { return false };
    let identity = identity::current().or_raise();
    let decision = if unstored_only {
        unstored_row(&identity, resource_type, id, parent_id, action).or_raise()
    } else {
        Some(decide_new_row(&identity, resource_type, id, parent_id, action).or_raise())
    };
    let Some(decision) = decision else { return false };
    if !decision.allowed {
        // Denials only: a bulk INSERT must not write one log line per row.
        audit::decision(&identity.actor(), resource_type, action, Some(id), false, Some(&decision.reason));
    }
    decision.allowed
}

/// The ids of `resource_type` the current identity may use for `action`.
#[pg_extern(stable, parallel_safe)]
fn permitted_ids(resource_type: &str, action: &str) -> Vec<String> {
    validate_action(action).or_raise();
    warn_if_unknown_action(action).or_raise();
    let identity = identity::current().or_raise();
    let p = permitted_for(&identity, resource_type, action).or_raise();
    audit::set_decision(&identity.actor(), &p.outcome());
    p.listed().or_raise().as_ref().clone()
}

/// May the current identity perform `action` on this resource?
#[pg_extern(stable, parallel_safe)]
fn check(resource_type: &str, id: &str, action: &str) -> bool {
    check_current(resource_type, id, action).or_raise()
}

/// Like check(), but raises 42501 when the answer is no.
#[pg_extern(stable, parallel_safe)]
fn require(resource_type: &str, id: &str, action: &str) {
    if !check_current(resource_type, id, action).or_raise() {
        AuthzError::privilege(format!(
            "permission denied: {} on {}:{}",
            printable(action, 64),
            printable(resource_type, 64),
            printable(id, 64)
        ))
        .hint("authz.explain() shows which rules apply.")
        .raise();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn setup() {
        Spi::run(
            "CREATE TABLE projects (id bigint PRIMARY KEY, public boolean DEFAULT false);
             CREATE TABLE sessions (id bigint PRIMARY KEY, project_id bigint REFERENCES projects);
             INSERT INTO projects SELECT g, g = 3 FROM generate_series(1, 3) g;
             INSERT INTO sessions SELECT g, 1 + (g - 1) / 4 FROM generate_series(1, 12) g;
             SELECT authz.register_resource_type('project', 'projects', 'id', public_column => 'public');
             SELECT authz.register_resource_type('session', 'sessions', 'id', 'project', 'project_id');
             SELECT authz.create_role('viewer');
             SELECT authz.create_role('editor', ARRAY['viewer']);
             SELECT authz.allow('viewer', 'session', '*', 'read');
             SELECT authz.allow('editor', 'session', '*', 'write');
             SELECT authz.create_principal('alice');
             SELECT authz.create_principal('team', 'group');
             SELECT authz.add_member('team', 'alice');
             SELECT authz.assign_role('team', 'editor', 'project', '1');
             SELECT authz.create_principal('dba', 'user', session_user);",
        )
        .unwrap();
    }

    #[pg_test]
    fn scoped_group_role_with_inheritance_and_public_projects() {
        setup();
        Spi::run("UPDATE authz.principals SET db_role = NULL WHERE id = 'dba'; UPDATE authz.principals SET db_role = session_user WHERE id = 'alice'").unwrap();
        let ids = Spi::get_one::<Vec<String>>("SELECT authz.permitted_ids('session', 'read')").unwrap().unwrap();
        // project 1 through the group's scoped editor role (inherits viewer), project 3 is public
        assert_eq!(ids, vec!["1", "2", "3", "4", "9", "10", "11", "12"]);
        let writable = Spi::get_one::<Vec<String>>("SELECT authz.permitted_ids('session', 'write')").unwrap().unwrap();
        assert_eq!(writable, vec!["1", "2", "3", "4"]);
    }

    /// The set evaluator (bitmaps, used by the policies) and the per-id evaluator (ancestor walk,
    /// used by explain) must agree on every id, for random rules, globs, denies, groups, scopes
    /// and ownership (deterministic pseudo-random data).
    #[pg_test]
    fn set_and_single_id_evaluation_agree() {
        Spi::run(
            "CREATE TABLE projects (id bigint PRIMARY KEY, public boolean DEFAULT false, lead text);
             CREATE TABLE sessions (id bigint PRIMARY KEY, project_id bigint REFERENCES projects);
             INSERT INTO projects SELECT g, g % 7 = 0, 'u' || (g % 5) FROM generate_series(1, 30) g;
             INSERT INTO sessions SELECT g, 1 + (g * 13) % 30 FROM generate_series(1, 300) g;
             SELECT authz.register_resource_type('project', 'projects', 'id', public_column => 'public', owner_column => 'lead');
             SELECT authz.register_resource_type('session', 'sessions', 'id', 'project', 'project_id');",
        )
        .unwrap();
        let mut seed: u64 = 42;
        let mut next = |m: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let patterns = ["*", "1*", "2?", "3", "1?", "*5"];
        for r in 0..8 {
            Spi::run(&format!("SELECT authz.create_role('r{r}')")).unwrap();
            if r > 0 {
                Spi::run(&format!("SELECT authz.add_inheritance('r{r}', 'r{}')", next(r))).unwrap();
            }
            for _ in 0..4 {
                let rt = if next(2) == 0 { "session" } else { "project" };
                let verb = if next(4) == 0 { "deny" } else { "allow" };
                let action = ["read", "*", "write"][next(3) as usize];
                let pattern = patterns[next(patterns.len() as u64) as usize];
                Spi::run(&format!("SELECT authz.{verb}('r{r}', '{rt}', '{pattern}', '{action}')")).unwrap();
            }
        }
        Spi::run("SELECT authz.allow('owner', 'session', '*', 'read'); SELECT authz.create_principal('grp', 'group')")
            .unwrap();
        for u in 0..5 {
            Spi::run(&format!("SELECT authz.create_principal('u{u}')")).unwrap();
            if next(2) == 0 {
                Spi::run(&format!("SELECT authz.add_member('grp', 'u{u}')")).unwrap();
            }
            for _ in 0..3 {
                let role = next(8);
                match next(3) {
                    0 => Spi::run(&format!("SELECT authz.assign_role('u{u}', 'r{role}')")),
                    1 => {
                        Spi::run(&format!("SELECT authz.assign_role('u{u}', 'r{role}', 'project', '{}')", 1 + next(30)))
                    }
                    _ => Spi::run(&format!(
                        "SELECT authz.assign_role('u{u}', 'r{role}', 'session', '{}')",
                        1 + next(300)
                    )),
                }
                .unwrap();
            }
        }
        Spi::run("SELECT authz.assign_role('grp', 'r3', 'project', '4')").unwrap();
        let mut partial = 0;
        for u in 0..5 {
            for action in ["read", "write"] {
                // explain() walks each id's ancestors; permitted_ids() computes the whole set.
                let set = Spi::get_one::<Vec<String>>(&format!(
                    "SELECT coalesce(array_agg(id::text ORDER BY id), '{{}}') FROM sessions
                     WHERE (SELECT outcome FROM authz.explain('u{u}', 'session', id::text, '{action}') LIMIT 1) = 'allow'"
                ))
                .unwrap()
                .unwrap();
                Spi::run(&format!("UPDATE authz.principals SET db_role = NULL; UPDATE authz.principals SET db_role = session_user WHERE id = 'u{u}'")).unwrap();
                let mut permitted =
                    Spi::get_one::<Vec<String>>(&format!("SELECT authz.permitted_ids('session', '{action}')"))
                        .unwrap()
                        .unwrap();
                permitted.sort_by_key(|s| s.parse::<i64>().unwrap_or(0));
                assert_eq!(permitted, set, "u{u} {action}");
                if !set.is_empty() && set.len() < 300 {
                    partial += 1;
                }
            }
        }
        // The data must exercise real decisions, not only all-or-nothing sets.
        assert!(partial >= 3, "only {partial} partial sets");
    }

    #[pg_test]
    fn deny_beats_allow_and_public() {
        // A deny through a role held only in scope (viewer, via editor of project 1) cannot reach
        // project 3; a deny for everyone (anonymous) beats its public flag.
        setup();
        Spi::run(
            "UPDATE authz.principals SET db_role = NULL WHERE id = 'dba';
             UPDATE authz.principals SET db_role = session_user WHERE id = 'alice';
             SELECT authz.deny('anonymous', 'project', '3', 'read');
             SELECT authz.deny('editor', 'session', '2', '*');",
        )
        .unwrap();
        let ids = Spi::get_one::<Vec<String>>("SELECT authz.permitted_ids('session', 'read')").unwrap().unwrap();
        assert_eq!(ids, vec!["1", "3", "4"]);
        assert_eq!(Spi::get_one::<bool>("SELECT authz.check('session', '2', 'read')").unwrap(), Some(false));
        assert_eq!(Spi::get_one::<bool>("SELECT authz.check('session', '1', 'read')").unwrap(), Some(true));
    }
}

/// Drop this backend's caches: with `sets_only`, only the resolved permission sets and grants
/// (the policy model and resource hierarchies stay); otherwise everything (keys, verified tokens,
/// model, hierarchies, sets). Never needed for correctness — committed changes invalidate caches by
/// themselves — but useful to measure cold resolution and to reclaim memory in a long session.
#[pg_extern(volatile)]
fn flush_caches(sets_only: default!(bool, "false")) {
    if sets_only {
        GRANTS.with(|c| c.borrow_mut().clear());
        SETS.with(|c| c.borrow_mut().clear());
    } else {
        cache::bump();
    }
}

/// Approximate bytes held by the cached permission sets and grants (ids, their lookup structures).
pub fn cached_set_bytes() -> usize {
    let sets = SETS.with(|c| {
        c.borrow_mut()
            .sum_by(|_, (_, reads, p)| 256 + reads.bytes() + p.ids.iter().map(|i| 48 + 2 * i.len()).sum::<usize>())
    });
    let grants = GRANTS.with(|c| c.borrow_mut().sum_by(|_, (g, _)| 64 + g.len() * 160));
    sets + grants
}

/// Number of permission sets cached in this backend.
pub fn cached_sets() -> usize {
    SETS.with(|c| c.borrow_mut().len())
}
