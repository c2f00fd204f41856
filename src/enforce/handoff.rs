//! Handing the leader's permission sets to parallel workers.
//!
//! A parallel worker starts with empty caches: resolving there means loading the policy model and
//! the resource hierarchy again in every worker (measured: 15–25 ms per worker with 10,000
//! sessions, more than the scan itself). The leader resolves the set at plan time anyway (for the
//! selectivity estimate), notes it, and when the finished plan is parallel publishes it at executor
//! start in the superuser-only setting `authz.parallel_handoff`; PostgreSQL copies settings into
//! every worker it launches. Every executor start rewrites or clears the setting, so a value
//! never outlives its execution, and a worker uses an entry only when it was written for this
//! very transaction, statement and command for the same token or login; anything else (a cached
//! plan, a changed token) falls back to resolving, so the handoff can only save time.
//! Clients cannot forge it: the setting is superuser-only and entries are bound to the command.

use std::hash::{Hash, Hasher};
use std::rc::Rc;

use pgrx::pg_sys;

use crate::auth::identity;
use crate::pg::errors::AuthzResult;
use crate::pg::{cache, settings};
use crate::policy::resolve::Permitted;

/// Who the entry was resolved for: the token bytes (hashed) or the login.
fn caller_key() -> String {
    match settings::token() {
        Some(t) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            t.hash(&mut h);
            format!("t{:016x}{}", h.finish(), t.len())
        }
        // SAFETY: the session user's oid; no pointer is involved.
        None => format!("l{}", unsafe { pg_sys::GetSessionUserId() }.to_u32()),
    }
}

/// The statement a set belongs to, as both the leader and its workers see it: transaction start,
/// statement start (PostgreSQL hands both to workers), command id and caller.
fn statement_key() -> String {
    // SAFETY: plain reads of the backend's transaction state.
    unsafe {
        format!(
            "{};{};{};{}",
            pg_sys::GetCurrentTransactionStartTimestamp(),
            pg_sys::GetCurrentStatementStartTimestamp(),
            pg_sys::GetCurrentCommandId(false),
            caller_key()
        )
    }
}

fn usable(s: &str) -> bool {
    !s.contains(['\t', '\n', ',', '|'])
}

/// Sets resolved while planning the current statement, with the statement and cache generation
/// they were resolved under; published only if the finished plan turns out to be parallel.
struct Pending {
    statement: String,
    generation: u64,
    sets: Vec<Rc<Permitted>>,
}

thread_local! {
    static PENDING: std::cell::RefCell<Pending> =
        const { std::cell::RefCell::new(Pending { statement: String::new(), generation: 0, sets: Vec::new() }) };
    /// Executor starts in this backend: part of every published header, so that no two
    /// executions ever publish the same value.
    static EXECUTIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Leader, at plan time: remember this set in case the plan launches workers. Publishing is left
/// to executor start, where the plan is known: a point lookup or a page never launches workers,
/// and copying a set of 10,000 ids into the setting on every such statement was measurable.
pub fn note(p: &Rc<Permitted>) {
    // SAFETY: plain reads of the backend's parallel state.
    unsafe {
        if pg_sys::IsInParallelMode() || pg_sys::ParallelWorkerNumber >= 0 {
            return;
        }
    }
    let statement = statement_key();
    let generation = cache::generation();
    PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        if pending.statement != statement || pending.generation != generation {
            *pending = Pending { statement, generation, sets: Vec::new() };
        }
        if !pending.sets.iter().any(|q| q.resource_type == p.resource_type && q.action == p.action) {
            pending.sets.push(p.clone());
        }
    });
}

/// Leader, at every executor start outside parallel mode: the handoff is always rewritten, so
/// no value outlives the execution it was written for. A parallel plan gets the sets noted while
/// planning this very statement under the current cache generation (a plan from the plan cache,
/// or one planned before an invalidation this executor start accepted, gets none: its workers
/// resolve for themselves); any other plan clears it. The caller's identity is re-established
/// first, so an expired or revoked token stops the statement here, not only in the workers.
pub fn publish_for(plan_is_parallel: bool) -> AuthzResult<()> {
    // SAFETY: plain reads of the backend's parallel state.
    if unsafe { pg_sys::IsInParallelMode() || pg_sys::ParallelWorkerNumber >= 0 } {
        return Ok(());
    }
    let execution = EXECUTIONS.with(|e| {
        e.set(e.get() + 1);
        e.get()
    });
    if !plan_is_parallel {
        if settings::parallel_handoff().is_some_and(|v| !v.is_empty()) {
            settings::set_parallel_handoff("");
        }
        return Ok(());
    }
    let statement = statement_key();
    let generation = cache::generation();
    let sets = PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        if pending.statement == statement && pending.generation == generation {
            std::mem::take(&mut pending.sets)
        } else {
            Vec::new()
        }
    });
    if !sets.is_empty() {
        identity::current()?;
    }
    let lines: Vec<Rc<Option<String>>> = sets
        .iter()
        .map(|p| {
            // The serialized line is built once per resolved set, not once per statement.
            p.typed("handoff", |ids| {
                (usable(&p.resource_type) && usable(&p.action) && ids.iter().all(|id| usable(id))).then(|| {
                    let form = if p.complement { "complement" } else { "listed" };
                    format!("{}\t{}\t{}\t{}\t{form}", p.resource_type, p.action, ids.join(","), p.total)
                })
            })
        })
        .collect();
    let mut value = format!("{statement}|{execution};{generation}");
    for line in lines.iter().filter_map(|l| l.as_ref().as_ref()) {
        value.push('\n');
        value.push_str(line);
    }
    settings::set_parallel_handoff(&value);
    Ok(())
}

/// Worker: the leader's set for (type, action), if it was published for this statement and caller.
pub fn take(resource_type: &str, action: &str) -> Option<Rc<Permitted>> {
    // SAFETY: a plain read of a backend global.
    if unsafe { pg_sys::ParallelWorkerNumber } < 0 {
        return None;
    }
    let value = settings::parallel_handoff()?;
    let mut lines = value.lines();
    let (statement, _execution) = lines.next()?.split_once('|')?;
    if statement != statement_key() {
        return None;
    }
    let line_key = format!("{resource_type}\t{action}\t");
    let line = lines.find(|l| l.starts_with(&line_key))?;
    let mut fields = line[line_key.len()..].split('\t');
    let ids = fields.next()?;
    let total = fields.next()?.parse().ok()?;
    let complement = match fields.next()? {
        "complement" => true,
        "listed" => false,
        _ => return None,
    };
    let ids = if ids.is_empty() { Vec::new() } else { ids.split(',').map(str::to_string).collect() };
    Some(Rc::new(Permitted::from_parts(resource_type, action, ids, complement, total)))
}
