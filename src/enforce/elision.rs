//! Dropping the row filter at plan time for a caller whose rules cover every id of the type.
//!
//! Any row filter makes PostgreSQL deform each tuple and reset a per-tuple context; for a caller
//! who may read everything that costs 1.6–1.9× the unfiltered scan (benchmarks), and no per-row
//! function can be cheaper than no filter. So the planner support function replaces
//! `authz.permits(col, type, 'read')` with `true` (or `col IS NOT NULL`) when all of these hold:
//!
//! - the caller holds an unscoped allow rule `*` on the type itself for the action, and no deny
//!   rule reaches it at all — so every id of the type, existing or created later, is permitted
//!   (a set that merely happens to list every id today is not enough: a session committed a
//!   moment ago may not be in it yet);
//! - `col` can only hold ids of the type: it is the type's own id column in its source table, or
//!   it has a validated, non-deferrable single-column foreign key to that column (so an id that is
//!   not a resource, which `permits` denies, cannot be there);
//! - the id type compares exactly (bigint, integer, uuid).
//!
//! A plan made this way is only right for the identity and policy it was made under, and plans
//! outlive statements (prepared statements, PL/pgSQL, open cursors). Three things keep it honest:
//! the plan carries a marker (a `PlanInvalItem` naming the elided type and action); every
//! executor start and every fetch of a marked plan re-checks that the current caller still covers
//! every id (a bad or expired token raises its own error there), and fails with 40001 if not; and
//! a change of token, verification settings or policy resets this backend's plan cache, so cached
//! plans are rebuilt before they would fail.
//!
//! A caller whose rules allow every id but deny a few (a complement set, src/policy/resolve.rs)
//! gets, on the same conditions, `authz.permits_stored(col, type, action)`: the same answer as
//! `permits()` for an id the key guarantees is stored, computed as "not one of the excluded ids"
//! — what a DBA would write as `col <> 7` — without enumerating the type to learn which ids exist.
//! It is right for any caller (a listed set answers as `permits()` does), so it needs no marker.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::pg_sys;

use crate::audit;
use crate::auth::identity;
use crate::pg::errors::{AuthzError, AuthzResult, OrRaise};
use crate::pg::nodes::{const_text, list_nth as nth};
use crate::policy::{model, resolve};

/// The marker's syscache id. PostgreSQL itself only puts PROCOID and TYPEOID items in plans, and
/// registers no plan invalidation callback for this cache, so the marker is never confused with a
/// real dependency and never invalidates anything by itself.
const MARKER_CACHE: i32 = pg_sys::SysCacheIdentifier::AUTHOID as i32;

/// pg_constraint's catalog oid (ConstraintRelationId; catalog oids never change).
const PG_CONSTRAINT: pg_sys::Oid = pg_sys::Oid::from_u32(2606);

thread_local! {
    /// The (type, action) pairs elided in this backend; a marker's hash value indexes this list.
    static ELIDED: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

/// Some plan in this backend was ever made with an elision (until then executor checks are free).
static ANY_ELISION: AtomicBool = AtomicBool::new(false);
/// A plan with an elision may sit in the plan cache since its last reset.
static ELIDED_SINCE_RESET: AtomicBool = AtomicBool::new(false);

/// Subscribe to identity and policy changes (called once, from _PG_init).
pub fn init() {
    crate::pg::cache::on_change(identity_or_policy_changed);
}

/// The identity or the policy changed: rebuild cached plans that were made for the old one.
fn identity_or_policy_changed() {
    if ELIDED_SINCE_RESET.swap(false, Ordering::Relaxed) {
        // SAFETY: drops this backend's cached plans; no pointer is involved.
        unsafe { pg_sys::ResetPlanCache() };
    }
}

fn marker_index(resource_type: &str, action: &str) -> u32 {
    ELIDED.with(|e| {
        let mut e = e.borrow_mut();
        let position = match e.iter().position(|(t, a)| t == resource_type && a == action) {
            Some(p) => p,
            None => {
                e.push((resource_type.to_string(), action.to_string()));
                e.len() - 1
            }
        };
        position as u32
    })
}

/// Does this query level contain an outer join? A Var on its nullable side can be NULL even in a
/// NOT NULL column (PostgreSQL 15 Vars do not say so), so the filter then keeps `IS NOT NULL`.
unsafe fn has_outer_join(parse: *mut pg_sys::Query) -> bool {
    // SAFETY: `parse` is the Query being planned; its range table is a valid List walked within its length.
    unsafe {
        let rtable = (*parse).rtable;
        (0..if rtable.is_null() { 0 } else { (*rtable).length }).any(|i| {
            let rte = nth(rtable, i) as *mut pg_sys::RangeTblEntry;
            !rte.is_null()
                && (*rte).rtekind == pg_sys::RTEKind::RTE_JOIN
                && (*rte).jointype != pg_sys::JoinType::JOIN_INNER
        })
    }
}

/// Is this foreign key validated and not deferrable (so no row can violate it, even briefly)?
unsafe fn constraint_is_enforced(conoid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup by oid; attributes are read through SysCacheGetAttr with their
    // numbers looked up by name (PostgreSQL 18 shifts them) and the tuple is released before
    // returning.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::CONSTROID as i32, pg_sys::Datum::from(conoid));
        if tuple.is_null() {
            return false;
        }
        let flag = |name: &std::ffi::CStr| {
            let attnum = pg_sys::get_attnum(PG_CONSTRAINT, name.as_ptr());
            let mut isnull = true;
            let d = if attnum > 0 {
                pg_sys::SysCacheGetAttr(pg_sys::SysCacheIdentifier::CONSTROID as i32, tuple, attnum, &mut isnull)
            } else {
                pg_sys::Datum::from(0usize)
            };
            !isnull && d.value() != 0
        };
        let enforced = flag(c"convalidated") && !flag(c"condeferrable");
        pg_sys::ReleaseSysCache(tuple);
        enforced
    }
}

/// Is (relid, attnum) the column (source, source_attnum)? On a Citus node, a shard placement's
/// column is its table's column of the same name (a shard's foreign keys name placements too).
unsafe fn same_column(relid: pg_sys::Oid, attnum: i16, source: pg_sys::Oid, source_attnum: i16) -> bool {
    if relid == source {
        return attnum == source_attnum;
    }
    if crate::pg::citus::logical_relation(relid) != source {
        return false;
    }
    // SAFETY: syscache lookups by oid and attribute number; the names are compared, then freed
    // with the statement's memory.
    unsafe {
        let (a, b) = (pg_sys::get_attname(relid, attnum, true), pg_sys::get_attname(source, source_attnum, true));
        !a.is_null() && !b.is_null() && std::ffi::CStr::from_ptr(a) == std::ffi::CStr::from_ptr(b)
    }
}

/// What the column may hold, as far as elision cares.
struct ColumnFacts {
    only_ids_of_the_type: bool,
    not_null: bool,
}

unsafe fn column_facts(relid: pg_sys::Oid, attnum: i16, source: pg_sys::Oid, source_attnum: i16) -> ColumnFacts {
    // SAFETY: syscache lookups by relation oid and attribute number; every tuple is released before returning.
    unsafe {
        let none = ColumnFacts { only_ids_of_the_type: false, not_null: false };
        if attnum <= 0 || source_attnum <= 0 {
            return none;
        }
        // The relation is already locked by the query being planned.
        let rel = pg_sys::RelationIdGetRelation(relid);
        if rel.is_null() {
            return none;
        }
        let form = (*rel).rd_rel;
        let tupdesc = (*rel).rd_att;
        let not_null =
            attnum as i32 <= (*tupdesc).natts && (*(*tupdesc).attrs.as_ptr().add(attnum as usize - 1)).attnotnull;
        // Rows of plain inheritance children are not bound by the parent's foreign keys; a
        // partitioned table's keys bind every partition.
        let children_unbound =
            (*form).relhassubclass && (*form).relkind != pg_sys::RELKIND_PARTITIONED_TABLE as std::ffi::c_char;
        // Copy the candidate keys out first: a syscache lookup below may process invalidations that
        // rebuild the relcache entry and free its key list.
        let mut candidates = Vec::new();
        if !children_unbound {
            let fkeys = pg_sys::RelationGetFKeyList(rel);
            for i in 0..if fkeys.is_null() { 0 } else { (*fkeys).length } {
                let fk = nth(fkeys, i) as *mut pg_sys::ForeignKeyCacheInfo;
                if !fk.is_null() && (*fk).nkeys == 1 && (*fk).conkey[0] == attnum {
                    candidates.push(((*fk).conoid, (*fk).confrelid, (*fk).confkey[0]));
                }
            }
        }
        pg_sys::RelationClose(rel);
        let self_id = !children_unbound && same_column(relid, attnum, source, source_attnum);
        let only_ids = self_id
            || candidates.into_iter().any(|(conoid, confrelid, confkey)| {
                same_column(confrelid, confkey, source, source_attnum) && constraint_is_enforced(conoid)
            });
        ColumnFacts { only_ids_of_the_type: only_ids, not_null }
    }
}

/// The type's source table and id column, if it has one.
fn source_of(resource_type: &str) -> AuthzResult<Option<(pg_sys::Oid, String)>> {
    let m = model::current()?;
    let chain = m.type_chain(resource_type)?;
    Ok(chain.first().and_then(|t| match (t.table, &t.id_column) {
        (Some(table), Some(column)) => Some((table, column.clone())),
        _ => None,
    }))
}

/// SupportRequestSimplify: the replacement expression, or null to keep the call.
pub unsafe fn simplify(req: *mut pg_sys::SupportRequestSimplify) -> *mut pg_sys::Node {
    // SAFETY: `req` is the planner's SupportRequestSimplify for a call of authz.permits, valid for this call; every node reached from it is null- and tag-checked.
    unsafe {
        let none = std::ptr::null_mut();
        let root = (*req).root;
        let call = (*req).fcall;
        if root.is_null() || (*root).glob.is_null() || (*root).parse.is_null() || call.is_null() {
            return none;
        }
        let args = (*call).args;
        let (column, type_arg, action_arg) = (nth(args, 0), nth(args, 1), nth(args, 2));
        let (Some(resource_type), Some(action)) = (const_text(type_arg), const_text(action_arg)) else { return none };
        // Only visibility: a WITH CHECK on new rows keeps its own error rather than a foreign key's.
        if action != "read" || column.is_null() || (*column).type_ != pg_sys::NodeTag::T_Var {
            return none;
        }
        let var = column as *mut pg_sys::Var;
        if (*var).varlevelsup != 0 || !matches!((*var).vartype, pg_sys::INT8OID | pg_sys::INT4OID | pg_sys::UUIDOID) {
            return none;
        }
        let rtable = (*(*root).parse).rtable;
        let rte = nth(rtable, (*var).varno - 1) as *mut pg_sys::RangeTblEntry;
        if rte.is_null() || (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
            return none;
        }
        // Only a row-level security qual of that very relation, never a call written in a query: the
        // planner also simplifies a correlated EXISTS subquery's quals with the outer query's root
        // (convert_EXISTS_to_ANY), where a Var's number would name the wrong relation.
        if !contains_call((*rte).securityQuals.cast(), call)
            || pg_sys::get_atttype((*rte).relid, (*var).varattno) != (*var).vartype
        {
            return none;
        }
        // A Citus table's own plan never runs (the shards plan again): nothing to resolve here.
        if crate::pg::citus::is_citus_table((*rte).relid) {
            return none;
        }
        // Never raise while planning: anything unknown keeps the filter, which raises at run time.
        let Ok(who) = identity::current() else { return none };
        let complement = if resolve::covers_every_id(&who, &resource_type, &action).unwrap_or(false) {
            false
        } else {
            match resolve::permitted_for(&who, &resource_type, &action) {
                Ok(p) if p.complement => true,
                _ => return none,
            }
        };
        let Ok(Some((source, id_column))) = source_of(&resource_type) else { return none };
        let Ok(id_column) = std::ffi::CString::new(id_column) else { return none };
        let source_attnum = pg_sys::get_attnum(source, id_column.as_ptr());
        // The key must compare like the ids: a bigint column may reference a numeric key, whose ids
        // are text like "5.00" that permits() never matches.
        if source_attnum <= 0 || pg_sys::get_atttype(source, source_attnum) != (*var).vartype {
            return none;
        }
        let facts = column_facts((*rte).relid, (*var).varattno, source, source_attnum);
        if !facts.only_ids_of_the_type {
            return none;
        }

        if complement {
            return stored_call(call).unwrap_or(none);
        }
        let marker = pg_sys::palloc0(std::mem::size_of::<pg_sys::PlanInvalItem>()) as *mut pg_sys::PlanInvalItem;
        (*marker).type_ = pg_sys::NodeTag::T_PlanInvalItem;
        (*marker).cacheId = MARKER_CACHE;
        (*marker).hashValue = marker_index(&resource_type, &action);
        (*(*root).glob).invalItems = pg_sys::lappend((*(*root).glob).invalItems, marker.cast());
        ANY_ELISION.store(true, Ordering::Relaxed);
        ELIDED_SINCE_RESET.store(true, Ordering::Relaxed);

        let parse = (*root).parse;
        if facts.not_null && !has_outer_join(parse) && (*parse).groupingSets.is_null() {
            pg_sys::makeBoolConst(true, false)
        } else {
            // Exactly what the strict permits() answers: NULL for NULL, true otherwise.
            strict_true(column)
        }
    }
}

/// The same call with `authz.permits_stored` (same arguments, same argument types).
unsafe fn stored_call(call: *mut pg_sys::FuncExpr) -> Option<*mut pg_sys::Node> {
    // SAFETY: `call` is the FuncExpr being simplified; the function is looked up by name and
    // argument types, and the copy is made in the planner's memory context.
    unsafe {
        let args = (*call).args;
        let arg_types = [pg_sys::exprType(nth(args, 0)), pg_sys::TEXTOID, pg_sys::TEXTOID];
        let mut names = pg_sys::lappend(std::ptr::null_mut(), pg_sys::makeString(c"authz".as_ptr().cast_mut()).cast());
        names = pg_sys::lappend(names, pg_sys::makeString(c"permits_stored".as_ptr().cast_mut()).cast());
        let function = pg_sys::LookupFuncName(names, 3, arg_types.as_ptr(), true);
        if function == pg_sys::InvalidOid {
            return None;
        }
        let copy = pg_sys::copyObjectImpl(call.cast()) as *mut pg_sys::FuncExpr;
        (*copy).funcid = function;
        Some(copy.cast())
    }
}

/// `CASE WHEN col IS NOT NULL THEN true END`.
unsafe fn strict_true(column: *mut pg_sys::Node) -> *mut pg_sys::Node {
    // SAFETY: `column` is a valid expression node of the call being simplified; new nodes are made with PostgreSQL's node constructors.
    unsafe {
        let test = pg_sys::palloc0(std::mem::size_of::<pg_sys::NullTest>()) as *mut pg_sys::NullTest;
        (*test).xpr.type_ = pg_sys::NodeTag::T_NullTest;
        (*test).arg = pg_sys::copyObjectImpl(column.cast()).cast();
        (*test).nulltesttype = pg_sys::NullTestType::IS_NOT_NULL;
        (*test).argisrow = false;
        (*test).location = -1;
        let when = pg_sys::palloc0(std::mem::size_of::<pg_sys::CaseWhen>()) as *mut pg_sys::CaseWhen;
        (*when).xpr.type_ = pg_sys::NodeTag::T_CaseWhen;
        (*when).expr = test.cast();
        (*when).result = pg_sys::makeBoolConst(true, false).cast();
        (*when).location = -1;
        let case = pg_sys::palloc0(std::mem::size_of::<pg_sys::CaseExpr>()) as *mut pg_sys::CaseExpr;
        (*case).xpr.type_ = pg_sys::NodeTag::T_CaseExpr;
        (*case).casetype = pg_sys::BOOLOID;
        (*case).casecollid = pg_sys::InvalidOid;
        (*case).arg = std::ptr::null_mut();
        (*case).args = pg_sys::lappend(std::ptr::null_mut(), when.cast());
        (*case).defresult = pg_sys::makeBoolConst(false, true).cast();
        (*case).location = -1;
        case.cast()
    }
}

/// Does this security qual (a list of policy expressions, combined with AND/OR/NOT) contain this
/// very call? Anything else (a call inside CASE, a subquery) is not looked into: no elision.
unsafe fn contains_call(node: *mut pg_sys::Node, call: *mut pg_sys::FuncExpr) -> bool {
    // SAFETY: `node` is null or a valid expression tree; the walker only compares pointers.
    unsafe {
        if node.is_null() {
            return false;
        }
        match (*node).type_ {
            pg_sys::NodeTag::T_List => {
                let list = node as *mut pg_sys::List;
                (0..(*list).length).any(|i| contains_call(nth(list, i), call))
            }
            pg_sys::NodeTag::T_BoolExpr => contains_call((*(node as *mut pg_sys::BoolExpr)).args.cast(), call),
            pg_sys::NodeTag::T_FuncExpr => {
                let f = node as *mut pg_sys::FuncExpr;
                (*f).funcid == (*call).funcid && pg_sys::equal((*f).args.cast(), (*call).args.cast())
            }
            _ => false,
        }
    }
}

/// Executor start and every fetch: a plan made with an elision runs only while the caller still
/// covers every id of each elided type (re-checking identity also catches an expired token). At
/// executor start the decision is also audited, as the row filter would have done.
pub unsafe fn check_plan(stmt: *mut pg_sys::PlannedStmt, starting: bool) {
    // SAFETY: `stmt` is null (checked) or the PlannedStmt the executor is about to run; its invalItems list is walked within its length.
    unsafe {
        if !ANY_ELISION.load(Ordering::Relaxed) || stmt.is_null() {
            return;
        }
        let items = (*stmt).invalItems;
        for i in 0..if items.is_null() { 0 } else { (*items).length } {
            let item = nth(items, i) as *mut pg_sys::PlanInvalItem;
            if item.is_null() || (*item).cacheId != MARKER_CACHE {
                continue;
            }
            let Some((resource_type, action)) = ELIDED.with(|e| e.borrow().get((*item).hashValue as usize).cloned())
            else {
                continue;
            };
            still_covers(&resource_type, &action, starting).or_raise();
        }
    }
}

fn still_covers(resource_type: &str, action: &str, audit_it: bool) -> AuthzResult<()> {
    let who = identity::current()?;
    if resolve::covers_every_id(&who, resource_type, action)? {
        // A covering caller's decision is an allow: skip resolving the set unless allows are logged.
        if audit_it && audit::wanted(false) {
            audit::set_decision(&who.actor(), &resolve::permitted_for(&who, resource_type, action)?.outcome());
        }
        return Ok(());
    }
    replan(resource_type)
}

/// The plan was made for a caller the current one is not: fail the statement (40001), with the
/// plan cache reset so that running it again plans it for the current caller.
fn replan(resource_type: &str) -> AuthzResult<()> {
    // Identity can also change without a setting (SET SESSION AUTHORIZATION): rebuild cached
    // plans now, so that running the statement again plans it for the caller it now has.
    ELIDED_SINCE_RESET.store(false, Ordering::Relaxed);
    // SAFETY: drops this backend's cached plans; no pointer is involved.
    unsafe { pg_sys::ResetPlanCache() };
    Err(AuthzError::new(
        pgrx::PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
        "the caller's permissions changed after this statement was planned",
    )
    .detail(format!(
        "The plan reads every {} row without a filter, which the current identity may no longer do.",
        crate::pg::text::printable(resource_type, 64)
    ))
    .hint("Run the statement again (an open cursor must be declared again)."))
}
