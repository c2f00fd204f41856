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

/// `authz.cluster_assertion`: the identity a Citus coordinator vouches for, set by pg_authz on the
/// connections Citus opens to the other nodes (src/auth/assertion.rs). Settable by anyone, like the
/// token, and like the token worthless without the key that signs it.
static mut CLUSTER_ASSERTION: *mut c_char = std::ptr::null_mut();

/// Bumped on every assignment of `authz.token` (SET, SET LOCAL, RESET, end of transaction,
/// ROLLBACK TO SAVEPOINT). Per-statement state compares it to notice an identity switch.
static TOKEN_EPOCH: AtomicU64 = AtomicU64::new(1);

static LEEWAY_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(30);
// The settings a token verification depends on. Defined directly so that an assign hook can bump
// VERIFY_SETTINGS_EPOCH: the token cache compares one counter instead of re-reading three strings.
static mut ISSUERS: *mut c_char = std::ptr::null_mut();
static mut AUDIENCES: *mut c_char = std::ptr::null_mut();
static mut USER_CLAIM: *mut c_char = std::ptr::null_mut();
static VERIFY_SETTINGS_EPOCH: AtomicU64 = AtomicU64::new(1);
static MAX_TOKEN_BYTES: GucSetting<i32> = GucSetting::<i32>::new(8192);
static TOKEN_CACHE_ENTRIES: GucSetting<i32> = GucSetting::<i32>::new(1024);
static PARALLEL_HANDOFF: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
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
    crate::pg::cache::identity_or_policy_changed();
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn verify_setting_assigned(_newval: *const c_char, _extra: *mut c_void) {
    VERIFY_SETTINGS_EPOCH.fetch_add(1, Ordering::Relaxed);
    crate::pg::cache::identity_or_policy_changed();
}

/// A superuser-only string setting whose changes bump VERIFY_SETTINGS_EPOCH.
unsafe fn define_verify_setting(
    name: &'static CStr,
    description: &'static CStr,
    target: *mut *mut c_char,
    boot: &'static CStr,
) {
    // SAFETY: registers a string GUC whose name, descriptions and variable are statics that live as long as the process.
    unsafe {
        pg_sys::DefineCustomStringVariable(
            name.as_ptr(),
            description.as_ptr(),
            c"".as_ptr(),
            target,
            boot.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            0,
            None,
            Some(verify_setting_assigned),
            None,
        );
    }
}

pub fn init() {
    // SAFETY: registers a string GUC whose variable and strings are statics that live as long as the process.
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
    // SAFETY: as above.
    unsafe {
        pg_sys::DefineCustomStringVariable(
            c"authz.cluster_assertion".as_ptr(),
            c"Set by pg_authz on Citus's connections between nodes: the identity the originating node verified."
                .as_ptr(),
            c"Signed with the cluster key authz.distribute() provisions; never set it yourself.".as_ptr(),
            &raw mut CLUSTER_ASSERTION,
            c"".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            (pg_sys::GUC_NOT_IN_SAMPLE | pg_sys::GUC_DISALLOW_IN_FILE | pg_sys::GUC_NO_SHOW_ALL) as i32,
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
    // SAFETY: registers string GUCs whose variables and strings are statics that live as long as the process.
    unsafe {
        define_verify_setting(
            c"authz.issuers",
            c"Comma-separated issuers accepted in a token's iss claim (empty: any; a key's own issuer still applies).",
            &raw mut ISSUERS,
            c"",
        );
        define_verify_setting(
            c"authz.audiences",
            c"Comma-separated audiences of which a token's aud must name one (empty: aud not checked unless the key sets one).",
            &raw mut AUDIENCES,
            c"",
        );
        define_verify_setting(
            c"authz.user_claim",
            c"The claim that names the user (a dotted path into nested claims is allowed).",
            &raw mut USER_CLAIM,
            c"sub",
        );
    }
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
    GucRegistry::define_string_guc(
        c"authz.parallel_handoff",
        c"Internal: permission sets the leader hands to its parallel workers (see src/handoff.rs).",
        c"",
        &PARALLEL_HANDOFF,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL | GucFlags::DISALLOW_IN_FILE | GucFlags::NO_RESET_ALL,
    );
    // SAFETY: reserves the prefix with a static C string.
    unsafe {
        pg_sys::MarkGUCPrefixReserved(c"authz".as_ptr());
    }
}

/// A string setting's bytes; `None` when unset or empty.
///
/// # Safety
/// `ptr` is a string GUC's variable, which the GUC machinery keeps valid until the next assignment
/// (the backend is single-threaded; callers copy what they keep).
unsafe fn non_empty(ptr: *const c_char) -> Option<&'static [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string owned by the GUC machinery, as the caller vouches.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    (!bytes.is_empty()).then_some(bytes)
}

/// The raw `authz.token` value; `None` when unset or empty.
pub fn token() -> Option<&'static [u8]> {
    // SAFETY: the variable of the `authz.token` GUC.
    unsafe { non_empty(TOKEN) }
}

/// `authz.cluster_assertion`, when set.
pub fn cluster_assertion() -> Option<&'static [u8]> {
    // SAFETY: the variable of the `authz.cluster_assertion` GUC.
    unsafe { non_empty(CLUSTER_ASSERTION) }
}

pub fn token_epoch() -> u64 {
    TOKEN_EPOCH.load(Ordering::Relaxed)
}

pub fn leeway_seconds() -> i64 {
    i64::from(LEEWAY_SECONDS.get())
}

/// Read one of the directly defined string settings.
fn raw_setting(ptr: *mut c_char) -> String {
    if ptr.is_null() {
        String::new()
    } else {
        // SAFETY: `ptr` is a GUC's string value (null-checked above), NUL-terminated by PostgreSQL.
        unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
    }
}

fn comma_list(value: &str) -> Vec<String> {
    value.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect()
}

/// What token verification reads from the settings, parsed once per change of them.
pub struct VerifySettings {
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    /// The claim that names the user (a dotted path); `sub` unless configured.
    pub user_claim: String,
}

thread_local! {
    static VERIFY_SETTINGS: std::cell::RefCell<Option<(u64, std::rc::Rc<VerifySettings>)>> =
        const { std::cell::RefCell::new(None) };
}

pub fn verify_settings() -> std::rc::Rc<VerifySettings> {
    let epoch = verify_settings_epoch();
    VERIFY_SETTINGS.with(|cached| {
        let mut cached = cached.borrow_mut();
        if let Some((at, settings)) = cached.as_ref() {
            if *at == epoch {
                return settings.clone();
            }
        }
        // SAFETY: reads the current value of a string GUC (a pointer PostgreSQL keeps valid until the next assignment).
        let claim = raw_setting(unsafe { USER_CLAIM }).trim().to_string();
        let settings = std::rc::Rc::new(VerifySettings {
            // SAFETY: reads the current value of a string GUC (a pointer PostgreSQL keeps valid until the next assignment).
            issuers: comma_list(&raw_setting(unsafe { ISSUERS })),
            // SAFETY: reads the current value of a string GUC (a pointer PostgreSQL keeps valid until the next assignment).
            audiences: comma_list(&raw_setting(unsafe { AUDIENCES })),
            user_claim: if claim.is_empty() { "sub".to_string() } else { claim },
        });
        *cached = Some((epoch, settings.clone()));
        settings
    })
}

/// Moves whenever authz.issuers, authz.audiences or authz.user_claim changes.
pub fn verify_settings_epoch() -> u64 {
    VERIFY_SETTINGS_EPOCH.load(Ordering::Relaxed)
}

pub fn max_token_bytes() -> usize {
    usize::try_from(MAX_TOKEN_BYTES.get()).unwrap_or(8192)
}

pub fn token_cache_entries() -> usize {
    usize::try_from(TOKEN_CACHE_ENTRIES.get()).unwrap_or(0)
}

pub fn parallel_handoff() -> Option<String> {
    PARALLEL_HANDOFF.get().map(|s| s.to_string_lossy().into_owned())
}

/// Assign one of our settings as `SET [LOCAL]` would, from C code and with the given context.
/// Fails only for a value PostgreSQL cannot hold (a NUL byte).
pub fn assign(name: &CStr, value: &str, context: pg_sys::GucContext::Type, local: bool, elevel: u32) -> Result<(), ()> {
    let value = CString::new(value).map_err(|_| ())?;
    let action = if local { pg_sys::GucAction::GUC_ACTION_LOCAL } else { pg_sys::GucAction::GUC_ACTION_SET };
    crate::pg::db::set_config(name, &value, context, action, elevel);
    Ok(())
}

/// Set the handoff transaction-locally with superuser context: only pg_authz's own code can write
/// it (a client's SET of a superuser-only setting is refused).
pub fn set_parallel_handoff(value: &str) {
    let _ = assign(c"authz.parallel_handoff", value, pg_sys::GucContext::PGC_SUSET, true, pg_sys::DEBUG1);
}

pub fn audit_level() -> AuditLevel {
    AUDIT.get()
}
