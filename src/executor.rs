//! Executor hooks (installed when the library loads, chained to any earlier hook): at executor
//! start, publish the parallel handoff for a parallel plan and re-check a plan made with an
//! elision; at every run (each FETCH of a cursor), re-check that plan again.

use pgrx::pg_sys;

use crate::{elision, handoff};

static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int) {
    let stmt = (*query_desc).plannedstmt;
    // EXPLAIN without ANALYZE only shows the plan; it runs nothing.
    if eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 == 0 {
        elision::check_plan(stmt, true);
    }
    handoff::publish_for(!stmt.is_null() && (*stmt).parallelModeNeeded);
    match PREV_EXECUTOR_START {
        Some(prev) => prev(query_desc, eflags),
        None => pg_sys::standard_ExecutorStart(query_desc, eflags),
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    elision::check_plan((*query_desc).plannedstmt, false);
    match PREV_EXECUTOR_RUN {
        Some(prev) => prev(query_desc, direction, count, execute_once),
        None => pg_sys::standard_ExecutorRun(query_desc, direction, count, execute_once),
    }
}

/// Chain into ExecutorStart and ExecutorRun (called once, from _PG_init).
pub fn init() {
    unsafe {
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
    }
}
