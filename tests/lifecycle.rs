//! The extension's lifecycle as a DBA meets it: uninstalling cleanly, re-protecting without losing
//! soft delete, which version is installed, what `authz.doctor()` calls an error, and no NOTICE
//! noise from the administration functions.
mod common;

use common::*;

fn setup() -> Cluster {
    let c = platform(&["app"]);
    c.superuser()
        .batch_execute(
            "CREATE TABLE notes (id bigint PRIMARY KEY, session_id bigint NOT NULL, deleted boolean NOT NULL DEFAULT false);
             INSERT INTO notes SELECT g, 1 + g % 6, false FROM generate_series(1, 12) g;
             CREATE INDEX ON notes (session_id);
             SELECT authz.protect('notes', 'session_id', 'session', soft_delete_column => 'deleted');
             GRANT SELECT ON notes TO app;",
        )
        .unwrap();
    c
}

#[test]
fn drop_extension_is_refused_until_uninstall_returns_every_table_to_plain_postgresql() {
    let c = setup();
    let mut su = c.superuser();
    let e = su.batch_execute("DROP EXTENSION pg_authz CASCADE").unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST));
    let hint = e.as_db_error().and_then(|d| d.hint()).unwrap_or_default().to_string();
    assert!(hint.contains("authz.uninstall()"), "{hint}");
    // Nothing changed: still protected.
    let mut app = c.connect("app");
    assert_eq!(visible(&mut app).unwrap(), (vec![5, 6], 20));

    // A plain login cannot uninstall.
    assert_eq!(code(app.query_one("SELECT authz.uninstall()", &[])), SqlState::INSUFFICIENT_PRIVILEGE);
    // A protected inheritance child of a protected table is its own root.
    su.batch_execute(
        "CREATE TABLE old_notes () INHERITS (notes);
         SELECT authz.protect('old_notes', 'session_id', 'session');",
    )
    .unwrap();
    let n: i32 = su.query_one("SELECT authz.uninstall()", &[]).unwrap().get(0);
    assert_eq!(n, 3, "images, notes and old_notes");
    su.batch_execute("DROP EXTENSION pg_authz CASCADE").unwrap();
    let leftovers: Vec<String> = su
        .query(
            "SELECT 'rls ' || relname FROM pg_class WHERE relnamespace = 'public'::regnamespace
                 AND (relrowsecurity OR relforcerowsecurity)
             UNION ALL SELECT 'policy ' || polname FROM pg_policy
             UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    // Every row is back for whoever has table privileges.
    let mut app = c.connect("app");
    assert_eq!(visible(&mut app).unwrap().1, 60);
    // A database without protected tables drops the extension directly.
    su.batch_execute("CREATE EXTENSION pg_authz; DROP EXTENSION pg_authz").unwrap();
}

#[test]
fn re_protecting_without_naming_soft_delete_keeps_it() {
    let c = setup();
    let mut su = c.superuser();
    su.batch_execute("SELECT authz.protect('notes', 'session_id', 'session')").unwrap();
    let soft: Option<String> = su
        .query_one("SELECT soft_delete_column::text FROM authz.protected WHERE tbl = 'notes'::regclass", &[])
        .unwrap()
        .get(0);
    assert_eq!(soft.as_deref(), Some("deleted"));
    let triggers: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'notes'::regclass AND tgname = 'authz_soft_delete'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(triggers, 1);
}

#[test]
fn versions_and_doctor_errors() {
    let c = setup();
    let mut su = c.superuser();
    let (sql, lib): (String, String) =
        su.query_one("SELECT authz.version(), authz.library_version()", &[]).map(|r| (r.get(0), r.get(1))).unwrap();
    assert_eq!(sql, env!("CARGO_PKG_VERSION"));
    assert_eq!(lib, env!("CARGO_PKG_VERSION"));
    su.batch_execute(
        "CREATE POLICY wide_open ON images FOR SELECT USING (true);
         CREATE TABLE ghosts (id bigint, ghost_id bigint);
         ALTER TABLE ghosts ENABLE ROW LEVEL SECURITY;
         CREATE POLICY haunted ON ghosts USING (authz.permits(ghost_id, 'ghost', 'read'));
         UPDATE pg_extension SET extversion = '0.2.0' WHERE extname = 'pg_authz';",
    )
    .unwrap();
    let rows: Vec<(String, String, String)> = su
        .query("SELECT severity, object, problem FROM authz.doctor()", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let find = |needle: &str| rows.iter().find(|(_, o, p)| o.contains(needle) || p.contains(needle)).cloned();
    let wide = find("wide_open").expect("the extra permissive policy is reported");
    assert_eq!(wide.0, "error");
    // A backdoor named like pg_authz's own policies is no exception.
    su.batch_execute("CREATE POLICY authz_backdoor ON images FOR SELECT USING (true)").unwrap();
    let backdoor: i64 = su
        .query_one(
            "SELECT count(*) FROM authz.doctor() WHERE severity = 'error' AND object LIKE '%authz_backdoor%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(backdoor, 1);
    let ghost = find("\"ghost\"").or_else(|| find("'ghost'")).expect("the unregistered type is reported");
    assert_eq!(ghost.0, "error");
    let version = find("loaded library").expect("the version mismatch is reported");
    assert_eq!(version.0, "warning");
    assert!(version.2.contains("0.2.0"));
    su.batch_execute("UPDATE pg_extension SET extversion = '0.3.0' WHERE extname = 'pg_authz'").unwrap();
}

#[test]
fn administration_prints_no_notice_noise_and_warns_about_unknown_actions() {
    let c = setup();
    let out = c.psql(
        "postgres",
        &[
            "-c",
            "CREATE TABLE fresh (id bigint PRIMARY KEY, project_id bigint NOT NULL)",
            "-c",
            "SELECT authz.register_resource_type('fresh', 'fresh', 'id', 'project', 'project_id')",
            "-c",
            "CREATE TABLE fresh_items (id bigint PRIMARY KEY, fresh_id bigint NOT NULL, gone timestamptz)",
            "-c",
            "CREATE INDEX ON fresh_items (fresh_id)",
            "-c",
            "SELECT authz.protect('fresh_items', 'fresh_id', 'fresh', soft_delete_column => 'gone')",
            "-c",
            "SELECT authz.protect('fresh_items', 'fresh_id', 'fresh')",
            "-c",
            "SELECT authz.unprotect('fresh_items')",
            "-c",
            "SELECT authz.unregister_resource_type('fresh')",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("NOTICE"), "administration printed notices:\n{stderr}");

    let out = c.psql(
        "postgres",
        &[
            "-c",
            "SELECT authz.check('session', '1', 'reed'), authz.check('session', '2', 'reed')",
            "-c",
            "SELECT authz.check('session', '1', 'read')",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("WARNING").count(), 1, "one warning for the unknown action:\n{stderr}");
    assert!(stderr.contains("\"reed\""), "{stderr}");
}
