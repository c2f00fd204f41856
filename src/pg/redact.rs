//! Tokens never reach statistics or the server log. A JWT is a bearer credential, and clients pass
//! it in statement text (`SET LOCAL authz.token = '…'`, `SELECT authz.login('…')`) or as a bind
//! parameter; PostgreSQL would copy that text into `pg_stat_statements`, `log_statement` lines,
//! the `STATEMENT:` line of any error, pgaudit's lines and bind-parameter details.
//!
//! Two hooks close that, both active once the library is loaded in the backend (which is why
//! `session_preload_libraries` or `shared_preload_libraries` is the recommended set-up):
//! - the utility hook hands the rest of the chain (pg_stat_statements, pgaudit) a copy of a
//!   statement's text with every token replaced by `[redacted token]`;
//! - the log hook replaces tokens in every field of every message before it is written, and in the
//!   statement text printed with it.
//!
//! A token is recognised by its shape — three base64url segments separated by dots whose first
//! starts with `ey` (the encoding of `{"`), at least 10 characters in each of the first two — and,
//! whatever its shape, as the current value of `authz.token`.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

const MASK: &str = "[redacted token]";
const MIN_SEGMENT: usize = 10;

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Length of the base64url run starting at `from`.
fn run(bytes: &[u8], from: usize) -> usize {
    bytes.get(from..).map_or(0, |rest| rest.iter().take_while(|b| is_b64url(**b)).count())
}

/// If a JWT starts at `at`, its length.
fn jwt_at(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at..at + 2) != Some(b"ey") || (at > 0 && is_b64url(bytes[at - 1])) {
        return None;
    }
    let header = run(bytes, at);
    if header < MIN_SEGMENT || bytes.get(at + header) != Some(&b'.') {
        return None;
    }
    let payload = run(bytes, at + header + 1);
    if payload < MIN_SEGMENT || bytes.get(at + header + 1 + payload) != Some(&b'.') {
        return None;
    }
    let signature = run(bytes, at + header + payload + 2);
    Some(header + payload + 2 + signature)
}

/// `text` with every token (and every occurrence of `current`, the session's own token) masked,
/// or `None` when there is nothing to mask. Works on bytes: a message in any server encoding
/// (or with invalid UTF-8) is masked all the same.
pub fn mask_bytes(text: &[u8], current: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        if let Some(len) = jwt_at(text, i) {
            out.extend_from_slice(&text[copied..i]);
            out.extend_from_slice(MASK.as_bytes());
            i += len;
            copied = i;
        } else {
            i += 1;
        }
    }
    let masked = if copied == 0 {
        None
    } else {
        out.extend_from_slice(&text[copied..]);
        Some(out)
    };
    match current.filter(|t| t.len() >= 16) {
        Some(token) => {
            let base = masked.as_deref().unwrap_or(text);
            if !base.windows(token.len()).any(|w| w == token) {
                return masked;
            }
            let mut replaced = Vec::with_capacity(base.len());
            let mut j = 0;
            while j < base.len() {
                if base[j..].starts_with(token) {
                    replaced.extend_from_slice(MASK.as_bytes());
                    j += token.len();
                } else {
                    replaced.push(base[j]);
                    j += 1;
                }
            }
            Some(replaced)
        }
        None => masked,
    }
}

/// The same on text (tests, callers holding a `&str`).
pub fn mask(text: &str, current: Option<&str>) -> Option<String> {
    mask_bytes(text.as_bytes(), current.map(str::as_bytes)).map(|m| String::from_utf8_lossy(&m).into_owned())
}

fn current_token() -> Option<&'static [u8]> {
    crate::pg::settings::token()
}

/// `text` masked against the token shapes and the session's own token.
pub fn mask_current(text: &[u8]) -> Option<Vec<u8>> {
    mask_bytes(text, current_token())
}

/// Mask a C string; `None` when it holds no token (the common case: no allocation).
///
/// # Safety
/// `ptr` is null or a valid NUL-terminated string.
pub unsafe fn mask_c(ptr: *const std::ffi::c_char) -> Option<CString> {
    // SAFETY: `ptr` is null (checked) or a NUL-terminated string, per the contract.
    unsafe {
        if ptr.is_null() {
            return None;
        }
        let text = CStr::from_ptr(ptr).to_bytes();
        mask_current(text).and_then(|m| CString::new(m).ok())
    }
}

static mut PREV_EMIT_LOG_HOOK: pg_sys::emit_log_hook_type = None;

/// A NUL-terminated copy of `text` in `context`, or null when memory is short: inside error
/// reporting an out-of-memory ERROR must not be raised (masking is skipped instead).
unsafe fn copy_in(context: pg_sys::MemoryContext, text: &CStr) -> *mut std::ffi::c_char {
    let bytes = text.to_bytes_with_nul();
    // SAFETY: an allocation that returns null instead of raising; the copy fits what was asked.
    unsafe {
        let out = pg_sys::MemoryContextAllocExtended(context, bytes.len(), pg_sys::MCXT_ALLOC_NO_OOM as i32)
            as *mut std::ffi::c_char;
        if !out.is_null() {
            std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const std::ffi::c_char, out, bytes.len());
        }
        out
    }
}

/// Replace one message field with its masked copy, allocated in the error's memory context (the
/// current one inside the hook, which the ErrorData lives in).
unsafe fn mask_field(field: *mut *mut std::ffi::c_char) {
    // SAFETY: `field` points into the ErrorData PostgreSQL handed the hook.
    unsafe {
        if let Some(masked) = mask_c(*field) {
            let copy = copy_in(pg_sys::CurrentMemoryContext, &masked);
            if !copy.is_null() {
                *field = copy;
            }
        }
    }
}

/// The log hook. Runs inside error reporting: nothing here may raise an error.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    // SAFETY: edata is the ErrorData being reported; debug_query_string is PostgreSQL's current
    // statement text, replaced (never written through) by a copy in the client message's context,
    // which outlives every use of it; where there is no such context (a parallel worker), the
    // statement is left out of the log line instead.
    unsafe {
        if !edata.is_null() {
            mask_field(&mut (*edata).message);
            mask_field(&mut (*edata).detail);
            mask_field(&mut (*edata).detail_log);
            mask_field(&mut (*edata).hint);
            mask_field(&mut (*edata).context);
            mask_field(&mut (*edata).internalquery);
            if let Some(masked) = mask_c(pg_sys::debug_query_string) {
                let copy = if pg_sys::MessageContext.is_null() {
                    std::ptr::null_mut()
                } else {
                    copy_in(pg_sys::MessageContext, &masked)
                };
                if copy.is_null() {
                    (*edata).hide_stmt = true;
                } else {
                    pg_sys::debug_query_string = copy;
                }
            }
        }
        if let Some(prev) = PREV_EMIT_LOG_HOOK {
            prev(edata);
        }
    }
}

pub fn init() {
    // SAFETY: _PG_init, once per backend; chaining the process-global hook.
    unsafe {
        PREV_EMIT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::mask;
    use pgrx::prelude::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    #[pg_test]
    fn tokens_are_masked_wherever_they_appear() {
        assert_eq!(
            mask(&format!("SET LOCAL authz.token = '{JWT}'"), None).as_deref(),
            Some("SET LOCAL authz.token = '[redacted token]'")
        );
        assert_eq!(mask(&format!("a {JWT} b {JWT}."), None).as_deref(), Some("a [redacted token] b [redacted token]."));
        // An unsigned token (empty third segment) is still a credential-shaped string.
        assert_eq!(mask("x eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0xx. y", None).as_deref(), Some("x [redacted token] y"));
        // Not tokens: short segments, no dots, a prefix glued to other base64 text.
        assert_eq!(mask("eyJ.eyJ.x keyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.x eyeyeyeyeyeyey", None), None);
        assert_eq!(mask("SELECT 1", None), None);
        // Bytes that are not UTF-8 (a LATIN1 or SQL_ASCII message) do not stop masking.
        let mut latin1 = b"caf\xe9 SET authz.token = '".to_vec();
        latin1.extend_from_slice(JWT.as_bytes());
        latin1.push(b'\'');
        let masked = super::mask_bytes(&latin1, None).unwrap();
        assert!(masked.ends_with(b"'[redacted token]'") && masked.starts_with(b"caf\xe9"));
        // The session's own token is masked whatever its shape.
        assert_eq!(
            mask("login('not-a-jwt-but-secret-0123')", Some("not-a-jwt-but-secret-0123")).as_deref(),
            Some("login('[redacted token]')")
        );
    }
}
