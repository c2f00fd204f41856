//! Verification keys: stored in `authz.keys` (never readable by PUBLIC, never a setting), loaded
//! once per cache generation. The algorithm belongs to the key, never to the token.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use pgrx::prelude::*;

use crate::pg::cache::{self, Generational};
use crate::pg::db;
use crate::pg::errors::{AuthzError, AuthzResult, OrRaise};
use crate::pg::privileged::{self, Rights};
use crate::pg::text::printable;

pub struct Key {
    pub kid: String,
    pub alg: Algorithm,
    pub verifier: Verifier,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// How a key checks a signature. HMAC keys keep ring's prepared key (the padded inner and outer
/// states), so verifying costs two hash passes over the message and nothing else.
pub enum Verifier {
    Hmac(ring::hmac::Key),
    PublicKey(DecodingKey),
}

pub struct KeySet {
    pub keys: HashMap<String, Rc<Key>>,
}

thread_local! {
    static KEYS: RefCell<Generational<Rc<KeySet>>> = const { RefCell::new(Generational::on(crate::pg::cache::Dep::Policy)) };
}

pub const ALGORITHMS: &[&str] =
    &["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

pub fn parse_alg(alg: &str) -> AuthzResult<Algorithm> {
    let parsed = match alg {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => {
            return Err(AuthzError::invalid(format!("unsupported algorithm \"{}\"", printable(alg, 32)))
                .hint(format!("Use one of {}.", ALGORITHMS.join(", "))))
        }
    };
    Ok(parsed)
}

/// The JOSE name of an algorithm (what a token's `alg` header must say).
pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
    }
}

fn hmac_algorithm(alg: Algorithm) -> Option<ring::hmac::Algorithm> {
    match alg {
        Algorithm::HS256 => Some(ring::hmac::HMAC_SHA256),
        Algorithm::HS384 => Some(ring::hmac::HMAC_SHA384),
        Algorithm::HS512 => Some(ring::hmac::HMAC_SHA512),
        _ => None,
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    hmac_algorithm(alg).is_some()
}

/// Build the verifier, refusing material that does not fit the algorithm.
fn verifier(alg: Algorithm, format: &str, material: &str) -> AuthzResult<Verifier> {
    let bad = |why: String| AuthzError::invalid(format!("key is not usable for {alg:?}")).detail(why);
    match format {
        "secret" => {
            if !is_hmac(alg) {
                return Err(bad("a shared secret can only be used with HS256, HS384 or HS512".into()));
            }
            if material.contains("-----BEGIN") {
                return Err(bad("this looks like a PEM key, not a shared secret".into())
                    .hint("Register public keys with their RS*, PS*, ES* or EdDSA algorithm."));
            }
            if material.len() < 32 {
                return Err(AuthzError::invalid("HMAC secret is too short")
                    .detail(format!(
                        "The secret has {} bytes; RFC 7518 section 3.2 requires at least 32.",
                        material.len()
                    ))
                    .hint("Generate one with: SELECT encode(gen_random_bytes(32), 'base64') (pgcrypto)."));
            }
            let hmac = hmac_algorithm(alg).ok_or_else(|| bad("not an HMAC algorithm".into()))?;
            Ok(Verifier::Hmac(ring::hmac::Key::new(hmac, material.as_bytes())))
        }
        "pem" => {
            let key = match alg {
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => DecodingKey::from_rsa_pem(material.as_bytes()),
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(material.as_bytes()),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(material.as_bytes()),
                _ => return Err(bad("a PEM key cannot be an HMAC secret".into())),
            };
            key.map(Verifier::PublicKey).map_err(|e| bad(format!("the PEM public key could not be parsed: {e}")))
        }
        "jwk" => {
            let jwk: Jwk = serde_json::from_str(material).map_err(|e| bad(format!("invalid JWK: {e}")))?;
            DecodingKey::from_jwk(&jwk).map(Verifier::PublicKey).map_err(|e| bad(format!("invalid JWK: {e}")))
        }
        other => Err(bad(format!("unknown key format {other}"))),
    }
}

/// The current key set, reloaded when any backend changed `authz.keys`.
pub fn current() -> AuthzResult<Rc<KeySet>> {
    if let Some(set) = KEYS.with(|k| k.borrow().get()) {
        return Ok(set);
    }
    let generation = KEYS.with(|k| k.borrow().current_generation());
    let set = Rc::new(load()?);
    KEYS.with(|k| k.borrow_mut().set(generation, set.clone()));
    Ok(set)
}

fn load() -> AuthzResult<KeySet> {
    let rows: Vec<(String, String, String, String, Option<String>, Option<String>)> =
        privileged::run(Rights::Superuser, || {
            Spi::connect(|client| {
                let table = client.select(
                    "SELECT kid, alg, key_format, material, issuer, audience FROM authz.keys",
                    None,
                    &[],
                )?;
                let mut rows = Vec::new();
                for row in table {
                    rows.push((
                        row.get::<String>(1)?.unwrap_or_default(),
                        row.get::<String>(2)?.unwrap_or_default(),
                        row.get::<String>(3)?.unwrap_or_default(),
                        row.get::<String>(4)?.unwrap_or_default(),
                        row.get::<String>(5)?,
                        row.get::<String>(6)?,
                    ));
                }
                Ok::<_, pgrx::spi::SpiError>(rows)
            })
        })?;
    cache::watch_policy_tables();
    let mut keys = HashMap::new();
    for (kid, alg, format, material, issuer, audience) in rows {
        // A stored key was validated when added; one that no longer parses is skipped, not fatal.
        let Ok(alg) = parse_alg(&alg) else { continue };
        let Ok(verifier) = verifier(alg, &format, &material) else { continue };
        keys.insert(kid.clone(), Rc::new(Key { kid, alg, verifier, issuer, audience }));
    }
    Ok(KeySet { keys })
}

fn validate_kid(kid: &str) -> AuthzResult<()> {
    if kid.is_empty() || kid.len() > 256 || kid.chars().any(|c| c.is_control()) {
        return Err(AuthzError::invalid("invalid key id")
            .detail("A kid must be 1 to 256 characters without control characters."));
    }
    Ok(())
}

/// What storing a key did.
#[derive(PartialEq)]
enum Stored {
    Added,
    Replaced,
    Unchanged,
}

/// Store a key. An existing kid is replaced only when asked (rotation in place); otherwise the
/// same key again is a no-op and a different one is 42710. `created_at` comes from the proposed
/// row (its default), not from a function call in the conflict clause.
fn store(
    kid: &str,
    alg: &str,
    format: &str,
    material: &str,
    issuer: Option<&str>,
    audience: Option<&str>,
    replace: bool,
) -> AuthzResult<Stored> {
    let existing = privileged::run(Rights::Superuser, || {
        db::select_one::<bool>(
            "SELECT (alg, key_format, material, issuer, audience) IS NOT DISTINCT FROM ($2, $3, $4, $5, $6)
             FROM authz.keys WHERE kid OPERATOR(pg_catalog.=) $1",
            &[kid.into(), alg.into(), format.into(), material.into(), issuer.into(), audience.into()],
        )
    })?;
    let outcome = match existing {
        None => Stored::Added,
        Some(true) if !replace => return Ok(Stored::Unchanged),
        Some(_) if replace => Stored::Replaced,
        Some(_) => {
            return Err(AuthzError::new(
                PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                format!("key \"{}\" already exists", printable(kid, 64)),
            )
            .detail("A different key is registered under this kid.")
            .hint("Pass replace => true to rotate it in place, or revoke_key() it first."))
        }
    };
    privileged::run(Rights::Superuser, || {
        Spi::run_with_args(
            "INSERT INTO authz.keys (kid, alg, key_format, material, issuer, audience) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (kid) DO UPDATE SET alg = excluded.alg, key_format = excluded.key_format,
                 material = excluded.material, issuer = excluded.issuer, audience = excluded.audience,
                 created_at = excluded.created_at",
            &[kid.into(), alg.into(), format.into(), material.into(), issuer.into(), audience.into()],
        )
    })?;
    Ok(outcome)
}

/// Register a verification key: an HMAC secret or a PEM public key. A kid already in use is
/// 42710 unless `replace` (the same key again is accepted as it is).
#[pg_extern(security_definer, name = "add_key")]
#[search_path(pg_catalog, pg_temp)]
fn add_key_or_replace(
    kid: &str,
    alg: &str,
    key: &str,
    issuer: default!(Option<&str>, "NULL"),
    audience: default!(Option<&str>, "NULL"),
    replace: default!(bool, "false"),
) -> String {
    db::require_privileged("manage pg_authz keys").or_raise();
    validate_kid(kid).or_raise();
    let algorithm = parse_alg(alg).or_raise();
    let format = if is_hmac(algorithm) { "secret" } else { "pem" };
    verifier(algorithm, format, key).or_raise();
    store(kid, alg, format, key, issuer, audience, replace).or_raise();
    kid.to_string()
}

fn jwk_algorithm(jwk: &Jwk) -> AuthzResult<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return parse_alg(&format!("{alg:?}"));
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Ok(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Ok(Algorithm::ES256),
            EllipticCurve::P384 => Ok(Algorithm::ES384),
            _ => Err(AuthzError::invalid("unsupported elliptic curve in JWK")),
        },
        AlgorithmParameters::OctetKeyPair(_) => Ok(Algorithm::EdDSA),
        AlgorithmParameters::OctetKey(_) => {
            Err(AuthzError::invalid("symmetric (oct) keys are not imported from a JWKS")
                .hint("Use authz.add_key() for HMAC secrets."))
        }
    }
}

/// One JWKS entry, checked: `(kid, alg, material)` or why it cannot verify tokens.
fn usable_jwk(index: usize, key: &serde_json::Value) -> Result<(String, String, String), String> {
    let name = key.get("kid").and_then(|k| k.as_str()).map(str::to_string);
    let label = name.as_deref().map(|k| format!("key \"{}\"", printable(k, 64))).unwrap_or(format!("key #{index}"));
    let Some(kid) = name else { return Err(format!("{label}: no kid")) };
    validate_kid(&kid).map_err(|e| format!("{label}: {}", e.message))?;
    if let Some(usage) = key.get("use").and_then(|u| u.as_str()) {
        if usage != "sig" {
            return Err(format!("{label}: \"use\": \"{}\" (not a signing key)", printable(usage, 16)));
        }
    }
    let jwk: Jwk = serde_json::from_value(key.clone()).map_err(|e| format!("{label}: unsupported ({e})"))?;
    let alg = jwk_algorithm(&jwk).map_err(|e| format!("{label}: {}", e.message))?;
    let material = serde_json::to_string(&jwk).map_err(|e| format!("{label}: {e}"))?;
    verifier(alg, "jwk", &material).map_err(|e| format!("{label}: {}", e.message))?;
    Ok((kid, format!("{alg:?}"), material))
}

/// Import the signing keys of an identity provider's JWKS, keeping each `kid`. Keys pg_authz
/// cannot verify tokens with (`"use": "enc"`, RSA-OAEP, P-521, symmetric keys) are skipped with a
/// NOTICE naming their kid; the call fails (22023) only when no usable key remains, saying why
/// for each. Returns the kids imported. `replace` as for add_key().
#[pg_extern(security_definer, name = "add_jwks")]
#[search_path(pg_catalog, pg_temp)]
fn add_jwks_or_replace(jwks: pgrx::JsonB, replace: default!(bool, "false")) -> Vec<String> {
    db::require_privileged("manage pg_authz keys").or_raise();
    let Some(keys) = jwks.0.get("keys").and_then(|k| k.as_array()) else {
        AuthzError::invalid("not a JWKS document").hint("Expected {\"keys\": [ ... ]}.").raise()
    };
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match usable_jwk(i + 1, key) {
            Ok(k) => usable.push(k),
            Err(why) => skipped.push(why),
        }
    }
    if usable.is_empty() {
        AuthzError::invalid("the JWKS holds no key pg_authz can verify tokens with")
            .detail(if skipped.is_empty() { "It holds no keys.".to_string() } else { skipped.join("; ") })
            .hint("pg_authz verifies RS*, PS*, ES256, ES384 and EdDSA signatures; HMAC secrets go through add_key().")
            .raise();
    }
    for why in &skipped {
        pgrx::notice!("skipping {why}");
    }
    for (kid, alg, material) in &usable {
        store(kid, alg, "jwk", material, None, None, replace).or_raise();
    }
    usable.into_iter().map(|(kid, _, _)| kid).collect()
}

/// The 0.2.0 entry points' C symbols, for a database whose SQL is still 0.2.0 or older while this
/// library is loaded (between installing the package and `ALTER EXTENSION pg_authz UPDATE`):
/// they keep working, without `replace`, instead of failing to unbox an argument they lack.
#[pg_extern(sql = false)]
fn add_key(
    kid: &str,
    alg: &str,
    key: &str,
    issuer: default!(Option<&str>, "NULL"),
    audience: default!(Option<&str>, "NULL"),
) -> String {
    add_key_or_replace(kid, alg, key, issuer, audience, false)
}

#[pg_extern(sql = false)]
fn add_jwks(jwks: pgrx::JsonB) -> Vec<String> {
    add_jwks_or_replace(jwks, false)
}

/// Remove a key: tokens signed with it stop verifying in every backend at commit.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_key(kid: &str) -> bool {
    db::require_privileged("manage pg_authz keys").or_raise();
    // No row limit: a DELETE run with a limit never fires the statement-level invalidation trigger.
    let removed = privileged::run(Rights::Superuser, || {
        Spi::connect_mut(|client| {
            client
                .update("DELETE FROM authz.keys WHERE kid OPERATOR(pg_catalog.=) $1 RETURNING kid", None, &[kid.into()])
                .map(|t| t.len())
        })
    })
    .or_raise();
    removed > 0
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use pgrx::prelude::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, sub: &str) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_string());
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
        jsonwebtoken::encode(&header, &serde_json::json!({"sub": sub, "exp": exp}), key).unwrap()
    }

    /// An identity provider's JWKS (EC P-256 and Ed25519 keys, each with its kid) is imported and
    /// tokens signed by either key verify; a token naming one kid but signed by the other does not.
    #[pg_test]
    fn jwks_import_verifies_ec_and_okp_tokens() {
        let rng = SystemRandom::new();
        let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref(), &rng).unwrap();
        let point = ec.public_key().as_ref();
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
        let jwks = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "idp-ec", "use": "sig", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "idp-ed", "x": b64(ed.public_key().as_ref())}
        ]});
        let kids =
            Spi::get_one_with_args::<Vec<String>>("SELECT authz.add_jwks($1::jsonb)", &[pgrx::JsonB(jwks).into()])
                .unwrap()
                .unwrap();
        assert_eq!(kids, vec!["idp-ec", "idp-ed"]);
        let ec_key = EncodingKey::from_ec_der(ec_pkcs8.as_ref());
        let ed_key = EncodingKey::from_ed_der(ed_pkcs8.as_ref());
        let verify = |t: &str| Spi::get_one_with_args::<String>("SELECT authz.verify_token($1)", &[t.into()]);
        assert_eq!(verify(&sign(Algorithm::ES256, "idp-ec", &ec_key, "ada")).unwrap().as_deref(), Some("ada"));
        assert_eq!(verify(&sign(Algorithm::EdDSA, "idp-ed", &ed_key, "bo")).unwrap().as_deref(), Some("bo"));
        let algs = Spi::get_one::<Vec<String>>("SELECT array_agg(alg ORDER BY kid) FROM authz.keys").unwrap().unwrap();
        assert_eq!(algs, vec!["ES256", "EdDSA"]);
    }

    #[pg_test]
    #[should_panic(expected = "token rejected: algorithm not allowed")]
    fn token_signed_with_another_keys_algorithm_is_rejected() {
        let rng = SystemRandom::new();
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
        let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": b64(ed.public_key().as_ref())}]});
        Spi::run_with_args("SELECT authz.add_jwks($1::jsonb)", &[pgrx::JsonB(jwks).into()]).unwrap();
        let hs = sign(Algorithm::HS256, "k", &EncodingKey::from_secret(ed.public_key().as_ref()), "mallory");
        Spi::run_with_args("SELECT authz.verify_token($1)", &[hs.as_str().into()]).unwrap();
    }

    #[pg_test]
    #[should_panic(expected = "HMAC secret is too short")]
    fn short_hmac_secrets_are_refused() {
        Spi::run("SELECT authz.add_key('short', 'HS256', 'only-twenty-bytes!!!')").unwrap();
    }
}
