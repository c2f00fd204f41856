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
    /// Relations whose invalidation must flush our caches: the policy tables and every registered
    /// resource table, as known when the model was last loaded.
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
];

/// OIDs of the policy tables, for the invalidation watch list.
pub fn policy_table_oids() -> Vec<pg_sys::Oid> {
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
                    out.push(oid);
                }
            }
        }
    }
    out
}

pub fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

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
    identity_or_policy_changed();
}

/// A value computed from the policy tables, valid for one cache generation.
pub struct Generational<T> {
    generation: u64,
    value: Option<T>,
}

impl<T: Clone> Generational<T> {
    pub const fn new() -> Self {
        Generational { generation: 0, value: None }
    }

    /// The value if it was computed under the current generation.
    pub fn get(&self) -> Option<T> {
        if self.generation == generation() {
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
    generation: u64,
    tag: u64,
    capacity: usize,
    map: std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>,
}

impl<K: std::hash::Hash + Eq, V: Clone> GenMap<K, V> {
    pub fn with_capacity(capacity: usize) -> Self {
        GenMap { generation: 0, tag: 0, capacity, map: Default::default() }
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
        let g = generation();
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

    pub fn len(&mut self) -> usize {
        self.sync();
        self.map.len()
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }
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
    let hit = relid == pg_sys::InvalidOid || WATCHED.with(|w| w.borrow().contains(&relid.to_u32()));
    if hit {
        bump();
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
    let relid = trigger.relid()?;
    // SAFETY: plain reads of the backend's transaction state.
    let key = unsafe {
        (
            relid.to_u32(),
            (*pg_sys::MyProc).lxid,
            pg_sys::GetCurrentSubTransactionId(),
            pg_sys::GetCurrentCommandId(false),
        )
    };
    if LAST_QUEUED.with(|l| l.replace(key)) == key {
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
