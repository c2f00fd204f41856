//! Backup and restore keep everything pg_authz knows: every policy row, where each sequence stands,
//! the protected tables' policies and triggers, and so the same enforcement for every user — with
//! `pg_dump -Fc` + `pg_restore` (also `--single-transaction`), a plain `pg_dump` + `psql`, and
//! `pg_dumpall` into a new cluster. A restore writes no audit rows of its own, and finishes without
//! a single error.
mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn tool(c: &Cluster, name: &str) -> Command {
    let mut cmd = Command::new(format!("{BIN}/{name}"));
    cmd.arg("-h").arg(c.dir()).arg("-p").arg(c.port().to_string()).arg("-U").arg("postgres");
    cmd
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed:\n{stderr}");
    stderr
}

/// The fixture, plus everything else a platform has: a group, a deny, keys, a login mapping, a
/// protected table with soft delete and an owner column, a partitioned protected table, and
/// audit rows.
fn platform(c: &Cluster) {
    c.create_login("app");
    c.create_login("eve");
    c.add_test_key();
    fixture(c, &["app", "eve"]);
    c.superuser()
        .batch_execute(
            "SELECT authz.create_principal('team', 'group');
             SELECT authz.add_member('team', 'bob');
             SELECT authz.assign_role('team', 'viewer', 'project', '3');
             SELECT authz.deny('viewer', 'session', '4', 'read');
             SELECT authz.create_principal('eve', 'user', 'eve');
             SELECT authz.assign_role('eve', 'editor', 'project', '1');
             SELECT authz.add_key('second', 'HS384', 'another-secret-another-secret-another-secret-0123');
             SELECT authz.map_claim('realm_access.roles');
             SELECT authz.map_claim('groups', 'group', issuer => 'https://idp');
             CREATE TABLE notes (id bigint PRIMARY KEY, session_id bigint NOT NULL, owner text, deleted boolean NOT NULL DEFAULT false);
             CREATE INDEX ON notes (session_id);
             INSERT INTO notes SELECT g, 1 + g % 6, 'alice', g % 5 = 0 FROM generate_series(1, 30) g;
             SELECT authz.protect('notes', 'session_id', 'session', owner_column => 'owner', soft_delete_column => 'deleted');
             CREATE TABLE events (id bigint NOT NULL, session_id bigint NOT NULL) PARTITION BY LIST (session_id);
             CREATE TABLE events_a PARTITION OF events FOR VALUES IN (1, 2, 3);
             CREATE TABLE events_b PARTITION OF events FOR VALUES IN (4, 5, 6);
             CREATE INDEX ON events (session_id);
             INSERT INTO events SELECT g, 1 + g % 6 FROM generate_series(1, 60) g;
             SELECT authz.protect('events', 'session_id', 'session');
             GRANT SELECT ON notes, events TO app, eve;",
        )
        .unwrap();
}

/// Every policy row, as text, in a stable order (audit rows included, ids and all).
const POLICY_ROWS: &str = "
    SELECT 'principal ' || p::text FROM (SELECT id, kind, db_role FROM authz.principals) p
    UNION ALL SELECT 'member ' || m::text FROM authz.memberships m
    UNION ALL SELECT 'role ' || r::text FROM authz.roles r
    UNION ALL SELECT 'inherits ' || i::text FROM authz.role_inheritance i
    UNION ALL SELECT 'type ' || t::text FROM authz.resource_types t
    UNION ALL SELECT 'assignment ' || a::text FROM authz.role_assignments a
    UNION ALL SELECT 'rule ' || r::text FROM authz.rules r
    UNION ALL SELECT 'claim ' || c::text FROM authz.claim_mappings c
    UNION ALL SELECT 'key ' || k.kid || ' ' || k.alg || ' ' || md5(k.material) FROM authz.keys k
    UNION ALL SELECT 'protected ' || p.tbl::text || ' ' || p.id_column || ' ' || p.resource_type || ' '
                     || coalesce(p.owner_column, '-') || ' ' || coalesce(p.soft_delete_column, '-') FROM authz.protected p
    UNION ALL SELECT 'audit ' || a.id || ' ' || a.table_name || ' ' || a.operation || ' ' || a.changed_by FROM authz.audit_changes a
    UNION ALL SELECT 'policy ' || polrelid::regclass::text || ' ' || polname || ' ' || coalesce(pg_get_expr(polqual, polrelid), '')
              FROM pg_policy
    UNION ALL SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger
              WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)
    UNION ALL SELECT 'rls ' || relname || ' ' || relrowsecurity || ' ' || relforcerowsecurity FROM pg_class
              WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')
    ORDER BY 1";

fn policy_rows(client: &mut Client) -> Vec<String> {
    client.query(POLICY_ROWS, &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

/// What each identity sees of each protected table.
fn enforcement(c: &Cluster, db: &str) -> Vec<String> {
    let mut out = Vec::new();
    for who in ["alice", "bob", "carol"] {
        let mut cfg = c.config("app");
        cfg.dbname(db);
        let mut app = cfg.connect(NoTls).unwrap();
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token(who))).unwrap();
        for table in ["images", "notes", "events"] {
            let row = tx
                .query_one(
                    &format!("SELECT coalesce(array_agg(DISTINCT session_id ORDER BY session_id), '{{}}'), count(*) FROM {table}"),
                    &[],
                )
                .unwrap();
            out.push(format!("{who} {table} {:?} {}", row.get::<_, Vec<i64>>(0), row.get::<_, i64>(1)));
        }
        tx.commit().unwrap();
    }
    let mut cfg = c.config("eve");
    cfg.dbname(db);
    let mut eve = cfg.connect(NoTls).unwrap();
    let row = eve.query_one("SELECT count(*) FROM images", &[]).unwrap();
    out.push(format!("eve (login) images {}", row.get::<_, i64>(0)));
    out
}

fn connect_db(c: &Cluster, db: &str) -> Client {
    let mut cfg = c.config("postgres");
    cfg.dbname(db);
    cfg.connect(NoTls).unwrap()
}

/// After a restore: identical rows and enforcement, and the sequences hand out new ids (a new
/// assignment and a new rule really appear, and are audited as the restoring session's changes).
fn assert_restored(c: &Cluster, db: &str, rows: &[String], seen: &[String]) {
    let mut client = connect_db(c, db);
    assert_eq!(policy_rows(&mut client), rows, "policy rows differ after restore into {db}");
    assert_eq!(enforcement(c, db), seen, "enforcement differs after restore into {db}");
    let before: i64 = client.query_one("SELECT count(*) FROM authz.role_assignments", &[]).unwrap().get(0);
    let audits: i64 = client.query_one("SELECT count(*) FROM authz.audit_changes", &[]).unwrap().get(0);
    client
        .batch_execute(
            "SELECT authz.assign_role('alice', 'viewer', 'project', '2');
             SELECT authz.allow('viewer', 'session', '9*', 'read');",
        )
        .unwrap();
    let after: i64 = client.query_one("SELECT count(*) FROM authz.role_assignments", &[]).unwrap().get(0);
    assert_eq!(after, before + 1, "assign_role() after a restore must insert its row");
    let audits_after: i64 = client.query_one("SELECT count(*) FROM authz.audit_changes", &[]).unwrap().get(0);
    assert_eq!(audits_after, audits + 2);
}

fn dump_dir(c: &Cluster) -> &Path {
    c.dir()
}

#[test]
fn pg_dump_and_pg_restore_keep_every_policy_row_and_enforcement() {
    let c = Cluster::start();
    platform(&c);
    let mut su = c.superuser();
    let rows = policy_rows(&mut su);
    let seen = enforcement(&c, "postgres");
    assert!(rows.iter().any(|r| r.starts_with("audit ")), "the fixture should have written audit rows");
    assert!(seen.iter().any(|s| s.starts_with("alice notes")));

    let custom = dump_dir(&c).join("dump.custom");
    let plain = dump_dir(&c).join("dump.sql");
    run_ok(tool(&c, "pg_dump").arg("-Fc").arg("-f").arg(&custom).arg("postgres"), "pg_dump -Fc");
    run_ok(tool(&c, "pg_dump").arg("-f").arg(&plain).arg("postgres"), "pg_dump (plain)");

    // Custom format, into a new database; then again in one transaction.
    for (db, single) in [("restored", false), ("restored_single", true)] {
        su.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
        let mut cmd = tool(&c, "pg_restore");
        cmd.arg("--exit-on-error").arg("-d").arg(db);
        if single {
            cmd.arg("--single-transaction");
        }
        let stderr = run_ok(cmd.arg(&custom), "pg_restore");
        assert!(stderr.trim().is_empty(), "pg_restore printed: {stderr}");
        assert_restored(&c, db, &rows, &seen);
    }

    // Plain format through psql, stopping at the first error.
    su.batch_execute("CREATE DATABASE restored_plain").unwrap();
    let stderr = run_ok(
        tool(&c, "psql").args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "restored_plain", "-f"]).arg(&plain),
        "psql < plain dump",
    );
    assert!(!stderr.contains("ERROR"), "psql printed: {stderr}");
    assert_restored(&c, "restored_plain", &rows, &seen);
}

#[test]
fn pg_dumpall_into_a_new_cluster_keeps_every_policy_row_and_enforcement() {
    let c = Cluster::start();
    platform(&c);
    let rows = policy_rows(&mut c.superuser());
    let seen = enforcement(&c, "postgres");
    let all = dump_dir(&c).join("all.sql");
    run_ok(tool(&c, "pg_dumpall").arg("-f").arg(&all), "pg_dumpall");

    // A new, empty cluster (the extension, its schema and authz_admin come from the dump itself).
    let target = Cluster::start();
    target.superuser().batch_execute("DROP EXTENSION pg_authz; DROP SCHEMA authz; DROP ROLE authz_admin").unwrap();
    let out = tool(&target, "psql").args(["-X", "-q", "-d", "postgres", "-f"]).arg(&all).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The only error PostgreSQL itself always reports: the new cluster's own bootstrap superuser.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ERROR"))
        .filter(|l| !l.contains("role \"postgres\" already exists"))
        .collect();
    assert!(errors.is_empty(), "restoring pg_dumpall output failed:\n{stderr}");
    assert_restored(&target, "postgres", &rows, &seen);
}

#[test]
fn a_table_owner_dumping_its_protected_table_gets_an_error_not_a_partial_dump() {
    let c = Cluster::start();
    platform(&c);
    c.create_login("olga");
    c.superuser().batch_execute("ALTER TABLE notes OWNER TO olga").unwrap();
    // FORCE ROW LEVEL SECURITY applies to the owner, and pg_dump runs with row_security = off:
    // PostgreSQL refuses rather than dumping the rows the owner's identity may see.
    let out = tool(&c, "pg_dump").args(["-U", "olga", "-t", "notes", "postgres"]).output().unwrap();
    assert!(!out.status.success(), "a partial dump must not succeed silently");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("row-level security"), "unexpected error: {stderr}");
    // With --enable-row-security the owner asks for exactly what it may see, knowingly.
    let out = tool(&c, "pg_dump")
        .args(["-U", "olga", "-t", "notes", "--enable-row-security", "--data-only", "postgres"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
