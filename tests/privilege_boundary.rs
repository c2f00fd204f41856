//! The privilege boundary: no login, token holder or table owner can raise its own rights through
//! pg_authz. One test per family of attack (issue #13); each of them succeeded against 0.2.0.
//!
//! The attackers: `mallory`, an ordinary login with no pg_authz rights at all; `olga`, the
//! non-superuser owner of application tables that a DBA registered and protected; `helper`, a
//! principal allowed to manage principals and nothing else. "Became superuser" is checked in
//! pg_roles after each attempt, whatever the attempt itself answered.
mod common;

use common::*;

fn is_superuser(c: &Cluster, role: &str) -> bool {
    c.superuser().query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role]).unwrap().get(0)
}

/// A plpgsql function (owned by whoever runs this) that makes `role` a superuser when it runs with
/// superuser rights, and does nothing otherwise: the canary of every escalation below.
fn escalate_fn(schema: &str, role: &str) -> String {
    format!(
        "CREATE FUNCTION {schema}.escalate() RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN
             IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
                 EXECUTE 'ALTER ROLE {role} SUPERUSER';
             END IF;
             RETURN true;
         END $f$;"
    )
}

/// The fixture plus `olga`, owner of a schema of her own and of the `images` table.
fn setup() -> Cluster {
    let c = Cluster::start();
    for l in ["mallory", "olga", "helper_login"] {
        c.create_login(l);
    }
    c.add_test_key();
    fixture(&c, &["mallory", "olga"]);
    c.superuser()
        .batch_execute(
            "CREATE SCHEMA olga AUTHORIZATION olga;
             GRANT CREATE ON SCHEMA public TO olga;
             ALTER TABLE projects OWNER TO olga;
             ALTER TABLE sessions OWNER TO olga;
             ALTER TABLE images OWNER TO olga;
             SELECT authz.create_principal('olga', 'user', 'olga');
             SELECT authz.assign_role('olga', 'editor', 'project', '1');",
        )
        .unwrap();
    c
}

// ------------------------------------------------------------------------------------------------
// 1. Elevated internal queries resolve names through the caller's environment.
// ------------------------------------------------------------------------------------------------

#[test]
fn caller_temp_objects_never_reach_elevated_queries() {
    let c = setup();
    let tok = token("alice");
    // One temporary domain at a time (a domain over text would also capture the canary's own
    // casts), named like a type the internal queries cast to, checking with a function that
    // escalates when it runs as superuser; then every entry point that reads policy tables with
    // elevated rights, cold caches first.
    for t in ["name", "text", "oid", "int8", "regclass", "bool", "int4"] {
        let mut m = c.connect("mallory");
        m.batch_execute(&escalate_fn("pg_temp", "mallory")).unwrap();
        m.batch_execute(&format!("CREATE DOMAIN pg_temp.{t} AS pg_catalog.{t} CHECK (pg_temp.escalate())")).unwrap();
        // pg_temp first for types, and before pg_catalog (which is otherwise searched first).
        m.batch_execute("SET search_path = pg_temp, pg_catalog, public").unwrap();
        c.superuser().batch_execute("SELECT authz.flush_caches()").unwrap();
        for sql in [
            "SELECT authz.user_id()",
            "SELECT count(*) FROM images",
            "SELECT authz.permitted_ids('session', 'read')",
            "SELECT authz.check('session', '1', 'read')",
            "SELECT * FROM authz.explain('alice', 'session', '1', 'read')",
            "SELECT authz.can_manage('principals')",
        ] {
            let _ = m.batch_execute(sql);
            let _ = m.batch_execute(&format!("BEGIN; SET LOCAL authz.token = '{tok}'; {sql}; COMMIT"));
            let _ = m.batch_execute("ROLLBACK");
        }
        assert!(!is_superuser(&c, "mallory"), "a temporary domain over {t} ran with superuser rights");
    }
    // Confinement still holds for the same caller.
    let mut m = c.connect("mallory");
    assert_eq!(visible(&mut m).unwrap(), (vec![5, 6], 20));
}

#[test]
fn a_resource_table_owner_cannot_run_code_as_superuser_through_the_resolver() {
    let c = setup();
    let mut olga = c.connect("olga");
    // Olga owns the registered `projects` table: she moves its id to a type of her own whose cast
    // to text escalates. The resolver reads that column (cast to text) whenever it loads projects.
    olga.batch_execute(&escalate_fn("olga", "olga")).unwrap();
    olga.batch_execute(
        "CREATE TYPE olga.pid AS ENUM ('1', '2', '3');
         CREATE FUNCTION olga.pid_text(olga.pid) RETURNS text LANGUAGE plpgsql AS
             $f$ BEGIN PERFORM olga.escalate(); RETURN format('%s', $1); END $f$;
         CREATE CAST (olga.pid AS text) WITH FUNCTION olga.pid_text(olga.pid);
         ALTER TABLE sessions DROP CONSTRAINT sessions_project_id_fkey;
         ALTER TABLE projects ALTER COLUMN id TYPE olga.pid USING id::text::olga.pid;",
    )
    .unwrap();
    // Any identity's statement loads the hierarchy.
    let mut su = c.superuser();
    su.batch_execute("SELECT authz.flush_caches()").unwrap();
    let mut m = c.connect("mallory");
    let _ = m.query("SELECT count(*) FROM images", &[]);
    let _ = olga.query("SELECT count(*) FROM images", &[]);
    let _ = su.query("SELECT authz.permitted_ids('project', 'read')", &[]);
    assert!(!is_superuser(&c, "olga"), "the owner's cast ran with superuser rights");

    // A registered "table" that is a view runs its functions as the reader: refused outright.
    su.batch_execute(
        "CREATE VIEW olga.v AS SELECT 1::bigint AS id WHERE olga.escalate(); ALTER VIEW olga.v OWNER TO olga",
    )
    .unwrap();
    let r = su.batch_execute("SELECT authz.register_resource_type('vproject', 'olga.v', 'id')");
    assert_eq!(code(r), SqlState::WRONG_OBJECT_TYPE);
}

#[test]
fn registering_a_resource_type_never_reads_what_the_caller_cannot() {
    let c = setup();
    let mut su = c.superuser();
    su.batch_execute(
        "SELECT authz.create_role('typemgr');
         SELECT authz.allow('typemgr', 'authz', 'resource_types', 'manage');
         SELECT authz.allow('typemgr', 'authz', 'rules', 'manage');
         SELECT authz.create_principal('mallory', 'user', 'mallory');
         SELECT authz.assign_role('mallory', 'typemgr');
         SELECT authz.add_key('k2', 'HS256', 'a-secret-nobody-may-read-0123456789abcdef');
         CREATE TABLE private_ids (id text PRIMARY KEY, secret text);
         INSERT INTO private_ids VALUES ('1', 'classified');
         GRANT CREATE ON SCHEMA public TO mallory;",
    )
    .unwrap();
    let mut m = c.connect("mallory");
    m.batch_execute("CREATE TABLE mine (id text PRIMARY KEY, pub boolean NOT NULL DEFAULT true)").unwrap();
    for sql in [
        // pg_authz's own tables and the catalogs are never resource tables.
        "SELECT authz.register_resource_type('k', 'authz.keys', 'material')",
        "SELECT authz.register_resource_type('pw', 'pg_authid', 'rolname')",
        // A table (or column) the caller cannot read.
        "SELECT authz.register_resource_type('p', 'private_ids', 'secret')",
    ] {
        assert_eq!(code(m.batch_execute(sql)), SqlState::INSUFFICIENT_PRIVILEGE, "{sql}");
    }
    // Its own table is fine.
    m.batch_execute("SELECT authz.register_resource_type('mine', 'mine', 'id', public_column => 'pub')").unwrap();
    let ids: Vec<String> = m.query_one("SELECT authz.permitted_ids('mine', 'read')", &[]).unwrap().get(0);
    assert!(ids.is_empty());
}

#[test]
fn a_policy_change_made_inside_copy_is_still_audited() {
    let c = setup();
    let out = c.psql("postgres", &["-c", "COPY (SELECT authz.create_principal('copied')) TO STDOUT"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let audited: i64 = c
        .superuser()
        .query_one(
            "SELECT count(*) FROM authz.audit_changes WHERE table_name = 'principals' AND new_value->>'id' = 'copied'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(audited, 1, "a COPY-wrapped change escaped the audit table");
}

#[test]
fn every_security_definer_function_pins_its_search_path() {
    let c = setup();
    let rows = c
        .superuser()
        .query(
            "SELECT p.oid::regprocedure::text, coalesce(p.proconfig, '{}')
             FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_authz'
             WHERE p.prosecdef",
            &[],
        )
        .unwrap();
    assert!(rows.len() > 20, "expected the management API to be SECURITY DEFINER, found {}", rows.len());
    for r in rows {
        let (name, config): (String, Vec<String>) = (r.get(0), r.get(1));
        assert!(
            config.iter().any(|s| s == "search_path=pg_catalog, pg_temp"),
            "{name} is SECURITY DEFINER without search_path = pg_catalog, pg_temp: {config:?}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// 2. Elevated DML fires code the caller or the table owner controls.
// ------------------------------------------------------------------------------------------------

fn soft_delete_setup(c: &Cluster) {
    c.superuser()
        .batch_execute(
            "CREATE TABLE notes (id bigint PRIMARY KEY, session_id bigint NOT NULL, deleted boolean NOT NULL DEFAULT false, body text);
             CREATE INDEX ON notes (session_id);
             INSERT INTO notes SELECT g, 1 + (g - 1) % 6, false, 'n' || g FROM generate_series(1, 12) g;
             ALTER TABLE notes OWNER TO olga;
             GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO mallory;
             SELECT authz.protect('notes', 'session_id', 'session', soft_delete_column => 'deleted');
             SELECT authz.allow('editor', 'session', '*', 'delete');
             SELECT authz.allow('editor', 'session', '*', 'restore');
             SELECT authz.create_principal('mallory', 'user', 'mallory');
             SELECT authz.assign_role('mallory', 'editor', 'project', '1');",
        )
        .unwrap();
}

#[test]
fn soft_delete_and_restore_never_run_the_owners_triggers_as_superuser() {
    let c = setup();
    soft_delete_setup(&c);
    let mut olga = c.connect("olga");
    olga.batch_execute(&escalate_fn("olga", "olga")).unwrap();
    olga.batch_execute(
        "CREATE FUNCTION olga.on_update() RETURNS trigger LANGUAGE plpgsql AS
             $f$ BEGIN PERFORM olga.escalate(); RETURN NEW; END $f$;
         CREATE TRIGGER zz_owner BEFORE UPDATE ON public.notes FOR EACH ROW EXECUTE FUNCTION olga.on_update();",
    )
    .unwrap();
    // Anyone allowed to delete triggers the soft delete's UPDATE; then restore() updates again.
    let mut m = c.connect("mallory");
    assert_eq!(m.execute("DELETE FROM notes WHERE id = 1", &[]).unwrap(), 0);
    let deleted: bool = c.superuser().query_one("SELECT deleted FROM notes WHERE id = 1", &[]).unwrap().get(0);
    assert!(deleted, "the soft delete did not mark the row");
    assert!(m.query_one("SELECT authz.restore('notes', '1')", &[]).unwrap().get::<_, bool>(0));
    let deleted: bool = c.superuser().query_one("SELECT deleted FROM notes WHERE id = 1", &[]).unwrap().get(0);
    assert!(!deleted, "restore() did not unmark the row");
    assert!(!is_superuser(&c, "olga"), "the owner's trigger ran with superuser rights");
}

#[test]
fn soft_delete_through_an_inheritance_parent_marks_exactly_the_deleted_row() {
    let c = setup();
    soft_delete_setup(&c);
    // A child table (not protected, invisible to mallory) with rows at the same ctids as the parent.
    c.superuser()
        .batch_execute(
            "CREATE TABLE secret_notes () INHERITS (notes);
             INSERT INTO secret_notes SELECT 100 + g, 4, false, 'secret' || g FROM generate_series(1, 12) g;
             ALTER TABLE secret_notes OWNER TO olga;",
        )
        .unwrap();
    let mut m = c.connect("mallory");
    // Row 1 of the parent sits at ctid (0,1), as does row 101 of the child.
    m.execute("DELETE FROM ONLY notes WHERE id = 1", &[]).unwrap();
    let child_deleted: i64 =
        c.superuser().query_one("SELECT count(*) FROM secret_notes WHERE deleted", &[]).unwrap().get(0);
    assert_eq!(child_deleted, 0, "a row of the child table was soft-deleted");
    let parent: bool = c.superuser().query_one("SELECT deleted FROM ONLY notes WHERE id = 1", &[]).unwrap().get(0);
    assert!(parent);
}

// ------------------------------------------------------------------------------------------------
// 3. Identifier injection into rendered SQL.
// ------------------------------------------------------------------------------------------------

fn partition_setup(c: &Cluster) {
    c.superuser()
        .batch_execute(
            "CREATE TABLE events (id bigint NOT NULL, session_id bigint NOT NULL, body text) PARTITION BY LIST (session_id);
             CREATE TABLE events_1 PARTITION OF events FOR VALUES IN (1);
             ALTER TABLE events OWNER TO olga; ALTER TABLE events_1 OWNER TO olga;
             SELECT authz.protect('events', 'session_id', 'session');",
        )
        .unwrap();
}

#[test]
fn a_partition_name_cannot_smuggle_sql_into_the_template() {
    let c = setup();
    partition_setup(&c);
    let mut olga = c.connect("olga");
    let evil = "x\n; ALTER ROLE olga SUPERUSER; --";
    let r = olga.batch_execute(&format!("CREATE TABLE public.\"{evil}\" PARTITION OF public.events FOR VALUES IN (2)"));
    assert_eq!(code(r), SqlState::INVALID_PARAMETER_VALUE, "a control character in a name must be refused");
    assert!(!is_superuser(&c, "olga"), "a partition name ran SQL as superuser");
    // The same name without its newline is just a name.
    let tame = "x; ALTER ROLE olga SUPERUSER; --*/ \"'";
    let quoted = tame.replace('"', "\"\"");
    olga.batch_execute(&format!("CREATE TABLE public.\"{quoted}\" PARTITION OF public.events FOR VALUES IN (3)"))
        .unwrap();
    assert!(!is_superuser(&c, "olga"));
    let policies: i64 = c
        .superuser()
        .query_one(
            "SELECT count(*) FROM pg_policy WHERE polrelid = (SELECT oid FROM pg_class WHERE relname = $1)",
            &[&tame],
        )
        .unwrap()
        .get(0);
    assert_eq!(policies, 4, "the new partition is not protected");
}

/// A tiny deterministic generator (no extra crate): xorshift.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn random_identifiers_through_protect_unprotect_and_partitions_run_only_the_template() {
    let c = setup();
    let mut su = c.superuser();
    let pieces = [
        "a",
        "Z",
        " ",
        "\"",
        "'",
        "--",
        "/*",
        "*/",
        ";",
        "$$",
        "$f$",
        "\\",
        "é",
        "表",
        "🦀",
        "%s",
        "%I",
        "{{table}}",
        "ALTER ROLE mallory SUPERUSER",
        ")",
        "(",
        "E'",
        "\n",
        "\t",
        "\r",
    ];
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut protected = 0;
    for i in 0..60 {
        let mut name = String::new();
        for _ in 0..(1 + rng.next() % 6) {
            name.push_str(rng.pick(&pieces));
        }
        name.truncate(
            name.char_indices().take_while(|(i, _)| *i < 50).last().map(|(i, c)| i + c.len_utf8()).unwrap_or(0),
        );
        let mut col = String::new();
        for _ in 0..(1 + rng.next() % 4) {
            col.push_str(rng.pick(&pieces));
        }
        col.truncate(
            col.char_indices().take_while(|(i, _)| *i < 40).last().map(|(i, c)| i + c.len_utf8()).unwrap_or(0),
        );
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let (t, tc) = (q(&name), q(&col));
        let part = q(&format!("{name}_p{i}"));
        let created = su.batch_execute(&format!(
            "CREATE TABLE public.{t} ({tc} bigint NOT NULL, soft boolean NOT NULL DEFAULT false) PARTITION BY LIST ({tc});
             CREATE TABLE public.{part} PARTITION OF public.{t} FOR VALUES IN (1);
             ALTER TABLE public.{t} OWNER TO olga; ALTER TABLE public.{part} OWNER TO olga;"
        ));
        if created.is_err() {
            continue; // PostgreSQL itself refused the name (e.g. too long once quoted)
        }
        let control = name.chars().chain(col.chars()).any(char::is_control);
        let r = su.execute(
            &format!(
                "SELECT authz.protect({}::regclass, {}, 'session', soft_delete_column => 'soft')",
                lit(&q(&name)),
                lit(&col)
            ),
            &[],
        );
        if control {
            assert_eq!(code(r), SqlState::INVALID_PARAMETER_VALUE, "name {name:?} / column {col:?}");
            continue;
        }
        r.unwrap_or_else(|e| panic!("protect failed for {name:?} / {col:?}: {e}"));
        protected += 1;
        // A partition created later, by the owner, through the event trigger.
        let mut olga = c.connect("olga");
        let later = q(&format!("{name}_q{i}"));
        olga.batch_execute(&format!("CREATE TABLE public.{later} PARTITION OF public.{t} FOR VALUES IN (2)")).unwrap();
        let row = su
            .query_one(
                "SELECT count(*) FILTER (WHERE pol.polname LIKE 'authz\\_%'), count(DISTINCT pol.polrelid),
                        (SELECT count(*) FROM pg_trigger g WHERE g.tgrelid IN (SELECT relid FROM pg_partition_tree($1::text::regclass))
                           AND g.tgname = 'authz_soft_delete')
                 FROM pg_policy pol WHERE pol.polrelid IN (SELECT relid FROM pg_partition_tree($1::text::regclass))",
                &[&q(&name)],
            )
            .unwrap();
        assert_eq!(
            (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)),
            (12, 3, 3),
            "{name:?} / {col:?}: exactly the template's policies and triggers"
        );
        su.execute(&format!("SELECT authz.unprotect({}::regclass)", lit(&q(&name))), &[]).unwrap();
        let left: i64 = su
            .query_one(
                "SELECT count(*) FROM pg_policy WHERE polrelid IN (SELECT relid FROM pg_partition_tree($1::text::regclass))",
                &[&q(&name)],
            )
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
    }
    assert!(protected >= 10, "too few names made it through PostgreSQL ({protected})");
    assert!(!is_superuser(&c, "mallory"));
    // Only pg_authz's own objects were ever created: no role, no function outside the extension.
    let funcs: i64 =
        su.query_one("SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace", &[]).unwrap().get(0);
    assert_eq!(funcs, 0);
}

// ------------------------------------------------------------------------------------------------
// 4. Per-call arguments.
// ------------------------------------------------------------------------------------------------

#[test]
fn permits_with_per_row_arguments_answers_like_check() {
    let c = setup();
    let mut su = c.superuser();
    su.batch_execute(
        "SELECT authz.create_role('pviewer');
         SELECT authz.allow('pviewer', 'project', '2', 'read');
         SELECT authz.allow('editor', 'project', '1', 'share');
         SELECT authz.create_principal('mallory', 'user', 'mallory');
         SELECT authz.assign_role('mallory', 'editor', 'project', '1');
         SELECT authz.assign_role('mallory', 'pviewer');",
    )
    .unwrap();
    let mut m = c.connect("mallory");
    let rows = m
        .query(
            "WITH q(id, t, a) AS (
                 SELECT i, t, a FROM generate_series(1, 6) i,
                     unnest(ARRAY['session', 'project', 'session', 'project']) t,
                     unnest(ARRAY['read', 'write', 'share', 'read', 'delete']) a)
             SELECT id, t, a, authz.permits(id::bigint, t, a), authz.permits(id::integer, t, a),
                    authz.permits(id::text, t, a), authz.check(t, id::text, a)
             FROM q ORDER BY random()",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 6 * 4 * 5);
    let mut allowed = 0;
    for r in rows {
        let expected: bool = r.get(6);
        for col in 3..6 {
            assert_eq!(
                r.get::<_, bool>(col),
                expected,
                "permits (column {col}) for {}:{} {}",
                r.get::<_, String>(1),
                r.get::<_, i32>(0),
                r.get::<_, String>(2)
            );
        }
        allowed += expected as i32;
    }
    assert!(allowed > 0 && allowed < 120, "a degenerate policy proves nothing ({allowed})");
}

// ------------------------------------------------------------------------------------------------
// 5. Delegated administration.
// ------------------------------------------------------------------------------------------------

#[test]
fn a_delegate_cannot_confer_more_than_it_holds() {
    let c = setup();
    let mut su = c.superuser();
    su.batch_execute(
        "SELECT authz.create_role('usermgr');
         SELECT authz.allow('usermgr', 'authz', 'principals', 'manage');
         SELECT authz.allow('usermgr', 'session', '*', 'read');
         SELECT authz.create_role('rulemgr');
         SELECT authz.allow('rulemgr', 'authz', 'rules', 'manage');
         SELECT authz.create_role('rooter', ARRAY['rulemgr']);
         SELECT authz.create_role('reader');
         SELECT authz.allow('reader', 'session', '*', 'read');
         SELECT authz.create_principal('helper', 'user', 'helper_login');
         SELECT authz.assign_role('helper', 'usermgr');
         SELECT authz.create_principal('admin');
         SELECT authz.assign_role('admin', 'rulemgr');
         SELECT authz.create_principal('admins', 'group');
         SELECT authz.assign_role('admins', 'rulemgr');",
    )
    .unwrap();
    let mut h = c.connect("helper_login");
    // Managing principals is what the delegate may do...
    h.batch_execute("SELECT authz.create_principal('newbie')").unwrap();
    h.batch_execute("SELECT authz.assign_role('newbie', 'reader')").unwrap();
    h.batch_execute("SELECT authz.assign_role('newbie', 'viewer', 'project', '2')").unwrap();
    // ...but never by handing out powers it does not hold, to itself or anyone.
    for sql in [
        "SELECT authz.assign_role('helper', 'rulemgr')",
        "SELECT authz.assign_role('newbie', 'rooter')",
        "SELECT authz.assign_role('newbie', 'editor', 'project', '1')",
        "SELECT authz.add_member('admins', 'helper')",
        "SELECT authz.map_login('admin', 'helper_login')",
        "SELECT authz.map_login('admin', 'mallory')",
        "SELECT authz.create_principal('admin2', 'user', 'olga')",
    ] {
        let r = h.batch_execute(sql);
        assert_eq!(code(r), SqlState::INSUFFICIENT_PRIVILEGE, "{sql}");
    }
    let can: bool = h.query_one("SELECT authz.can_manage('rules')", &[]).unwrap().get(0);
    assert!(!can);
    // The token path is the same: a delegate's token cannot assign itself more either.
    let mut m = c.connect("mallory");
    m.batch_execute(&format!("SET authz.token = '{}'", token("helper"))).unwrap();
    assert_eq!(
        code(m.batch_execute("SELECT authz.assign_role('helper', 'rulemgr')")),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    // Roles delegates: no inheritance towards what they do not hold; nobody but a superuser or
    // authz_admin maps token claims.
    su.batch_execute(
        "SELECT authz.create_role('rolemgr');
         SELECT authz.allow('rolemgr', 'authz', 'roles', 'manage');
         SELECT authz.allow('rolemgr', 'authz', 'principals', 'manage');
         SELECT authz.create_principal('roler');
         SELECT authz.assign_role('roler', 'rolemgr');
         SELECT authz.create_role('contractor');
         SELECT authz.deny('contractor', 'session', '*', 'write');
         SELECT authz.create_principal('contractors', 'group');
         SELECT authz.assign_role('contractors', 'contractor');
         SELECT authz.add_member('contractors', 'roler');
         SELECT authz.assign_role('roler', 'contractor');",
    )
    .unwrap();
    let mut r = c.connect("mallory");
    r.batch_execute(&format!("SET authz.token = '{}'", token("roler"))).unwrap();
    for sql in [
        "SELECT authz.add_inheritance('rolemgr', 'rulemgr')",
        "SELECT authz.create_role('sneaky', ARRAY['rulemgr'])",
        "SELECT authz.map_claim('realm_access.roles')",
        // Removing what carries a deny widens access: the delegate's own deny above all.
        "SELECT authz.remove_member('contractors', 'roler')",
        "SELECT authz.unassign_role('roler', 'contractor')",
        "SELECT authz.drop_principal('contractors')",
        "SELECT authz.remove_inheritance('x', 'contractor')",
    ] {
        assert_eq!(code(r.batch_execute(sql)), SqlState::INSUFFICIENT_PRIVILEGE, "{sql}");
    }
    // A deny on an ancestor type: denied project 2, the delegate does not hold all sessions.
    su.batch_execute(
        "SELECT authz.create_role('usermgr2');
         SELECT authz.allow('usermgr2', 'authz', 'principals', 'manage');
         SELECT authz.allow('usermgr2', 'session', '*', 'read');
         SELECT authz.deny('usermgr2', 'project', '2', 'read');
         SELECT authz.create_principal('helper2');
         SELECT authz.assign_role('helper2', 'usermgr2');",
    )
    .unwrap();
    let mut h2 = c.connect("mallory");
    h2.batch_execute(&format!("SET authz.token = '{}'", token("helper2"))).unwrap();
    assert_eq!(
        code(h2.batch_execute("SELECT authz.assign_role('newbie', 'reader')")),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    // The delegation checks describe what other principals hold: not callable directly.
    for sql in [
        "SELECT authz._require_may_confer_principal('admin')",
        "SELECT authz._require_may_confer('rulemgr', NULL, NULL)",
        "SELECT authz._require_may_map_login('olga', 'admin')",
    ] {
        assert_eq!(code(m.batch_execute(sql)), SqlState::INSUFFICIENT_PRIVILEGE, "{sql}");
    }
    // A superuser still can.
    su.batch_execute("SELECT authz.assign_role('newbie', 'rooter')").unwrap();
}

// ------------------------------------------------------------------------------------------------
// 6. Parallel workers and revocation inside an open transaction.
// ------------------------------------------------------------------------------------------------

fn big_images(c: &Cluster) {
    c.superuser()
        .batch_execute(
            "INSERT INTO images SELECT g, 1 + g % 6, 'big' FROM generate_series(1000, 60000) g;
             ANALYZE images;
             SELECT authz.create_principal('mallory', 'user', 'mallory');
             SELECT authz.assign_role('mallory', 'viewer', 'project', '1');
             SELECT authz.assign_role('mallory', 'viewer', 'project', '2');",
        )
        .unwrap();
}

const FORCE_PARALLEL: &str = "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
     SET min_parallel_table_scan_size = 0; SET min_parallel_index_scan_size = 0;
     SET parallel_leader_participation = off; SET max_parallel_workers_per_gather = 2;
     SET enable_indexscan = off; SET enable_bitmapscan = off; SET plan_cache_mode = force_generic_plan;";

fn count_sessions(m: &mut Client, sql: &str) -> (i64, Vec<i64>) {
    let r = m.query_one(sql, &[]).unwrap();
    (r.get(0), r.get(1))
}

#[test]
fn a_revocation_reaches_parallel_workers_of_an_open_read_only_transaction() {
    let c = setup();
    big_images(&c);
    let mut m = c.connect("mallory");
    m.batch_execute(FORCE_PARALLEL).unwrap();
    let plan: Vec<String> = m
        .query("EXPLAIN SELECT count(*), array_agg(DISTINCT session_id) FROM images", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("Gather")), "not a parallel plan: {plan:?}");
    let sql = "SELECT count(*), array_agg(DISTINCT session_id ORDER BY session_id) FROM images";
    m.batch_execute(&format!("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY; PREPARE q AS {sql}")).unwrap();
    let (_, before) = count_sessions(&mut m, "EXECUTE q");
    assert_eq!(before, vec![1, 2, 3, 4, 5, 6]);
    c.superuser().batch_execute("SELECT authz.unassign_role('mallory', 'viewer', 'project', '2')").unwrap();
    let (_, after) = count_sessions(&mut m, "EXECUTE q");
    assert_eq!(after, vec![1, 2, 5, 6], "workers kept the revoked set");
    // A plain statement, too, in the same transaction.
    let (_, again) = count_sessions(&mut m, sql);
    assert_eq!(again, vec![1, 2, 5, 6]);
    m.batch_execute("COMMIT").unwrap();
}

#[test]
fn an_expired_token_stops_parallel_workers_mid_transaction() {
    let c = setup();
    big_images(&c);
    let mut su = c.superuser();
    su.batch_execute("LOAD 'pg_authz'").unwrap();
    su.batch_execute("ALTER SYSTEM SET authz.leeway_seconds = 0").unwrap();
    su.batch_execute("SELECT pg_reload_conf()").unwrap();
    let mut m = c.connect("mallory");
    m.batch_execute(FORCE_PARALLEL).unwrap();
    let tok = mint("alice", now() + 3);
    m.batch_execute(&format!(
        "BEGIN READ ONLY; SET LOCAL authz.token = '{tok}';
         PREPARE q AS SELECT count(*), array_agg(DISTINCT session_id ORDER BY session_id) FROM images"
    ))
    .unwrap();
    let (_, seen) = count_sessions(&mut m, "EXECUTE q");
    assert_eq!(seen, vec![1, 2, 5, 6]);
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let r = m.query_one("EXECUTE q", &[]);
    assert_eq!(code(r), SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "an expired token still read rows");
}

// ------------------------------------------------------------------------------------------------
// 7. State after an error.
// ------------------------------------------------------------------------------------------------

#[test]
fn a_failed_admin_call_leaves_no_state_behind() {
    let c = setup();
    partition_setup(&c);
    let mut su = c.superuser();
    // Make protect() fail half way: an event trigger that refuses CREATE POLICY.
    su.batch_execute(
        "CREATE TABLE other (id bigint NOT NULL, session_id bigint NOT NULL) PARTITION BY LIST (session_id);
         CREATE TABLE other_1 PARTITION OF other FOR VALUES IN (1);
         CREATE FUNCTION boom() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
         CREATE EVENT TRIGGER boom ON ddl_command_start WHEN TAG IN ('CREATE POLICY') EXECUTE FUNCTION boom();",
    )
    .unwrap();
    assert!(su.batch_execute("SELECT authz.protect('other', 'session_id', 'session')").is_err());
    su.batch_execute("DROP EVENT TRIGGER boom").unwrap();
    // Every admin function, failing, in the same backend.
    for bad in [
        "SELECT authz.create_principal('')",
        "SELECT authz.assign_role('nobody', 'viewer')",
        "SELECT authz.allow('viewer', 'session', 'bad\\', 'read')",
        "SELECT authz.add_key('k', 'none', 'x')",
        "SELECT authz.protect('images', 'no_such_column', 'session')",
        "SELECT authz.unprotect(0)",
        "SELECT authz.restore('images', '1')",
        "SELECT authz.register_resource_type('x y', 'images', 'id')",
        "SELECT authz.import_casbin('p, a')",
        "SELECT authz.login('not-a-token')",
        "SELECT authz.check('nope', '1', 'read')",
    ] {
        assert!(su.batch_execute(bad).is_err(), "{bad} should fail");
    }
    // The same backend then creates a partition of a protected table: it must be protected.
    su.batch_execute("CREATE TABLE events_2 PARTITION OF events FOR VALUES IN (2)").unwrap();
    let policies: i64 =
        su.query_one("SELECT count(*) FROM pg_policy WHERE polrelid = 'events_2'::regclass", &[]).unwrap().get(0);
    assert_eq!(policies, 4, "a partition created after a failed protect() is unprotected");
    // And the protected path answers as before in that backend.
    su.batch_execute(&format!("BEGIN; SET LOCAL authz.token = '{}'", token("alice"))).unwrap();
    su.batch_execute("SET LOCAL ROLE mallory").unwrap();
    assert_eq!(visible(&mut su).unwrap(), (vec![1, 2, 5, 6], 40));
    su.batch_execute("ROLLBACK").unwrap();
}

// ------------------------------------------------------------------------------------------------
// 8. Denial of service by any login.
// ------------------------------------------------------------------------------------------------

#[test]
fn denied_checks_and_forged_tokens_are_logged_once_per_statement_with_a_count() {
    let c = setup();
    let mut m = c.connect("mallory");
    let before = c.log_contents().len();
    m.query("SELECT count(*) FILTER (WHERE authz.check('session', (g % 6 + 1)::text, 'write')) FROM generate_series(1, 20000) g", &[])
        .unwrap();
    m.batch_execute("SELECT 1").unwrap();
    let forged =
        sign(&serde_json::json!({"sub": "alice", "exp": now() + 60}), Some(KID), "wrong-secret-wrong-secret-wrong!!");
    let _ = m.batch_execute(&format!("SET authz.token = '{forged}'"));
    let _ = m.query("SELECT count(*) FROM images", &[]);
    let _ = m.batch_execute("RESET authz.token");
    m.batch_execute("SELECT 1").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = c.log_contents();
    let new = &log[before..];
    let lines: Vec<&str> = new.lines().filter(|l| l.contains("pg_authz audit: ")).collect();
    let decisions: Vec<&&str> = lines.iter().filter(|l| l.contains("\"event\":\"decision\"")).collect();
    assert_eq!(decisions.len(), 1, "one line for 20,000 denied checks");
    assert!(decisions[0].contains("\"count\":20000"), "{}", decisions[0]);
    let rejected: Vec<&&str> = lines.iter().filter(|l| l.contains("token_rejected")).collect();
    assert_eq!(rejected.len(), 1, "one line for one forged token in one statement: {rejected:?}");
}

#[test]
fn a_statement_that_changes_no_row_invalidates_nothing() {
    let c = setup();
    // Autovacuum's statistics updates invalidate relation caches too: keep it out of the count.
    c.superuser().batch_execute("ALTER SYSTEM SET autovacuum = off").unwrap();
    c.superuser().batch_execute("SELECT pg_reload_conf(); GRANT SELECT, UPDATE ON sessions TO mallory").unwrap();
    let mut reader = c.connect("postgres");
    reader.batch_execute("SET ROLE mallory; SELECT count(*) FROM images; RESET ROLE").unwrap();
    let generation = |r: &mut Client| -> i64 {
        r.query_one("SELECT (authz.cache_stats()->>'generation')::bigint", &[]).unwrap().get(0)
    };
    let g0 = generation(&mut reader);
    let mut m = c.connect("mallory");
    // sessions is not protected (it is a resource table): UPDATE with no matching row, and an
    // update the caller cannot make on a protected table (images: no row passes its policy).
    m.batch_execute("UPDATE sessions SET project_id = project_id WHERE false").unwrap();
    m.batch_execute("UPDATE images SET label = label").unwrap();
    reader.batch_execute("SELECT 1").unwrap();
    assert_eq!(generation(&mut reader), g0, "a statement that changed no row flushed another backend's caches");
    // A real change still does (one that leaves every column authorization reads as it was is
    // no change: tests/freshness.rs).
    c.superuser().batch_execute("UPDATE sessions SET project_id = 2 WHERE id = 1").unwrap();
    reader.batch_execute("SELECT 1").unwrap();
    assert!(generation(&mut reader) > g0, "a changed row must invalidate");
}

// ------------------------------------------------------------------------------------------------
// 9. Internal errors and identity oddities.
// ------------------------------------------------------------------------------------------------

#[test]
fn no_internal_error_is_reachable_and_groups_are_never_an_identity() {
    let c = setup();
    let mut su = c.superuser();
    for sql in [
        "SELECT authz.protect(999999::oid::regclass, 'id', 'session')",
        "SELECT authz.protect_sql(999999::oid::regclass, 'id', 'session')",
        "SELECT authz.unprotect(999999::oid::regclass)",
        "SELECT authz.restore(999999::oid::regclass, '1')",
    ] {
        let e = code(su.batch_execute(sql));
        assert!(e == SqlState::UNDEFINED_TABLE || e == SqlState::INVALID_PARAMETER_VALUE, "{sql}: {e:?}");
    }
    su.batch_execute(
        "SELECT authz.create_principal('staff', 'group');
         SELECT authz.assign_role('staff', 'viewer');",
    )
    .unwrap();
    let mut m = c.connect("mallory");
    for sub in ["staff", "al\u{0}ice", "alice\n", "ali\u{1b}ce"] {
        let t = sign(&serde_json::json!({"sub": sub, "exp": now() + 60}), Some(KID), SECRET);
        let r = m.query_one("SELECT authz.verify_token($1)", &[&t]);
        assert_eq!(code(r), SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "sub {sub:?}");
        m.batch_execute(&format!("SET authz.token = '{t}'")).unwrap();
        assert_eq!(code(m.query("SELECT count(*) FROM images", &[])), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        m.batch_execute("RESET authz.token").unwrap();
    }
    // A login mapped to a group principal is not that group either.
    su.batch_execute("SELECT authz.map_login('staff', 'mallory')").unwrap_err();
}
