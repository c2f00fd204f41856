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

use pgrx::fcinfo::{pg_getarg, pg_getarg_datum_raw};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

use crate::errors::OrRaise;
use crate::fasthash::FastSet;
use crate::resolve::{self, Permitted};
use crate::{audit, cache, elision, gucs, handoff, identity};

/// Integer ids: a bitmap when they are dense (the usual serial ids), a hash set otherwise.
pub enum IntSet {
    Dense { min: i64, bits: Vec<u64> },
    Sparse(FastSet<i64>),
}

impl IntSet {
    pub fn build(ids: &[String]) -> IntSet {
        let values: Vec<i64> = ids.iter().filter_map(|s| s.parse::<i64>().ok()).collect();
        let (Some(&min), Some(&max)) = (values.iter().min(), values.iter().max()) else {
            return IntSet::Sparse(FastSet::default());
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

enum TypedSet {
    Int(Rc<IntSet>),
    Uuid(Rc<FastSet<[u8; 16]>>),
    Text(Rc<FastSet<Vec<u8>>>),
}

#[derive(Clone, Copy)]
#[repr(u8)]
enum IdKind {
    Int8,
    Int4,
    Uuid,
    Text,
}

/// What one call site remembers for the rest of the statement: the set for the type and action
/// it was resolved for. `args_constant` says whether those two arguments can change between rows
/// (a policy's literals cannot; a column or a PL/pgSQL variable can): only then may the per-row
/// fast path skip comparing them.
struct CallState {
    epoch: u64,
    generation: u64,
    args_constant: bool,
    resource_type: String,
    action: String,
    set: TypedSet,
}

fn typed_set(p: &Permitted, kind: IdKind) -> TypedSet {
    match kind {
        IdKind::Int8 | IdKind::Int4 => TypedSet::Int(p.typed("int", IntSet::build)),
        IdKind::Uuid => TypedSet::Uuid(p.typed("uuid", |ids| ids.iter().filter_map(|s| parse_uuid(s)).collect())),
        IdKind::Text => TypedSet::Text(p.typed("bytes", |ids| ids.iter().map(|s| s.as_bytes().to_vec()).collect())),
    }
}

/// Resolve (or re-resolve) the permission set for this call site.
unsafe fn call_state(fcinfo: pg_sys::FunctionCallInfo, kind: IdKind) -> *mut CallState {
    if let Some(current) = current_state(fcinfo) {
        return current.cast_mut();
    }
    let flinfo = (*fcinfo).flinfo;
    let existing = (*flinfo).fn_extra as *mut CallState;
    let epoch = gucs::token_epoch();
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
    // Resolution may have reloaded caches; record the generation it was computed under.
    let state = CallState {
        epoch,
        generation: cache::generation(),
        args_constant: arg_is_const(flinfo, 1) && arg_is_const(flinfo, 2),
        resource_type: resource_type.to_string(),
        action: action.to_string(),
        set: typed_set(&permitted, kind),
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

/// Is argument `n` of this call a literal? Not PostgreSQL's get_fn_expr_arg_stable(), which also
/// counts external parameters: PL/pgSQL keeps a simple expression's state across evaluations, so
/// a variable there changes under the same `fn_extra`.
unsafe fn arg_is_const(flinfo: *mut pg_sys::FmgrInfo, n: i32) -> bool {
    let expr = (*flinfo).fn_expr;
    if expr.is_null() || (*expr).type_ != pg_sys::NodeTag::T_FuncExpr {
        return false;
    }
    let arg = list_nth((*(expr as *mut pg_sys::FuncExpr)).args, n);
    !arg.is_null() && (*arg).type_ == pg_sys::NodeTag::T_Const
}

/// The id argument tested against a set of its kind. Reads only memory PostgreSQL handed us and
/// calls nothing that can raise an error or panic (text ids, which may need detoasting, never
/// reach it).
#[inline]
unsafe fn fixed_width_id_permitted(state: *const CallState, fcinfo: pg_sys::FunctionCallInfo, kind: IdKind) -> bool {
    let raw = (*(*fcinfo).args.as_ptr()).value;
    match (&(*state).set, kind) {
        (TypedSet::Int(set), IdKind::Int8) => set.contains(raw.value() as i64),
        (TypedSet::Int(set), IdKind::Int4) => set.contains(i64::from(raw.value() as i32)),
        (TypedSet::Uuid(set), IdKind::Uuid) => {
            let bytes = raw.cast_mut_ptr::<[u8; 16]>();
            !bytes.is_null() && set.contains(&*bytes)
        }
        _ => false,
    }
}

/// The per-row path of every call after the first in a statement: the state in `fn_extra` is
/// current, so no resolution (and nothing that can fail) happens. Skipping pgrx's guard here is
/// what makes it cheap: the guard and its wrapper were about a third of the function's per-row cost
/// (perf, 1M rows).
#[inline]
unsafe fn current_state(fcinfo: pg_sys::FunctionCallInfo) -> Option<*const CallState> {
    let state = (*(*fcinfo).flinfo).fn_extra as *const CallState;
    (!state.is_null()
        && (*state).args_constant
        && (*state).epoch == gucs::token_epoch()
        && (*state).generation == cache::generation())
    .then_some(state)
}

/// Everything else (first call, changed token or policy, text ids), with errors raised properly.
#[pg_guard]
unsafe extern "C-unwind" fn permits_guarded(fcinfo: pg_sys::FunctionCallInfo, kind: IdKind) -> pg_sys::Datum {
    let state = call_state(fcinfo, kind);
    let allowed = match (&(*state).set, kind) {
        (TypedSet::Text(set), IdKind::Text) => match pg_getarg::<&[u8]>(fcinfo, 0) {
            Some(b) => set.contains(b),
            None => false,
        },
        _ => fixed_width_id_permitted(state, fcinfo, kind),
    };
    pg_sys::Datum::from(allowed)
}

macro_rules! permits_fn {
    ($finfo:ident, $name:ident, $kind:expr) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1_API
        }

        #[unsafe(no_mangle)]
        pub unsafe extern "C-unwind" fn $name(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            if !matches!($kind, IdKind::Text) {
                if let Some(state) = current_state(fcinfo) {
                    return pg_sys::Datum::from(fixed_width_id_permitted(state, fcinfo, $kind));
                }
            }
            permits_guarded(fcinfo, $kind)
        }
    };
}

permits_fn!(pg_finfo_authz_permits_int8, authz_permits_int8, IdKind::Int8);
permits_fn!(pg_finfo_authz_permits_int4, authz_permits_int4, IdKind::Int4);
permits_fn!(pg_finfo_authz_permits_uuid, authz_permits_uuid, IdKind::Uuid);
permits_fn!(pg_finfo_authz_permits_text, authz_permits_text, IdKind::Text);

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
    if unsafe { !pg_sys::ActivePortal.is_null() } {
        audit::set_decision(&who, &p);
    }
    p
}

/// The permitted ids as bigint[] (the index condition for bigint columns).
#[pg_extern(stable, parallel_safe)]
fn permitted_bigint_ids(resource_type: &str, action: &str) -> Vec<i64> {
    let p = statement_set(resource_type, action);
    p.ids.iter().filter_map(|s| s.parse().ok()).collect()
}

/// The permitted ids as integer[].
#[pg_extern(stable, parallel_safe)]
fn permitted_integer_ids(resource_type: &str, action: &str) -> Vec<i32> {
    let p = statement_set(resource_type, action);
    p.ids.iter().filter_map(|s| s.parse().ok()).collect()
}

/// The permitted ids as uuid[].
#[pg_extern(stable, parallel_safe)]
fn permitted_uuid_ids(resource_type: &str, action: &str) -> Vec<pgrx::Uuid> {
    let p = statement_set(resource_type, action);
    p.ids.iter().filter_map(|s| parse_uuid(s)).map(pgrx::Uuid::from_bytes).collect()
}

// ------------------------------------------------------------------------------------------------
// Planner support
// ------------------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_authz_permits_support() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

pub(crate) unsafe fn const_text(node: *mut pg_sys::Node) -> Option<String> {
    if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_Const {
        return None;
    }
    let c = node as *mut pg_sys::Const;
    if (*c).constisnull || (*c).consttype != pg_sys::TEXTOID {
        return None;
    }
    String::from_datum((*c).constvalue, false)
}

/// The caller's permission set for a `permits(col, type, action)` call with constant type and
/// action, as the planner sees it; `None` when it cannot be known without raising an error.
unsafe fn planning_set(type_arg: *mut pg_sys::Node, action_arg: *mut pg_sys::Node) -> Option<Rc<Permitted>> {
    let (resource_type, action) = (const_text(type_arg)?, const_text(action_arg)?);
    let who = identity::current().ok()?;
    resolve::permitted_for(&who, &resource_type, &action).ok()
}

pub(crate) unsafe fn list_nth(list: *mut pg_sys::List, n: i32) -> *mut pg_sys::Node {
    if list.is_null() || n < 0 || n >= (*list).length {
        return std::ptr::null_mut();
    }
    (*(*list).elements.add(n as usize)).ptr_value as *mut pg_sys::Node
}

/// The selectivity of `permits(col, type, action)`: the fraction of the type's ids the caller may
/// use. Only an estimate (a cached plan may run under another identity); correctness never
/// depends on it. Without an answer the planner keeps its default.
unsafe fn selectivity(req: *mut pg_sys::SupportRequestSelectivity) -> bool {
    if (*req).is_join {
        return false;
    }
    let Some(p) = planning_set(list_nth((*req).args, 1), list_nth((*req).args, 2)) else { return false };
    if parallel_scan_possible(req) {
        handoff::note(&p);
    }
    if p.total == 0 {
        return false;
    }
    (*req).selectivity = (p.ids.len() as f64 / p.total as f64).clamp(0.0, 1.0);
    true
}

/// Could this relation be scanned in parallel? Sets for tables below the parallel scan threshold
/// are not even noted for the handoff (when in doubt, note: a missed handoff only costs the
/// workers a cold resolution).
unsafe fn parallel_scan_possible(req: *mut pg_sys::SupportRequestSelectivity) -> bool {
    if pg_sys::max_parallel_workers_per_gather <= 0 {
        return false;
    }
    let mut arg = list_nth((*req).args, 0);
    while !arg.is_null() && (*arg).type_ == pg_sys::NodeTag::T_RelabelType {
        arg = (*(arg as *mut pg_sys::RelabelType)).arg.cast();
    }
    let root = (*req).root;
    if arg.is_null() || root.is_null() || (*arg).type_ != pg_sys::NodeTag::T_Var {
        return true;
    }
    let varno = (*(arg as *mut pg_sys::Var)).varno;
    if varno <= 0 || varno >= (*root).simple_rel_array_size || (*root).simple_rel_array.is_null() {
        return true;
    }
    let rel = *(*root).simple_rel_array.add(varno as usize);
    rel.is_null() || (*rel).pages as i64 >= i64::from(pg_sys::min_parallel_table_scan_size)
}

unsafe fn array_function(column_type: pg_sys::Oid) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    let (name, array_type) = match column_type {
        pg_sys::INT8OID => (c"permitted_bigint_ids", pg_sys::INT8ARRAYOID),
        pg_sys::INT4OID => (c"permitted_integer_ids", pg_sys::INT4ARRAYOID),
        pg_sys::UUIDOID => (c"permitted_uuid_ids", pg_sys::UUIDARRAYOID),
        pg_sys::TEXTOID => (c"permitted_ids", pg_sys::TEXTARRAYOID),
        _ => return None,
    };
    let mut names = pg_sys::lappend(std::ptr::null_mut(), pg_sys::makeString(c"authz".as_ptr().cast_mut()).cast());
    names = pg_sys::lappend(names, pg_sys::makeString(name.as_ptr().cast_mut()).cast());
    let args = [pg_sys::TEXTOID, pg_sys::TEXTOID];
    let oid = pg_sys::LookupFuncName(names, 2, args.as_ptr(), true);
    (oid != pg_sys::InvalidOid).then_some((oid, array_type))
}

/// Offer the index condition to a selective caller, and to a broad one only where an index-only
/// scan could use it (below). The planner estimates `col = ANY(array)` by evaluating the (stable)
/// array function and costing every element, which for a caller who may see thousands of ids costs
/// milliseconds per statement (measured: 6–11 ms of planning for 10,000 ids) and buys nothing when
/// the heap must be read anyway: fetching a large fraction of a table through an index never beats
/// a scan. Without an answer (no identity yet) the condition is offered.
const INDEX_CONDITION_MAX_IDS: usize = 1000;
const INDEX_CONDITION_MAX_FRACTION: f64 = 0.2;

unsafe fn worth_an_index_condition(req: *mut pg_sys::SupportRequestIndexCondition) -> bool {
    let args = (*(*req).node.cast::<pg_sys::FuncExpr>()).args;
    let Some(p) = planning_set(list_nth(args, 1), list_nth(args, 2)) else { return true };
    let selective = p.ids.len() <= INDEX_CONDITION_MAX_IDS
        && (p.total == 0 || (p.ids.len() as f64) <= INDEX_CONDITION_MAX_FRACTION * p.total as f64);
    selective
        || (index_only_scan_possible(req) && p.ids.len() as f64 * MIN_ROWS_PER_ID <= (*(*(*req).index).rel).tuples)
}

/// A broad caller's index condition can still pay off when an index-only scan of this index can
/// answer everything the statement needs from the relation (`count(*)`, a join on the column):
/// reading the index entries of half the sessions beats reading every heap row, which is the plan
/// the limit's literal array gets. Costing the array is then a few milliseconds against a scan of
/// at least MIN_ROWS_PER_ID rows per id; any statement that needs the heap (a page, a point
/// lookup) never pays it.
const MIN_ROWS_PER_ID: f64 = 50.0;

unsafe fn index_only_scan_possible(req: *mut pg_sys::SupportRequestIndexCondition) -> bool {
    let index = (*req).index;
    let indexcol = (*req).indexcol;
    if index.is_null() || (*index).rel.is_null() || (*index).canreturn.is_null() || (*index).indexkeys.is_null() {
        return false;
    }
    let rel = (*index).rel;
    if !*(*index).canreturn.add(indexcol as usize) || (*rel).reltarget.is_null() {
        return false;
    }
    let column = *(*index).indexkeys.add(indexcol as usize);
    let mut used: *mut pg_sys::Bitmapset = std::ptr::null_mut();
    pg_sys::pull_varattnos((*(*rel).reltarget).exprs.cast(), (*rel).relid, &mut used);
    let clauses = (*rel).baserestrictinfo;
    for i in 0..if clauses.is_null() { 0 } else { (*clauses).length } {
        let ri = list_nth(clauses, i) as *mut pg_sys::RestrictInfo;
        if !ri.is_null() {
            pg_sys::pull_varattnos((*ri).clause.cast(), (*rel).relid, &mut used);
        }
    }
    // Members are attribute numbers offset by FirstLowInvalidHeapAttributeNumber; a whole-row or
    // system column reference needs the heap as well.
    let mut member = pg_sys::bms_next_member(used, -1);
    while member >= 0 {
        if member + pg_sys::FirstLowInvalidHeapAttributeNumber != column {
            return false;
        }
        member = pg_sys::bms_next_member(used, member);
    }
    true
}

/// Turn `permits(col, type, action)` into `col = ANY(authz.permitted_*_ids(type, action))` for a
/// btree index on `col`. Exact (not lossy): the array is the very set `permits` consults.
unsafe fn index_condition(req: *mut pg_sys::SupportRequestIndexCondition) -> *mut pg_sys::List {
    if (*req).indexarg != 0 || (*(*req).index).relam != pg_sys::BTREE_AM_OID {
        return std::ptr::null_mut();
    }
    let node = (*req).node;
    if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_FuncExpr || !worth_an_index_condition(req) {
        return std::ptr::null_mut();
    }
    let args = (*(node as *mut pg_sys::FuncExpr)).args;
    let (column, type_arg, action_arg) = (list_nth(args, 0), list_nth(args, 1), list_nth(args, 2));
    if const_text(type_arg).is_none() || const_text(action_arg).is_none() {
        return std::ptr::null_mut();
    }
    let column_type = pg_sys::exprType(column);
    let eq =
        pg_sys::get_opfamily_member((*req).opfamily, column_type, column_type, pg_sys::BTEqualStrategyNumber as i16);
    if eq == pg_sys::InvalidOid {
        return std::ptr::null_mut();
    }
    let Some((array_fn, array_type)) = array_function(column_type) else { return std::ptr::null_mut() };
    let mut fn_args = pg_sys::lappend(std::ptr::null_mut(), pg_sys::copyObjectImpl(type_arg.cast()));
    fn_args = pg_sys::lappend(fn_args, pg_sys::copyObjectImpl(action_arg.cast()));
    let array = pg_sys::makeFuncExpr(
        array_fn,
        array_type,
        fn_args,
        pg_sys::InvalidOid,
        pg_sys::DEFAULT_COLLATION_OID,
        pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
    );
    let saop = pg_sys::palloc0(std::mem::size_of::<pg_sys::ScalarArrayOpExpr>()) as *mut pg_sys::ScalarArrayOpExpr;
    (*saop).xpr.type_ = pg_sys::NodeTag::T_ScalarArrayOpExpr;
    (*saop).opno = eq;
    (*saop).opfuncid = pg_sys::get_opcode(eq);
    (*saop).useOr = true;
    (*saop).inputcollid = pg_sys::exprCollation(column);
    let mut saop_args = pg_sys::lappend(std::ptr::null_mut(), pg_sys::copyObjectImpl(column.cast()));
    saop_args = pg_sys::lappend(saop_args, array.cast());
    (*saop).args = saop_args;
    (*saop).location = -1;
    (*req).lossy = false;
    pg_sys::lappend(std::ptr::null_mut(), saop.cast())
}

#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn authz_permits_support(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let req = pg_getarg_datum_raw(fcinfo, 0).cast_mut_ptr::<pg_sys::Node>();
    if req.is_null() {
        return pg_sys::Datum::from(0usize);
    }
    match (*req).type_ {
        pg_sys::NodeTag::T_SupportRequestSelectivity => {
            let r = req as *mut pg_sys::SupportRequestSelectivity;
            if selectivity(r) {
                return pg_sys::Datum::from(r);
            }
        }
        pg_sys::NodeTag::T_SupportRequestSimplify => {
            let replacement = elision::simplify(req as *mut pg_sys::SupportRequestSimplify);
            if !replacement.is_null() {
                return pg_sys::Datum::from(replacement);
            }
        }
        pg_sys::NodeTag::T_SupportRequestIndexCondition => {
            let list = index_condition(req as *mut pg_sys::SupportRequestIndexCondition);
            if !list.is_null() {
                return pg_sys::Datum::from(list);
            }
        }
        _ => {}
    }
    pg_sys::Datum::from(0usize)
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
REVOKE ALL ON FUNCTION authz.permits_support(internal) FROM PUBLIC;
"#,
    name = "permits_functions",
    requires = [permitted_bigint_ids, permitted_integer_ids, permitted_uuid_ids],
);
