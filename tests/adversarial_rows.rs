//! Escaping row filtering as an analyst login (`eve`, mapped to principal eve: editor on project 1,
//! so she reads sessions 1, 2 and public 5, 6 and writes 1, 2): leaky functions, her own views and
//! SECURITY DEFINER functions, COPY, partitions, write tricks (ON CONFLICT, MERGE, views), the policy
//! tables and the admin API, and the inherent leaks of PostgreSQL (unique / foreign-key violations,
//! statistics, estimates).
mod common;

use std::collections::BTreeSet;

use common::*;

const EVE_READS: [i64; 4] = [1, 2, 5, 6];

fn setup() -> Cluster {
    let c = platform(&["eve"]);
    c.superuser()
        .batch_execute(
            "SELECT authz.create_principal('eve', 'user', 'eve');
             SELECT authz.assign_role('eve', 'editor', 'project', '1');
             GRANT CREATE ON SCHEMA public TO eve;
             GRANT SELECT ON sessions, projects TO eve;",
        )
        .unwrap();
    c
}

fn images_as_superuser(c: &Cluster) -> Vec<(i64, i64, Option<String>)> {
    c.superuser()
        .query("SELECT id, session_id, label FROM images ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn count(client: &mut impl postgres::GenericClient, sql: &str) -> i64 {
    client.query_one(&format!("SELECT count(*) FROM ({sql}) q"), &[]).unwrap().get(0)
}

#[test]
fn row_security_off_and_leaky_functions_see_only_permitted_rows() {
    let c = setup();
    let mut eve = c.connect("eve");
    assert_eq!(visible(&mut eve).unwrap(), (EVE_READS.to_vec(), 40));
    // row_security = off is an error for a confined role, not a way around the policies.
    eve.batch_execute("SET row_security = off").unwrap();
    assert_eq!(code(eve.query("SELECT count(*) FROM images", &[])), SqlState::INSUFFICIENT_PRIVILEGE);
    eve.batch_execute("RESET row_security").unwrap();
    // Only superusers may declare a function LEAKPROOF (which would let it run before the policy).
    let r = eve.batch_execute("CREATE FUNCTION public.lp(bigint) RETURNS bool LANGUAGE sql LEAKPROOF AS 'SELECT true'");
    assert_eq!(code(r), SqlState::INSUFFICIENT_PRIVILEGE);

    eve.batch_execute(
        "CREATE TEMP TABLE seen (session_id bigint, id bigint);
         CREATE FUNCTION public.leak(i images) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS
             $$ BEGIN INSERT INTO pg_temp.seen VALUES (i.session_id, i.id); RETURN true; END $$;
         CREATE FUNCTION public.leak_id(s bigint, i bigint) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS
             $$ BEGIN INSERT INTO pg_temp.seen VALUES (s, i); RETURN true; END $$;
         CREATE FUNCTION public.leak_op(a bigint, b bigint) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS
             $$ BEGIN INSERT INTO pg_temp.seen VALUES (a, b); RETURN a = b; END $$;
         CREATE OPERATOR public.=== (FUNCTION = public.leak_op, LEFTARG = bigint, RIGHTARG = bigint,
             RESTRICT = eqsel);",
    )
    .unwrap();
    let queries = [
        "SELECT * FROM images WHERE leak(images)",
        "SELECT * FROM images WHERE leak_id(session_id, id) AND id = 21",
        "SELECT * FROM images WHERE id = 21 OR leak_id(session_id, id)",
        "SELECT * FROM images WHERE session_id === 3",
        "SELECT * FROM images WHERE session_id IN (3, 4) AND leak(images)",
        "SELECT * FROM (SELECT * FROM images) s WHERE leak_id(s.session_id, s.id)",
        "SELECT * FROM (SELECT * FROM images OFFSET 0) s WHERE leak_id(s.session_id, s.id)",
        "SELECT * FROM images a JOIN images b ON leak_id(a.session_id, b.session_id)",
        "SELECT * FROM images ORDER BY leak_id(session_id, id)",
        "SELECT session_id, bool_and(leak_id(session_id, id)) FROM images GROUP BY session_id",
        "SELECT * FROM images WHERE EXISTS (SELECT 1 WHERE leak_id(images.session_id, images.id))",
        "WITH x AS MATERIALIZED (SELECT * FROM images) SELECT * FROM x WHERE leak(x::images)",
    ];
    for plan in [
        "SET enable_indexscan = on; SET enable_seqscan = on",
        "SET enable_seqscan = off; SET enable_bitmapscan = off",
        "SET enable_seqscan = off; SET enable_indexscan = off",
    ] {
        eve.batch_execute(plan).unwrap();
        for q in queries {
            eve.query(q, &[]).unwrap();
            let seen: BTreeSet<i64> = eve
                .query("SELECT DISTINCT session_id FROM pg_temp.seen", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(seen.iter().all(|s| EVE_READS.contains(s)), "{plan}: {q}: the function saw sessions {seen:?}");
            let ids: BTreeSet<i64> = eve
                .query("SELECT DISTINCT id FROM pg_temp.seen WHERE id BETWEEN 1 AND 60", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(ids.iter().all(|i| (1..=20).contains(i) || (41..=60).contains(i)), "{plan}: {q}: ids {ids:?}");
        }
    }
    let total: i64 = eve.query_one("SELECT count(*) FROM pg_temp.seen", &[]).unwrap().get(0);
    assert!(total > 0, "the leaky functions never ran");
}

#[test]
fn attacker_views_and_definer_functions_are_still_confined() {
    let c = setup();
    c.create_login("bob_login");
    c.superuser().batch_execute("SELECT authz.map_login('bob', 'bob_login')").unwrap();
    let mut eve = c.connect("eve");
    eve.batch_execute(
        "CREATE VIEW public.all_images AS SELECT * FROM images;
         CREATE VIEW public.barrier WITH (security_barrier) AS SELECT * FROM images;
         CREATE MATERIALIZED VIEW public.mv AS SELECT * FROM images;
         CREATE FUNCTION public.dump() RETURNS SETOF images LANGUAGE sql SECURITY DEFINER
             SET search_path = public, pg_catalog AS 'SELECT * FROM images';
         CREATE FUNCTION public.dump_plpgsql() RETURNS SETOF images LANGUAGE plpgsql SECURITY DEFINER AS
             $$ BEGIN SET LOCAL row_security = off; RETURN QUERY SELECT * FROM images; END $$;
         CREATE FUNCTION public.as_definer_count() RETURNS bigint LANGUAGE sql SECURITY DEFINER
             AS 'SELECT count(*) FROM images';",
    )
    .unwrap();
    for q in [
        "SELECT * FROM all_images",
        "SELECT * FROM barrier",
        "SELECT * FROM mv",
        "SELECT * FROM dump()",
        "SELECT * FROM (SELECT (dump()).*) d",
    ] {
        let s: BTreeSet<i64> = eve
            .query(&format!("SELECT DISTINCT session_id FROM ({q}) q"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(s.into_iter().collect::<Vec<_>>(), EVE_READS.to_vec(), "{q}");
        assert_eq!(count(&mut eve, q), 40, "{q}");
    }
    // A definer function turning row security off only gets an error.
    assert_eq!(code(eve.query("SELECT * FROM dump_plpgsql()", &[])), SqlState::INSUFFICIENT_PRIVILEGE);
    // Shared with another login: table privileges are eve's (the owner's), rows are the caller's.
    eve.batch_execute(
        "GRANT SELECT ON all_images TO bob_login; GRANT EXECUTE ON FUNCTION dump(), as_definer_count() TO bob_login",
    )
    .unwrap();
    let mut bob = c.connect("bob_login");
    assert_eq!(code(bob.query("SELECT count(*) FROM images", &[])), SqlState::INSUFFICIENT_PRIVILEGE);
    for q in ["SELECT * FROM all_images", "SELECT * FROM dump()"] {
        let s: BTreeSet<i64> = bob
            .query(&format!("SELECT DISTINCT session_id FROM ({q}) q"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(s.into_iter().collect::<Vec<_>>(), vec![3, 4, 5, 6], "bob via eve's {q}");
    }
    let n: i64 = bob.query_one("SELECT as_definer_count()", &[]).unwrap().get(0);
    assert_eq!(n, 40);
    // Nothing can be planted in the authz schema.
    let r = eve.batch_execute("CREATE FUNCTION authz.user_id2() RETURNS text LANGUAGE sql AS 'SELECT ''alice'''");
    assert_eq!(code(r), SqlState::INSUFFICIENT_PRIVILEGE);
    let r = eve.batch_execute("CREATE TABLE authz.x (a int)");
    assert_eq!(code(r), SqlState::INSUFFICIENT_PRIVILEGE);
}

#[test]
fn copy_to_is_confined() {
    let c = setup();
    let mut eve = c.connect("eve");
    eve.batch_execute("CREATE VIEW public.v AS SELECT * FROM images").unwrap();
    for sql in [
        "COPY images TO STDOUT",
        "COPY (SELECT * FROM images) TO STDOUT",
        "COPY (SELECT * FROM v) TO STDOUT",
        "COPY images (session_id) TO STDOUT (FORMAT csv)",
    ] {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut eve.copy_out(sql).unwrap(), &mut out).unwrap();
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows.len(), 40, "{sql}");
        for r in rows {
            let fields: Vec<&str> = r.split([',', '\t']).collect();
            let s: i64 = if fields.len() == 1 { fields[0].parse().unwrap() } else { fields[1].parse().unwrap() };
            assert!(EVE_READS.contains(&s), "{sql}: {r}");
        }
    }
    // Server-side files are not for this login at all.
    assert_eq!(code(eve.batch_execute("COPY images TO '/tmp/pg_authz_eve_copy'")), SqlState::INSUFFICIENT_PRIVILEGE);
    assert_eq!(code(eve.batch_execute("COPY images TO PROGRAM 'cat'")), SqlState::INSUFFICIENT_PRIVILEGE);
}

fn partitioned(c: &Cluster) {
    c.superuser()
        .batch_execute(
            "CREATE TABLE events (id bigint, session_id bigint NOT NULL REFERENCES sessions, note text,
                                  PRIMARY KEY (id, session_id)) PARTITION BY LIST (session_id);
             CREATE TABLE events_a PARTITION OF events FOR VALUES IN (1, 2);
             CREATE TABLE events_b PARTITION OF events FOR VALUES IN (3, 4);
             CREATE TABLE events_c PARTITION OF events FOR VALUES IN (5, 6);
             CREATE INDEX ON events (session_id);
             INSERT INTO events SELECT g, 1 + (g - 1) % 6, 'e' FROM generate_series(1, 60) g;
             SELECT authz.protect('events', 'session_id', 'session');
             GRANT SELECT, INSERT, UPDATE, DELETE ON events, events_a, events_b, events_c TO eve;",
        )
        .unwrap();
}

#[test]
fn partitions_queried_directly_are_confined() {
    let c = setup();
    partitioned(&c);
    let mut eve = c.connect("eve");
    assert_eq!(count(&mut eve, "SELECT * FROM events"), 40);
    assert_eq!(count(&mut eve, "SELECT * FROM events_a"), 20);
    assert_eq!(count(&mut eve, "SELECT * FROM events_b"), 0);
    assert_eq!(count(&mut eve, "SELECT * FROM events_c"), 20);
    assert_eq!(count(&mut eve, "SELECT * FROM ONLY events_b"), 0);
    assert_eq!(code(eve.batch_execute("INSERT INTO events_b VALUES (1000, 3, 'x')")), SqlState::INSUFFICIENT_PRIVILEGE);
    assert_eq!(code(eve.batch_execute("INSERT INTO events VALUES (1000, 3, 'x')")), SqlState::INSUFFICIENT_PRIVILEGE);
    assert_eq!(
        code(eve.batch_execute("UPDATE events SET session_id = 3 WHERE id = 1")),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    assert_eq!(eve.execute("UPDATE events_b SET note = 'x'", &[]).unwrap(), 0);
    assert_eq!(eve.execute("DELETE FROM events_b", &[]).unwrap(), 0);
    assert_eq!(eve.execute("DELETE FROM events_c", &[]).unwrap(), 0); // public: read-only
    let n: i64 = c.superuser().query_one("SELECT count(*) FROM events", &[]).unwrap().get(0);
    assert_eq!(n, 60);
}

/// A partition created or attached after authz.protect() does not carry the policies itself.
/// Through the parent it is filtered; queried directly it must not be readable either.
#[test]
fn a_partition_added_after_protect_is_reported_by_doctor() {
    let c = setup();
    partitioned(&c);
    let mut su = c.superuser();
    su.batch_execute(
        "INSERT INTO sessions VALUES (7, 2), (8, 2);
         CREATE TABLE events_d PARTITION OF events FOR VALUES IN (7, 8);
         INSERT INTO events SELECT g, 7 + g % 2, 'late' FROM generate_series(100, 109) g;
         GRANT SELECT ON events_d TO eve;",
    )
    .unwrap();
    let errors = |su: &mut Client| -> Vec<String> {
        su.query("SELECT object || ': ' || problem FROM authz.doctor() WHERE severity = 'error'", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    // The event trigger protected the new partition in the statement that created it.
    let problems = errors(&mut su);
    assert!(!problems.iter().any(|p| p.contains("events_d")), "{problems:?}");
    let forced: bool = su
        .query_one("SELECT rls_forced FROM authz.protected_tables WHERE table_name = 'events_d'::regclass", &[])
        .unwrap()
        .get(0);
    assert!(forced);
    // Tampering with it afterwards is what doctor reports.
    su.batch_execute("ALTER TABLE events_d NO FORCE ROW LEVEL SECURITY").unwrap();
    let problems = errors(&mut su);
    assert!(problems.iter().any(|p| p.contains("events_d") && p.contains("not enabled and forced")), "{problems:?}");
    let mut eve = c.connect("eve");
    assert_eq!(count(&mut eve, "SELECT * FROM events WHERE session_id IN (7, 8)"), 0);
}

#[test]
fn a_partition_added_after_protect_is_not_readable_directly() {
    let c = setup();
    partitioned(&c);
    c.superuser()
        .batch_execute(
            "INSERT INTO sessions VALUES (7, 2), (8, 2);
             CREATE TABLE events_d PARTITION OF events FOR VALUES IN (7, 8);
             INSERT INTO events SELECT g, 7 + g % 2, 'late' FROM generate_series(100, 109) g;
             GRANT SELECT ON events_d TO eve;",
        )
        .unwrap();
    let mut eve = c.connect("eve");
    assert_eq!(count(&mut eve, "SELECT * FROM events_d"), 0, "forbidden sessions 7, 8 read through the new partition");
}

#[test]
fn writes_cannot_reach_forbidden_rows() {
    let c = setup();
    let before = images_as_superuser(&c);
    let mut eve = c.connect("eve");
    eve.batch_execute("CREATE VIEW public.v AS SELECT * FROM images").unwrap();
    let refused = [
        "UPDATE images SET session_id = 3 WHERE id = 1",
        "UPDATE images SET session_id = 5 WHERE id = 1", // public session 5: readable, not writable
        "INSERT INTO images VALUES (1000, 3, 'x')",
        "INSERT INTO images VALUES (1000, 5, 'x')",
        "INSERT INTO images SELECT 2000 + g, 4, 'x' FROM generate_series(1, 3) g",
        "UPDATE v SET session_id = 4 WHERE id = 2",
        "INSERT INTO v VALUES (1001, 3, 'x')",
        // The hidden row 21 (session 3) as the target of an upsert: the UPDATE policy refuses it.
        "INSERT INTO images VALUES (21, 1, 'x') ON CONFLICT (id) DO UPDATE SET label = 'pwned'",
        "INSERT INTO images VALUES (41, 1, 'x') ON CONFLICT (id) DO UPDATE SET label = 'pwned'",
        "INSERT INTO images VALUES (1, 1, 'x') ON CONFLICT (id) DO UPDATE SET session_id = 3",
        "MERGE INTO images t USING (VALUES (1::bigint)) s(id) ON t.id = s.id WHEN MATCHED THEN UPDATE SET session_id = 4",
        "MERGE INTO images t USING (VALUES (5000::bigint)) s(id) ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (5000, 3, 'x')",
        "WITH m AS (UPDATE images SET session_id = 6 WHERE id = 3 RETURNING *) SELECT * FROM m",
    ];
    for sql in refused {
        assert_eq!(code(eve.batch_execute(sql)), SqlState::INSUFFICIENT_PRIVILEGE, "{sql}");
    }
    let nothing = [
        "UPDATE images SET label = 'pwned' WHERE id = 21 RETURNING id",
        "UPDATE images SET label = 'pwned' WHERE session_id IN (3, 4, 5, 6) RETURNING id",
        "DELETE FROM images WHERE session_id IN (3, 4, 5, 6) RETURNING id",
        "DELETE FROM images WHERE id = 21 RETURNING id",
        "DELETE FROM v WHERE session_id = 3 RETURNING id",
        "UPDATE images i SET label = 'pwned' FROM sessions s WHERE s.id = i.session_id AND s.project_id = 2 RETURNING i.id",
        "SELECT * FROM images WHERE session_id = 3 FOR UPDATE",
        "MERGE INTO images t USING (SELECT g::bigint AS id FROM generate_series(21, 40) g) s ON t.id = s.id
             WHEN MATCHED THEN DELETE",
    ];
    for sql in nothing {
        let n = if sql.starts_with("MERGE") {
            eve.execute(sql, &[]).unwrap() as usize
        } else {
            eve.query(sql, &[]).unwrap().len()
        };
        assert_eq!(n, 0, "{sql}");
    }
    // MERGE whose source row matches a hidden row falls to NOT MATCHED, and its INSERT then hits
    // the primary key (an inherent existence leak, see unique_violation test).
    assert_eq!(
        code(eve.batch_execute(
            "MERGE INTO images t USING (VALUES (21::bigint)) s(id) ON t.id = s.id
                 WHEN MATCHED THEN UPDATE SET label = 'pwned' WHEN NOT MATCHED THEN INSERT VALUES (21, 1, 'x')"
        )),
        SqlState::UNIQUE_VIOLATION
    );
    assert_eq!(code(eve.batch_execute("TRUNCATE images")), SqlState::INSUFFICIENT_PRIVILEGE);
    assert_eq!(images_as_superuser(&c), before, "a refused write changed data");
    // Control: eve's own rows are writable.
    assert_eq!(eve.execute("UPDATE images SET label = 'mine' WHERE id = 1", &[]).unwrap(), 1);
}

#[test]
fn policy_tables_and_admin_api_are_closed() {
    let c = setup();
    let mut su = c.superuser();
    let snapshot = |su: &mut Client| -> Vec<i64> {
        su.query_one(
            "SELECT ARRAY[(SELECT count(*) FROM authz.principals), (SELECT count(*) FROM authz.role_assignments),
                          (SELECT count(*) FROM authz.rules), (SELECT count(*) FROM authz.keys),
                          (SELECT count(*) FROM authz.memberships), (SELECT count(*) FROM authz.roles),
                          (SELECT count(*) FROM authz.protected), (SELECT count(*) FROM authz.audit_changes)]",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = snapshot(&mut su);
    let mut eve = c.connect("eve");
    for t in [
        "authz.keys",
        "authz.role_assignments",
        "authz.audit_changes",
        "authz.principals",
        "authz.memberships",
        "authz.rules",
        "authz.roles",
        "authz.role_inheritance",
        "authz.resource_types",
        "authz.protected",
        "authz.protected_tables",
    ] {
        assert_eq!(code(eve.query(&format!("SELECT * FROM {t}"), &[])), SqlState::INSUFFICIENT_PRIVILEGE, "{t}");
    }
    for sql in [
        "SELECT kid FROM authz.keys",
        "INSERT INTO authz.role_assignments (principal, role) VALUES ('eve', 'editor')",
        "INSERT INTO authz.keys (kid, alg, key_format, material) VALUES ('x', 'HS256', 'secret', repeat('x', 40))",
        "UPDATE authz.principals SET db_role = 'eve' WHERE id = 'alice'",
        "DELETE FROM authz.audit_changes",
        "SELECT authz.create_principal('mallory')",
        "SELECT authz.create_principal('eve2', 'user', 'eve')",
        "SELECT authz.map_login('alice', 'eve')",
        "SELECT authz.drop_principal('alice')",
        "SELECT authz.add_member('alice', 'eve')",
        "SELECT authz.create_role('god')",
        "SELECT authz.add_inheritance('viewer', 'editor')",
        "SELECT authz.drop_role('viewer')",
        "SELECT authz.allow('viewer', 'session', '*', 'write')",
        "SELECT authz.deny('editor', 'session', '*', '*')",
        "SELECT authz.remove_rule('viewer', 'session', '*', 'read')",
        "SELECT authz.assign_role('eve', 'editor')",
        "SELECT authz.assign_role('eve', 'editor', 'project', '2')",
        "SELECT authz.unassign_role('alice', 'editor', 'project', '1')",
        "SELECT authz.allow('viewer', 'authz', '*', 'manage')",
        "SELECT authz.import_casbin('p, viewer, session:*, write')",
        "SELECT authz.register_resource_type('img', 'images', 'id')",
        "SELECT authz.unregister_resource_type('session')",
        "SELECT authz.protect('sessions', 'id', 'session')",
        "SELECT authz.unprotect('images')",
        "SELECT authz.add_key('evil', 'HS256', repeat('x', 40))",
        "SELECT authz.add_jwks('{\"keys\": []}')",
        "SELECT authz.revoke_key('it-key')",
        "SELECT * FROM authz.doctor()",
        "SELECT * FROM authz.explain('alice', 'session', '3', 'read')",
        "SELECT authz._require_manage('principals')",
        "SELECT authz._add_rule('viewer', 'session', '*', 'write', 'allow')",
        "SELECT authz._ensure_role('god')",
        // Citus: distribute() and its helpers act with pg_authz's rights (no Citus here: the
        // privilege check comes first all the same).
        "SELECT authz.distribute()",
        "SELECT authz._new_cluster_secret()",
        "SELECT authz._known_to_every_node('images'::regclass::oid)",
        "SELECT authz._resync_if_distributed('{}', '{}')",
        "SELECT authz._prepare_registrations_for_cluster()",
        "SELECT authz._resync_registrations()",
    ] {
        assert_eq!(code(eve.batch_execute(sql)), SqlState::INSUFFICIENT_PRIVILEGE, "{sql}");
    }
    let can: bool = eve.query_one("SELECT authz.can_manage('principals')", &[]).unwrap().get(0);
    assert!(!can);
    // Her own access she may explain.
    let n = eve.query("SELECT * FROM authz.explain('eve', 'session', '1', 'read')", &[]).unwrap().len();
    assert!(n > 0);
    // The same through a token of a principal without manage.
    let mut tx = eve.transaction().unwrap();
    tx.execute("SELECT set_config('authz.token', $1, true)", &[&token("bob")]).unwrap();
    assert_eq!(code(tx.batch_execute("SELECT authz.assign_role('bob', 'editor')")), SqlState::INSUFFICIENT_PRIVILEGE);
    tx.rollback().unwrap();
    assert_eq!(snapshot(&mut su), before, "a refused call changed the policy");
    assert_eq!(visible(&mut eve).unwrap(), (EVE_READS.to_vec(), 40));
}

/// Inherent to PostgreSQL: constraints are checked against all rows, visible or not.
#[test]
fn unique_violation_reveals_that_a_hidden_row_exists() {
    let c = setup();
    let mut eve = c.connect("eve");
    assert_eq!(count(&mut eve, "SELECT * FROM images WHERE id = 21"), 0);
    // Hidden id 21: unique violation. Free id 9999: accepted. The difference is the leak.
    let e = eve.batch_execute("INSERT INTO images VALUES (21, 1, 'probe')").unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let detail = e.as_db_error().unwrap().detail().unwrap_or("").to_string();
    // The detail names only the key eve supplied, never the hidden row's other columns.
    assert!(!detail.contains("img21") && !detail.contains("(3)"), "{detail}");
    let mut tx = eve.transaction().unwrap();
    tx.batch_execute("INSERT INTO images VALUES (9999, 1, 'probe')").unwrap();
    tx.rollback().unwrap();
    // ON CONFLICT DO NOTHING answers the same question silently: 0 rows vs 1 row.
    let mut tx = eve.transaction().unwrap();
    assert_eq!(tx.execute("INSERT INTO images VALUES (21, 1, 'p') ON CONFLICT DO NOTHING", &[]).unwrap(), 0);
    assert_eq!(tx.execute("INSERT INTO images VALUES (9998, 1, 'p') ON CONFLICT DO NOTHING", &[]).unwrap(), 1);
    tx.rollback().unwrap();
}

#[test]
fn foreign_key_checks_reveal_that_a_hidden_row_exists() {
    let c = setup();
    c.superuser()
        .batch_execute(
            "CREATE TABLE annotations (id bigserial PRIMARY KEY, image_id bigint NOT NULL REFERENCES images,
                                       session_id bigint NOT NULL, body text);
             CREATE INDEX ON annotations (session_id);
             SELECT authz.protect('annotations', 'session_id', 'session');
             GRANT SELECT, INSERT ON annotations TO eve;
             GRANT USAGE ON SEQUENCE annotations_id_seq TO eve;",
        )
        .unwrap();
    let mut eve = c.connect("eve");
    // Image 21 is hidden from eve, yet a reference to it is accepted (RI checks bypass RLS) ...
    let mut tx = eve.transaction().unwrap();
    tx.batch_execute("INSERT INTO annotations (image_id, session_id, body) VALUES (21, 1, 'probe')").unwrap();
    tx.rollback().unwrap();
    // ... while a reference to a missing image is a foreign-key violation.
    assert_eq!(
        code(eve.batch_execute("INSERT INTO annotations (image_id, session_id, body) VALUES (9999, 1, 'probe')")),
        SqlState::FOREIGN_KEY_VIOLATION
    );
    // Same on images -> sessions: a missing session is 23503, an existing forbidden one 42501.
    assert_eq!(code(eve.batch_execute("INSERT INTO images VALUES (7000, 99, 'x')")), SqlState::INSUFFICIENT_PRIVILEGE);
    // (the policy runs first for the insert; the RI check only runs for rows the policy let through)
    let mut su = c.superuser();
    su.batch_execute("INSERT INTO sessions VALUES (9, 1)").unwrap(); // a new session of eve's project
    let mut tx = eve.transaction().unwrap();
    tx.batch_execute("INSERT INTO images VALUES (7001, 9, 'x')").unwrap();
    tx.rollback().unwrap();
}

/// What an analyst learns without seeing rows: pg_stats is hidden for RLS tables, but the total
/// row count (pg_class.reltuples) and planner estimates are not.
#[test]
fn statistics_and_estimates() {
    let c = setup();
    c.superuser().batch_execute("ANALYZE images; ANALYZE sessions").unwrap();
    let mut eve = c.connect("eve");
    let n: i64 = eve.query_one("SELECT count(*) FROM pg_stats WHERE tablename = 'images'", &[]).unwrap().get(0);
    assert_eq!(n, 0, "pg_stats shows most common values of a table under row security");
    let reltuples: f32 = eve.query_one("SELECT reltuples FROM pg_class WHERE relname = 'images'", &[]).unwrap().get(0);
    assert_eq!(reltuples, 60.0, "documented leak: the total number of rows");
    let estimate = |eve: &mut Client, sql: &str| -> f64 {
        let text = eve
            .simple_query(&format!("EXPLAIN (FORMAT JSON) {sql}"))
            .unwrap()
            .into_iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap();
        let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
        plan[0]["Plan"]["Plan Rows"].as_f64().unwrap()
    };
    let all = estimate(&mut eve, "SELECT * FROM images");
    let hidden = estimate(&mut eve, "SELECT * FROM images WHERE session_id = 3");
    let missing = estimate(&mut eve, "SELECT * FROM images WHERE session_id = 99");
    eprintln!("estimates: all {all}, hidden session 3: {hidden}, missing session 99: {missing}");
    // The unfiltered estimate is the caller's share of the table: with the selectivity support it
    // is exact here (4 of 6 sessions -> 40 of 60 rows), so it reveals nothing eve cannot count.
    assert_eq!(all, 40.0);
    // Documented inherent leak: equality on bigint is leakproof, so the planner uses the column's
    // statistics under row security, and the estimate for a hidden value (session 3: 10 rows) is
    // visibly larger than for a value that does not exist at all.
    assert!(hidden > missing, "{hidden} {missing}");
    assert!(hidden <= all, "{hidden}");
}
