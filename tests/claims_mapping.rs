//! Roles and groups from the identity provider's token (`authz.map_claim()`): Keycloak, Auth0 and
//! Entra ID put them in the token, and a subject needs no principal row to hold them for the life
//! of that token.
mod common;

use common::*;

fn setup() -> Cluster {
    let c = platform(&["app"]);
    c.superuser()
        .batch_execute(
            "SELECT authz.create_principal('team', 'group');
             SELECT authz.assign_role('team', 'viewer', 'project', '2');
             SELECT authz.create_role('kc-editor', ARRAY['editor']);
             SELECT authz.deny('viewer', 'session', '4', 'read');",
        )
        .unwrap();
    c
}

/// What a token holder sees: the sessions of the images it may read, and how many images.
fn seen(c: &Cluster, claims: serde_json::Value) -> Result<(Vec<i64>, i64), postgres::Error> {
    let tok = sign(&claims, Some(KID), SECRET);
    let mut app = c.connect("app");
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL authz.token = '{tok}'"))?;
    let v = visible(&mut tx)?;
    tx.commit().unwrap();
    Ok(v)
}

fn keycloak(sub: &str, roles: &[&str], groups: &[&str], iss: &str) -> serde_json::Value {
    serde_json::json!({
        "sub": sub, "exp": now() + 3600, "iss": iss,
        "realm_access": {"roles": roles},
        "groups": groups,
    })
}

const PUBLIC_ONLY: (&[i64], i64) = (&[5, 6], 20);

#[test]
fn realm_roles_from_an_unprovisioned_token_grant_what_the_role_may_do() {
    let c = setup();
    let t = keycloak("kc-0001", &["viewer", "offline_access", "uma_authorization"], &[], "https://idp-a");
    // Without a mapping the token's roles mean nothing: public sessions only.
    let (s, n) = seen(&c, t.clone()).unwrap();
    assert_eq!((s.as_slice(), n), PUBLIC_ONLY);
    c.superuser().batch_execute("SELECT authz.map_claim('realm_access.roles')").unwrap();
    // viewer reads every session but 4 (deny beats allow for a claim-held role too).
    assert_eq!(seen(&c, t.clone()).unwrap(), (vec![1, 2, 3, 5, 6], 50));
    // A prefix maps IdP role names onto pg_authz roles.
    c.superuser().batch_execute("SELECT authz.map_claim('roles', 'role', 'kc-')").unwrap();
    let mut auth0 = keycloak("auth0|42", &[], &[], "https://idp-a");
    auth0["roles"] = serde_json::json!(["editor"]);
    let mut su = c.superuser();
    let writable: Vec<String> = {
        let tok = sign(&auth0, Some(KID), SECRET);
        let mut tx = su.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL authz.token = '{tok}'")).unwrap();
        let ids: Vec<String> = tx.query_one("SELECT authz.permitted_ids('session', 'write')", &[]).unwrap().get(0);
        // explain() says where the role came from.
        let via: Vec<String> = tx
            .query("SELECT granted_via FROM authz.explain('auth0|42', 'session', '1', 'write') WHERE granted_via IS NOT NULL", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(via.iter().any(|v| v.contains("claim roles")), "{via:?}");
        tx.commit().unwrap();
        ids
    };
    assert_eq!(writable, vec!["1", "2", "3", "4", "5", "6"]);
    // Unknown names are ignored; a scalar claim works like a one-element array (kc-editor
    // inherits editor and viewer, so viewer's deny on session 4 holds here too).
    let mut odd = keycloak("kc-0002", &["no-such-role"], &[], "https://idp-a");
    odd["roles"] = serde_json::json!("editor");
    assert_eq!(seen(&c, odd).unwrap(), (vec![1, 2, 3, 5, 6], 50));
    // Removing the mapping takes effect on the next statement of an open connection.
    let tok = sign(&t, Some(KID), SECRET);
    let mut app = c.connect("app");
    app.batch_execute(&format!("SET authz.token = '{tok}'")).unwrap();
    assert_eq!(visible(&mut app).unwrap().1, 50);
    c.superuser().batch_execute("SELECT authz.unmap_claim('realm_access.roles')").unwrap();
    assert_eq!(visible(&mut app).unwrap().1, 20);
}

#[test]
fn group_claims_give_the_groups_scoped_grants_and_issuers_are_kept_apart() {
    let c = setup();
    let mut su = c.superuser();
    su.batch_execute("SELECT authz.map_claim('groups', 'group', issuer => 'https://idp-a')").unwrap();
    // team holds viewer on project 2: sessions 3 and 4, but viewer is denied 4.
    let a = keycloak("kc-0003", &[], &["team", "no-such-group"], "https://idp-a");
    assert_eq!(seen(&c, a).unwrap(), (vec![3, 5, 6], 30));
    // The same claim from another issuer is ignored.
    let b = keycloak("kc-0003", &[], &["team"], "https://idp-b");
    let (s, n) = seen(&c, b).unwrap();
    assert_eq!((s.as_slice(), n), PUBLIC_ONLY);
    // A claimed name that is a user principal, not a group, confers nothing.
    su.batch_execute("SELECT authz.assign_role('alice', 'viewer')").unwrap();
    let sneaky = keycloak("kc-0004", &[], &["alice"], "https://idp-a");
    let (s, n) = seen(&c, sneaky).unwrap();
    assert_eq!((s.as_slice(), n), PUBLIC_ONLY);
    // A claim never confers a built-in role (owner holds rules on every owned row; here, all).
    su.batch_execute(
        "SELECT authz.allow('owner', 'session', '*', 'read'); SELECT authz.map_claim('realm_access.roles')",
    )
    .unwrap();
    let owner = keycloak("kc-0005", &["owner", "authenticated"], &[], "https://idp-a");
    let (s, n) = seen(&c, owner).unwrap();
    assert_eq!((s.as_slice(), n), PUBLIC_ONLY);
    // Bad arguments are 22023; a delegate without roles management is 42501.
    for bad in
        ["SELECT authz.map_claim('')", "SELECT authz.map_claim('a..b')", "SELECT authz.map_claim('groups', 'team')"]
    {
        assert_eq!(code(su.batch_execute(bad)), SqlState::INVALID_PARAMETER_VALUE, "{bad}");
    }
    c.create_login("nobody");
    let mut nobody = c.connect("nobody");
    assert_eq!(
        code(nobody.batch_execute("SELECT authz.map_claim('groups', 'group')")),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
}
