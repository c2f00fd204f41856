//! Who is asking. A verified token if `authz.token` is set; else the principal mapped to
//! `session_user` (not `current_user`, which SET ROLE and SECURITY DEFINER functions change);
//! else anonymous. There is no other way in: claims only ever come out of a verified token.

use std::rc::Rc;

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use crate::audit;
use crate::auth::token::{self, VerifiedToken};
use crate::auth::{assertion, principals};
use crate::pg::errors::{AuthzError, AuthzResult, OrRaise};
use crate::pg::{cache, db, settings, statement};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Source {
    Token,
    Login,
    Anonymous,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Token => "token",
            Source::Login => "login",
            Source::Anonymous => "anonymous",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Identity {
    pub source: Source,
    /// The principal id: the token's user claim, or the principal mapped to the login.
    pub user_id: Option<String>,
    pub token: Option<Rc<VerifiedToken>>,
}

impl Identity {
    pub fn authenticated(&self) -> bool {
        self.source != Source::Anonymous
    }

    pub fn anonymous() -> Self {
        Identity { source: Source::Anonymous, user_id: None, token: None }
    }

    /// A principal as the administration functions consider it (its assignments and groups; no
    /// token claims): for explaining or vetting another principal's grants.
    pub fn of_principal(id: &str) -> Self {
        Identity { source: Source::Token, user_id: Some(id.to_string()), token: None }
    }

    /// How the audit log names this identity.
    pub fn actor(&self) -> audit::Actor<'_> {
        audit::Actor {
            source: self.source.as_str(),
            principal: self.user_id.as_deref(),
            token: self.token.as_deref().map(VerifiedToken::audit_fields),
        }
    }
}

/// Establish the current identity, verifying the token if one is set. A bad token is an error,
/// never a fall-back to the login identity.
///
/// Established once per statement (src/pg/statement.rs), under a tag naming what it depends on —
/// the token (its epoch changes with every assignment), the cache generation (keys, principals)
/// and the session user — and, for a token, re-checked against the clock on every use: an
/// expired token stops the statement's next question.
pub fn current() -> AuthzResult<Identity> {
    let tag = settings::token_epoch()
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(cache::generation_of(cache::Dep::PolicyAndGrants).wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
        .wrapping_add(settings::verify_settings_epoch().wrapping_mul(0x1656_67b1_9e37_79f9))
        .wrapping_add(u64::from(db::session_user().to_u32()));
    let identity = statement::memo("identity", tag, establish)?;
    if let Some(t) = &identity.token {
        token::check_window(t).inspect_err(audit::token_rejected)?;
    }
    Ok((*identity).clone())
}

fn establish() -> AuthzResult<Identity> {
    // On a connection another Citus node opened: the identity that node verified, or nothing.
    if let Some(raw) = settings::cluster_assertion() {
        let vouched = assertion::adopt(raw)?;
        let source = match vouched.source.as_str() {
            "token" => Source::Token,
            "login" => Source::Login,
            _ => Source::Anonymous,
        };
        return Ok(Identity { source, user_id: vouched.user_id, token: vouched.token });
    }
    audit::set_origin(None);
    assertion::require_assertion_on_internal_connection()?;
    if let Some(raw) = settings::token() {
        let t = verified(raw)?;
        return Ok(Identity { source: Source::Token, user_id: Some(t.user_id.clone()), token: Some(t) });
    }
    match principals::for_login(db::session_user())? {
        Some(principal) => Ok(Identity { source: Source::Login, user_id: Some(principal), token: None }),
        None => Ok(Identity::anonymous()),
    }
}

/// Verify a token and make sure its subject can be an identity: a group principal never is
/// (holding a token for a group must not confer the group's grants on whoever presents it).
pub fn verified(raw: &[u8]) -> AuthzResult<Rc<VerifiedToken>> {
    let t = token::verify(raw)?;
    if principals::is_group(&t.user_id)? {
        let e = AuthzError::token("token rejected: subject is a group")
            .detail(format!(
                "Principal \"{}\" is a group; tokens identify users.",
                crate::pg::text::printable(&t.user_id, 64)
            ))
            .hint("Issue the token for a user and make that user a member of the group.");
        audit::token_rejected(&e);
        return Err(e);
    }
    Ok(t)
}

/// Set `authz.token` exactly as `set_config('authz.token', value, local)` would, without SPI (a
/// statement through SPI would assign a transaction id, which a hot standby cannot do).
fn set_token(value: &str, local: bool) -> AuthzResult<()> {
    settings::assign(c"authz.token", value, pg_sys::GucContext::PGC_USERSET, local, 0)
        .map_err(|_| AuthzError::token("token rejected: malformed").detail("The token contains a NUL byte."))
}

/// Verify `token` and make it the caller's identity, transaction-local by default so that a
/// transaction pooler can never hand it to the next client.
#[pg_extern(volatile)]
fn login(token: &str, local: default!(bool, "true")) -> String {
    let verified = verified(token.as_bytes()).or_raise();
    // SAFETY: a plain read of the backend's transaction state.
    if local && unsafe { !pg_sys::IsTransactionBlock() } {
        pgrx::warning!(
            "authz.login() outside a transaction block only lasts until the end of this statement; use BEGIN first, or authz.login(token, false) on a dedicated connection"
        );
    }
    set_token(token, local).or_raise();
    verified.user_id.clone()
}

/// Verify a token without making it the caller's identity; returns its user id (28000 when bad).
/// For applications that want to validate a token before using it.
#[pg_extern(stable, parallel_safe)]
fn verify_token(token: &str) -> String {
    verified(token.as_bytes()).or_raise().user_id.clone()
}

/// Forget the token (in the same scope it was set: pass `local => false` for a session token).
#[pg_extern(volatile)]
fn logout(local: default!(bool, "true")) {
    set_token("", local).or_raise();
}

/// The current principal id; NULL for an anonymous caller.
#[pg_extern(stable, parallel_safe)]
fn user_id() -> Option<String> {
    current().or_raise().user_id
}

/// The verified token's claims; an empty object without a token.
#[pg_extern(stable, parallel_safe)]
fn claims() -> JsonB {
    JsonB(current().or_raise().token.map(|t| t.claims().clone()).unwrap_or_else(|| json!({})))
}

/// One claim by dotted path (`realm_access.roles`); strings unquoted, other values as JSON.
#[pg_extern(stable, parallel_safe)]
fn claim(path: &str) -> Option<String> {
    let identity = current().or_raise();
    let token = identity.token?;
    match token::lookup_path(token.claims(), path)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Everything known about the caller's identity (never the token itself).
#[pg_extern(stable, parallel_safe)]
fn identity() -> JsonB {
    let identity = current().or_raise();
    let mut out = json!({
        "source": identity.source.as_str(),
        "user_id": identity.user_id,
        "session_user": db::role_name(db::session_user()),
    });
    if let Some(t) = &identity.token {
        out["kid"] = json!(t.kid);
        out["iss"] = json!(t.iss);
        out["exp"] = json!(t.exp);
    }
    JsonB(out)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn anonymous_without_token_or_mapping() {
        let source = Spi::get_one::<String>("SELECT authz.identity()->>'source'").unwrap();
        assert_eq!(source.as_deref(), Some("anonymous"));
        assert_eq!(Spi::get_one::<String>("SELECT authz.user_id()").unwrap(), None);
    }

    #[pg_test]
    fn login_mapping_uses_session_user() {
        Spi::run("SELECT authz.create_principal('dba', 'user', session_user)").unwrap();
        assert_eq!(Spi::get_one::<String>("SELECT authz.user_id()").unwrap().as_deref(), Some("dba"));
        assert_eq!(Spi::get_one::<String>("SELECT authz.identity()->>'source'").unwrap().as_deref(), Some("login"));
    }
}

/// The token subject for `authz.audit_changes` rows; NULL rather than an error when there is no
/// valid token (the change itself was already authorized).
#[pg_extern(stable)]
fn _audit_actor() -> Option<String> {
    let raw = settings::token()?;
    token::verify(raw).ok().map(|t| t.user_id.clone())
}
