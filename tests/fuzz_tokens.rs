//! Bounded fuzz of the token path through a real server. A seeded xorshift generator produces
//! random and mutated tokens (bit flips, truncations, part swaps, random base64url, hostile headers,
//! and valid tokens whose payload JSON is randomised and re-signed with the right key so that the
//! claims parser is exercised). Each goes through `authz.login($1)` and through
//! `set_config('authz.token', …, true)` + `authz.user_id()`; every outcome must be a string identity
//! or SQLSTATE 28000 (never another error, never a lost connection), both entry points must agree,
//! and afterwards the server must be alive with no crash in its log.
//!
//! FUZZ_SECONDS (default 40; `make fuzz` uses 600) bounds the run, FUZZ_SEED picks the sequence.
mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{json, Map, Value};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random_b64(rng: &mut Rng, len: usize) -> String {
    (0..len).map(|_| *rng.pick(B64URL) as char).collect()
}

/// A random string: ASCII, unicode, control characters (never NUL: PostgreSQL text cannot hold it).
fn random_string(rng: &mut Rng) -> String {
    let len = rng.below(24) as usize;
    (0..len)
        .map(|_| match rng.below(6) {
            0 => char::from_u32(1 + rng.below(31) as u32).unwrap(),
            1 => *rng.pick(&['"', '\\', '\'', '.', '/', '*', '%', ' ', '\u{202e}', '\u{feff}', 'é', '🦀']),
            _ => char::from(b'a' + rng.below(26) as u8),
        })
        .collect()
}

fn random_number(rng: &mut Rng) -> Value {
    let n = now();
    match rng.below(10) {
        0 => json!(n + 3600),
        1 => json!(n - 3600),
        2 => json!(rng.next()),
        3 => json!(-(rng.below(1 << 62) as i64)),
        4 => json!(1e308),
        5 => json!(-1e308),
        6 => json!((n + 600) as f64 + 0.5),
        7 => json!(0),
        8 => json!(u64::MAX),
        _ => json!(f64::from_bits(rng.next() & 0x7fef_ffff_ffff_ffff)),
    }
}

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 6 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.chance(2)),
        2 => random_number(rng),
        3 => json!(random_string(rng)),
        4 => json!(*rng.pick(&["NaN", "Infinity", "-Infinity", "1e999", "0x10", "", " ", "null"])),
        5 => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth + 1)).collect()),
        6 => {
            let mut m = Map::new();
            for _ in 0..rng.below(4) {
                m.insert(random_string(rng), random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
        _ => {
            // Deep nesting, sometimes beyond serde_json's recursion limit.
            let d = rng.below(300) as usize;
            serde_json::from_str(&format!("{}1{}", "[".repeat(d), "]".repeat(d))).unwrap_or(Value::Null)
        }
    }
}

/// Claims that are mostly plausible, with each registered claim sometimes of a random type.
fn random_claims(rng: &mut Rng) -> (Value, Option<String>) {
    let mut m = Map::new();
    let sub = if rng.chance(4) { random_value(rng, 0) } else { json!(*rng.pick(&["alice", "bob", "mallory"])) };
    m.insert("sub".into(), sub.clone());
    m.insert("exp".into(), if rng.chance(3) { random_value(rng, 0) } else { json!(now() + 600) });
    for claim in ["nbf", "iss", "aud", "iat"] {
        if rng.chance(3) {
            m.insert(claim.into(), random_value(rng, 0));
        }
    }
    for _ in 0..rng.below(5) {
        m.insert(random_string(rng), random_value(rng, 0));
    }
    if rng.chance(20) {
        m.remove("sub");
    }
    let expected = m.get("sub").and_then(Value::as_str).map(str::to_string);
    (Value::Object(m), expected)
}

fn hs256(header: &str, payload: &str) -> String {
    let message = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{sig}")
}

/// Keep only what PostgreSQL text can carry (no NUL).
fn clean(s: String) -> String {
    s.replace('\0', "\u{1}")
}

/// One case: the token, and the identity it must have if it is accepted (when known).
fn generate(rng: &mut Rng, good: &[String]) -> (String, Option<String>) {
    let base = rng.pick(good).clone();
    match rng.below(10) {
        // Bit flips in a valid token (within 7-bit ASCII).
        0 => {
            let mut bytes = base.into_bytes();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bytes.len() as u64) as usize;
                bytes[i] ^= 1 << rng.below(7);
            }
            (clean(String::from_utf8(bytes).unwrap()), None)
        }
        // Truncation / extension.
        1 => {
            let cut = rng.below(base.len() as u64 + 1) as usize;
            let mut t = base[..cut].to_string();
            if rng.chance(2) {
                let n = rng.below(40) as usize;
                t.push_str(&random_b64(rng, n));
            }
            (t, None)
        }
        // Part swaps between valid tokens, dropped or repeated parts.
        2 => {
            let other = rng.pick(good).clone();
            let a: Vec<&str> = base.split('.').collect();
            let b: Vec<&str> = other.split('.').collect();
            let parts: Vec<&str> = (0..1 + rng.below(5))
                .map(|_| if rng.chance(2) { a[rng.below(3) as usize] } else { b[rng.below(3) as usize] })
                .collect();
            (parts.join("."), None)
        }
        // Random base64url of random length, random dots.
        3 => {
            let max = if rng.chance(10) { 12_000 } else { 600 };
            let len = rng.below(max) as usize;
            let mut t = random_b64(rng, len).into_bytes();
            for _ in 0..rng.below(4) {
                if !t.is_empty() {
                    let i = rng.below(t.len() as u64) as usize;
                    t[i] = b'.';
                }
            }
            (String::from_utf8(t).unwrap(), None)
        }
        // Re-signed random claims: exercises the claims parser behind a valid signature.
        4..=6 => {
            let (claims, expected) = random_claims(rng);
            let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{KID}"}}"#);
            (hs256(&header, &claims.to_string()), expected)
        }
        // Random headers (alg, kid, extra fields) over plausible claims.
        7 => {
            let mut h = Map::new();
            h.insert(
                "alg".into(),
                if rng.chance(3) {
                    random_value(rng, 0)
                } else {
                    json!(*rng.pick(&["HS256", "HS384", "RS256", "ES256", "EdDSA", "none", "NONE", "PS512", "hs256"]))
                },
            );
            if !rng.chance(4) {
                h.insert("kid".into(), if rng.chance(2) { json!(KID) } else { random_value(rng, 0) });
            }
            if rng.chance(3) {
                h.insert(random_string(rng), random_value(rng, 0));
            }
            let (claims, _) = random_claims(rng);
            (hs256(&Value::Object(h).to_string(), &claims.to_string()), None)
        }
        // Raw payload text mutations re-signed: broken JSON behind a valid signature.
        8 => {
            let (claims, _) = random_claims(rng);
            let mut text = claims.to_string().into_bytes();
            for _ in 0..1 + rng.below(3) {
                if text.is_empty() {
                    break;
                }
                let i = rng.below(text.len() as u64) as usize;
                match rng.below(3) {
                    0 => {
                        text.remove(i);
                    }
                    1 => text.insert(i, *rng.pick(b"{}[],:\"\\0123456789eE+-.")),
                    _ => text[i] = 1 + rng.below(255) as u8,
                }
            }
            let header = format!(r#"{{"alg":"HS256","kid":"{KID}"}}"#);
            let message = format!("{}.{}", b64(header.as_bytes()), b64(&text));
            let sig = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
                jsonwebtoken::Algorithm::HS256,
            )
            .unwrap();
            (format!("{message}.{sig}"), None)
        }
        // Printable and control noise, whitespace and prefixes.
        _ => {
            let t = match rng.below(4) {
                0 => format!("Bearer {base}"),
                1 => format!(" {base}\n"),
                2 => random_string(rng),
                _ => (0..rng.below(200)).map(|_| char::from(1 + rng.below(126) as u8)).collect(),
            };
            (t, None)
        }
    }
}

fn classify<T>(r: Result<T, postgres::Error>, what: &str, tok: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{what}: not a server error (connection lost?): {e} for {tok:?}"));
            assert_eq!(
                db.code(),
                &SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                "{what}: unexpected error {:?} {} for token {tok:?}",
                db.code(),
                db.message()
            );
            None
        }
    }
}

#[test]
fn fuzz_token_path() {
    let seconds: u64 = std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15);
    let c = Cluster::start();
    c.create_login("app");
    c.add_test_key();
    let mut app = c.connect("app");
    let mut rng = Rng(seed.max(1));
    let good: Vec<String> = ["alice", "bob", "a", "x.y"].iter().map(|s| token(s)).collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut cases, mut accepted) = (0u64, 0u64);
    while Instant::now() < deadline {
        let (tok, expected) = generate(&mut rng, &good);
        if tok.is_empty() {
            continue; // the empty string is "no token" by definition
        }
        let mut tx = app.transaction().unwrap();
        let login =
            classify(tx.query_one("SELECT authz.login($1)", &[&tok]).map(|r| r.get::<_, String>(0)), "login", &tok);
        tx.rollback().unwrap();
        let mut tx = app.transaction().unwrap();
        tx.execute("SELECT set_config('authz.token', $1, true)", &[&tok]).unwrap();
        let uid = classify(
            tx.query_one("SELECT authz.user_id()", &[]).map(|r| r.get::<_, Option<String>>(0)),
            "user_id",
            &tok,
        );
        tx.rollback().unwrap();
        match (&login, &uid) {
            (Some(a), Some(b)) => {
                assert_eq!(Some(a), b.as_ref(), "entry points disagree for {tok:?}");
                assert!(!a.is_empty(), "empty identity for {tok:?}");
                if let Some(e) = &expected {
                    assert_eq!(a, e, "accepted with another identity than its sub: {tok:?}");
                }
                accepted += 1;
            }
            (None, None) => {}
            _ => panic!("entry points disagree for {tok:?}: {login:?} / {uid:?}"),
        }
        cases += 1;
        if cases % 500 == 0 {
            let who: Option<String> = app.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
            assert_eq!(who, None);
        }
    }
    eprintln!("fuzz_tokens: {cases} cases in {seconds} s (seed {seed}), {accepted} accepted");
    assert!(cases > 0);
    // The server is alive and nothing crashed.
    let mut su = c.superuser();
    let one: i32 = su.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    let log = c.log_contents();
    for bad in ["PANIC", "terminated by signal", "server process", "TRAP:"] {
        assert!(!log.contains(bad), "the server log reports {bad:?}:\n{}", &log[log.len().saturating_sub(4000)..]);
    }
    // Nothing but 28000 was ever raised by pg_authz: no internal error reached the log either.
    assert!(!log.contains("XX000") && !log.contains("internal error"), "internal error in the log");
}
