//! The per-row path of `authz.permits()`: every call after the first in a statement, run
//! without pgrx's guard (the guard and its wrapper were a third of the per-row cost). What runs
//! here therefore must never raise an error, panic or allocate: it reads memory PostgreSQL handed
//! over and the call site's state, and answers. The lints below make indexing, arithmetic that can
//! overflow, panicking calls and unwraps compile errors in this module; it calls nothing that
//! allocates (sets are built elsewhere, in src/enforce/row_filter.rs).
#![deny(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    clippy::unreachable,
    clippy::todo
)]

use std::rc::Rc;

use pgrx::pg_sys;
use rustc_hash::FxHashSet;

use crate::pg::{cache, settings};

/// Integer ids: a bitmap when they are dense (the usual serial ids), a hash set otherwise.
pub enum IntSet {
    Dense { min: i64, bits: Vec<u64> },
    Sparse(FxHashSet<i64>),
}

impl IntSet {
    #[inline]
    pub fn contains(&self, v: i64) -> bool {
        match self {
            IntSet::Dense { min, bits } => {
                let Some(off) = v.checked_sub(*min) else { return false };
                if off < 0 {
                    return false;
                }
                let off = off as u64;
                bits.get((off / 64) as usize).is_some_and(|w| w & (1 << (off % 64)) != 0)
            }
            IntSet::Sparse(set) => set.contains(&v),
        }
    }
}

pub enum TypedSet {
    Int(Rc<IntSet>),
    Uuid(Rc<FxHashSet<[u8; 16]>>),
    Text(Rc<FxHashSet<Vec<u8>>>),
}

#[derive(Clone, Copy)]
#[repr(u8)]
pub enum IdKind {
    Int8,
    Int4,
    Uuid,
    Text,
}

/// What one call site remembers for the rest of the statement: the set for the type and action
/// it was resolved for. `args_constant` says whether those two arguments can change between rows
/// (a policy's literals cannot; a column or a PL/pgSQL variable can): only then may the per-row
/// fast path skip comparing them.
pub struct CallState {
    pub epoch: u64,
    pub generation: u64,
    pub args_constant: bool,
    pub resource_type: String,
    pub action: String,
    pub set: TypedSet,
    /// `set` names the ids taken away from "every id" (`authz.permits_stored()` for a caller
    /// allowed all but a few: the id is known to exist).
    pub complement: bool,
}

/// The id argument tested against a set of its kind. Reads only memory PostgreSQL handed us and
/// calls nothing that can raise an error or panic (text ids, which may need detoasting, never
/// reach it).
#[inline]
pub unsafe fn fixed_width_id_permitted(
    state: *const CallState,
    fcinfo: pg_sys::FunctionCallInfo,
    kind: IdKind,
) -> bool {
    // SAFETY: `state` is this call site's live CallState and `fcinfo` the current call of authz.permits, whose first argument is non-null (STRICT) and of the kind the function was declared with: a by-value integer, or a pointer to 16 uuid bytes.
    unsafe {
        let raw = (*(*fcinfo).args.as_ptr()).value;
        let in_set = match (&(*state).set, kind) {
            (TypedSet::Int(set), IdKind::Int8) => set.contains(raw.value() as i64),
            (TypedSet::Int(set), IdKind::Int4) => set.contains(i64::from(raw.value() as i32)),
            (TypedSet::Uuid(set), IdKind::Uuid) => {
                let bytes = raw.cast_mut_ptr::<[u8; 16]>();
                if bytes.is_null() {
                    return false;
                }
                set.contains(&*bytes)
            }
            _ => return false,
        };
        in_set != (*state).complement
    }
}

/// The per-row path of every call after the first in a statement: the state in `fn_extra` is
/// current, so no resolution (and nothing that can fail) happens. Skipping pgrx's guard here is
/// what makes it cheap: the guard and its wrapper were about a third of the function's per-row cost
/// (perf, 1M rows).
#[inline]
pub unsafe fn current_state(fcinfo: pg_sys::FunctionCallInfo) -> Option<*const CallState> {
    // SAFETY: `fcinfo` is the current call of authz.permits; `fn_extra` is null (checked) or this call site's CallState.
    unsafe {
        let state = (*(*fcinfo).flinfo).fn_extra as *const CallState;
        (!state.is_null()
            && (*state).args_constant
            && (*state).epoch == settings::token_epoch()
            && (*state).generation == cache::generation())
        .then_some(state)
    }
}
