//! Token identity through a real client: a pooled login switching tokens per transaction.
mod common;

use common::*;

fn setup() -> Cluster {
    let c = platform(&["app"]);
    // The shared login is itself mapped to a principal with access to project 2, so a silent
    // fall-back to the login identity would be visible.
    let mut su = c.superuser();
    su.batch_execute(
        "SELECT authz.create_principal('svc', 'user', 'app');
         SELECT authz.assign_role('svc', 'viewer', 'project', '2');",
    )
    .unwrap();
    c
}

const ALICE_SESSIONS: [i64; 4] = [1, 2, 5, 6];
const BOB_SESSIONS: [i64; 4] = [3, 4, 5, 6];
const PUBLIC_SESSIONS: [i64; 2] = [5, 6];

#[test]
fn pooled_login_switches_tokens_per_transaction() {
    let c = setup();
    let mut app = c.connect("app");
    // Without a token the login's own principal applies.
    let who: Option<String> = app.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
    assert_eq!(who.as_deref(), Some("svc"));
    assert_eq!(visible(&mut app).unwrap(), (BOB_SESSIONS.to_vec(), 40));

    let alice = token("alice");
    let bob = token("bob");
    let stmt =
        app.prepare("SELECT coalesce(array_agg(DISTINCT session_id ORDER BY session_id), '{}') FROM images").unwrap();

    for round in 0..2 {
        // Transaction 1: SET LOCAL.
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL authz.token = '{alice}'")).unwrap();
        let who: Option<String> = tx.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
        assert_eq!(who.as_deref(), Some("alice"), "round {round}");
        assert_eq!(visible(&mut tx).unwrap(), (ALICE_SESSIONS.to_vec(), 40), "round {round}");
        let ids: Vec<i64> = tx.query_one(&stmt, &[]).unwrap().get(0);
        assert_eq!(ids, ALICE_SESSIONS.to_vec());
        let src: String = tx.query_one("SELECT authz.identity()->>'source'", &[]).unwrap().get(0);
        assert_eq!(src, "token");
        tx.commit().unwrap();

        // Transaction 2: authz.login($1) with the other user, same prepared statement.
        let mut tx = app.transaction().unwrap();
        let sub: String = tx.query_one("SELECT authz.login($1)", &[&bob]).unwrap().get(0);
        assert_eq!(sub, "bob");
        let who: Option<String> = tx.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
        assert_eq!(who.as_deref(), Some("bob"));
        let ids: Vec<i64> = tx.query_one(&stmt, &[]).unwrap().get(0);
        assert_eq!(ids, BOB_SESSIONS.to_vec(), "round {round}: prepared statement kept the previous identity");
        assert_eq!(visible(&mut tx).unwrap(), (BOB_SESSIONS.to_vec(), 40));
        // Switching token inside the same transaction is seen by the next statement.
        tx.query_one("SELECT authz.login($1)", &[&alice]).unwrap();
        let ids: Vec<i64> = tx.query_one(&stmt, &[]).unwrap().get(0);
        assert_eq!(ids, ALICE_SESSIONS.to_vec());
        tx.commit().unwrap();

        // After COMMIT the token is gone: back to the login's principal.
        let tok: String = app.query_one("SELECT current_setting('authz.token')", &[]).unwrap().get(0);
        assert_eq!(tok, "", "token survived COMMIT");
        let who: Option<String> = app.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
        assert_eq!(who.as_deref(), Some("svc"));
        assert_eq!(visible(&mut app).unwrap(), (BOB_SESSIONS.to_vec(), 40));
    }

    // A rolled-back transaction also forgets its token.
    let mut tx = app.transaction().unwrap();
    tx.query_one("SELECT authz.login($1)", &[&alice]).unwrap();
    tx.rollback().unwrap();
    let who: Option<String> = app.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
    assert_eq!(who.as_deref(), Some("svc"));
}

#[test]
fn anonymous_after_commit_sees_only_public_rows() {
    let c = setup();
    c.create_login("web");
    c.superuser().batch_execute("GRANT SELECT ON images TO web").unwrap();
    let mut web = c.connect("web");
    let alice = token("alice");
    let mut tx = web.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{alice}'")).unwrap();
    assert_eq!(visible(&mut tx).unwrap(), (ALICE_SESSIONS.to_vec(), 40));
    tx.commit().unwrap();
    let who: Option<String> = web.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
    assert_eq!(who, None);
    let src: String = web.query_one("SELECT authz.identity()->>'source'", &[]).unwrap().get(0);
    assert_eq!(src, "anonymous");
    assert_eq!(visible(&mut web).unwrap(), (PUBLIC_SESSIONS.to_vec(), 20));
}

fn bad_tokens() -> Vec<(&'static str, String)> {
    let n = now();
    let good = token("alice");
    let mut tampered = good.clone();
    // Flip one character of the signature.
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let none_alg = {
        use base64_like::b64;
        format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(format!(r#"{{"sub":"alice","exp":{}}}"#, n + 3600).as_bytes())
        )
    };
    vec![
        ("expired", mint("alice", n - 3600)),
        (
            "not yet valid",
            sign(&serde_json::json!({"sub": "alice", "exp": n + 7200, "nbf": n + 3600}), Some(KID), SECRET),
        ),
        ("bad signature", tampered),
        (
            "wrong secret",
            sign(
                &serde_json::json!({"sub": "alice", "exp": n + 3600}),
                Some(KID),
                "another-secret-that-is-long-enough-000",
            ),
        ),
        ("unknown kid", sign(&serde_json::json!({"sub": "alice", "exp": n + 3600}), Some("nope"), SECRET)),
        ("missing exp", sign(&serde_json::json!({"sub": "alice"}), Some(KID), SECRET)),
        ("missing sub", sign(&serde_json::json!({"exp": n + 3600}), Some(KID), SECRET)),
        ("alg none", none_alg),
        ("garbage", "not-a-token".to_string()),
    ]
}

mod base64_like {
    pub fn b64(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

#[test]
fn every_bad_token_is_28000_never_a_fallback() {
    let c = setup();
    let mut app = c.connect("app");
    for (what, bad) in bad_tokens() {
        // SET LOCAL, then anything that needs identity.
        for query in ["SELECT authz.user_id()", "SELECT count(*)::text FROM images", "SELECT authz.identity()::text"] {
            let mut tx = app.transaction().unwrap();
            tx.batch_execute(&format!("SET LOCAL authz.token = '{bad}'")).unwrap();
            let r = tx.query_one(query, &[]).map(|row| format!("{:?}", row.get::<_, Option<String>>(0)));
            assert_eq!(code(r), SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "{what}: {query}");
            tx.rollback().unwrap();
        }
        // authz.login() refuses it up front.
        let mut tx = app.transaction().unwrap();
        let r = tx.query_one("SELECT authz.login($1)", &[&bad]).map(|row| row.get::<_, String>(0));
        assert_eq!(code(r), SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "{what}: login");
        tx.rollback().unwrap();
        // The connection is still usable and back on the login identity.
        let who: Option<String> = app.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
        assert_eq!(who.as_deref(), Some("svc"), "{what}");
    }
    // Control: the same shapes with a good token work.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("alice"))).unwrap();
    assert_eq!(visible(&mut tx).unwrap(), (ALICE_SESSIONS.to_vec(), 40));
}

#[test]
fn startup_packet_token_is_verified_not_ignored() {
    let c = setup();
    // A valid token from the startup packet is the identity.
    let mut ok = c.connect_with_options("app", &format!("-c authz.token={}", token("alice"))).unwrap();
    let who: Option<String> = ok.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
    assert_eq!(who.as_deref(), Some("alice"));
    assert_eq!(visible(&mut ok).unwrap(), (ALICE_SESSIONS.to_vec(), 40));

    // An expired one: the connection may be accepted, but identity is never the login's.
    let expired = mint("alice", now() - 3600);
    for query in ["SELECT authz.user_id()", "SELECT count(*)::text FROM images"] {
        // The connection itself is accepted (the token is only checked when identity is needed).
        let mut bad = c.connect_with_options("app", &format!("-c authz.token={expired}")).unwrap();
        let r = bad.query_one(query, &[]).map(|row| format!("{:?}", row.get::<_, Option<String>>(0)));
        assert_eq!(code(r), SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "{query}");
        // And it keeps failing: no fall-back on the second try either.
        let r = bad.query_one("SELECT authz.user_id()", &[]).map(|row| row.get::<_, Option<String>>(0));
        assert_eq!(code(r), SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "{query} (second statement)");
    }
}

#[test]
fn savepoint_rollback_and_logout_restore_identity() {
    let c = setup();
    let mut app = c.connect("app");
    let alice = token("alice");
    let bob = token("bob");
    let mut tx = app.transaction().unwrap();
    tx.query_one("SELECT authz.login($1)", &[&alice]).unwrap();
    assert_eq!(visible(&mut tx).unwrap(), (ALICE_SESSIONS.to_vec(), 40));
    tx.batch_execute("SAVEPOINT s").unwrap();
    tx.query_one("SELECT authz.login($1)", &[&bob]).unwrap();
    assert_eq!(visible(&mut tx).unwrap(), (BOB_SESSIONS.to_vec(), 40));
    tx.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    let who: Option<String> = tx.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
    assert_eq!(who.as_deref(), Some("alice"));
    assert_eq!(visible(&mut tx).unwrap(), (ALICE_SESSIONS.to_vec(), 40));
    tx.execute("SELECT authz.logout()", &[]).unwrap();
    let who: Option<String> = tx.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
    assert_eq!(who.as_deref(), Some("svc"));
    assert_eq!(visible(&mut tx).unwrap(), (BOB_SESSIONS.to_vec(), 40));
    tx.commit().unwrap();

    // A session-level token (dedicated connection) lasts across transactions until logout(false).
    app.query_one("SELECT authz.login($1, false)", &[&alice]).unwrap();
    assert_eq!(visible(&mut app).unwrap(), (ALICE_SESSIONS.to_vec(), 40));
    let mut tx = app.transaction().unwrap();
    assert_eq!(visible(&mut tx).unwrap(), (ALICE_SESSIONS.to_vec(), 40));
    tx.commit().unwrap();
    app.execute("SELECT authz.logout(false)", &[]).unwrap();
    let who: Option<String> = app.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
    assert_eq!(who.as_deref(), Some("svc"));
}
