//! Every `authz.*` setting, registered when the library loads (no shared_preload_libraries
//! needed), with typed accessors. Only `authz.token` is user-settable; everything that shapes
//! verification or auditing is superuser-only so a client cannot loosen it.
//!
//! No setting is ever verified in a check hook: a value from the startup packet that a check hook
//! rejects is dropped with a mere WARNING, silently falling back to the login identity. The token is
//! verified when identity is needed, and a bad one is an ERROR there.

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use pgrx::pg_sys;

/// `authz.token`, owned by PostgreSQL's GUC machinery (it writes this pointer).
static mut TOKEN: *mut c_char = std::ptr::null_mut();

/// Bumped on every assignment of `authz.token` (SET, SET LOCAL, RESET, end of transaction,
/// ROLLBACK TO SAVEPOINT). Per-statement state compares it to notice an identity switch.
static TOKEN_EPOCH: AtomicU64 = AtomicU64::new(1);

static LEEWAY_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(30);
static ISSUERS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static AUDIENCES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static USER_CLAIM: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"sub"));
static MAX_TOKEN_BYTES: GucSetting<i32> = GucSetting::<i32>::new(8192);
static TOKEN_CACHE_ENTRIES: GucSetting<i32> = GucSetting::<i32>::new(1024);
static AUDIT: GucSetting<AuditLevel> = GucSetting::<AuditLevel>::new(AuditLevel::Denied);

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum AuditLevel {
    #[name = c"off"]
    Off,
    #[name = c"denied"]
    Denied,
    #[name = c"all"]
    All,
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn token_assigned(_newval: *const c_char, _extra: *mut c_void) {
    TOKEN_EPOCH.fetch_add(1, Ordering::Relaxed);
}

pub fn init() {
    unsafe {
        pg_sys::DefineCustomStringVariable(
            c"authz.token".as_ptr(),
            c"The caller's JWT. Verified whenever identity is needed; prefer SET LOCAL or authz.login().".as_ptr(),
            c"Transaction-local values cannot leak to the next client of a transaction pooler.".as_ptr(),
            &raw mut TOKEN,
            c"".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            (pg_sys::GUC_NOT_IN_SAMPLE | pg_sys::GUC_DISALLOW_IN_FILE) as i32,
            None,
            Some(token_assigned),
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"authz.leeway_seconds",
        c"Clock skew tolerated when checking a token's exp and nbf.",
        c"",
        &LEEWAY_SECONDS,
        0,
        3600,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"authz.issuers",
        c"Comma-separated issuers accepted in a token's iss claim (empty: any; a key's own issuer still applies).",
        c"",
        &ISSUERS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"authz.audiences",
        c"Comma-separated audiences of which a token's aud must name one (empty: aud not checked unless the key sets one).",
        c"",
        &AUDIENCES,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"authz.user_claim",
        c"The claim that names the user (a dotted path into nested claims is allowed).",
        c"",
        &USER_CLAIM,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"authz.max_token_bytes",
        c"Tokens longer than this are rejected before any parsing.",
        c"",
        &MAX_TOKEN_BYTES,
        256,
        1024 * 1024,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_int_guc(
        c"authz.token_cache_entries",
        c"Verified tokens remembered per backend (0 disables the cache).",
        c"",
        &TOKEN_CACHE_ENTRIES,
        0,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"authz.audit",
        c"Which authentication and authorization decisions are written to the server log: off, denied, all.",
        c"",
        &AUDIT,
        GucContext::Suset,
        GucFlags::default(),
    );
    unsafe {
        pg_sys::MarkGUCPrefixReserved(c"authz".as_ptr());
    }
}

/// The raw `authz.token` value; `None` when unset or empty.
pub fn token() -> Option<&'static [u8]> {
    // SAFETY: the GUC machinery keeps this pointer valid until the next assignment, and the
    // backend is single-threaded; callers copy what they keep.
    unsafe {
        let ptr = TOKEN;
        if ptr.is_null() {
            return None;
        }
        let bytes = CStr::from_ptr(ptr).to_bytes();
        if bytes.is_empty() {
            None
        } else {
            Some(bytes)
        }
    }
}

pub fn token_epoch() -> u64 {
    TOKEN_EPOCH.load(Ordering::Relaxed)
}

pub fn leeway_seconds() -> i64 {
    i64::from(LEEWAY_SECONDS.get())
}

fn comma_list(setting: &GucSetting<Option<CString>>) -> Vec<String> {
    setting
        .get()
        .map(|s| s.to_string_lossy().split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
        .unwrap_or_default()
}

pub fn issuers() -> Vec<String> {
    comma_list(&ISSUERS)
}

pub fn audiences() -> Vec<String> {
    comma_list(&AUDIENCES)
}

pub fn user_claim() -> String {
    USER_CLAIM
        .get()
        .map(|s| s.to_string_lossy().trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sub".to_string())
}

pub fn max_token_bytes() -> usize {
    usize::try_from(MAX_TOKEN_BYTES.get()).unwrap_or(8192)
}

pub fn token_cache_entries() -> usize {
    usize::try_from(TOKEN_CACHE_ENTRIES.get()).unwrap_or(0)
}

pub fn audit_level() -> AuditLevel {
    AUDIT.get()
}
