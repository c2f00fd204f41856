//! Decision and authentication events, one JSON object per line in the server log with the
//! prefix `pg_authz audit: `. They go to the log (LOG_SERVER_ONLY, never to the client) rather than a
//! table so that they work on a hot standby and survive a rolled-back transaction.
//!
//! Logged once per statement: events are aggregated by what they say (identity, type, action,
//! outcome, rule or reason) and written when the top-level statement or its transaction ends,
//! each with a `count` — 20,000 denied `check()` calls in one statement are one line, as is one
//! forged token checked at five call sites. Rolled-back statements are logged too (the abort
//! callback flushes). Parallel workers stay quiet; their leader has logged.

use std::ffi::CStr;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use serde_json::{json, Map, Value};

use crate::pg::db;
use crate::pg::errors::AuthzError;
use crate::pg::settings::{self, AuditLevel};

/// Who an event is about, as the layers above describe it (audit imports nothing above `pg`).
pub struct Actor<'a> {
    /// `token`, `login` or `anonymous`.
    pub source: &'a str,
    pub principal: Option<&'a str>,
    pub token: Option<TokenFields<'a>>,
}

/// The identifying fields of a verified token (never the token itself).
#[derive(Clone, Copy)]
pub struct TokenFields<'a> {
    pub sub: &'a str,
    pub kid: &'a str,
    pub iss: Option<&'a str>,
}

/// What a permission-set resolution decided.
pub struct SetOutcome<'a> {
    pub resource_type: &'a str,
    pub action: &'a str,
    pub permitted: usize,
    pub total: usize,
    pub deciding_rules: &'a [i64],
}

pub const PREFIX: &str = "pg_authz audit: ";

pub fn wanted(denied: bool) -> bool {
    // SAFETY: a plain read of a backend global.
    let in_worker = unsafe { pg_sys::ParallelWorkerNumber >= 0 };
    if in_worker {
        return false;
    }
    match settings::audit_level() {
        AuditLevel::Off => false,
        AuditLevel::Denied => denied,
        AuditLevel::All => true,
    }
}

fn c_string(ptr: *const std::ffi::c_char) -> Option<String> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: `ptr` is non-null (checked) and a NUL-terminated string owned by PostgreSQL.
        Some(unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned())
    }
}

thread_local! {
    static CLIENT_ADDR: std::cell::OnceCell<Option<String>> = const { std::cell::OnceCell::new() };
}

/// The client's address never changes within a backend: look it up once.
fn client_addr() -> Option<String> {
    CLIENT_ADDR.with(|c| {
        // A direct call, no SPI: the audit path runs inside hooks and must never start a query
        // (or assign a transaction id, on a hot standby).
        c.get_or_init(|| {
            // SAFETY: inet_client_addr() takes no arguments and reads only the backend's Port.
            unsafe { pgrx::direct_function_call::<pgrx::Inet>(pg_sys::inet_client_addr, &[]) }
                .map(|inet| inet.0.split('/').next().unwrap_or_default().to_string())
        })
        .clone()
    })
}

/// Where a statement came from: the client of this backend, or — on a connection a Citus node
/// opened on a client's behalf — that client, as the originating node vouched for it.
#[derive(Clone, Default)]
pub struct Origin {
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    /// Citus's global process id of the originating backend, when the statement came through one.
    pub via_gpid: Option<u64>,
}

thread_local! {
    /// Set by the identity layer when it adopts another node's assertion; cleared when it does not.
    static VOUCHED_ORIGIN: std::cell::RefCell<Option<Origin>> = const { std::cell::RefCell::new(None) };
}

pub fn set_origin(origin: Option<Origin>) {
    VOUCHED_ORIGIN.with(|o| *o.borrow_mut() = origin);
}

/// The statement's origin (see `Origin`).
pub fn origin() -> Origin {
    if let Some(o) = VOUCHED_ORIGIN.with(|o| o.borrow().clone()) {
        return o;
    }
    // SAFETY: application_name is a GUC string PostgreSQL keeps valid (or null, checked by c_string).
    let application_name = unsafe { c_string(pg_sys::application_name) };
    Origin { application_name, client_addr: client_addr(), via_gpid: None }
}

fn base(event: &str) -> Map<String, Value> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let origin = origin();
    let mut m = Map::new();
    m.insert("ts".into(), json!(now));
    m.insert("event".into(), json!(event));
    m.insert("session_user".into(), json!(db::role_name(db::session_user())));
    m.insert("application_name".into(), json!(origin.application_name));
    m.insert("client_addr".into(), json!(origin.client_addr));
    if let Some(gpid) = origin.via_gpid {
        m.insert("citus_gpid".into(), json!(gpid));
    }
    m
}

/// One aggregated line: its grouping key, the line as first seen, and how often it recurred.
struct Pending {
    key: String,
    line: Map<String, Value>,
    count: u64,
}

/// At most this many distinct lines wait for the end of a statement; more are written at once.
const MAX_PENDING: usize = 64;

thread_local! {
    /// The statement the pending lines belong to (its start time) and the lines.
    static PENDING: std::cell::RefCell<(i64, Vec<Pending>)> = const { std::cell::RefCell::new((0, Vec::new())) };
}

fn write_line(mut line: Map<String, Value>, count: u64) {
    line.insert("count".into(), json!(count));
    emit(line);
}

/// Count an event under `key` for the current statement; the line is built on first sight only.
fn record(key: String, build: impl FnOnce() -> Map<String, Value>) {
    let statement = crate::pg::statement::key();
    let (seen, mut earlier) = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let earlier = if p.0 != statement { std::mem::take(&mut p.1) } else { Vec::new() };
        p.0 = statement;
        match p.1.iter_mut().find(|e| e.key == key) {
            Some(e) => {
                e.count += 1;
                (true, earlier)
            }
            None => (false, earlier),
        }
    });
    if !seen {
        // Built outside the borrow: building may call back into PostgreSQL.
        let line = build();
        PENDING.with(|p| {
            let mut p = p.borrow_mut();
            if p.1.len() >= MAX_PENDING {
                earlier.append(&mut p.1);
            }
            p.1.push(Pending { key, line, count: 1 });
        });
    }
    for e in earlier {
        write_line(e.line, e.count);
    }
}

/// Write the lines the statement aggregated (end of a top-level statement, end of transaction).
pub fn flush() {
    let pending = PENDING.with(|p| std::mem::take(&mut p.borrow_mut().1));
    if pending.is_empty() {
        return;
    }
    // A LOG report ends by checking for interrupts: a cancel or statement timeout there would
    // jump out of this loop and lose the statement's remaining lines. Hold them while writing.
    // SAFETY: a counter PostgreSQL's HOLD_INTERRUPTS macro increments; an ERROR resets it.
    unsafe { pg_sys::InterruptHoldoffCount += 1 };
    for e in pending {
        write_line(e.line, e.count);
    }
    // SAFETY: pairs with the increment above.
    unsafe { pg_sys::InterruptHoldoffCount = pg_sys::InterruptHoldoffCount.saturating_sub(1) };
}

fn token_fields(m: &mut Map<String, Value>, t: TokenFields) {
    m.insert("sub".into(), json!(t.sub));
    m.insert("kid".into(), json!(t.kid));
    m.insert("iss".into(), json!(t.iss));
}

fn identity_fields(m: &mut Map<String, Value>, who: &Actor) {
    m.insert("identity".into(), json!(who.source));
    m.insert("principal".into(), json!(who.principal));
    if let Some(t) = who.token {
        token_fields(m, t);
    }
}

fn emit(m: Map<String, Value>) {
    let line = format!("{PREFIX}{}", Value::Object(m));
    ErrorReport::new(PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, line, "pg_authz")
        .report(PgLogLevel::LOG_SERVER_ONLY);
}

/// A token verified for the first time in this backend.
pub fn token_accepted(t: TokenFields) {
    if !wanted(false) {
        return;
    }
    record(format!("token_accepted\0{}\0{}", t.sub, t.kid), || {
        let mut m = base("token_accepted");
        token_fields(&mut m, t);
        m.insert("outcome".into(), json!("accepted"));
        m
    });
}

pub fn token_rejected(e: &AuthzError) {
    if !wanted(true) {
        return;
    }
    let reason = e.message.trim_start_matches("token rejected: ").to_string();
    record(format!("token_rejected\0{reason}"), || {
        let mut m = base("token_rejected");
        m.insert("outcome".into(), json!("rejected"));
        m.insert("reason".into(), json!(reason));
        m
    });
}

/// One decision about one resource (`check()`, `require()`, a management permission, a new row):
/// aggregated per statement by identity, type, action, outcome and rule; the line names the first
/// resource id and counts the rest.
pub fn decision(who: &Actor, resource_type: &str, action: &str, id: Option<&str>, allowed: bool, rule: Option<&str>) {
    if !wanted(!allowed) {
        return;
    }
    let rule = rule.unwrap_or(if allowed { "allow" } else { "default deny" });
    let key = format!("decision\0{:?}\0{}\0{resource_type}\0{action}\0{allowed}\0{rule}", who.principal, who.source);
    record(key, || {
        let mut m = base("decision");
        identity_fields(&mut m, who);
        m.insert("resource_type".into(), json!(resource_type));
        m.insert("action".into(), json!(action));
        m.insert("resource_id".into(), json!(id));
        m.insert("outcome".into(), json!(if allowed { "allow" } else { "deny" }));
        m.insert("rule".into(), json!(rule));
        m
    });
}

/// Roles and groups a token's claims conferred through the claim mappings, and how many claimed
/// names matched nothing (ignored).
pub fn claims_mapped(who: &Actor, roles: usize, groups: usize, group_assignments: usize, ignored: usize) {
    if !wanted(false) {
        return;
    }
    let key = format!("claims\0{:?}\0{roles}\0{groups}\0{ignored}", who.principal);
    record(key, || {
        let mut m = base("claims_mapped");
        identity_fields(&mut m, who);
        m.insert("roles".into(), json!(roles));
        m.insert("groups".into(), json!(groups));
        m.insert("group_assignments".into(), json!(group_assignments));
        m.insert("ignored".into(), json!(ignored));
        m
    });
}

/// A permission-set resolution (what a protected statement may touch): once per statement and
/// set, however many call sites resolve it.
pub fn set_decision(who: &Actor, p: &SetOutcome) {
    let denied = p.permitted == 0;
    if !wanted(denied) {
        return;
    }
    let key = format!("set\0{:?}\0{}\0{}\0{}", who.principal, who.source, p.resource_type, p.action);
    record(key, || {
        let mut m = base("decision");
        identity_fields(&mut m, who);
        m.insert("resource_type".into(), json!(p.resource_type));
        m.insert("action".into(), json!(p.action));
        m.insert("outcome".into(), json!(if denied { "deny" } else { "allow" }));
        m.insert("permitted".into(), json!(p.permitted));
        m.insert("of".into(), json!(p.total));
        m.insert(
            "rules".into(),
            if p.deciding_rules.is_empty() { json!("default deny") } else { json!(p.deciding_rules) },
        );
        m
    });
}
