//! A throwaway Citus cluster for tests/citus.rs and benches/citus.rs: a coordinator and two workers, each its own data
//! directory under /tmp and its own port, run as the postgres OS user, `citus` preloaded first and
//! `pg_authz` after it, trust authentication on 127.0.0.1 so the nodes connect to each other.
//! Drop stops every node and removes the directories, also after a panic (PG_AUTHZ_IT_KEEP keeps
//! them). Include it next to `mod common;` with `#[path = "common/citus.rs"] mod citus;`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::{as_pg, run_with_timeout, start_postgres, Client, NoTls};

/// Server settings every node's postgresql.conf gets (besides port, socket directory and listen
/// address, given on the command line with the `extra` settings of `CitusCluster::start`).
pub const NODE_SETTINGS: &[&str] = &[
    // Citus must come first; pg_authz is preloaded too (the recommended set-up).
    "shared_preload_libraries=citus,pg_authz",
    "fsync=off",
    "max_connections=200",
    "max_prepared_transactions=100",
    "citus.shard_count=4",
    "citus.enable_statistics_collection=off",
    // Every error's statement is logged: the internal query a worker failed on is in its log.
    "log_min_error_statement=error",
    "log_line_prefix=%m [%p] %a@%h ",
];

/// Statements a test client runs never hang a test run: a stuck distributed query fails instead.
pub const CLIENT_OPTIONS: &str = "-c statement_timeout=60s -c lock_timeout=20s";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Make sure Citus is installed (scripts/citus.sh: use an installed one, or build the vendored
/// sources once, cached). Panics with the script's output when it cannot be: never a silent skip.
pub fn ensure_citus() {
    static DONE: OnceLock<Result<String, String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/citus.sh");
        let start = std::time::Instant::now();
        let mut cmd = Command::new("bash");
        cmd.arg(script);
        if let Some(bin) = option_env!("PG_BIN") {
            cmd.env("PG_BIN", bin);
        }
        let out = run_with_timeout(&mut cmd, Duration::from_secs(1800), "scripts/citus.sh");
        let text = format!(
            "{}{}(took {:.0?})",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            start.elapsed()
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("scripts/citus.sh failed ({}):\n{text}", out.status))
        }
    });
    match r {
        Ok(text) => eprintln!("{}", text.trim_end()),
        Err(e) => panic!("Citus is required by this test and could not be installed.\n{e}"),
    }
}

/// One PostgreSQL server of the cluster.
pub struct Node {
    pub name: String,
    dir: PathBuf,
    port: u16,
}

impl Node {
    fn init(name: &str) -> Node {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/pg_authz_citus_{}_{}_{}", std::process::id(), n, name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let node = Node { name: name.to_string(), dir, port: 0 };
        if !crate::common::running_as_postgres() {
            let st = Command::new("chown").arg("postgres:").arg(&node.dir).status().unwrap();
            assert!(st.success(), "chown {} failed", node.dir.display());
        }
        let data = node.data_dir();
        // -A trust: local sockets and host 127.0.0.1/32 (what the nodes use to reach each other).
        let out = as_pg("initdb", &["-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust", "--no-sync"]);
        assert!(out.status.success(), "initdb ({name}) failed: {}", String::from_utf8_lossy(&out.stderr));
        // initdb -A trust: local sockets (the tests' clients) and host 127.0.0.1/32 (Citus's
        // node-to-node connections) need no password.
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        for setting in NODE_SETTINGS {
            let (name, value) = setting.split_once('=').unwrap();
            writeln!(conf, "{name} = '{}'", value.replace('\'', "''")).unwrap();
        }
        node
    }

    /// Start on a free port (tests/common/mod.rs).
    fn start(&mut self, extra: &[&str]) {
        self.port = start_postgres(&self.data_dir(), &self.dir, &self.log_path(), extra);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Where the log ends now (for `log_since`).
    pub fn log_mark(&self) -> usize {
        std::fs::metadata(self.log_path()).map(|m| m.len() as usize).unwrap_or(0)
    }

    pub fn log_since(&self, mark: usize) -> String {
        let all = std::fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(all.get(mark..).unwrap_or_default()).into_owned()
    }

    /// Connection settings as `role` over the node's Unix socket (so the server sees no client
    /// address, unlike Citus's node-to-node connections from 127.0.0.1), with the test client options.
    pub fn config(&self, role: &str) -> postgres::Config {
        let mut c = postgres::Config::new();
        c.host_path(&self.dir).port(self.port).user(role).dbname("postgres").options(CLIENT_OPTIONS);
        c
    }

    pub fn try_connect(&self, role: &str) -> Result<Client, postgres::Error> {
        self.config(role).connect(NoTls)
    }

    pub fn connect(&self, role: &str) -> Client {
        self.try_connect(role).unwrap_or_else(|e| panic!("connect to {} as {role}: {}", self.name, describe(&e)))
    }

    pub fn superuser(&self) -> Client {
        self.connect("postgres")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        crate::common::stop_and_remove(&self.data_dir(), &self.dir);
    }
}

/// A coordinator and its workers. Fields drop in order: every node is stopped and removed.
pub struct CitusCluster {
    pub coordinator: Node,
    pub workers: Vec<Node>,
}

impl CitusCluster {
    /// Citus installed (or built), a coordinator and `workers` workers started, `CREATE EXTENSION
    /// citus` on each, the coordinator registered with `citus_set_coordinator_host` and the workers
    /// added with `citus_add_node` (which syncs metadata to them). pg_authz is not created.
    pub fn start(workers: usize, extra: &[&str]) -> CitusCluster {
        ensure_citus();
        let mut coordinator = Node::init("coordinator");
        coordinator.start(extra);
        let mut ws = Vec::new();
        for i in 1..=workers {
            let mut w = Node::init(&format!("worker{i}"));
            w.start(extra);
            ws.push(w);
        }
        let cluster = CitusCluster { coordinator, workers: ws };
        for n in cluster.nodes() {
            n.superuser()
                .batch_execute("CREATE EXTENSION citus")
                .unwrap_or_else(|e| panic!("CREATE EXTENSION citus on {}: {}", n.name, describe(&e)));
        }
        let mut su = cluster.coordinator.superuser();
        su.execute("SELECT citus_set_coordinator_host('127.0.0.1', $1)", &[&i32::from(cluster.coordinator.port)])
            .unwrap_or_else(|e| panic!("citus_set_coordinator_host: {}", describe(&e)));
        for w in &cluster.workers {
            su.execute("SELECT citus_add_node('127.0.0.1', $1)", &[&i32::from(w.port)])
                .unwrap_or_else(|e| panic!("citus_add_node({}): {}", w.name, describe(&e)));
        }
        let active: i64 = su
            .query_one("SELECT count(*) FROM citus_get_active_worker_nodes()", &[])
            .map(|r| r.get(0))
            .unwrap_or_else(|e| panic!("citus_get_active_worker_nodes: {}", describe(&e)));
        assert_eq!(active, workers as i64, "not every worker is active");
        cluster
    }

    /// The coordinator first, then the workers.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.coordinator).chain(self.workers.iter())
    }

    pub fn marks(&self) -> Vec<usize> {
        self.nodes().map(Node::log_mark).collect()
    }

    /// ERROR/FATAL/PANIC lines logged since `marks`, with the STATEMENT/CONTEXT/DETAIL lines that
    /// follow them, per node: which internal query failed where.
    pub fn errors_since(&self, marks: &[usize]) -> String {
        let mut out = String::new();
        for (n, mark) in self.nodes().zip(marks) {
            let mut keep = false;
            for line in n.log_since(*mark).lines() {
                let err = line.contains("ERROR:") || line.contains("FATAL:") || line.contains("PANIC:");
                let follow = ["STATEMENT:", "CONTEXT:", "DETAIL:", "HINT:"].iter().any(|k| line.contains(k))
                    || line.starts_with('\t');
                if err {
                    keep = true;
                } else if !follow {
                    keep = false;
                }
                if keep {
                    out.push_str(&format!("    [{} log] {}\n", n.name, truncate(line, 600)));
                }
            }
        }
        out
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// A database error in full: SQLSTATE, message, detail, hint, context; or the client error.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = format!("{} {}: {}", d.severity(), d.code().code(), d.message());
            if let Some(x) = d.detail() {
                s.push_str(&format!(" | DETAIL: {x}"));
            }
            if let Some(x) = d.hint() {
                s.push_str(&format!(" | HINT: {x}"));
            }
            if let Some(x) = d.where_() {
                s.push_str(&format!(" | CONTEXT: {}", x.replace('\n', " / ")));
            }
            s
        }
        None => format!("client error: {e}"),
    }
}

pub fn sqlstate(e: &postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_else(|| "-----".into())
}

/// What a test found, step by step: each observation is printed as it is made and collected, and
/// each unmet requirement is a failure; `finish()` prints everything and fails the test with the
/// whole inventory if anything required did not hold.
pub struct Inventory {
    topic: String,
    lines: Vec<String>,
    failures: Vec<String>,
}

impl Inventory {
    pub fn new(topic: &str) -> Inventory {
        eprintln!("=== inventory: {topic}");
        Inventory { topic: topic.to_string(), lines: Vec::new(), failures: Vec::new() }
    }

    pub fn note(&mut self, line: impl Into<String>) {
        let line = line.into();
        eprintln!("  {line}");
        self.lines.push(line);
    }

    /// Record the outcome of a step that is required to succeed (its error is a failure, with the
    /// error logs of every node since `marks`).
    pub fn step<T>(
        &mut self,
        cluster: &CitusCluster,
        marks: &[usize],
        node: &str,
        what: &str,
        r: Result<T, postgres::Error>,
    ) -> Option<T> {
        match r {
            Ok(v) => {
                self.note(format!("OK    [{node}] {what}"));
                Some(v)
            }
            Err(e) => {
                let logs = cluster.errors_since(marks);
                let line = format!("FAIL  [{node}] {what}\n        -> {}\n{logs}", describe(&e));
                self.note(line.trim_end().to_string());
                self.failures.push(format!("[{node}] {what}: {}", describe(&e)));
                None
            }
        }
    }

    /// A requirement: `ok` or a failure described by `detail`.
    pub fn require(&mut self, ok: bool, node: &str, what: &str, detail: impl Into<String>) {
        let detail = detail.into();
        if ok {
            self.note(format!(
                "OK    [{node}] {what}{}",
                if detail.is_empty() { String::new() } else { format!(": {detail}") }
            ));
        } else {
            self.note(format!("FAIL  [{node}] {what}: {detail}"));
            self.failures.push(format!("[{node}] {what}: {detail}"));
        }
    }

    /// An observation that is not itself a requirement (how Citus behaves, a workaround's effect).
    pub fn observe(&mut self, node: &str, what: &str, detail: impl Into<String>) {
        self.note(format!("INFO  [{node}] {what}: {}", detail.into()));
    }

    pub fn finish(self) {
        eprintln!("=== end of inventory: {} ({} failure(s))", self.topic, self.failures.len());
        if !self.failures.is_empty() {
            panic!(
                "{}: {} required behaviour(s) do not hold on Citus:\n  - {}\n\nfull inventory:\n  {}",
                self.topic,
                self.failures.len(),
                self.failures.join("\n  - "),
                self.lines.join("\n  ")
            );
        }
    }
}
