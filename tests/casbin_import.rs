//! Virtual resource types (free-string ids, no table) and Casbin policy lines that keep the
//! meaning they have in Casbin: `?` and `\` are literal in keyMatch objects, a user with p lines
//! of its own (or named as a g target) keeps them, and the built-in roles are not imported by
//! accident.
mod common;

use common::*;

/// The decision explain() reports for a principal.
fn decide(su: &mut Client, principal: &str, rt: &str, id: &str, action: &str) -> bool {
    let outcome: String = su
        .query_one("SELECT outcome FROM authz.explain($1, $2, $3, $4) LIMIT 1", &[&principal, &rt, &id, &action])
        .unwrap()
        .get(0);
    outcome == "allow"
}

#[test]
fn a_virtual_type_answers_check_require_and_explain_and_is_never_listed() {
    let c = Cluster::start();
    c.create_login("eve");
    let mut su = c.superuser();
    su.batch_execute(
        "SELECT authz.register_resource_type('route');
         SELECT authz.create_role('api');
         SELECT authz.allow('api', 'route', '/v1/*', 'GET');
         SELECT authz.deny('api', 'route', '/v1/admin*', '*');
         SELECT authz.create_principal('eve', 'user', 'eve');
         SELECT authz.assign_role('eve', 'api');",
    )
    .unwrap();
    let mut eve = c.connect("eve");
    let check = |eve: &mut Client, id: &str, action: &str| -> bool {
        eve.query_one("SELECT authz.check('route', $1, $2)", &[&id, &action]).unwrap().get(0)
    };
    assert!(check(&mut eve, "/v1/users", "GET"));
    assert!(!check(&mut eve, "/v1/users", "POST"));
    assert!(!check(&mut eve, "/v1/admin/keys", "GET"));
    assert!(!check(&mut eve, "/v2/users", "GET"));
    assert_eq!(
        code(eve.batch_execute("SELECT authz.require('route', '/v2/x', 'GET')")),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    assert!(decide(&mut su, "eve", "route", "/v1/a", "GET"));
    // Its ids cannot be listed, and no table can be protected by it.
    assert_eq!(
        code(eve.query_one("SELECT authz.permitted_ids('route', 'GET')", &[])),
        SqlState::INVALID_PARAMETER_VALUE
    );
    su.batch_execute("CREATE TABLE hits (route text NOT NULL)").unwrap();
    assert_eq!(
        code(su.batch_execute("SELECT authz.protect('hits', 'route', 'route')")),
        SqlState::INVALID_PARAMETER_VALUE
    );
    // A virtual type takes no columns.
    assert_eq!(
        code(su.batch_execute("SELECT authz.register_resource_type('r2', owner_column => 'x')")),
        SqlState::INVALID_PARAMETER_VALUE
    );
}

#[test]
fn casbin_lines_keep_their_casbin_meaning() {
    let c = Cluster::start();
    let mut su = c.superuser();
    su.batch_execute(
        "SELECT authz.register_resource_type('doc');
         SELECT authz.create_principal('alice');
         SELECT authz.create_principal('carol');",
    )
    .unwrap();
    su.execute(
        "SELECT authz.import_casbin($1)",
        &[&"p, reader, doc:a?c, read
p, reader, doc:x\\*, read
g, carol, reader
p, alice, doc:1, read
g, bob, alice"],
    )
    .unwrap();
    // `?` and `\` are literal, as in Casbin's keyMatch.
    assert!(decide(&mut su, "carol", "doc", "a?c", "read"));
    assert!(!decide(&mut su, "carol", "doc", "abc", "read"));
    assert!(decide(&mut su, "carol", "doc", "x\\anything", "read"));
    assert!(!decide(&mut su, "carol", "doc", "x", "read"));
    // alice has p lines of her own and is a g target: she keeps them, and bob inherits them.
    assert!(decide(&mut su, "alice", "doc", "1", "read"));
    assert!(decide(&mut su, "bob", "doc", "1", "read"));
    assert!(!decide(&mut su, "carol", "doc", "1", "read"));

    // The built-in roles only on purpose.
    for line in ["p, authenticated, doc:*, read", "p, anonymous, doc:*, read", "g, dave, owner"] {
        assert_eq!(
            code(su.execute("SELECT authz.import_casbin($1)", &[&line])),
            SqlState::INVALID_PARAMETER_VALUE,
            "{line}"
        );
    }
    su.execute(
        "SELECT authz.import_casbin($1)",
        &[&"# pg_authz: allow-builtin-roles\np, authenticated, doc:pub-*, read"],
    )
    .unwrap();
    assert!(decide(&mut su, "carol", "doc", "pub-1", "read"));
}
