//! `ALTER EXTENSION pg_authz UPDATE`: policy data and enforcement survive, and the upgraded schema
//! is exactly what a fresh install of the new version creates.
mod common;

use common::*;

/// Everything a schema comparison should see: functions (with security, volatility, parallel
/// safety, settings and grants), tables and columns, triggers on pg_authz's tables, event triggers.
const SCHEMA: &str = "
    SELECT 'function ' || p.oid::regprocedure::text || ' ' || p.prosecdef || ' ' || p.provolatile::text || ' '
           || p.proparallel::text || ' ' || coalesce(p.proconfig::text, '') || ' ' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(p.proacl) a), '')
           || ' ' || l.lanname || ' ' || md5(p.prosrc) || ' ' || coalesce(p.probin, '')
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = 'authz'::regnamespace
    UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relnamespace = 'authz'::regnamespace
    UNION ALL
    SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '')
    FROM pg_class c WHERE c.relnamespace = 'authz'::regnamespace AND c.relkind IN ('r', 'v')
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'authz'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'event trigger ' || evtname::text || ' ' || evtevent || ' ' || evtfoid::regproc::text FROM pg_event_trigger
    ORDER BY 1";

fn schema(client: &mut Client) -> Vec<String> {
    client.query(SCHEMA, &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

fn policy_data(client: &mut Client) -> Vec<String> {
    client
        .query(
            "SELECT 'principals ' || count(*) FROM authz.principals
             UNION ALL SELECT 'memberships ' || count(*) FROM authz.memberships
             UNION ALL SELECT 'roles ' || string_agg(name, ',' ORDER BY name) FROM authz.roles
             UNION ALL SELECT 'assignments ' || string_agg(principal || ':' || role || ':' || coalesce(resource_id, '*'), ',' ORDER BY 1) FROM authz.role_assignments
             UNION ALL SELECT 'rules ' || string_agg(role || ' ' || resource_type || ':' || pattern || ' ' || action || ' ' || effect, ',' ORDER BY 1) FROM authz.rules
             UNION ALL SELECT 'keys ' || string_agg(kid || ' ' || alg, ',') FROM authz.keys
             UNION ALL SELECT 'protected ' || string_agg(tbl::text, ',' ORDER BY 1) FROM authz.protected
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn policy_data_and_enforcement_survive_alter_extension_update() {
    let c = Cluster::start();
    let mut su = c.superuser();
    let current: String = su
        .query_one("SELECT default_version FROM pg_available_extensions WHERE name = 'pg_authz'", &[])
        .unwrap()
        .get(0);
    su.batch_execute("DROP EXTENSION pg_authz CASCADE; CREATE EXTENSION pg_authz VERSION '0.1.0'").unwrap();
    c.create_login("app");
    c.add_test_key();
    fixture(&c, &["app"]);
    su.batch_execute("SELECT authz.create_principal('team', 'group'); SELECT authz.add_member('team', 'bob'); SELECT authz.deny('viewer', 'session', '4', 'read')")
        .unwrap();
    let (alice, bob) = (token("alice"), token("bob"));
    let seen = |who: &str| -> (Vec<i64>, i64) {
        let mut app = c.connect("app");
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL authz.token = '{who}'")).unwrap();
        let v = visible(&mut tx).unwrap();
        tx.commit().unwrap();
        v
    };
    let before = (seen(&alice), seen(&bob), policy_data(&mut su));
    assert_eq!(before.0, (vec![1, 2, 5, 6], 40));
    assert_eq!(before.1, (vec![3, 5, 6], 30));

    // Every release in turn: 0.1.0 -> 0.2.0 -> the current one.
    su.batch_execute("ALTER EXTENSION pg_authz UPDATE TO '0.2.0'").unwrap();
    assert_eq!(policy_data(&mut su), before.2);
    assert_eq!(seen(&alice), before.0);
    su.batch_execute("ALTER EXTENSION pg_authz UPDATE").unwrap();
    let version: String =
        su.query_one("SELECT extversion FROM pg_extension WHERE extname = 'pg_authz'", &[]).unwrap().get(0);
    assert_eq!(version, current);
    assert_ne!(version, "0.2.0", "the test needs a newer default version to upgrade to");

    // Data and enforcement are unchanged, from an existing and from a new connection.
    assert_eq!(policy_data(&mut su), before.2);
    assert_eq!(seen(&alice), before.0);
    assert_eq!(seen(&bob), before.1);
    // What the new version added works on the upgraded install.
    let uid: String = su.query_one("SELECT authz.verify_token($1)", &[&alice]).unwrap().get(0);
    assert_eq!(uid, "alice");

    // The protected table's policies and triggers are what the current version renders, and the
    // resource tables' invalidation triggers are the current ones.
    let app_objects = |su: &mut Client| -> Vec<String> {
        su.query(
            "SELECT 'policy ' || polname || ' ' || coalesce(pg_get_expr(polqual, polrelid), '') || ' '
                    || coalesce(pg_get_expr(polwithcheck, polrelid), '')
             FROM pg_policy WHERE polrelid = 'images'::regclass
             UNION ALL
             SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger
             WHERE tgrelid IN ('images'::regclass, 'sessions'::regclass, 'projects'::regclass) AND NOT tgisinternal
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let upgraded_objects = app_objects(&mut su);
    assert!(upgraded_objects.iter().any(|l| l.contains("OPERATOR(pg_catalog.") || l.contains("authz.permits")));
    assert!(upgraded_objects.iter().any(|l| l.contains("FOR EACH ROW EXECUTE FUNCTION authz.invalidate_caches()")));
    su.batch_execute(
        "SELECT authz.protect('images', 'session_id', 'session');
         SELECT authz.register_resource_type('project', 'projects', 'id', public_column => 'public');
         SELECT authz.register_resource_type('session', 'sessions', 'id', 'project', 'project_id');",
    )
    .unwrap();
    assert_eq!(upgraded_objects, app_objects(&mut su), "the upgrade did not re-render what 0.3.0 installs");

    // The upgraded schema is exactly a fresh install's.
    su.batch_execute("CREATE DATABASE fresh").unwrap();
    let mut cfg = c.config("postgres");
    cfg.dbname("fresh");
    let mut fresh = cfg.connect(NoTls).unwrap();
    fresh.batch_execute("CREATE EXTENSION pg_authz").unwrap();
    let (upgraded, installed) = (schema(&mut su), schema(&mut fresh));
    let only_upgraded: Vec<_> = upgraded.iter().filter(|l| !installed.contains(l)).collect();
    let only_fresh: Vec<_> = installed.iter().filter(|l| !upgraded.contains(l)).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "upgrade differs from a fresh install:\n  only upgraded: {only_upgraded:#?}\n  only fresh: {only_fresh:#?}"
    );
}
