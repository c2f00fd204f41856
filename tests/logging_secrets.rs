//! Tokens are bearer credentials: none, valid or rejected, passed in any documented way, may land in
//! `pg_stat_statements` or in the server log — with `log_statement = 'all'`, with pgaudit logging
//! everything, and in the `STATEMENT:` line PostgreSQL prints for a failing statement. The cluster
//! runs the recommended set-up: pg_stat_statements and pgaudit preloaded, pg_authz in
//! `session_preload_libraries`.
mod common;

use common::*;

const SETTINGS: &[&str] = &[
    "shared_preload_libraries=pg_stat_statements,pgaudit",
    "session_preload_libraries=pg_authz",
    "log_statement=all",
    "log_min_error_statement=error",
    "log_parameter_max_length=-1",
    "log_parameter_max_length_on_error=-1",
    "pgaudit.log=all",
    "pgaudit.log_parameter=on",
    "pg_stat_statements.track_utility=on",
];

/// The signature segment of a token: what must appear nowhere.
fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap()
}

#[test]
fn no_token_reaches_pg_stat_statements_or_the_server_log() {
    let c = Cluster::start_with(SETTINGS);
    c.create_login("app");
    c.add_test_key();
    fixture(&c, &["app"]);
    c.superuser().batch_execute("CREATE EXTENSION pg_stat_statements").unwrap();
    let valid: Vec<String> = (0..6).map(|i| mint(&format!("user{i}"), now() + 3600)).collect();
    let forged =
        sign(&serde_json::json!({"sub": "alice", "exp": now() + 60}), Some(KID), "not-the-secret-not-the-secret-00");
    let expired = mint("alice", now() - 3600);
    let mut app = c.connect("app");
    let loaded: bool =
        app.query_one("SELECT EXISTS (SELECT FROM pg_settings WHERE name = 'authz.token')", &[]).unwrap().get(0);
    assert!(loaded, "session_preload_libraries did not load pg_authz");

    // Every documented way of passing a token, valid ones...
    app.batch_execute(&format!("BEGIN; SET LOCAL authz.token = '{}'; SELECT count(*) FROM images; COMMIT", valid[0]))
        .unwrap();
    app.batch_execute(&format!(
        "BEGIN; SELECT set_config('authz.token', '{}', true); SELECT count(*) FROM images; COMMIT",
        valid[1]
    ))
    .unwrap();
    app.batch_execute(&format!("BEGIN; SELECT authz.login('{}'); SELECT count(*) FROM images; COMMIT", valid[2]))
        .unwrap();
    let mut tx = app.transaction().unwrap();
    tx.query_one("SELECT authz.login($1)", &[&valid[3]]).unwrap();
    tx.commit().unwrap();
    let mut tx = app.transaction().unwrap();
    tx.query_one("SELECT set_config('authz.token', $1, true)", &[&valid[4]]).unwrap();
    tx.query_one("SELECT count(*) FROM images", &[]).unwrap();
    tx.commit().unwrap();
    app.batch_execute(&format!("SET authz.token = '{}'; SELECT count(*) FROM images; RESET authz.token", valid[5]))
        .unwrap();
    // ...and rejected ones, which fail with their statement printed by the server.
    for bad in [&forged, &expired] {
        let r = app.batch_execute(&format!("BEGIN; SET LOCAL authz.token = '{bad}'; SELECT count(*) FROM images"));
        assert_eq!(code(r), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        app.batch_execute("ROLLBACK").unwrap();
        let r = app.batch_execute(&format!("SELECT authz.login('{bad}')"));
        assert_eq!(code(r), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        let r = app.query_one("SELECT authz.login($1)", &[bad]);
        assert_eq!(code(r), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    }
    drop(app);

    let statements: Vec<String> =
        c.superuser().query("SELECT query FROM pg_stat_statements", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = c.log_contents();
    let mut all = valid.clone();
    all.push(forged.clone());
    all.push(expired.clone());
    for t in &all {
        let sig = signature(t);
        assert!(!log.contains(sig), "a token's signature is in the server log");
        assert!(!statements.iter().any(|q| q.contains(sig)), "a token's signature is in pg_stat_statements");
        // The payload (who the token is for) must not be there either.
        let payload = t.split('.').nth(1).unwrap();
        assert!(!log.contains(payload) && !statements.iter().any(|q| q.contains(payload)));
    }
    // The statements themselves are still logged and counted, masked.
    assert!(log.contains("SET LOCAL authz.token = '[redacted token]'"), "log_statement lines are missing");
    assert!(log.contains("AUDIT: SESSION"), "pgaudit did not log");
    assert!(log.contains("STATEMENT:  SELECT authz.login('[redacted token]')"), "failing statements lose their text");
    assert!(
        statements.iter().any(|q| q.contains("authz.token = '[redacted token]'")),
        "SET authz.token is not in pg_stat_statements: {statements:?}"
    );
    let set_entries = statements.iter().filter(|q| q.contains("SET LOCAL authz.token")).count();
    assert_eq!(set_entries, 1, "one pg_stat_statements entry for every SET LOCAL authz.token: {statements:?}");
}

/// `pg_stat_activity.query` is visible to every session of the same role — the other clients of a
/// pooled login — and keeps a backend's last statement while it sits idle in a transaction.
#[test]
fn no_token_reaches_pg_stat_activity() {
    let c = Cluster::start_with(SETTINGS);
    c.create_login("app");
    c.add_test_key();
    fixture(&c, &["app"]);
    let token = mint("alice", now() + 3600);
    let mut watcher = c.connect("app");
    for statement in [
        format!("SET LOCAL authz.token = '{token}'"),
        format!("SELECT authz.login('{token}')"),
        format!("SELECT 1; SET LOCAL authz.token = '{token}'; SELECT 2"),
    ] {
        let mut holder = c.connect("app");
        let pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        holder.batch_execute("BEGIN").unwrap();
        holder.batch_execute(&statement).unwrap();
        // The holder is idle in its transaction now: pg_stat_activity keeps its last statement.
        let seen: String =
            watcher.query_one("SELECT query FROM pg_stat_activity WHERE pid = $1", &[&pid]).unwrap().get(0);
        assert!(!seen.contains(signature(&token)), "{statement}: pg_stat_activity shows the token: {seen}");
        assert!(seen.contains("[redacted token]"), "{statement}: {seen}");
        holder.batch_execute("ROLLBACK").unwrap();
    }
}

#[test]
fn doctor_warns_when_pg_authz_is_not_preloaded() {
    let c = Cluster::start();
    let problems: Vec<String> = c
        .superuser()
        .query("SELECT object || ': ' || problem FROM authz.doctor() WHERE severity = 'warning'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("session_preload_libraries")),
        "doctor() must say the library is not preloaded: {problems:?}"
    );
    let preloaded = Cluster::start_with(SETTINGS);
    let problems: Vec<String> = preloaded
        .superuser()
        .query("SELECT object || ': ' || problem FROM authz.doctor()", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!problems.iter().any(|p| p.contains("preload")), "{problems:?}");
}

/// An ERROR raised below pg_authz's hooks reaches the client whole: schema, table and constraint
/// names (ORMs map unique violations to fields by them) and PL/pgSQL context lines — with the
/// library preloaded behind pg_stat_statements and pgaudit, and loaded on its own.
#[test]
fn errors_keep_their_fields_through_the_hooks() {
    for settings in [SETTINGS, &[][..]] {
        let c = Cluster::start_with(settings);
        let mut su = c.superuser();
        su.batch_execute("LOAD 'pg_authz'").unwrap();
        su.batch_execute("CREATE TABLE uq (id int PRIMARY KEY); INSERT INTO uq VALUES (1)").unwrap();
        let e = su.batch_execute("INSERT INTO uq VALUES (1)").unwrap_err();
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.code(), &SqlState::UNIQUE_VIOLATION);
        assert_eq!(
            (db.schema(), db.table(), db.constraint()),
            (Some("public"), Some("uq"), Some("uq_pkey")),
            "{settings:?}"
        );
        // Through the utility hook too.
        let e = su.batch_execute("ALTER TABLE uq ADD CONSTRAINT negative CHECK (id < 0)").unwrap_err();
        assert_eq!(e.as_db_error().and_then(|d| d.constraint()), Some("negative"), "{settings:?}");
        // And PL/pgSQL's context lines.
        let e = su.batch_execute("DO $$ BEGIN RAISE EXCEPTION 'boom'; END $$").unwrap_err();
        let context = e.as_db_error().and_then(|d| d.where_()).unwrap_or_default().to_string();
        assert!(context.contains("PL/pgSQL"), "{settings:?}: context lost ({context:?})");
    }
}
