//! JWT verification. The signature is checked first with the key the token's `kid` names (or the
//! only key of its algorithm), using the key's algorithm, never the token's choice; only then are
//! the claims read. Every failure is SQLSTATE 28000 naming the check that failed, without echoing
//! the token or key material.
//!
//! Verified tokens are cached per backend, keyed by the exact token bytes and the cache generation
//! (which moves when any key changes); `exp` and `nbf` are re-checked on every use.

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use serde_json::Value;

use crate::audit;
use crate::auth::claims;
use crate::auth::keys;
use crate::pg::cache::{self, GenMap};
use crate::pg::errors::{AuthzError, AuthzResult};
use crate::pg::settings;
use crate::pg::text::printable;

#[derive(Debug)]
pub struct VerifiedToken {
    pub user_id: String,
    /// The decoded payload; its JSON tree is built on first use (most statements never ask).
    payload: Vec<u8>,
    tree: OnceCell<Value>,
    pub kid: String,
    pub iss: Option<String>,
    pub exp: f64,
    pub nbf: Option<f64>,
}

impl VerifiedToken {
    /// The fields the audit log records (never the token).
    pub fn audit_fields(&self) -> audit::TokenFields<'_> {
        audit::TokenFields { sub: &self.user_id, kid: &self.kid, iss: self.iss.as_deref() }
    }

    /// The decoded payload, exactly as verified (what a cluster assertion carries to other nodes).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// A token another node of the cluster verified and vouched for (src/auth/assertion.rs): the
    /// same payload and fields, so claims, mappings and the time window mean the same here.
    pub fn vouched(
        user_id: String,
        payload: Vec<u8>,
        kid: String,
        iss: Option<String>,
        exp: f64,
        nbf: Option<f64>,
    ) -> Self {
        VerifiedToken { user_id, payload, tree: OnceCell::new(), kid, iss, exp, nbf }
    }

    /// All claims. The payload passed the strict scan when the token was verified, so the tree
    /// always builds; were it ever not to, the answer is no claims rather than a panic.
    pub fn claims(&self) -> &Value {
        self.tree.get_or_init(|| claims::tree(&self.payload).unwrap_or_else(|_| Value::Object(Default::default())))
    }
}

thread_local! {
    /// Verified tokens by their exact bytes, under the cache generation (keys) and tagged with the
    /// verification settings epoch they were checked under.
    static CACHE: RefCell<GenMap<Vec<u8>, Rc<VerifiedToken>>> = RefCell::new(GenMap::with_capacity(0, crate::pg::cache::Dep::Policy));
}

/// Number of verified tokens this backend currently remembers.
pub fn cached_tokens() -> usize {
    CACHE.with(|c| c.borrow_mut().len())
}

/// Approximate bytes held by the verified-token cache (token text, payload and parsed claims).
pub fn cached_token_bytes() -> usize {
    CACHE.with(|c| c.borrow_mut().sum_by(|k, v| 256 + k.len() + 3 * v.payload.len()))
}

fn now_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Verify `token` (cached), then check its validity window against the clock.
pub fn verify(token: &[u8]) -> AuthzResult<Rc<VerifiedToken>> {
    let max = settings::max_token_bytes();
    if token.len() > max {
        let e = AuthzError::token("token rejected: too large")
            .detail(format!("The token has {} bytes; authz.max_token_bytes is {max}.", token.len()));
        audit::token_rejected(&e);
        return Err(e);
    }
    let generation = cache::generation_of(cache::Dep::Policy);
    let cached = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.retag(settings::verify_settings_epoch());
        c.set_capacity(settings::token_cache_entries());
        c.get(token)
    });
    let verified = match cached {
        Some(v) => v,
        None => {
            let v = Rc::new(verify_uncached(token).inspect_err(audit::token_rejected)?);
            audit::token_accepted(v.audit_fields());
            CACHE.with(|c| c.borrow_mut().insert(generation, token.to_vec(), v.clone()));
            v
        }
    };
    check_window(&verified).inspect_err(audit::token_rejected)?;
    Ok(verified)
}

/// Is the token inside its validity window now (with the configured leeway)?
pub fn check_window(t: &VerifiedToken) -> AuthzResult<()> {
    let now = now_seconds();
    let leeway = settings::leeway_seconds() as f64;
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

fn claims_error(e: claims::ClaimsError) -> AuthzError {
    match e {
        claims::ClaimsError::NotJson => malformed("The payload is not JSON."),
        claims::ClaimsError::DuplicateName => bad_claim("The payload names a member twice; such a token is ambiguous."),
    }
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

thread_local! {
    /// The last header decoded. An identity provider signs every token with the same header (same
    /// `alg`, same `kid`), so consecutive distinct tokens almost always repeat it byte for byte.
    static LAST_HEADER: RefCell<Option<(String, Rc<(String, Option<String>)>)>> = const { RefCell::new(None) };
}

fn header(h: &str) -> AuthzResult<Rc<(String, Option<String>)>> {
    if let Some(hit) =
        LAST_HEADER.with(|last| last.borrow().as_ref().filter(|(raw, _)| raw == h).map(|(_, v)| v.clone()))
    {
        return Ok(hit);
    }
    let parsed = Rc::new(decode_header(h)?);
    LAST_HEADER.with(|last| *last.borrow_mut() = Some((h.to_string(), parsed.clone())));
    Ok(parsed)
}

fn decode_header(h: &str) -> AuthzResult<(String, Option<String>)> {
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

/// A signature part that is not canonical base64url (a flipped last character, say) is a bad
/// signature: decoding it leniently would let two different token strings carry one signature.
fn unreadable_signature(key: &keys::Key) -> AuthzError {
    AuthzError::token("token rejected: bad signature").detail(format!(
        "The signature is not canonical base64url, so it cannot verify with key \"{}\".",
        printable(&key.kid, 64)
    ))
}

/// Check the signature over `header.payload` with the key's own algorithm.
fn signature_verifies(key: &keys::Key, message: &[u8], signature: &str) -> AuthzResult<bool> {
    match &key.verifier {
        keys::Verifier::Hmac(secret) => {
            // The longest HMAC (HS512) is 64 bytes; a longer signature cannot match.
            let mut decoded = [0u8; 64];
            match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(signature, &mut decoded) {
                Ok(n) => Ok(ring::hmac::verify(secret, message, &decoded[..n]).is_ok()),
                Err(base64::DecodeSliceError::OutputSliceTooSmall) => Ok(false),
                Err(base64::DecodeSliceError::DecodeError(_)) => Err(unreadable_signature(key)),
            }
        }
        keys::Verifier::PublicKey(public) => {
            jsonwebtoken::crypto::verify(signature, message, public, key.alg).map_err(|e| match e.kind() {
                ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
                    AuthzError::token("token rejected: bad signature")
                        .detail(format!("Key \"{}\" cannot verify this token.", printable(&key.kid, 64)))
                }
                _ => unreadable_signature(key),
            })
        }
    }
}

/// The bytes of a compact JWT: base64url and '.'. A table, since this check runs over every byte
/// of every new token (the branchy form was 6% of an uncached verification).
static COMPACT_JWT_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.';
        b += 1;
    }
    table
};

fn verify_uncached(raw: &[u8]) -> AuthzResult<VerifiedToken> {
    // A compact JWT is base64url and dots only; anything else (whitespace, a "Bearer " prefix,
    // padding, binary noise) is malformed, named as such before any decoding.
    if !raw.iter().all(|b| COMPACT_JWT_BYTES[usize::from(*b)]) {
        return Err(malformed("The token contains characters outside base64url and '.'."));
    }
    // SAFETY: every byte was just checked to be ASCII.
    let token = unsafe { std::str::from_utf8_unchecked(raw) };
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("A JWT has three base64url parts separated by dots."));
    };
    let parsed_header = header(header_b64)?;
    let (alg, kid) = (&parsed_header.0, &parsed_header.1);
    if alg.eq_ignore_ascii_case("none") {
        return Err(AuthzError::token("token rejected: algorithm not allowed")
            .detail("Unsigned tokens (alg \"none\") are never accepted."));
    }
    let keyset = keys::current()?;
    let key = match kid {
        Some(kid) => keyset.keys.get(kid).cloned().ok_or_else(|| {
            AuthzError::token("token rejected: unknown kid")
                .detail(format!("No key with kid \"{}\" is registered.", printable(kid, 64)))
                .hint("Register the identity provider's keys with authz.add_key() or authz.add_jwks().")
        })?,
        None => {
            let candidates: Vec<_> = keyset.keys.values().filter(|k| keys::alg_name(k.alg) == alg).cloned().collect();
            match candidates.len() {
                1 => candidates[0].clone(),
                0 => {
                    return Err(AuthzError::token("token rejected: algorithm not allowed")
                        .detail(format!("The token has no kid and no key uses algorithm \"{}\".", printable(alg, 16))))
                }
                n => {
                    return Err(AuthzError::token("token rejected: unknown kid")
                        .detail(format!("The token has no kid and {n} keys use its algorithm.")))
                }
            }
        }
    };
    if keys::alg_name(key.alg) != alg.as_str() {
        return Err(AuthzError::token("token rejected: algorithm not allowed").detail(format!(
            "The token says \"{}\" but key \"{}\" is {}.",
            printable(alg, 16),
            printable(&key.kid, 64),
            keys::alg_name(key.alg)
        )));
    }

    let message = &token[..header_b64.len() + 1 + payload_b64.len()];
    if !signature_verifies(&key, message.as_bytes(), signature)? {
        return Err(AuthzError::token("token rejected: bad signature")
            .detail(format!("The signature does not verify with key \"{}\".", printable(&key.kid, 64))));
    }
    // Only a verified payload is read.
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| malformed("The payload is not base64url."))?;
    let settings = settings::verify_settings();
    let claim_name = &settings.user_claim;
    let scanned = claims::scan(&payload, claim_name).map_err(claims_error)?;
    if !scanned.is_object {
        return Err(bad_claim("The claims are not a JSON object."));
    }
    let exp = match &scanned.exp {
        None | Some(Value::Null) => {
            return Err(
                AuthzError::token("token rejected: missing exp").detail("Tokens without an expiry are not accepted.")
            )
        }
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| bad_claim("\"exp\" is not a number."))?,
        Some(_) => return Err(bad_claim("\"exp\" is not a number.")),
    };
    let nbf = match &scanned.nbf {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_f64().ok_or_else(|| bad_claim("\"nbf\" is not a number."))?),
        Some(_) => return Err(bad_claim("\"nbf\" is not a number.")),
    };
    let iss = match &scanned.iss {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad_claim("\"iss\" is not a string.")),
    };
    check_issuer(&key, &settings, iss.as_deref())?;
    check_audience(&key, &settings, scanned.aud.as_ref())?;

    // A dotted user claim (`realm_access.preferred_username`) that is not itself a top-level name
    // is looked up in the full tree.
    let user = match scanned.user {
        None if claim_name.contains('.') => {
            lookup_path(&claims::tree(&payload).map_err(claims_error)?, claim_name).cloned()
        }
        found => found,
    };
    let user_id = match user {
        // A subject is a name: control characters (NUL included) would forge log lines and
        // never name a principal an administrator could have created.
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            return Err(AuthzError::token("token rejected: invalid user claim")
                .detail(format!("The user claim \"{}\" contains a control character.", printable(claim_name, 64))))
        }
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => {
            return Err(AuthzError::token("token rejected: missing user claim")
                .detail(format!("The user claim \"{}\" is empty.", printable(claim_name, 64))))
        }
        None | Some(Value::Null) => {
            return Err(AuthzError::token("token rejected: missing user claim")
                .detail(format!("The token has no \"{}\" claim.", printable(claim_name, 64)))
                .hint("authz.user_claim names the claim that identifies the user."))
        }
        Some(_) => {
            return Err(AuthzError::token("token rejected: missing user claim")
                .detail(format!("The user claim \"{}\" is not a string.", printable(claim_name, 64))))
        }
    };
    Ok(VerifiedToken { user_id, payload, tree: OnceCell::new(), kid: key.kid.clone(), iss, exp, nbf })
}

fn check_issuer(key: &keys::Key, settings: &settings::VerifySettings, iss: Option<&str>) -> AuthzResult<()> {
    let wrong = |why: String| AuthzError::token("token rejected: wrong issuer").detail(why);
    if let Some(required) = &key.issuer {
        if iss != Some(required.as_str()) {
            return Err(wrong(format!("Key \"{}\" only accepts tokens from its own issuer.", printable(&key.kid, 64))));
        }
    }
    let allowed = &settings.issuers;
    if !allowed.is_empty() && !iss.is_some_and(|i| allowed.iter().any(|a| a == i)) {
        return Err(wrong("The token's iss is not listed in authz.issuers.".into()));
    }
    Ok(())
}

fn check_audience(key: &keys::Key, settings: &settings::VerifySettings, aud: Option<&Value>) -> AuthzResult<()> {
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
    let allowed = &settings.audiences;
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
