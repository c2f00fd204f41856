//! The planner support function of `authz.permits()`: the real selectivity of the caller's set,
//! the index condition `col = ANY(authz.permitted_*_ids(type, action))` for a selective caller
//! (or a broad one whose statement an index-only scan can answer), and the plan-time elision of
//! the filter (src/enforce/elision.rs) for a caller who may use every id.

use std::rc::Rc;

use pgrx::fcinfo::pg_getarg_datum_raw;
use pgrx::prelude::*;

use crate::auth::identity;
use crate::enforce::{elision, handoff};
use crate::pg::nodes::{const_text, list_nth};
use crate::policy::resolve::{self, Permitted};

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_authz_permits_support() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// The caller's permission set for a `permits(col, type, action)` call with constant type and
/// action, as the planner sees it; `None` when it cannot be known without raising an error.
unsafe fn planning_set(type_arg: *mut pg_sys::Node, action_arg: *mut pg_sys::Node) -> Option<Rc<Permitted>> {
    // SAFETY: the two arguments are nodes of the call being planned (null or valid), read through const_text's checks.
    unsafe {
        let (resource_type, action) = (const_text(type_arg)?, const_text(action_arg)?);
        let who = identity::current().ok()?;
        resolve::permitted_for(&who, &resource_type, &action).ok()
    }
}

/// Is `column` a column of a Citus table (not of a shard placement) in this query? Citus never runs
/// the plan a node makes of such a table: it sends the statement to the shards, whose own planning
/// asks again. Resolving the caller's set here would only read the resource tables through Citus
/// for nothing (for a broad caller, most of a new coordinator backend's first statement).
unsafe fn column_of_a_citus_table(root: *mut pg_sys::PlannerInfo, column: *mut pg_sys::Node) -> bool {
    // SAFETY: `root` is the planner's (null-checked) and `column` a node of the call being planned;
    // the range table entry is read through the planner's array, bounds-checked.
    unsafe {
        let mut arg = column;
        while !arg.is_null() && (*arg).type_ == pg_sys::NodeTag::T_RelabelType {
            arg = (*(arg as *mut pg_sys::RelabelType)).arg.cast();
        }
        if arg.is_null() || root.is_null() || (*arg).type_ != pg_sys::NodeTag::T_Var {
            return false;
        }
        let var = arg as *mut pg_sys::Var;
        let varno = (*var).varno;
        if (*var).varlevelsup != 0
            || varno <= 0
            || varno >= (*root).simple_rel_array_size
            || (*root).simple_rte_array.is_null()
        {
            return false;
        }
        let rte = *(*root).simple_rte_array.add(varno as usize);
        !rte.is_null()
            && (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION
            && crate::pg::citus::is_citus_table((*rte).relid)
    }
}

/// The selectivity of `permits(col, type, action)`: the fraction of the type's ids the caller may
/// use. Only an estimate (a cached plan may run under another identity); correctness never
/// depends on it. Without an answer the planner keeps its default.
unsafe fn selectivity(req: *mut pg_sys::SupportRequestSelectivity) -> bool {
    // SAFETY: `req` is the planner's SupportRequestSelectivity for a call of authz.permits, valid for this call; every pointer reached from it is null-checked.
    unsafe {
        if (*req).is_join || column_of_a_citus_table((*req).root, list_nth((*req).args, 0)) {
            return false;
        }
        let Some(p) = planning_set(list_nth((*req).args, 1), list_nth((*req).args, 2)) else { return false };
        if parallel_scan_possible(req) {
            handoff::note(&p);
        }
        if p.total == 0 {
            return false;
        }
        (*req).selectivity = (p.permitted_count() as f64 / p.total as f64).clamp(0.0, 1.0);
        true
    }
}

/// Could this relation be scanned in parallel? Sets for tables below the parallel scan threshold
/// are not even noted for the handoff (when in doubt, note: a missed handoff only costs the
/// workers a cold resolution).
unsafe fn parallel_scan_possible(req: *mut pg_sys::SupportRequestSelectivity) -> bool {
    // SAFETY: `req` is the planner's SupportRequestSelectivity; its root and relation array are bounds- and null-checked before use.
    unsafe {
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
}

unsafe fn array_function(column_type: pg_sys::Oid) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    // SAFETY: builds a two-element name List with PostgreSQL's allocators and looks the function up by name; no pointer is read.
    unsafe {
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
    // SAFETY: `req` is the planner's SupportRequestIndexCondition for a call of authz.permits (node is a FuncExpr, checked by the caller).
    unsafe {
        let args = (*(*req).node.cast::<pg_sys::FuncExpr>()).args;
        let Some(p) = planning_set(list_nth(args, 1), list_nth(args, 2)) else { return true };
        // "All but a few": no array is ever worth costing (nor enumerating).
        if p.complement {
            return false;
        }
        let selective = p.ids.len() <= INDEX_CONDITION_MAX_IDS
            && (p.total == 0 || (p.ids.len() as f64) <= INDEX_CONDITION_MAX_FRACTION * p.total as f64);
        selective
            || (index_only_scan_possible(req) && p.ids.len() as f64 * MIN_ROWS_PER_ID <= (*(*(*req).index).rel).tuples)
    }
}

/// A broad caller's index condition can still pay off when an index-only scan of this index can
/// answer everything the statement needs from the relation (`count(*)`, a join on the column):
/// reading the index entries of half the sessions beats reading every heap row, which is the plan
/// the limit's literal array gets. Costing the array is then a few milliseconds against a scan of
/// at least MIN_ROWS_PER_ID rows per id; any statement that needs the heap (a page, a point
/// lookup) never pays it.
const MIN_ROWS_PER_ID: f64 = 50.0;

unsafe fn index_only_scan_possible(req: *mut pg_sys::SupportRequestIndexCondition) -> bool {
    // SAFETY: `req` is the planner's SupportRequestIndexCondition; index, relation, canreturn and indexkeys are null-checked and indexed by the request's own column.
    unsafe {
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
}

/// Turn `permits(col, type, action)` into `col = ANY(authz.permitted_*_ids(type, action))` for a
/// btree index on `col`. Exact (not lossy): the array is the very set `permits` consults.
unsafe fn index_condition(req: *mut pg_sys::SupportRequestIndexCondition) -> *mut pg_sys::List {
    // SAFETY: `req` is the planner's SupportRequestIndexCondition; the node is checked to be a FuncExpr before its arguments are read, and new nodes are palloc'd in the planner's context.
    unsafe {
        if (*req).indexarg != 0 || (*(*req).index).relam != pg_sys::BTREE_AM_OID {
            return std::ptr::null_mut();
        }
        let node = (*req).node;
        if node.is_null()
            || (*node).type_ != pg_sys::NodeTag::T_FuncExpr
            || column_of_a_citus_table((*req).root, list_nth((*(node as *mut pg_sys::FuncExpr)).args, 0))
            || !worth_an_index_condition(req)
        {
            return std::ptr::null_mut();
        }
        let args = (*(node as *mut pg_sys::FuncExpr)).args;
        let (column, type_arg, action_arg) = (list_nth(args, 0), list_nth(args, 1), list_nth(args, 2));
        if const_text(type_arg).is_none() || const_text(action_arg).is_none() {
            return std::ptr::null_mut();
        }
        let column_type = pg_sys::exprType(column);
        let eq = pg_sys::get_opfamily_member(
            (*req).opfamily,
            column_type,
            column_type,
            pg_sys::BTEqualStrategyNumber as i16,
        );
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
}

#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn authz_permits_support(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: PostgreSQL calls a support function with one internal argument, a SupportRequest node (null-checked, dispatched on its tag).
    unsafe {
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
}
