//! `authz.import_casbin(policy, model, resource_type, replace)` and `authz.enforce()`: imported
//! rules are native rules (authz.rules, check, require, explain, row-level security), imports are
//! all or nothing, replace takes back what earlier imports created, what cannot be mapped is
//! refused by name, and an import grants nothing its caller could not grant call by call.
mod common;

use common::*;

const KEYMATCH2_MODEL: &str = "[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && keyMatch2(r.obj, p.obj) && r.act == p.act
";

/// The model with another matcher (and no g unless the matcher uses it).
fn model_with_matcher(matcher: &str) -> String {
    let m = KEYMATCH2_MODEL.replace("g(r.sub, p.sub) && keyMatch2(r.obj, p.obj) && r.act == p.act", matcher);
    if matcher.contains("g(") {
        m
    } else {
        m.replace("[role_definition]\ng = _, _\n\n", "")
    }
}

fn import(client: &mut Client, policy: &str, model: &str, resource_type: &str) -> Result<i32, postgres::Error> {
    client.query_one("SELECT authz.import_casbin($1, $2, $3)", &[&policy, &model, &resource_type]).map(|r| r.get(0))
}

fn message(r: Result<impl std::fmt::Debug, postgres::Error>) -> (SqlState, String) {
    let e = r.expect_err("expected an error");
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a database error: {e:?}"));
    (db.code().clone(), format!("{} {}", db.message(), db.detail().unwrap_or("")))
}

fn enforce(client: &mut Client, request: &[&str]) -> Result<bool, postgres::Error> {
    let values: Vec<String> = request.iter().map(|s| s.to_string()).collect();
    client.query_one("SELECT authz.enforce(VARIADIC $1::text[])", &[&values]).map(|r| r.get(0))
}

#[test]
fn imported_rules_are_native_rules_down_to_row_level_security() {
    let c = Cluster::start();
    c.create_login("alice");
    c.create_login("bob");
    let mut su = c.superuser();
    su.batch_execute(
        "CREATE TABLE docs (id text PRIMARY KEY);
         INSERT INTO docs VALUES ('/docs/1'), ('/docs/2'), ('/docs/2/draft'), ('/other/1');
         CREATE TABLE pages (id int PRIMARY KEY, doc_id text NOT NULL REFERENCES docs);
         INSERT INTO pages SELECT g, (ARRAY['/docs/1', '/docs/2', '/docs/2/draft', '/other/1'])[1 + g % 4] FROM generate_series(1, 20) g;
         GRANT SELECT ON pages TO alice, bob;
         SELECT authz.register_resource_type('doc', 'docs', 'id');
         SELECT authz.protect('pages', 'doc_id', 'doc');
         SELECT authz.create_principal('alice', 'user', 'alice');
         SELECT authz.create_principal('bob', 'user', 'bob');",
    )
    .unwrap();
    import(&mut su, "p, reader, /docs/:id, read\ng, alice, reader\np, bob, /other/*, read\n", KEYMATCH2_MODEL, "doc")
        .unwrap();
    // The rules are ordinary rules, with Casbin's function kept in the pattern.
    let rules: Vec<String> = su
        .query("SELECT role || ' ' || pattern || ' ' || action || ' ' || effect FROM authz.rules WHERE resource_type = 'doc' ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rules, vec!["bob keyMatch2(/other/*) read allow", "reader keyMatch2(/docs/:id) read allow"]);
    // Row-level security: alice sees the pages of /docs/1 and /docs/2 (not /docs/2/draft).
    let mut alice = c.connect("alice");
    let seen: Vec<String> =
        alice.query("SELECT DISTINCT doc_id FROM pages ORDER BY 1", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(seen, vec!["/docs/1", "/docs/2"]);
    let mut bob = c.connect("bob");
    let n: i64 = bob.query_one("SELECT count(*) FROM pages WHERE doc_id <> '/other/1'", &[]).unwrap().get(0);
    assert_eq!(n, 0);
    // check(), require(), explain() and enforce() agree.
    let check: bool = alice.query_one("SELECT authz.check('doc', '/docs/2', 'read')", &[]).unwrap().get(0);
    assert!(check);
    assert_eq!(
        code(alice.batch_execute("SELECT authz.require('doc', '/docs/2/draft', 'read')")),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    let via: String =
        su.query_one("SELECT rule FROM authz.explain('alice', 'doc', '/docs/1', 'read') LIMIT 1", &[]).unwrap().get(0);
    assert!(via.contains("keyMatch2(/docs/:id)"), "{via}");
    assert!(enforce(&mut alice, &["alice", "/docs/1", "read"]).unwrap());
    assert!(!enforce(&mut alice, &["alice", "/docs/1", "write"]).unwrap());
    assert!(enforce(&mut su, &["bob", "/other/1", "read"]).unwrap());
    // Others may ask only for themselves; superusers for anyone.
    assert_eq!(code(enforce(&mut alice, &["bob", "/other/1", "read"])), SqlState::INSUFFICIENT_PRIVILEGE);
    // The model's request definition fixes the number of values.
    let (state, text) = message(enforce(&mut su, &["alice", "/docs/1"]));
    assert_eq!(state, SqlState::INVALID_PARAMETER_VALUE);
    assert!(text.contains("r = sub, obj, act"), "{text}");
}

#[test]
fn enforce_without_an_imported_model_says_so() {
    let c = Cluster::start();
    let mut su = c.superuser();
    assert_eq!(code(enforce(&mut su, &["alice", "data1", "read"])), SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
}

#[test]
fn what_cannot_be_mapped_is_refused_by_name_and_nothing_is_imported() {
    let c = Cluster::start();
    let mut su = c.superuser();
    su.batch_execute("SELECT authz.register_resource_type('obj')").unwrap();
    let rules = |su: &mut Client| -> i64 { su.query_one("SELECT count(*) FROM authz.rules", &[]).unwrap().get(0) };
    let before = rules(&mut su);
    let refused = [
        ("r.sub == p.sub && r.obj == p.obj && r.act == p.act && r.sub.Age > 18", ">"),
        ("r.sub == p.sub && keyMatch4(r.obj, p.obj) && r.act == p.act", "keyMatch4"),
        ("r.sub == p.sub && r.obj == p.obj && regexMatch(r.act, p.act)", "regexMatch(r.act, p.act)"),
        ("r.sub == p.sub || r.obj == p.obj && r.act == p.act", "||"),
        ("r.sub == p.sub && r.obj == p.obj", "action"),
        ("g(r.sub, p.sub) && r.obj == p.obj && r.act != p.act", "!="),
    ];
    for (matcher, named) in refused {
        let (state, text) = message(import(&mut su, "p, alice, data1, read", &model_with_matcher(matcher), "obj"));
        assert_eq!(state, SqlState::INVALID_PARAMETER_VALUE, "{matcher}");
        assert!(text.contains(named), "{matcher}: {text}");
    }
    let abac_effect = KEYMATCH2_MODEL.replace("some(where (p.eft == allow))", "some(where (p.eft == allow)) || true");
    assert_eq!(code(import(&mut su, "p, a, b, c", &abac_effect, "obj")), SqlState::INVALID_PARAMETER_VALUE);
    // Priority is decided per (subject, object, action): patterns cannot be.
    let priority = KEYMATCH2_MODEL
        .replace("p = sub, obj, act", "p = sub, obj, act, eft")
        .replace("some(where (p.eft == allow))", "priority(p.eft) || deny");
    assert_eq!(code(import(&mut su, "p, a, /x, c, allow", &priority, "obj")), SqlState::INVALID_PARAMETER_VALUE);
    // A bad line names its number; the good lines before it are not imported either.
    let regex = model_with_matcher("g(r.sub, p.sub) && regexMatch(r.obj, p.obj) && r.act == p.act");
    let (state, text) = message(import(&mut su, "p, alice, ^/a, GET\np, alice, /x/(?=y), GET", &regex, "obj"));
    assert_eq!(state, SqlState::INVALID_PARAMETER_VALUE);
    assert!(text.contains("line 2"), "{text}");
    // The built-in roles only on purpose.
    let (state, text) = message(import(&mut su, "p, authenticated, /a, GET", KEYMATCH2_MODEL, "obj"));
    assert_eq!(state, SqlState::INVALID_PARAMETER_VALUE);
    assert!(text.contains("authenticated"), "{text}");
    // Unknown resource type, object without a type.
    assert_eq!(code(import(&mut su, "p, a, /a, GET", KEYMATCH2_MODEL, "nope")), SqlState::INVALID_PARAMETER_VALUE);
    assert_eq!(
        code(su.query_one("SELECT authz.import_casbin('p, a, /a, GET', $1)", &[&KEYMATCH2_MODEL])),
        SqlState::INVALID_PARAMETER_VALUE
    );
    assert_eq!(rules(&mut su), before, "a refused import changed the rules");
    // Native patterns that look like Casbin's are refused unless escaped.
    su.batch_execute("SELECT authz.create_role('r')").unwrap();
    assert_eq!(
        code(su.batch_execute("SELECT authz.allow('r', 'obj', 'keyMatch2(/a', 'read')")),
        SqlState::INVALID_PARAMETER_VALUE
    );
    su.batch_execute("SELECT authz.allow('r', 'obj', '\\keyMatch2(/a', 'read')").unwrap();
    // Regular expressions that Python and the regex crate would read differently are refused.
    for pattern in ["regexMatch(a\\z)", "regexMatch((?=a))", "regexMatch(\\1)", "regexMatch(a{)", "keyMatch2(/a/{x})"] {
        assert_eq!(
            code(su.execute("SELECT authz.allow('r', 'obj', $1, 'read')", &[&pattern])),
            SqlState::INVALID_PARAMETER_VALUE,
            "{pattern}"
        );
    }
}

#[test]
fn replace_takes_back_what_earlier_imports_created_and_only_that() {
    let c = Cluster::start();
    let mut su = c.superuser();
    let acl = model_with_matcher("r.sub == p.sub && r.obj == p.obj && r.act == p.act");
    su.batch_execute(
        "SELECT authz.register_resource_type('obj');
         SELECT authz.create_role('native');
         SELECT authz.allow('native', 'obj', 'data9', 'read');",
    )
    .unwrap();
    import(&mut su, "p, alice, data1, read\np, native, data9, read", &acl, "obj").unwrap();
    assert!(enforce(&mut su, &["alice", "data1", "read"]).unwrap());
    // Without replace, an import only adds.
    import(&mut su, "p, bob, data2, read", &acl, "obj").unwrap();
    assert!(enforce(&mut su, &["alice", "data1", "read"]).unwrap());
    assert!(enforce(&mut su, &["bob", "data2", "read"]).unwrap());
    // With replace, the file is the whole truth for what imports created: alice's and bob's
    // rules go, the native rule that existed before stays.
    su.execute("SELECT authz.import_casbin($1, $2, 'obj', replace => true)", &[&"p, carol, data3, read", &acl])
        .unwrap();
    assert!(!enforce(&mut su, &["alice", "data1", "read"]).unwrap());
    assert!(!enforce(&mut su, &["bob", "data2", "read"]).unwrap());
    assert!(enforce(&mut su, &["carol", "data3", "read"]).unwrap());
    let native: i64 = su
        .query_one("SELECT count(*) FROM authz.rules WHERE role = 'native' AND pattern = 'data9'", &[])
        .unwrap()
        .get(0);
    assert_eq!(native, 1);
    // The one-argument form keeps today's meaning and is recorded too.
    su.execute("SELECT authz.import_casbin('p, dave, obj:data4, read')", &[]).unwrap();
    let imported: i64 = su.query_one("SELECT count(*) FROM authz.casbin_imported", &[]).unwrap().get(0);
    assert!(imported >= 3, "{imported}");
}

#[test]
fn a_delegate_imports_no_more_than_it_could_grant_call_by_call() {
    let c = Cluster::start();
    c.create_login("deleg");
    let mut su = c.superuser();
    su.batch_execute(
        "SELECT authz.register_resource_type('obj');
         SELECT authz.create_role('admin');
         SELECT authz.allow('admin', 'authz', '*', 'manage');
         SELECT authz.create_principal('deleg', 'user', 'deleg');
         SELECT authz.assign_role('deleg', 'admin');",
    )
    .unwrap();
    let rbac = model_with_matcher("g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act");
    let mut deleg = c.connect("deleg");
    // Handing bob a role that reads data1, which the delegate cannot read itself: refused, and
    // nothing of the file stays.
    assert_eq!(
        code(import(&mut deleg, "p, reader, data1, read\ng, bob, reader", &rbac, "obj")),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    let n: i64 = su.query_one("SELECT count(*) FROM authz.rules WHERE role = 'reader'", &[]).unwrap().get(0);
    assert_eq!(n, 0);
    // A caller who may not manage rules cannot import at all.
    c.create_login("nobody");
    let mut nobody = c.connect("nobody");
    assert_eq!(code(import(&mut nobody, "p, a, b, c", &rbac, "obj")), SqlState::INSUFFICIENT_PRIVILEGE);
}

#[test]
fn domains_map_to_qualified_roles_and_ids() {
    let c = Cluster::start();
    let mut su = c.superuser();
    su.batch_execute("SELECT authz.register_resource_type('obj')").unwrap();
    let model = "[request_definition]
r = sub, dom, obj, act
[policy_definition]
p = sub, dom, obj, act
[role_definition]
g = _, _, _
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = g(r.sub, p.sub, r.dom) && r.dom == p.dom && keyMatch2(r.obj, p.obj) && r.act == p.act
";
    import(&mut su, "p, admin, tenant1, /data/:id, read\ng, alice, admin, tenant1", model, "obj").unwrap();
    assert!(enforce(&mut su, &["alice", "tenant1", "/data/1", "read"]).unwrap());
    assert!(!enforce(&mut su, &["alice", "tenant2", "/data/1", "read"]).unwrap());
    // The same decision through check(): role tenant1::admin, id tenant1::/data/1.
    let pattern: String =
        su.query_one("SELECT pattern FROM authz.rules WHERE role = 'tenant1::admin'", &[]).unwrap().get(0);
    assert_eq!(pattern, "domain(tenant1)keyMatch2(/data/:id)");
    let allowed: String = su
        .query_one("SELECT outcome FROM authz.explain('alice', 'obj', 'tenant1::/data/7', 'read') LIMIT 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(allowed, "allow");
    // A domain with the separator in it is refused.
    assert_eq!(code(import(&mut su, "p, admin, a::b, /x, read", model, "obj")), SqlState::INVALID_PARAMETER_VALUE);
}
