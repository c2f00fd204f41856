//! The identity one node of a Citus cluster vouches for to the others.
//!
//! On Citus a statement's rows are read by worker backends that Citus connects as the same
//! database role, in their own sessions: the client's `authz.token`, an `authz.login()` or even the
//! session user's mapping on the coordinator never reach them by themselves. Sending the bearer
//! token along would spread it to every node's logs and would have every node verify it against
//! its own keys and clock. Instead, before a statement whose plan reaches other nodes, the node the
//! client is connected to signs what it established — the source, the principal, the verified
//! token's payload and fields, the client's application name and address — with the cluster key
//! `authz.distribute()` provisions (a reference table, the same on every node), and Citus carries it
//! to every connection of the transaction as `SET LOCAL authz.cluster_assertion`.
//!
//! A node adopts an assertion only when its MAC verifies under its own copy of the key, it is at
//! most five minutes old, and it names the coordinator backend the connection came from (Citus's
//! global process id). A connection Citus opened that carries no assertion, or one that does not
//! verify, is refused with 28000: a missing propagation or a key not yet replicated is an error,
//! never a change of identity. The assertion is shaped like a JWT so that the redaction hooks mask
//! it wherever they mask tokens.

use std::cell::RefCell;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use pgrx::prelude::*;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::auth::token::VerifiedToken;
use crate::pg::errors::{AuthzError, AuthzResult};
use crate::pg::privileged::{self, Rights};
use crate::pg::{cache, citus};

/// The assertion's header, fixed: its encoding starts with `ey` like a JWT's.
const HEADER: &str = r#"{"typ":"pg_authz-assertion","v":1}"#;
/// A node refuses an assertion older than this (or dated this far in its future).
const LIFETIME_SECONDS: f64 = 300.0;
/// The originating node signs a fresh one for statements after this long in one transaction.
const REFRESH_SECONDS: f64 = 60.0;

/// What is signed. Short field names: it travels with every distributed transaction.
#[derive(Serialize, Deserialize, PartialEq)]
struct Claims {
    /// token, login or anonymous.
    s: String,
    u: Option<String>,
    /// The verified token's payload (base64url), kid, iss, exp, nbf.
    p: Option<String>,
    k: Option<String>,
    i: Option<String>,
    e: Option<f64>,
    n: Option<f64>,
    /// The client's application name and address on the originating node.
    a: Option<String>,
    h: Option<String>,
    /// Citus's global process id of the originating backend.
    g: u64,
    /// Signed at (unix seconds).
    t: f64,
}

thread_local! {
    /// The cluster key, by policy generation (it lives in `authz.cluster`, a policy table).
    static KEY: RefCell<Option<(u64, Option<Rc<hmac::Key>>)>> = const { RefCell::new(None) };
    /// What this transaction's connections to other nodes were last given: the claims without
    /// their time, and when they were signed. Cleared at the end of every (sub)transaction.
    static SENT: RefCell<Option<(String, f64)>> = const { RefCell::new(None) };
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The cluster key, or `None` when this database was never distributed.
fn key() -> AuthzResult<Option<Rc<hmac::Key>>> {
    let generation = cache::generation_of(cache::Dep::Policy);
    if let Some((g, k)) = KEY.with(|k| k.borrow().clone()) {
        if g == generation {
            return Ok(k);
        }
    }
    cache::watch_policy_tables();
    let secret: Option<Vec<u8>> = privileged::run(Rights::Superuser, || {
        crate::pg::db::select_one::<Vec<u8>>("SELECT secret FROM authz.cluster", &[])
    })?;
    let key = secret.map(|s| Rc::new(hmac::Key::new(hmac::HMAC_SHA256, &s)));
    KEY.with(|k| *k.borrow_mut() = Some((generation, key.clone())));
    Ok(key)
}

/// This database was distributed with `authz.distribute()` and Citus is active here.
pub fn distributed() -> AuthzResult<bool> {
    Ok(citus::is_active() && key()?.is_some())
}

fn claims_of(source: &str, user_id: Option<&str>, token: Option<&VerifiedToken>, now: f64) -> Claims {
    let origin = audit::origin();
    Claims {
        s: source.to_string(),
        u: user_id.map(str::to_string),
        p: token.map(|t| B64.encode(t.payload())),
        k: token.map(|t| t.kid.clone()),
        i: token.and_then(|t| t.iss.clone()),
        e: token.map(|t| t.exp),
        n: token.and_then(|t| t.nbf),
        a: origin.application_name,
        h: origin.client_addr,
        g: citus::global_pid(),
        t: now,
    }
}

fn sign(key: &hmac::Key, claims: &Claims) -> String {
    let body = format!("{}.{}", B64.encode(HEADER), B64.encode(serde_json::to_vec(claims).unwrap_or_default()));
    let mac = hmac::sign(key, body.as_bytes());
    format!("{body}.{}", B64.encode(mac.as_ref()))
}

/// Before a statement whose plan reaches other nodes: the assertion this transaction's connections
/// to them must carry for the given identity (`source`: token, login or anonymous), or `None` when
/// they carry it already (signed again when the identity changed, or after REFRESH_SECONDS), or
/// when the database is not distributed.
pub fn for_identity(source: &str, user_id: Option<&str>, token: Option<&VerifiedToken>) -> AuthzResult<Option<String>> {
    let Some(key) = (if citus::is_active() { key()? } else { None }) else {
        return Ok(None);
    };
    let now = now_seconds();
    let mut claims = claims_of(source, user_id, token, 0.0);
    let what = serde_json::to_string(&claims).unwrap_or_default();
    let fresh = SENT.with(|s| s.borrow().as_ref().is_some_and(|(w, at)| *w == what && now - at < REFRESH_SECONDS));
    if fresh {
        return Ok(None);
    }
    claims.t = now;
    SENT.with(|s| *s.borrow_mut() = Some((what, now)));
    Ok(Some(sign(&key, &claims)))
}

/// The end of a transaction or subtransaction: Citus forgets the settings it replays with it.
pub fn forget_sent() {
    SENT.with(|s| *s.borrow_mut() = None);
}

fn refused(why: &str) -> AuthzError {
    let e = AuthzError::token("identity from the originating node rejected")
        .detail(why.to_string())
        .hint("Run SELECT authz.distribute() on the coordinator, and check that every node runs the same pg_authz and that their clocks agree.");
    audit::token_rejected(&e);
    e
}

/// What another node vouched for: the identity's source (`token`, `login` or `anonymous`), its
/// principal and verified token.
pub struct Vouched {
    pub source: String,
    pub user_id: Option<String>,
    pub token: Option<Rc<VerifiedToken>>,
}

/// The identity of a connection another node opened: from its assertion, or refused.
pub fn adopt(raw: &[u8]) -> AuthzResult<Vouched> {
    let key =
        key()?.ok_or_else(|| refused("This node has no cluster key: pg_authz's state was not distributed here."))?;
    let text = std::str::from_utf8(raw).map_err(|_| refused("The assertion is not text."))?;
    let mut parts = text.split('.');
    let (Some(header), Some(body), Some(mac), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(refused("The assertion is malformed."));
    };
    let mac = B64.decode(mac).map_err(|_| refused("The assertion is malformed."))?;
    let signed = &text[..header.len() + 1 + body.len()];
    if B64.decode(header).ok().as_deref() != Some(HEADER.as_bytes())
        || hmac::verify(&key, signed.as_bytes(), &mac).is_err()
    {
        return Err(refused(
            "The assertion's signature does not verify with this node's cluster key (it differs from the originating node's, or the assertion was altered).",
        ));
    }
    let claims: Claims = B64
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| refused("The assertion is malformed."))?;
    let age = now_seconds() - claims.t;
    if !(-LIFETIME_SECONDS..=LIFETIME_SECONDS).contains(&age) {
        return Err(refused(&format!(
            "The assertion was signed {age:.0} s ago; at most {LIFETIME_SECONDS:.0} s are accepted."
        )));
    }
    if claims.g != citus::global_pid() {
        return Err(refused(&format!(
            "The assertion was signed for the backend with Citus global process id {}, not for this connection's ({}).",
            claims.g,
            citus::global_pid()
        )));
    }
    if !matches!(claims.s.as_str(), "token" | "login" | "anonymous") {
        return Err(refused("The assertion names an unknown identity source."));
    }
    let token = match (&claims.p, &claims.u, &claims.k, claims.e) {
        (Some(p), Some(u), Some(k), Some(e)) => Some(Rc::new(VerifiedToken::vouched(
            u.clone(),
            B64.decode(p).map_err(|_| refused("The assertion is malformed."))?,
            k.clone(),
            claims.i.clone(),
            e,
            claims.n,
        ))),
        _ if claims.s == "token" => return Err(refused("The assertion's token fields are incomplete.")),
        _ => None,
    };
    audit::set_origin(Some(audit::Origin {
        application_name: claims.a,
        client_addr: claims.h,
        via_gpid: Some(claims.g),
    }));
    Ok(Vouched { source: claims.s, user_id: claims.u, token })
}

/// A connection another node opened without an assertion (the caller found none), in a distributed
/// database: refused, never run as whoever the login maps to.
pub fn require_assertion_on_internal_connection() -> AuthzResult<()> {
    if citus::is_internal_backend() && distributed()? {
        return Err(refused(
            "Citus opened this connection from another node without the identity pg_authz sends with distributed statements.",
        ));
    }
    Ok(())
}

/// A new cluster key (32 random bytes), for authz.distribute(): refused when this backend cannot
/// carry identities to the other nodes (citus.so not loaded, or without a function pg_authz calls),
/// which would leave the workers refusing every protected statement.
#[pg_extern(volatile)]
fn _new_cluster_secret() -> Vec<u8> {
    if !citus::is_active() {
        AuthzError::new(
            pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "pg_authz cannot use Citus in this backend",
        )
        .detail("citus.so is not loaded here, or lacks a function pg_authz calls (tested with Citus 13.2).")
        .hint("Preload both on every node: shared_preload_libraries = 'citus,pg_authz'.")
        .raise();
    }
    let mut secret = vec![0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| {
            AuthzError::new(pgrx::PgSqlErrorCode::ERRCODE_SYSTEM_ERROR, "no randomness available for the cluster key")
        })
        .or_raise();
    secret
}

use crate::pg::errors::OrRaise;
