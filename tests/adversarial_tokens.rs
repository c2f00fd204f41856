//! Adversarial tokens: forged and unsigned tokens, algorithm confusion, hostile `kid`s, validity
//! window / issuer / audience, oversized and deeply nested tokens, wrong claim types, duplicate
//! claims, transport noise. Every rejection must be SQLSTATE 28000 on both entry points
//! (`authz.login($1)` and `set_config('authz.token', …)` + `authz.user_id()`), and neither the
//! error (message, detail, hint) nor the server log may echo the token or any key material.
mod common;

use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

// Fixed test key pairs, generated once with openssl for this file only (never used anywhere else):
// `openssl genrsa 2048`, `openssl ecparam -genkey -name prime256v1 -noout | openssl pkcs8 -topk8 -nocrypt`,
// `openssl genpkey -algorithm ed25519`, and a second RSA key playing the attacker's own key.
const RSA_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCp/pEIT7+IRYba\n\
7eG8f0fc3X9bUwm9Y7o6pFU6OccU0Z+s5KmUt9kMxHQ2OWTJ+h5xYKQtyIdPt1kq\n\
eOz6p7+bXs3JlcVJQFIHGqdH+irw7qZJT26xgsYEz68oNslHJebNyzvZrXVD1wA7\n\
BuSiCZKUYe3QVZwgfZqhd8AXIrPsiYRCIWkTrj6rnFmA3upApbxwuKV+K3bQ4QFe\n\
xhB0w/dhgW4m0Jp3NzmPZlRoQ3GlAEDO4m9KAZjm1tbtNSE4tJ7+QUsLU9dVU5vI\n\
Zy119uWmwm1fq7CUheQSC6br2qNAI8qln3D7KInP/oMY9KzSI90Bb2sPFJ5vq/4N\n\
9QsFKmhFAgMBAAECggEABJjT+rXPX+PDbxGuQE7v1k7uFf3jnkm/XD0b6ehslAlM\n\
KFyBonorRi9c1ieMrHKVVqsOnYdV82epo16kR+333j980KX6cQ3qefM0UVu4RA4s\n\
FIDvpSC8cp5cJfn/TOt/N5L2oh8Q8/3xLWd1ENWx703LpM3f3DgRUar/mJCRbYTK\n\
G9bijygthap8yznZ5cu78Q95UVcZMhQQUlhgN73HfsXw+x0sK0/mQvCc7q04W3Fn\n\
MV70nc9Stidt5A9/88ke4AyLJQRvjCBTT6YflUgxDZbSLlDwT9au/1S+SOgcWBBd\n\
WTcltb9KJEH/I1tQ0XpfAvoHmW6sFOIpbWHPJSUtOQKBgQDt1cZuF+yDFryz6dS3\n\
AjZiYica0UGL6WLSo197PQ1rLRrW21aB2Shdn54CJytRMYc3kS1ocIlQxf/cadEZ\n\
V+9LzaAwI4BrrznXmW5HnahpF5+b1B/jYjMzabPp3MriMLswo95Q5RF53FPuDDP4\n\
rmacY5+MZfIvls79Rn2jPWVxXQKBgQC2+lmM8Xd1w1AIuTecj+veZulP6Vd6Itwy\n\
gDhi3DR5ITv6V8ThQm5mz8Tfe9OwaD2KH1C1af/9FxrvduAll+K7teU4lMGJG4Uj\n\
IFsytJ/DVbMVj5LJ8UkSYBVY7xTGDfhXVP5rLdDgRtlc2BuSsX0eVO5yJhR0nfcR\n\
PXJ9fYxcCQKBgQCr+q94ILiXujNN7cIxa9ojnlIkpDg/kc4x/o0msmknnQARaZ3O\n\
W1dDDA7YA7bhCW17kvFA2k+RJvvzSFk5eErDh7dT1/ge5iBvdLU3+Bs1ky2JIwTE\n\
Cdh4TvEYJN5YXWCetYAnAt12Pwo50n0qUAJHCArxHS7ZlrWqk/R5vAXEyQKBgBmJ\n\
yZPlY9H456PADiX45GfPH0M7Ay2Vzfvyb2xE5cH+RHvFYkI6XmRVHVo/0yTs96He\n\
iwo2+Daf0e+YPOKiV0/xrEOAZ562S5fCfVgPY7kErhEVT9yFo7g/1trpy5F1A7NU\n\
tonJBD05Rj8yHm8T/K2OFxWxgOth3Mj4NZGUQ1HZAoGAZx9VVBWRKm46rcv1hbbA\n\
vlUy2o/Rb6M+mBedVVe7oDupsubapLhbLWegwlv7UeQAN85CxQxgn1aIdgsuMnQr\n\
Z2w4khU0zgo2qIecedIdGGk575w0dhCfwJ9L/GfJpRGnghr3Tr3HfbLx0VlJyew8\n\
tDTRD7gH72DLVrXJg9KNGOM=\n\
-----END PRIVATE KEY-----\n\
";

const RSA_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqf6RCE+/iEWG2u3hvH9H\n\
3N1/W1MJvWO6OqRVOjnHFNGfrOSplLfZDMR0NjlkyfoecWCkLciHT7dZKnjs+qe/\n\
m17NyZXFSUBSBxqnR/oq8O6mSU9usYLGBM+vKDbJRyXmzcs72a11Q9cAOwbkogmS\n\
lGHt0FWcIH2aoXfAFyKz7ImEQiFpE64+q5xZgN7qQKW8cLilfit20OEBXsYQdMP3\n\
YYFuJtCadzc5j2ZUaENxpQBAzuJvSgGY5tbW7TUhOLSe/kFLC1PXVVObyGctdfbl\n\
psJtX6uwlIXkEgum69qjQCPKpZ9w+yiJz/6DGPSs0iPdAW9rDxSeb6v+DfULBSpo\n\
RQIDAQAB\n\
-----END PUBLIC KEY-----\n\
";

const ATTACKER_RSA_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC2g2MvenyyVE+w\n\
fWAvACRvIlgwExZ12Wq603uwuQ4wsNMzsiJdueNhfAgnR4nTdwwXPUQHRT8LNWZG\n\
HvBZTP/qfQbSUMKZ/gIaDA/j71FjjD122UseEVLfNROgIjHet8352vImA+IUta71\n\
8Mu9dETy/k2JcyZhpl8/abgGZi5LfJ4olPTAxz8GECq4kji6XFyhR+CeqiNPgOS3\n\
qFxuSbbj/dqELlJES2kVkGgxqa5kLJfRw82mQ1z5XhucquZpiSTbtfjEUTzfywHT\n\
RvfYghPnnJjyHiNWTYkwQwMB9McnqTKUlrdDwI4IUam5llJ31woiqeyDN956mqe6\n\
XXA5YAsHAgMBAAECggEAHo7/I2rxx/X/5cAIQ7ZVY1ovw9TeVNsTWLaiJiPF8XcZ\n\
1bUEtgaywJbA0rrSo9px5s42PrVkad8GAcWaXola7AsFAl/NRXVXKr9MRdDDItTP\n\
Ub/uKNmjs4WyhIRVL0I9NZFoK99IkkkdQ0aPBmiaRsk3eEUUbxMpLXfo/QFMzQyG\n\
xYUjSiGoQP90IbAPtA+11khwL/TVEt6TCGDAejFqzuN9sLe0qZUYSNW+xbBaac0O\n\
+URfBgAGDJPNk/4LvjLKoDNlr4ybkICKR8RsaL/7RfxO+01ylIhDCGsGsIwZzWY3\n\
OmAupSLXhIxyJbmJS0yGU42x5nGk/eCi2Qv75uqIeQKBgQDtlZlNNwhxAF7sFpsI\n\
ZuYj42aDOcn6PCEP/+xov9tpDo4m/LCBFY1VQRsSD80TyyxYNzx8CNnlkiDBtGA5\n\
kjubPnNgE0E0vaJs18r4AZNh4PCwCvG5tgtUEPzxqJLO95t+5j+wLXEvB2YgDbEl\n\
i6TtIexSIL6J2ApDDiCP6GVR7QKBgQDEqQI28PVdWK8YZDrcJgdWKTcXcQe0Pvx+\n\
fb2oiWicisADUB7DCbM7bCwuyavjdCDqaxE9K03LwCFf+luecNM49nM9/GNpFx75\n\
nur53PFC3AK+qVbIWKOkyXbxDAx099nlCJIfP+VkGo+CD9ko+9TBYlpSyBwp7c/b\n\
dAQ1eR7CQwKBgAZA4skagrletiDms2v0MWiOartXgQ56GLCwHsvfCOpp/KngCtFK\n\
/O5aiVjfW5mCxocH5SqqnPmi8APJOKMrSzBZ43WK7DN0LltJDsmaWQPBhPRNRXGK\n\
7h9nVxERS9PwxoH/k3uSpqEDQ9fiJGCFnXC0bOD4hathKVv8ejTvfAM9AoGBAJHL\n\
YjLtDFp5xsVkeSaAouvDfm5Ig5ejInl8KsDprb5wNs299jBN3qxtE4xUQrRLgaOI\n\
YK1ijzhAZf3Lk2Sw7EbMnr8Tf3eHhpU0tasrm0kf5oEG9alt3VPrb9xgPFPy830S\n\
j5HPQvalokKgETSLDj2X9rJsXETRY0mkhwJFmwIVAoGAP3oUzt55R9kwwo3b1YXY\n\
us4pR0kFK7tikbqGxwAxAmLJ3s1f2Zq9pR90m4EOvCXqRQ02o10AEVifB36FF7QQ\n\
8jl2AdhtUZxSv+IBM/c0Ixq810hKQnlVfkPGtfrUr5QjxNWu4jlO3dd1SEPAnQkK\n\
U824IWgaudKVJmoMY/3E+Zs=\n\
-----END PRIVATE KEY-----\n\
";

const EC_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5VCbx3WOV9KpIyF7\n\
pximdr+twF9/f4IoU7J2f2A44/ehRANCAATgH4ncrnhAuC8/zipsCcbA+8wqz6r7\n\
JzaT5yX6tQOOIZUtqPJlv8oiR27xkJShVXh6yq6bPn0OE/p+NPdOVO70\n\
-----END PRIVATE KEY-----\n\
";

const EC_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4B+J3K54QLgvP84qbAnGwPvMKs+q\n\
+yc2k+cl+rUDjiGVLajyZb/KIkdu8ZCUoVV4esqumz59DhP6fjT3TlTu9A==\n\
-----END PUBLIC KEY-----\n\
";

const ED_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEILHJMULbDPc3yB82oc26wlQyNqqdHB3LEh580bKuCU/o\n\
-----END PRIVATE KEY-----\n\
";

const ED_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MCowBQYDK2VwAyEAitU2oU4SyzFfCUn7nMGkntI9mUbmOeXgqVKPzv6ZPoA=\n\
-----END PUBLIC KEY-----\n\
";

/// The attacker's RSA modulus (public part of ATTACKER_RSA_PRIVATE) as a JWK `n`.
const ATTACKER_N: &str = "toNjL3p8slRPsH1gLwAkbyJYMBMWddlqutN7sLkOMLDTM7IiXbnjYXwIJ0eJ03cMFz1EB0U_CzVmRh7wWUz_6n0G0lDCmf4CGgwP4-9RY4w9dtlLHhFS3zUToCIx3rfN-dryJgPiFLWu9fDLvXRE8v5NiXMmYaZfP2m4BmYuS3yeKJT0wMc_BhAquJI4ulxcoUfgnqojT4Dkt6hcbkm24_3ahC5SREtpFZBoMamuZCyX0cPNpkNc-V4bnKrmaYkk27X4xFE838sB00b32IIT55yY8h4jVk2JMEMDAfTHJ6kylJa3Q8COCFGpuZZSd9cKIqnsgzfeepqnul1wOWALBw";

const ALICE_SESSIONS: [i64; 4] = [1, 2, 5, 6];

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn hmac_key(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap()
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap()
}

/// A token from a hand-written header and payload (raw JSON text, so duplicate keys and odd
/// shapes survive), signed over exactly those bytes.
fn raw(header: &str, payload: &str, alg: Algorithm, key: &EncodingKey) -> String {
    raw_bytes(header.as_bytes(), payload.as_bytes(), alg, key)
}

fn raw_bytes(header: &[u8], payload: &[u8], alg: Algorithm, key: &EncodingKey) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{sig}")
}

/// HS256 with the registered test secret over a raw payload, header `{"alg":"HS256","kid":"it-key"}`.
fn hs(payload: &str) -> String {
    raw(&format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{KID}"}}"#), payload, Algorithm::HS256, &hmac_key(SECRET))
}

fn signed(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn alice_claims() -> Value {
    json!({"sub": "alice", "exp": now() + 3600, "iat": now()})
}

/// Everything that must never show up in an error or in the server log.
fn key_material() -> Vec<String> {
    let mut out = vec![SECRET.to_string()];
    for pem in [RSA_PRIVATE, RSA_PUBLIC, ATTACKER_RSA_PRIVATE, EC_PRIVATE, EC_PUBLIC, ED_PRIVATE, ED_PUBLIC] {
        out.push(pem.to_string());
        out.extend(pem.lines().filter(|l| !l.starts_with("-----") && l.len() >= 16).map(str::to_string));
    }
    out
}

/// The pieces of a token text that must not be echoed: the whole text and every long part.
fn token_fragments(tok: &str) -> Vec<String> {
    let mut out = Vec::new();
    if tok.len() >= 12 {
        out.push(tok.to_string());
    }
    for part in tok.split(['.', ' ', '\t', '\n']) {
        if part.len() >= 16 {
            out.push(part.to_string());
        }
    }
    out
}

fn assert_no_leak(e: &postgres::Error, tok: &str, what: &str) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("{what}: not a server error: {e}"));
    let text = format!("{}\n{}\n{}", db.message(), db.detail().unwrap_or(""), db.hint().unwrap_or(""));
    for frag in token_fragments(tok) {
        assert!(!text.contains(&frag), "{what}: the error echoes the token: {text}");
    }
    for secret in key_material() {
        assert!(!text.contains(&secret), "{what}: the error echoes key material: {text}");
    }
}

struct Env {
    c: Cluster,
    app: Client,
    /// Every token rejected so far: checked against the server log at the end.
    rejected: Vec<String>,
}

impl Env {
    /// Fixture + the HS256 test key + RS256 ("rsa"), PS256 ("ps", same RSA key), ES256 ("ec") and
    /// EdDSA ("ed") public keys, and login `app` mapped to principal `svc` (viewer on project 2) so a
    /// silent fall-back to the login identity would show.
    fn start() -> Env {
        let c = platform(&["app"]);
        let mut su = c.superuser();
        for (kid, alg, pem) in [
            ("rsa", "RS256", RSA_PUBLIC),
            ("ps", "PS256", RSA_PUBLIC),
            ("ec", "ES256", EC_PUBLIC),
            ("ed", "EdDSA", ED_PUBLIC),
        ] {
            su.execute("SELECT authz.add_key($1, $2, $3)", &[&kid, &alg, &pem]).unwrap();
        }
        su.batch_execute(
            "SELECT authz.create_principal('svc', 'user', 'app');
             SELECT authz.assign_role('svc', 'viewer', 'project', '2');",
        )
        .unwrap();
        let app = c.connect("app");
        Env { c, app, rejected: Vec::new() }
    }

    /// Both entry points; returns (login, user_id) results.
    fn present(&mut self, tok: &str) -> (Result<String, postgres::Error>, Result<Option<String>, postgres::Error>) {
        present(&mut self.app, tok)
    }

    /// The token must be accepted on both entry points as `sub`, and confine to `sub`'s rows.
    fn accepted(&mut self, tok: &str, what: &str) -> String {
        let (login, uid) = self.present(tok);
        let login = login.unwrap_or_else(|e| panic!("{what}: login rejected: {e:?}"));
        let uid = uid.unwrap_or_else(|e| panic!("{what}: user_id rejected: {e:?}"));
        assert_eq!(Some(login.clone()), uid, "{what}");
        self.assert_alive();
        login
    }

    /// The token must be 28000 on both entry points, echo nothing, and not fall back. Returns the
    /// message of the error.
    fn rejected(&mut self, tok: &str, what: &str) -> String {
        let (login, uid) = self.present(tok);
        let e1 = login.err().unwrap_or_else(|| panic!("{what}: authz.login accepted it"));
        let e2 = uid.err().unwrap_or_else(|| panic!("{what}: authz.user_id accepted it"));
        for e in [&e1, &e2] {
            assert_eq!(e.code(), Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION), "{what}: {e:?}");
            assert_no_leak(e, tok, what);
        }
        self.rejected.push(tok.to_string());
        self.assert_alive();
        e1.as_db_error().unwrap().message().to_string()
    }

    /// The connection survives, and without a token it is back on the login's identity.
    fn assert_alive(&mut self) {
        let who: Option<String> = self.app.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
        assert_eq!(who.as_deref(), Some("svc"));
    }

    /// No rejected token and no key material in the server log; no crash either.
    fn assert_log_clean(&self) {
        let log = self.c.log_contents();
        for tok in &self.rejected {
            for frag in token_fragments(tok) {
                assert!(!log.contains(&frag), "the server log holds a rejected token fragment {frag:?}");
            }
        }
        for secret in key_material() {
            assert!(!log.contains(&secret), "the server log holds key material");
        }
        assert!(!log.contains("PANIC") && !log.contains("terminated by signal"), "server crashed:\n{log}");
    }
}

fn present(
    client: &mut Client,
    tok: &str,
) -> (Result<String, postgres::Error>, Result<Option<String>, postgres::Error>) {
    let mut tx = client.transaction().unwrap();
    let login = tx.query_one("SELECT authz.login($1)", &[&tok]).map(|r| r.get::<_, String>(0));
    tx.rollback().unwrap();
    let mut tx = client.transaction().unwrap();
    tx.execute("SELECT set_config('authz.token', $1, true)", &[&tok]).unwrap();
    let uid = tx.query_one("SELECT authz.user_id()", &[]).map(|r| r.get::<_, Option<String>>(0));
    tx.rollback().unwrap();
    (login, uid)
}

fn message_of<T: std::fmt::Debug>(r: Result<T, postgres::Error>) -> (SqlState, String) {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
            (db.code().clone(), db.message().to_string())
        }
    }
}

#[test]
fn forged_signatures_are_rejected() {
    let mut env = Env::start();
    let good = token("alice");
    assert_eq!(env.accepted(&good, "control"), "alice");
    let parts: Vec<&str> = good.split('.').collect();
    let bob_payload = b64(json!({"sub": "bob", "exp": now() + 3600}).to_string().as_bytes());
    let other_sig = token("bob").split('.').nth(2).unwrap().to_string();
    let forged = [
        ("payload swapped under alice's signature", format!("{}.{bob_payload}.{}", parts[0], parts[2])),
        ("bob's signature on alice's payload", format!("{}.{}.{other_sig}", parts[0], parts[1])),
        ("signature removed", format!("{}.{}.", parts[0], parts[1])),
        ("signature truncated", format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20])),
        ("signature extended", format!("{}.{}.{}AAAA", parts[0], parts[1], parts[2])),
        ("signature of zero bytes", format!("{}.{}.{}", parts[0], parts[1], b64(&[0u8; 32]))),
        ("signed with another secret", sign(&alice_claims(), Some(KID), "attacker-secret-that-is-long-enough-0123")),
        ("signed with the kid as secret", sign(&alice_claims(), Some(KID), KID)),
        ("signed with an empty secret", sign(&alice_claims(), Some(KID), "")),
    ];
    for (what, tok) in forged {
        let msg = env.rejected(&tok, what);
        assert!(msg.starts_with("token rejected: "), "{what}: {msg}");
    }
    // The last character of a 32-byte signature carries 4 bits and 2 padding bits: flipping it
    // either changes the signature or makes it non-canonical base64url. Both are a bad signature
    // (a lenient decoder would accept two different token strings for one signature).
    let last = parts[2].chars().last().unwrap();
    for flipped in ["A", "B", "E", "F"].iter().filter(|c| !c.starts_with(last)) {
        let tok = format!("{}.{}.{}{flipped}", parts[0], parts[1], &parts[2][..parts[2].len() - 1]);
        assert_eq!(env.rejected(&tok, "last signature character flipped"), "token rejected: bad signature");
    }
    env.assert_log_clean();
}

#[test]
fn unsigned_and_malformed_alg_headers_are_rejected() {
    let mut env = Env::start();
    let payload = alice_claims().to_string();
    let key = hmac_key(SECRET);
    for alg in ["none", "None", "NONE", "nOnE"] {
        for kid in ["", r#","kid":"it-key""#] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"{kid}}}"#);
            let base = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
            let unsigned = format!("{base}.");
            let msg = env.rejected(&unsigned, &format!("alg {alg} {kid}"));
            assert_eq!(msg, "token rejected: algorithm not allowed");
            // With a valid HS256 signature over the same bytes: still refused, alg says none.
            let sig = jsonwebtoken::crypto::sign(base.as_bytes(), &key, Algorithm::HS256).unwrap();
            env.rejected(&format!("{base}.{sig}"), &format!("alg {alg} {kid} with an HMAC signature"));
        }
    }
    // Header shapes: no alg, alg of the wrong type, an unknown alg, the right alg in another case.
    for header in [
        r#"{"typ":"JWT","kid":"it-key"}"#,
        r#"{"alg":null,"kid":"it-key"}"#,
        r#"{"alg":256,"kid":"it-key"}"#,
        r#"{"alg":["HS256"],"kid":"it-key"}"#,
        r#"{"alg":"","kid":"it-key"}"#,
        r#"{"alg":"hs256","kid":"it-key"}"#,
        r#"{"alg":"HS256 ","kid":"it-key"}"#,
        r#"{"alg":"HS1","kid":"it-key"}"#,
        r#"{"alg":"HS256","kid":7}"#,
        r#"{"alg":"HS256","kid":{"a":1}}"#,
        r#"["alg","HS256"]"#,
        r#""HS256""#,
    ] {
        let base = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = jsonwebtoken::crypto::sign(base.as_bytes(), &key, Algorithm::HS256).unwrap();
        env.rejected(&format!("{base}.{sig}"), header);
    }
    env.assert_log_clean();
}

#[test]
fn asymmetric_keys_positive_controls() {
    let mut env = Env::start();
    let claims = alice_claims();
    let cases = [
        ("RS256 with kid", signed(Algorithm::RS256, Some("rsa"), &claims, &rsa_key())),
        ("PS256 with kid", signed(Algorithm::PS256, Some("ps"), &claims, &rsa_key())),
        ("ES256 with kid", signed(Algorithm::ES256, Some("ec"), &claims, &ec_key())),
        ("EdDSA with kid", signed(Algorithm::EdDSA, Some("ed"), &claims, &ed_key())),
        // Without a kid: the only key of the token's algorithm.
        ("RS256 without kid", signed(Algorithm::RS256, None, &claims, &rsa_key())),
        ("ES256 without kid", signed(Algorithm::ES256, None, &claims, &ec_key())),
        ("EdDSA without kid", signed(Algorithm::EdDSA, None, &claims, &ed_key())),
        ("HS256 without kid", signed(Algorithm::HS256, None, &claims, &hmac_key(SECRET))),
    ];
    for (what, tok) in cases {
        assert_eq!(env.accepted(&tok, what), "alice", "{what}");
        // ... and the rows are alice's.
        let mut tx = env.app.transaction().unwrap();
        tx.execute("SELECT set_config('authz.token', $1, true)", &[&tok]).unwrap();
        assert_eq!(visible(&mut tx).unwrap(), (ALICE_SESSIONS.to_vec(), 40), "{what}");
        let kid: String = tx.query_one("SELECT authz.identity()->>'kid'", &[]).unwrap().get(0);
        assert!(!kid.is_empty(), "{what}");
        tx.rollback().unwrap();
    }
    // A tampered payload under a real asymmetric signature fails for each algorithm.
    for (alg, kid, key) in [
        (Algorithm::RS256, "rsa", rsa_key()),
        (Algorithm::PS256, "ps", rsa_key()),
        (Algorithm::ES256, "ec", ec_key()),
        (Algorithm::EdDSA, "ed", ed_key()),
    ] {
        let good = signed(alg, Some(kid), &claims, &key);
        let p: Vec<&str> = good.split('.').collect();
        let bob = b64(json!({"sub": "bob", "exp": now() + 3600}).to_string().as_bytes());
        let msg = env.rejected(&format!("{}.{bob}.{}", p[0], p[2]), &format!("{alg:?} tampered"));
        assert_eq!(msg, "token rejected: bad signature", "{alg:?}");
    }
    env.assert_log_clean();
}

#[test]
fn algorithm_confusion_is_rejected() {
    let mut env = Env::start();
    let payload = alice_claims().to_string();
    // HS256 "signed" with the public key text (the classic confusion), for every public key, with
    // and without the trailing newline, naming the asymmetric key's kid or no kid at all.
    for (kid, pem) in [("rsa", RSA_PUBLIC), ("ps", RSA_PUBLIC), ("ec", EC_PUBLIC), ("ed", ED_PUBLIC)] {
        for secret in [pem, pem.trim_end()] {
            let key = hmac_key(secret);
            let with_kid =
                raw(&format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#), &payload, Algorithm::HS256, &key);
            let msg = env.rejected(&with_kid, &format!("HS256 with {kid}'s public PEM as secret"));
            assert_eq!(msg, "token rejected: algorithm not allowed", "{kid}");
            // No kid: the only HS256 key is the test secret, which this HMAC does not match.
            let no_kid = raw(r#"{"alg":"HS256","typ":"JWT"}"#, &payload, Algorithm::HS256, &key);
            let msg = env.rejected(&no_kid, &format!("HS256 without kid with {kid}'s PEM"));
            assert_eq!(msg, "token rejected: bad signature", "{kid}");
            for alg in [Algorithm::HS384, Algorithm::HS512] {
                let tok = raw(&format!(r#"{{"alg":"{alg:?}","kid":"{kid}"}}"#), &payload, alg, &key);
                env.rejected(&tok, &format!("{alg:?} with {kid}'s PEM"));
            }
        }
    }
    // A public key can never be registered as an HMAC secret in the first place.
    let mut su = env.c.superuser();
    let (state, msg) = message_of(su.execute("SELECT authz.add_key('confused', 'HS256', $1)", &[&RSA_PUBLIC]));
    assert_eq!(state, SqlState::INVALID_PARAMETER_VALUE, "{msg}");
    env.assert_log_clean();
}

#[test]
fn kid_naming_a_key_of_another_type() {
    let mut env = Env::start();
    let claims = alice_claims();
    let cases = [
        ("RS256 token, kid of the HS256 key", signed(Algorithm::RS256, Some(KID), &claims, &rsa_key())),
        ("RS256 token, kid of the PS256 key", signed(Algorithm::RS256, Some("ps"), &claims, &rsa_key())),
        ("PS256 token, kid of the RS256 key", signed(Algorithm::PS256, Some("rsa"), &claims, &rsa_key())),
        ("RS384 token, kid of the RS256 key", signed(Algorithm::RS384, Some("rsa"), &claims, &rsa_key())),
        ("ES256 token, kid of the EdDSA key", signed(Algorithm::ES256, Some("ed"), &claims, &ec_key())),
        ("EdDSA token, kid of the ES256 key", signed(Algorithm::EdDSA, Some("ec"), &claims, &ed_key())),
        ("HS256 token, kid of the EdDSA key", signed(Algorithm::HS256, Some("ed"), &claims, &hmac_key(SECRET))),
        ("HS512 token, kid of the HS256 key", signed(Algorithm::HS512, Some(KID), &claims, &hmac_key(SECRET))),
    ];
    for (what, tok) in cases {
        let msg = env.rejected(&tok, what);
        assert_eq!(msg, "token rejected: algorithm not allowed", "{what}");
    }
    // The attacker's own RSA key: a RS256 token naming the registered key, or carrying its own
    // public key in the header (`jwk`, `jku`, `x5u`): never trusted.
    let attacker = EncodingKey::from_rsa_pem(ATTACKER_RSA_PRIVATE.as_bytes()).unwrap();
    let payload = claims.to_string();
    for header in [
        r#"{"alg":"RS256","kid":"rsa"}"#.to_string(),
        r#"{"alg":"RS256"}"#.to_string(),
        format!(r#"{{"alg":"RS256","jwk":{{"kty":"RSA","e":"AQAB","n":"{ATTACKER_N}"}}}}"#),
        format!(r#"{{"alg":"RS256","kid":"rsa","jwk":{{"kty":"RSA","e":"AQAB","n":"{ATTACKER_N}","kid":"rsa"}}}}"#),
        r#"{"alg":"RS256","jku":"https://attacker.example/jwks.json"}"#.to_string(),
        r#"{"alg":"RS256","x5u":"https://attacker.example/cert.pem"}"#.to_string(),
    ] {
        let msg = env.rejected(&raw(&header, &payload, Algorithm::RS256, &attacker), &header);
        assert_eq!(msg, "token rejected: bad signature", "{header}");
    }
    env.assert_log_clean();
}

#[test]
fn hostile_kids_are_rejected_safely() {
    let mut env = Env::start();
    let payload = alice_claims().to_string();
    let key = hmac_key(SECRET);
    let long = "k".repeat(10_000);
    let kids: Vec<(&str, String)> = vec![
        ("double quote", r#"it-key\""#.to_string()),
        ("single quote", "it-key'".to_string()),
        ("sql injection", "'; DELETE FROM authz.keys; --".to_string()),
        ("slash", "it-key/".to_string()),
        ("dot dot", "../it-key".to_string()),
        ("path traversal", "../../../../etc/passwd".to_string()),
        ("absolute path", "/dev/zero".to_string()),
        ("control characters", r"it-key\u0001\u0007\u001b[31m\n\r\t".to_string()),
        ("escape sequence", r"\u001b]0;pwned\u0007".to_string()),
        ("right-to-left override", "\u{202e}yek-ti".to_string()),
        ("zero width", "it\u{200b}-key".to_string()),
        ("trailing space", "it-key ".to_string()),
        ("upper case", "IT-KEY".to_string()),
        ("empty", String::new()),
        ("percent", "%s%s%s%n".to_string()),
        ("glob", "*".to_string()),
    ];
    for (what, kid) in &kids {
        let tok = raw(&format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#), &payload, Algorithm::HS256, &key);
        let msg = env.rejected(&tok, what);
        assert_eq!(msg, "token rejected: unknown kid", "{what}");
    }
    // 10,000 characters: too large under the default limit ...
    let tok = raw(&format!(r#"{{"alg":"HS256","kid":"{long}"}}"#), &payload, Algorithm::HS256, &key);
    assert_eq!(env.rejected(&tok, "10,000-char kid"), "token rejected: too large");
    // ... and with the limit raised (superuser), an unknown kid whose echo in the detail is bounded.
    let mut su = env.c.superuser();
    su.batch_execute("LOAD 'pg_authz'; SET authz.max_token_bytes = 1048576").unwrap();
    let mut tx = su.transaction().unwrap();
    let e = tx.query_one("SELECT authz.login($1)", &[&tok]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION));
    let db = e.as_db_error().unwrap();
    assert_eq!(db.message(), "token rejected: unknown kid");
    assert!(db.detail().unwrap_or("").len() < 200, "the kid echo is unbounded: {:?}", db.detail());
    assert_no_leak(&e, &tok, "10,000-char kid, raised limit");
    tx.rollback().unwrap();
    // Nothing happened to the key table.
    let n: i64 = su.query_one("SELECT count(*) FROM authz.keys", &[]).unwrap().get(0);
    assert_eq!(n, 5);
    // The detail escapes control characters rather than passing them through.
    let tok = raw(r#"{"alg":"HS256","kid":"a\u001b[2Jb\nc"}"#, &payload, Algorithm::HS256, &key);
    let e = present(&mut env.app, &tok).0.unwrap_err();
    let detail = e.as_db_error().unwrap().detail().unwrap_or("").to_string();
    assert!(!detail.contains('\u{1b}') && !detail.contains('\n'), "raw control characters in detail: {detail:?}");
    env.rejected.push(tok);
    env.assert_log_clean();
}

#[test]
fn validity_window_issuer_and_audience() {
    let mut env = Env::start();
    let n = now();
    let mut su = env.c.superuser();
    su.batch_execute(
        "SELECT authz.add_key('iss-key', 'HS384', 'issuer-bound-secret-0123456789abcdef-xyz', issuer => 'https://idp.example', audience => 'lab-api')",
    )
    .unwrap();
    let iss_key = hmac_key("issuer-bound-secret-0123456789abcdef-xyz");
    let iss = |claims: Value| signed(Algorithm::HS384, Some("iss-key"), &claims, &iss_key);

    // Controls.
    assert_eq!(
        env.accepted(
            &iss(json!({"sub": "alice", "exp": n + 600, "iss": "https://idp.example", "aud": "lab-api"})),
            "iss control"
        ),
        "alice"
    );
    assert_eq!(
        env.accepted(
            &iss(json!({"sub": "alice", "exp": n + 600, "iss": "https://idp.example", "aud": ["x", "lab-api"]})),
            "aud array"
        ),
        "alice"
    );
    // Inside the 30 s leeway.
    assert_eq!(env.accepted(&hs(&json!({"sub": "alice", "exp": n - 5}).to_string()), "exp within leeway"), "alice");
    assert_eq!(
        env.accepted(&hs(&json!({"sub": "alice", "exp": n + 60, "nbf": n + 5}).to_string()), "nbf within leeway"),
        "alice"
    );
    assert_eq!(env.accepted(&hs(&format!(r#"{{"sub":"alice","exp":{}.5}}"#, n + 600)), "fractional exp"), "alice");

    let cases: Vec<(&str, String, &str)> = vec![
        ("expired beyond leeway", hs(&json!({"sub": "alice", "exp": n - 120}).to_string()), "expired"),
        ("exp zero", hs(r#"{"sub":"alice","exp":0}"#), "expired"),
        ("exp negative", hs(r#"{"sub":"alice","exp":-1e300}"#), "expired"),
        ("not yet valid", hs(&json!({"sub": "alice", "exp": n + 7200, "nbf": n + 600}).to_string()), "not yet valid"),
        ("nbf huge", hs(&format!(r#"{{"sub":"alice","exp":{},"nbf":1e300}}"#, n + 600)), "not yet valid"),
        ("exp as string", hs(&format!(r#"{{"sub":"alice","exp":"{}"}}"#, n + 600)), "malformed"),
        ("exp as bool", hs(r#"{"sub":"alice","exp":true}"#), "malformed"),
        ("exp as array", hs(&format!(r#"{{"sub":"alice","exp":[{}]}}"#, n + 600)), "malformed"),
        ("exp null", hs(r#"{"sub":"alice","exp":null}"#), "missing exp"),
        ("nbf as string", hs(&format!(r#"{{"sub":"alice","exp":{},"nbf":"0"}}"#, n + 600)), "malformed"),
        (
            "wrong issuer",
            iss(json!({"sub": "alice", "exp": n + 600, "iss": "https://evil.example", "aud": "lab-api"})),
            "wrong issuer",
        ),
        (
            "issuer prefix",
            iss(json!({"sub": "alice", "exp": n + 600, "iss": "https://idp.example.evil", "aud": "lab-api"})),
            "wrong issuer",
        ),
        ("missing issuer", iss(json!({"sub": "alice", "exp": n + 600, "aud": "lab-api"})), "wrong issuer"),
        (
            "issuer as array",
            iss(json!({"sub": "alice", "exp": n + 600, "iss": ["https://idp.example"], "aud": "lab-api"})),
            "malformed",
        ),
        (
            "wrong audience",
            iss(json!({"sub": "alice", "exp": n + 600, "iss": "https://idp.example", "aud": "other-api"})),
            "wrong audience",
        ),
        (
            "missing audience",
            iss(json!({"sub": "alice", "exp": n + 600, "iss": "https://idp.example"})),
            "wrong audience",
        ),
        (
            "audience case",
            iss(json!({"sub": "alice", "exp": n + 600, "iss": "https://idp.example", "aud": "LAB-API"})),
            "wrong audience",
        ),
        (
            "audience object",
            iss(json!({"sub": "alice", "exp": n + 600, "iss": "https://idp.example", "aud": {"lab-api": true}})),
            "malformed",
        ),
        (
            "audience array with a number",
            iss(json!({"sub": "alice", "exp": n + 600, "iss": "https://idp.example", "aud": ["lab-api", 1]})),
            "malformed",
        ),
    ];
    for (what, tok, reason) in cases {
        let msg = env.rejected(&tok, what);
        assert_eq!(msg, format!("token rejected: {reason}"), "{what}");
    }

    // The settings-level checks (superuser session): authz.issuers / authz.audiences.
    su.batch_execute(
        "LOAD 'pg_authz'; SET authz.issuers = 'https://a.example, https://b.example'; SET authz.audiences = 'api'",
    )
    .unwrap();
    let ok =
        sign(&json!({"sub": "alice", "exp": n + 600, "iss": "https://b.example", "aud": ["api"]}), Some(KID), SECRET);
    assert_eq!(present(&mut su, &ok).0.unwrap(), "alice");
    for (what, claims) in [
        ("issuer not listed", json!({"sub": "alice", "exp": n + 600, "iss": "https://c.example", "aud": "api"})),
        ("no issuer", json!({"sub": "alice", "exp": n + 600, "aud": "api"})),
        ("audience not listed", json!({"sub": "alice", "exp": n + 600, "iss": "https://a.example", "aud": "apix"})),
        ("no audience", json!({"sub": "alice", "exp": n + 600, "iss": "https://a.example"})),
    ] {
        let tok = sign(&claims, Some(KID), SECRET);
        let (login, uid) = present(&mut su, &tok);
        assert_eq!(code(login), SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "{what}");
        assert_eq!(code(uid), SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "{what}");
    }
    env.assert_log_clean();
}

/// A verified token is cached per backend. Tightening the issuer / audience settings or changing
/// the user claim must apply to tokens this backend already verified, not only to new ones.
#[test]
fn settings_tightened_after_caching_apply_to_cached_tokens() {
    let env = Env::start();
    let n = now();
    let mut su = env.c.superuser();
    su.batch_execute("LOAD 'pg_authz'").unwrap();
    let tok = sign(
        &json!({"sub": "alice", "name": "bob", "exp": n + 600, "iss": "https://a.example", "aud": "api"}),
        Some(KID),
        SECRET,
    );
    let mut failures = Vec::new();
    for (setting, value, expect_bob) in [
        ("authz.issuers", "https://other.example", false),
        ("authz.audiences", "other-api", false),
        ("authz.user_claim", "name", true),
    ] {
        su.batch_execute("RESET ALL").unwrap();
        // Verified (and cached) under the defaults ...
        assert_eq!(present(&mut su, &tok).0.unwrap(), "alice");
        // ... then the setting changes.
        su.batch_execute(&format!("SET {setting} = '{value}'")).unwrap();
        let got = present(&mut su, &tok).1;
        let ok = match (&got, expect_bob) {
            (Ok(Some(who)), true) => who == "bob",
            (Err(e), false) => e.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
            _ => false,
        };
        if !ok {
            failures.push(format!("{setting} = {value}: got {got:?}"));
        }
    }
    // Control: a backend that never saw the token applies the settings.
    let mut fresh = env.c.superuser();
    fresh.batch_execute("LOAD 'pg_authz'; SET authz.issuers = 'https://other.example'").unwrap();
    assert_eq!(code(present(&mut fresh, &tok).1), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    assert!(failures.is_empty(), "cached tokens ignore the new settings: {failures:#?}");
}

#[test]
fn oversized_tokens_are_rejected_unparsed_and_the_server_stays_up() {
    let mut env = Env::start();
    // 1 MiB of something token-shaped.
    let body = "A".repeat(1024 * 1024 - 2);
    let mib = format!("{}.{}.{}", &body[..100], &body[100..], "sig");
    let msg = env.rejected(&mib, "1 MiB token");
    assert_eq!(msg, "token rejected: too large");
    let mut tx = env.app.transaction().unwrap();
    let e = tx.query_one("SELECT authz.login($1)", &[&mib]).unwrap_err();
    let detail = e.as_db_error().unwrap().detail().unwrap_or("").to_string();
    assert!(detail.len() < 200, "{detail}");
    tx.rollback().unwrap();
    // A properly signed token one byte over the limit vs. one at the limit.
    let pad = |len: usize| {
        let mut lo = 0;
        let mut hi = 8192;
        // Binary search the filler length that makes the token exactly `len` bytes.
        loop {
            let mid = (lo + hi) / 2;
            let t = hs(&json!({"sub": "alice", "exp": now() + 600, "x": "y".repeat(mid)}).to_string());
            if t.len() == len || hi - lo <= 1 {
                return t;
            }
            if t.len() < len {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    };
    let at = pad(8192);
    assert!(at.len() <= 8192 && at.len() > 8180, "{}", at.len());
    assert_eq!(env.accepted(&at, "at the limit"), "alice");
    let over = pad(8196);
    assert!(over.len() > 8192, "{}", over.len());
    assert_eq!(env.rejected(&over, "just over the limit"), "token rejected: too large");
    // Many oversized tokens in a row: memory stays bounded, the backend survives.
    for _ in 0..20 {
        let mut tx = env.app.transaction().unwrap();
        assert_eq!(
            code(tx.query_one("SELECT authz.login($1)", &[&mib])),
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        );
        tx.rollback().unwrap();
    }
    env.assert_alive();
    // The maximum is superuser-only.
    assert_eq!(code(env.app.batch_execute("SET authz.max_token_bytes = 2097152")), SqlState::INSUFFICIENT_PRIVILEGE);
    env.assert_log_clean();
}

#[test]
fn deeply_nested_and_huge_claim_sets() {
    let mut env = Env::start();
    let exp = now() + 600;
    // Within the default size limit: 2,500 nested arrays (serde_json's recursion limit is 128).
    let nested = |depth: usize, open: &str, close: &str| {
        format!(r#"{{"sub":"alice","exp":{exp},"x":{}1{}}}"#, open.repeat(depth), close.repeat(depth))
    };
    let tok = hs(&nested(2500, "[", "]"));
    assert!(tok.len() <= 8192);
    assert_eq!(env.rejected(&tok, "2,500 nested arrays"), "token rejected: malformed");
    // Right at the parser's limit both ways: 100 levels parse, so the token is accepted.
    assert_eq!(env.accepted(&hs(&nested(100, "[", "]")), "100 nested arrays"), "alice");
    // A wide claim set within the limit is fine.
    let mut wide = serde_json::Map::new();
    wide.insert("sub".into(), json!("alice"));
    wide.insert("exp".into(), json!(exp));
    for i in 0..500 {
        wide.insert(format!("c{i}"), json!(i));
    }
    let tok = hs(&Value::Object(wide).to_string());
    assert!(tok.len() <= 8192, "{}", tok.len());
    assert_eq!(env.accepted(&tok, "500 claims"), "alice");

    // With the limit raised to 1 MiB (superuser session): 10,000 / 100,000 levels and 30,000 claims.
    let mut su = env.c.superuser();
    su.batch_execute("LOAD 'pg_authz'; SET authz.max_token_bytes = 1048576").unwrap();
    for (what, payload) in [
        ("10,000 nested arrays", nested(10_000, "[", "]")),
        ("100,000 nested arrays", nested(100_000, "[", "]")),
        ("100,000 nested objects", nested(100_000, r#"{"a":"#, "}")),
    ] {
        let tok = hs(&payload);
        assert!(tok.len() <= 1024 * 1024, "{what}: {}", tok.len());
        let (login, uid) = present(&mut su, &tok);
        assert_eq!(code(login), SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "{what}");
        assert_eq!(code(uid), SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "{what}");
    }
    let mut wide = serde_json::Map::new();
    wide.insert("sub".into(), json!("alice"));
    wide.insert("exp".into(), json!(exp));
    for i in 0..30_000 {
        wide.insert(format!("claim_{i}"), json!([i, "v"]));
    }
    let tok = hs(&Value::Object(wide).to_string());
    assert!(tok.len() <= 1024 * 1024, "{}", tok.len());
    assert_eq!(present(&mut su, &tok).0.unwrap(), "alice");
    let mut tx = su.transaction().unwrap();
    tx.execute("SELECT set_config('authz.token', $1, true)", &[&tok]).unwrap();
    let n: i64 = tx.query_one("SELECT count(*) FROM jsonb_object_keys(authz.claims())", &[]).unwrap().get(0);
    assert_eq!(n, 30_002);
    tx.rollback().unwrap();
    env.assert_alive();
    env.assert_log_clean();
}

#[test]
fn non_utf8_noise_and_invalid_base64() {
    let mut env = Env::start();
    let key = hmac_key(SECRET);
    let exp = now() + 600;
    // PostgreSQL itself refuses invalid UTF-8 in text before pg_authz ever sees it.
    let mut tx = env.app.transaction().unwrap();
    let r = tx.query_one(r"SELECT authz.login(convert_from('\xc3286162'::bytea, 'UTF8'))", &[]);
    assert_eq!(code(r), SqlState::CHARACTER_NOT_IN_REPERTOIRE);
    tx.rollback().unwrap();
    // Parts that decode to bytes that are not UTF-8 / not JSON, validly signed.
    let payload = format!(r#"{{"sub":"alice","exp":{exp}}}"#);
    let header = br#"{"alg":"HS256","kid":"it-key"}"#;
    let mut bad_payload = payload.clone().into_bytes();
    bad_payload.insert(9, 0xff);
    let cases: Vec<(&str, String)> = vec![
        ("header not UTF-8", raw_bytes(b"\xff\xfe{\"alg\":\"HS256\"}", payload.as_bytes(), Algorithm::HS256, &key)),
        ("payload not UTF-8", raw_bytes(header, &bad_payload, Algorithm::HS256, &key)),
        (
            "payload UTF-16",
            raw_bytes(
                header,
                &payload.encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<_>>(),
                Algorithm::HS256,
                &key,
            ),
        ),
        ("payload with BOM", raw_bytes(header, format!("\u{feff}{payload}").as_bytes(), Algorithm::HS256, &key)),
        ("payload not JSON", raw_bytes(header, b"sub=alice&exp=99999999999", Algorithm::HS256, &key)),
        ("payload JSON string", raw_bytes(header, br#""alice""#, Algorithm::HS256, &key)),
        ("payload JSON array", raw_bytes(header, br#"[{"sub":"alice"}]"#, Algorithm::HS256, &key)),
        ("payload trailing garbage", raw_bytes(header, format!("{payload}xyz").as_bytes(), Algorithm::HS256, &key)),
        ("payload empty", raw_bytes(header, b"", Algorithm::HS256, &key)),
        ("header empty", raw_bytes(b"", payload.as_bytes(), Algorithm::HS256, &key)),
    ];
    for (what, tok) in cases {
        let msg = env.rejected(&tok, what);
        assert_eq!(msg, "token rejected: malformed", "{what}");
    }
    // Base64 that is not base64url-without-padding, and broken structure.
    let good = token("alice");
    let p: Vec<&str> = good.split('.').collect();
    let std_b64 = |s: &str| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let cases: Vec<(&str, String)> = vec![
        ("padded standard base64", format!("{}.{}.{}", std_b64(p[0]), std_b64(p[1]), std_b64(p[2]))),
        ("padding on the header", format!("{}==.{}.{}", p[0], p[1], p[2])),
        ("plus and slash", format!("{}.{}+/.{}", p[0], p[1], p[2])),
        ("percent-encoded", format!("{}.{}%3D.{}", p[0], p[1], p[2])),
        ("space inside", format!("{}.{} {}.{}", p[0], &p[1][..5], &p[1][5..], p[2])),
        ("newline inside", format!("{}.{}\n.{}", p[0], p[1], p[2])),
        ("four parts", format!("{good}.{}", p[2])),
        ("two parts", format!("{}.{}", p[0], p[1])),
        ("one part", p[1].to_string()),
        ("dots only", "..".to_string()),
        ("a single dot", ".".to_string()),
        ("JWE-shaped (five parts)", format!("{}.{}.{}.{}.{}", p[0], p[1], p[2], p[1], p[2])),
        ("invalid base64 length", format!("{}.{}A.{}", p[0], p[1], p[2])),
        ("non-ascii letters", format!("{}.{}é.{}", p[0], p[1], p[2])),
        ("full-width dot", format!("{}\u{ff0e}{}\u{ff0e}{}", p[0], p[1], p[2])),
    ];
    for (what, tok) in cases {
        let msg = env.rejected(&tok, what);
        assert!(
            ["token rejected: malformed", "token rejected: bad signature"].contains(&msg.as_str()),
            "{what}: {msg}"
        );
    }
    // Binary-ish ASCII noise (every byte 1..=127), deterministic.
    let mut x: u32 = 0x1234_5678;
    for i in 0..40 {
        let len = 1 + (i * 37) % 300;
        let noise: String = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                char::from(1 + (x % 127) as u8)
            })
            .collect();
        env.rejected(&noise, &format!("noise #{i}"));
    }
    env.assert_log_clean();
}

#[test]
fn user_claim_of_the_wrong_shape_is_rejected() {
    let mut env = Env::start();
    let exp = now() + 600;
    for (what, sub) in [
        ("number", "123"),
        ("float", "1.5"),
        ("array", r#"["alice"]"#),
        ("object", r#"{"id":"alice"}"#),
        ("null", "null"),
        ("bool", "true"),
        ("empty string", r#""""#),
    ] {
        let msg = env.rejected(&hs(&format!(r#"{{"sub":{sub},"exp":{exp}}}"#)), what);
        assert_eq!(msg, "token rejected: missing user claim", "{what}");
    }
    // Strings that look like alice but are not alice never get alice's rows.
    for sub in [
        "Alice",
        "alice ",
        " alice",
        "alice\u{0}",
        "alice\u{0}bob",
        "\u{0}",
        "аlice", /* Cyrillic а */
        "alice\u{200b}",
        "*",
        "%",
    ] {
        let tok = hs(&json!({"sub": sub, "exp": exp}).to_string());
        let (login, uid) = present(&mut env.app, &tok);
        match (login, uid) {
            (Ok(a), Ok(b)) => {
                assert_eq!(Some(a.clone()), b, "{sub:?}");
                assert_ne!(a, "alice", "{sub:?} became alice");
                let mut tx = env.app.transaction().unwrap();
                tx.execute("SELECT set_config('authz.token', $1, true)", &[&tok]).unwrap();
                let (sessions, _) = visible(&mut tx).unwrap();
                assert_eq!(sessions, vec![5, 6], "{sub:?} sees more than public rows");
                tx.rollback().unwrap();
            }
            (Err(a), Err(b)) => {
                for e in [a, b] {
                    let state = e.code().cloned();
                    // A NUL inside the claim cannot become PostgreSQL text: an error is fine, but it
                    // must be a clean one, never a crash, never alice.
                    assert!(
                        state == Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
                            || state == Some(SqlState::CHARACTER_NOT_IN_REPERTOIRE)
                            || state == Some(SqlState::UNTRANSLATABLE_CHARACTER),
                        "{sub:?}: {e:?}"
                    );
                }
            }
            (a, b) => panic!("{sub:?}: the two entry points disagree: {a:?} / {b:?}"),
        }
        env.assert_alive();
    }
    env.assert_log_clean();
}

#[test]
fn duplicate_claims_never_yield_the_first_value() {
    let mut env = Env::start();
    let exp = now() + 600;
    // {"sub":"alice","sub":"mallory"}: must be 28000, or the last value — never alice.
    let tok = hs(&format!(r#"{{"sub":"alice","exp":{exp},"sub":"mallory"}}"#));
    let (login, uid) = present(&mut env.app, &tok);
    match (&login, &uid) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, "mallory");
            assert_eq!(b.as_deref(), Some("mallory"));
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.code(), Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION));
            assert_eq!(b.code(), Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION));
        }
        _ => panic!("entry points disagree: {login:?} / {uid:?}"),
    }
    // SECURITY.md: a member name repeated anywhere in the claims is rejected outright, in either
    // order (RFC 7519 section 4 allows rejecting; keeping one would let two parsers disagree).
    assert_eq!(env.rejected(&tok, "duplicate sub, mallory last"), "token rejected: malformed");
    let mirror = hs(&format!(r#"{{"sub":"mallory","exp":{exp},"sub":"alice"}}"#));
    assert_eq!(env.rejected(&mirror, "duplicate sub, alice last"), "token rejected: malformed");
    for (what, payload) in [
        ("duplicate exp, expired last", format!(r#"{{"sub":"alice","exp":{exp},"exp":{}}}"#, now() - 3600)),
        ("duplicate exp, valid last", format!(r#"{{"sub":"alice","exp":{},"exp":{exp}}}"#, now() - 3600)),
        ("duplicate nbf", format!(r#"{{"sub":"alice","exp":{exp},"nbf":0,"nbf":{}}}"#, now() + 9999)),
        ("duplicate iss", format!(r#"{{"sub":"alice","exp":{exp},"iss":"a","iss":"b"}}"#)),
        ("duplicate aud", format!(r#"{{"sub":"alice","exp":{exp},"aud":"a","aud":"b"}}"#)),
        ("duplicate private claim", format!(r#"{{"sub":"alice","exp":{exp},"org":"first","org":"last"}}"#)),
        (
            "duplicate nested claim",
            format!(r#"{{"sub":"alice","exp":{exp},"realm":{{"roles":["a"],"roles":["admin"]}}}}"#),
        ),
        ("duplicate via an escape", format!(r#"{{"sub":"alice","exp":{exp},"\u0073ub":"mallory"}}"#)),
    ] {
        assert_eq!(env.rejected(&hs(&payload), what), "token rejected: malformed", "{what}");
    }
    // Distinct names are fine, nested or not, and authz.claim reads them.
    let tok = hs(&format!(r#"{{"sub":"alice","exp":{exp},"org":"lab","realm":{{"roles":["a","b"]}}}}"#));
    assert_eq!(env.accepted(&tok, "distinct private claims"), "alice");
    let mut tx = env.app.transaction().unwrap();
    tx.execute("SELECT set_config('authz.token', $1, true)", &[&tok]).unwrap();
    let org: Option<String> = tx.query_one("SELECT authz.claim('org')", &[]).unwrap().get(0);
    assert_eq!(org.as_deref(), Some("lab"));
    let roles: Option<String> = tx.query_one("SELECT authz.claim('realm.roles')", &[]).unwrap().get(0);
    assert_eq!(roles.as_deref(), Some(r#"["a","b"]"#));
    tx.rollback().unwrap();
    // Duplicate header keys: the alg the extension reads is the one it enforces.
    let payload = format!(r#"{{"sub":"alice","exp":{exp}}}"#);
    let key = hmac_key(SECRET);
    let tok = raw(r#"{"alg":"HS256","kid":"it-key","alg":"none"}"#, &payload, Algorithm::HS256, &key);
    env.rejected(&tok, "duplicate alg, none last");
    let tok = raw(r#"{"alg":"none","kid":"it-key","alg":"HS256"}"#, &payload, Algorithm::HS256, &key);
    env.rejected(&tok, "duplicate alg, HS256 last");
    // Duplicate kid: rejected too, whichever kid comes last.
    for header in [r#"{"alg":"HS256","kid":"rsa","kid":"it-key"}"#, r#"{"alg":"HS256","kid":"it-key","kid":"rsa"}"#] {
        env.rejected(&raw(header, &payload, Algorithm::HS256, &key), header);
    }
    env.assert_log_clean();
}

#[test]
fn whitespace_and_bearer_prefix_are_rejected_not_stripped() {
    let mut env = Env::start();
    let good = token("alice");
    assert_eq!(env.accepted(&good, "control"), "alice");
    for (what, tok) in [
        ("leading space", format!(" {good}")),
        ("trailing space", format!("{good} ")),
        ("trailing newline", format!("{good}\n")),
        ("trailing CRLF", format!("{good}\r\n")),
        ("leading tab", format!("\t{good}")),
        ("non-breaking space", format!("{good}\u{a0}")),
        ("Bearer prefix", format!("Bearer {good}")),
        ("bearer prefix", format!("bearer {good}")),
        ("BEARER prefix", format!("BEARER {good}")),
        ("Bearer two spaces", format!("Bearer  {good}")),
        ("Bearer tab", format!("Bearer\t{good}")),
        ("Bearer only", "Bearer ".to_string()),
        ("Authorization header", format!("Authorization: Bearer {good}")),
        ("quoted", format!("\"{good}\"")),
    ] {
        let msg = env.rejected(&tok, what);
        assert!(msg.starts_with("token rejected: "), "{what}: {msg}");
    }
    // The whitespace-only token is not "no token": it is malformed, never a fall-back.
    for ws in [" ", "\t", "\n"] {
        assert_eq!(env.rejected(ws, "whitespace only"), "token rejected: malformed");
    }
    env.assert_log_clean();
}

/// README: "a `Bearer ` prefix or surrounding whitespace is rejected as malformed". Trailing
/// whitespace is rejected (28000, see above) but reported as a bad signature: the hint that would
/// tell the client what is wrong ("no surrounding whitespace") is lost.
#[test]
fn trailing_whitespace_is_reported_as_malformed() {
    let mut env = Env::start();
    let good = token("alice");
    for tok in [format!("{good} "), format!("{good}\n"), format!("{good}\r\n"), format!("{good}\u{a0}")] {
        assert_eq!(env.rejected(&tok, "trailing whitespace"), "token rejected: malformed", "{tok:?}");
    }
}

/// An identity provider's key set as Keycloak publishes it: a signing key, an encryption key of
/// the same RSA modulus (`"use": "enc"`, `RSA-OAEP`), and a P-521 key pg_authz does not verify.
/// Only the signing key is imported (the others are skipped with a NOTICE naming their kid);
/// a set with no usable key is 22023 saying why for each; importing the same set again changes
/// nothing; a kid in use is 42710 unless `replace => true` rotates it.
#[test]
fn keycloak_style_jwks_imports_its_signing_keys_and_skips_the_rest() {
    let env = Env::start();
    let mut su = env.c.superuser();
    let enc = json!({"kid": "enc-1", "kty": "RSA", "alg": "RSA-OAEP", "use": "enc", "n": ATTACKER_N, "e": "AQAB"});
    let p521 = json!({"kid": "p521", "kty": "EC", "crv": "P-521", "use": "sig",
                      "x": "AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt",
                      "y": "AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqHZR1"});
    let sig = json!({"kid": "sig-1", "kty": "RSA", "alg": "RS256", "use": "sig", "n": ATTACKER_N, "e": "AQAB"});
    let jwks = json!({"keys": [enc, p521, sig]});
    let kids: Vec<String> =
        su.query_one("SELECT authz.add_jwks($1::text::jsonb)", &[&jwks.to_string()]).unwrap().get(0);
    assert_eq!(kids, vec!["sig-1"]);
    let attacker = EncodingKey::from_rsa_pem(ATTACKER_RSA_PRIVATE.as_bytes()).unwrap();
    let tok = signed(Algorithm::RS256, Some("sig-1"), &alice_claims(), &attacker);
    let uid: String = su.query_one("SELECT authz.verify_token($1)", &[&tok]).unwrap().get(0);
    assert_eq!(uid, "alice");
    let stored: i64 =
        su.query_one("SELECT count(*) FROM authz.keys WHERE kid IN ('enc-1', 'p521')", &[]).unwrap().get(0);
    assert_eq!(stored, 0);
    // The NOTICEs name what was skipped and why.
    let notices = env.c.psql("postgres", &["-c", &format!("SELECT authz.add_jwks('{jwks}'::jsonb)")]);
    let text = String::from_utf8_lossy(&notices.stderr);
    assert!(text.contains("skipping key \"enc-1\"") && text.contains("\"use\": \"enc\""), "{text}");
    assert!(text.contains("skipping key \"p521\""), "{text}");

    // Nothing usable: refused, with every reason.
    let useless = json!({"keys": [enc, p521]});
    let e = su.query_one("SELECT authz.add_jwks($1::text::jsonb)", &[&useless.to_string()]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or_default().to_string();
    assert!(detail.contains("enc-1") && detail.contains("p521"), "{detail}");

    // add_key(): an existing kid is 42710; the same key again is accepted; replace rotates.
    su.execute("SELECT authz.add_key('rsa', 'RS256', $1)", &[&RSA_PUBLIC])
        .expect("the same key again is not a conflict");
    let e = su.execute("SELECT authz.add_key('rsa', 'EdDSA', $1)", &[&ED_PUBLIC]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DUPLICATE_OBJECT));
    su.execute("SELECT authz.add_key('rsa', 'EdDSA', $1, replace => true)", &[&ED_PUBLIC]).unwrap();
    let alg: String = su.query_one("SELECT alg FROM authz.keys WHERE kid = 'rsa'", &[]).unwrap().get(0);
    assert_eq!(alg, "EdDSA");
}
