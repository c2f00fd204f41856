//! Audit lines in the server log (`pg_authz audit: {json}`).
mod common;

use common::*;
use serde_json::Value;

const PREFIX: &str = "pg_authz audit: ";

fn audit_lines(c: &Cluster) -> Vec<Value> {
    c.log_contents()
        .lines()
        .filter_map(|l| l.find(PREFIX).map(|i| &l[i + PREFIX.len()..]))
        .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {j}")))
        .collect()
}

fn with_app<'a>(lines: &'a [Value], app: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| v["application_name"] == app).collect()
}

fn setup() -> Cluster {
    let c = platform(&["app"]);
    let mut su = c.superuser();
    su.batch_execute(
        "CREATE TABLE frames (id bigint PRIMARY KEY, session_id bigint NOT NULL REFERENCES sessions);
         CREATE INDEX ON frames (session_id);
         INSERT INTO frames SELECT g, 1 + g % 2 FROM generate_series(1, 10000) g;
         INSERT INTO frames SELECT g, 3 FROM generate_series(10001, 10500) g;
         SELECT authz.protect('frames', 'session_id', 'session');
         GRANT SELECT ON frames TO app;
         ANALYZE;
         SELECT authz.user_id();",
    )
    .unwrap();
    su.batch_execute("ALTER SYSTEM SET authz.audit = 'all'").unwrap();
    su.batch_execute("SELECT pg_reload_conf()").unwrap();
    // Wait until new backends see the reloaded setting.
    for _ in 0..100 {
        let mut probe = c.connect("app");
        probe.batch_execute("SELECT authz.user_id()").unwrap();
        let v: String = probe.query_one("SHOW authz.audit", &[]).unwrap().get(0);
        if v == "all" {
            return c;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("authz.audit = 'all' never took effect");
}

fn connect_as_app(c: &Cluster, application_name: &str) -> Client {
    let mut cfg = c.config("app");
    cfg.application_name(application_name);
    cfg.connect(NoTls).unwrap()
}

#[test]
fn token_and_decision_events() {
    let c = setup();
    let mut app = connect_as_app(&c, "audit_events");
    let alice = token("alice");
    let bob = token("bob");

    // Accepted token + an allowed read.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{alice}'")).unwrap();
    assert_eq!(visible(&mut tx).unwrap(), (vec![1, 2, 5, 6], 40));
    tx.commit().unwrap();

    // Rejected tokens: expired and bad signature.
    let expired = mint("carol", now() - 3600);
    let mut forged = token("carol");
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [&expired, &forged] {
        let mut tx = app.transaction().unwrap();
        let r = tx.query_one("SELECT authz.login($1)", &[bad]).map(|r| r.get::<_, String>(0));
        assert_eq!(code(r), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        tx.rollback().unwrap();
    }

    // A denied write inside a transaction that is rolled back.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{bob}'")).unwrap();
    let r = tx.execute("INSERT INTO images VALUES (1000, 3, 'denied')", &[]);
    assert_eq!(code(r), SqlState::INSUFFICIENT_PRIVILEGE);
    tx.rollback().unwrap();

    let lines = audit_lines(&c);
    let mine = with_app(&lines, "audit_events");

    let accepted: Vec<_> = mine.iter().filter(|v| v["event"] == "token_accepted").collect();
    assert!(
        accepted.iter().any(|v| v["sub"] == "alice" && v["kid"] == KID && v["outcome"] == "accepted"),
        "{accepted:?}"
    );
    assert!(accepted.iter().any(|v| v["sub"] == "bob"), "{accepted:?}");
    assert!(accepted.iter().all(|v| v["session_user"] == "app"));

    let rejected: Vec<_> = mine.iter().filter(|v| v["event"] == "token_rejected").collect();
    let reasons: Vec<&str> = rejected.iter().map(|v| v["reason"].as_str().unwrap_or("")).collect();
    assert_eq!(reasons.iter().filter(|r| **r == "expired").count(), 1, "{rejected:?}");
    assert_eq!(reasons.iter().filter(|r| **r == "bad signature").count(), 1, "{rejected:?}");
    assert!(rejected.iter().all(|v| v["outcome"] == "rejected"));
    // Rejected events never carry the token or a claimed subject.
    for v in &rejected {
        let s = v.to_string();
        assert!(!s.contains(&expired) && !s.contains(&forged) && !s.contains("carol"), "{s}");
    }

    let read = mine
        .iter()
        .find(|v| v["event"] == "decision" && v["principal"] == "alice" && v["action"] == "read")
        .unwrap_or_else(|| panic!("no read decision for alice in {mine:?}"));
    assert_eq!(read["resource_type"], "session");
    assert_eq!(read["identity"], "token");
    assert_eq!(read["outcome"], "allow");
    assert_eq!(read["permitted"], 4);
    assert_eq!(read["of"], 6);
    assert_eq!(read["sub"], "alice");

    let write = mine
        .iter()
        .find(|v| v["event"] == "decision" && v["principal"] == "bob" && v["action"] == "write")
        .unwrap_or_else(|| panic!("no write decision for bob (rolled back) in {mine:?}"));
    assert_eq!(write["resource_type"], "session");
    assert_eq!(write["outcome"], "deny");
    assert_eq!(write["permitted"], 0);
    assert_eq!(write["rules"], "default deny");
}

#[test]
fn big_select_logs_exactly_one_decision() {
    let c = setup();
    let mut app = connect_as_app(&c, "audit_bigscan");
    let alice = token("alice");
    let count = |c: &Cluster| {
        audit_lines(c)
            .iter()
            .filter(|v| {
                v["application_name"] == "audit_bigscan"
                    && v["event"] == "decision"
                    && v["resource_type"] == "session"
                    && v["action"] == "read"
            })
            .count()
    };

    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{alice}'")).unwrap();
    // Warm up identity (token_accepted) in a statement that resolves nothing.
    tx.query_one("SELECT authz.user_id()", &[]).unwrap();
    let before = count(&c);
    let rows = tx.query("SELECT id, session_id FROM frames", &[]).unwrap();
    let after = count(&c);
    tx.commit().unwrap();
    assert_eq!(rows.len(), 10000);
    assert!(rows.iter().all(|r| [1i64, 2].contains(&r.get::<_, i64>(1))));
    assert_eq!(after - before, 1, "decision lines for one 10,000-row SELECT");

    // The same statement again in a new transaction: again exactly one.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{alice}'")).unwrap();
    let before = count(&c);
    let n: i64 = tx.query_one("SELECT count(*) FROM (SELECT * FROM frames) f", &[]).unwrap().get(0);
    let after = count(&c);
    tx.commit().unwrap();
    assert_eq!(n, 10000);
    assert_eq!(after - before, 1);
}

/// A statement answered by an index-only scan never calls the row filter (the index condition's
/// array carries the decision), and a bitmap scan calls both the array and the recheck filter:
/// each logs exactly one decision.
#[test]
fn index_driven_plans_log_exactly_one_decision() {
    let c = setup();
    c.superuser()
        .batch_execute(
            "SELECT authz.create_principal('solo');
             SELECT authz.assign_role('solo', 'viewer', 'session', '3');",
        )
        .unwrap();
    c.superuser().batch_execute("VACUUM ANALYZE frames").unwrap();
    let mut app = connect_as_app(&c, "audit_index_plans");
    let solo = token("solo");
    // The decision lines this test's connection wrote for one principal.
    let decisions = |c: &Cluster, principal: &str| {
        audit_lines(c)
            .into_iter()
            .filter(|v| {
                v["application_name"] == "audit_index_plans" && v["event"] == "decision" && v["principal"] == principal
            })
            .collect::<Vec<_>>()
    };
    let plan_of = |tx: &mut postgres::Transaction| -> Vec<String> {
        tx.query("EXPLAIN SELECT count(*) FROM frames", &[]).unwrap().iter().map(|r| r.get(0)).collect()
    };
    for (plan, settings) in [
        ("Index Only Scan", "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"),
        (
            "Bitmap Heap Scan",
            "SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off;",
        ),
    ] {
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL authz.token = '{solo}'; {settings}")).unwrap();
        let shown = plan_of(&mut tx);
        assert!(shown.iter().any(|l| l.contains(plan)), "expected {plan}: {shown:?}");
        let before = decisions(&c, "solo").len();
        let n: i64 = tx.query_one("SELECT count(*) FROM frames", &[]).unwrap().get(0);
        let after = decisions(&c, "solo").len();
        tx.commit().unwrap();
        assert_eq!(n, 500, "{plan}");
        assert_eq!(after - before, 1, "decision lines for one statement through a {plan}");
    }
    // A caller covering every session gets a plan without the filter (src/elision.rs): the
    // decision is logged at executor start instead, once.
    c.superuser()
        .batch_execute(
            "SELECT authz.create_principal('everyone_reader'); SELECT authz.assign_role('everyone_reader', 'viewer');",
        )
        .unwrap();
    let reader = token("everyone_reader");
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{reader}'")).unwrap();
    let shown = plan_of(&mut tx);
    assert!(!shown.iter().any(|l| l.contains("permits")), "expected no filter: {shown:?}");
    let before = decisions(&c, "everyone_reader").len();
    let n: i64 = tx.query_one("SELECT count(*) FROM frames", &[]).unwrap().get(0);
    tx.commit().unwrap();
    let after = decisions(&c, "everyone_reader");
    assert_eq!(n, 10500);
    assert_eq!(after.len() - before, 1, "decision lines for one unfiltered statement");
    let last = after.last().unwrap();
    assert_eq!(last["outcome"], "allow");
    assert_eq!(last["permitted"], last["of"]);
}

/// `off` logs nothing, `denied` logs only rejections and denials, `all` logs everything. Each level
/// is set per login role (the setting is superuser-only; a client cannot lower it itself).
#[test]
fn audit_levels_filter_events() {
    let c = setup();
    let mut su = c.superuser();
    for (login, level) in [("lvl_off", "off"), ("lvl_denied", "denied"), ("lvl_all", "all")] {
        c.create_login(login);
        su.batch_execute(&format!("GRANT SELECT ON images TO {login}; ALTER ROLE {login} SET authz.audit = '{level}'"))
            .unwrap();
    }
    let bob = token("bob");
    let expired = mint("carol", now() - 3600);
    for login in ["lvl_off", "lvl_denied", "lvl_all"] {
        let mut cfg = c.config(login);
        cfg.application_name(&format!("levels_{login}"));
        let mut client = cfg.connect(NoTls).unwrap();
        // A client cannot change the level itself (once the library is loaded the setting is
        // superuser-only; before that a placeholder value is discarded at load, see SECURITY.md).
        client.batch_execute("SELECT authz.user_id()").unwrap();
        assert_eq!(code(client.batch_execute("SET authz.audit = 'off'")), SqlState::INSUFFICIENT_PRIVILEGE);
        // An allowed read (bob: sessions 3..6), a denied check, a rejected token.
        let mut tx = client.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL authz.token = '{bob}'")).unwrap();
        assert_eq!(visible(&mut tx).unwrap(), (vec![3, 4, 5, 6], 40));
        let allowed: bool = tx.query_one("SELECT authz.check('session', '1', 'read')", &[]).unwrap().get(0);
        assert!(!allowed);
        tx.commit().unwrap();
        let mut tx = client.transaction().unwrap();
        let r = tx.query_one("SELECT authz.login($1)", &[&expired]).map(|r| r.get::<_, String>(0));
        assert_eq!(code(r), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        tx.rollback().unwrap();
    }
    let lines = audit_lines(&c);
    let events = |login: &str| -> Vec<(String, String)> {
        with_app(&lines, &format!("levels_{login}"))
            .iter()
            .map(|v| (v["event"].as_str().unwrap_or("").to_string(), v["outcome"].as_str().unwrap_or("").to_string()))
            .collect()
    };
    assert_eq!(events("lvl_off"), Vec::<(String, String)>::new());
    let denied = events("lvl_denied");
    assert!(denied.contains(&("decision".into(), "deny".into())), "{denied:?}");
    assert!(denied.contains(&("token_rejected".into(), "rejected".into())), "{denied:?}");
    assert!(denied.iter().all(|(_, o)| o == "deny" || o == "rejected"), "denied level logged an allow: {denied:?}");
    let all = events("lvl_all");
    assert!(all.contains(&("decision".into(), "allow".into())), "{all:?}");
    assert!(all.contains(&("decision".into(), "deny".into())), "{all:?}");
    assert!(all.contains(&("token_rejected".into(), "rejected".into())), "{all:?}");
}
