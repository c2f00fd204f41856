//! The Citus benchmark (issue #16): protected queries on a distributed cluster, against the query a
//! DBA would write by hand for the same caller as superuser (the limit).
//!
//! A coordinator and two workers (`citus.shard_count = 32`); projects a reference table; sessions
//! distributed by id; images distributed by session_id, colocated with sessions and protected by
//! the session type (full: 1,000,000 images in 50,000 sessions of 2,500 projects; quick: a tenth).
//! Callers: selective (viewer on 2 projects: 40 sessions), broad (viewer on 250 projects: 5,000
//! sessions) and admin (viewer on every session). Each statement runs in its own transaction on
//! the coordinator — `BEGIN; SET LOCAL authz.token = …; <query>; COMMIT` for pg_authz, `BEGIN;
//! <query>; COMMIT` as superuser with the hand-written filter (the selective caller's session ids
//! bound as an array; the broad caller's join to its projects) — sides alternating, medians after
//! warm-up. Targets: selective count and page ≤ 1.5 × the limit, broad ≤ 1.1 ×. Writes the
//! `## Citus (make bench)` section of BENCHMARKS.md. It reports; it never passes or fails.
//!
//! Run with `make bench` (full) or `cargo bench --bench citus -- quick`.

#[path = "../tests/common/citus.rs"]
mod citus;
#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::fmt::Write as _;
use std::time::Instant;

use citus::CitusCluster;
use common::{token, Client, KID, SECRET};
use support::{median, ms, write_section};

struct Mode {
    name: &'static str,
    projects: i64,
    runs: usize,
}

const QUICK: Mode = Mode { name: "quick", projects: 250, runs: 15 };
const FULL: Mode = Mode { name: "full", projects: 2_500, runs: 41 };
const SESSIONS_PER_PROJECT: i64 = 20;
const IMAGES_PER_SESSION: i64 = 20;
const SELECTIVE_PROJECTS: i64 = 2;
const BROAD_PROJECTS: i64 = 250;
const SELECTIVE_MAX: f64 = 1.5;
const BROAD_MAX: f64 = 1.1;

struct Caller {
    name: &'static str,
    principal: &'static str,
    /// The projects it was granted (None: every session).
    projects: Option<Vec<i64>>,
    target: f64,
}

fn build(su: &mut Client, mode: &Mode) -> Vec<Caller> {
    let sessions = mode.projects * SESSIONS_PER_PROJECT;
    let images = sessions * IMAGES_PER_SESSION;
    // One statement at a time: Citus relays some DDL (CREATE EXTENSION) with the client's whole
    // query string, which a multi-statement string breaks.
    let script = format!(
        "CREATE EXTENSION pg_authz;
         SELECT authz.distribute();
         CREATE ROLE app LOGIN;
         CREATE TABLE projects (id bigint PRIMARY KEY, public boolean NOT NULL DEFAULT false);
         CREATE TABLE sessions (id bigint PRIMARY KEY, project_id bigint NOT NULL REFERENCES projects);
         SELECT create_reference_table('projects');
         SELECT create_distributed_table('sessions', 'id');
         CREATE TABLE images (id bigint NOT NULL, session_id bigint NOT NULL REFERENCES sessions, path text NOT NULL,
                              PRIMARY KEY (session_id, id));
         SELECT create_distributed_table('images', 'session_id', colocate_with => 'sessions');
         CREATE INDEX ON sessions (project_id);
         INSERT INTO projects SELECT g, false FROM generate_series(1, {p}) g;
         INSERT INTO sessions SELECT g, 1 + (g - 1) / {SESSIONS_PER_PROJECT} FROM generate_series(1, {sessions}) g;
         INSERT INTO images SELECT g, 1 + (g - 1) / {IMAGES_PER_SESSION}, 'img/' || g FROM generate_series(1, {images}) g;
         SELECT authz.add_key('{KID}', 'HS256', '{SECRET}');
         SELECT authz.register_resource_type('project', 'projects', 'id', public_column => 'public');
         SELECT authz.register_resource_type('session', 'sessions', 'id', 'project', 'project_id');
         SELECT authz.protect('images', 'session_id', 'session');
         SELECT authz.create_role('viewer');
         SELECT authz.allow('viewer', 'session', '*', 'read');
         GRANT SELECT ON images TO app;
         GRANT SELECT ON sessions TO app;
         GRANT SELECT ON projects TO app;
         SELECT authz.create_principal('selective'); SELECT authz.create_principal('broad');
         SELECT authz.create_principal('admin');
         SELECT authz.assign_role('admin', 'viewer');
         VACUUM ANALYZE projects; VACUUM ANALYZE sessions; VACUUM ANALYZE images;",
        p = mode.projects
    );
    for statement in script.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        for part in statement.split("; ").map(str::trim).filter(|s| !s.is_empty()) {
            su.batch_execute(part).unwrap_or_else(|e| panic!("{part}: {e:?}"));
        }
    }
    // The selective caller's projects are spread over the id range; the broad caller's too.
    let spread = |k: i64| -> Vec<i64> { (0..k).map(|i| 1 + i * (mode.projects / k).max(1)).collect() };
    let selective = spread(SELECTIVE_PROJECTS);
    let broad = spread(BROAD_PROJECTS.min(mode.projects));
    for (principal, projects) in [("selective", &selective), ("broad", &broad)] {
        for p in projects {
            su.execute("SELECT authz.assign_role($1, 'viewer', 'project', $2)", &[&principal, &p.to_string()])
                .expect("grant");
        }
    }
    vec![
        Caller { name: "selective", principal: "selective", projects: Some(selective), target: SELECTIVE_MAX },
        Caller { name: "broad", principal: "broad", projects: Some(broad), target: BROAD_MAX },
        Caller { name: "admin", principal: "admin", projects: None, target: BROAD_MAX },
    ]
}

/// The queries: the caller's text (pg_authz filters) and the limit's (the DBA's filter).
fn queries(c: &Caller, session_ids: &[i64]) -> Vec<(&'static str, String, String)> {
    let ids = format!("'{{{}}}'::bigint[]", session_ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
    let (count_limit, page_limit) = match (&c.projects, c.name) {
        (None, _) => (
            "SELECT count(*) FROM images".to_string(),
            "SELECT session_id, id, path FROM images ORDER BY session_id, id LIMIT 20".to_string(),
        ),
        (Some(_), "selective") => (
            format!("SELECT count(*) FROM images WHERE session_id = ANY({ids})"),
            format!("SELECT session_id, id, path FROM images WHERE session_id = ANY({ids}) ORDER BY session_id, id LIMIT 20"),
        ),
        (Some(p), _) => {
            let projects = format!("'{{{}}}'::bigint[]", p.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
            (
                format!(
                    "SELECT count(*) FROM images i JOIN sessions s ON s.id = i.session_id WHERE s.project_id = ANY({projects})"
                ),
                format!(
                    "SELECT i.session_id, i.id, i.path FROM images i JOIN sessions s ON s.id = i.session_id
                     WHERE s.project_id = ANY({projects}) ORDER BY i.session_id, i.id LIMIT 20"
                ),
            )
        }
    };
    vec![
        ("count", "SELECT count(*) FROM images".to_string(), count_limit),
        ("page", "SELECT session_id, id, path FROM images ORDER BY session_id, id LIMIT 20".to_string(), page_limit),
    ]
}

fn session_ids(su: &mut Client, c: &Caller) -> Vec<i64> {
    match &c.projects {
        Some(p) => su
            .query("SELECT id FROM sessions WHERE project_id = ANY($1) ORDER BY id", &[p])
            .expect("session ids")
            .iter()
            .map(|r| r.get(0))
            .collect(),
        None => Vec::new(),
    }
}

/// One statement in its own transaction; its wall-clock time in ms (the whole round trip).
fn timed(client: &mut Client, prefix: &str, query: &str) -> f64 {
    let started = Instant::now();
    client.batch_execute(&format!("{prefix}; {query}; COMMIT")).expect("statement");
    ms(started.elapsed())
}

struct Row {
    cached_conns: i32,
    caller: &'static str,
    query: &'static str,
    authz_ms: f64,
    limit_ms: f64,
    target: f64,
    same_result: bool,
}

/// `cached_conns`: `citus.max_cached_conns_per_worker` for both sides' sessions (Citus's default is
/// 1: a statement's other connections to a worker are closed at its end, and the next statement opens
/// new ones — new backends, whose pg_authz caches start cold).
fn measure(
    cluster: &CitusCluster,
    callers: &[Caller],
    mode: &Mode,
    cached_conns: i32,
) -> (Vec<Row>, Vec<(String, String)>) {
    let mut su = cluster.coordinator.superuser();
    let setting = format!("SET citus.max_cached_conns_per_worker = {cached_conns}");
    let mut rows = Vec::new();
    let mut plans = Vec::new();
    for c in callers {
        let ids = session_ids(&mut su, c);
        let tok = token(c.principal);
        let mut app = cluster.coordinator.connect("app");
        let mut limit = cluster.coordinator.superuser();
        app.batch_execute(&setting).expect("setting");
        limit.batch_execute(&setting).expect("setting");
        let prefix = format!("BEGIN; SET LOCAL authz.token = '{tok}'");
        for (what, authz_q, limit_q) in queries(c, &ids) {
            // The same answer on both sides first (a check of the benchmark, not of the timings).
            let mut tx = app.transaction().expect("tx");
            tx.batch_execute(&format!("SET LOCAL authz.token = '{tok}'")).expect("token");
            let a: Vec<String> = tx.simple_query(&authz_q).expect("authz side").iter().filter_map(row_text).collect();
            tx.commit().expect("commit");
            let l: Vec<String> =
                limit.simple_query(&limit_q).expect("limit side").iter().filter_map(row_text).collect();
            let (mut at, mut lt) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                timed(&mut app, &prefix, &authz_q);
                timed(&mut limit, "BEGIN", &limit_q);
            }
            for run in 0..mode.runs {
                if run % 2 == 0 {
                    at.push(timed(&mut app, &prefix, &authz_q));
                    lt.push(timed(&mut limit, "BEGIN", &limit_q));
                } else {
                    lt.push(timed(&mut limit, "BEGIN", &limit_q));
                    at.push(timed(&mut app, &prefix, &authz_q));
                }
            }
            rows.push(Row {
                cached_conns,
                caller: c.name,
                query: what,
                authz_ms: median(&at),
                limit_ms: median(&lt),
                target: c.target,
                same_result: a == l,
            });
            if what == "count" && cached_conns == 1 {
                let mut tx = app.transaction().expect("tx");
                tx.batch_execute(&format!("SET LOCAL authz.token = '{tok}'")).expect("token");
                let plan: Vec<String> = tx
                    .simple_query(&format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {authz_q}"))
                    .expect("explain")
                    .iter()
                    .filter_map(row_text)
                    .collect();
                tx.commit().expect("commit");
                plans.push((format!("{} count (pg_authz)", c.name), plan.join("\n")));
            }
        }
    }
    (rows, plans)
}

fn row_text(m: &postgres::SimpleQueryMessage) -> Option<String> {
    match m {
        postgres::SimpleQueryMessage::Row(r) => {
            Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_string()).collect::<Vec<_>>().join("|"))
        }
        _ => None,
    }
}

fn report(mode: &Mode, rows: &[Row], plans: &[(String, String)], secs: f64) -> String {
    let images = mode.projects * SESSIONS_PER_PROJECT * IMAGES_PER_SESSION;
    let mut md = String::new();
    let _ = writeln!(md, "## Citus (make bench)\n");
    let _ = writeln!(
        md,
        "A coordinator and two workers on this machine (Citus 13, `citus.shard_count = 32`), {images} images in {} sessions of {} projects (projects a reference table; sessions distributed by id; images by session_id, colocated, protected by the session type), {} mode, {:.0} s. \
         Each statement runs in its own transaction on the coordinator: `BEGIN; SET LOCAL authz.token = …; <query>; COMMIT` for pg_authz, `BEGIN; <query>; COMMIT` as superuser with the filter a DBA would write (the limit: the selective caller's session ids as an array; the broad caller's join to its projects; nothing for admin). Medians of {} runs per side, alternating, after 3 warm-up runs; wall-clock time of the whole round trip. Both sides' answers are compared first.\n",
        mode.projects * SESSIONS_PER_PROJECT,
        mode.projects,
        mode.name,
        secs,
        mode.runs
    );
    let _ = writeln!(
        md,
        "`citus.max_cached_conns_per_worker` is set for both sides' sessions: 1 is Citus's default (a multi-shard statement's extra connections to a worker close when it ends, and the next statement's are new backends, whose pg_authz caches start cold); 4 keeps them (README, \"Citus\": the setting a DBA chooses against the worker's connection budget).\n"
    );
    let _ =
        writeln!(md, "| cached conns | caller | query | pg_authz ms | limit ms | ratio | target | met | same rows |");
    let _ = writeln!(md, "|---:|---|---|---:|---:|---:|---:|---|---|");
    for r in rows {
        let ratio = r.authz_ms / r.limit_ms;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} × | ≤ {:.1} × | {} | {} |",
            r.cached_conns,
            r.caller,
            r.query,
            r.authz_ms,
            r.limit_ms,
            ratio,
            r.target,
            if ratio <= r.target { "yes" } else { "**no**" },
            if r.same_result { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(md, "\n### Plans (`EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)`, pg_authz side, one task shown)\n");
    for (what, plan) in plans {
        let _ = writeln!(md, "{what}:\n\n```\n{plan}\n```\n");
    }
    md
}

fn main() {
    let mode = if std::env::args().any(|a| a == "full") { FULL } else { QUICK };
    let started = Instant::now();
    eprintln!("== Citus benchmark ({}): starting a coordinator and two workers…", mode.name);
    let cluster = CitusCluster::start(2, &["citus.shard_count=32", "max_wal_size=4GB"]);
    let mut su = cluster.coordinator.superuser();
    eprintln!("== building the dataset…");
    let callers = build(&mut su, &mode);
    drop(su);
    eprintln!("== measuring ({:.0} s so far)…", started.elapsed().as_secs_f64());
    let (mut rows, plans) = measure(&cluster, &callers, &mode, 1);
    eprintln!("== measuring with citus.max_cached_conns_per_worker = 4…");
    rows.extend(measure(&cluster, &callers, &mode, 4).0);
    let md = report(&mode, &rows, &plans, started.elapsed().as_secs_f64());
    write_section("## Citus (make bench)", &md);
    println!("{md}");
}
