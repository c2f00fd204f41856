//! An analyst on their own database login (mapped to a principal) using psql directly.
mod common;

use common::*;
use std::process::Output;

fn setup() -> Cluster {
    let c = Cluster::start();
    c.create_login("ann_login");
    fixture(&c, &["ann_login"]);
    // ann: editor on project 1 -> reads sessions 1, 2 and public 5, 6; writes 1, 2.
    c.superuser()
        .batch_execute(
            "SELECT authz.create_principal('ann', 'user', 'ann_login');
             SELECT authz.assign_role('ann', 'editor', 'project', '1');",
        )
        .unwrap();
    c
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(c: &Cluster, sql: &str) -> String {
    let o = c.psql("ann_login", &["-c", sql]);
    assert!(o.status.success(), "psql -c {sql:?} failed: {}", stderr(&o));
    stdout(&o)
}

fn fails(c: &Cluster, sql: &str) -> String {
    let o = c.psql("ann_login", &["-c", sql]);
    assert!(!o.status.success(), "psql -c {sql:?} should have failed, got: {}", stdout(&o));
    stderr(&o)
}

fn expected_ids() -> Vec<i64> {
    (1..=20).chain(41..=60).collect()
}

fn images_as_superuser(c: &Cluster) -> Vec<(i64, i64)> {
    c.superuser()
        .query("SELECT id, session_id FROM images ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn psql_reads_are_confined() {
    let c = setup();
    assert_eq!(ok(&c, "SELECT authz.user_id()").trim(), "ann");
    assert_eq!(ok(&c, "SELECT count(*) FROM images").trim(), "40");
    assert_eq!(
        ok(&c, "SELECT string_agg(DISTINCT session_id::text, ',' ORDER BY session_id::text) FROM images").trim(),
        "1,2,5,6"
    );

    // \copy of a query
    let out = ok(&c, r"\copy (SELECT id FROM images ORDER BY id) TO STDOUT");
    let ids: Vec<i64> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ids, expected_ids());

    // server-side COPY of the table itself
    let out = ok(&c, "COPY images TO STDOUT");
    let mut rows: Vec<(i64, i64)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap())
        })
        .collect();
    rows.sort();
    assert_eq!(rows.len(), 40);
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), expected_ids());
    assert!(rows.iter().all(|r| [1, 2, 5, 6].contains(&r.1)), "{rows:?}");

    // \copy of the table
    let out = ok(&c, r"\copy images TO STDOUT");
    assert_eq!(out.lines().count(), 40);
}

#[test]
fn psql_cannot_switch_confinement_off() {
    let c = setup();
    let err = fails(&c, "SET row_security = off; SELECT count(*) FROM images");
    assert!(err.contains("row-level security"), "{err}");
    let err = fails(&c, "ALTER TABLE images DISABLE ROW LEVEL SECURITY");
    assert!(err.contains("must be owner"), "{err}");
    let err = fails(&c, "ALTER TABLE images NO FORCE ROW LEVEL SECURITY");
    assert!(err.contains("must be owner"), "{err}");
    let err = fails(&c, "DROP POLICY authz_select ON images");
    assert!(err.contains("must be owner"), "{err}");
    let err = fails(&c, "SELECT authz.unprotect('images')");
    assert!(err.contains("permission denied") || err.contains("must be owner"), "{err}");
    // A token cannot be forged from psql either.
    let err = fails(&c, "SET authz.token = 'x.y.z'; SELECT count(*) FROM images");
    assert!(err.contains("token rejected"), "{err}");
    // Still 40 afterwards.
    assert_eq!(ok(&c, "SELECT count(*) FROM images").trim(), "40");
}

#[test]
fn psql_writes_are_confined() {
    let c = setup();
    let before = images_as_superuser(&c);

    // Moving a row into a forbidden session (project 2) is refused.
    let err = fails(&c, "UPDATE images SET session_id = 3 WHERE id = 1");
    assert!(err.contains("row-level security"), "{err}");
    // Readable-but-not-writable rows (public session 5) are not updated at all.
    assert_eq!(
        ok(&c, "WITH u AS (UPDATE images SET label = 'x' WHERE id = 41 RETURNING 1) SELECT count(*) FROM u").trim(),
        "0"
    );
    // Invisible rows neither.
    assert_eq!(
        ok(&c, "WITH u AS (UPDATE images SET label = 'x' WHERE id = 21 RETURNING 1) SELECT count(*) FROM u").trim(),
        "0"
    );
    // Insert into a forbidden session (3: project 2; 5: public, read only).
    let err = fails(&c, "INSERT INTO images VALUES (1000, 3, 'nope')");
    assert!(err.contains("row-level security"), "{err}");
    let err = fails(&c, "INSERT INTO images VALUES (1001, 5, 'nope')");
    assert!(err.contains("row-level security"), "{err}");
    // Delete of someone else's rows removes nothing.
    assert_eq!(
        ok(&c, "WITH d AS (DELETE FROM images WHERE session_id IN (3, 5) RETURNING 1) SELECT count(*) FROM d").trim(),
        "0"
    );
    assert_eq!(images_as_superuser(&c), before, "a refused write changed data");

    // Controls: writes inside ann's own sessions work.
    ok(&c, "UPDATE images SET session_id = 2 WHERE id = 1");
    ok(&c, "INSERT INTO images VALUES (1002, 1, 'mine')");
    let after = images_as_superuser(&c);
    assert!(after.contains(&(1, 2)) && after.contains(&(1002, 1)), "{after:?}");
    assert_eq!(after.len(), 61);
}

#[test]
fn role_changes_reach_an_open_connection_on_its_next_statement() {
    let c = setup();
    let mut a = c.connect("ann_login");
    let mut b = c.superuser();
    assert_eq!(visible(&mut a).unwrap(), (vec![1, 2, 5, 6], 40));

    b.execute("SELECT authz.assign_role('ann', 'viewer', 'project', '2')", &[]).unwrap();
    assert_eq!(visible(&mut a).unwrap(), (vec![1, 2, 3, 4, 5, 6], 60));

    // Uncommitted changes are not seen; committed ones are.
    let mut tx = b.transaction().unwrap();
    tx.query_one("SELECT authz.unassign_role('ann', 'viewer', 'project', '2')", &[]).unwrap();
    assert_eq!(visible(&mut a).unwrap(), (vec![1, 2, 3, 4, 5, 6], 60));
    tx.commit().unwrap();
    assert_eq!(visible(&mut a).unwrap(), (vec![1, 2, 5, 6], 40));

    // New resources under a permitted project show up too (resource table invalidation).
    b.batch_execute(
        "INSERT INTO sessions VALUES (7, 1), (8, 2);
         INSERT INTO images SELECT g, 7, 'new' FROM generate_series(101, 105) g;
         INSERT INTO images SELECT g, 8, 'new' FROM generate_series(106, 110) g;",
    )
    .unwrap();
    assert_eq!(visible(&mut a).unwrap(), (vec![1, 2, 5, 6, 7], 45));

    // A rule change applies as well: deny session 2 to viewers.
    b.execute("SELECT authz.deny('viewer', 'session', '2', 'read')", &[]).unwrap();
    assert_eq!(visible(&mut a).unwrap(), (vec![1, 5, 6, 7], 35));
    b.execute("SELECT authz.remove_rule('viewer', 'session', '2', 'read')", &[]).unwrap();
    assert_eq!(visible(&mut a).unwrap(), (vec![1, 2, 5, 6, 7], 45));
}
