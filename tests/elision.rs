//! A caller whose rules cover every id of the type gets the unfiltered plan (src/elision.rs). These
//! tests hold that optimisation to the same answers as the filter, across everything that lets a
//! plan outlive the identity it was made for: prepared statements, PL/pgSQL, cursors, expiry and
//! policy changes. And they check that it is refused whenever the column could hold something else.
mod common;

use common::*;
use postgres::error::SqlState;
use postgres::Client;

fn setup() -> Cluster {
    let c = Cluster::start();
    c.create_login("app");
    fixture(&c, &["app"]);
    c.add_test_key();
    c.superuser()
        .batch_execute(
            // root reads every session (unscoped viewer: `*` on session); alice is scoped.
            "SELECT authz.create_principal('root');
             SELECT authz.assign_role('root', 'viewer');
             CREATE FUNCTION public.image_count() RETURNS bigint LANGUAGE plpgsql
                 AS $$ BEGIN RETURN (SELECT count(*) FROM images); END $$;
             GRANT EXECUTE ON FUNCTION public.image_count() TO app;",
        )
        .unwrap();
    c
}

fn plan(client: &mut Client, sql: &str) -> String {
    let rows = client.query(&format!("EXPLAIN (COSTS OFF) {sql}"), &[]).unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

fn count(client: &mut Client, sql: &str) -> Result<i64, postgres::Error> {
    client.query_one(sql, &[]).map(|r| r.get(0))
}

fn as_token(client: &mut Client, sub: &str) {
    client.execute("SELECT set_config('authz.token', $1, false)", &[&token(sub)]).unwrap();
}

#[test]
fn the_filter_goes_only_for_a_caller_covering_every_id() {
    let c = setup();
    let mut app = c.connect("app");
    as_token(&mut app, "root");
    let p = plan(&mut app, "SELECT count(*) FROM images");
    assert!(!p.contains("permits"), "root should read without a filter:\n{p}");
    assert_eq!(count(&mut app, "SELECT count(*) FROM images").unwrap(), 60);
    // Scoped access (alice: editor on project 1) keeps the filter, and its answer.
    as_token(&mut app, "alice");
    assert!(plan(&mut app, "SELECT count(*) FROM images").contains("authz.permits"));
    assert_eq!(count(&mut app, "SELECT count(*) FROM images").unwrap(), 40);
    // Anonymous (public project 3 only) too.
    app.batch_execute("RESET authz.token").unwrap();
    assert!(plan(&mut app, "SELECT count(*) FROM images").contains("authz.permits"));
    assert_eq!(count(&mut app, "SELECT count(*) FROM images").unwrap(), 20);
}

#[test]
fn any_deny_reaching_the_caller_keeps_the_filter() {
    let c = setup();
    let mut su = c.superuser();
    let mut app = c.connect("app");
    as_token(&mut app, "root");
    // A deny held through a scoped grant of another role still reaches root.
    su.batch_execute(
        "SELECT authz.create_role('blocked');
         SELECT authz.deny('blocked', 'session', '2', 'read');
         SELECT authz.assign_role('root', 'blocked', 'project', '1');",
    )
    .unwrap();
    let mut app = c.connect("app");
    as_token(&mut app, "root");
    // The filter stays, in the form written for a caller allowed all but a few ids.
    let p = plan(&mut app, "SELECT count(*) FROM images");
    assert!(p.contains("authz.permits_stored(session_id, "), "{p}");
    assert_eq!(count(&mut app, "SELECT count(*) FROM images").unwrap(), 50);
    // An allow `*` on the parent type is not an allow on every session (a session's project
    // can be missing), so it keeps the filter as well.
    su.batch_execute(
        "SELECT authz.unassign_role('root', 'blocked', 'project', '1');
         SELECT authz.unassign_role('root', 'viewer');
         SELECT authz.create_role('project_reader');
         SELECT authz.allow('project_reader', 'project', '*', 'read');
         SELECT authz.assign_role('root', 'project_reader');",
    )
    .unwrap();
    let mut app = c.connect("app");
    as_token(&mut app, "root");
    assert!(plan(&mut app, "SELECT count(*) FROM images").contains("authz.permits"));
    assert_eq!(count(&mut app, "SELECT count(*) FROM images").unwrap(), 60);
}

#[test]
fn the_column_must_be_bound_to_the_type_by_an_enforced_key() {
    let c = setup();
    let mut su = c.superuser();
    su.batch_execute(
        "CREATE TABLE loose (id bigint PRIMARY KEY, session_id bigint NOT NULL);
         CREATE TABLE deferred (id bigint PRIMARY KEY,
             session_id bigint NOT NULL REFERENCES sessions DEFERRABLE);
         CREATE TABLE unvalidated (id bigint PRIMARY KEY, session_id bigint NOT NULL);
         CREATE TABLE nullable (id bigint PRIMARY KEY, session_id bigint REFERENCES sessions);
         -- A type whose ids are numeric (text \"1.00\"), referenced by a bigint column.
         CREATE TABLE batches (id numeric PRIMARY KEY);
         INSERT INTO batches VALUES (1.00);
         CREATE TABLE cast_key (id bigint PRIMARY KEY, batch_id bigint NOT NULL REFERENCES batches);
         INSERT INTO cast_key VALUES (1, 1);
         SELECT authz.register_resource_type('batch', 'batches', 'id');
         SELECT authz.allow('viewer', 'batch', '*', 'read');
         SELECT authz.protect('cast_key', 'batch_id', 'batch');
         INSERT INTO loose VALUES (1, 1), (2, 999);
         INSERT INTO deferred VALUES (1, 1);
         INSERT INTO unvalidated VALUES (1, 1), (2, 999);
         ALTER TABLE unvalidated ADD FOREIGN KEY (session_id) REFERENCES sessions NOT VALID;
         INSERT INTO nullable VALUES (1, 1), (2, NULL);
         SELECT authz.protect(t, 'session_id', 'session') FROM unnest(ARRAY['loose', 'deferred', 'unvalidated', 'nullable']) t;
         GRANT SELECT ON loose, deferred, unvalidated, nullable, cast_key, sessions TO app;
         SELECT authz.protect('sessions', 'id', 'session');",
    )
    .unwrap();
    let mut app = c.connect("app");
    as_token(&mut app, "root");
    for t in ["loose", "deferred", "unvalidated", "cast_key"] {
        let p = plan(&mut app, &format!("SELECT count(*) FROM {t}"));
        assert!(p.contains("authz.permits"), "{t} must keep its filter:\n{p}");
    }
    // Session 999 does not exist: permits() denies it, with or without the optimisation.
    assert_eq!(count(&mut app, "SELECT count(*) FROM loose").unwrap(), 1);
    assert_eq!(count(&mut app, "SELECT count(*) FROM unvalidated").unwrap(), 1);
    // Batch "1.00" is not the bigint 1 to permits(), whatever the key says.
    assert_eq!(count(&mut app, "SELECT count(*) FROM cast_key").unwrap(), 0);
    // A nullable key column keeps exactly permits()' answer for NULL (NULL: not visible).
    let p = plan(&mut app, "SELECT count(*) FROM nullable");
    assert!(!p.contains("permits") && p.contains("IS NOT NULL"), "{p}");
    assert_eq!(count(&mut app, "SELECT count(*) FROM nullable").unwrap(), 1);
    // The type's own table, protected by its own id.
    let p = plan(&mut app, "SELECT count(*) FROM sessions");
    assert!(!p.contains("permits(id"), "{p}");
    assert_eq!(count(&mut app, "SELECT count(*) FROM sessions").unwrap(), 6);
    // Only a call identical to the relation's own policy qual may be elided (so only where the
    // policy already filters the same rows): it keeps NULL out of an outer join, NOT permits()
    // keeps its exact meaning, and any other call stays.
    let sql = "SELECT count(*) FROM sessions s LEFT JOIN images i ON i.session_id = s.id AND false
               WHERE authz.permits(i.session_id, 'session', 'read')";
    assert_eq!(count(&mut app, sql).unwrap(), 0);
    let p = plan(&mut app, "SELECT count(*) FROM images WHERE authz.permits(session_id, 'session', 'write')");
    assert!(p.contains("'write'"), "{p}");
    assert_eq!(
        count(&mut app, "SELECT count(*) FROM nullable WHERE NOT authz.permits(session_id, 'session', 'read')")
            .unwrap(),
        0
    );
    assert_eq!(
        count(&mut app, "SELECT count(*) FROM nullable WHERE authz.permits(session_id, 'session', 'read') IS NULL")
            .unwrap(),
        0,
        "the NULL row is hidden by the policy itself"
    );
}

#[test]
fn cached_plans_follow_a_token_switch() {
    let c = setup();
    let mut app = c.connect("app");
    app.batch_execute("SET plan_cache_mode = force_generic_plan; PREPARE p AS SELECT count(*) FROM images;").unwrap();
    for (who, expected) in [("root", 60), ("alice", 40), ("root", 60), ("bob", 40), ("", 20), ("root", 60)] {
        if who.is_empty() {
            app.batch_execute("RESET authz.token").unwrap();
        } else {
            as_token(&mut app, who);
        }
        assert_eq!(count(&mut app, "EXECUTE p").unwrap(), expected, "prepared, as {who:?}");
        assert_eq!(count(&mut app, "SELECT image_count()").unwrap(), expected, "PL/pgSQL, as {who:?}");
    }
    // Transaction-local tokens, as a pooled application sets them.
    for (who, expected) in [("root", 60), ("alice", 40), ("root", 60)] {
        let mut tx = app.transaction().unwrap();
        tx.execute("SELECT set_config('authz.token', $1, true)", &[&token(who)]).unwrap();
        assert_eq!(tx.query_one("EXECUTE p", &[]).unwrap().get::<_, i64>(0), expected, "{who}");
        tx.commit().unwrap();
    }
}

#[test]
fn an_open_cursor_never_outlives_the_identity_it_was_planned_for() {
    let c = setup();
    let mut app = c.connect("app");
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT set_config('authz.token', $1, true)", &[&token("root")]).unwrap();
    tx.batch_execute("DECLARE c NO SCROLL CURSOR FOR SELECT session_id FROM images ORDER BY id").unwrap();
    assert_eq!(tx.query("FETCH 5 FROM c", &[]).unwrap().len(), 5);
    // Another identity that also covers every session may go on reading.
    tx.execute("SELECT set_config('authz.token', $1, true)", &[&mint("root", now() + 120)]).unwrap();
    assert_eq!(tx.query("FETCH 5 FROM c", &[]).unwrap().len(), 5);
    // One that does not gets 40001, never a row.
    tx.execute("SELECT set_config('authz.token', $1, true)", &[&token("alice")]).unwrap();
    assert_eq!(code(tx.query("FETCH 5 FROM c", &[])), SqlState::T_R_SERIALIZATION_FAILURE);
    drop(tx);
    // Nor does an anonymous caller.
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT set_config('authz.token', $1, true)", &[&token("root")]).unwrap();
    tx.batch_execute("DECLARE c NO SCROLL CURSOR FOR SELECT session_id FROM images").unwrap();
    tx.query("FETCH 1 FROM c", &[]).unwrap();
    tx.batch_execute("RESET authz.token").unwrap();
    assert_eq!(code(tx.query("FETCH 1 FROM c", &[])), SqlState::T_R_SERIALIZATION_FAILURE);
    drop(tx);
    // A WITH HOLD cursor is materialised at COMMIT, under the identity current then: if that one
    // does not cover every session, the COMMIT fails rather than hold rows it may not read.
    app.batch_execute("BEGIN").unwrap();
    app.execute("SELECT set_config('authz.token', $1, true)", &[&token("root")]).unwrap();
    app.batch_execute("DECLARE h CURSOR WITH HOLD FOR SELECT session_id FROM images").unwrap();
    app.execute("SELECT set_config('authz.token', $1, true)", &[&token("alice")]).unwrap();
    assert_eq!(code(app.batch_execute("COMMIT")), SqlState::T_R_SERIALIZATION_FAILURE);
    assert_eq!(code(app.query("FETCH 1 FROM h", &[])), SqlState::INVALID_CURSOR_NAME);
}

#[test]
fn an_expired_token_stops_a_cached_unfiltered_plan() {
    let c = setup();
    let mut su = c.superuser();
    su.batch_execute("ALTER ROLE app SET authz.leeway_seconds = 0").unwrap();
    let mut app = c.connect("app");
    app.batch_execute("SET plan_cache_mode = force_generic_plan; PREPARE p AS SELECT count(*) FROM images;").unwrap();
    app.execute("SELECT set_config('authz.token', $1, false)", &[&mint("root", now() + 2)]).unwrap();
    assert_eq!(count(&mut app, "EXECUTE p").unwrap(), 60);
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let e = app.query_one("EXECUTE p", &[]).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION), "{e:?}");
    assert!(e.as_db_error().unwrap().message().contains("expired"), "{e:?}");
}

#[test]
fn a_policy_change_replans_the_next_transaction() {
    let c = setup();
    let mut su = c.superuser();
    let mut app = c.connect("app");
    app.batch_execute("SET plan_cache_mode = force_generic_plan; PREPARE p AS SELECT count(*) FROM images;").unwrap();
    as_token(&mut app, "root");
    assert_eq!(count(&mut app, "EXECUTE p").unwrap(), 60);
    su.batch_execute("SELECT authz.deny('viewer', 'session', '2', 'read')").unwrap();
    assert_eq!(count(&mut app, "EXECUTE p").unwrap(), 50);
    assert_eq!(count(&mut app, "SELECT image_count()").unwrap(), 50);
    su.batch_execute("SELECT authz.remove_rule('viewer', 'session', '2', 'read')").unwrap();
    assert_eq!(count(&mut app, "EXECUTE p").unwrap(), 60);
    su.batch_execute("SELECT authz.unassign_role('root', 'viewer')").unwrap();
    assert_eq!(count(&mut app, "EXECUTE p").unwrap(), 20);
}
