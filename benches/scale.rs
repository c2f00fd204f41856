//! The scaling benchmark (issue #15): what a protected statement costs as the platform grows.
//! For 10k, 100k and 1M sessions (the parent resource table) on a platform of 100,000 principals,
//! it measures, for five caller shapes (selective, broad, all-but-a-few, admin, anonymous), each
//! against the best query a DBA would write by hand for that caller (the limit: superuser, no RLS,
//! bound parameters): the first statement on a new connection, warm statements (wall-clock and
//! backend CPU), planning time, reader throughput while grants and resource rows commit, and the
//! memory of pg_authz's caches per backend. Writes the `## Scaling (make bench)` section of
//! BENCHMARKS.md (replacing only that section).
//!
//! Run with `make bench` (full: 10k, 100k, 1M) or `cargo bench --bench scale -- quick` (10k and
//! 100k, fewer runs, short churn phases). It reports; it never passes or fails.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use support::{backend_cpu_ns, median, ms, write_section};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::{Client, Cluster};
use postgres::types::{FromSql, ToSql, Type};

struct Mode {
    name: &'static str,
    sizes: &'static [i64],
    /// Fresh connections per (caller, query, side) for the first-statement measurement.
    cold_runs: usize,
    point_runs: usize,
    page_runs: usize,
    count_runs: usize,
    plan_runs: usize,
    churn_secs: u64,
}

const QUICK: Mode = Mode {
    name: "quick",
    sizes: &[10_000, 100_000],
    cold_runs: 5,
    point_runs: 40,
    page_runs: 15,
    count_runs: 7,
    plan_runs: 5,
    churn_secs: 5,
};
const FULL: Mode = Mode {
    name: "full",
    sizes: &[10_000, 100_000, 1_000_000],
    cold_runs: 9,
    point_runs: 100,
    page_runs: 31,
    count_runs: 11,
    plan_runs: 9,
    churn_secs: 12,
};

/// The columns of every table, whatever the mode runs.
const ALL_SIZES: &[i64] = &[10_000, 100_000, 1_000_000];
const PRINCIPALS: i64 = 100_000;

// Targets from issue #15.
const COLD_MAX_MS: f64 = 5.0;
const RATIO_MAX: f64 = 1.10;
const CPU_MAX_US: f64 = 10.0;
const PLAN_MAX_MS: f64 = 0.2;
const CHURN_20_MIN: f64 = 0.8;
const CHURN_100_MIN: f64 = 0.5;
/// "Invalidates nothing": a no-op statement at 100/s should leave readers at ~1.0 of idle.
const NOOP_MIN: f64 = 0.9;
const MEMORY_MAX_BYTES: f64 = 20.0 * 1024.0 * 1024.0;

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// Resident set size of a process in kB (/proc/PID/status VmRSS).
fn rss_kb(pid: i32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn backend_pid(c: &mut Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0)
}

/// Any column as its raw bytes, as text (EXPLAIN's json: the binary format of json is its text).
struct Raw(String);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(String::from_utf8_lossy(raw).into_owned()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A seeded xorshift generator: the churn picks the same sequence every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in 1..=n.
    fn pick(&mut self, n: i64) -> i64 {
        1 + (self.next() % n as u64) as i64
    }
}

fn size_label(n: i64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

// ---------------------------------------------------------------------------------------------
// Dataset.

/// projects = N/20 private + 1 public; sessions 1..N (20 per project) + 3 in the public project;
/// 2N images spread at random over the sessions; 100,000 users (2 scoped grants each: viewer on
/// a session, viewer on a project) in 100 groups; 200 rule roles with 5 rules each (wildcards,
/// globs, denies) held by the groups. Tables are loaded before indexes, keys and registration.
fn build_dataset(su: &mut Client, n: i64) {
    let p = n / 20;
    su.batch_execute(&format!(
        "SET synchronous_commit = off;
         SET maintenance_work_mem = '512MB';
         SELECT setseed(0.42);
         CREATE TABLE projects (id bigint NOT NULL, public boolean NOT NULL DEFAULT false);
         INSERT INTO projects SELECT g, false FROM generate_series(1, {p}) g;
         INSERT INTO projects VALUES ({p} + 1, true);
         CREATE TABLE sessions (id bigint NOT NULL, project_id bigint NOT NULL, name text NOT NULL);
         INSERT INTO sessions SELECT g, 1 + (g - 1) / 20, 'session ' || g FROM generate_series(1, {n}) g;
         INSERT INTO sessions SELECT {n} + g, {p} + 1, 'tutorial ' || g FROM generate_series(1, 3) g;
         CREATE TABLE images (id bigint NOT NULL, session_id bigint NOT NULL, defocus real, path text);
         INSERT INTO images SELECT g, 1 + floor(random() * ({n} + 3))::bigint, random(), 'frames/' || g || '.mrc'
             FROM generate_series(1, 2 * {n}) g;
         ALTER TABLE projects ADD PRIMARY KEY (id);
         ALTER TABLE sessions ADD PRIMARY KEY (id);
         ALTER TABLE sessions ADD FOREIGN KEY (project_id) REFERENCES projects;
         CREATE INDEX sessions_project_id ON sessions (project_id);
         ALTER TABLE images ADD PRIMARY KEY (id);
         CREATE INDEX images_session_id ON images (session_id);
         ALTER TABLE images ADD FOREIGN KEY (session_id) REFERENCES sessions;"
    ))
    .expect("dataset tables");
    su.batch_execute(&format!(
        "SELECT authz.register_resource_type('project', 'projects', 'id', public_column => 'public');
         SELECT authz.register_resource_type('session', 'sessions', 'id', 'project', 'project_id');
         SELECT authz.protect('images', 'session_id', 'session');
         SELECT authz.create_role('viewer');
         SELECT authz.allow('viewer', 'session', '*', 'read');
         INSERT INTO authz.roles (name) SELECT 'r' || g FROM generate_series(1, 200) g;
         INSERT INTO authz.rules (role, resource_type, pattern, action, effect)
         SELECT 'r' || g, t.rt, t.p, t.a, t.e FROM generate_series(1, 200) g,
           LATERAL (VALUES ('session', ((g::bigint * 7919) % {n} + 1)::text, 'read', 'allow'),
                           ('project', (g % {p} + 1)::text, 'read', 'allow'),
                           ('session', ((g::bigint * 53) % {n} + 1)::text, 'read', 'deny'),
                           ('session', (g % 90 + 10)::text || '*', 'write', 'allow'),
                           ('project', '*', 'list', 'allow')) AS t(rt, p, a, e);
         INSERT INTO authz.principals (id, kind) SELECT 'u' || g, 'user' FROM generate_series(1, {PRINCIPALS}) g;
         INSERT INTO authz.principals (id, kind) SELECT 'g' || g, 'group' FROM generate_series(1, 100) g;
         INSERT INTO authz.memberships SELECT 'g' || (1 + g % 100), 'u' || g FROM generate_series(1, {PRINCIPALS}) g;
         INSERT INTO authz.role_assignments (principal, role)
             SELECT 'g' || (1 + (g - 1) / 2), 'r' || g FROM generate_series(1, 200) g;
         INSERT INTO authz.role_assignments (principal, role, resource_type, resource_id)
             SELECT 'g' || g, 'viewer', 'project', (1 + (g * 13) % {p})::text FROM generate_series(1, 100) g;
         INSERT INTO authz.role_assignments (principal, role, resource_type, resource_id)
             SELECT 'u' || g, 'viewer', 'session', (1 + (g::bigint * 7919) % {n})::text FROM generate_series(1, {PRINCIPALS}) g;
         INSERT INTO authz.role_assignments (principal, role, resource_type, resource_id)
             SELECT 'u' || g, 'viewer', 'project', (1 + (g::bigint * 104729) % {p})::text FROM generate_series(1, {PRINCIPALS}) g;
         CREATE ROLE app LOGIN;
         GRANT SELECT ON images, sessions, projects TO app;"
    ))
    .expect("policy");
}

/// The benchmark callers' principals and grants; returns the selective caller's 3 sessions
/// (each with at least one image, so its point query has a row to find).
fn build_callers(su: &mut Client, n: i64) -> Vec<i64> {
    let mut selective = Vec::new();
    for start in [17, n / 2 + 42, n - 999] {
        let id: i64 = su
            .query_one("SELECT min(session_id) FROM images WHERE session_id >= $1 AND session_id <= $2", &[&start, &n])
            .unwrap()
            .get::<_, Option<i64>>(0)
            .unwrap_or(start);
        selective.push(id);
    }
    let list: Vec<String> = selective.iter().map(|s| format!("('{s}')")).collect();
    su.batch_execute(&format!(
        "SELECT authz.create_principal('selective');
         SELECT authz.assign_role('selective', 'viewer', 'session', s) FROM (VALUES {}) v(s);
         SELECT authz.create_principal('broad');
         INSERT INTO authz.role_assignments (principal, role, resource_type, resource_id)
             SELECT 'broad', 'viewer', 'project', g::text FROM generate_series(1, 250) g;
         SELECT authz.create_role('reader_but_7');
         SELECT authz.allow('reader_but_7', 'session', '*', 'read');
         SELECT authz.deny('reader_but_7', 'session', '7', 'read');
         SELECT authz.create_principal('all_but_few');
         SELECT authz.assign_role('all_but_few', 'reader_but_7');
         SELECT authz.create_role('session_reader');
         SELECT authz.allow('session_reader', 'session', '*', 'read');
         SELECT authz.create_principal('admin');
         SELECT authz.assign_role('admin', 'session_reader');",
        list.join(", ")
    ))
    .expect("benchmark callers");
    selective
}

// ---------------------------------------------------------------------------------------------
// Callers and statements.

struct Caller {
    name: &'static str,
    shape: &'static str,
    token: Option<String>,
    /// The limit's predicate on images.session_id (None: no filter).
    filter: Option<String>,
    /// The limit's bound parameter $1, if its predicate has one.
    param: Option<Vec<i64>>,
    point_id: i64,
    /// Images this caller may see (a sample), for the readers under churn.
    sample: Vec<i64>,
}

const QUERIES: &[(&str, &str)] = &[
    ("point", "SELECT id, session_id, path FROM images WHERE id = {point}{and}"),
    ("page", "SELECT id, session_id, defocus FROM images{where} ORDER BY id LIMIT 50"),
    ("count", "SELECT count(*) FROM images{where}"),
];

fn query_text(template: &str, point: i64, filter: Option<&str>) -> String {
    let (w, a) = match filter {
        Some(f) => (format!(" WHERE {f}"), format!(" AND {f}")),
        None => (String::new(), String::new()),
    };
    template.replace("{point}", &point.to_string()).replace("{where}", &w).replace("{and}", &a)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Side {
    Limit,
    Authz,
}

impl Caller {
    fn sql(&self, side: Side, template: &str) -> String {
        match side {
            Side::Limit => query_text(template, self.point_id, self.filter.as_deref()),
            Side::Authz => query_text(template, self.point_id, None),
        }
    }

    fn begin(&self, side: Side) -> String {
        match (side, &self.token) {
            (Side::Authz, Some(t)) => format!("BEGIN; SET LOCAL authz.token = '{t}'"),
            _ => "BEGIN".to_string(),
        }
    }

    /// One statement in its own transaction, both sides alike: `BEGIN[; SET LOCAL authz.token]`
    /// (simple protocol), the query through the extended protocol (the limit's $1 bound), COMMIT.
    fn run(&self, client: &mut Client, side: Side, sql: &str) -> Result<Vec<postgres::Row>, postgres::Error> {
        client.batch_execute(&self.begin(side))?;
        let rows = match (side, &self.param) {
            (Side::Limit, Some(p)) => client.query(sql, &[p as &(dyn ToSql + Sync)]),
            _ => client.query(sql, &[]),
        };
        match rows {
            Ok(rows) => {
                client.batch_execute("COMMIT")?;
                Ok(rows)
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Wall-clock ms of one statement (NaN, reported once, if it failed).
    fn time(&self, client: &mut Client, side: Side, sql: &str) -> f64 {
        let t0 = Instant::now();
        match self.run(client, side, sql) {
            Ok(_) => ms(t0.elapsed()),
            Err(e) => {
                eprintln!("  ! {} {:?}: {e}\n    {sql}", self.name, side);
                f64::NAN
            }
        }
    }
}

fn callers(su: &mut Client, n: i64, selective: &[i64]) -> Vec<Caller> {
    let p = n / 20;
    let public_sessions: Vec<i64> = (n + 1..=n + 3).collect();
    let mut sel_ids = selective.to_vec();
    sel_ids.extend(&public_sessions);
    let mut broad_projects: Vec<i64> = (1..=250).collect();
    broad_projects.push(p + 1);
    let specs: Vec<(&'static str, &'static str, Option<&str>, Option<String>, Option<Vec<i64>>)> = vec![
        ("selective", "viewer on 3 sessions", Some("selective"), Some("session_id = ANY($1)".into()), Some(sel_ids)),
        (
            "broad",
            "viewer on 250 projects",
            Some("broad"),
            Some("session_id IN (SELECT id FROM sessions WHERE project_id = ANY($1))".into()),
            Some(broad_projects),
        ),
        ("all-but-a-few", "session * minus session 7", Some("all_but_few"), Some("session_id <> 7".into()), None),
        ("admin", "session * unscoped", Some("admin"), None, None),
        (
            "anonymous",
            "no token (public project)",
            None,
            Some(
                "session_id IN (SELECT s.id FROM sessions s JOIN projects p ON p.id = s.project_id WHERE p.public)"
                    .into(),
            ),
            None,
        ),
    ];
    let mut out = Vec::new();
    for (name, shape, sub, filter, param) in specs {
        // The point query's row and the churn readers' rows: images of the caller's own grants
        // (for the selective caller, of its scoped sessions rather than the public ones).
        let own = match name {
            "selective" => Some("session_id = ANY($1)".to_string()),
            _ => filter.clone(),
        };
        let own_param: Option<Vec<i64>> = match name {
            "selective" => Some(selective.to_vec()),
            _ => param.clone(),
        };
        let sample_sql = match &own {
            Some(f) if name == "selective" || name == "broad" || name == "anonymous" => {
                format!("SELECT id FROM images WHERE {f} ORDER BY id")
            }
            Some(f) => format!("SELECT id FROM images WHERE {f} AND id <= 5000 ORDER BY id"),
            None => "SELECT id FROM images WHERE id <= 5000 ORDER BY id".to_string(),
        };
        let rows = match &own_param {
            Some(v) => su.query(&sample_sql, &[v as &(dyn ToSql + Sync)]),
            None => su.query(&sample_sql, &[]),
        }
        .expect("caller's images");
        let all: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let step = (all.len() / 200).max(1);
        let sample: Vec<i64> = all.iter().step_by(step).copied().take(200).collect();
        let point_id = all.get(all.len() / 2).copied().unwrap_or(1);
        out.push(Caller { name, shape, token: sub.map(common::token), filter, param, point_id, sample });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Measurements.

type Key = (String, String);

#[derive(Default)]
struct SizeResult {
    build_secs: f64,
    /// (caller, query) → first-statement ms on a new connection: [limit, pg_authz].
    cold: BTreeMap<Key, [f64; 2]>,
    /// (caller, query) → median wall ms [limit, pg_authz], median backend CPU µs [limit, pg_authz].
    warm: BTreeMap<Key, ([f64; 2], [f64; 2])>,
    /// (caller, query) → median planning ms [limit, pg_authz].
    planning: BTreeMap<Key, [f64; 2]>,
    memory: BTreeMap<String, Memory>,
    /// caller → phases.
    churn: BTreeMap<String, Vec<Phase>>,
    /// caller → count plan on the pg_authz side, on the limit side.
    plans: Vec<(String, String, String)>,
    /// caller → median backend CPU µs of `BEGIN; SET LOCAL authz.token = …; COMMIT` minus
    /// `BEGIN; COMMIT` (what carrying the identity costs, apart from the statement).
    set_token_us: BTreeMap<String, f64>,
    notes: Vec<String>,
}

#[derive(Default, Clone)]
struct Memory {
    bytes: Option<f64>,
    stats: String,
    rss_before_kb: i64,
    rss_after_kb: i64,
}

#[derive(Clone)]
struct Phase {
    label: &'static str,
    tps: f64,
    /// Achieved per-second rates of the writer: assignments, new session rows, no-op updates.
    rates: [f64; 3],
    writer_errors: u64,
    reader_errors: u64,
    generation: (Option<i64>, Option<i64>),
}

/// Same result on both sides, checked once per caller with the count (never asserted: noted).
fn check_agreement(cluster: &Cluster, callers: &[Caller], res: &mut SizeResult) {
    let mut su = cluster.superuser();
    let mut app = cluster.connect("app");
    for c in callers {
        let mut counts = [None, None];
        for (i, side) in [Side::Limit, Side::Authz].into_iter().enumerate() {
            let client = if side == Side::Limit { &mut su } else { &mut app };
            match c.run(client, side, &c.sql(side, "SELECT count(*) FROM images{where}")) {
                Ok(rows) => counts[i] = Some(rows[0].get::<_, i64>(0)),
                Err(e) => res.notes.push(format!("{}: count failed on the {side:?} side: {e}", c.name)),
            }
        }
        eprintln!("  {:<14} rows visible: limit {:?}, pg_authz {:?}", c.name, counts[0], counts[1]);
        if counts[0] != counts[1] {
            res.notes.push(format!(
                "{}: the sides disagree on the count (limit {:?}, pg_authz {:?}): the limit's predicate is not this caller's permission set on this build",
                c.name, counts[0], counts[1]
            ));
        }
    }
}

/// The first statement on a new connection, each side on its own new connection, alternating
/// which side goes first; the connection itself is not timed.
fn cold(cluster: &Cluster, callers: &[Caller], runs: usize, res: &mut SizeResult) {
    for c in callers {
        for (qname, template) in QUERIES.iter().filter(|(q, _)| *q != "page") {
            let mut samples = [Vec::new(), Vec::new()];
            for run in 0..runs {
                for k in 0..2 {
                    let i = (run + k) % 2;
                    let side = [Side::Limit, Side::Authz][i];
                    let mut client = cluster.connect(if side == Side::Limit { "postgres" } else { "app" });
                    samples[i].push(c.time(&mut client, side, &c.sql(side, template)));
                    drop(client);
                    // Let the backend exit before the next sample.
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
            let m = [median(&samples[0]), median(&samples[1])];
            eprintln!("  cold {:<14} {:<6} limit {:>8.3} ms  pg_authz {:>8.3} ms", c.name, qname, m[0], m[1]);
            res.cold.insert((c.name.to_string(), qname.to_string()), m);
        }
    }
}

/// Warm statements: per caller a new pair of connections; every query warmed up three times on
/// each side, then the sides alternate run by run. Memory is read before and after.
fn warm(cluster: &Cluster, callers: &[Caller], mode: &Mode, res: &mut SizeResult) {
    for c in callers {
        let mut limit = cluster.superuser();
        let mut app = cluster.connect("app");
        let pids = [backend_pid(&mut limit), backend_pid(&mut app)];
        let rss_before_kb = rss_kb(pids[1]);
        for (qname, template) in QUERIES {
            let runs = match *qname {
                "point" => mode.point_runs,
                "page" => mode.page_runs,
                _ => mode.count_runs,
            };
            let sqls = [c.sql(Side::Limit, template), c.sql(Side::Authz, template)];
            for _ in 0..3 {
                c.time(&mut limit, Side::Limit, &sqls[0]);
                c.time(&mut app, Side::Authz, &sqls[1]);
            }
            let mut wall = [Vec::new(), Vec::new()];
            let mut cpu = [Vec::new(), Vec::new()];
            for run in 0..runs {
                for k in 0..2 {
                    let i = (run + k) % 2;
                    let (side, client) = if i == 0 { (Side::Limit, &mut limit) } else { (Side::Authz, &mut app) };
                    let before = backend_cpu_ns(pids[i]);
                    wall[i].push(c.time(client, side, &sqls[i]));
                    cpu[i].push(backend_cpu_ns(pids[i]).saturating_sub(before) as f64 / 1e3);
                }
            }
            let w = [median(&wall[0]), median(&wall[1])];
            let u = [median(&cpu[0]), median(&cpu[1])];
            eprintln!(
                "  warm {:<14} {:<6} limit {:>8.3} ms {:>8.1} µs CPU  pg_authz {:>8.3} ms {:>8.1} µs CPU  ({:.2}×)",
                c.name,
                qname,
                w[0],
                u[0],
                w[1],
                u[1],
                w[1] / w[0]
            );
            res.warm.insert((c.name.to_string(), qname.to_string()), (w, u));
        }
        if let Some(t) = &c.token {
            // What carrying the token costs by itself (the limit side sends no identity).
            let with_set = format!("BEGIN; SET LOCAL authz.token = '{t}'; COMMIT");
            let (mut set, mut bare) = (Vec::new(), Vec::new());
            for run in 0..mode.point_runs {
                for k in 0..2 {
                    let (sql, out) =
                        if (run + k) % 2 == 0 { (with_set.as_str(), &mut set) } else { ("BEGIN; COMMIT", &mut bare) };
                    let before = backend_cpu_ns(pids[1]);
                    let _ = app.batch_execute(sql);
                    out.push(backend_cpu_ns(pids[1]).saturating_sub(before) as f64 / 1e3);
                }
            }
            res.set_token_us.insert(c.name.to_string(), median(&set) - median(&bare));
        }
        let rss_after_kb = rss_kb(pids[1]);
        let stats = app
            .query_one("SELECT authz.cache_stats()::text", &[])
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_else(|e| format!("cache_stats() failed: {e}"));
        let bytes = serde_json::from_str::<serde_json::Value>(&stats)
            .ok()
            .and_then(|v| v.get("bytes").and_then(|b| b.as_f64()));
        eprintln!("  memory {:<14} RSS {} → {} kB, cache_stats {}", c.name, rss_before_kb, rss_after_kb, stats);
        res.memory.insert(c.name.to_string(), Memory { bytes, stats, rss_before_kb, rss_after_kb });
    }
}

fn planning_ms(json: &str) -> f64 {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get(0).and_then(|p| p.get("Planning Time")).and_then(|t| t.as_f64()))
        .unwrap_or(f64::NAN)
}

/// `EXPLAIN (ANALYZE, FORMAT JSON)` "Planning Time" of count and page on both sides (the limit
/// with its parameter bound), alternating, after one warm-up each.
fn planning(cluster: &Cluster, callers: &[Caller], runs: usize, res: &mut SizeResult) {
    let mut limit = cluster.superuser();
    let mut app = cluster.connect("app");
    for c in callers {
        for (qname, template) in QUERIES.iter().filter(|(q, _)| *q != "point") {
            let sqls = [
                format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", c.sql(Side::Limit, template)),
                format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", c.sql(Side::Authz, template)),
            ];
            let mut one = |i: usize| -> f64 {
                let (side, client) = if i == 0 { (Side::Limit, &mut limit) } else { (Side::Authz, &mut app) };
                match c.run(client, side, &sqls[i]) {
                    Ok(rows) => planning_ms(&rows[0].get::<_, Raw>(0).0),
                    Err(e) => {
                        eprintln!("  ! explain {} {side:?}: {e}", c.name);
                        f64::NAN
                    }
                }
            };
            one(0);
            one(1);
            let mut samples = [Vec::new(), Vec::new()];
            for run in 0..runs {
                for k in 0..2 {
                    let i = (run + k) % 2;
                    samples[i].push(one(i));
                }
            }
            let m = [median(&samples[0]), median(&samples[1])];
            eprintln!("  plan {:<14} {:<6} limit {:>7.3} ms  pg_authz {:>7.3} ms", c.name, qname, m[0], m[1]);
            res.planning.insert((c.name.to_string(), qname.to_string()), m);
        }
    }
}

/// EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) of a query on one side (the limit's $1 bound).
fn explain(client: &mut Client, c: &Caller, side: Side, template: &str) -> String {
    let sql = format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {}", c.sql(side, template));
    match c.run(client, side, &sql) {
        Ok(rows) => rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n"),
        Err(e) => format!("EXPLAIN failed: {e}"),
    }
}

/// The count's plan for every caller on both sides (pg_authz's is what the issue asks for; the
/// limit's shows what it is compared with).
fn plans(cluster: &Cluster, callers: &[Caller], res: &mut SizeResult) {
    let mut app = cluster.connect("app");
    let mut su = cluster.superuser();
    for c in callers {
        let count = "SELECT count(*) FROM images{where}";
        res.plans.push((
            c.name.to_string(),
            explain(&mut app, c, Side::Authz, count),
            explain(&mut su, c, Side::Limit, count),
        ));
        for side in [Side::Limit, Side::Authz] {
            let client = if side == Side::Limit { &mut su } else { &mut app };
            eprintln!("  plan of {}'s point query, {side:?} side:\n{}", c.name, explain(client, c, side, QUERIES[0].1));
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Churn {
    Idle,
    /// Role assignments and new session rows, this many of each per second.
    Writes(u32),
    /// `UPDATE sessions SET name = name WHERE false`, this many per second.
    NoOp(u32),
}

fn generation(client: &mut Client) -> Option<i64> {
    client
        .query_one("SELECT authz.cache_stats()::text", &[])
        .ok()
        .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.get::<_, String>(0)).ok())
        .and_then(|v| v.get("generation").and_then(|g| g.as_i64()))
}

/// Two readers (each its own `app` connection) loop `BEGIN; SET LOCAL authz.token; point; COMMIT`
/// (simple protocol, one round trip) for `secs`, while a superuser connection commits the churn,
/// paced by sleeping until each event's due time (achieved rates recorded). Every phase starts
/// after `VACUUM ANALYZE` of the tables the churn changes.
fn churn_phase(
    cluster: &Cluster,
    c: &Caller,
    n: i64,
    (label, kind): (&'static str, Churn),
    secs: u64,
    next_session: &AtomicU64,
    seed: u64,
) -> Phase {
    let readers = 2;
    let barrier = Barrier::new(readers + 2);
    let duration = Duration::from_secs(secs);
    let token = c.token.clone().expect("churn callers carry a token");
    let stmt = |id: i64| {
        format!(
            "BEGIN; SET LOCAL authz.token = '{token}'; SELECT id, session_id, path FROM images WHERE id = {id}; COMMIT"
        )
    };
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for r in 0..readers {
            let barrier = &barrier;
            let stmt = &stmt;
            handles.push(s.spawn(move || {
                let mut client = cluster.connect("app");
                for i in 0..20 {
                    client.batch_execute(&stmt(c.sample[i % c.sample.len()])).ok();
                }
                let g0 = if r == 0 { generation(&mut client) } else { None };
                barrier.wait();
                let start = Instant::now();
                let (mut done, mut errors) = (0u64, 0u64);
                let mut i = r;
                while start.elapsed() < duration {
                    if client.batch_execute(&stmt(c.sample[i % c.sample.len()])).is_ok() {
                        done += 1;
                    } else {
                        errors += 1;
                        let _ = client.batch_execute("ROLLBACK");
                    }
                    i += 7;
                }
                let elapsed = start.elapsed().as_secs_f64();
                let g1 = if r == 0 { generation(&mut client) } else { None };
                (done as f64 / elapsed, errors, g0, g1)
            }));
        }
        let barrier_w = &barrier;
        let writer = s.spawn(move || {
            let mut su = cluster.superuser();
            let mut rng = Rng(seed | 1);
            let p = n / 20;
            barrier_w.wait();
            let start = Instant::now();
            let mut counts = [0u64; 3];
            let mut errors = 0u64;
            let (per_sec, noop) = match kind {
                Churn::Idle => return (counts, errors, 0.0),
                Churn::Writes(r) => (2 * r, false),
                Churn::NoOp(r) => (r, true),
            };
            let mut k: u64 = 0;
            loop {
                let due = Duration::from_secs_f64(k as f64 / per_sec as f64);
                if due >= duration {
                    break;
                }
                let now = start.elapsed();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let result = if noop {
                    su.batch_execute("UPDATE sessions SET name = name WHERE false").map(|_| 2)
                } else if k.is_multiple_of(2) {
                    let principal = format!("u{}", rng.pick(PRINCIPALS));
                    let session = rng.pick(n).to_string();
                    su.execute("SELECT authz.assign_role($1, 'viewer', 'session', $2)", &[&principal, &session])
                        .map(|_| 0)
                } else {
                    let id = next_session.fetch_add(1, Ordering::SeqCst) as i64;
                    su.execute(
                        "INSERT INTO sessions (id, project_id, name) VALUES ($1, $2, $3)",
                        &[&id, &rng.pick(p), &format!("churn {id}")],
                    )
                    .map(|_| 1)
                };
                match result {
                    Ok(i) => counts[i] += 1,
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("  ! churn writer: {e}");
                        }
                        errors += 1;
                    }
                }
                k += 1;
            }
            (counts, errors, start.elapsed().as_secs_f64())
        });
        barrier.wait();
        let mut tps = 0.0;
        let mut reader_errors = 0;
        let mut gens = (None, None);
        for (i, h) in handles.into_iter().enumerate() {
            let (t, e, g0, g1) = h.join().expect("reader");
            tps += t;
            reader_errors += e;
            if i == 0 {
                gens = (g0, g1);
            }
        }
        let (counts, writer_errors, elapsed) = writer.join().expect("writer");
        let rate = |x: u64| if elapsed > 0.0 { x as f64 / elapsed } else { 0.0 };
        let phase = Phase {
            label,
            tps,
            rates: [rate(counts[0]), rate(counts[1]), rate(counts[2])],
            writer_errors,
            reader_errors,
            generation: gens,
        };
        eprintln!(
            "  churn {:<10} {:<28} {:>8.0} tps  writer {:.1} assignments/s, {:.1} rows/s, {:.1} no-ops/s  errors w{} r{}  generation {:?}",
            c.name, label, tps, phase.rates[0], phase.rates[1], phase.rates[2], writer_errors, reader_errors, gens
        );
        phase
    })
}

fn churn(cluster: &Cluster, callers: &[Caller], n: i64, secs: u64, res: &mut SizeResult) {
    let next_session = AtomicU64::new(n as u64 + 1000);
    for (ci, c) in callers.iter().filter(|c| c.name == "selective" || c.name == "broad").enumerate() {
        let mut phases = Vec::new();
        for (pi, (label, kind)) in [
            ("idle", Churn::Idle),
            ("20/s assignments + 20/s rows", Churn::Writes(20)),
            ("100/s assignments + 100/s rows", Churn::Writes(100)),
            ("100/s no-op UPDATE", Churn::NoOp(100)),
            ("idle (after)", Churn::Idle),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((n as u64) << 8) ^ ((ci as u64) << 4) ^ pi as u64;
            // Fresh statistics for what the previous phases changed, so autovacuum's ANALYZE (an
            // invalidation of its own) is unlikely to fall inside this phase.
            cluster
                .superuser()
                .batch_execute("VACUUM ANALYZE sessions, authz.role_assignments")
                .expect("vacuum between churn phases");
            phases.push(churn_phase(cluster, c, n, (label, kind), secs, &next_session, seed));
        }
        res.churn.insert(c.name.to_string(), phases);
    }
}

// ---------------------------------------------------------------------------------------------
// Report.

/// The idle figure a churn phase is compared with: the mean of the idle phases before and after.
fn idle_tps(phases: &[Phase]) -> f64 {
    let idle: Vec<f64> = phases.iter().filter(|p| p.label.starts_with("idle")).map(|p| p.tps).collect();
    idle.iter().sum::<f64>() / idle.len().max(1) as f64
}

/// A churn phase's verdict: the ratio to idle; for the no-op statement, whether the readers'
/// cache generation stayed put where the build reports one (the throughput ratio is shown, but
/// on this shared machine idle itself varies by more than the 10% "~1.0" allows).
fn phase_met(p: &Phase, ratio: f64, min: f64) -> bool {
    match (p.label.contains("no-op"), p.generation) {
        (true, (Some(a), Some(b))) => a == b,
        _ => ratio >= min,
    }
}

fn phase_ratio<'a>(phases: &'a [Phase], label: &str) -> Option<(f64, &'a Phase)> {
    let idle = idle_tps(phases);
    phases.iter().find(|p| p.label == label).map(|p| (p.tps / idle, p))
}

struct Report<'a> {
    mode: &'a Mode,
    results: &'a BTreeMap<i64, SizeResult>,
    caller_names: Vec<(&'static str, &'static str)>,
}

impl Report<'_> {
    fn header(&self, md: &mut String, first: &[&str]) {
        let mut h = String::from("|");
        let mut sep = String::from("|");
        for f in first {
            write!(h, " {f} |").ok();
            sep.push_str("---|");
        }
        for n in ALL_SIZES {
            write!(h, " {} sessions |", size_label(*n)).ok();
            sep.push_str("---:|");
        }
        writeln!(md, "{h}\n{sep}").ok();
    }

    /// One row: a cell per size, "not run" where this mode skipped the size.
    fn row(&self, md: &mut String, first: &[String], cell: impl Fn(&SizeResult) -> Option<String>) {
        let mut line = String::from("|");
        for f in first {
            write!(line, " {f} |").ok();
        }
        for n in ALL_SIZES {
            let text = match self.results.get(n) {
                Some(r) => cell(r).unwrap_or_else(|| "—".into()),
                None => format!("not run ({})", self.mode.name),
            };
            write!(line, " {text} |").ok();
        }
        writeln!(md, "{line}").ok();
    }
}

fn fmt_mb(bytes: f64) -> String {
    if bytes < 1024.0 * 1024.0 {
        format!("{:.1} kB", bytes / 1024.0)
    } else {
        format!("{:.2} MB", bytes / (1024.0 * 1024.0))
    }
}

fn report(
    mode: &Mode,
    results: &BTreeMap<i64, SizeResult>,
    callers: &[(&'static str, &'static str)],
    total: f64,
) -> String {
    let rep = Report { mode, results, caller_names: callers.to_vec() };
    let largest = *results.keys().max().unwrap_or(&0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut md = String::new();
    writeln!(md, "## Scaling (make bench)\n").ok();
    writeln!(
        md,
        "Generated by `cargo bench --bench scale -- {}` (`make bench` runs it in full mode after the main benchmark); {} mode, {} sessions; total {:.0} s. Machine: {cpu}, {cores} cores; PostgreSQL 15, fsync off, `shared_preload_libraries = pg_authz`; release build of pg_authz {} (the installed one).\n",
        mode.name,
        mode.name,
        results.keys().map(|n| size_label(*n)).collect::<Vec<_>>().join(", "),
        total,
        env!("CARGO_PKG_VERSION")
    )
    .ok();
    writeln!(md, "**Method.** One fresh cluster per size: N sessions (the parent resource table; 20 per project, plus one public project with 3 sessions), 2N images spread at random (`images.session_id` NOT NULL, indexed, validated foreign key), an index on `sessions(project_id)`; 100,000 principals with 2 scoped grants each (viewer on a session, viewer on a project) in 100 groups holding 200 rule roles with 1,000 rules (wildcards, globs, denies); `VACUUM ANALYZE` after loading. \
The callers are *selective* (viewer on 3 sessions), *broad* (viewer on 250 projects = 5,000 sessions), *all-but-a-few* (unscoped `allow session * read` with `deny session 7 read`), *admin* (unscoped `allow session * read`) and *anonymous* (no token: the public project). \
The **limit** is the query a DBA would write for that caller, run as superuser without RLS with the same statement text plus the predicate: `session_id = ANY($1)` (ids bound), `session_id IN (SELECT id FROM sessions WHERE project_id = ANY($1))` (the 250 projects and the public one bound), `session_id <> 7`, no filter, and a join to the public projects; pg_authz runs the unfiltered text as the login role `app` after `SET LOCAL authz.token` in the same transaction. \
Both sides run each statement as `BEGIN[; SET LOCAL authz.token = …]` (simple protocol), the query through the extended protocol (parameters bound), `COMMIT`; every figure is a median, sides alternate run by run after three warm-up runs, and backend CPU is read from `/proc/PID/schedstat` (parallel workers not counted). \
Cold figures time the first statement on a new connection (not the connection itself) over {} new connections per side; warm figures use {} / {} / {} runs (point / page / count); planning is EXPLAIN ANALYZE's \"Planning Time\" over {} runs; churn phases last {} s with 2 reader threads. Targets are the issue's (stated at 1M sessions); each cell says met or **missed**, and the summary judges the largest size run ({}).\n",
        mode.cold_runs, mode.point_runs, mode.page_runs, mode.count_runs, mode.plan_runs, mode.churn_secs, size_label(largest)).ok();

    let notes: Vec<String> = results
        .iter()
        .flat_map(|(n, r)| r.notes.iter().map(move |x| format!("- {} sessions: {x}", size_label(*n))))
        .collect();
    if !notes.is_empty() {
        writeln!(md, "**Notes from this run:**\n\n{}\n", notes.join("\n")).ok();
    }
    let build: Vec<String> =
        results.iter().map(|(n, r)| format!("{}: {:.0} s", size_label(*n), r.build_secs)).collect();
    writeln!(md, "Dataset build time (load, indexes, keys, policy, VACUUM ANALYZE): {}.\n", build.join(", ")).ok();

    // 1. Cold.
    writeln!(md, "### First statement on a new connection (target: ≤ {COLD_MAX_MS} ms more than the limit's)\n").ok();
    writeln!(md, "pg_authz − limit in ms (pg_authz ms / limit ms).\n").ok();
    rep.header(&mut md, &["caller", "query"]);
    for (name, _) in &rep.caller_names {
        for q in ["point", "count"] {
            rep.row(&mut md, &[name.to_string(), q.to_string()], |r| {
                r.cold.get(&(name.to_string(), q.to_string())).map(|m| {
                    let d = m[1] - m[0];
                    format!("{:+.2} ({:.2} / {:.2}) {}", d, m[1], m[0], verdict(d <= COLD_MAX_MS))
                })
            });
        }
    }

    // 2. Warm.
    writeln!(md, "\n### Warm statements, wall-clock (target: ≤ {RATIO_MAX:.2} × the limit)\n").ok();
    writeln!(md, "pg_authz / limit (pg_authz ms / limit ms), whole transaction as seen by the client.\n").ok();
    rep.header(&mut md, &["caller", "query"]);
    for (name, _) in &rep.caller_names {
        for (q, _) in QUERIES {
            rep.row(&mut md, &[name.to_string(), q.to_string()], |r| {
                r.warm.get(&(name.to_string(), q.to_string())).map(|(w, _)| {
                    let ratio = w[1] / w[0];
                    format!("{:.2}× ({:.3} / {:.3}) {}", ratio, w[1], w[0], verdict(ratio <= RATIO_MAX))
                })
            });
        }
    }
    writeln!(md, "\n### Warm statements, backend CPU (target: point query ≤ {CPU_MAX_US} µs over the limit)\n").ok();
    writeln!(
        md,
        "pg_authz − limit in µs of backend CPU per transaction (ratio); the point rows carry the fixed-cost target.\n"
    )
    .ok();
    rep.header(&mut md, &["caller", "query"]);
    for (name, _) in &rep.caller_names {
        for (q, _) in QUERIES {
            rep.row(&mut md, &[name.to_string(), q.to_string()], |r| {
                r.warm.get(&(name.to_string(), q.to_string())).map(|(_, u)| {
                    let d = u[1] - u[0];
                    let mark = if *q == "point" { format!(" {}", verdict(d <= CPU_MAX_US)) } else { String::new() };
                    format!("{:+.0} µs ({:.2}×; {:.0} / {:.0}){mark}", d, u[1] / u[0], u[1], u[0])
                })
            });
        }
    }

    writeln!(
        md,
        "\nOf that difference, carrying the identity — the `SET LOCAL authz.token = …` statement the limit side does not send, measured alone as backend CPU of `BEGIN; SET LOCAL …; COMMIT` minus `BEGIN; COMMIT` — costs:\n"
    )
    .ok();
    rep.header(&mut md, &["caller"]);
    for (name, _) in &rep.caller_names {
        rep.row(&mut md, &[name.to_string()], |r| {
            let set = r.set_token_us.get(*name)?;
            let point = r.warm.get(&(name.to_string(), "point".to_string())).map(|(_, u)| u[1] - u[0]);
            Some(match point {
                Some(d) => format!("{set:.0} µs (point query without it: {:+.0} µs)", d - set),
                None => format!("{set:.0} µs"),
            })
        });
    }

    // 3. Planning.
    writeln!(md, "\n### Planning time (target: ≤ {PLAN_MAX_MS} ms overhead)\n").ok();
    writeln!(md, "pg_authz − limit \"Planning Time\" in ms (pg_authz / limit).\n").ok();
    rep.header(&mut md, &["caller", "query"]);
    for (name, _) in &rep.caller_names {
        for q in ["page", "count"] {
            rep.row(&mut md, &[name.to_string(), q.to_string()], |r| {
                r.planning.get(&(name.to_string(), q.to_string())).map(|m| {
                    let d = m[1] - m[0];
                    format!("{:+.3} ({:.3} / {:.3}) {}", d, m[1], m[0], verdict(d <= PLAN_MAX_MS))
                })
            });
        }
    }

    // 4. Churn.
    writeln!(md, "\n### Reader throughput under churn (targets: ≥ {CHURN_20_MIN} of idle at 20/s, ≥ {CHURN_100_MIN} at 100/s; a statement that changes no row invalidates nothing)\n").ok();
    writeln!(md, "2 readers, each `BEGIN; SET LOCAL authz.token = …; point query; COMMIT` in one round trip (simple protocol, a random visible image of the caller each time); a third connection commits the churn, each change its own transaction (`authz.assign_role` of viewer on a random session to a random non-benchmark principal; a new session under a random existing project). Every phase starts after `VACUUM ANALYZE sessions, authz.role_assignments`. Idle = mean of the idle phases before and after; each churn cell: ratio to idle (tps; the writer's achieved rates). `generation` is `authz.cache_stats()->'generation'` on a reader before → after the phase, where the build reports one; the no-op row is judged by it (unchanged = nothing invalidated), its throughput ratio shown for reference, since idle itself varies by more than 10% between phases on this shared machine.\n").ok();
    rep.header(&mut md, &["caller", "phase"]);
    for name in ["selective", "broad"] {
        rep.row(&mut md, &[name.to_string(), "idle".to_string()], |r| {
            r.churn.get(name).map(|ph| {
                let all: Vec<String> =
                    ph.iter().filter(|p| p.label.starts_with("idle")).map(|p| format!("{:.0}", p.tps)).collect();
                format!("{:.0} tps ({})", idle_tps(ph), all.join(", "))
            })
        });
        for (label, min) in [
            ("20/s assignments + 20/s rows", CHURN_20_MIN),
            ("100/s assignments + 100/s rows", CHURN_100_MIN),
            ("100/s no-op UPDATE", NOOP_MIN),
        ] {
            rep.row(&mut md, &[name.to_string(), label.to_string()], |r| {
                r.churn.get(name).and_then(|ph| phase_ratio(ph, label)).map(|(ratio, p)| {
                    let rates = if label.contains("no-op") {
                        format!("{:.1} no-ops/s", p.rates[2])
                    } else {
                        format!("{:.1} + {:.1}/s", p.rates[0], p.rates[1])
                    };
                    let gen = match p.generation {
                        (Some(a), Some(b)) => format!("; generation {a} → {b}"),
                        _ => String::new(),
                    };
                    let errs = if p.writer_errors + p.reader_errors > 0 {
                        format!("; errors: writer {}, readers {}", p.writer_errors, p.reader_errors)
                    } else {
                        String::new()
                    };
                    format!("{:.2} ({:.0} tps; {rates}{gen}{errs}) {}", ratio, p.tps, verdict(phase_met(p, ratio, min)))
                })
            });
        }
    }

    // 5. Memory.
    writeln!(md, "\n### Memory per backend (target: ≤ 20 MB of pg_authz caches)\n").ok();
    writeln!(md, "`authz.cache_stats()->'bytes'` after the caller's warm runs on a new `app` connection (that backend's RSS before → after the runs, which also counts PostgreSQL's own caches and buffers touched).\n").ok();
    rep.header(&mut md, &["caller"]);
    for (name, _) in &rep.caller_names {
        rep.row(&mut md, &[name.to_string()], |r| {
            r.memory.get(*name).map(|m| {
                let rss =
                    format!("RSS {:.1} → {:.1} MB", m.rss_before_kb as f64 / 1024.0, m.rss_after_kb as f64 / 1024.0);
                match m.bytes {
                    Some(b) => format!("{} ({rss}) {}", fmt_mb(b), verdict(b <= MEMORY_MAX_BYTES)),
                    None => format!("no `bytes` key: `{}` ({rss})", m.stats.replace('|', "\\|")),
                }
            })
        });
    }

    // 6. Plans.
    if let Some(r) = results.get(&largest) {
        writeln!(
            md,
            "\n### Plans at {} sessions (`EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)` of the count)\n",
            size_label(largest)
        )
        .ok();
        for (name, plan, limit) in &r.plans {
            writeln!(
                md,
                "{name}, pg_authz (`SELECT count(*) FROM images` as `app` with the token):\n```\n{plan}\n```\n"
            )
            .ok();
            writeln!(md, "<details><summary>{name}, the limit</summary>\n\n```\n{limit}\n```\n</details>\n").ok();
        }
    }

    // Summary at the largest size.
    writeln!(
        md,
        "### Summary at {} sessions ({} mode{})\n",
        size_label(largest),
        mode.name,
        if largest < 1_000_000 { "; the issue states its targets at 1M: run `make bench`" } else { "" }
    )
    .ok();
    writeln!(md, "| target | measured (worst case) | met? |\n|---|---|---|").ok();
    if let Some(r) = results.get(&largest) {
        let worst = |it: Vec<(String, f64)>, max: bool| -> Option<(String, f64)> {
            it.into_iter().filter(|(_, v)| v.is_finite()).fold(None, |acc, (k, v)| match acc {
                Some((_, best)) if (max && v <= best) || (!max && v >= best) => acc,
                _ => Some((k, v)),
            })
        };
        let row = |md: &mut String,
                   target: &str,
                   w: Option<(String, f64)>,
                   fmt: &dyn Fn(f64) -> String,
                   ok: &dyn Fn(f64) -> bool| {
            match w {
                Some((k, v)) => writeln!(md, "| {target} | {} ({k}) | {} |", fmt(v), verdict(ok(v))).ok(),
                None => writeln!(md, "| {target} | not measured | — |").ok(),
            };
        };
        let cold3 = worst(
            r.cold
                .iter()
                .filter(|((c, _), _)| ["selective", "broad", "admin"].contains(&c.as_str()))
                .map(|((c, q), m)| (format!("{c}, {q}"), m[1] - m[0]))
                .collect(),
            true,
        );
        row(
            &mut md,
            "first statement on a new connection ≤ +5 ms (selective, broad, admin)",
            cold3,
            &|v| format!("{v:+.2} ms"),
            &|v| v <= COLD_MAX_MS,
        );
        let cold_all = worst(r.cold.iter().map(|((c, q), m)| (format!("{c}, {q}"), m[1] - m[0])).collect(), true);
        row(
            &mut md,
            "… every caller shape (also all-but-a-few, anonymous)",
            cold_all,
            &|v| format!("{v:+.2} ms"),
            &|v| v <= COLD_MAX_MS,
        );
        for (label, min, text) in [
            ("20/s assignments + 20/s rows", CHURN_20_MIN, "reader throughput at 20/s ≥ 0.8 of idle"),
            ("100/s assignments + 100/s rows", CHURN_100_MIN, "reader throughput at 100/s ≥ 0.5 of idle"),
            ("100/s no-op UPDATE", NOOP_MIN, "a statement that changes no row invalidates nothing (100/s `UPDATE sessions SET name = name WHERE false`)"),
        ] {
            let w = worst(
                r.churn.iter().filter_map(|(c, ph)| phase_ratio(ph, label).map(|(x, _)| (c.clone(), x))).collect(),
                false,
            );
            if label.contains("no-op") {
                let gens: Vec<(i64, i64)> = r
                    .churn
                    .values()
                    .filter_map(|ph| ph.iter().find(|p| p.label == label))
                    .filter_map(|p| match p.generation {
                        (Some(a), Some(b)) => Some((a, b)),
                        _ => None,
                    })
                    .collect();
                if !gens.is_empty() {
                    let unchanged = gens.iter().all(|(a, b)| a == b);
                    let ratio = w.as_ref().map(|(k, v)| format!("; throughput {v:.2} of idle ({k})")).unwrap_or_default();
                    writeln!(md, "| {text} | readers' cache generation {}{ratio} | {} |",
                        if unchanged { "unchanged".to_string() } else { format!("changed: {gens:?}") }, verdict(unchanged)).ok();
                    continue;
                }
            }
            row(&mut md, text, w, &|v| format!("{v:.2}"), &|v| v >= min);
        }
        let plan = worst(r.planning.iter().map(|((c, q), m)| (format!("{c}, {q}"), m[1] - m[0])).collect(), true);
        row(&mut md, "planning overhead ≤ 0.2 ms, every caller shape", plan, &|v| format!("{v:+.3} ms"), &|v| {
            v <= PLAN_MAX_MS
        });
        let ratio = worst(r.warm.iter().map(|((c, q), (w, _))| (format!("{c}, {q}"), w[1] / w[0])).collect(), true);
        row(
            &mut md,
            "every protected query ≤ 1.10 × the limit (wall-clock)",
            ratio,
            &|v| format!("{v:.2}×"),
            &|v| v <= RATIO_MAX,
        );
        let cpu_ratio = worst(r.warm.iter().map(|((c, q), (_, u))| (format!("{c}, {q}"), u[1] / u[0])).collect(), true);
        row(&mut md, "… as backend CPU", cpu_ratio, &|v| format!("{v:.2}×"), &|v| v <= RATIO_MAX);
        let fixed = worst(
            r.warm.iter().filter(|((_, q), _)| q == "point").map(|((c, _), (_, u))| (c.clone(), u[1] - u[0])).collect(),
            true,
        );
        row(
            &mut md,
            "fixed cost per statement ≤ 10 µs backend CPU over the limit (point query)",
            fixed,
            &|v| format!("{v:+.0} µs"),
            &|v| v <= CPU_MAX_US,
        );
        let statement_only = worst(
            r.warm
                .iter()
                .filter(|((_, q), _)| q == "point")
                .filter_map(|((c, _), (_, u))| r.set_token_us.get(c).map(|set| (c.clone(), u[1] - u[0] - set)))
                .collect(),
            true,
        );
        row(
            &mut md,
            "… the statement alone (without the `SET LOCAL authz.token` that carries the identity)",
            statement_only,
            &|v| format!("{v:+.0} µs"),
            &|v| v <= CPU_MAX_US,
        );
        let mem = worst(r.memory.iter().filter_map(|(c, m)| m.bytes.map(|b| (c.clone(), b))).collect(), true);
        if mem.is_none() && !r.memory.is_empty() {
            writeln!(md, "| pg_authz caches ≤ 20 MB per backend (`cache_stats()` bytes) | `cache_stats()` reports no `bytes` | **missed** |").ok();
        } else {
            row(&mut md, "pg_authz caches ≤ 20 MB per backend (`cache_stats()` bytes)", mem, &|v| fmt_mb(v), &|v| {
                v <= MEMORY_MAX_BYTES
            });
        }
    }
    writeln!(md).ok();
    md
}

/// Replace the `## Scaling (make bench)` section of BENCHMARKS.md (up to the next `## ` heading
/// or the end), or append it.
/// The installed library (size and modification time), so a report says which build it measured.
fn installed_library() -> Option<(u64, std::time::SystemTime)> {
    let lib = std::path::Path::new(common::BIN).parent()?.join("lib/pg_authz.so");
    let meta = std::fs::metadata(lib).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

fn describe_library(lib: Option<(u64, std::time::SystemTime)>) -> String {
    match lib {
        Some((len, modified)) => {
            let secs = modified.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
            let days = secs / 86_400;
            format!(
                "pg_authz.so of {:.1} MB, modified {h:02}:{m:02}:{s:02} UTC (day {days} since 1970)",
                len as f64 / 1e6
            )
        }
        None => "pg_authz.so not found".to_string(),
    }
}

fn main() {
    // cargo bench appends --bench to the arguments; the mode is whichever of quick/full is given.
    let mode = if std::env::args().any(|a| a == "full") { FULL } else { QUICK };
    let started = Instant::now();
    let library = installed_library();
    eprintln!("measuring the installed build: {}", describe_library(library));
    let mut results = BTreeMap::new();
    let mut caller_names = Vec::new();
    for &n in mode.sizes {
        let size_started = Instant::now();
        eprintln!("== {} sessions: building dataset…", size_label(n));
        let cluster = Cluster::start_with(&["shared_preload_libraries=pg_authz", "max_wal_size=4GB"]);
        cluster.add_test_key();
        let mut su = cluster.superuser();
        build_dataset(&mut su, n);
        let selective = build_callers(&mut su, n);
        su.batch_execute("VACUUM ANALYZE").expect("vacuum");
        let callers = callers(&mut su, n, &selective);
        drop(su);
        caller_names = callers.iter().map(|c| (c.name, c.shape)).collect();
        let mut res = SizeResult { build_secs: size_started.elapsed().as_secs_f64(), ..Default::default() };
        eprintln!("  built in {:.0} s", res.build_secs);

        eprintln!("== {}: agreement…", size_label(n));
        check_agreement(&cluster, &callers, &mut res);
        eprintln!("== {}: first statement on new connections…", size_label(n));
        cold(&cluster, &callers, mode.cold_runs, &mut res);
        eprintln!("== {}: warm statements and memory…", size_label(n));
        warm(&cluster, &callers, &mode, &mut res);
        eprintln!("== {}: planning time…", size_label(n));
        planning(&cluster, &callers, mode.plan_runs, &mut res);
        if Some(&n) == mode.sizes.last() {
            plans(&cluster, &callers, &mut res);
        }
        eprintln!("== {}: reader throughput under churn…", size_label(n));
        churn(&cluster, &callers, n, mode.churn_secs, &mut res);
        eprintln!("== {} done in {:.0} s", size_label(n), size_started.elapsed().as_secs_f64());
        results.insert(n, res);
    }
    let mut md = report(&mode, &results, &caller_names, started.elapsed().as_secs_f64());
    let now = installed_library();
    let mut build = format!("Measured build: {}.", describe_library(library));
    if now != library {
        build.push_str(&format!(
            " **The installed library changed during this run** (now {}): sizes measured before and after the change are not comparable.",
            describe_library(now)
        ));
    }
    // After the first paragraph of the section.
    if let Some(i) = md.find("\n\n**Method.**") {
        md.insert_str(i, &format!(" {build}"));
    }
    write_section("## Scaling (make bench)", &md);
    println!("{md}");
}
