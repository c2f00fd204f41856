//! Planner, executor and utility hooks (installed when the library loads, chained to any earlier
//! hook) and the transaction callbacks: the statement boundaries pg_authz's per-statement state
//! follows.
//!
//! - Executor start: accept pending invalidation messages (a grant revoked elsewhere applies from
//!   the caller's next statement even inside an open transaction, where PostgreSQL would not read
//!   them again while the locks it needs are already held), re-check a plan made with an elision,
//!   and rewrite the parallel handoff.
//! - Every run (each FETCH of a cursor): re-check that plan again.
//! - End of a top-level statement, and end of the transaction (commit or abort): write the audit
//!   lines the statement aggregated, and forget statement state. Planning, executor start and
//!   every run count as nesting, so the SPI queries pg_authz itself runs while resolving a set
//!   never look like the end of the client's statement.
//!
//! How the chain is called matters. pg_authz's own work runs in `#[pg_guard]` functions, where a
//! Rust panic or an ERROR from a pg_sys call unwinds properly. The next hook in the chain (or the
//! standard function) is called *directly*, from a frame that holds nothing to drop: an ERROR
//! raised below then travels to PostgreSQL's own handler untouched — with its CONTEXT lines and its
//! schema, table and constraint names, which a Rust re-raise (pgrx's FFI guard) would drop, and
//! which ORMs rely on. The nesting depth counted around those calls is restored by the
//! subtransaction and transaction abort callbacks when an ERROR jumps over its decrement.

use std::cell::{Cell, RefCell};

use pgrx::pg_sys;

use crate::audit;
use crate::auth::assertion;
use crate::enforce::{cluster, elision, handoff};
use crate::pg::errors::OrRaise;
use crate::pg::{citus, privileged};

/// PostgreSQL's standard functions, unwrapped: pgrx's bindings would catch an ERROR and re-raise
/// a copy without its context and object names.
mod standard {
    use pgrx::pg_sys;

    extern "C-unwind" {
        pub fn standard_planner(
            parse: *mut pg_sys::Query,
            query_string: *const std::ffi::c_char,
            cursor_options: std::ffi::c_int,
            bound_params: pg_sys::ParamListInfo,
        ) -> *mut pg_sys::PlannedStmt;
        pub fn standard_ExecutorStart(query_desc: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int);
        pub fn standard_ExecutorRun(
            query_desc: *mut pg_sys::QueryDesc,
            direction: pg_sys::ScanDirection::Type,
            count: u64,
            execute_once: bool,
        );
        pub fn standard_ExecutorFinish(query_desc: *mut pg_sys::QueryDesc);
        pub fn standard_ExecutorEnd(query_desc: *mut pg_sys::QueryDesc);
        #[allow(clippy::too_many_arguments)]
        pub fn standard_ProcessUtility(
            pstmt: *mut pg_sys::PlannedStmt,
            query_string: *const std::ffi::c_char,
            read_only_tree: bool,
            context: pg_sys::ProcessUtilityContext::Type,
            params: pg_sys::ParamListInfo,
            query_env: *mut pg_sys::QueryEnvironment,
            dest: *mut pg_sys::DestReceiver,
            qc: *mut pg_sys::QueryCompletion,
        );
    }
}

static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

thread_local! {
    /// How deep in planning, executor runs and utility statements this backend is: 0 between
    /// statements.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The depth when each open subtransaction started: an ERROR a savepoint catches has jumped
    /// over the decrements of the frames it left.
    static SUBXACT_DEPTHS: RefCell<Vec<(pg_sys::SubTransactionId, u32)>> = const { RefCell::new(Vec::new()) };
}

fn enter() {
    DEPTH.with(|d| d.set(d.get().saturating_add(1)));
}

fn leave() {
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
}

fn at_top_level() -> bool {
    DEPTH.with(|d| d.get() == 0)
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn before_executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int) {
    // SAFETY: `query_desc` is the executor's own descriptor, valid for this call.
    unsafe {
        let stmt = (*query_desc).plannedstmt;
        mask_activity((*query_desc).sourceText);
        // What runs here (resolution, identity) is part of the statement, not one of its own.
        enter();
        if pg_sys::ParallelWorkerNumber < 0 {
            pg_sys::AcceptInvalidationMessages();
        }
        // EXPLAIN without ANALYZE only shows the plan; it runs nothing.
        if eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 == 0 {
            elision::check_plan(stmt, true);
        }
        handoff::publish_for(!stmt.is_null() && (*stmt).parallelModeNeeded).or_raise();
        // A plan that reaches other Citus nodes carries the caller's identity there (pg_authz's
        // own reads of its reference tables need none).
        if !stmt.is_null() && !privileged::active() && citus::is_distributed_plan((*stmt).planTree) {
            cluster::propagate().or_raise();
        }
        leave();
    }
}

/// pg_authz's own reads on a Citus node read this node's placements of reference tables
/// (src/pg/citus.rs): never another node's rows, never over a connection.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn before_planning(parse: *mut pg_sys::Query) {
    if privileged::active() {
        // SAFETY: the planner's own query tree, not yet planned.
        unsafe { citus::read_local_placements(parse) };
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn before_executor_run(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: as above; the plan is the query descriptor's own.
    unsafe { elision::check_plan((*query_desc).plannedstmt, false) };
}

/// The end of a top-level run, finish, end or utility statement: write what the statement
/// aggregated for the audit log.
#[pgrx::pg_guard]
extern "C-unwind" fn after_top_level() {
    if at_top_level() {
        audit::flush();
    }
}

unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int) {
    // SAFETY: the executor's own arguments, passed down the chain unchanged; this frame holds
    // nothing to drop, so an ERROR below may pass through it.
    unsafe {
        before_executor_start(query_desc, eflags);
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query_desc, eflags),
            None => standard::standard_ExecutorStart(query_desc, eflags),
        }
    }
}

/// Planning resolves permission sets (selectivity, index conditions) and may run SPI to load
/// them: that is inside the statement being planned.
unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: std::ffi::c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: the planner's own arguments, passed down the chain unchanged; nothing to drop here.
    unsafe {
        enter();
        before_planning(parse);
        let planned = match PREV_PLANNER {
            Some(prev) => prev(parse, query_string, cursor_options, bound_params),
            None => standard::standard_planner(parse, query_string, cursor_options, bound_params),
        };
        leave();
        planned
    }
}

unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    // SAFETY: the executor's own arguments, passed down the chain unchanged; nothing to drop here.
    unsafe {
        before_executor_run(query_desc);
        enter();
        match PREV_EXECUTOR_RUN {
            Some(prev) => prev(query_desc, direction, count, execute_once),
            None => standard::standard_ExecutorRun(query_desc, direction, count, execute_once),
        }
        leave();
        // The rows are out (or this FETCH's are): the client's statement has made its decisions.
        after_top_level();
    }
}

unsafe extern "C-unwind" fn executor_finish(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: the executor's own descriptor, passed down the chain; nothing to drop here.
    unsafe {
        enter();
        match PREV_EXECUTOR_FINISH {
            Some(prev) => prev(query_desc),
            None => standard::standard_ExecutorFinish(query_desc),
        }
        leave();
        // AFTER triggers have run.
        after_top_level();
    }
}

unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    // SAFETY: the executor's own descriptor, passed down the chain; nothing to drop here.
    unsafe {
        match PREV_EXECUTOR_END {
            Some(prev) => prev(query_desc),
            None => standard::standard_ExecutorEnd(query_desc),
        }
        after_top_level();
    }
}

/// A statement that carries a token goes down the chain (pg_stat_statements, pgaudit) as a copy
/// of its own text with the token masked (src/pg/redact.rs).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn masked_statement(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    out_pstmt: *mut *mut pg_sys::PlannedStmt,
    out_query_string: *mut *const std::ffi::c_char,
) {
    // SAFETY: the out pointers are the caller's locals; the inputs are the utility hook's.
    unsafe {
        if let Some((p, q)) = redacted_statement(pstmt, query_string) {
            *out_pstmt = p;
            *out_query_string = q;
            mask_activity(query_string);
        }
    }
}

/// `pg_stat_activity.query` shows what a backend runs — and, idle in a transaction, what it ran
/// last — to every session of the same role (the other clients of a pooled login, or anyone who
/// reads it on a Citus worker). When the text carries a token (or a cluster assertion), report it
/// again with them masked: PostgreSQL reported the raw text just before parsing it.
///
/// # Safety
/// `query_string` is null or the NUL-terminated text of the current top-level statement.
unsafe fn mask_activity(query_string: *const std::ffi::c_char) {
    // SAFETY: per the contract; the masked copy is NUL-free (mask_c returns a CString) and
    // pgstat_report_activity copies it into shared memory.
    unsafe {
        if DEPTH.with(|d| d.get()) != 0 {
            return;
        }
        if let Some(masked) = crate::pg::redact::mask_c(query_string) {
            pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, masked.as_ptr());
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: the utility statement's own arguments, passed down the chain (possibly with a
    // masked copy of the text and of the PlannedStmt); nothing to drop here.
    unsafe {
        let (mut pstmt, mut query_string) = (pstmt, query_string);
        masked_statement(pstmt, query_string, &mut pstmt, &mut query_string);
        enter();
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc),
            None => standard::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
        leave();
        after_top_level();
    }
}

/// The statement's own slice of `query_string`, with tokens masked, and a shallow copy of the
/// planned statement pointing at all of it; `None` when the statement carries no token.
unsafe fn redacted_statement(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
) -> Option<(*mut pg_sys::PlannedStmt, *const std::ffi::c_char)> {
    // SAFETY: `pstmt` and `query_string` are the utility hook's arguments (both null-checked); stmt_location/stmt_len delimit the statement inside the NUL-terminated text.
    unsafe {
        if pstmt.is_null() || query_string.is_null() {
            return None;
        }
        // SAFETY: query_string is the NUL-terminated source text PostgreSQL passed the hook, and
        // stmt_location/stmt_len delimit this statement inside it (or are -1/0: the whole text).
        let whole = std::ffi::CStr::from_ptr(query_string).to_bytes();
        let (location, len) = ((*pstmt).stmt_location, (*pstmt).stmt_len);
        let start = usize::try_from(location).unwrap_or(0).min(whole.len());
        let end = match usize::try_from(len) {
            Ok(n) if n > 0 && location >= 0 => (start + n).min(whole.len()),
            _ => whole.len(),
        };
        // No copy unless there is something to mask (the common case costs one scan).
        let own = whole.get(start..end)?;
        let masked = std::ffi::CString::new(crate::pg::redact::mask_current(own)?).ok()?;
        let copy = pg_sys::palloc(std::mem::size_of::<pg_sys::PlannedStmt>()) as *mut pg_sys::PlannedStmt;
        std::ptr::copy_nonoverlapping(pstmt, copy, 1);
        (*copy).stmt_location = 0;
        (*copy).stmt_len = 0;
        // PostgreSQL identified a utility statement by a hash of its original text, token and all:
        // one pg_stat_statements entry per token. Identify it by its masked text instead (a fixed-key
        // hasher, so every backend computes the same id).
        if (*copy).queryId != 0 {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            masked.as_bytes().hash(&mut h);
            (*copy).queryId = h.finish().max(1);
        }
        Some((copy, pg_sys::pstrdup(masked.as_ptr())))
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn transaction_ended(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    if event == XACT_EVENT_PRE_COMMIT {
        // Before Citus's own pre-commit work (this callback was registered after Citus's).
        cluster::before_commit().or_raise();
    }
    if matches!(event, XACT_EVENT_COMMIT | XACT_EVENT_ABORT | XACT_EVENT_PREPARE) {
        cluster::forget();
        // An ERROR may have left nesting counted by frames that never returned normally.
        DEPTH.with(|d| d.set(0));
        SUBXACT_DEPTHS.with(|s| s.borrow_mut().clear());
        privileged::reset();
        assertion::forget_sent();
        audit::flush();
        crate::pg::statement::reset();
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn subtransaction_event(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    // Citus restores the settings its connections replay when a subtransaction ends.
    if matches!(event, SUBXACT_EVENT_ABORT_SUB | SUBXACT_EVENT_COMMIT_SUB) {
        assertion::forget_sent();
    }
    if event == SUBXACT_EVENT_ABORT_SUB {
        privileged::reset();
    }
    SUBXACT_DEPTHS.with(|s| {
        let mut s = s.borrow_mut();
        match event {
            SUBXACT_EVENT_START_SUB => s.push((my_subid, DEPTH.with(|d| d.get()))),
            SUBXACT_EVENT_ABORT_SUB => {
                if let Some(i) = s.iter().rposition(|(id, _)| *id == my_subid) {
                    let depth = s[i].1;
                    s.truncate(i);
                    DEPTH.with(|d| d.set(depth));
                }
            }
            SUBXACT_EVENT_COMMIT_SUB => {
                if let Some(i) = s.iter().rposition(|(id, _)| *id == my_subid) {
                    s.truncate(i);
                }
            }
            _ => {}
        }
    });
}

/// Chain into the planner, executor and utility hooks and register the transaction callbacks
/// (called once, from _PG_init).
pub fn init() {
    // SAFETY: _PG_init runs once per backend, before any statement; hooks are process globals
    // that PostgreSQL expects extensions to chain exactly like this.
    unsafe {
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        PREV_EXECUTOR_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(executor_finish);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        pg_sys::RegisterXactCallback(Some(transaction_ended), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subtransaction_event), std::ptr::null_mut());
    }
}
