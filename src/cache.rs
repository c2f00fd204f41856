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

static GENERATION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Relations whose invalidation must flush our caches: the policy tables and every registered
    /// resource table, as known when the model was last loaded.
    static WATCHED: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
}

pub fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// Forget everything cached in this backend.
pub fn bump() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    crate::elision::identity_or_policy_changed();
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
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_changed), pg_sys::Datum::from(0usize));
    }
}

/// The statement-level trigger pg_authz installs on policy and resource tables: queue a relcache
/// invalidation for the changed table, which reaches every backend (and replica) at commit. Our own
/// backend processes it at the next command boundary, and again on rollback, so a cache built from
/// uncommitted rows never outlives them.
#[pg_trigger]
fn invalidate_caches<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let rel = trigger.relation()?;
    unsafe {
        pg_sys::CacheInvalidateRelcacheByRelid(rel.oid());
    }
    Ok(None)
}
