//! pg_authz on Citus (issue 16): a coordinator and two workers, the shared platform (projects,
//! sessions, images distributed by session_id) set up on the coordinator with the documented calls,
//! and every required behaviour checked on the coordinator and, over direct connections, on each
//! worker. Each topic is its own test on its own cluster, so one failure hides no other; each prints
//! an inventory (what happened at every step, with SQLSTATEs, messages and the internal queries
//! the nodes' logs name) and fails with it when a requirement does not hold.
//!
//!     cargo test --test citus -- --ignored --test-threads=1 --nocapture
//!
//! Every test is ignored until issue #16 is done: today they document what fails on Citus (the
//! inventory in the note), and `make test` must stay green on a machine without Citus.
//!
//! Citus comes from scripts/citus.sh (installed, or built once from ../shared/vendor and cached);
//! when it cannot be had, every test fails with the script's output.
//!
//! Until the documented procedure works, the set-up goes past its first errors so that the topics
//! behind them can be inventoried too: a failed step is retried with `citus.enable_unsafe_triggers`
//! (an observation; the a* tests fail on the step), and while `authz.distribute()` does not exist
//! the test copies pg_authz's rows to the workers itself and allows nested distributed execution
//! there (`stand_in_for_distribute`, re-copied after each change in d1). Once `authz.distribute()`
//! exists, none of that happens and every topic runs on the real procedure.
#[path = "common/citus.rs"]
mod citus;
mod common;

use citus::*;
use common::{sign, token, Client, NoTls, KID, SECRET};

/// What one node of pg_authz answers for the fixture (tests/common/mod.rs `fixture`), checked by
/// `single_node_baseline`: alice is editor on project 1, bob viewer on project 2, project 3 public;
/// two sessions per project, ten images per session.
const ALICE: &[i64] = &[1, 2, 5, 6];
const BOB: &[i64] = &[3, 4, 5, 6];
const ANONYMOUS: &[i64] = &[5, 6];

/// Where the application's tables are distributed relative to pg_authz's registration calls.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// projects, sessions reference tables; images distributed by session_id; then register/protect.
    ReferenceBefore,
    /// register/protect on plain tables first; then the same distribution.
    ReferenceAfter,
    /// projects reference; sessions distributed by id, images by session_id, colocated; then
    /// register/protect.
    DistributedBefore,
}

type Rows = Vec<(i64, i64)>;

/// The visible images per session (the distribution column: pushed down to every shard).
fn rows(c: &mut impl postgres::GenericClient) -> Result<Rows, postgres::Error> {
    Ok(c.query("SELECT session_id, count(*) FROM images GROUP BY 1 ORDER BY 1", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

fn sessions_of(r: &Rows) -> Vec<i64> {
    r.iter().map(|x| x.0).collect()
}

fn fmt_rows(r: &Rows) -> String {
    let total: i64 = r.iter().map(|x| x.1).sum();
    format!("sessions {:?}, {total} images", sessions_of(r))
}

/// The identity the shards see: `authz.user_id()` evaluated on the workers, next to each visible
/// row (the column reference keeps Citus from evaluating it on the coordinator).
fn shard_identities(c: &mut impl postgres::GenericClient) -> Result<Vec<String>, postgres::Error> {
    let mut ids: Vec<String> = c
        .query(
            "SELECT coalesce(authz.user_id(), '<anonymous>') || CASE WHEN session_id IS NULL THEN '?' ELSE '' END
             FROM images",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn local_identity(c: &mut impl postgres::GenericClient) -> Result<String, postgres::Error> {
    Ok(c.query_one("SELECT coalesce(authz.user_id(), '<anonymous>')", &[])?.get(0))
}

/// Record `r` against the rows a single node shows for `expected`.
fn require_rows(
    inv: &mut Inventory,
    cl: &CitusCluster,
    marks: &[usize],
    node: &str,
    what: &str,
    r: Result<Rows, postgres::Error>,
    expected: &[i64],
) {
    match r {
        Ok(r) => {
            let ok = sessions_of(&r) == expected && r.iter().all(|x| x.1 == 10);
            inv.require(
                ok,
                node,
                what,
                format!("{} (single node: sessions {expected:?}, {} images)", fmt_rows(&r), expected.len() * 10),
            );
        }
        Err(e) => {
            inv.step::<()>(cl, marks, node, what, Err(e));
        }
    }
}

struct Platform {
    c: CitusCluster,
    /// The setup steps that failed (the topic tests mention them; the setup tests fail on them).
    setup_failures: Vec<String>,
    /// authz.distribute() is missing and the test copies pg_authz's rows to the workers itself.
    stand_in: bool,
}

/// Start a cluster and build the platform on the coordinator with the documented calls, one
/// statement per step, recording every outcome. With `strict`, a failed step is a failure of `inv`;
/// otherwise it is noted and the test goes on with what works.
fn setup(layout: Layout, inv: &mut Inventory, strict: bool) -> Platform {
    let c = CitusCluster::start(2, &[]);
    let mut failures = Vec::new();
    let mut su = c.coordinator.superuser();
    let mut run = |inv: &mut Inventory, c: &CitusCluster, what: &str, sql: &str| {
        let marks = c.marks();
        let r = su.batch_execute(sql);
        let Err(e) = r else {
            inv.note(format!("OK    [coordinator] {what}"));
            return;
        };
        failures.push(format!("{what}: {}", describe(&e)));
        if strict {
            inv.step::<()>(c, &marks, "coordinator", what, Err(e));
        } else {
            let logs = c.errors_since(&marks);
            inv.observe("coordinator", &format!("setup step failed: {what}"), format!("{}\n{logs}", describe(&e)));
        }
        // Retry with the Citus settings a user could reach for, to see what lies behind the first
        // error (an observation: the required procedure sets none of them).
        if sql.contains("distribute()") {
            return;
        }
        let marks = c.marks();
        let retry = format!(
            "BEGIN; SET LOCAL citus.enable_unsafe_triggers = on; SET LOCAL citus.allow_nested_distributed_execution = on; {sql}; COMMIT"
        );
        let r = su.batch_execute(&retry);
        if r.is_err() {
            let _ = su.batch_execute("ROLLBACK");
        }
        inv.observe(
            "coordinator",
            &format!("retried with SET LOCAL citus.enable_unsafe_triggers = on, citus.allow_nested_distributed_execution = on: {what}"),
            match r {
                Ok(()) => "succeeded".to_string(),
                Err(e) => format!("{}\n{}", describe(&e), c.errors_since(&marks)),
            },
        );
    };
    inv.observe("cluster", "layout", format!("{layout:?}; settings {NODE_SETTINGS:?}"));

    run(inv, &c, "CREATE ROLE alice_login, app (LOGIN)", "CREATE ROLE alice_login LOGIN; CREATE ROLE app LOGIN;");
    run(inv, &c, "CREATE EXTENSION pg_authz", "CREATE EXTENSION pg_authz");
    // The documented procedure (issue 16): distribute() makes pg_authz's own state cluster-wide.
    run(inv, &c, "SELECT authz.distribute()", "SELECT authz.distribute()");
    let projects = "CREATE TABLE projects (id bigint PRIMARY KEY, public boolean NOT NULL DEFAULT false)";
    let sessions = "CREATE TABLE sessions (id bigint PRIMARY KEY, project_id bigint NOT NULL REFERENCES projects)";
    let images = "CREATE TABLE images (id bigint NOT NULL, session_id bigint NOT NULL REFERENCES sessions, label text,
                                       PRIMARY KEY (session_id, id))";
    match layout {
        Layout::ReferenceBefore => {
            run(inv, &c, "CREATE TABLE projects, sessions, images", &format!("{projects}; {sessions}; {images}"));
            run(inv, &c, "create_reference_table('projects')", "SELECT create_reference_table('projects')");
            run(inv, &c, "create_reference_table('sessions')", "SELECT create_reference_table('sessions')");
            run(
                inv,
                &c,
                "create_distributed_table('images', 'session_id')",
                "SELECT create_distributed_table('images', 'session_id')",
            );
        }
        Layout::ReferenceAfter => {
            run(inv, &c, "CREATE TABLE projects, sessions, images", &format!("{projects}; {sessions}; {images}"));
        }
        Layout::DistributedBefore => {
            // A distributed table cannot be referenced by a local one: images comes after.
            run(inv, &c, "CREATE TABLE projects, sessions", &format!("{projects}; {sessions}"));
            run(inv, &c, "create_reference_table('projects')", "SELECT create_reference_table('projects')");
            run(
                inv,
                &c,
                "create_distributed_table('sessions', 'id')",
                "SELECT create_distributed_table('sessions', 'id')",
            );
            run(inv, &c, "CREATE TABLE images", images);
            run(
                inv,
                &c,
                "create_distributed_table('images', 'session_id', colocate_with => 'sessions')",
                "SELECT create_distributed_table('images', 'session_id', colocate_with => 'sessions')",
            );
        }
    }
    run(
        inv,
        &c,
        "INSERT the fixture rows (3 projects, 6 sessions, 60 images)",
        "INSERT INTO projects SELECT g, g = 3 FROM generate_series(1, 3) g;
         INSERT INTO sessions SELECT g, (g + 1) / 2 FROM generate_series(1, 6) g;
         INSERT INTO images SELECT g, 1 + (g - 1) / 10, 'img' || g FROM generate_series(1, 60) g;",
    );
    let key = format!("SELECT authz.add_key('{KID}', 'HS256', '{SECRET}')");
    run(inv, &c, "authz.add_key (HS256)", &key);
    run(
        inv,
        &c,
        "authz.register_resource_type('project', ...)",
        "SELECT authz.register_resource_type('project', 'projects', 'id', public_column => 'public')",
    );
    run(
        inv,
        &c,
        "authz.register_resource_type('session', ...)",
        "SELECT authz.register_resource_type('session', 'sessions', 'id', 'project', 'project_id')",
    );
    run(
        inv,
        &c,
        "authz.protect('images', 'session_id', 'session')",
        "SELECT authz.protect('images', 'session_id', 'session')",
    );
    if layout == Layout::ReferenceAfter {
        run(inv, &c, "create_reference_table('projects') (after protect)", "SELECT create_reference_table('projects')");
        run(inv, &c, "create_reference_table('sessions') (after protect)", "SELECT create_reference_table('sessions')");
        run(
            inv,
            &c,
            "create_distributed_table('images', 'session_id') (after protect)",
            "SELECT create_distributed_table('images', 'session_id')",
        );
    }
    for (what, sql) in [
        ("authz.create_role('viewer')", "SELECT authz.create_role('viewer')"),
        ("authz.create_role('editor', ARRAY['viewer'])", "SELECT authz.create_role('editor', ARRAY['viewer'])"),
        ("authz.allow('viewer', 'session', '*', 'read')", "SELECT authz.allow('viewer', 'session', '*', 'read')"),
        ("authz.allow('editor', 'session', '*', 'write')", "SELECT authz.allow('editor', 'session', '*', 'write')"),
        (
            "authz.create_principal('alice'), ('bob')",
            "SELECT authz.create_principal('alice'); SELECT authz.create_principal('bob');",
        ),
        (
            "authz.assign_role('alice', 'editor', 'project', '1')",
            "SELECT authz.assign_role('alice', 'editor', 'project', '1')",
        ),
        (
            "authz.assign_role('bob', 'viewer', 'project', '2')",
            "SELECT authz.assign_role('bob', 'viewer', 'project', '2')",
        ),
        ("authz.map_login('alice', 'alice_login')", "SELECT authz.map_login('alice', 'alice_login')"),
        (
            "GRANT SELECT, INSERT, UPDATE, DELETE ON images TO alice_login, app",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON images TO alice_login, app",
        ),
    ] {
        run(inv, &c, what, sql);
    }
    drop(su);
    let stand_in = failures.iter().any(|f| f.starts_with("SELECT authz.distribute()"));
    if stand_in {
        stand_in_for_distribute(inv, &c);
    }
    describe_state(inv, &c);
    Platform { c, setup_failures: failures, stand_in }
}

/// pg_authz's tables, parents first, and how a row is keyed (for ON CONFLICT DO NOTHING).
const AUTHZ_TABLES: &[&str] = &[
    "roles",
    "role_inheritance",
    "resource_types",
    "principals",
    "memberships",
    "role_assignments",
    "rules",
    "keys",
    "protected",
    "claim_mappings",
];

/// Until `authz.distribute()` exists, the test copies pg_authz's rows from the coordinator to each
/// worker (regclass columns by name, resolved on the worker) once, after the set-up, so that the
/// behaviours behind the missing replication can be inventoried too. This is a snapshot: later
/// changes on the coordinator do not follow (the change tests compare with fresh connections).
fn stand_in_for_distribute(inv: &mut Inventory, c: &CitusCluster) {
    probe_alice(inv, c, "stand-in 0/2 (nothing copied to the workers)");
    for (w, done) in c.workers.iter().zip(copy_authz_rows(c, false)) {
        inv.observe(
            &w.name,
            "authz.distribute() missing: the test copied pg_authz's rows from the coordinator (stand-in, snapshot)",
            done,
        );
    }
    probe_alice(inv, c, "stand-in 1/2 (pg_authz's rows copied to the workers)");
    // pg_authz reads the reference tables (sessions, projects) from inside shard queries on the
    // workers: Citus refuses that as a nested distributed execution unless allowed.
    for n in c.nodes() {
        let mut su = n.superuser();
        su.batch_execute("ALTER SYSTEM SET citus.allow_nested_distributed_execution = on").unwrap();
        su.batch_execute("SELECT pg_reload_conf()").unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    probe_alice(
        inv,
        c,
        "stand-in 2/2 (+ ALTER SYSTEM SET citus.allow_nested_distributed_execution = on on every node)",
    );
}

/// Copy pg_authz's rows from the coordinator into each worker's own authz tables (regclass
/// columns by name); with `replace`, the workers' rows are deleted first (one transaction per
/// worker, so their invalidation triggers fire as for any change there). What was done, per worker.
fn copy_authz_rows(c: &CitusCluster, replace: bool) -> Vec<String> {
    let mut coord = c.coordinator.superuser();
    let mut snapshot = Vec::new();
    for t in AUTHZ_TABLES {
        let order = if *t == "resource_types" { " ORDER BY parent_type NULLS FIRST" } else { "" };
        let rows: Result<String, String> = coord
            .query_one(&format!("SELECT coalesce(json_agg(t{order})::text, '[]') FROM authz.{t} t"), &[])
            .map(|r| r.get(0))
            .map_err(|e| describe(&e));
        snapshot.push((*t, rows));
    }
    let mut out = Vec::new();
    for w in &c.workers {
        let mut ws = w.superuser();
        let mut done = Vec::new();
        let mut tx = ws.transaction().unwrap();
        if replace {
            for t in AUTHZ_TABLES.iter().rev() {
                let filter = match *t {
                    "roles" => " WHERE NOT builtin",
                    "resource_types" => " WHERE name <> 'authz'",
                    _ => "",
                };
                if let Err(e) = tx.batch_execute(&format!("DELETE FROM authz.{t}{filter}")) {
                    done.push(format!("{t}: delete failed: {}", describe(&e)));
                }
            }
        }
        for (t, rows) in &snapshot {
            let rows = match rows {
                Ok(r) => r,
                Err(e) => {
                    done.push(format!("{t}: read failed: {e}"));
                    continue;
                }
            };
            let r = tx.query_one(
                &format!(
                    "WITH ins AS (INSERT INTO authz.{t} SELECT * FROM json_populate_recordset(NULL::authz.{t}, $1::text::json)
                                  ON CONFLICT DO NOTHING RETURNING 1)
                     SELECT count(*) FROM ins"
                ),
                &[rows],
            );
            done.push(match r {
                Ok(r) => format!("{t}={}", r.get::<_, i64>(0)),
                Err(e) => format!("{t}: {}", describe(&e)),
            });
        }
        if let Err(e) = tx.commit() {
            done.push(format!("commit failed: {}", describe(&e)));
        }
        out.push(done.join(", "));
    }
    out
}

/// alice_login's rows on the coordinator, as an observation at one stage of the stand-in.
fn probe_alice(inv: &mut Inventory, c: &CitusCluster, stage: &str) {
    let marks = c.marks();
    let r = c.coordinator.try_connect("alice_login").and_then(|mut a| rows(&mut a));
    let what = match r {
        Ok(r) => format!("{} (single node: sessions {ALICE:?}, 40 images)", fmt_rows(&r)),
        Err(e) => {
            let logs = c.errors_since(&marks);
            let first_worker_line =
                logs.lines().find(|l| l.contains("worker") && l.contains("ERROR")).unwrap_or("").trim().to_string();
            format!("{} || {first_worker_line}", describe(&e))
        }
    };
    inv.observe("coordinator", &format!("alice_login rows at {stage}"), what);
}

/// What each node holds after the set-up: roles, the extension, pg_authz's rows, the table's
/// distribution and row-level security (observations).
fn describe_state(inv: &mut Inventory, c: &CitusCluster) {
    for n in c.nodes() {
        let mut su = n.superuser();
        // Citus hides shards from pg_class for client applications; show them here.
        let _ = su.batch_execute("SET citus.override_table_visibility = off");
        let q = |su: &mut Client, sql: &str| -> String {
            match su.query_one(sql, &[]) {
                Ok(r) => r.get::<_, Option<String>>(0).unwrap_or_else(|| "NULL".into()),
                Err(e) => format!("<{}>", describe(&e)),
            }
        };
        let roles = q(&mut su, "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('alice_login', 'app', 'authz_admin')");
        let ext = q(&mut su, "SELECT string_agg(extname || ' ' || extversion, ', ' ORDER BY extname) FROM pg_extension WHERE extname IN ('citus', 'pg_authz')");
        let counts = q(
            &mut su,
            "SELECT format('principals=%s rules=%s keys=%s resource_types=%s protected=%s role_assignments=%s',
                (SELECT count(*) FROM authz.principals), (SELECT count(*) FROM authz.rules),
                (SELECT count(*) FROM authz.keys), (SELECT count(*) FROM authz.resource_types),
                (SELECT count(*) FROM authz.protected), (SELECT count(*) FROM authz.role_assignments))",
        );
        let regs = q(&mut su, "SELECT string_agg(format('%s->%s(oid %s)', name, tbl::text, tbl::oid), ', ' ORDER BY name) FROM authz.resource_types WHERE tbl IS NOT NULL");
        let authz_citus = q(
            &mut su,
            "SELECT coalesce(string_agg(format('%s:%s', logicalrelid::text, partmethod), ', ' ORDER BY 1), 'none')
             FROM pg_dist_partition WHERE logicalrelid::text LIKE 'authz.%'",
        );
        let app_citus = q(
            &mut su,
            "SELECT coalesce(string_agg(format('%s:%s', logicalrelid::text, partmethod), ', ' ORDER BY 1), 'none')
             FROM pg_dist_partition WHERE logicalrelid::text IN ('projects', 'sessions', 'images')",
        );
        let rls = q(
            &mut su,
            "SELECT string_agg(format('%s rls=%s force=%s policies=%s', c.relname, c.relrowsecurity, c.relforcerowsecurity,
                    (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)), '; ' ORDER BY c.relname)
             FROM pg_class c WHERE c.relname ~ '^images(_[0-9]+)?$' AND c.relkind IN ('r', 'p')",
        );
        let triggers = q(
            &mut su,
            "SELECT string_agg(DISTINCT t.tgrelid::regclass::text, ', ') FROM pg_trigger t
             JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.proname = 'invalidate_caches' AND t.tgrelid::regclass::text !~ '^authz\\.'",
        );
        inv.observe(
            &n.name,
            "state",
            format!(
                "roles [{roles}]; extensions [{ext}]; authz rows [{counts}]; registrations [{regs}]; \
                 authz tables in Citus [{authz_citus}]; app tables in Citus [{app_citus}]; \
                 images & shards [{rls}]; invalidation triggers on app tables/shards [{triggers}]"
            ),
        );
    }
}

fn note_setup(inv: &mut Inventory, p: &Platform) {
    if p.setup_failures.is_empty() {
        inv.observe("coordinator", "setup", "every set-up step succeeded");
    } else {
        inv.observe(
            "coordinator",
            "setup",
            format!(
                "{} set-up step(s) failed (see the setup_* tests): {}",
                p.setup_failures.len(),
                p.setup_failures.join(" || ")
            ),
        );
    }
}

/// A forged token: the right kid, a wrong secret.
fn forged(sub: &str) -> String {
    sign(
        &serde_json::json!({"sub": sub, "exp": common::now() + 3600}),
        Some(KID),
        "not-the-secret-0123456789abcdef-forged",
    )
}

// ------------------------------------------------------------------------------------------------
// Baseline

/// The single-node answers the Citus tests compare against.
#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn a0_single_node_baseline() {
    let c = common::platform(&["alice_login", "app"]);
    c.superuser().batch_execute("SELECT authz.map_login('alice', 'alice_login')").unwrap();
    let mut alice = c.connect("alice_login");
    assert_eq!(sessions_of(&rows(&mut alice).unwrap()), ALICE);
    let mut app = c.connect("app");
    assert_eq!(sessions_of(&rows(&mut app).unwrap()), ANONYMOUS);
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("bob"))).unwrap();
    let r: Rows = tx
        .query("SELECT session_id, count(*) FROM images GROUP BY 1 ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(sessions_of(&r), BOB);
}

// ------------------------------------------------------------------------------------------------
// Set-up: Citus, propagation, the documented calls in three layouts

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn a1_setup_citus_cluster_and_propagation() {
    let mut inv = Inventory::new("Citus cluster and what it propagates");
    let c = CitusCluster::start(2, &[]);
    let mut su = c.coordinator.superuser();
    let v: String = su.query_one("SELECT citus_version()", &[]).unwrap().get(0);
    inv.observe("coordinator", "citus_version()", v);
    let nodes: Vec<String> = su
        .query("SELECT format('%s:%s %s', nodename, nodeport, noderole) || CASE WHEN hasmetadata THEN ' metadata' ELSE '' END FROM pg_dist_node ORDER BY nodeid", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    inv.observe("coordinator", "pg_dist_node", nodes.join(", "));
    su.batch_execute("CREATE ROLE probe_login LOGIN").unwrap();
    for w in &c.workers {
        let n: i64 =
            w.superuser().query_one("SELECT count(*) FROM pg_roles WHERE rolname = 'probe_login'", &[]).unwrap().get(0);
        inv.require(
            n == 1,
            &w.name,
            "CREATE ROLE on the coordinator reaches the worker",
            format!("{n} role(s) named probe_login"),
        );
    }
    for n in c.nodes() {
        let mut s = n.superuser();
        let settings: Vec<String> = s
            .query(
                "SELECT n || '=' || coalesce(current_setting(n, true), '<undefined>') FROM unnest(ARRAY['shared_preload_libraries',
                   'citus.propagate_set_commands', 'citus.enable_unsafe_triggers', 'citus.allow_nested_distributed_execution',
                   'citus.enable_metadata_sync', 'citus.enable_create_role_propagation', 'citus.enable_ddl_propagation',
                   'citus.shard_count', 'citus.use_secondary_nodes', 'citus.enable_local_execution']) n",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        inv.observe(&n.name, "settings", settings.join(" "));
    }
    let marks = c.marks();
    let r = su.batch_execute("CREATE EXTENSION pg_authz");
    inv.step(&c, &marks, "coordinator", "CREATE EXTENSION pg_authz", r);
    for w in &c.workers {
        let mut s = w.superuser();
        let ext: Option<String> =
            s.query_one("SELECT max(extversion) FROM pg_extension WHERE extname = 'pg_authz'", &[]).unwrap().get(0);
        inv.require(
            ext.is_some(),
            &w.name,
            "CREATE EXTENSION pg_authz on the coordinator creates it on the worker",
            format!("pg_authz {ext:?}"),
        );
        let admin: i64 =
            s.query_one("SELECT count(*) FROM pg_roles WHERE rolname = 'authz_admin'", &[]).unwrap().get(0);
        inv.observe(&w.name, "role authz_admin exists", format!("{}", admin == 1));
        let lib = s.query_one("SELECT authz.library_version()", &[]).map(|r| r.get::<_, String>(0));
        inv.observe(&w.name, "authz.library_version()", format!("{:?}", lib.map_err(|e| describe(&e))));
    }
    // Does a SET LOCAL of a custom setting reach the workers in the same transaction? (Observed
    // with citus.propagate_set_commands at its default and at 'local'.)
    su.batch_execute(
        "CREATE TABLE probe (id int PRIMARY KEY); SELECT create_distributed_table('probe', 'id');
         INSERT INTO probe SELECT generate_series(1, 8);",
    )
    .unwrap();
    for mode in ["none", "local"] {
        let mut tx = su.transaction().unwrap();
        tx.batch_execute(&format!(
            "SET LOCAL citus.propagate_set_commands = '{mode}'; SET LOCAL authz.token = 'probe-value'"
        ))
        .unwrap();
        let seen: Vec<String> = tx
            .query(
                "SELECT DISTINCT coalesce(current_setting('authz.token', true), '<unset>') || CASE WHEN id IS NULL THEN '?' ELSE '' END FROM probe",
                &[],
            )
            .map(|rs| rs.iter().map(|r| r.get(0)).collect())
            .unwrap_or_else(|e| vec![describe(&e)]);
        inv.observe(
            "workers",
            &format!("SET LOCAL authz.token seen by shard queries (propagate_set_commands={mode})"),
            format!("{seen:?}"),
        );
        let mut tx2 = tx.transaction().unwrap();
        tx2.batch_execute("SELECT set_config('authz.token', 'probe-set-config', true)").unwrap();
        let seen: Vec<String> = tx2
            .query(
                "SELECT DISTINCT coalesce(current_setting('authz.token', true), '<unset>') || CASE WHEN id IS NULL THEN '?' ELSE '' END FROM probe",
                &[],
            )
            .map(|rs| rs.iter().map(|r| r.get(0)).collect())
            .unwrap_or_else(|e| vec![describe(&e)]);
        inv.observe(
            "workers",
            &format!("set_config('authz.token', …, true) seen by shard queries (propagate_set_commands={mode})"),
            format!("{seen:?}"),
        );
        drop(tx2);
        tx.rollback().unwrap();
    }
    // The value a real token arrives with on the shards when the SET LOCAL is propagated.
    {
        let jwt = token("bob");
        let mut tx = su.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL authz.token = '{jwt}'"))
            .unwrap();
        let seen: Vec<String> = tx
            .query(
                "SELECT DISTINCT current_setting('authz.token', true) || CASE WHEN id IS NULL THEN '?' ELSE '' END FROM probe",
                &[],
            )
            .map(|rs| rs.iter().map(|r| r.get(0)).collect())
            .unwrap_or_else(|e| vec![describe(&e)]);
        let same = seen.len() == 1 && seen[0] == jwt;
        inv.observe(
            "workers",
            "a real JWT set with SET LOCAL (propagate_set_commands=local) as the shard queries see it",
            format!(
                "identical: {same}; sent {} bytes {:?}…; seen {:?}",
                jwt.len(),
                &jwt[..24],
                seen.iter()
                    .map(|v| format!(
                        "{} bytes {:?}…{:?}",
                        v.len(),
                        &v[..v.len().min(24)],
                        &v[v.len().saturating_sub(8)..]
                    ))
                    .collect::<Vec<_>>()
            ),
        );
        tx.rollback().unwrap();
    }
    let apps: Vec<String> = su
        .query(
            "SELECT DISTINCT current_setting('application_name') || ' from ' || coalesce(host(inet_client_addr()), 'socket') || CASE WHEN id IS NULL THEN '?' ELSE '' END FROM probe",
            &[],
        )
        .map(|rs| rs.iter().map(|r| r.get(0)).collect())
        .unwrap_or_else(|e| vec![describe(&e)]);
    inv.observe(
        "workers",
        "application_name and client address of Citus's connections to the shards",
        format!("{apps:?}"),
    );
    inv.finish();
}

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn a2_setup_reference_tables_before_protect() {
    let mut inv = Inventory::new("set-up: reference/distributed tables before register/protect");
    let _p = setup(Layout::ReferenceBefore, &mut inv, true);
    inv.finish();
}

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn a3_setup_reference_tables_after_protect() {
    let mut inv = Inventory::new("set-up: register/protect first, then reference/distributed tables");
    let _p = setup(Layout::ReferenceAfter, &mut inv, true);
    inv.finish();
}

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn a4_setup_distributed_sessions_before_protect() {
    let mut inv = Inventory::new("set-up: sessions distributed (colocated with images) before register/protect");
    let _p = setup(Layout::DistributedBefore, &mut inv, true);
    inv.finish();
}

// ------------------------------------------------------------------------------------------------
// Rows

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn b1_rows_login_mapped_user() {
    let mut inv = Inventory::new("rows of a login-mapped user (alice_login -> alice) on every node");
    let p = setup(Layout::ReferenceBefore, &mut inv, false);
    note_setup(&mut inv, &p);
    for n in p.c.nodes() {
        let marks = p.c.marks();
        let mut alice = n.connect("alice_login");
        let r = rows(&mut alice);
        require_rows(&mut inv, &p.c, &marks, &n.name, "alice_login: SELECT … FROM images (multi-shard)", r, ALICE);
        let marks = p.c.marks();
        let one: Result<i64, _> =
            alice.query_one("SELECT count(*) FROM images WHERE session_id = 1", &[]).map(|r| r.get(0));
        match one {
            Ok(k) => inv.require(
                k == 10,
                &n.name,
                "alice_login: router query on a permitted session (1)",
                format!("{k} rows, single node 10"),
            ),
            Err(e) => {
                inv.step::<()>(&p.c, &marks, &n.name, "alice_login: router query on a permitted session (1)", Err(e));
            }
        }
        let marks = p.c.marks();
        let hidden: Result<i64, _> =
            alice.query_one("SELECT count(*) FROM images WHERE session_id = 3", &[]).map(|r| r.get(0));
        match hidden {
            Ok(k) => inv.require(
                k == 0,
                &n.name,
                "alice_login: router query on a forbidden session (3)",
                format!("{k} rows, single node 0"),
            ),
            Err(e) => {
                inv.step::<()>(&p.c, &marks, &n.name, "alice_login: router query on a forbidden session (3)", Err(e));
            }
        }
        let local = local_identity(&mut alice).map_err(|e| describe(&e));
        let shards = shard_identities(&mut alice).map_err(|e| describe(&e));
        inv.require(
            local.as_deref() == Ok("alice") && shards.as_ref().map(|s| s.iter().all(|x| x == "alice")).unwrap_or(false),
            &n.name,
            "alice_login: authz.user_id() on this node and in the shard queries",
            format!("here {local:?}, shards {shards:?}"),
        );
        let marks = p.c.marks();
        let mut anon = n.connect("app");
        let r = rows(&mut anon);
        require_rows(&mut inv, &p.c, &marks, &n.name, "app (no mapping, no token: anonymous)", r, ANONYMOUS);
    }
    inv.finish();
}

/// Rows for `app` with bob's token given by `how` ("set local" or "login"), inside a transaction.
fn token_rows(inv: &mut Inventory, p: &Platform, how: &str, client_propagates: bool) {
    for n in p.c.nodes() {
        let mut app = n.connect("app");
        let marks = p.c.marks();
        let mut tx = app.transaction().unwrap();
        let label = format!(
            "{how}{}",
            if client_propagates { " with the client's SET LOCAL citus.propagate_set_commands = 'local'" } else { "" }
        );
        if client_propagates {
            tx.batch_execute("SET LOCAL citus.propagate_set_commands = 'local'").unwrap();
        }
        let r = match how {
            "SET LOCAL authz.token" => tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("bob"))),
            _ => tx.execute("SELECT authz.login($1)", &[&token("bob")]).map(|_| ()),
        };
        if inv.step(&p.c, &marks, &n.name, &format!("{label}: bob's token"), r).is_none() {
            continue;
        }
        let marks = p.c.marks();
        let r = rows(&mut tx);
        let what = format!("{label}: SELECT … FROM images (bob)");
        if client_propagates {
            match r {
                Ok(r) => inv.observe(&n.name, &what, fmt_rows(&r)),
                Err(e) => inv.observe(&n.name, &what, format!("{}\n{}", describe(&e), p.c.errors_since(&marks))),
            }
        } else {
            require_rows(inv, &p.c, &marks, &n.name, &what, r, BOB);
        }
        let tx = if tx.batch_execute("SELECT 1").is_err() {
            drop(tx);
            app.transaction().unwrap()
        } else {
            tx
        };
        let mut tx = tx;
        if how == "SET LOCAL authz.token" {
            let _ = tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("bob")));
        } else {
            let _ = tx.execute("SELECT authz.login($1)", &[&token("bob")]);
        }
        let local = local_identity(&mut tx).map_err(|e| describe(&e));
        let shards = shard_identities(&mut tx).map_err(|e| describe(&e));
        let what = format!("{label}: authz.user_id() here and in the shard queries");
        let ok =
            local.as_deref() == Ok("bob") && shards.as_ref().map(|s| s.iter().all(|x| x == "bob")).unwrap_or(false);
        if client_propagates {
            inv.observe(&n.name, &what, format!("here {local:?}, shards {shards:?}"));
        } else {
            inv.require(ok, &n.name, &what, format!("here {local:?}, shards {shards:?}"));
        }
        let _ = tx.rollback();
    }
}

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn b2_rows_set_local_token() {
    let mut inv = Inventory::new("rows for SET LOCAL authz.token on every node (no citus.* set by the client)");
    let p = setup(Layout::ReferenceBefore, &mut inv, false);
    note_setup(&mut inv, &p);
    token_rows(&mut inv, &p, "SET LOCAL authz.token", false);
    token_rows(&mut inv, &p, "SET LOCAL authz.token", true);
    inv.finish();
}

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn b3_rows_authz_login() {
    let mut inv = Inventory::new("rows for authz.login(token) on every node (no citus.* set by the client)");
    let p = setup(Layout::ReferenceBefore, &mut inv, false);
    note_setup(&mut inv, &p);
    token_rows(&mut inv, &p, "authz.login()", false);
    token_rows(&mut inv, &p, "authz.login()", true);
    inv.finish();
}

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn b4_rows_other_layouts() {
    let mut inv = Inventory::new("rows of alice_login and of a SET LOCAL token in the other two layouts");
    for layout in [Layout::ReferenceAfter, Layout::DistributedBefore] {
        let p = setup(layout, &mut inv, false);
        note_setup(&mut inv, &p);
        for n in p.c.nodes() {
            let marks = p.c.marks();
            let mut alice = n.connect("alice_login");
            let r = rows(&mut alice);
            require_rows(&mut inv, &p.c, &marks, &n.name, &format!("{layout:?}: alice_login rows"), r, ALICE);
            let mut app = n.connect("app");
            let mut tx = app.transaction().unwrap();
            let marks = p.c.marks();
            let r =
                tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("bob"))).and_then(|_| rows(&mut tx));
            require_rows(&mut inv, &p.c, &marks, &n.name, &format!("{layout:?}: SET LOCAL token (bob) rows"), r, BOB);
        }
    }
    inv.finish();
}

// ------------------------------------------------------------------------------------------------
// Tokens that must fail

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn c1_forged_token_is_28000_everywhere() {
    let mut inv = Inventory::new("a forged token is 28000 wherever it is checked");
    let p = setup(Layout::ReferenceBefore, &mut inv, false);
    note_setup(&mut inv, &p);
    let bad = forged("bob");
    for n in p.c.nodes() {
        for (what, sql) in [
            (
                "SET LOCAL forged token; SELECT … FROM images",
                format!("SET LOCAL authz.token = '{bad}'; SELECT count(*) FROM images"),
            ),
            (
                "SET LOCAL forged token; SELECT … FROM images WHERE session_id = 3 (router)",
                format!("SET LOCAL authz.token = '{bad}'; SELECT count(*) FROM images WHERE session_id = 3"),
            ),
            (
                "SET LOCAL forged token; SELECT authz.user_id()",
                format!("SET LOCAL authz.token = '{bad}'; SELECT authz.user_id()"),
            ),
        ] {
            let mut app = n.connect("app");
            let mut tx = app.transaction().unwrap();
            let r = tx.batch_execute(&sql);
            let detail = match &r {
                Ok(()) => "succeeded (no error)".to_string(),
                Err(e) => describe(e),
            };
            let ok = matches!(&r, Err(e) if sqlstate(e) == "28000");
            inv.require(ok, &n.name, what, detail);
        }
        // A token the worker cannot verify the same way (a key only the coordinator knows) must be
        // an error there, never another identity: a key added on this node alone.
        let mut app = n.connect("app");
        let mut tx = app.transaction().unwrap();
        let r = tx.batch_execute("SET LOCAL citus.propagate_set_commands = 'local'");
        let _ = r;
        let r = tx
            .batch_execute(&format!("SET LOCAL authz.token = '{}'", token("bob")))
            .and_then(|_| shard_identities(&mut tx));
        inv.observe(
            &n.name,
            "valid token with the client's propagate_set_commands = 'local': identities in the shard queries",
            format!("{:?}", r.map_err(|e| describe(&e))),
        );
    }
    inv.finish();
}

// ------------------------------------------------------------------------------------------------
// Changes reach open connections

/// With the stand-in, re-copy pg_authz's rows to the workers after a change on the coordinator
/// (what a replication would do), so that what remains is whether each node's open connections
/// notice: the workers' own authz tables change and their invalidation triggers fire there.
fn resync(inv: &mut Inventory, p: &Platform) {
    if p.stand_in {
        for (w, done) in p.c.workers.iter().zip(copy_authz_rows(&p.c, true)) {
            inv.observe(&w.name, "stand-in: pg_authz's rows re-copied from the coordinator", done);
        }
    }
}

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn d1_changes_reach_open_connections() {
    let mut inv =
        Inventory::new("grants, revocations, rules, resource rows and keys reach every node's open connections");
    let p = setup(Layout::ReferenceBefore, &mut inv, false);
    note_setup(&mut inv, &p);
    let mut su = p.c.coordinator.superuser();
    // One open connection per node for alice (login) and one for app (token per transaction).
    let mut alice: Vec<Client> = p.c.nodes().map(|n| n.connect("alice_login")).collect();
    let mut app: Vec<Client> = p.c.nodes().map(|n| n.connect("app")).collect();
    let names: Vec<String> = p.c.nodes().map(|n| n.name.clone()).collect();
    let bob_rows = |c: &mut Client| -> Result<Rows, postgres::Error> {
        let mut tx = c.transaction()?;
        tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("bob")))?;
        let r = rows(&mut tx)?;
        tx.commit()?;
        Ok(r)
    };
    // Warm every backend's caches.
    for (i, c) in alice.iter_mut().enumerate() {
        let r = rows(c);
        inv.observe(
            &names[i],
            "alice_login before any change",
            format!("{:?}", r.as_ref().map(fmt_rows).map_err(describe)),
        );
    }
    for (i, c) in app.iter_mut().enumerate() {
        let r = bob_rows(c);
        inv.observe(
            &names[i],
            "bob (SET LOCAL token) before any change",
            format!("{:?}", r.as_ref().map(fmt_rows).map_err(describe)),
        );
    }
    let changes: &[(&str, &str, &[i64])] = &[
        ("grant: assign_role('alice', 'viewer', 'project', '2')", "SELECT authz.assign_role('alice', 'viewer', 'project', '2')", &[1, 2, 3, 4, 5, 6]),
        ("revocation: unassign_role('alice', 'viewer', 'project', '2')", "SELECT authz.unassign_role('alice', 'viewer', 'project', '2')", ALICE),
        ("rule: deny('editor', 'session', '2', 'read')", "SELECT authz.deny('editor', 'session', '2', 'read')", &[1, 5, 6]),
        ("rule removed: remove_rule('editor', 'session', '2', 'read')", "SELECT authz.remove_rule('editor', 'session', '2', 'read')", ALICE),
        (
            "resource rows: session 7 in project 1 (+10 images)",
            "INSERT INTO sessions VALUES (7, 1); INSERT INTO images SELECT 700 + g, 7, 'new' FROM generate_series(1, 10) g",
            &[1, 2, 5, 6, 7],
        ),
    ];
    for (what, sql, expected) in changes {
        let marks = p.c.marks();
        if inv.step(&p.c, &marks, "coordinator", &format!("change: {what}"), su.batch_execute(sql)).is_none() {
            continue;
        }
        resync(&mut inv, &p);
        for (i, c) in alice.iter_mut().enumerate() {
            let marks = p.c.marks();
            let r = rows(c);
            let fresh = p.c.nodes().nth(i).unwrap().connect("alice_login");
            let mut fresh = fresh;
            let f = rows(&mut fresh).map(|r| fmt_rows(&r)).map_err(|e| describe(&e));
            inv.observe(&names[i], &format!("after {what}: a fresh alice_login connection"), format!("{f:?}"));
            require_rows(
                &mut inv,
                &p.c,
                &marks,
                &names[i],
                &format!("after {what}: alice_login's open connection, next statement"),
                r,
                expected,
            );
        }
    }
    // Keys: revoking the key makes bob's token fail (28000) on the next statement everywhere.
    let marks = p.c.marks();
    if inv
        .step(
            &p.c,
            &marks,
            "coordinator",
            "change: revoke_key(KID)",
            su.batch_execute(&format!("SELECT authz.revoke_key('{KID}')")),
        )
        .is_some()
    {
        resync(&mut inv, &p);
        for (i, c) in app.iter_mut().enumerate() {
            let r = bob_rows(c);
            let ok = matches!(&r, Err(e) if sqlstate(e) == "28000");
            inv.require(
                ok,
                &names[i],
                "after revoke_key: bob's token on an open connection, next statement is 28000",
                format!("{:?}", r.as_ref().map(fmt_rows).map_err(describe)),
            );
        }
    }
    inv.finish();
}

// ------------------------------------------------------------------------------------------------
// Writes

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn e1_insert_and_update_confined() {
    let mut inv =
        Inventory::new("INSERT and UPDATE confined on the shards (alice: write on sessions 1, 2; read on 5, 6)");
    let p = setup(Layout::ReferenceBefore, &mut inv, false);
    note_setup(&mut inv, &p);
    for (k, n) in p.c.nodes().enumerate() {
        let base = 1000 + 10 * k as i64;
        let mut alice = n.connect("alice_login");
        let cases: Vec<(String, String, &str)> = vec![
            (
                format!("INSERT into permitted session 1 (id {base})"),
                format!("INSERT INTO images VALUES ({base}, 1, 'ok')"),
                "ok",
            ),
            (
                format!("INSERT into forbidden session 3 (id {})", base + 1),
                format!("INSERT INTO images VALUES ({}, 3, 'no')", base + 1),
                "42501",
            ),
            (
                format!("INSERT into read-only (public) session 5 (id {})", base + 2),
                format!("INSERT INTO images VALUES ({}, 5, 'no')", base + 2),
                "42501",
            ),
            ("UPDATE permitted session 1".into(), "UPDATE images SET label = 'u' WHERE session_id = 1".into(), "10"),
            ("UPDATE forbidden session 3".into(), "UPDATE images SET label = 'u' WHERE session_id = 3".into(), "0"),
            (
                "UPDATE read-only (public) session 5".into(),
                "UPDATE images SET label = 'u' WHERE session_id = 5".into(),
                "0",
            ),
            ("UPDATE every row (multi-shard)".into(), "UPDATE images SET label = 'u'".into(), "20"),
            ("DELETE read-only (public) session 6".into(), "DELETE FROM images WHERE session_id = 6".into(), "0"),
        ];
        for (what, sql, expected) in cases {
            let mut tx = alice.transaction().unwrap();
            let marks = p.c.marks();
            let r = tx.execute(sql.as_str(), &[]);
            let got = match &r {
                Ok(k) => {
                    if expected == "ok" {
                        "ok".to_string()
                    } else {
                        k.to_string()
                    }
                }
                Err(e) => sqlstate(e),
            };
            let detail = match &r {
                Ok(k) => format!("{k} row(s)"),
                Err(e) => format!("{}\n{}", describe(e), p.c.errors_since(&marks)),
            };
            inv.require(
                got == expected,
                &n.name,
                &format!("alice_login: {what}"),
                format!("expected {expected}, got {detail}"),
            );
            let _ = tx.rollback();
        }
    }
    inv.finish();
}

// ------------------------------------------------------------------------------------------------
// EXPLAIN

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn f1_explain_and_explain_analyze() {
    let mut inv = Inventory::new("EXPLAIN and EXPLAIN ANALYZE on every node");
    let p = setup(Layout::ReferenceBefore, &mut inv, false);
    note_setup(&mut inv, &p);
    for n in p.c.nodes() {
        for role in ["alice_login", "app+token"] {
            for sql in [
                "EXPLAIN SELECT count(*) FROM images",
                "EXPLAIN ANALYZE SELECT count(*) FROM images",
                "EXPLAIN SELECT * FROM images WHERE session_id = 1",
                "EXPLAIN ANALYZE SELECT * FROM images WHERE session_id = 1",
                "EXPLAIN (VERBOSE) SELECT count(*) FROM images",
            ] {
                let mut c = n.connect(if role == "alice_login" { "alice_login" } else { "app" });
                let mut tx = c.transaction().unwrap();
                if role != "alice_login" {
                    tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("bob"))).unwrap();
                }
                let marks = p.c.marks();
                let r = tx.query(sql, &[]).map(|rs| rs.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>());
                let what = format!("{role}: {sql}");
                match r {
                    Ok(lines) => {
                        let filters: Vec<&String> =
                            lines.iter().filter(|l| l.contains("permit") || l.contains("Filter")).take(3).collect();
                        inv.require(
                            true,
                            &n.name,
                            &what,
                            format!("{} plan lines; filter lines {filters:?}", lines.len()),
                        );
                    }
                    Err(e) => {
                        inv.step::<()>(&p.c, &marks, &n.name, &what, Err(e));
                    }
                }
            }
        }
    }
    // The elided plan (an unscoped `*` reader: single-node pg_authz drops the filter, see
    // src/enforce/elision.rs): does it apply on the shards? An observation, for the benchmarks.
    let mut su = p.c.coordinator.superuser();
    let r = su.batch_execute(
        "CREATE ROLE root_login LOGIN; GRANT SELECT ON images TO root_login;
         SELECT authz.create_principal('root'); SELECT authz.assign_role('root', 'viewer');
         SELECT authz.map_login('root', 'root_login');",
    );
    inv.observe("coordinator", "root (unscoped viewer) set up", format!("{:?}", r.map_err(|e| describe(&e))));
    resync(&mut inv, &p);
    for n in p.c.nodes() {
        let r = n
            .try_connect("root_login")
            .and_then(|mut c| c.query("EXPLAIN (VERBOSE) SELECT count(*) FROM images", &[]))
            .map(|rs| rs.iter().map(|r| r.get::<_, String>(0)).filter(|l| l.contains("authz.")).collect::<Vec<_>>());
        inv.observe(
            &n.name,
            "root_login (may read every session): authz calls left in EXPLAIN (VERBOSE) (single node: none, the filter is elided)",
            format!("{:?}", r.map_err(|e| describe(&e))),
        );
    }
    inv.finish();
}

// ------------------------------------------------------------------------------------------------
// doctor()

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn g1_doctor_on_workers() {
    let mut inv = Inventory::new("authz.doctor() is correct on every node");
    let p = setup(Layout::ReferenceBefore, &mut inv, false);
    note_setup(&mut inv, &p);
    for n in p.c.nodes() {
        let marks = p.c.marks();
        let mut su = n.superuser();
        let r = su.query("SELECT severity, object, problem FROM authz.doctor() ORDER BY 1, 2", &[]);
        match r {
            Ok(rs) => {
                let all: Vec<String> = rs
                    .iter()
                    .map(|r| format!("{} {}: {}", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2)))
                    .collect();
                let errors: Vec<&String> = all.iter().filter(|l| l.starts_with("error")).collect();
                inv.require(errors.is_empty(), &n.name, "doctor() has no error rows", format!("{all:?}"));
            }
            Err(e) => {
                inv.step::<()>(&p.c, &marks, &n.name, "SELECT * FROM authz.doctor()", Err(e));
            }
        }
        let prot = su
            .query_one("SELECT string_agg(format('%s rls=%s force=%s %s', table_name, rls_enabled, rls_forced, policies), '; ') FROM authz.protected_tables", &[])
            .map(|r| r.get::<_, Option<String>>(0));
        let ok = matches!(&prot, Ok(Some(s)) if s.contains("images rls=t force=t"));
        inv.require(
            ok,
            &n.name,
            "authz.protected_tables lists images, RLS enabled and forced",
            format!("{:?}", prot.map_err(|e| describe(&e))),
        );
    }
    inv.finish();
}

// ------------------------------------------------------------------------------------------------
// Audit

const AUDIT_PREFIX: &str = "pg_authz audit: ";
const PROBE_APP: &str = "citus_audit_probe";

#[test]
#[ignore = "issue #16 inventory: pg_authz on Citus is not done yet; run with --ignored"]
fn h1_audit_lines_name_the_client() {
    let mut inv = Inventory::new("audit lines carry the client's application name and address on every node");
    let p = setup(Layout::ReferenceBefore, &mut inv, false);
    note_setup(&mut inv, &p);
    for n in p.c.nodes() {
        let mut su = n.superuser();
        su.batch_execute("ALTER SYSTEM SET authz.audit = 'all'").unwrap();
        su.batch_execute("SELECT pg_reload_conf()").unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let marks = p.c.marks();
    let mut cfg = p.c.coordinator.config("alice_login");
    cfg.application_name(PROBE_APP);
    let mut alice = cfg.connect(NoTls).unwrap();
    let mut app_cfg = p.c.coordinator.config("app");
    app_cfg.application_name(PROBE_APP);
    let mut app = app_cfg.connect(NoTls).unwrap();
    let r1 = rows(&mut alice).map(|r| fmt_rows(&r)).map_err(|e| describe(&e));
    let r2 = alice
        .query_one("SELECT count(*) FROM images WHERE session_id = 3", &[])
        .map(|r| r.get::<_, i64>(0))
        .map_err(|e| describe(&e));
    let r3 = {
        let mut tx = app.transaction().unwrap();
        let r = tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", forged("bob"))).and_then(|_| rows(&mut tx));
        r.map(|r| fmt_rows(&r)).map_err(|e| describe(&e))
    };
    inv.observe(
        "coordinator",
        "probe statements (alice rows; alice router on session 3; forged token)",
        format!("{r1:?}; {r2:?}; {r3:?}"),
    );
    drop(alice);
    drop(app);
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (n, mark) in p.c.nodes().zip(&marks) {
        let lines: Vec<serde_json::Value> = n
            .log_since(*mark)
            .lines()
            .filter_map(|l| l.find(AUDIT_PREFIX).map(|i| l[i + AUDIT_PREFIX.len()..].to_string()))
            .filter_map(|j| serde_json::from_str(&j).ok())
            .collect();
        let mut seen: Vec<String> = lines
            .iter()
            .map(|v| {
                format!(
                    "{} app={} addr={} user={}",
                    v["event"], v["application_name"], v["client_addr"], v["session_user"]
                )
            })
            .collect();
        seen.sort();
        seen.dedup();
        inv.observe(
            &n.name,
            "audit lines (event, application_name, client_addr, session_user)",
            format!("{} line(s): {seen:?}", lines.len()),
        );
        let ours = lines.iter().filter(|v| v["session_user"] == "alice_login" || v["session_user"] == "app").count();
        inv.require(
            ours > 0 || n.name != "coordinator",
            &n.name,
            "the probe statements were audited",
            format!("{ours} line(s)"),
        );
        let wrong: Vec<String> = lines
            .iter()
            .filter(|v| v["session_user"] == "alice_login" || v["session_user"] == "app")
            .filter(|v| v["application_name"] != PROBE_APP || !v["client_addr"].is_null())
            .map(|v| format!("app={} addr={}", v["application_name"], v["client_addr"]))
            .collect();
        inv.require(
            wrong.is_empty(),
            &n.name,
            &format!("every audit line of the probe names the client: application_name={PROBE_APP}, client_addr null (a Unix-socket client)"),
            format!("{} line(s) name something else: {:?}", wrong.len(), {
                let mut w = wrong.clone();
                w.dedup();
                w
            }),
        );
    }
    inv.finish();
}
