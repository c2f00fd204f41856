//! Citus, when it is loaded in this backend: the handful of citus.so functions pg_authz calls,
//! found by name when first needed. pg_authz never links to Citus; without it every function here
//! answers "not Citus" and costs one lookup per backend.
//!
//! What pg_authz needs from Citus and nothing in Citus's SQL surface offers:
//! - to make a statement's worker connections carry a transaction-local setting even when the
//!   client is not in a transaction block (`UseCoordinatedTransaction`, then
//!   `PostprocessVariableSetStmt`: what Citus itself does for `SET LOCAL` with
//!   `citus.propagate_set_commands = local`, sent to the connections already open and replayed in
//!   the BEGIN of every new one);
//! - to know whether a plan reaches other nodes (`IsCitusPlan`), whether this backend is one of
//!   Citus's own connections (`IsCitusInternalBackend`) and on whose behalf (`GetGlobalPID`: on a
//!   worker, the global process id of the coordinator backend that opened the connection);
//! - which logical table a shard placement belongs to (`LookupShardRelationFromCatalog`).
//!
//! Every symbol is looked up together: a Citus without one of them is treated as absent for the
//! cluster features (and `authz.distribute()` refuses to run), never half-used.

use std::ffi::{c_char, CStr};
use std::sync::OnceLock;

use pgrx::pg_sys;

struct Api {
    use_coordinated_transaction: unsafe extern "C-unwind" fn(),
    postprocess_variable_set_stmt: unsafe extern "C-unwind" fn(*mut pg_sys::VariableSetStmt, *const c_char),
    is_citus_plan: unsafe extern "C-unwind" fn(*mut pg_sys::Plan) -> bool,
    is_citus_internal_backend: unsafe extern "C-unwind" fn() -> bool,
    get_global_pid: unsafe extern "C-unwind" fn() -> u64,
    lookup_shard_relation: unsafe extern "C-unwind" fn(i64, bool) -> pg_sys::Oid,
    citus_has_been_loaded: unsafe extern "C-unwind" fn() -> bool,
    is_citus_table: unsafe extern "C-unwind" fn(pg_sys::Oid) -> bool,
}

// SAFETY: the struct holds only function pointers into a library that stays loaded for the life
// of the process, and a backend is single-threaded.
unsafe impl Send for Api {}
// SAFETY: as above.
unsafe impl Sync for Api {}

fn symbol(name: &CStr) -> Option<*mut std::ffi::c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT searches the libraries PostgreSQL loaded (with RTLD_GLOBAL);
    // the name is a NUL-terminated static string.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// The named function of citus.so as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the function pointer type the symbol was compiled with.
unsafe fn function<F: Copy>(name: &CStr) -> Option<F> {
    let p = symbol(name)?;
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<*mut std::ffi::c_void>()) };
    // SAFETY: a function pointer of the symbol's own type, as the caller vouches.
    Some(unsafe { std::mem::transmute_copy::<*mut std::ffi::c_void, F>(&p) })
}

fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(|| {
        // SAFETY: the signatures are those of Citus 11 to 13's headers (transaction_management.h,
        // commands.h, citus_custom_scan.h, backend_data.h, metadata_cache.h).
        unsafe {
            Some(Api {
                use_coordinated_transaction: function(c"UseCoordinatedTransaction")?,
                postprocess_variable_set_stmt: function(c"PostprocessVariableSetStmt")?,
                is_citus_plan: function(c"IsCitusPlan")?,
                is_citus_internal_backend: function(c"IsCitusInternalBackend")?,
                get_global_pid: function(c"GetGlobalPID")?,
                lookup_shard_relation: function(c"LookupShardRelationFromCatalog")?,
                citus_has_been_loaded: function(c"CitusHasBeenLoaded")?,
                is_citus_table: function(c"IsCitusTable")?,
            })
        }
    })
    .as_ref()
}

/// Citus is loaded and its extension exists in this database (its catalogs can be read).
pub fn is_active() -> bool {
    active().is_some()
}

fn active() -> Option<&'static Api> {
    let api = api()?;
    // SAFETY: CitusHasBeenLoaded caches its answer per backend and only reads catalogs in a transaction.
    unsafe { (api.citus_has_been_loaded)() }.then_some(api)
}

/// This backend is a connection Citus opened from another node (or one whose client claims to be:
/// the answer comes from `application_name`, so it only ever makes pg_authz stricter).
pub fn is_internal_backend() -> bool {
    // SAFETY: reads the backend type Citus derives from application_name.
    active().is_some_and(|api| unsafe { (api.is_citus_internal_backend)() })
}

/// Citus's global process id of this backend: on a connection Citus opened, that of the backend
/// on the node that opened it. 0 without Citus.
pub fn global_pid() -> u64 {
    // SAFETY: reads this backend's entry in Citus's shared backend data under its spinlock.
    active().map_or(0, |api| unsafe { (api.get_global_pid)() })
}

/// Citus manages this table (distributed, reference or Citus local).
pub fn is_citus_table(rel: pg_sys::Oid) -> bool {
    // SAFETY: a lookup in Citus's metadata cache by oid.
    active().is_some_and(|api| unsafe { (api.is_citus_table)(rel) })
}

/// The plan sends work to other nodes (it holds a Citus scan).
///
/// # Safety
/// `plan` is null or a valid plan tree.
pub unsafe fn is_distributed_plan(plan: *mut pg_sys::Plan) -> bool {
    // SAFETY: IsCitusPlan walks the plan's left and right subtrees, which the caller vouches for.
    !plan.is_null() && active().is_some_and(|api| unsafe { (api.is_citus_plan)(plan) })
}

/// Make this transaction's connections to other nodes carry `SET LOCAL <name> TO <literal>`:
/// sent to those already open, and in the BEGIN of any opened later in the transaction (or until
/// a rollback to an earlier savepoint, which Citus undoes along with the setting). Starts a
/// coordinated transaction so that even a single-statement read uses a transaction block on the
/// workers. `value` must already be safe to put between single quotes.
pub fn set_local_on_workers(name: &str, value: &str) {
    let Some(api) = active() else { return };
    let command = format!("SET LOCAL {name} TO '{value}'");
    let Ok(command) = std::ffi::CString::new(command) else { return };
    // SAFETY: both are Citus's own entry points for this; the statement node is only read by an
    // assertion in Citus, and the command string is copied by Citus before we free it.
    unsafe {
        (api.use_coordinated_transaction)();
        let stmt = pg_sys::palloc0(std::mem::size_of::<pg_sys::VariableSetStmt>()) as *mut pg_sys::VariableSetStmt;
        (*stmt).type_ = pg_sys::NodeTag::T_VariableSetStmt;
        (*stmt).kind = pg_sys::VariableSetKind::VAR_SET_VALUE;
        (*stmt).is_local = true;
        (api.postprocess_variable_set_stmt)(stmt, command.as_ptr());
    }
}

/// The logical table a shard placement belongs to (`sessions_102008` -> `sessions`), or `rel`
/// itself when it is not a placement. A placement is named after its table and shard id, in the
/// same schema; the name is checked against Citus's catalog, never trusted alone.
pub fn logical_relation(rel: pg_sys::Oid) -> pg_sys::Oid {
    let Some(api) = active() else { return rel };
    // SAFETY: syscache lookups by oid; returned names are null-checked and copied at once.
    unsafe {
        let name = pg_sys::get_rel_name(rel);
        if name.is_null() {
            return rel;
        }
        let name = CStr::from_ptr(name).to_string_lossy().into_owned();
        let Some((base, suffix)) = name.rsplit_once('_') else { return rel };
        let Ok(shard_id) = suffix.parse::<i64>() else { return rel };
        let logical = (api.lookup_shard_relation)(shard_id, true);
        if logical == pg_sys::InvalidOid || logical == rel {
            return rel;
        }
        let logical_name = pg_sys::get_rel_name(logical);
        let same_name = !logical_name.is_null() && CStr::from_ptr(logical_name).to_string_lossy() == base;
        if same_name && pg_sys::get_rel_namespace(logical) == pg_sys::get_rel_namespace(rel) {
            logical
        } else {
            rel
        }
    }
}

thread_local! {
    /// Single-shard Citus tables (reference, or Citus local on the coordinator) and this node's
    /// placement of each: `None` when this node has none. Checked by name on every use.
    static LOCAL_PLACEMENTS: std::cell::RefCell<std::collections::HashMap<u32, Option<(u32, String)>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// This node holds all of the table's rows: a reference table, or a Citus local table on the
/// coordinator (pg_authz's own reads use that placement, src/enforce/hooks.rs).
pub fn has_local_placement(rel: pg_sys::Oid) -> bool {
    local_placement(rel).is_some()
}

/// This node's placement of a reference table (or of a Citus local table, on the coordinator).
fn local_placement(rel: pg_sys::Oid) -> Option<pg_sys::Oid> {
    if !is_citus_table(rel) {
        return None;
    }
    let cached = LOCAL_PLACEMENTS.with(|m| m.borrow().get(&rel.to_u32()).cloned());
    let entry = match cached {
        Some(entry) => entry,
        None => {
            let entry = lookup_local_placement(rel);
            LOCAL_PLACEMENTS.with(|m| m.borrow_mut().insert(rel.to_u32(), entry.clone()));
            entry
        }
    };
    let (placement, name) = entry?;
    let placement = pg_sys::Oid::from(placement);
    // SAFETY: a syscache lookup by oid; the name is compared at once.
    let still = unsafe {
        let current = pg_sys::get_rel_name(placement);
        !current.is_null() && CStr::from_ptr(current).to_string_lossy() == name
    };
    if still {
        Some(placement)
    } else {
        LOCAL_PLACEMENTS.with(|m| m.borrow_mut().remove(&rel.to_u32()));
        None
    }
}

/// The placement a replicated single-shard table has on this node, from Citus's catalog: the
/// shard of a table whose every placement holds all its rows (reference tables, `repmodel` 't';
/// Citus local tables, 's' with no distribution key, placed on the coordinator only).
fn lookup_local_placement(rel: pg_sys::Oid) -> Option<(u32, String)> {
    let shard: i64 = crate::pg::db::select_one::<i64>(
        "SELECT s.shardid FROM pg_catalog.pg_dist_partition p JOIN pg_catalog.pg_dist_shard s USING (logicalrelid)
         WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1 AND p.partmethod OPERATOR(pg_catalog.=) 'n'
           AND (p.repmodel OPERATOR(pg_catalog.=) 't' OR p.colocationid OPERATOR(pg_catalog.=) 0)
           AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_dist_shard t WHERE t.logicalrelid OPERATOR(pg_catalog.=) $1) OPERATOR(pg_catalog.=) 1",
        &[rel.into()],
    )
    .ok()
    .flatten()?;
    // SAFETY: syscache lookups by oid and by name; returned names are null-checked and copied.
    unsafe {
        let name = pg_sys::get_rel_name(rel);
        if name.is_null() {
            return None;
        }
        let placement_name = format!("{}_{shard}", CStr::from_ptr(name).to_string_lossy());
        let c = std::ffi::CString::new(placement_name.clone()).ok()?;
        let placement = pg_sys::get_relname_relid(c.as_ptr(), pg_sys::get_rel_namespace(rel));
        (placement != pg_sys::InvalidOid).then(|| (placement.to_u32(), placement_name))
    }
}

/// Make a read-only query read this node's placement of every reference table it names, instead of
/// leaving the choice of placement to Citus: for the statements pg_authz runs for itself (its own
/// tables are reference tables). Citus may serve a reference table from any node's placement —
/// over a connection to the node itself, or to another node — and a regclass in a row read from
/// another node is that node's oid. Read here, the rows are this node's, and no connection is used.
///
/// # Safety
/// `parse` is a valid, not yet planned query tree.
pub unsafe fn read_local_placements(parse: *mut pg_sys::Query) {
    if active().is_none() || parse.is_null() {
        return;
    }
    // SAFETY: the caller vouches for the tree; only SELECTs without row locks are rewritten.
    unsafe {
        if (*parse).commandType != pg_sys::CmdType::CMD_SELECT
            || (*parse).hasModifyingCTE
            || !(*parse).rowMarks.is_null()
        {
            return;
        }
        walk(parse.cast(), std::ptr::null_mut());
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn walk(node: *mut pg_sys::Node, context: *mut std::ffi::c_void) -> bool {
    if node.is_null() {
        return false;
    }
    // SAFETY: PostgreSQL's own tree walkers hand us valid nodes of the tree being walked.
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_Query => {
                pg_sys::query_tree_walker(node.cast(), Some(walk), context, pg_sys::QTW_EXAMINE_RTES_BEFORE as i32)
            }
            pg_sys::NodeTag::T_RangeTblEntry => {
                let rte = node as *mut pg_sys::RangeTblEntry;
                if (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION {
                    if let Some(placement) = local_placement((*rte).relid) {
                        // The table is locked already (by the parser); lock what is read now.
                        pg_sys::LockRelationOid(placement, (*rte).rellockmode);
                        (*rte).relid = placement;
                    }
                }
                false
            }
            _ => pg_sys::expression_tree_walker(node, Some(walk), context),
        }
    }
}
