//! After any single committed change — to a grant, a rule, a membership, a claim mapping, or a row
//! of a resource table (a new session, a session moved to another project, a public flag, an owner)
//! — every open connection's next statement sees exactly what a fresh connection sees: ad hoc
//! queries, prepared statements (generic plans), `permitted_ids()` and `check()` alike. Each change
//! reaches the caches by its own path (grants, policy, one table's data), so each is tested.
mod common;

use common::*;

const CALLERS: [&str; 7] = ["alice", "bob", "carol", "root", "dave", "erin", "anonymous"];

fn setup() -> Cluster {
    let c = Cluster::start();
    c.create_login("app");
    c.add_test_key();
    c.superuser()
        .batch_execute(
            "CREATE TABLE projects (id bigint PRIMARY KEY, public boolean NOT NULL DEFAULT false, lead text);
             CREATE TABLE sessions (id bigint PRIMARY KEY, project_id bigint NOT NULL REFERENCES projects);
             CREATE INDEX ON sessions (project_id);
             CREATE TABLE images (id bigint PRIMARY KEY, session_id bigint NOT NULL REFERENCES sessions);
             CREATE INDEX ON images (session_id);
             INSERT INTO projects SELECT g, g = 3, NULL FROM generate_series(1, 3) g;
             INSERT INTO sessions SELECT g, (g + 1) / 2 FROM generate_series(1, 6) g;
             INSERT INTO images SELECT g, 1 + (g - 1) / 10 FROM generate_series(1, 60) g;
             SELECT authz.register_resource_type('project', 'projects', 'id', public_column => 'public', owner_column => 'lead');
             SELECT authz.register_resource_type('session', 'sessions', 'id', 'project', 'project_id');
             SELECT authz.protect('images', 'session_id', 'session');
             SELECT authz.create_role('viewer');
             SELECT authz.create_role('editor', ARRAY['viewer']);
             SELECT authz.create_role('restricted');
             SELECT authz.allow('viewer', 'session', '*', 'read');
             SELECT authz.allow('editor', 'session', '*', 'write');
             SELECT authz.allow('owner', 'session', '*', 'read');
             SELECT authz.create_principal(p) FROM unnest(ARRAY['alice', 'bob', 'carol', 'root', 'dave', 'erin']) p;
             SELECT authz.create_principal('team', 'group');
             SELECT authz.assign_role('alice', 'editor', 'project', '1');
             SELECT authz.assign_role('bob', 'viewer', 'project', '2');
             SELECT authz.assign_role('root', 'viewer');
             GRANT SELECT ON images TO app;",
        )
        .unwrap();
    c
}

/// What a connection sees: the visible images' sessions and count, a prepared statement's answer
/// (executed again: a generic plan after five runs), the permitted session ids, and check() of 5.
type View = ((Vec<i64>, i64), i64, Vec<String>, bool);

struct Caller {
    name: &'static str,
    client: Client,
    prepared: postgres::Statement,
}

fn connect(c: &Cluster, name: &str) -> (Client, postgres::Statement) {
    let mut client = c.connect("app");
    if name != "anonymous" {
        let token = if name == "erin" {
            sign(
                &serde_json::json!({"sub": "erin", "exp": now() + 3600, "realm_access": {"roles": ["viewer"]}}),
                Some(KID),
                SECRET,
            )
        } else {
            token(name)
        };
        client.execute("SELECT set_config('authz.token', $1, false)", &[&token]).unwrap();
    }
    let prepared = client.prepare("SELECT count(*) FROM images WHERE id > $1").unwrap();
    // Five custom plans, then PostgreSQL may switch to a generic one: reach that state now.
    for _ in 0..6 {
        client.query_one(&prepared, &[&0i64]).unwrap();
    }
    (client, prepared)
}

fn view(client: &mut Client, prepared: &postgres::Statement) -> View {
    let seen = visible(client).unwrap();
    let by_prepared: i64 = client.query_one(prepared, &[&0i64]).unwrap().get(0);
    let ids: Vec<String> = client.query_one("SELECT authz.permitted_ids('session', 'read')", &[]).unwrap().get(0);
    let check: bool = client.query_one("SELECT authz.check('session', '5', 'read')", &[]).unwrap().get(0);
    (seen, by_prepared, ids, check)
}

#[test]
fn every_open_connection_sees_what_a_fresh_one_sees_after_each_single_change() {
    let c = setup();
    let mut callers: Vec<Caller> = CALLERS
        .iter()
        .map(|name| {
            let (client, prepared) = connect(&c, name);
            Caller { name, client, prepared }
        })
        .collect();
    let mut su = c.superuser();
    let changes: &[(&str, &str)] = &[
        (
            "a new session under project 1",
            "INSERT INTO sessions VALUES (7, 1); INSERT INTO images VALUES (61, 7), (62, 7)",
        ),
        ("the session moved to project 2", "UPDATE sessions SET project_id = 2 WHERE id = 7"),
        ("project 1 made public", "UPDATE projects SET public = true WHERE id = 1"),
        ("project 1 private again", "UPDATE projects SET public = false WHERE id = 1"),
        ("a lead named on project 2 (ownership)", "UPDATE projects SET lead = 'dave' WHERE id = 2"),
        ("a scoped grant to carol", "SELECT authz.assign_role('carol', 'viewer', 'session', '3')"),
        ("carol joins a team", "SELECT authz.add_member('team', 'carol')"),
        ("the team gets project 2", "SELECT authz.assign_role('team', 'viewer', 'project', '2')"),
        ("a deny on session 4 for viewers", "SELECT authz.deny('viewer', 'session', '4', 'read')"),
        ("the deny removed", "SELECT authz.remove_rule('viewer', 'session', '4', 'read')"),
        (
            "root also holds a role denying session 5",
            "SELECT authz.assign_role('root', 'restricted'); SELECT authz.deny('restricted', 'session', '5', 'read')",
        ),
        ("a new session under project 3", "INSERT INTO sessions VALUES (8, 3); INSERT INTO images VALUES (63, 8)"),
        ("restricted denies project 3", "SELECT authz.deny('restricted', 'project', '3', 'read')"),
        (
            "a new session under the denied project",
            "INSERT INTO sessions VALUES (9, 3); INSERT INTO images VALUES (64, 9)",
        ),
        ("roles from the token claim realm_access.roles", "SELECT authz.map_claim('realm_access.roles')"),
        ("the claim mapping removed", "SELECT authz.unmap_claim('realm_access.roles')"),
        ("images and session 7 deleted", "DELETE FROM images WHERE session_id = 7; DELETE FROM sessions WHERE id = 7"),
        ("a statement that changes no row", "UPDATE sessions SET project_id = project_id WHERE false"),
        ("carol leaves the team", "SELECT authz.remove_member('team', 'carol')"),
        ("the lead removed", "UPDATE projects SET lead = NULL WHERE id = 2"),
    ];
    let mut differences = Vec::new();
    for (what, sql) in changes {
        su.batch_execute(sql).unwrap_or_else(|e| panic!("{what}: {e}"));
        for caller in callers.iter_mut() {
            let open = view(&mut caller.client, &caller.prepared);
            let (mut fresh_client, fresh_prepared) = connect(&c, caller.name);
            let fresh = view(&mut fresh_client, &fresh_prepared);
            if open != fresh {
                differences.push(format!("after {what}: {} open {open:?} fresh {fresh:?}", caller.name));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    // The sequence really moved what callers see (a test that cannot fail proves nothing).
    let Caller { client, prepared, .. } = &mut callers[3];
    let root = view(client, prepared);
    assert!(!root.0 .0.contains(&5) && !root.0 .0.contains(&9) && root.0 .0.contains(&1), "{root:?}");
    let Caller { client, prepared, .. } = &mut callers[2];
    let carol = view(client, prepared);
    assert_eq!(carol.0 .0, vec![3, 5, 6, 8, 9], "{carol:?}");
}

/// A caller allowed every session but a few gets `authz.permits_stored()` from the planner ("not
/// one of the excluded ids", the key vouching that the id exists) and it stays exact: a session
/// created under a denied project after the plan was made is excluded by the next execution of the
/// same prepared statement, and the plan answers right for a caller whose set is listed.
#[test]
fn all_but_a_few_gets_the_hand_written_form_and_stays_exact() {
    let c = setup();
    let mut su = c.superuser();
    su.batch_execute(
        "SELECT authz.assign_role('root', 'restricted');
         SELECT authz.deny('restricted', 'project', '2', 'read');",
    )
    .unwrap();
    let mut app = c.connect("app");
    app.execute("SELECT set_config('authz.token', $1, false)", &[&token("root")]).unwrap();
    let plan: Vec<String> =
        app.query("EXPLAIN (COSTS OFF) SELECT count(*) FROM images", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    let plan = plan.join("\n");
    assert!(plan.contains("authz.permits_stored(session_id, "), "{plan}");
    assert!(!plan.contains("authz.permits("), "{plan}");
    let prepared = app
        .prepare("SELECT coalesce(array_agg(DISTINCT session_id ORDER BY session_id), '{}') FROM images WHERE id > $1")
        .unwrap();
    let sessions = |app: &mut Client| -> Vec<i64> { app.query_one(&prepared, &[&0i64]).unwrap().get(0) };
    for _ in 0..6 {
        assert_eq!(sessions(&mut app), vec![1, 2, 5, 6]);
    }
    su.batch_execute("INSERT INTO sessions VALUES (7, 2), (8, 1); INSERT INTO images VALUES (61, 7), (62, 8)").unwrap();
    assert_eq!(sessions(&mut app), vec![1, 2, 5, 6, 8]);
    // The same prepared statement for a caller whose set is listed, not a complement.
    app.execute("SELECT set_config('authz.token', $1, false)", &[&token("bob")]).unwrap();
    let again = Some(sessions(&mut app));
    assert_eq!(again, Some(vec![3, 4, 5, 6, 7]));
}

/// Row changes are announced by what they touched: an UPDATE of a column authorization never
/// reads announces nothing (no backend's caches move), and a statement touching more rows than are
/// worth naming one by one announces the whole table — both stay exact for open connections.
#[test]
fn unrelated_updates_announce_nothing_and_bulk_changes_announce_the_table() {
    let c = setup();
    let mut su = c.superuser();
    su.batch_execute("ALTER TABLE sessions ADD COLUMN note text").unwrap();
    let (mut alice, prepared) = connect(&c, "alice");
    let generation = |client: &mut Client| -> i64 {
        client.query_one("SELECT (authz.cache_stats()->>'generation')::bigint", &[]).unwrap().get(0)
    };
    let before = view(&mut alice, &prepared);
    let g0 = generation(&mut alice);
    su.batch_execute("UPDATE sessions SET note = 'checked'").unwrap();
    assert_eq!(view(&mut alice, &prepared), before);
    assert_eq!(generation(&mut alice), g0, "an update of an unread column moved the caches");
    // 200 new sessions under project 1 in one statement: past the per-statement key limit.
    su.batch_execute(
        "INSERT INTO sessions SELECT g, 1 FROM generate_series(100, 299) g;
         INSERT INTO images SELECT 1000 + g, g FROM generate_series(100, 299) g;",
    )
    .unwrap();
    let after = view(&mut alice, &prepared);
    let (mut fresh, fresh_prepared) = connect(&c, "alice");
    assert_eq!(after, view(&mut fresh, &fresh_prepared));
    assert_eq!(after.0 .1, before.0 .1 + 200, "{after:?}");
}

/// A resource table protected by its own id and read in full by a scoped caller: past a thousand
/// single-row probes the type is read whole once, and changes after that are answered key by key
/// (the changed ids, the changed parents' children) — exactly, for the open connection.
#[test]
fn a_self_protected_resource_table_read_whole_stays_exact_under_changes() {
    let c = setup();
    let mut su = c.superuser();
    su.batch_execute(
        "INSERT INTO sessions SELECT g, 1 + g % 3 FROM generate_series(100, 4100) g;
         SELECT authz.protect('sessions', 'id', 'session');
         GRANT SELECT ON sessions TO app;",
    )
    .unwrap();
    // The rows the policy admits (whose second branch also admits a row "this statement inserted"),
    // and the permitted set itself.
    let count = |client: &mut Client| -> (i64, i64, Vec<String>) {
        let r = client
            .query_one(
                "SELECT count(*), coalesce(sum(id), 0)::bigint, authz.permitted_ids('session', 'read') FROM sessions",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let (mut alice, _) = connect(&c, "alice");
    let before = count(&mut alice);
    assert_eq!(count(&mut alice), before);
    for (what, sql) in [
        ("a session under project 1", "INSERT INTO sessions VALUES (5000, 1)"),
        ("a session under project 2", "INSERT INTO sessions VALUES (5001, 2)"),
        ("a session moved from project 2 to 1", "UPDATE sessions SET project_id = 1 WHERE id = 101"),
        ("a session moved from project 1 to 2", "UPDATE sessions SET project_id = 2 WHERE id = 102"),
        ("a visible session deleted", "DELETE FROM sessions WHERE id = 5000"),
        ("project 2 made public", "UPDATE projects SET public = true WHERE id = 2"),
    ] {
        su.batch_execute(sql).unwrap_or_else(|e| panic!("{what}: {e}"));
        let open = count(&mut alice);
        let (mut fresh, _) = connect(&c, "alice");
        assert_eq!(open, count(&mut fresh), "after {what}");
    }
    assert_ne!(count(&mut alice), before, "the changes must have changed what alice sees");
}
