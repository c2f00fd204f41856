//! The functions the row-level security policies call: `authz.permits(id, resource_type, action)`
//! for bigint, integer, uuid and text ids.
//!
//! Per row they cost a pointer compare and a set lookup: the permission set is resolved once per
//! statement per call site (kept in `fn_extra`, which lives as long as the executor's query
//! context) and re-resolved only if the token or the policy changes mid-statement. A planner
//! support function tells the planner how selective the set really is (the measured failure of
//! `= ANY((SELECT f()))` is a blind estimate) and turns the call into an index condition
//! `id = ANY(authz.permitted_*_ids(type, action))`, evaluated once at scan start.

use std::rc::Rc;

use pgrx::fcinfo::pg_getarg;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

use crate::audit;
use crate::auth::identity;
use crate::enforce::handoff;
use crate::enforce::per_row::{current_state, fixed_width_id_permitted, CallState, IdKind, IntSet, TypedSet};
use crate::pg::errors::OrRaise;
use crate::pg::nodes::list_nth;
use crate::pg::{cache, settings};
use crate::policy::resolve::{self, Permitted};

/// Integer ids as a bitmap when they are dense (the usual serial ids), a hash set otherwise.
fn build_int_set(ids: &[String]) -> IntSet {
    let values: Vec<i64> = ids.iter().filter_map(|s| s.parse::<i64>().ok()).collect();
    let (Some(&min), Some(&max)) = (values.iter().min(), values.iter().max()) else {
        return IntSet::Sparse(Default::default());
    };
    let span = (max as i128 - min as i128) as u128 + 1;
    if span <= (values.len() as u128) * 64 + 4096 {
        let mut bits = vec![0u64; span.div_ceil(64) as usize];
        for v in values {
            let off = (v - min) as u64;
            bits[(off / 64) as usize] |= 1 << (off % 64);
        }
        IntSet::Dense { min, bits }
    } else {
        IntSet::Sparse(values.into_iter().collect())
    }
}

/// Canonical 16-byte form of a uuid written as text (hyphens and braces optional, any case).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-' && *b != b'{' && *b != b'}').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// The call site's lookup structure: always the permitted ids themselves. A complement ("all but
/// these") is enumerated here, since an id must also exist to be permitted and only the type's
/// table knows which do; the planner support function gives such callers a cheaper form where a
/// foreign key vouches for existence (src/enforce/elision.rs).
fn typed_set(p: &Permitted, kind: IdKind) -> TypedSet {
    let listed = p.listed().or_raise();
    let ids = listed.as_slice();
    match kind {
        IdKind::Int8 | IdKind::Int4 => TypedSet::Int(p.typed("int", |_| build_int_set(ids))),
        IdKind::Uuid => TypedSet::Uuid(p.typed("uuid", |_| ids.iter().filter_map(|s| parse_uuid(s)).collect())),
        IdKind::Text => TypedSet::Text(p.typed("bytes", |_| ids.iter().map(|s| s.as_bytes().to_vec()).collect())),
    }
}

/// For `permits_stored()` (the id is known to exist): a complement's excluded ids as they are,
/// never enumerated; any other set as for `permits()`. Returns the set and whether it excludes.
fn stored_typed_set(p: &Permitted, kind: IdKind) -> (TypedSet, bool) {
    if !p.complement {
        return (typed_set(p, kind), false);
    }
    let set = match kind {
        IdKind::Int8 | IdKind::Int4 => TypedSet::Int(p.typed("int-excluded", build_int_set)),
        IdKind::Uuid => {
            TypedSet::Uuid(p.typed("uuid-excluded", |ids| ids.iter().filter_map(|s| parse_uuid(s)).collect()))
        }
        IdKind::Text => {
            TypedSet::Text(p.typed("bytes-excluded", |ids| ids.iter().map(|s| s.as_bytes().to_vec()).collect()))
        }
    };
    (set, true)
}

/// Resolve (or re-resolve) the permission set for this call site.
unsafe fn call_state(fcinfo: pg_sys::FunctionCallInfo, kind: IdKind, stored: bool) -> *mut CallState {
    // SAFETY: `fcinfo` is the fmgr call PostgreSQL made for authz.permits (three arguments, the first non-null: the function is STRICT); `fn_extra` is null or this call site's CallState, allocated in `fn_mcxt`.
    unsafe {
        if let Some(current) = current_state(fcinfo) {
            return current.cast_mut();
        }
        let flinfo = (*fcinfo).flinfo;
        let existing = (*flinfo).fn_extra as *mut CallState;
        let epoch = settings::token_epoch();
        let resource_type: &str = pg_getarg(fcinfo, 1).unwrap_or("");
        let action: &str = pg_getarg(fcinfo, 2).unwrap_or("");
        if !existing.is_null()
            && (*existing).epoch == epoch
            && (*existing).generation == cache::generation()
            && (*existing).resource_type == resource_type
            && (*existing).action == action
        {
            return existing;
        }
        let permitted = statement_set(resource_type, action);
        let (set, complement) =
            if stored { stored_typed_set(&permitted, kind) } else { (typed_set(&permitted, kind), false) };
        // Resolution may have reloaded caches; record the generation it was computed under.
        let state = CallState {
            epoch,
            generation: cache::generation(),
            args_constant: arg_is_const(flinfo, 1) && arg_is_const(flinfo, 2),
            resource_type: resource_type.to_string(),
            action: action.to_string(),
            set,
            complement,
        };
        if existing.is_null() {
            let ptr = PgMemoryContexts::For((*flinfo).fn_mcxt).leak_and_drop_on_delete(state);
            (*flinfo).fn_extra = ptr.cast();
            ptr
        } else {
            *existing = state;
            existing
        }
    }
}

/// Is argument `n` of this call a literal? Not PostgreSQL's get_fn_expr_arg_stable(), which also
/// counts external parameters: PL/pgSQL keeps a simple expression's state across evaluations, so
/// a variable there changes under the same `fn_extra`.
unsafe fn arg_is_const(flinfo: *mut pg_sys::FmgrInfo, n: i32) -> bool {
    // SAFETY: `flinfo` is the call's FmgrInfo; fn_expr is null-checked and tag-checked before its arguments are read.
    unsafe {
        let expr = (*flinfo).fn_expr;
        if expr.is_null() || (*expr).type_ != pg_sys::NodeTag::T_FuncExpr {
            return false;
        }
        let arg = list_nth((*(expr as *mut pg_sys::FuncExpr)).args, n);
        !arg.is_null() && (*arg).type_ == pg_sys::NodeTag::T_Const
    }
}

/// Everything else (first call, changed token or policy, text ids), with errors raised properly.
#[pg_guard]
unsafe extern "C-unwind" fn permits_guarded(
    fcinfo: pg_sys::FunctionCallInfo,
    kind: IdKind,
    stored: bool,
) -> pg_sys::Datum {
    // SAFETY: `fcinfo` is the current call of authz.permits (STRICT: the id is non-null); call_state returns this call site's live state.
    unsafe {
        let state = call_state(fcinfo, kind, stored);
        let allowed = match (&(*state).set, kind) {
            (TypedSet::Text(set), IdKind::Text) => match pg_getarg::<&[u8]>(fcinfo, 0) {
                Some(b) => set.contains(b) != (*state).complement,
                None => false,
            },
            _ => fixed_width_id_permitted(state, fcinfo, kind),
        };
        pg_sys::Datum::from(allowed)
    }
}

macro_rules! permits_fn {
    ($finfo:ident, $name:ident, $kind:expr, $stored:expr) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1_API
        }

        #[unsafe(no_mangle)]
        pub unsafe extern "C-unwind" fn $name(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            // SAFETY: PostgreSQL calls this for authz.permits (STRICT, so the id is non-null) with
            // the fcinfo of this call site; the fast path only runs when fn_extra holds a current
            // state for a fixed-width id, everything else goes through the guarded path.
            unsafe {
                if !matches!($kind, IdKind::Text) {
                    if let Some(state) = current_state(fcinfo) {
                        return pg_sys::Datum::from(fixed_width_id_permitted(state, fcinfo, $kind));
                    }
                }
                permits_guarded(fcinfo, $kind, $stored)
            }
        }
    };
}

permits_fn!(pg_finfo_authz_permits_int8, authz_permits_int8, IdKind::Int8, false);
permits_fn!(pg_finfo_authz_permits_int4, authz_permits_int4, IdKind::Int4, false);
permits_fn!(pg_finfo_authz_permits_uuid, authz_permits_uuid, IdKind::Uuid, false);
permits_fn!(pg_finfo_authz_permits_text, authz_permits_text, IdKind::Text, false);
// `permits()` for an id known to be stored in the type's table (the planner writes these where a
// validated foreign key says so, for callers allowed all but a few ids: src/enforce/elision.rs).
permits_fn!(pg_finfo_authz_permits_stored_int8, authz_permits_stored_int8, IdKind::Int8, true);
permits_fn!(pg_finfo_authz_permits_stored_int4, authz_permits_stored_int4, IdKind::Int4, true);
permits_fn!(pg_finfo_authz_permits_stored_uuid, authz_permits_stored_uuid, IdKind::Uuid, true);

/// The set a statement uses, for the row filter and for an index condition's array alike: in a
/// parallel worker the leader's handoff (a parallel index scan evaluates its array in every
/// participant), otherwise resolved for the current identity. The decision is audited here, since
/// an index-only scan never calls the row filter, but only when executing: the planner also calls
/// the array function, to estimate it, outside any portal.
fn statement_set(resource_type: &str, action: &str) -> Rc<Permitted> {
    if let Some(p) = handoff::take(resource_type, action) {
        return p;
    }
    let who = identity::current().or_raise();
    let p = resolve::permitted_for(&who, resource_type, action).or_raise();
    // SAFETY: a plain read of a backend global (null-checked, never dereferenced).
    if unsafe { !pg_sys::ActivePortal.is_null() } {
        audit::set_decision(&who.actor(), &p.outcome());
    }
    p
}

/// The permitted ids themselves (a complement is enumerated: only a plan made for another caller
/// asks a complement caller for its array).
fn listed_ids(resource_type: &str, action: &str) -> Rc<Vec<String>> {
    statement_set(resource_type, action).listed().or_raise()
}

/// The permitted ids as bigint[] (the index condition for bigint columns).
#[pg_extern(stable, parallel_safe)]
fn permitted_bigint_ids(resource_type: &str, action: &str) -> Vec<i64> {
    listed_ids(resource_type, action).iter().filter_map(|s| s.parse().ok()).collect()
}

/// The permitted ids as integer[].
#[pg_extern(stable, parallel_safe)]
fn permitted_integer_ids(resource_type: &str, action: &str) -> Vec<i32> {
    listed_ids(resource_type, action).iter().filter_map(|s| s.parse().ok()).collect()
}

/// The permitted ids as uuid[].
#[pg_extern(stable, parallel_safe)]
fn permitted_uuid_ids(resource_type: &str, action: &str) -> Vec<pgrx::Uuid> {
    listed_ids(resource_type, action).iter().filter_map(|s| parse_uuid(s)).map(pgrx::Uuid::from_bytes).collect()
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION authz.permits_support(internal) RETURNS internal
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'authz_permits_support';

CREATE FUNCTION authz.permits(id bigint, resource_type text, action text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE COST 1 SUPPORT authz.permits_support
    AS 'MODULE_PATHNAME', 'authz_permits_int8';
CREATE FUNCTION authz.permits(id integer, resource_type text, action text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE COST 1 SUPPORT authz.permits_support
    AS 'MODULE_PATHNAME', 'authz_permits_int4';
CREATE FUNCTION authz.permits(id uuid, resource_type text, action text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE COST 1 SUPPORT authz.permits_support
    AS 'MODULE_PATHNAME', 'authz_permits_uuid';
CREATE FUNCTION authz.permits(id text, resource_type text, action text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE COST 1 SUPPORT authz.permits_support
    AS 'MODULE_PATHNAME', 'authz_permits_text';
CREATE FUNCTION authz.permits_stored(id bigint, resource_type text, action text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE COST 1 SUPPORT authz.permits_support
    AS 'MODULE_PATHNAME', 'authz_permits_stored_int8';
CREATE FUNCTION authz.permits_stored(id integer, resource_type text, action text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE COST 1 SUPPORT authz.permits_support
    AS 'MODULE_PATHNAME', 'authz_permits_stored_int4';
CREATE FUNCTION authz.permits_stored(id uuid, resource_type text, action text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE COST 1 SUPPORT authz.permits_support
    AS 'MODULE_PATHNAME', 'authz_permits_stored_uuid';
REVOKE ALL ON FUNCTION authz.permits_support(internal) FROM PUBLIC;
"#,
    name = "permits_functions",
    requires = [permitted_bigint_ids, permitted_integer_ids, permitted_uuid_ids],
);
