//! A Python application (psycopg 3 from PyPI) on the shared login sees exactly what the Rust
//! driver sees for the same tokens, and gets a bad token as InvalidAuthorizationSpecification.
mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `target/pyenv` with psycopg 3 (tests/common/mod.rs); installed once per test process.
fn python() -> PathBuf {
    static PY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PY.get_or_init(|| python_with("psycopg", "psycopg[binary]")).clone()
}

fn setup() -> Cluster {
    let c = platform(&["app"]);
    // The shared login has its own principal (viewer on session 2), so a silent fall-back from a
    // token to the login identity is visible.
    c.superuser()
        .batch_execute(
            "SELECT authz.create_principal('svc', 'user', 'app');
             SELECT authz.assign_role('svc', 'viewer', 'session', '2');",
        )
        .unwrap();
    c
}

/// What the Rust driver sees, in the script's JSON shape.
fn rust_sees(client: &mut impl postgres::GenericClient) -> Value {
    let user: Option<String> = client.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
    let rows = client.query("SELECT id, session_id FROM images ORDER BY id", &[]).unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let mut sessions: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
    sessions.sort();
    sessions.dedup();
    json!({"user": user, "ids": ids, "sessions": sessions})
}

fn rust_sees_with(c: &Cluster, tok: &str) -> Value {
    let mut app = c.connect("app");
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{tok}'")).unwrap();
    let v = rust_sees(&mut tx);
    tx.commit().unwrap();
    v
}

fn ids(range: impl IntoIterator<Item = std::ops::RangeInclusive<i64>>) -> Vec<i64> {
    range.into_iter().flatten().collect()
}

#[test]
fn psycopg_sees_exactly_what_the_rust_driver_sees() {
    let py = python();
    let c = setup();
    let alice = token("alice");
    let bob = token("bob");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/confinement_psycopg.py");
    let started = std::time::Instant::now();
    let out = run_with_timeout(
        Command::new(&py)
            .arg(&script)
            .arg(c.dir())
            .arg(c.port().to_string())
            .arg("app")
            .arg("postgres")
            .arg(&alice)
            .arg(&bob),
        Duration::from_secs(120),
        "the psycopg script",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    eprintln!("psycopg {} script ran in {:?}", seen["psycopg"], started.elapsed());

    // The Rust driver, same tokens, same login.
    let rust_alice = rust_sees_with(&c, &alice);
    let rust_bob = rust_sees_with(&c, &bob);
    let rust_login = rust_sees(&mut c.connect("app"));
    // ... pinned to the fixture, so both drivers cannot be wrong the same way.
    assert_eq!(rust_alice, json!({"user": "alice", "ids": ids([1..=20, 41..=60]), "sessions": [1, 2, 5, 6]}));
    assert_eq!(rust_bob, json!({"user": "bob", "ids": ids([21..=60]), "sessions": [3, 4, 5, 6]}));
    assert_eq!(rust_login, json!({"user": "svc", "ids": ids([11..=20, 41..=60]), "sessions": [2, 5, 6]}));

    let with_returned = |v: &Value, sub: &str| {
        let mut v = v.clone();
        v["returned"] = json!(sub);
        v
    };
    assert_eq!(seen["before"], rust_login);
    assert_eq!(seen["login_a"], with_returned(&rust_alice, "alice"));
    assert_eq!(seen["login_b"], with_returned(&rust_bob, "bob"));
    assert_eq!(seen["set_local_a"], rust_alice);
    assert_eq!(seen["set_local_b"], rust_bob);
    for after in ["after_login_a", "after_login_b", "after_set_local_a", "after_set_local_b", "after_bad"] {
        assert_eq!(seen[after], rust_login, "{after}: the token outlived its transaction");
    }
    assert_eq!(seen["switch_in_tx"], json!(["alice", "bob"]));

    // A forged token is psycopg.errors.InvalidAuthorizationSpecification (28000), via either form.
    for key in ["bad_login", "bad_set_local"] {
        assert_eq!(
            seen[key],
            json!({
                "class": "InvalidAuthorizationSpecification",
                "caught_as": "InvalidAuthorizationSpecification",
                "sqlstate": "28000",
                "message": "token rejected: bad signature"
            }),
            "{key}"
        );
    }
    assert_eq!(seen["bad_set_local_set"], "accepted", "SET LOCAL itself does not verify the token");

    // authz.login() in autocommit mode: one warning, and the token is gone after the statement.
    let notices = seen["login_outside_tx_notices"].as_array().unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].as_str().unwrap().starts_with("WARNING: authz.login() outside a transaction block"));
    assert_eq!(seen["after_login_outside_tx"], rust_login);
}
