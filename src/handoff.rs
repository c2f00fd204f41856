//! Handing the leader's permission sets to parallel workers.
//!
//! A parallel worker starts with empty caches: resolving there means loading the policy model and
//! the resource hierarchy again in every worker (measured: 15–25 ms per worker with 10,000
//! sessions, more than the scan itself). The leader resolves the set at plan time anyway (for the
//! selectivity estimate), notes it, and when the finished plan is parallel publishes it at executor
//! start in the superuser-only setting `authz.parallel_handoff`; PostgreSQL copies settings into
//! every worker it launches. A worker uses an entry only when it was written in this very
//! transaction and command for the same token or login; anything else (a cached plan, a changed
//! token) falls back to resolving, so the handoff can only save time.
//! Clients cannot forge it: the setting is superuser-only and entries are bound to the command.

use std::hash::{Hash, Hasher};
use std::rc::Rc;

use pgrx::pg_sys;

use crate::gucs;
use crate::resolve::Permitted;

/// Who the entry was resolved for: the token bytes (hashed) or the login.
fn caller_key() -> String {
    match gucs::token() {
        Some(t) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            t.hash(&mut h);
            format!("t{:016x}{}", h.finish(), t.len())
        }
        None => format!("l{}", unsafe { pg_sys::GetSessionUserId() }.to_u32()),
    }
}

fn header() -> String {
    unsafe {
        format!(
            "{};{};{}",
            pg_sys::GetCurrentTransactionStartTimestamp(),
            pg_sys::GetCurrentCommandId(false),
            caller_key()
        )
    }
}

fn usable(s: &str) -> bool {
    !s.contains(['\t', '\n', ','])
}

thread_local! {
    /// Sets resolved while planning the current command, under the header they were planned for;
    /// published only if the finished plan turns out to be parallel.
    static PENDING: std::cell::RefCell<(String, Vec<Rc<Permitted>>)> = const { std::cell::RefCell::new((String::new(), Vec::new())) };
}

/// Leader, at plan time: remember this set in case the plan launches workers. Publishing is left
/// to executor start, where the plan is known: a point lookup or a page never launches workers,
/// and copying a set of 10,000 ids into the setting on every such statement was measurable.
pub fn note(p: &Rc<Permitted>) {
    unsafe {
        if pg_sys::IsInParallelMode() || pg_sys::ParallelWorkerNumber >= 0 {
            return;
        }
    }
    let head = header();
    PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        if pending.0 != head {
            *pending = (head, Vec::new());
        }
        if !pending.1.iter().any(|q| q.resource_type == p.resource_type && q.action == p.action) {
            pending.1.push(p.clone());
        }
    });
}

/// Leader, at executor start of a plan that needs parallel mode: publish the sets noted while
/// planning this very command. Sets noted for another command (a cached plan executing now) are
/// left alone; their workers resolve for themselves.
pub fn publish_for(plan_is_parallel: bool) {
    if !plan_is_parallel || PENDING.with(|p| p.borrow().1.is_empty()) {
        return;
    }
    let head = header();
    let sets = PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        if pending.0 != head {
            return Vec::new();
        }
        std::mem::take(&mut pending.1)
    });
    let lines: Vec<Rc<Option<String>>> = sets
        .iter()
        .map(|p| {
            // The serialized line is built once per resolved set, not once per statement.
            p.typed("handoff", |ids| {
                (usable(&p.resource_type) && usable(&p.action) && ids.iter().all(|id| usable(id)))
                    .then(|| format!("{}\t{}\t{}\t{}", p.resource_type, p.action, ids.join(","), p.total))
            })
        })
        .collect();
    let mut value = head;
    for line in lines.iter().filter_map(|l| l.as_ref().as_ref()) {
        value.push('\n');
        value.push_str(line);
    }
    gucs::set_parallel_handoff(&value);
}

/// Worker: the leader's set for (type, action), if it was published for this command and caller.
pub fn take(resource_type: &str, action: &str) -> Option<Rc<Permitted>> {
    if unsafe { pg_sys::ParallelWorkerNumber } < 0 {
        return None;
    }
    let value = gucs::parallel_handoff()?;
    let mut lines = value.lines();
    if lines.next()? != header() {
        return None;
    }
    let line_key = format!("{resource_type}\t{action}\t");
    let line = lines.find(|l| l.starts_with(&line_key))?;
    let mut fields = line[line_key.len()..].split('\t');
    let ids = fields.next()?;
    let total = fields.next()?.parse().ok()?;
    let ids = if ids.is_empty() { Vec::new() } else { ids.split(',').map(str::to_string).collect() };
    Some(Rc::new(Permitted::from_parts(resource_type, action, ids, total)))
}
