//! Cache coherence. Every per-backend cache (keys, verified tokens, the policy model, resource
//! hierarchies, resolved permission sets) is tagged with one generation number. Statement-level
//! triggers on the policy tables and on registered resource tables call
//! `CacheInvalidateRelcacheByRelid`; PostgreSQL delivers that message to every backend at commit
//! (and to a hot standby's backends when the commit record is replayed), where our relcache
//! callback bumps the generation. This is how Citus keeps its metadata caches coherent: no polling
//! and no extra query per statement.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use pgrx::prelude::*;

use crate::pg::errors::OrRaise;

static GENERATION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Registered resource tables whose invalidation moves their data generation, as known when the
    /// model was last loaded.
    static WATCHED: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
}

const POLICY_TABLES: &[&str] = &[
    "principals",
    "memberships",
    "roles",
    "role_inheritance",
    "resource_types",
    "role_assignments",
    "rules",
    "keys",
    "claim_mappings",
    "cluster",
];

/// The policy tables whose changes move who holds what, not what the rules say: a role assignment
/// or a new member re-resolves grants and sets, and leaves keys, tokens and the model alone.
const GRANT_TABLES: &[&str] = &["principals", "memberships", "role_assignments"];

/// The policy tables and their OIDs, for the invalidation watch list.
fn policy_tables() -> Vec<(&'static str, pg_sys::Oid)> {
    let mut out = Vec::new();
    // SAFETY: catalog lookups by name with static C strings; oids only are returned.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"authz".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return out;
        }
        for t in POLICY_TABLES {
            if let Ok(name) = std::ffi::CString::new(*t) {
                let oid = pg_sys::get_relname_relid(name.as_ptr(), nsp);
                if oid != pg_sys::InvalidOid {
                    out.push((*t, oid));
                }
            }
        }
    }
    out
}

/// Moves on every change of any kind: what a statement's per-row state is checked against.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// What a cached value depends on. Changes are classified by the table they were made to:
/// `Policy` (roles, inheritance, rules, resource types, keys, claim mappings), `Grants`
/// (principals, memberships, role assignments) or a registered resource table's rows (a data
/// generation per table, see `data_generation`). A value is dropped only when what it depends on
/// moved: a new session row re-resolves the sets over sessions, not keys, tokens or the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dep {
    /// Keys, verified tokens, the policy model.
    Policy,
    /// Anything computed from the policy and from who holds what (principals, grants, sets).
    PolicyAndGrants,
}

static POLICY_GENERATION: AtomicU64 = AtomicU64::new(1);
static GRANTS_GENERATION: AtomicU64 = AtomicU64::new(1);

/// The counter a cache that depends on `dep` is tagged with.
pub fn generation_of(dep: Dep) -> u64 {
    match dep {
        Dep::Policy => POLICY_GENERATION.load(Ordering::Relaxed),
        // Both counters only grow: their sum moves whenever either does.
        Dep::PolicyAndGrants => {
            POLICY_GENERATION.load(Ordering::Relaxed).wrapping_add(GRANTS_GENERATION.load(Ordering::Relaxed))
        }
    }
}

thread_local! {
    /// Per registered resource table: moves when its rows change (one message per statement).
    static DATA_GENERATIONS: RefCell<rustc_hash::FxHashMap<u32, u64>> = RefCell::new(Default::default());
    /// Which watched relation is which kind of table (filled with the watch list).
    static GRANT_TABLE_OIDS: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
}

/// The data generation of one resource table (0 until its first change in this backend).
pub fn data_generation(table: pg_sys::Oid) -> u64 {
    DATA_GENERATIONS.with(|d| d.borrow().get(&table.to_u32()).copied().unwrap_or(0))
}

/// Sets, hierarchies and lineage over one or more resource tables: a single number that moves when
/// any of their rows change or when everything is flushed.
pub fn data_stamp(tables: impl IntoIterator<Item = pg_sys::Oid>) -> u64 {
    let mut stamp = DATA_FLUSHES.load(Ordering::Relaxed);
    for t in tables {
        stamp = stamp.wrapping_mul(0x100_0000_01b3).wrapping_add(data_generation(t));
    }
    stamp
}

/// Moves when every resource table's data must be treated as changed (a flush, a lost message).
static DATA_FLUSHES: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Called after every change of identity or policy (registered by the layers above: the
    /// plan cache reset of src/enforce/elision.rs).
    static ON_CHANGE: RefCell<Vec<fn()>> = const { RefCell::new(Vec::new()) };
}

/// Register a function to call whenever the identity or the policy changes.
pub fn on_change(f: fn()) {
    ON_CHANGE.with(|c| c.borrow_mut().push(f));
}

/// The identity (token, verification settings) or the policy changed: tell the subscribers.
pub fn identity_or_policy_changed() {
    let subscribers = ON_CHANGE.with(|c| c.borrow().clone());
    for f in subscribers {
        f();
    }
}

/// Forget everything cached in this backend.
pub fn bump() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    POLICY_GENERATION.fetch_add(1, Ordering::Relaxed);
    GRANTS_GENERATION.fetch_add(1, Ordering::Relaxed);
    DATA_FLUSHES.fetch_add(1, Ordering::Relaxed);
    identity_or_policy_changed();
}

/// A change to a policy table (`grants`: one of GRANT_TABLES).
fn policy_changed(grants: bool) {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    if grants {
        GRANTS_GENERATION.fetch_add(1, Ordering::Relaxed);
    } else {
        POLICY_GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    identity_or_policy_changed();
}

/// A change to a registered resource table's rows: who holds what is unchanged (no plan reset),
/// only what is derived from those rows.
fn data_changed(table: u32) {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    DATA_GENERATIONS.with(|d| *d.borrow_mut().entry(table).or_insert(0) += 1);
}

/// A value computed from the policy tables, valid for one cache generation.
pub struct Generational<T> {
    dep: Dep,
    generation: u64,
    value: Option<T>,
}

impl<T: Clone> Generational<T> {
    pub const fn on(dep: Dep) -> Self {
        Generational { dep, generation: 0, value: None }
    }

    /// The generation a value computed now is tagged with.
    pub fn current_generation(&self) -> u64 {
        generation_of(self.dep)
    }

    /// The value if it was computed under the current generation.
    pub fn get(&self) -> Option<T> {
        if self.generation == generation_of(self.dep) {
            self.value.clone()
        } else {
            None
        }
    }

    /// Remember `value` as computed under `computed_at`: a value loaded while an invalidation
    /// arrived is stale at once, never current.
    pub fn set(&mut self, computed_at: u64, value: T) {
        self.generation = computed_at;
        self.value = Some(value);
    }
}

/// A bounded map of values computed from the policy tables, emptied when the generation moves
/// (or when the extra tag a user of the map chooses — e.g. the verification settings — changes).
pub struct GenMap<K, V> {
    dep: Dep,
    generation: u64,
    tag: u64,
    capacity: usize,
    map: std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>,
}

impl<K: std::hash::Hash + Eq, V: Clone> GenMap<K, V> {
    pub fn with_capacity(capacity: usize, dep: Dep) -> Self {
        GenMap { dep, generation: 0, tag: 0, capacity, map: Default::default() }
    }

    /// The generation a value computed now is tagged with.
    pub fn current_generation(&self) -> u64 {
        generation_of(self.dep)
    }

    /// Entries were computed under `tag` from now on; a different tag than before empties the map.
    pub fn retag(&mut self, tag: u64) {
        if self.tag != tag {
            self.map.clear();
            self.tag = tag;
        }
    }

    /// Bound the map (a setting may change it at run time); a smaller bound empties it.
    pub fn set_capacity(&mut self, capacity: usize) {
        if capacity < self.map.len() {
            self.map.clear();
            self.map.shrink_to(capacity.min(4096));
        }
        self.capacity = capacity;
    }

    fn sync(&mut self) {
        let g = generation_of(self.dep);
        if self.generation != g {
            self.map.clear();
            self.generation = g;
        }
    }

    pub fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.sync();
        self.map.get(key).cloned()
    }

    /// Insert a value computed under `computed_at` (ignored if the generation moved since).
    pub fn insert(&mut self, computed_at: u64, key: K, value: V) {
        self.sync();
        if computed_at != self.generation {
            return;
        }
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            // Bounded without bookkeeping: a full map starts over. Recomputing is only a cost.
            self.map.clear();
        }
        self.map.insert(key, value);
    }

    /// Sum a measure over the current entries.
    pub fn sum_by(&mut self, measure: impl Fn(&K, &V) -> usize) -> usize {
        self.sync();
        self.map.iter().map(|(k, v)| measure(k, v)).sum()
    }

    pub fn len(&mut self) -> usize {
        self.sync();
        self.map.len()
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }
}

/// Watch the policy tables (classified: grants or policy) and the given resource tables.
pub fn watch_policy_tables() {
    let tables = policy_tables();
    GRANT_TABLE_OIDS.with(|g| {
        let mut g = g.borrow_mut();
        for (name, oid) in &tables {
            if GRANT_TABLES.contains(name) {
                g.insert(oid.to_u32());
            }
        }
    });
    POLICY_TABLE_OIDS.with(|p| p.borrow_mut().extend(tables.iter().map(|(_, oid)| oid.to_u32())));
}

thread_local! {
    static POLICY_TABLE_OIDS: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
}

pub fn watch(oids: impl IntoIterator<Item = pg_sys::Oid>) {
    WATCHED.with(|w| {
        let mut w = w.borrow_mut();
        for oid in oids {
            w.insert(oid.to_u32());
        }
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // InvalidOid means "everything" (e.g. after a shared-invalidation queue overflow).
    if relid == pg_sys::InvalidOid {
        bump();
        return;
    }
    let relid = relid.to_u32();
    if POLICY_TABLE_OIDS.with(|p| p.borrow().contains(&relid)) {
        policy_changed(GRANT_TABLE_OIDS.with(|g| g.borrow().contains(&relid)));
    } else if WATCHED.with(|w| w.borrow().contains(&relid)) {
        data_changed(relid);
    } else if crate::pg::changes::is_key(relid) {
        crate::pg::changes::received(relid);
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn init() {
    // SAFETY: registers a callback that lives as long as the library, once per backend.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_changed), pg_sys::Datum::from(0usize));
    }
}

thread_local! {
    /// The last (relation, local transaction, subtransaction, command) this backend queued an
    /// invalidation for: a statement that changes many rows queues one message, not one per row.
    static LAST_QUEUED: std::cell::Cell<(u32, u32, u32, u32)> = const { std::cell::Cell::new((0, 0, 0, 0)) };
    /// The last statement (same key) whose writes made sure the policy tables are watched.
    static WATCH_CHECKED: std::cell::Cell<(u32, u32, u32, u32)> = const { std::cell::Cell::new((0, 0, 0, 0)) };
}

/// The trigger pg_authz installs on policy and registered resource tables: AFTER each changed row
/// (and after TRUNCATE), queue a relcache invalidation for the table, which reaches every backend
/// (and replica) at commit. Being a row trigger, it fires only for rows that really changed, so a
/// statement that changes nothing, or only rows its caller could not touch, invalidates nothing.
/// A partition's change is announced for its ancestors too (the registered table may be the
/// partitioned parent). Our own backend processes the message at the next command boundary, and
/// again on rollback, so a cache built from uncommitted rows never outlives them.
#[pg_trigger]
fn invalidate_caches<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    // On Citus the trigger fires on a shard placement (`rules_102041`): announce the table this
    // node's backends know, which the placement stands for.
    let relid = crate::pg::citus::logical_relation(trigger.relid()?);
    // SAFETY: plain reads of the backend's transaction state.
    let key = unsafe {
        (
            relid.to_u32(),
            (*pg_sys::MyProc).lxid,
            pg_sys::GetCurrentSubTransactionId(),
            pg_sys::GetCurrentCommandId(false),
        )
    };
    // A registered resource table's rows are announced by what they touched (src/pg/changes.rs);
    // a partition's, a TRUNCATE's and the policy tables' changes by the whole table.
    let data = trigger.trigger_data();
    // SAFETY: the trigger's own TriggerData: the relation is open, the row versions (when this is
    // a row trigger) are valid for this call, and the partition flag is a syscache lookup.
    let by_keys = unsafe {
        let row_event = (data.tg_event & pg_sys::TRIGGER_EVENT_ROW) != 0
            && (data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK) != pg_sys::TRIGGER_EVENT_TRUNCATE;
        if row_event && !pg_sys::get_rel_relispartition(relid) {
            // The registered columns are cached per policy generation: this backend must hear
            // about registration changes even if it never loaded the policy (once per statement).
            if WATCH_CHECKED.with(|w| w.replace(key)) != key {
                watch_policy_tables();
            }
            let update = (data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK) == pg_sys::TRIGGER_EVENT_UPDATE;
            let insert = (data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK) == pg_sys::TRIGGER_EVENT_INSERT;
            let (old, new) = match (insert, update) {
                (true, _) => (std::ptr::null_mut(), data.tg_trigtuple),
                (_, true) => (data.tg_trigtuple, data.tg_newtuple),
                _ => (data.tg_trigtuple, std::ptr::null_mut()),
            };
            matches!(
                crate::pg::changes::announce_row(
                    relid,
                    generation_of(Dep::Policy),
                    key,
                    old,
                    new,
                    (*data.tg_relation).rd_att,
                )
                .or_raise(),
                crate::pg::changes::Announce::Keys
            )
        } else {
            false
        }
    };
    if by_keys || LAST_QUEUED.with(|l| l.replace(key)) == key {
        return Ok(None);
    }
    // SAFETY: queueing invalidations for relations that exist (the trigger's own and its
    // partition ancestors, from the catalog) inside the current transaction.
    unsafe {
        pg_sys::CacheInvalidateRelcacheByRelid(relid);
    }
    // SAFETY: a syscache lookup returning a plain bool.
    if unsafe { pg_sys::get_rel_relispartition(relid) } {
        // Once per statement and partition (memo above); a fully qualified catalog function.
        let ancestors = crate::pg::db::select_one::<Vec<pg_sys::Oid>>(
            "SELECT pg_catalog.array_agg(relid::pg_catalog.oid) FROM pg_catalog.pg_partition_ancestors($1) a(relid)
             WHERE relid::pg_catalog.oid OPERATOR(pg_catalog.<>) $1",
            &[relid.into()],
        )
        .or_raise()
        .unwrap_or_default();
        for a in ancestors {
            // SAFETY: as above, for a relation the catalog just named.
            unsafe { pg_sys::CacheInvalidateRelcacheByRelid(a) };
        }
    }
    Ok(None)
}
