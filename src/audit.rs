//! Decision and authentication events, one JSON object per line in the server log with the
//! prefix `pg_authz audit: `. They go to the log (LOG_SERVER_ONLY, never to the client) rather than a
//! table so that they work on a hot standby and survive a rolled-back transaction.
//!
//! Logged once per statement and set: the policy functions (the row filter and the index
//! condition's array) log when they first resolve a set for a statement, not per row, and a second
//! call site of the same statement does not repeat it. Parallel workers stay quiet; their leader
//! has logged.

use std::ffi::CStr;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use serde_json::{json, Map, Value};

use crate::db;
use crate::errors::AuthzError;
use crate::gucs::{self, AuditLevel};
use crate::identity::Identity;
use crate::resolve::Permitted;
use crate::token::VerifiedToken;

pub const PREFIX: &str = "pg_authz audit: ";

pub fn wanted(denied: bool) -> bool {
    let in_worker = unsafe { pg_sys::ParallelWorkerNumber >= 0 };
    if in_worker {
        return false;
    }
    match gucs::audit_level() {
        AuditLevel::Off => false,
        AuditLevel::Denied => denied,
        AuditLevel::All => true,
    }
}

fn c_string(ptr: *const std::ffi::c_char) -> Option<String> {
    if ptr.is_null() {
        None
    } else {
        Some(unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned())
    }
}

thread_local! {
    static CLIENT_ADDR: std::cell::OnceCell<Option<String>> = const { std::cell::OnceCell::new() };
}

/// The client's address never changes within a backend: look it up once.
fn client_addr() -> Option<String> {
    CLIENT_ADDR.with(|c| {
        // Read-only SPI: the audit path must never assign a transaction id (hot standby).
        c.get_or_init(|| db::select_one::<String>("SELECT pg_catalog.inet_client_addr()::text", &[]).ok().flatten())
            .clone()
    })
}

fn base(event: &str) -> Map<String, Value> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let application = unsafe { c_string(pg_sys::application_name) };
    let client = client_addr();
    let mut m = Map::new();
    m.insert("ts".into(), json!(now));
    m.insert("event".into(), json!(event));
    m.insert("session_user".into(), json!(db::role_name(db::session_user())));
    m.insert("application_name".into(), json!(application));
    m.insert("client_addr".into(), json!(client));
    m
}

fn token_fields(m: &mut Map<String, Value>, t: &VerifiedToken) {
    m.insert("sub".into(), json!(t.user_id));
    m.insert("kid".into(), json!(t.kid));
    m.insert("iss".into(), json!(t.iss));
}

fn identity_fields(m: &mut Map<String, Value>, who: &Identity) {
    m.insert("identity".into(), json!(who.source.as_str()));
    m.insert("principal".into(), json!(who.user_id));
    if let Some(t) = &who.token {
        token_fields(m, t);
    }
}

fn emit(m: Map<String, Value>) {
    let line = format!("{PREFIX}{}", Value::Object(m));
    ErrorReport::new(PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, line, "pg_authz")
        .report(PgLogLevel::LOG_SERVER_ONLY);
}

/// A token verified for the first time in this backend.
pub fn token_accepted(t: &VerifiedToken) {
    if !wanted(false) {
        return;
    }
    let mut m = base("token_accepted");
    token_fields(&mut m, t);
    m.insert("outcome".into(), json!("accepted"));
    emit(m);
}

pub fn token_rejected(e: &AuthzError) {
    if !wanted(true) {
        return;
    }
    let mut m = base("token_rejected");
    m.insert("outcome".into(), json!("rejected"));
    m.insert("reason".into(), json!(e.message.trim_start_matches("token rejected: ")));
    emit(m);
}

/// One decision about one resource.
pub fn decision(
    who: &Identity,
    resource_type: &str,
    action: &str,
    id: Option<&str>,
    allowed: bool,
    rule: Option<&str>,
) {
    if !wanted(!allowed) {
        return;
    }
    let mut m = base("decision");
    identity_fields(&mut m, who);
    m.insert("resource_type".into(), json!(resource_type));
    m.insert("action".into(), json!(action));
    m.insert("resource_id".into(), json!(id));
    m.insert("outcome".into(), json!(if allowed { "allow" } else { "deny" }));
    m.insert("rule".into(), json!(rule.unwrap_or(if allowed { "allow" } else { "default deny" })));
    emit(m);
}

thread_local! {
    /// The last decision logged: (statement start, command, principal, type, action).
    static LAST_DECISION: std::cell::RefCell<Option<(i64, u32, Option<String>, String, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// A statement may resolve one set at two call sites (an index condition's array and the filter
/// that rechecks the heap rows): log it once per client statement.
fn first_in_statement(who: &Identity, p: &Permitted) -> bool {
    let key = unsafe {
        (
            pg_sys::GetCurrentStatementStartTimestamp(),
            pg_sys::GetCurrentCommandId(false),
            who.user_id.clone(),
            p.resource_type.clone(),
            p.action.clone(),
        )
    };
    LAST_DECISION.with(|last| {
        let mut last = last.borrow_mut();
        if last.as_ref() == Some(&key) {
            return false;
        }
        *last = Some(key);
        true
    })
}

/// A permission-set resolution (what a protected statement may touch).
pub fn set_decision(who: &Identity, p: &Permitted) {
    let denied = p.ids.is_empty();
    if !wanted(denied) || !first_in_statement(who, p) {
        return;
    }
    let mut m = base("decision");
    identity_fields(&mut m, who);
    m.insert("resource_type".into(), json!(p.resource_type));
    m.insert("action".into(), json!(p.action));
    m.insert("outcome".into(), json!(if denied { "deny" } else { "allow" }));
    m.insert("permitted".into(), json!(p.ids.len()));
    m.insert("of".into(), json!(p.total));
    m.insert("rules".into(), if p.deciding_rules.is_empty() { json!("default deny") } else { json!(p.deciding_rules) });
    emit(m);
}

/// The token subject for `authz.audit_changes` rows; NULL rather than an error when there is no
/// valid token (the change itself was already authorized).
#[pg_extern(stable)]
fn _audit_actor() -> Option<String> {
    let raw = gucs::token()?;
    crate::token::verify(raw).ok().map(|t| t.user_id.clone())
}
