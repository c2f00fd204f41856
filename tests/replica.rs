//! A streaming hot standby (pg_basebackup -R -X stream) enforces the same policies as its primary:
//! the read path writes nothing, and policy changes committed on the primary reach open standby
//! connections through WAL replay of the cache invalidations.
mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const REPLAY: Duration = Duration::from_secs(30);
const PREFIX: &str = "pg_authz audit: ";

/// Primary with the fixture; `app` is an unmapped shared login, `ann_login` is mapped to ann
/// (viewer on session 3), carol has no roles.
fn primary() -> Cluster {
    let c = Cluster::start();
    c.create_login("app");
    c.create_login("ann_login");
    c.add_test_key();
    fixture(&c, &["app", "ann_login"]);
    c.superuser()
        .batch_execute(
            "SELECT authz.create_principal('ann', 'user', 'ann_login');
             SELECT authz.assign_role('ann', 'viewer', 'session', '3');
             SELECT authz.create_principal('carol');
             GRANT SELECT ON sessions TO app, ann_login;",
        )
        .unwrap();
    let wal_level: String = c.superuser().query_one("SHOW wal_level", &[]).unwrap().get(0);
    assert_eq!(wal_level, "replica");
    c
}

fn connect_named(c: &Cluster, role: &str, application_name: &str) -> Client {
    let mut cfg = c.config(role);
    cfg.application_name(application_name);
    cfg.connect(NoTls).unwrap_or_else(|e| panic!("connect as {role}: {e}"))
}

/// How an identity is established on a connection.
#[derive(Clone, Copy, Debug)]
enum Via {
    SetLocal,
    Login,
    NoToken,
}

/// Everything one identity observes, in one transaction: user id, (sessions, image count) of
/// the protected table, permitted ids, check() on every session, and require() on session 1.
#[derive(Debug, PartialEq)]
struct Observed {
    user: Option<String>,
    visible: (Vec<i64>, i64),
    permitted: Vec<String>,
    checks: Vec<bool>,
    require_1: Result<(), String>,
}

fn observe(client: &mut Client, via: Via, tok: &str) -> Observed {
    let mut tx = client.transaction().unwrap();
    match via {
        Via::SetLocal => tx.batch_execute(&format!("SET LOCAL authz.token = '{tok}'")).unwrap(),
        Via::Login => {
            let sub: String = tx.query_one("SELECT authz.login($1)", &[&tok]).unwrap().get(0);
            assert!(!sub.is_empty());
        }
        Via::NoToken => {}
    }
    let user: Option<String> = tx.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
    let visible = visible(&mut tx).unwrap();
    let mut permitted: Vec<String> = tx.query_one("SELECT authz.permitted_ids('session', 'read')", &[]).unwrap().get(0);
    permitted.sort();
    let checks = (1..=6)
        .map(|s| tx.query_one("SELECT authz.check('session', $1, 'read')", &[&s.to_string()]).unwrap().get(0))
        .collect();
    let require_1 = {
        let mut sp = tx.transaction().unwrap();
        let r = sp.execute("SELECT authz.require('session', '1', 'read')", &[]);
        let r = match r {
            Ok(_) => Ok(()),
            Err(e) => Err(e.code().map(|c| c.code().to_string()).unwrap_or_else(|| e.to_string())),
        };
        sp.rollback().unwrap();
        r
    };
    tx.commit().unwrap();
    Observed { user, visible, permitted, checks, require_1 }
}

fn audit_lines(c: &Cluster, application_name: &str) -> Vec<Value> {
    c.log_contents()
        .lines()
        .filter_map(|l| l.find(PREFIX).map(|i| &l[i + PREFIX.len()..]))
        .map(|j| serde_json::from_str::<Value>(j).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {j}")))
        .filter(|v| v["application_name"] == application_name)
        .collect()
}

/// The four identities, how each is established, and what each must observe.
fn cases() -> Vec<(&'static str, Via, String, Observed)> {
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (
            "app",
            Via::SetLocal,
            token("alice"),
            Observed {
                user: Some("alice".into()),
                visible: (vec![1, 2, 5, 6], 40),
                permitted: ids(&["1", "2", "5", "6"]),
                checks: vec![true, true, false, false, true, true],
                require_1: Ok(()),
            },
        ),
        (
            "app",
            Via::Login,
            token("bob"),
            Observed {
                user: Some("bob".into()),
                visible: (vec![3, 4, 5, 6], 40),
                permitted: ids(&["3", "4", "5", "6"]),
                checks: vec![false, false, true, true, true, true],
                require_1: Err("42501".into()),
            },
        ),
        (
            "ann_login",
            Via::NoToken,
            String::new(),
            Observed {
                user: Some("ann".into()),
                visible: (vec![3, 5, 6], 30),
                permitted: ids(&["3", "5", "6"]),
                checks: vec![false, false, true, false, true, true],
                require_1: Err("42501".into()),
            },
        ),
        (
            "app",
            Via::NoToken,
            String::new(),
            Observed {
                user: None,
                visible: (vec![5, 6], 20),
                permitted: ids(&["5", "6"]),
                checks: vec![false, false, false, false, true, true],
                require_1: Err("42501".into()),
            },
        ),
    ]
}

/// The subset of `observe` that involves no denial, no audit event and no `authz.login()`: what a
/// standby answers today (see the ignored tests below for the rest).
fn observe_allowed(client: &mut Client, via: Via, tok: &str) -> (Option<String>, (Vec<i64>, i64), Vec<String>) {
    let mut tx = client.transaction().unwrap();
    match via {
        Via::SetLocal | Via::Login => tx.batch_execute(&format!("SET LOCAL authz.token = '{tok}'")).unwrap(),
        Via::NoToken => {}
    }
    let user: Option<String> = tx.query_one("SELECT authz.user_id()", &[]).unwrap().get(0);
    let visible = visible(&mut tx).unwrap();
    let mut permitted: Vec<String> = tx.query_one("SELECT authz.permitted_ids('session', 'read')", &[]).unwrap().get(0);
    permitted.sort();
    for id in &permitted {
        let ok: bool = tx.query_one("SELECT authz.check('session', $1, 'read')", &[id]).unwrap().get(0);
        assert!(ok, "check() refused permitted session {id}");
    }
    tx.commit().unwrap();
    (user, visible, permitted)
}

#[test]
fn standby_sees_what_the_primary_sees() {
    let p = primary();
    let s = Cluster::standby_of(&p, &[]);
    for (role, via, tok, expected) in cases() {
        let expected = (expected.user, expected.visible, expected.permitted);
        assert_eq!(observe_allowed(&mut p.connect(role), via, &tok), expected, "primary: {role} {via:?}");
        let mut sc = s.connect(role);
        let read_only: String = sc.query_one("SHOW transaction_read_only", &[]).unwrap().get(0);
        assert_eq!(read_only, "on");
        assert_eq!(observe_allowed(&mut sc, via, &tok), expected, "standby: {role} {via:?}");
    }
    // Writes are refused by the standby itself, before any policy.
    let mut sc = s.connect("app");
    let mut tx = sc.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("alice"))).unwrap();
    let r = tx.execute("UPDATE images SET label = 'x' WHERE id = 1", &[]);
    assert_eq!(code(r), SqlState::READ_ONLY_SQL_TRANSACTION);
    tx.rollback().unwrap();
}

/// Root cause of the standby failures below: pg_authz's read path assigns a transaction id on
/// the primary (burning an XID and writing a commit record), which a standby cannot do.
/// `authz.login()` sets the token through `Spi::run_with_args` and the audit's one-time
/// `inet_client_addr()` lookup uses `Spi::get_one`; both go through pgrx's `SpiClient::update`,
/// which calls `GetCurrentTransactionId()`.
#[test]
fn read_path_assigns_no_transaction_id() {
    let p = primary();
    let mut app = p.connect("app");
    let xid = |tx: &mut postgres::Transaction| -> Option<String> {
        tx.query_one("SELECT pg_current_xact_id_if_assigned()::text", &[]).unwrap().get(0)
    };
    let mut tx = app.transaction().unwrap();
    let sub: String = tx.query_one("SELECT authz.login($1)", &[&token("alice")]).unwrap().get(0);
    assert_eq!(sub, "alice");
    assert_eq!(xid(&mut tx), None, "authz.login() assigned a transaction id");
    tx.commit().unwrap();
    let mut tx = app.transaction().unwrap();
    // A denial is an audit event under the default authz.audit = 'denied'.
    let ok: bool = tx.query_one("SELECT authz.check('session', '1', 'read')", &[]).unwrap().get(0);
    assert!(!ok);
    assert_eq!(xid(&mut tx), None, "an audited denial assigned a transaction id");
    tx.commit().unwrap();
}

#[test]
fn standby_answers_login_denials_and_bad_tokens_like_the_primary() {
    let p = primary();
    let s = Cluster::standby_of(&p, &[]);
    for (role, via, tok, expected) in cases() {
        assert_eq!(observe(&mut p.connect(role), via, &tok), expected, "primary: {role} {via:?}");
        assert_eq!(observe(&mut s.connect(role), via, &tok), expected, "standby: {role} {via:?}");
    }
    for c in [&p, &s] {
        let mut app = c.connect("app");
        // An empty permission set (a denial, audited by default).
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("bob"))).unwrap();
        let w: Vec<String> = tx.query_one("SELECT authz.permitted_ids('session', 'write')", &[]).unwrap().get(0);
        assert!(w.is_empty());
        tx.commit().unwrap();
        // A bad token is 28000 everywhere.
        let mut forged = token("alice");
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL authz.token = '{forged}'")).unwrap();
        assert_eq!(code(visible(&mut tx)), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        tx.rollback().unwrap();
    }
}

#[test]
fn standby_audit_all_logs_its_decisions() {
    let p = primary();
    let s = Cluster::standby_of(&p, &["authz.audit=all"]);
    let alice = token("alice");
    let mut sc = connect_named(&s, "app", "replica_audit");
    let mut tx = sc.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{alice}'")).unwrap();
    assert_eq!(visible(&mut tx).unwrap(), (vec![1, 2, 5, 6], 40));
    tx.commit().unwrap();
    let mut ann = connect_named(&s, "ann_login", "replica_audit");
    assert_eq!(visible(&mut ann).unwrap(), (vec![3, 5, 6], 30));
    let audit: String = sc.query_one("SHOW authz.audit", &[]).unwrap().get(0);
    assert_eq!(audit, "all");

    let lines = audit_lines(&s, "replica_audit");
    let decision = lines
        .iter()
        .find(|v| v["event"] == "decision" && v["principal"] == "alice" && v["identity"] == "token")
        .unwrap_or_else(|| panic!("no decision line for alice in the standby log: {lines:?}"));
    assert_eq!(decision["resource_type"], "session");
    assert_eq!(decision["action"], "read");
    assert_eq!(decision["outcome"], "allow");
    assert_eq!(decision["permitted"], 4);
    assert_eq!(decision["of"], 6);
    assert!(
        lines.iter().any(|v| v["event"] == "token_accepted" && v["sub"] == "alice"),
        "no token_accepted line for alice: {lines:?}"
    );
    assert!(
        lines.iter().any(|v| v["event"] == "decision" && v["principal"] == "ann" && v["identity"] == "login"),
        "no decision line for ann: {lines:?}"
    );
    // The primary (authz.audit = 'denied') logged nothing for these sessions.
    assert!(audit_lines(&p, "replica_audit").is_empty());
}

/// `authz.revoke_key()` deletes through `Spi::get_one_with_args("DELETE … RETURNING kid")`, which
/// runs the DELETE with a row limit: PostgreSQL then never fires the AFTER STATEMENT trigger
/// `authz_invalidate`, so no backend — on the primary or a standby — drops its cached key set and
/// verified tokens. (A plain `DELETE FROM authz.keys` does invalidate.)
#[test]
fn revoked_key_is_rejected_by_open_connections() {
    let p = primary();
    let s = Cluster::standby_of(&p, &[]);
    let alice = token("alice");
    let mut on_primary = p.connect("app");
    let mut on_standby = s.connect("app");
    for c in [&mut on_primary, &mut on_standby] {
        assert_eq!(observe_visible(c, Some(&alice)).unwrap(), (vec![1, 2, 5, 6], 40));
    }
    let removed: bool = p.superuser().query_one("SELECT authz.revoke_key($1)", &[&KID]).unwrap().get(0);
    assert!(removed);
    s.wait_for_replay(&p, REPLAY);
    // A fresh backend rejects the token ...
    assert_eq!(
        code(observe_visible(&mut p.connect("app"), Some(&alice))),
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
    // ... and so must the open ones.
    for (c, which) in [(&mut on_primary, "primary"), (&mut on_standby, "standby")] {
        match observe_visible(c, Some(&alice)) {
            Ok(v) => panic!("an open {which} backend still accepts a token signed with the revoked key: {v:?}"),
            Err(e) => assert_eq!(e.code(), Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION), "{which}: {e}"),
        }
    }
}

fn observe_visible(client: &mut Client, tok: Option<&str>) -> Result<(Vec<i64>, i64), postgres::Error> {
    let mut tx = client.transaction()?;
    if let Some(t) = tok {
        tx.batch_execute(&format!("SET LOCAL authz.token = '{t}'"))?;
    }
    let v = visible(&mut tx)?;
    tx.commit()?;
    Ok(v)
}

#[test]
fn changes_on_the_primary_reach_open_standby_connections() {
    let p = primary();
    let s = Cluster::standby_of(&p, &[]);
    let carol = token("carol");
    let mut su = p.superuser();
    // Opened once, kept across every change; caches warmed before each change.
    let mut sb = s.connect("app");
    let mut sb_ann = s.connect("ann_login");
    let pid: i32 = sb.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let ann_pid: i32 = sb_ann.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    assert_eq!(observe_visible(&mut sb, Some(&carol)).unwrap(), (vec![5, 6], 20));
    assert_eq!(observe_visible(&mut sb_ann, None).unwrap(), (vec![3, 5, 6], 30));

    // Grants.
    su.batch_execute(
        "SELECT authz.assign_role('carol', 'viewer', 'project', '1');
         SELECT authz.assign_role('ann', 'viewer', 'session', '4');",
    )
    .unwrap();
    s.wait_for_replay(&p, REPLAY);
    assert_eq!(observe_visible(&mut sb, Some(&carol)).unwrap(), (vec![1, 2, 5, 6], 40), "grant not seen");
    assert_eq!(observe_visible(&mut sb_ann, None).unwrap(), (vec![3, 4, 5, 6], 40), "grant not seen (login)");

    // A new session under project 1 (a change to a registered resource table).
    su.batch_execute(
        "INSERT INTO sessions VALUES (7, 1);
         INSERT INTO images SELECT g, 7, 'img' || g FROM generate_series(61, 65) g;",
    )
    .unwrap();
    s.wait_for_replay(&p, REPLAY);
    assert_eq!(observe_visible(&mut sb, Some(&carol)).unwrap(), (vec![1, 2, 5, 6, 7], 45), "new session not seen");
    // Moved to project 2: out of carol's reach.
    su.batch_execute("UPDATE sessions SET project_id = 2 WHERE id = 7").unwrap();
    s.wait_for_replay(&p, REPLAY);
    assert_eq!(observe_visible(&mut sb, Some(&carol)).unwrap(), (vec![1, 2, 5, 6], 40), "moved session still seen");

    // A deny rule.
    su.batch_execute("SELECT authz.deny('viewer', 'session', '2', 'read')").unwrap();
    s.wait_for_replay(&p, REPLAY);
    assert_eq!(observe_visible(&mut sb, Some(&carol)).unwrap(), (vec![1, 5, 6], 30), "deny not seen");
    su.batch_execute("SELECT authz.remove_rule('viewer', 'session', '2', 'read')").unwrap();
    s.wait_for_replay(&p, REPLAY);
    assert_eq!(observe_visible(&mut sb, Some(&carol)).unwrap(), (vec![1, 2, 5, 6], 40), "removed deny still seen");

    // Revokes.
    su.batch_execute(
        "SELECT authz.unassign_role('carol', 'viewer', 'project', '1');
         SELECT authz.unassign_role('ann', 'viewer', 'session', '4');",
    )
    .unwrap();
    s.wait_for_replay(&p, REPLAY);
    assert_eq!(observe_visible(&mut sb, Some(&carol)).unwrap(), (vec![5, 6], 20), "revoke not seen: stale cache");
    assert_eq!(observe_visible(&mut sb_ann, None).unwrap(), (vec![3, 5, 6], 30), "revoke not seen (login)");

    // Key rotation: a new key added on the primary verifies tokens on the open standby backend.
    su.execute("SELECT authz.add_key('it-key-2', 'HS256', $1)", &[&SECRET]).unwrap();
    s.wait_for_replay(&p, REPLAY);
    let rotated = sign(&serde_json::json!({"sub": "carol", "exp": now() + 600}), Some("it-key-2"), SECRET);
    assert_eq!(observe_visible(&mut sb, Some(&rotated)).unwrap(), (vec![5, 6], 20), "new key not seen");

    // All of it on the same two standby backends.
    let pid_after: i32 = sb.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let ann_pid_after: i32 = sb_ann.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    assert_eq!((pid, ann_pid), (pid_after, ann_pid_after));
}
