//! Handing the leader's permission sets to parallel workers.
//!
//! A parallel worker starts with empty caches: resolving there means loading the policy model and
//! the resource hierarchy again in every worker (measured: 15–25 ms per worker with 10,000
//! sessions, more than the scan itself). The leader resolves the set at plan time anyway (for the
//! selectivity estimate) and publishes it in the superuser-only setting `authz.parallel_handoff`;
//! PostgreSQL copies settings into every worker it launches. A worker uses an entry only when it
//! was written in this very transaction and command for the same token or login; anything else
//! (a cached plan, a changed token) falls back to resolving, so the handoff can only save time.
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
    /// What this backend last published: the header and the (type, action) pairs under it, so a
    /// statement planned with several estimates does not re-read its own setting.
    static PUBLISHED: std::cell::RefCell<(String, Vec<String>)> = const { std::cell::RefCell::new((String::new(), Vec::new())) };
}

/// Leader, at plan time: add this set to the handoff for the current command.
pub fn publish(p: &Permitted) {
    unsafe {
        if pg_sys::IsInParallelMode() || pg_sys::ParallelWorkerNumber >= 0 {
            return;
        }
    }
    // The serialized line is built once per resolved set, not once per statement.
    let line = p.typed("handoff", |ids| {
        (usable(&p.resource_type) && usable(&p.action) && ids.iter().all(|id| usable(id)))
            .then(|| format!("{}\t{}\t{}\t{}", p.resource_type, p.action, ids.join(","), p.total))
    });
    let Some(line) = line.as_ref() else { return };
    let head = header();
    let key = format!("{}\t{}\t", p.resource_type, p.action);
    let value = PUBLISHED.with(|published| {
        let mut published = published.borrow_mut();
        if published.0 != head {
            *published = (head.clone(), Vec::new());
        } else if published.1.contains(&key) {
            return None;
        }
        published.1.push(key);
        Some(())
    });
    if value.is_none() {
        return;
    }
    let current = gucs::parallel_handoff().filter(|v| v.starts_with(&format!("{head}\n")));
    let mut value = current.unwrap_or_else(|| head.clone());
    value.push('\n');
    value.push_str(line);
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
