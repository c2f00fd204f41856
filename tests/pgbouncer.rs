//! pg_authz behind a real pgbouncer in transaction pooling mode: many clients on one shared login,
//! each with its own token, multiplexed over two server connections. The token must be
//! transaction-local (`SET LOCAL authz.token` or `authz.login(t)`); a session-level `SET` leaks to
//! whichever client gets the server connection next, which the second test demonstrates.
mod common;

use common::*;
use postgres::SimpleQueryMessage;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// A pgbouncer child process (run as the postgres OS user) whose files live in the cluster dir.
struct Pgbouncer {
    child: Child,
    port: u16,
    log: PathBuf,
    pidfile: PathBuf,
}

impl Pgbouncer {
    fn start(c: &Cluster, name: &str, pool_size: u32, users: &[&str]) -> Pgbouncer {
        assert!(
            Path::new(PGBOUNCER).exists(),
            "{PGBOUNCER} not found: install the Debian package `pgbouncer` (apt-get install pgbouncer); \
             this test needs a real pgbouncer and does not skip"
        );
        let dir = c.dir();
        let ini = dir.join(format!("{name}.ini"));
        let auth = dir.join(format!("{name}.users"));
        let log = dir.join(format!("{name}.log"));
        let pidfile = dir.join(format!("{name}.pid"));
        let stderr_path = dir.join(format!("{name}.stderr"));
        let users: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(&auth, users).unwrap();
        let mut last = String::new();
        for _ in 0..5 {
            let port = pick_free_port();
            std::fs::write(
                &ini,
                format!(
                    "[databases]\n\
                     postgres = host={host} port={pgport} dbname=postgres\n\
                     [pgbouncer]\n\
                     listen_addr = 127.0.0.1\n\
                     listen_port = {port}\n\
                     unix_socket_dir =\n\
                     auth_type = trust\n\
                     auth_file = {auth}\n\
                     pool_mode = transaction\n\
                     default_pool_size = {pool_size}\n\
                     min_pool_size = 0\n\
                     reserve_pool_size = 0\n\
                     max_client_conn = 100\n\
                     server_reset_query =\n\
                     ignore_startup_parameters = extra_float_digits\n\
                     logfile = {log}\n\
                     pidfile = {pid}\n",
                    host = dir.display(),
                    pgport = c.port(),
                    auth = auth.display(),
                    log = log.display(),
                    pid = pidfile.display(),
                ),
            )
            .unwrap();
            let _ = std::fs::remove_file(&pidfile);
            let stderr = std::fs::File::create(&stderr_path).unwrap();
            let child = command_as_pg(PGBOUNCER)
                .arg(&ini)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {PGBOUNCER}: {e}"));
            let mut pgb = Pgbouncer { child, port, log: log.clone(), pidfile: pidfile.clone() };
            let start = Instant::now();
            loop {
                if let Some(st) = pgb.child.try_wait().unwrap() {
                    last = format!(
                        "pgbouncer exited with {st}:\n{}\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                        pgb.log_contents()
                    );
                    break;
                }
                let listening = std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok();
                if listening && pgb.pidfile.exists() {
                    // Prove the whole chain works: client -> pgbouncer -> server.
                    let mut probe = pgb.connect("postgres");
                    let one = scalar(&mut probe, "SELECT 1");
                    assert_eq!(one.as_deref(), Some("1"));
                    return pgb;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    panic!("pgbouncer did not listen on 127.0.0.1:{port} within 20 s:\n{}", pgb.log_contents());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Exited (most likely the port was taken): Drop reaps it; try another port.
            drop(pgb);
        }
        panic!("pgbouncer failed to start: {last}");
    }

    fn log_contents(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    fn config(&self, user: &str) -> postgres::Config {
        let mut cfg = postgres::Config::new();
        cfg.host("127.0.0.1").port(self.port).user(user).dbname("postgres").connect_timeout(Duration::from_secs(10));
        cfg
    }

    fn connect(&self, user: &str) -> Client {
        self.config(user)
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connect through pgbouncer as {user}: {e}\n{}", self.log_contents()))
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        // Signal pgbouncer itself (sudo does not relay signals from our own process group).
        let pid = std::fs::read_to_string(&self.pidfile).ok().and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(pid) = pid {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of each statement of a simple-query message, first column only.
fn results(msgs: Vec<SimpleQueryMessage>) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::Row(r) => cur.push(r.get(0).map(str::to_string)),
            SimpleQueryMessage::CommandComplete(_) => out.push(std::mem::take(&mut cur)),
            _ => {}
        }
    }
    out
}

fn scalar(c: &mut Client, sql: &str) -> Option<String> {
    let r = results(c.simple_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}")));
    assert_eq!(r.len(), 1, "{sql}");
    assert_eq!(r[0].len(), 1, "{sql}");
    r[0][0].clone()
}

fn ids(rows: &[Option<String>]) -> Vec<i64> {
    rows.iter().map(|v| v.as_deref().expect("NULL session_id").parse().unwrap()).collect()
}

/// Every row belongs to `expected`, every expected session shows all its 10 images.
fn assert_confined(seen: &[i64], expected: &BTreeSet<i64>, ctx: &str) {
    let stray: Vec<_> = seen.iter().filter(|s| !expected.contains(s)).collect();
    assert!(stray.is_empty(), "{ctx}: rows of sessions {stray:?} outside the permitted set {expected:?}");
    let distinct: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(&distinct, expected, "{ctx}");
    assert_eq!(seen.len(), expected.len() * 10, "{ctx}: image count");
}

fn set(v: &[i64]) -> BTreeSet<i64> {
    v.iter().copied().collect()
}

/// The shared login `app` is mapped to `svc` (viewer on session 2): without a token it sees 2, 5, 6.
const SVC: [i64; 3] = [2, 5, 6];

/// Principals with pairwise different permitted session sets (5 and 6 are public via project 3).
fn principals() -> Vec<(&'static str, Vec<i64>)> {
    vec![
        ("alice", vec![1, 2, 5, 6]),      // editor on project 1 (fixture)
        ("bob", vec![3, 4, 5, 6]),        // viewer on project 2 (fixture)
        ("s1", vec![1, 5, 6]),            // viewer on session 1
        ("s3", vec![3, 5, 6]),            // viewer on session 3
        ("s14", vec![1, 4, 5, 6]),        // viewer on sessions 1 and 4
        ("all", vec![1, 2, 3, 4, 5, 6]),  // viewer everywhere
        ("nobody", vec![5, 6]),           // no roles: public rows only
        ("blocked", vec![1, 2, 3, 4, 6]), // viewer everywhere but denied session 5 (deny beats public)
    ]
}

fn setup() -> Cluster {
    let c = Cluster::start();
    c.create_login("app");
    c.create_login("web");
    c.add_test_key();
    fixture(&c, &["app", "web"]);
    c.superuser()
        .batch_execute(
            "SELECT authz.create_principal('svc', 'user', 'app');
             SELECT authz.assign_role('svc', 'viewer', 'session', '2');
             SELECT authz.create_principal(p) FROM unnest(ARRAY['s1', 's3', 's14', 'all', 'nobody', 'blocked']) p;
             SELECT authz.assign_role('s1', 'viewer', 'session', '1');
             SELECT authz.assign_role('s3', 'viewer', 'session', '3');
             SELECT authz.assign_role('s14', 'viewer', 'session', '1');
             SELECT authz.assign_role('s14', 'viewer', 'session', '4');
             SELECT authz.assign_role('all', 'viewer');
             SELECT authz.create_role('blocked_5');
             SELECT authz.deny('blocked_5', 'session', '5', '*');
             SELECT authz.assign_role('blocked', 'viewer');
             SELECT authz.assign_role('blocked', 'blocked_5');",
        )
        .unwrap();
    // Sanity-check the sets directly on the server before going through pgbouncer.
    let mut direct = c.connect("app");
    for (p, expected) in principals() {
        let mut tx = direct.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL authz.token = '{}'", token(p))).unwrap();
        assert_eq!(visible(&mut tx).unwrap(), (expected.clone(), expected.len() as i64 * 10), "{p} direct");
        tx.commit().unwrap();
    }
    assert_eq!(visible(&mut direct).unwrap(), (SVC.to_vec(), 30));
    c
}

const THREADS_TX: usize = 300;

#[test]
fn transaction_pooling_keeps_every_client_confined() {
    let c = setup();
    let pgb = Pgbouncer::start(&c, "pgbouncer", 2, &["app", "web", "postgres"]);
    let started = Instant::now();
    let svc = set(&SVC);

    // Each thread: (principal, backend pid -> transactions served by it).
    let per_thread: Vec<(String, BTreeMap<i64, usize>)> = std::thread::scope(|s| {
        let handles: Vec<_> = principals()
            .into_iter()
            .map(|(p, expected)| {
                let pgb = &pgb;
                let svc = &svc;
                s.spawn(move || {
                    let expected = set(&expected);
                    let tok = token(p);
                    let mut client = pgb.connect("app");
                    let mut pids: BTreeMap<i64, usize> = BTreeMap::new();
                    for i in 0..THREADS_TX {
                        let ctx = format!("{p} transaction {i}");
                        let (who, pid, seen) = match i % 3 {
                            // One statement per round trip, SET LOCAL.
                            0 => {
                                client.simple_query("BEGIN").unwrap();
                                client.simple_query(&format!("SET LOCAL authz.token = '{tok}'")).unwrap();
                                let who = scalar(&mut client, "SELECT authz.user_id()");
                                let pid = scalar(&mut client, "SELECT pg_backend_pid()");
                                let r = results(client.simple_query("SELECT session_id FROM images").unwrap());
                                client.simple_query("COMMIT").unwrap();
                                (who, pid, ids(&r[0]))
                            }
                            // client.transaction() + authz.login(token).
                            1 => {
                                let mut tx = client.transaction().unwrap();
                                let r = results(tx.simple_query(&format!("SELECT authz.login('{tok}')")).unwrap());
                                assert_eq!(r[0][0].as_deref(), Some(p), "{ctx}: login() returned");
                                let r = results(
                                    tx.simple_query(
                                        "SELECT authz.user_id(); SELECT pg_backend_pid(); \
                                         SELECT session_id FROM images",
                                    )
                                    .unwrap(),
                                );
                                tx.commit().unwrap();
                                (r[0][0].clone(), r[1][0].clone(), ids(&r[2]))
                            }
                            // The whole transaction in one message.
                            _ => {
                                let r = results(
                                    client
                                        .simple_query(&format!(
                                            "BEGIN; SELECT authz.login('{tok}'); SELECT authz.user_id(); \
                                             SELECT pg_backend_pid(); SELECT session_id FROM images; COMMIT"
                                        ))
                                        .unwrap(),
                                );
                                (r[2][0].clone(), r[3][0].clone(), ids(&r[4]))
                            }
                        };
                        assert_eq!(who.as_deref(), Some(p), "{ctx}: authz.user_id()");
                        assert_confined(&seen, &expected, &ctx);
                        *pids.entry(pid.unwrap().parse().unwrap()).or_default() += 1;
                        if i % 10 == 9 {
                            // Between transactions, outside any: no token is left behind by anyone.
                            let r = results(
                                client
                                    .simple_query(
                                        "SELECT current_setting('authz.token'); SELECT authz.user_id(); \
                                         SELECT session_id FROM images",
                                    )
                                    .unwrap(),
                            );
                            assert_eq!(r[0][0].as_deref(), Some(""), "{ctx}: a token survived COMMIT");
                            assert_eq!(r[1][0].as_deref(), Some("svc"), "{ctx}: identity without a token");
                            assert_confined(&ids(&r[2]), svc, &format!("{ctx}, no token"));
                        }
                    }
                    (p.to_string(), pids)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    let elapsed = started.elapsed();

    // The pooling really happened: at most 2 server connections carried all 8 clients, and a
    // server connection served several different principals.
    let mut clients_per_pid: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let mut total = 0;
    for (p, pids) in &per_thread {
        total += pids.values().sum::<usize>();
        for pid in pids.keys() {
            clients_per_pid.entry(*pid).or_default().insert(p.clone());
        }
    }
    assert_eq!(total, principals().len() * THREADS_TX);
    assert!(clients_per_pid.len() <= 2, "more server connections than the pool size: {clients_per_pid:?}");
    assert!(
        clients_per_pid.values().any(|ps| ps.len() == principals().len()),
        "no server connection was shared by all clients: {clients_per_pid:?}"
    );
    let servers: i64 = c
        .superuser()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(servers <= 2, "{servers} server connections for app");
    eprintln!(
        "pgbouncer: {total} transactions by {} clients over {} server connections in {elapsed:?}",
        per_thread.len(),
        clients_per_pid.len()
    );
}

/// Collects the WARNINGs a connection receives.
fn connect_with_notices(pgb: &Pgbouncer, user: &str) -> (Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = notices.clone();
    let client = pgb
        .config(user)
        .notice_callback(move |n| sink.lock().unwrap().push(format!("{}: {}", n.severity(), n.message())))
        .connect(NoTls)
        .unwrap();
    (client, notices)
}

fn seen_by(client: &mut Client) -> (Option<String>, Vec<i64>) {
    let r = results(client.simple_query("SELECT authz.user_id(); SELECT session_id FROM images").unwrap());
    let mut s = ids(&r[1]);
    s.sort();
    s.dedup();
    (r[0][0].clone(), s)
}

/// Why the token must be transaction-local: with one server connection shared by two clients, a
/// session-level `SET authz.token` by client A is what client B runs under.
#[test]
fn session_level_token_leaks_through_transaction_pooling() {
    let c = setup();
    let pgb = Pgbouncer::start(&c, "pgbouncer1", 1, &["web", "postgres"]);
    // `web` is mapped to no principal: without a token it is anonymous (public sessions 5, 6).
    let (mut a, a_notices) = connect_with_notices(&pgb, "web");
    let mut b = pgb.connect("web");
    let a_pid = scalar(&mut a, "SELECT pg_backend_pid()");
    let b_pid = scalar(&mut b, "SELECT pg_backend_pid()");
    assert_eq!(a_pid, b_pid, "pool size 1: both clients must share one server connection");
    let alice = token("alice");
    let bob = token("bob");
    let anonymous = (None, vec![5, 6]);
    assert_eq!(seen_by(&mut b), anonymous);

    // THE LEAK: A sets a session-level token outside a transaction...
    a.simple_query(&format!("SET authz.token = '{alice}'")).unwrap();
    // ... and B, which never sent a token, is now alice.
    assert_eq!(seen_by(&mut b), (Some("alice".into()), vec![1, 2, 5, 6]), "expected the documented leak");
    // Same with authz.login(token, false).
    let r = results(a.simple_query(&format!("SELECT authz.login('{bob}', false)")).unwrap());
    assert_eq!(r[0][0].as_deref(), Some("bob"));
    assert_eq!(seen_by(&mut b), (Some("bob".into()), vec![3, 4, 5, 6]), "expected the documented leak");
    // Only an explicit reset ends it.
    a.simple_query("RESET authz.token").unwrap();
    assert_eq!(seen_by(&mut b), anonymous);

    // The safe forms leak nothing: SET LOCAL ...
    a.simple_query("BEGIN").unwrap();
    a.simple_query(&format!("SET LOCAL authz.token = '{alice}'")).unwrap();
    assert_eq!(seen_by(&mut a), (Some("alice".into()), vec![1, 2, 5, 6]));
    a.simple_query("COMMIT").unwrap();
    assert_eq!(seen_by(&mut b), anonymous, "SET LOCAL leaked");
    assert_eq!(scalar(&mut b, "SELECT current_setting('authz.token')").as_deref(), Some(""));
    // ... a rolled-back SET LOCAL ...
    a.simple_query(&format!("BEGIN; SET LOCAL authz.token = '{alice}'")).unwrap();
    a.simple_query("ROLLBACK").unwrap();
    assert_eq!(seen_by(&mut b), anonymous, "rolled-back SET LOCAL leaked");
    // ... authz.login(token) inside a transaction ...
    a.simple_query("BEGIN").unwrap();
    let r = results(a.simple_query(&format!("SELECT authz.login('{bob}')")).unwrap());
    assert_eq!(r[0][0].as_deref(), Some("bob"));
    assert_eq!(seen_by(&mut a), (Some("bob".into()), vec![3, 4, 5, 6]));
    a.simple_query("COMMIT").unwrap();
    assert_eq!(seen_by(&mut b), anonymous, "authz.login() in a transaction leaked");
    // ... and authz.login(token) outside one, which only lasts for its statement (with a warning).
    assert!(a_notices.lock().unwrap().is_empty(), "{:?}", a_notices.lock().unwrap());
    let r = results(a.simple_query(&format!("SELECT authz.login('{alice}')")).unwrap());
    assert_eq!(r[0][0].as_deref(), Some("alice"));
    let warnings = a_notices.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("WARNING: authz.login() outside a transaction block"), "{warnings:?}");
    assert_eq!(seen_by(&mut a), anonymous, "login() outside a transaction outlived its statement");
    assert_eq!(seen_by(&mut b), anonymous, "login() outside a transaction leaked");
    assert_eq!(scalar(&mut a, "SELECT pg_backend_pid()"), a_pid, "the server connection changed");
}
