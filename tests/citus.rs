//! pg_authz on Citus (issue 16): a coordinator and two workers, the shared platform (projects,
//! sessions, images distributed by session_id) set up on the coordinator with the documented calls —
//! `CREATE EXTENSION pg_authz; SELECT authz.distribute();` and then the same calls as on one node —
//! in four layouts, and every required behaviour checked on the coordinator and, over direct
//! connections, on each worker: rows per identity (login mapping, `SET LOCAL authz.token`,
//! `authz.login()`), forged tokens and forged or replayed identity assertions (28000), a cluster key
//! that differs on one node (28000), changes reaching open connections, confined writes, EXPLAIN,
//! doctor() and the audit lines. No client sets any `citus.*` setting.
//!
//! Each topic is its own test on its own cluster, so one failure hides no other; each prints what
//! happened at every step (with SQLSTATEs, messages and the internal queries the nodes' logs name)
//! and fails with all of it when a requirement does not hold.
//!
//! Citus comes from scripts/citus.sh (installed, or built once from ../shared/vendor and cached);
//! when it cannot be had, every test fails with the script's output.
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
    /// pg_authz configured on a single node first (register/protect, no distribute()); then
    /// distribute(), then the tables distributed as in ReferenceBefore.
    DistributeLater,
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
}

/// Start a cluster and build the platform on the coordinator with the documented calls, one
/// statement per step; a failed step is a failure of `inv` (the test goes on, to report the rest).
fn setup(layout: Layout, inv: &mut Inventory) -> Platform {
    let c = CitusCluster::start(2, &[]);
    let mut su = c.coordinator.superuser();
    let mut run = |inv: &mut Inventory, c: &CitusCluster, what: &str, sql: &str| {
        let marks = c.marks();
        let r = su.batch_execute(sql);
        inv.step(c, &marks, "coordinator", what, r);
    };
    inv.observe("cluster", "layout", format!("{layout:?}"));
    let projects = "CREATE TABLE projects (id bigint PRIMARY KEY, public boolean NOT NULL DEFAULT false)";
    let sessions = "CREATE TABLE sessions (id bigint PRIMARY KEY, project_id bigint NOT NULL REFERENCES projects)";
    let images = "CREATE TABLE images (id bigint NOT NULL, session_id bigint NOT NULL REFERENCES sessions, label text,
                                       PRIMARY KEY (session_id, id))";
    let reference_before = |run: &mut dyn FnMut(&mut Inventory, &CitusCluster, &str, &str), inv: &mut Inventory| {
        run(inv, &c, "create_reference_table('projects')", "SELECT create_reference_table('projects')");
        run(inv, &c, "create_reference_table('sessions')", "SELECT create_reference_table('sessions')");
        run(
            inv,
            &c,
            "create_distributed_table('images', 'session_id')",
            "SELECT create_distributed_table('images', 'session_id')",
        );
    };

    run(inv, &c, "CREATE ROLE alice_login, app (LOGIN)", "CREATE ROLE alice_login LOGIN; CREATE ROLE app LOGIN;");
    run(inv, &c, "CREATE EXTENSION pg_authz", "CREATE EXTENSION pg_authz");
    if layout != Layout::DistributeLater {
        run(inv, &c, "SELECT authz.distribute()", "SELECT authz.distribute()");
    }
    match layout {
        Layout::ReferenceBefore => {
            run(inv, &c, "CREATE TABLE projects, sessions, images", &format!("{projects}; {sessions}; {images}"));
            reference_before(&mut run, inv);
        }
        Layout::ReferenceAfter | Layout::DistributeLater => {
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
    for (what, sql) in [
        ("authz.create_role('viewer')", "SELECT authz.create_role('viewer')"),
        ("authz.create_role('editor', ARRAY['viewer'])", "SELECT authz.create_role('editor', ARRAY['viewer'])"),
        ("authz.allow('viewer', 'session', '*', 'read')", "SELECT authz.allow('viewer', 'session', '*', 'read')"),
        ("authz.allow('editor', 'session', '*', 'write')", "SELECT authz.allow('editor', 'session', '*', 'write')"),
        (
            "authz.create_principal('alice'), ('bob'), ('carol')",
            "SELECT authz.create_principal('alice'); SELECT authz.create_principal('bob');
             SELECT authz.create_principal('carol');",
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
    match layout {
        Layout::ReferenceAfter => reference_before(&mut run, inv),
        Layout::DistributeLater => {
            run(inv, &c, "SELECT authz.distribute() (after the set-up)", "SELECT authz.distribute()");
            reference_before(&mut run, inv);
        }
        _ => {}
    }
    drop(su);
    describe_state(inv, &c);
    Platform { c }
}

/// What each node holds after the set-up: pg_authz's rows, the registrations, the tables'
/// distribution and row-level security (observations, printed with the report).
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
        let counts = q(
            &mut su,
            "SELECT format('principals=%s rules=%s keys=%s resource_types=%s protected=%s role_assignments=%s',
                (SELECT count(*) FROM authz.principals), (SELECT count(*) FROM authz.rules),
                (SELECT count(*) FROM authz.keys), (SELECT count(*) FROM authz.resource_types),
                (SELECT count(*) FROM authz.protected), (SELECT count(*) FROM authz.role_assignments))",
        );
        let regs = q(&mut su, "SELECT string_agg(format('%s->%s(oid %s)', name, tbl::text, tbl::oid), ', ' ORDER BY name) FROM authz.resource_types WHERE tbl IS NOT NULL");
        let citus_tables = q(
            &mut su,
            "SELECT coalesce(string_agg(format('%s:%s%s', logicalrelid::text, partmethod, repmodel), ', ' ORDER BY 1), 'none')
             FROM pg_dist_partition",
        );
        let rls = q(
            &mut su,
            "SELECT string_agg(format('%s rls=%s force=%s policies=%s', c.relname, c.relrowsecurity, c.relforcerowsecurity,
                    (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)), '; ' ORDER BY c.relname)
             FROM pg_class c WHERE c.relname ~ '^images(_[0-9]+)?$' AND c.relkind IN ('r', 'p')",
        );
        inv.observe(
            &n.name,
            "state",
            format!(
                "authz rows [{counts}]; registrations [{regs}]; Citus tables [{citus_tables}]; images & shards [{rls}]"
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
fn a1_distribute() {
    let mut inv =
        Inventory::new("authz.distribute(): pg_authz's state cluster-wide, idempotent, refused where it cannot run");
    let c = CitusCluster::start(2, &[]);
    let mut su = c.coordinator.superuser();
    su.batch_execute("CREATE EXTENSION pg_authz; CREATE ROLE dba LOGIN").unwrap();
    for w in &c.workers {
        let ext: Option<String> = w
            .superuser()
            .query_one("SELECT max(extversion) FROM pg_extension WHERE extname = 'pg_authz'", &[])
            .unwrap()
            .get(0);
        inv.require(
            ext.is_some(),
            &w.name,
            "CREATE EXTENSION pg_authz on the coordinator reaches the worker",
            format!("{ext:?}"),
        );
    }
    let refused = c.coordinator.connect("dba").batch_execute("SELECT authz.distribute()");
    inv.require(
        matches!(&refused, Err(e) if sqlstate(e) == "42501"),
        "coordinator",
        "a non-superuser's authz.distribute() is 42501",
        format!("{:?}", refused.map_err(|e| describe(&e))),
    );
    let first: Result<String, _> = su.query_one("SELECT authz.distribute()", &[]).map(|r| r.get(0));
    inv.require(
        matches!(&first, Ok(s) if s.starts_with("distributed: 13 of pg_authz's 13 tables converted")),
        "coordinator",
        "the first authz.distribute() converts pg_authz's 13 tables",
        format!("{:?}", first.map_err(|e| describe(&e))),
    );
    let again: Result<String, _> = su.query_one("SELECT authz.distribute()", &[]).map(|r| r.get(0));
    inv.require(
        matches!(&again, Ok(s) if s.starts_with("distributed: 0 of pg_authz's 13 tables converted")),
        "coordinator",
        "a second authz.distribute() changes nothing (idempotent)",
        format!("{:?}", again.map_err(|e| describe(&e))),
    );
    for n in c.nodes() {
        let mut s = n.superuser();
        let kinds: String = s
            .query_one(
                "SELECT string_agg(DISTINCT partmethod::text || repmodel::text, ',') || ' x' || count(*)
                 FROM pg_dist_partition WHERE logicalrelid::text LIKE 'authz.%'",
                &[],
            )
            .map(|r| r.get(0))
            .unwrap_or_else(|e| describe(&e));
        inv.require(kinds == "nt x13", &n.name, "pg_authz's tables are reference tables here", kinds);
        let keys: i64 = s.query_one("SELECT count(*) FROM authz.cluster", &[]).unwrap().get(0);
        inv.require(keys == 1, &n.name, "the cluster key is here", format!("{keys} row(s)"));
    }
    let on_worker = c.workers[0].superuser().batch_execute("SELECT authz.distribute()");
    inv.require(
        matches!(&on_worker, Err(e) if sqlstate(e) == "55000"),
        "worker1",
        "authz.distribute() on a worker is 55000 (it runs on the coordinator)",
        format!("{:?}", on_worker.map_err(|e| describe(&e))),
    );
    inv.finish();
}

/// Every layout: the documented calls succeed, and every node answers what one node answers.
#[test]
fn a2_every_layout() {
    let mut inv =
        Inventory::new("the documented procedure in four layouts: same rows and a clean doctor() on every node");
    for layout in [Layout::ReferenceBefore, Layout::ReferenceAfter, Layout::DistributedBefore, Layout::DistributeLater]
    {
        let p = setup(layout, &mut inv);
        for n in p.c.nodes() {
            let marks = p.c.marks();
            let r = rows(&mut n.connect("alice_login"));
            require_rows(&mut inv, &p.c, &marks, &n.name, &format!("{layout:?}: alice_login rows"), r, ALICE);
            let mut app = n.connect("app");
            let marks = p.c.marks();
            let r = rows(&mut app);
            require_rows(&mut inv, &p.c, &marks, &n.name, &format!("{layout:?}: anonymous rows"), r, ANONYMOUS);
            let mut tx = app.transaction().unwrap();
            let marks = p.c.marks();
            let r =
                tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("bob"))).and_then(|_| rows(&mut tx));
            require_rows(&mut inv, &p.c, &marks, &n.name, &format!("{layout:?}: SET LOCAL token (bob) rows"), r, BOB);
            drop(tx);
            let doctor = n
                .superuser()
                .query("SELECT severity || ' ' || object || ': ' || problem FROM authz.doctor() ORDER BY 1", &[])
                .map(|rs| rs.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>());
            let clean = matches!(&doctor, Ok(lines) if lines.iter().all(|l| !l.starts_with("error")));
            inv.require(
                clean,
                &n.name,
                &format!("{layout:?}: doctor() reports no error"),
                format!("{:?}", doctor.map_err(|e| describe(&e))),
            );
        }
    }
    inv.finish();
}

#[test]
fn b1_rows_login_mapped_user() {
    let mut inv = Inventory::new("rows of a login-mapped user (alice_login -> alice) on every node");
    let p = setup(Layout::ReferenceBefore, &mut inv);
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

/// Rows for `app` with bob's token given by `how` ("SET LOCAL authz.token" or "authz.login()"),
/// inside a transaction, and the identity the shard queries run under.
fn token_rows(inv: &mut Inventory, p: &Platform, how: &str) {
    for n in p.c.nodes() {
        let mut app = n.connect("app");
        let marks = p.c.marks();
        let mut tx = app.transaction().unwrap();
        let r = match how {
            "SET LOCAL authz.token" => tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("bob"))),
            _ => tx.execute("SELECT authz.login($1)", &[&token("bob")]).map(|_| ()),
        };
        if inv.step(&p.c, &marks, &n.name, &format!("{how}: bob's token"), r).is_none() {
            continue;
        }
        let marks = p.c.marks();
        let r = rows(&mut tx);
        require_rows(inv, &p.c, &marks, &n.name, &format!("{how}: SELECT … FROM images (bob)"), r, BOB);
        let local = local_identity(&mut tx).map_err(|e| describe(&e));
        let shards = shard_identities(&mut tx).map_err(|e| describe(&e));
        let ok =
            local.as_deref() == Ok("bob") && shards.as_ref().map(|s| s.iter().all(|x| x == "bob")).unwrap_or(false);
        inv.require(
            ok,
            &n.name,
            &format!("{how}: authz.user_id() here and in the shard queries"),
            format!("here {local:?}, shards {shards:?}"),
        );
        let _ = tx.rollback();
    }
}

#[test]
fn b2_rows_set_local_token() {
    let mut inv = Inventory::new("rows for SET LOCAL authz.token on every node (no citus.* set by the client)");
    let p = setup(Layout::ReferenceBefore, &mut inv);
    token_rows(&mut inv, &p, "SET LOCAL authz.token");
    inv.finish();
}

#[test]
fn b3_rows_authz_login() {
    let mut inv = Inventory::new("rows for authz.login(token) on every node (no citus.* set by the client)");
    let p = setup(Layout::ReferenceBefore, &mut inv);
    token_rows(&mut inv, &p, "authz.login()");
    // A session-level login (authz.login(token, false)) outside any transaction block: every
    // statement is its own transaction, with connections Citus keeps open between them.
    for n in p.c.nodes() {
        let mut app = n.connect("app");
        let marks = p.c.marks();
        let r = app.execute("SELECT authz.login($1, false)", &[&token("bob")]);
        if inv.step(&p.c, &marks, &n.name, "authz.login(token, false): bob for the session", r).is_none() {
            continue;
        }
        for round in 1..=2 {
            let marks = p.c.marks();
            let r = rows(&mut app);
            require_rows(
                &mut inv,
                &p.c,
                &marks,
                &n.name,
                &format!("session login, statement {round}: rows (bob)"),
                r,
                BOB,
            );
        }
        let shards = shard_identities(&mut app).map_err(|e| describe(&e));
        inv.require(
            matches!(&shards, Ok(s) if s.iter().all(|x| x == "bob")),
            &n.name,
            "session login: the shard queries run as bob",
            format!("{shards:?}"),
        );
        let marks = p.c.marks();
        let r = app.batch_execute("SELECT authz.logout(false)").and_then(|_| rows(&mut app));
        require_rows(&mut inv, &p.c, &marks, &n.name, "after authz.logout(false): anonymous rows", r, ANONYMOUS);
    }
    inv.finish();
}

/// A resource table protected by its own id (its policies read the table itself), distributed, and
/// owned by a role that is not a superuser: FORCE ROW LEVEL SECURITY applies to its owner on every
/// node, and pg_authz still reads it whole for resolution.
#[test]
fn b4_self_protected_distributed_table_of_an_ordinary_owner() {
    let mut inv =
        Inventory::new("a self-protected distributed table owned by an ordinary role: same rows on every node");
    let p = setup(Layout::ReferenceBefore, &mut inv);
    let mut su = p.c.coordinator.superuser();
    for (what, sql) in [
        ("CREATE ROLE notes_owner", "CREATE ROLE notes_owner LOGIN; GRANT CREATE ON SCHEMA public TO notes_owner"),
        (
            "notes_owner creates and distributes notes (by id)",
            "SET ROLE notes_owner;
             CREATE TABLE notes (id bigint PRIMARY KEY, project_id bigint NOT NULL, body text);
             SELECT create_distributed_table('notes', 'id');
             INSERT INTO notes SELECT g, 1 + g % 3, 'note ' || g FROM generate_series(1, 300) g;
             GRANT SELECT ON notes TO alice_login, app;
             RESET ROLE",
        ),
        (
            "register and protect notes by its own id",
            "SELECT authz.register_resource_type('note', 'notes', 'id', 'project', 'project_id');
             SELECT authz.protect('notes', 'id', 'note');
             SELECT authz.allow('viewer', 'note', '*', 'read')",
        ),
    ] {
        let marks = p.c.marks();
        let r = su.batch_execute(sql);
        inv.step(&p.c, &marks, "coordinator", what, r);
    }
    let expected: Vec<i64> = su
        .query("SELECT id FROM notes WHERE project_id IN (1, 3) ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let forced: bool =
        su.query_one("SELECT relforcerowsecurity FROM pg_class WHERE oid = 'notes'::regclass", &[]).unwrap().get(0);
    inv.require(forced, "coordinator", "notes has FORCE ROW LEVEL SECURITY", format!("{forced}"));
    for n in p.c.nodes() {
        for role in ["alice_login", "app+token"] {
            let mut c = n.connect(if role == "alice_login" { "alice_login" } else { "app" });
            let mut tx = c.transaction().unwrap();
            if role != "alice_login" {
                tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("alice"))).unwrap();
            }
            let marks = p.c.marks();
            let r = tx
                .query("SELECT id FROM notes ORDER BY id", &[])
                .map(|rs| rs.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>());
            inv.require(
                matches!(&r, Ok(ids) if *ids == expected),
                &n.name,
                &format!("{role}: alice's notes ({} in project 1 and the public project 3)", expected.len()),
                format!("{:?}\n{}", r.as_ref().map(Vec::len).map_err(describe), p.c.errors_since(&marks)),
            );
        }
    }
    inv.finish();
}

// ------------------------------------------------------------------------------------------------
// Tokens that must fail

#[test]
fn c1_forged_token_is_28000_everywhere() {
    let mut inv = Inventory::new("a forged token is 28000 wherever it is checked");
    let p = setup(Layout::ReferenceBefore, &mut inv);
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
    }
    inv.finish();
}

/// An identity assertion as a coordinator signs it (src/auth/assertion.rs), with `secret`.
fn assertion(secret: &[u8], claims: &serde_json::Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = format!("{}.{}", b64.encode(r#"{"typ":"pg_authz-assertion","v":1}"#), b64.encode(claims.to_string()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    format!("{body}.{}", b64.encode(ring::hmac::sign(&key, body.as_bytes()).as_ref()))
}

/// `signed` with its claims replaced by `claims`, its signature kept.
fn tampered(signed: &str, claims: &serde_json::Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = signed.split('.').collect();
    format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2])
}

/// Claims asserting `user` (login-mapped) for the backend with Citus global process id `gpid`,
/// signed `age` seconds ago.
fn asserted(user: &str, gpid: u64, age: f64) -> serde_json::Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    serde_json::json!({"s": "login", "u": user, "a": "lab-dashboard", "h": null, "g": gpid, "t": now - age})
}

#[test]
fn c2_forged_and_replayed_assertions_are_28000() {
    let mut inv = Inventory::new("a connection Citus opened carries a valid identity assertion, or is refused (28000)");
    let p = setup(Layout::ReferenceBefore, &mut inv);
    let w = &p.c.workers[0];
    let secret: Vec<u8> = w.superuser().query_one("SELECT secret FROM authz.cluster", &[]).unwrap().get(0);
    // A client posing as Citus's connection from the coordinator backend with this global pid.
    const GPID: u64 = 10_000_054_321;
    let internal = || {
        let mut cfg = w.config("app");
        cfg.application_name(&format!("citus_internal gpid={GPID}"));
        cfg.connect(NoTls).unwrap()
    };
    // Citus's connections run shard queries: read this worker's shards of images directly.
    let shards: Vec<String> = {
        let mut su = w.superuser();
        su.batch_execute("SET citus.override_table_visibility = off").unwrap();
        su.query("SELECT format('%I', relname) FROM pg_class WHERE relname ~ '^images_[0-9]+$' AND relkind = 'r'", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let on_shards = shards.iter().map(|t| format!("SELECT session_id FROM {t}")).collect::<Vec<_>>().join(" UNION ");
    let stored: Vec<i64> = {
        let mut su = w.superuser();
        let mut v: Vec<i64> = su.query(&on_shards, &[]).unwrap().iter().map(|r| r.get(0)).collect();
        v.sort();
        v
    };
    let alices: Vec<i64> = stored.iter().copied().filter(|s| ALICE.contains(s)).collect();
    inv.observe(&w.name, "images shards here and their sessions", format!("{shards:?}: {stored:?}"));
    let valid = assertion(&secret, &asserted("alice", GPID, 0.0));
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no assertion", None, "28000"),
        ("a malformed assertion", Some("eyJub3QiOiJ0aGlzIn0.eyJzIjoibG9naW4ifQ.c2lnbmF0dXJl".into()), "28000"),
        (
            "signed with another key",
            Some(assertion(b"another-key-0123456789abcdef-0123", &asserted("alice", GPID, 0.0))),
            "28000",
        ),
        ("for another backend (replayed)", Some(assertion(&secret, &asserted("alice", GPID + 1, 0.0))), "28000"),
        ("signed ten minutes ago", Some(assertion(&secret, &asserted("alice", GPID, 600.0))), "28000"),
        (
            "altered after signing (alice's signature, bob's claims)",
            Some(tampered(&valid, &asserted("bob", GPID, 0.0))),
            "28000",
        ),
        ("valid", Some(valid.clone()), "ok"),
    ];
    for (what, value, expected) in cases {
        let mut c = internal();
        let marks = p.c.marks();
        let read = |c: &mut Client| -> Result<Vec<i64>, postgres::Error> {
            let mut v: Vec<i64> = c.query(&on_shards, &[])?.iter().map(|r| r.get(0)).collect();
            v.sort();
            Ok(v)
        };
        let r = match &value {
            Some(v) => c.batch_execute(&format!("SET authz.cluster_assertion = '{v}'")).and_then(|_| read(&mut c)),
            None => read(&mut c),
        };
        let got = match &r {
            Ok(_) => "ok".to_string(),
            Err(e) => sqlstate(e),
        };
        inv.require(
            got == expected,
            &w.name,
            &format!("internal connection, {what}: a shard query on images"),
            format!("expected {expected}, got {:?}{}", r.as_ref().map_err(describe), p.c.errors_since(&marks)),
        );
        if expected == "ok" {
            let seen = r.unwrap_or_default();
            inv.require(
                seen == alices,
                &w.name,
                "the valid assertion's identity is adopted (alice's sessions among this worker's)",
                format!("{seen:?}, expected {alices:?}"),
            );
            let who: Result<Option<String>, _> = c.query_one("SELECT authz.user_id()", &[]).map(|r| r.get(0));
            inv.require(
                matches!(&who, Ok(Some(u)) if u == "alice"),
                &w.name,
                "authz.user_id() under the valid assertion",
                format!("{:?}", who.map_err(|e| describe(&e))),
            );
        }
    }
    inv.finish();
}

#[test]
fn c3_a_key_that_differs_on_a_node_is_28000() {
    let mut inv = Inventory::new(
        "a node whose cluster key differs refuses the coordinator's assertions (28000), never runs as someone else",
    );
    let p = setup(Layout::ReferenceBefore, &mut inv);
    let w = &p.c.workers[0];
    let mut wsu = w.superuser();
    wsu.batch_execute("SET citus.override_table_visibility = off; SET citus.enable_manual_changes_to_shards = on")
        .unwrap();
    let placement: String = wsu
        .query_one(
            "SELECT format('authz.%I', relname) FROM pg_class
             WHERE relnamespace = 'authz'::regnamespace AND relname ~ '^cluster_[0-9]+$'",
            &[],
        )
        .unwrap()
        .get(0);
    let original: Vec<u8> = wsu.query_one(&format!("SELECT secret FROM {placement}"), &[]).unwrap().get(0);
    let bob_rows = |c: &mut Client| -> Result<Rows, postgres::Error> {
        let mut tx = c.transaction()?;
        tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token("bob")))?;
        rows(&mut tx)
    };
    let mut app = p.c.coordinator.connect("app");
    let marks = p.c.marks();
    let r = bob_rows(&mut app);
    require_rows(&mut inv, &p.c, &marks, "coordinator", "before: bob's rows", r, BOB);
    wsu.execute(&format!("UPDATE {placement} SET secret = decode(repeat('ab', 32), 'hex')"), &[]).unwrap();
    let marks = p.c.marks();
    let r = bob_rows(&mut app);
    inv.require(
        matches!(&r, Err(e) if sqlstate(e) == "28000"),
        "coordinator",
        "with worker1's key changed: bob's query is 28000 (open connection)",
        format!("{:?}\n{}", r.as_ref().map(fmt_rows).map_err(describe), p.c.errors_since(&marks)),
    );
    let r = bob_rows(&mut p.c.coordinator.connect("app"));
    inv.require(
        matches!(&r, Err(e) if sqlstate(e) == "28000"),
        "coordinator",
        "with worker1's key changed: bob's query is 28000 (new connection)",
        format!("{:?}", r.as_ref().map(fmt_rows).map_err(describe)),
    );
    wsu.execute(&format!("UPDATE {placement} SET secret = $1"), &[&original]).unwrap();
    let marks = p.c.marks();
    let r = bob_rows(&mut app);
    require_rows(&mut inv, &p.c, &marks, "coordinator", "with the key restored: bob's rows again", r, BOB);
    inv.finish();
}

// ------------------------------------------------------------------------------------------------
// Changes reach open connections

#[test]
fn d1_changes_reach_open_connections() {
    let mut inv =
        Inventory::new("grants, revocations, rules, resource rows and keys reach every node's open connections");
    let p = setup(Layout::ReferenceBefore, &mut inv);
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
fn e1_insert_and_update_confined() {
    let mut inv =
        Inventory::new("INSERT and UPDATE confined on the shards (alice: write on sessions 1, 2; read on 5, 6)");
    let p = setup(Layout::ReferenceBefore, &mut inv);
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
fn f1_explain_and_explain_analyze() {
    let mut inv = Inventory::new("EXPLAIN and EXPLAIN ANALYZE on every node");
    let p = setup(Layout::ReferenceBefore, &mut inv);
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
    // The elided plan (an unscoped `*` reader: pg_authz drops the filter, src/enforce/elision.rs)
    // applies on the shards too (a shard's column is its table's).
    let mut su = p.c.coordinator.superuser();
    let r = su.batch_execute(
        "CREATE ROLE root_login LOGIN; GRANT SELECT ON images TO root_login;
         SELECT authz.create_principal('root'); SELECT authz.assign_role('root', 'viewer');
         SELECT authz.map_login('root', 'root_login');",
    );
    inv.require(
        r.is_ok(),
        "coordinator",
        "root (unscoped viewer) set up",
        format!("{:?}", r.map_err(|e| describe(&e))),
    );
    for n in p.c.nodes() {
        let r = n
            .try_connect("root_login")
            .and_then(|mut c| c.query("EXPLAIN (VERBOSE) SELECT count(*) FROM images", &[]))
            .map(|rs| rs.iter().map(|r| r.get::<_, String>(0)).filter(|l| l.contains("authz.")).collect::<Vec<_>>());
        inv.require(
            matches!(&r, Ok(calls) if calls.is_empty()),
            &n.name,
            "root_login (may read every session): no authz call left in EXPLAIN (VERBOSE), on the shards either",
            format!("{:?}", r.map_err(|e| describe(&e))),
        );
    }
    inv.finish();
}

// ------------------------------------------------------------------------------------------------
// doctor()

#[test]
fn g1_doctor_on_workers() {
    let mut inv = Inventory::new("authz.doctor() is correct on every node");
    let p = setup(Layout::ReferenceBefore, &mut inv);
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
fn h1_audit_lines_name_the_client() {
    let mut inv = Inventory::new("audit lines carry the client's application name and address on every node");
    let p = setup(Layout::ReferenceBefore, &mut inv);
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
