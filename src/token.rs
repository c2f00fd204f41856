//! JWT verification. The signature is checked first with the key the token's `kid` names (or the
//! only key of its algorithm), using the key's algorithm, never the token's choice; only then are
//! the claims read. Every failure is SQLSTATE 28000 naming the check that failed, without echoing
//! the token or key material.
//!
//! Verified tokens are cached per backend, keyed by the exact token bytes and the cache generation
//! (which moves when any key changes); `exp` and `nbf` are re-checked on every use.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use serde_json::Value;

use crate::errors::{AuthzError, AuthzResult};
use crate::keys::{self, printable};
use crate::{audit, cache, gucs};

#[derive(Debug)]
pub struct VerifiedToken {
    pub user_id: String,
    pub claims: Value,
    pub kid: String,
    pub iss: Option<String>,
    pub exp: f64,
    pub nbf: Option<f64>,
}

struct TokenCache {
    generation: u64,
    /// The verification settings epoch the entries were checked under; a change empties the cache.
    settings: u64,
    entries: HashMap<Vec<u8>, Rc<VerifiedToken>>,
}

thread_local! {
    static CACHE: RefCell<TokenCache> =
        RefCell::new(TokenCache { generation: 0, settings: 0, entries: HashMap::new() });
}

/// Number of verified tokens this backend currently remembers.
pub fn cached_tokens() -> usize {
    CACHE.with(|c| c.borrow().entries.len())
}

fn now_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Verify `token` (cached), then check its validity window against the clock.
pub fn verify(token: &[u8]) -> AuthzResult<Rc<VerifiedToken>> {
    let max = gucs::max_token_bytes();
    if token.len() > max {
        let e = AuthzError::token("token rejected: too large")
            .detail(format!("The token has {} bytes; authz.max_token_bytes is {max}.", token.len()));
        audit::token_rejected(&e);
        return Err(e);
    }
    let generation = cache::generation();
    let settings = gucs::verify_settings_epoch();
    let use_cache = gucs::token_cache_entries() > 0;
    let cached = CACHE.with(|c| {
        let c = c.borrow();
        if use_cache && c.generation == generation && c.settings == settings {
            c.entries.get(token).cloned()
        } else {
            None
        }
    });
    let verified = match cached {
        Some(v) => v,
        None => {
            let v = Rc::new(verify_uncached(token).inspect_err(audit::token_rejected)?);
            audit::token_accepted(&v);
            remember(token, generation, settings, v.clone());
            v
        }
    };
    check_window(&verified).inspect_err(audit::token_rejected)?;
    Ok(verified)
}

fn remember(token: &[u8], generation: u64, settings: u64, verified: Rc<VerifiedToken>) {
    let capacity = gucs::token_cache_entries();
    if capacity == 0 {
        return;
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.generation != generation || c.settings != settings || c.entries.len() >= capacity {
            // Bounded without bookkeeping: a full cache starts over. Re-verifying is only a cost.
            c.entries.clear();
            c.entries.shrink_to(capacity.min(4096));
            c.generation = generation;
            c.settings = settings;
        }
        c.entries.insert(token.to_vec(), verified);
    });
}

fn check_window(t: &VerifiedToken) -> AuthzResult<()> {
    let now = now_seconds();
    let leeway = gucs::leeway_seconds() as f64;
    if now > t.exp + leeway {
        return Err(AuthzError::token("token rejected: expired")
            .detail(format!("The token expired at {} (unix time); leeway is {leeway} s.", t.exp))
            .hint("Obtain a new token from the identity provider."));
    }
    if let Some(nbf) = t.nbf {
        if now + leeway < nbf {
            return Err(AuthzError::token("token rejected: not yet valid")
                .detail(format!("The token is valid from {nbf} (unix time); leeway is {leeway} s.")));
        }
    }
    Ok(())
}

/// A claim of the wrong shape: the token is well-formed, its content is not.
fn bad_claim(what: &str) -> AuthzError {
    AuthzError::token("token rejected: malformed").detail(what.to_string())
}

fn malformed(what: impl Into<String>) -> AuthzError {
    AuthzError::token("token rejected: malformed")
        .detail(what.into())
        .hint("Pass the bare compact JWT: no \"Bearer \" prefix, no surrounding whitespace.")
}

/// The header, decoded by hand so that `alg` values jsonwebtoken does not know (such as `none`)
/// get a precise answer instead of a parse error.
/// Only the two header fields pg_authz reads; other fields are skipped without allocating, and a
/// duplicated `alg` or `kid` is a parse error (so the `alg` enforced is never ambiguous).
#[derive(serde::Deserialize)]
struct RawHeader {
    alg: Option<Value>,
    kid: Option<Value>,
}

fn header(token: &str) -> AuthzResult<(String, Option<String>)> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("A JWT has three base64url parts separated by dots."));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| malformed("The header is not base64url."))?;
    let header: RawHeader = serde_json::from_slice(&bytes)
        .map_err(|_| malformed("The header is not a JSON object with one alg and kid."))?;
    let alg = match header.alg {
        Some(Value::String(s)) => s,
        _ => return Err(malformed("The header has no \"alg\" string.")),
    };
    let kid = match header.kid {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(malformed("The header's \"kid\" is not a string.")),
    };
    Ok((alg, kid))
}

thread_local! {
    /// Signature-only validation settings per algorithm (claims are checked by pg_authz itself);
    /// built once, since `Validation::new` allocates.
    static VALIDATIONS: RefCell<HashMap<String, Rc<Validation>>> = RefCell::new(HashMap::new());
}

fn signature_validation(alg: jsonwebtoken::Algorithm) -> Rc<Validation> {
    VALIDATIONS.with(|v| {
        v.borrow_mut()
            .entry(format!("{alg:?}"))
            .or_insert_with(|| {
                let mut validation = Validation::new(alg);
                validation.validate_exp = false;
                validation.validate_nbf = false;
                validation.validate_aud = false;
                validation.required_spec_claims.clear();
                Rc::new(validation)
            })
            .clone()
    })
}

fn verify_uncached(raw: &[u8]) -> AuthzResult<VerifiedToken> {
    // A compact JWT is base64url and dots only; anything else (whitespace, a "Bearer " prefix,
    // padding, binary noise) is malformed, named as such before any decoding.
    if !raw.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(malformed("The token contains characters outside base64url and '.'."));
    }
    let token = std::str::from_utf8(raw).map_err(|_| malformed("The token is not UTF-8 text."))?;
    let (alg, kid) = header(token)?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(AuthzError::token("token rejected: algorithm not allowed")
            .detail("Unsigned tokens (alg \"none\") are never accepted."));
    }
    let keyset = keys::current()?;
    let key = match &kid {
        Some(kid) => keyset.keys.get(kid).cloned().ok_or_else(|| {
            AuthzError::token("token rejected: unknown kid")
                .detail(format!("No key with kid \"{}\" is registered.", printable(kid, 64)))
                .hint("Register the identity provider's keys with authz.add_key() or authz.add_jwks().")
        })?,
        None => {
            let candidates: Vec<_> = keyset.keys.values().filter(|k| format!("{:?}", k.alg) == alg).cloned().collect();
            match candidates.len() {
                1 => candidates[0].clone(),
                0 => {
                    return Err(AuthzError::token("token rejected: algorithm not allowed").detail(format!(
                        "The token has no kid and no key uses algorithm \"{}\".",
                        printable(&alg, 16)
                    )))
                }
                n => {
                    return Err(AuthzError::token("token rejected: unknown kid")
                        .detail(format!("The token has no kid and {n} keys use its algorithm.")))
                }
            }
        }
    };
    if format!("{:?}", key.alg) != alg {
        return Err(AuthzError::token("token rejected: algorithm not allowed").detail(format!(
            "The token says \"{}\" but key \"{}\" is {:?}.",
            printable(&alg, 16),
            printable(&key.kid, 64),
            key.alg
        )));
    }

    let validation = signature_validation(key.alg);
    let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => AuthzError::token("token rejected: bad signature")
            .detail(format!("The signature does not verify with key \"{}\".", printable(&key.kid, 64))),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
            AuthzError::token("token rejected: algorithm not allowed")
        }
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            AuthzError::token("token rejected: bad signature")
                .detail(format!("Key \"{}\" cannot verify this token.", printable(&key.kid, 64)))
        }
        _ => malformed("The payload or signature is not valid base64url JSON."),
    })?;
    let claims = data.claims;
    if !claims.is_object() {
        return Err(bad_claim("The claims are not a JSON object."));
    }
    let exp = match claims.get("exp") {
        None | Some(Value::Null) => {
            return Err(
                AuthzError::token("token rejected: missing exp").detail("Tokens without an expiry are not accepted.")
            )
        }
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| bad_claim("\"exp\" is not a number."))?,
        Some(_) => return Err(bad_claim("\"exp\" is not a number.")),
    };
    let nbf = match claims.get("nbf") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_f64().ok_or_else(|| bad_claim("\"nbf\" is not a number."))?),
        Some(_) => return Err(bad_claim("\"nbf\" is not a number.")),
    };
    let iss = match claims.get("iss") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad_claim("\"iss\" is not a string.")),
    };
    check_issuer(&key, iss.as_deref())?;
    check_audience(&key, claims.get("aud"))?;

    let claim_name = gucs::user_claim();
    let user_id = match lookup_path(&claims, &claim_name) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(AuthzError::token("token rejected: missing user claim")
                .detail(format!("The user claim \"{}\" is empty.", printable(&claim_name, 64))))
        }
        None | Some(Value::Null) => {
            return Err(AuthzError::token("token rejected: missing user claim")
                .detail(format!("The token has no \"{}\" claim.", printable(&claim_name, 64)))
                .hint("authz.user_claim names the claim that identifies the user."))
        }
        Some(_) => {
            return Err(AuthzError::token("token rejected: missing user claim")
                .detail(format!("The user claim \"{}\" is not a string.", printable(&claim_name, 64))))
        }
    };
    Ok(VerifiedToken { user_id, claims, kid: key.kid.clone(), iss, exp, nbf })
}

fn check_issuer(key: &keys::Key, iss: Option<&str>) -> AuthzResult<()> {
    let wrong = |why: String| AuthzError::token("token rejected: wrong issuer").detail(why);
    if let Some(required) = &key.issuer {
        if iss != Some(required.as_str()) {
            return Err(wrong(format!("Key \"{}\" only accepts tokens from its own issuer.", printable(&key.kid, 64))));
        }
    }
    let allowed = gucs::issuers();
    if !allowed.is_empty() && !iss.is_some_and(|i| allowed.iter().any(|a| a == i)) {
        return Err(wrong("The token's iss is not listed in authz.issuers.".into()));
    }
    Ok(())
}

fn check_audience(key: &keys::Key, aud: Option<&Value>) -> AuthzResult<()> {
    let token_auds: Vec<&str> = match aud {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => out.push(s.as_str()),
                    _ => return Err(bad_claim("\"aud\" holds a value that is not a string.")),
                }
            }
            out
        }
        Some(_) => return Err(bad_claim("\"aud\" is neither a string nor an array of strings.")),
    };
    let wrong = |why: &str| AuthzError::token("token rejected: wrong audience").detail(why.to_string());
    if let Some(required) = &key.audience {
        if !token_auds.contains(&required.as_str()) {
            return Err(wrong("The token is not addressed to this key's audience."));
        }
    }
    let allowed = gucs::audiences();
    if !allowed.is_empty() && !token_auds.iter().any(|a| allowed.iter().any(|x| x == a)) {
        return Err(wrong("The token's aud names none of authz.audiences."));
    }
    Ok(())
}

/// Follow a dotted path (`realm_access.roles`) into nested claims.
pub fn lookup_path<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut current = claims;
    for part in path.split('.') {
        current = match current {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}
