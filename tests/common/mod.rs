//! Shared harness for the out-of-process integration tests: a throwaway PostgreSQL 15 cluster
//! with pg_authz installed, connections as chosen roles, and HS256 token minting.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use postgres::error::SqlState;
pub use postgres::{Client, NoTls};

/// The PostgreSQL binaries; `PG_BIN` at build time selects another (relocated) installation.
pub const BIN: &str = match option_env!("PG_BIN") {
    Some(bin) => bin,
    None => "/usr/lib/postgresql/15/bin",
};
pub const PSQL: &str = "/usr/bin/psql";
pub const KID: &str = "it-key";
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn is_postgres_user() -> bool {
    Command::new("id")
        .arg("-un")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "postgres")
        .unwrap_or(false)
}

/// Run a server binary as the postgres OS user (PostgreSQL refuses to run as root).
pub fn as_pg(bin: &str, args: &[&str]) -> Output {
    let path = format!("{BIN}/{bin}");
    command_as_pg(&path).args(args).output().unwrap_or_else(|e| panic!("cannot run {path}: {e}"))
}

/// Start a server on `data` with its socket in `socket_dir`, its log at `log`, fsync off and the
/// given `-c` settings, on a free port (another process may take the port between probing and
/// binding: retried on fresh ports). Returns the port.
pub fn start_postgres(data: &Path, socket_dir: &Path, log: &Path, settings: &[&str]) -> u16 {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let mut opts = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", socket_dir.display());
        for s in settings {
            opts.push_str(&format!(" -c {s}"));
        }
        let out = as_pg(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "-o", &opts, "start"],
        );
        if out.status.success() {
            return port;
        }
        last =
            format!("{}\n{}", String::from_utf8_lossy(&out.stderr), std::fs::read_to_string(log).unwrap_or_default());
    }
    panic!("pg_ctl start of {} failed: {last}", data.display());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    /// A fresh directory owned by postgres; from here on Drop cleans up, even after a panic.
    fn new_dir() -> Cluster {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/pg_authz_it_{}_{}", std::process::id(), n));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = Cluster { dir, port: 0 };
        if !is_postgres_user() {
            let st = Command::new("chown").arg("postgres:").arg(&cluster.dir).status().unwrap();
            assert!(st.success(), "chown failed");
        }
        cluster
    }

    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// A fresh cluster started with extra `name=value` server settings, pg_authz created.
    pub fn start_with(settings: &[&str]) -> Cluster {
        let mut cluster = Cluster::new_dir();
        let data = cluster.data_dir();
        let out = as_pg("initdb", &["-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust", "--no-sync"]);
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        cluster.start_server(settings);
        cluster.superuser().batch_execute("CREATE EXTENSION pg_authz").unwrap();
        cluster
    }

    /// Start the server on this cluster's data directory with `-c` settings.
    fn start_server(&mut self, settings: &[&str]) {
        self.port = start_postgres(&self.data_dir(), &self.dir, &self.log_path(), settings);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn log_contents(&self) -> String {
        std::fs::read(self.log_path()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    pub fn config(&self, role: &str) -> postgres::Config {
        let mut c = postgres::Config::new();
        c.host_path(&self.dir).port(self.port).user(role).dbname("postgres");
        c
    }

    pub fn connect(&self, role: &str) -> Client {
        self.config(role).connect(NoTls).unwrap_or_else(|e| panic!("connect as {role}: {e}"))
    }

    pub fn connect_with_options(&self, role: &str, options: &str) -> Result<Client, postgres::Error> {
        self.config(role).options(options).connect(NoTls)
    }

    pub fn superuser(&self) -> Client {
        self.connect("postgres")
    }

    /// A LOGIN role (no password: the cluster trusts local connections).
    pub fn create_login(&self, role: &str) {
        self.superuser().batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN")).unwrap();
    }

    /// Register the HS256 test key.
    pub fn add_test_key(&self) {
        self.superuser().execute("SELECT authz.add_key($1, 'HS256', $2)", &[&KID, &SECRET]).unwrap();
    }

    /// Run psql as `role` with the given arguments (appended after the connection options).
    pub fn psql(&self, role: &str, args: &[&str]) -> Output {
        Command::new(PSQL)
            .arg("-X")
            .arg("-q")
            .arg("-At")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-h")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(role)
            .arg("-d")
            .arg("postgres")
            .args(args)
            .output()
            .expect("cannot run psql")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop_and_remove(&self.data_dir(), &self.dir);
    }
}

/// Stop the server of `data` (if it runs) and remove `dir`, unless PG_AUTHZ_IT_KEEP is set: what a
/// throwaway server's Drop does, also after a panic.
pub fn stop_and_remove(data: &Path, dir: &Path) {
    if data.join("postmaster.pid").exists() {
        let _ = as_pg("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }
    if std::env::var_os("PG_AUTHZ_IT_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Sign arbitrary claims with HS256 under `kid`.
pub fn sign(claims: &serde_json::Value, kid: Option<&str>, secret: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// A test-key token for `sub` that expires at unix time `exp`.
pub fn mint(sub: &str, exp: i64) -> String {
    sign(&serde_json::json!({"sub": sub, "exp": exp, "iat": now()}), Some(KID), SECRET)
}

/// A test-key token for `sub` valid for an hour.
pub fn token(sub: &str) -> String {
    mint(sub, now() + 3600)
}

/// The SQLSTATE of a failed statement (panics if it succeeded).
pub fn code<T: std::fmt::Debug>(r: Result<T, postgres::Error>) -> SqlState {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code().cloned().unwrap_or_else(|| panic!("error without SQLSTATE: {e}")),
    }
}

/// The shared platform most tests start from: a fresh cluster, the given logins, the HS256 test
/// key, and `fixture()` with table privileges on images for those logins.
pub fn platform(logins: &[&str]) -> Cluster {
    let c = Cluster::start();
    for l in logins {
        c.create_login(l);
    }
    c.add_test_key();
    fixture(&c, logins);
    c
}

/// Projects 1..3 (3 public), sessions 1..6 (two per project), 10 images per session (ids 1..60,
/// session = 1 + (id-1)/10); `images` protected on session_id. Roles: viewer reads sessions,
/// editor (inherits viewer) writes them. Principals: alice = editor on project 1, bob = viewer
/// on project 2. Grants the given logins table privileges on images.
pub fn fixture(c: &Cluster, logins: &[&str]) {
    let mut su = c.superuser();
    su.batch_execute(
        "CREATE TABLE projects (id bigint PRIMARY KEY, public boolean NOT NULL DEFAULT false);
         CREATE TABLE sessions (id bigint PRIMARY KEY, project_id bigint NOT NULL REFERENCES projects);
         CREATE TABLE images (id bigint PRIMARY KEY, session_id bigint NOT NULL REFERENCES sessions, label text);
         CREATE INDEX ON images (session_id);
         INSERT INTO projects SELECT g, g = 3 FROM generate_series(1, 3) g;
         INSERT INTO sessions SELECT g, (g + 1) / 2 FROM generate_series(1, 6) g;
         INSERT INTO images SELECT g, 1 + (g - 1) / 10, 'img' || g FROM generate_series(1, 60) g;
         SELECT authz.register_resource_type('project', 'projects', 'id', public_column => 'public');
         SELECT authz.register_resource_type('session', 'sessions', 'id', 'project', 'project_id');
         SELECT authz.protect('images', 'session_id', 'session');
         SELECT authz.create_role('viewer');
         SELECT authz.create_role('editor', ARRAY['viewer']);
         SELECT authz.allow('viewer', 'session', '*', 'read');
         SELECT authz.allow('editor', 'session', '*', 'write');
         SELECT authz.create_principal('alice');
         SELECT authz.create_principal('bob');
         SELECT authz.assign_role('alice', 'editor', 'project', '1');
         SELECT authz.assign_role('bob', 'viewer', 'project', '2');",
    )
    .unwrap();
    for l in logins {
        su.batch_execute(&format!("GRANT SELECT, INSERT, UPDATE, DELETE ON images TO \"{l}\"")).unwrap();
    }
}

/// The distinct session ids of the images visible to this connection, and how many images.
pub fn visible(client: &mut impl postgres::GenericClient) -> Result<(Vec<i64>, i64), postgres::Error> {
    let row = client.query_one(
        "SELECT coalesce(array_agg(DISTINCT session_id ORDER BY session_id), '{}'), count(*) FROM images",
        &[],
    )?;
    Ok((row.get(0), row.get(1)))
}

// ---------------------------------------------------------------------------------------------
// Helpers for the pgbouncer, replica and python-client tests (appended).

/// A free TCP port on 127.0.0.1 (another process may take it before it is used: callers retry).
pub fn pick_free_port() -> u16 {
    free_port()
}

/// Whether the tests run as the postgres OS user (otherwise servers are started through sudo).
pub fn running_as_postgres() -> bool {
    is_postgres_user()
}

/// A `Command` that runs `program` (an absolute path) as the postgres OS user.
pub fn command_as_pg(program: &str) -> Command {
    if is_postgres_user() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-u").arg("postgres").arg(program);
        c
    }
}

/// Run a command to completion, panicking with a clear message if it takes longer than `timeout`
/// (the process is killed first). Output is collected by reader threads, so it never blocks.
pub fn run_with_timeout(cmd: &mut Command, timeout: std::time::Duration, what: &str) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
            panic!("{what} did not finish within {timeout:?}; stderr so far:\n{stderr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Output { status, stdout: out_t.join().unwrap_or_default(), stderr: err_t.join().unwrap_or_default() }
}

impl Cluster {
    /// A hot standby of `primary`: `pg_basebackup -R -X stream` (as the postgres OS user) into a new
    /// throwaway directory, started with `hot_standby=on` on another free port. `settings` are
    /// extra `name=value` server settings given on the command line (e.g. `authz.audit=all`).
    /// The extension is not created (it arrives with the base backup). Drop stops and removes it.
    pub fn standby_of(primary: &Cluster, settings: &[&str]) -> Cluster {
        let mut standby = Cluster::new_dir();
        let data = standby.data_dir();
        let port = primary.port.to_string();
        let out = as_pg(
            "pg_basebackup",
            &[
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
                "-h",
                primary.dir.to_str().unwrap(),
                "-p",
                &port,
                "-U",
                "postgres",
            ],
        );
        assert!(out.status.success(), "pg_basebackup failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(data.join("standby.signal").exists(), "pg_basebackup -R wrote no standby.signal");
        let mut extra = vec!["hot_standby=on"];
        extra.extend_from_slice(settings);
        standby.start_server(&extra);
        let in_recovery: bool = standby.superuser().query_one("SELECT pg_is_in_recovery()", &[]).unwrap().get(0);
        assert!(in_recovery, "the standby is not in recovery");
        standby
    }

    /// Wait (at most `timeout`) until this standby has replayed everything `primary` has written
    /// so far (`pg_current_wal_lsn()` on the primary). Panics with both positions on timeout.
    pub fn wait_for_replay(&self, primary: &Cluster, timeout: std::time::Duration) {
        let target: String = primary.superuser().query_one("SELECT pg_current_wal_lsn()::text", &[]).unwrap().get(0);
        let mut standby = self.superuser();
        let start = std::time::Instant::now();
        loop {
            let row = standby
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false), pg_last_wal_replay_lsn()::text",
                    &[&target],
                )
                .unwrap();
            if row.get::<_, bool>(0) {
                return;
            }
            if start.elapsed() > timeout {
                let at: Option<String> = row.get(1);
                panic!("standby did not replay up to {target} within {timeout:?} (replayed up to {at:?})");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Cargo's target directory (CARGO_TARGET_DIR honoured).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// `target/pyenv` with a Python package installed: created once per
/// test process, under a file lock shared by every test process, and skipped when `module` is
/// already importable. `requirement` is what pip installs (e.g. `casbin==1.43.0`).
pub fn python_with(module: &str, requirement: &str) -> PathBuf {
    let target = target_dir();
    std::fs::create_dir_all(&target).unwrap();
    let venv = target.join("pyenv");
    let py = venv.join("bin/python");
    let script = format!(
        "set -e
         if '{py}' -c 'import {module}' 2>/dev/null; then exit 0; fi
         [ -x '{py}' ] || python3 -m venv '{venv}'
         '{py}' -m pip install --quiet --disable-pip-version-check '{requirement}'
         '{py}' -c 'import {module}'",
        py = py.display(),
        venv = venv.display()
    );
    let out = run_with_timeout(
        Command::new("flock").arg("-w").arg("600").arg(target.join("pyenv.lock")).arg("sh").arg("-c").arg(&script),
        std::time::Duration::from_secs(900),
        &format!("installing {requirement} into target/pyenv"),
    );
    assert!(
        out.status.success(),
        "cannot set up {} with {requirement} (python3 -m venv + pip install):\n{}\n{}",
        venv.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    py
}
