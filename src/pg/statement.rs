//! The statement pg_authz is serving. One context per client statement (PostgreSQL's statement
//! start, set for every message a client sends), built lazily and shared by every part of
//! pg_authz that asks during it — the planner support function, the row filter, elision, the
//! executor checks, the parallel handoff and audit — so that, for example, the caller's identity is
//! established once per statement instead of at each of them.
//!
//! Values are memoized under a tag that names everything they depend on (the token epoch, the
//! cache generation, the session user): a `SET LOCAL authz.token` or an invalidation inside the
//! statement makes the next lookup compute afresh. The context dies when the next statement
//! begins and, errors included, when the transaction ends (`reset`, from the transaction callback).

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

use pgrx::pg_sys;

/// Identifies the current client statement within this backend.
pub fn key() -> i64 {
    // SAFETY: a plain read of the backend's statement start time.
    unsafe { pg_sys::GetCurrentStatementStartTimestamp() }
}

struct Context {
    statement: i64,
    slots: Vec<(&'static str, u64, Rc<dyn Any>)>,
}

thread_local! {
    static CONTEXT: RefCell<Context> = const { RefCell::new(Context { statement: 0, slots: Vec::new() }) };
}

/// The value memoized as `name` for this statement under `tag`, or `build`'s, remembered (an error
/// is not remembered: the next lookup tries again).
pub fn memo<T: 'static, E>(name: &'static str, tag: u64, build: impl FnOnce() -> Result<T, E>) -> Result<Rc<T>, E> {
    let statement = key();
    let hit = CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        if c.statement != statement {
            c.statement = statement;
            c.slots.clear();
        }
        c.slots.iter().find(|(n, t, _)| *n == name && *t == tag).and_then(|(_, _, v)| v.clone().downcast::<T>().ok())
    });
    if let Some(v) = hit {
        return Ok(v);
    }
    // Built outside the borrow: building may run SQL, and SQL may ask for other slots.
    let value = Rc::new(build()?);
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        if c.statement == statement {
            c.slots.retain(|(n, _, _)| *n != name);
            c.slots.push((name, tag, value.clone()));
        }
    });
    Ok(value)
}

/// Forget the statement's context (end of transaction, commit or abort).
pub fn reset() {
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        c.statement = 0;
        c.slots.clear();
    });
}
