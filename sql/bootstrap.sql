-- pg_authz policy tables. Nothing here is readable or writable by PUBLIC: every change goes
-- through the authz.* functions, which check the caller's right to manage first.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authz_admin') THEN
        CREATE ROLE authz_admin NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA authz TO PUBLIC;

CREATE TABLE authz.principals (
    id         text PRIMARY KEY CHECK (id <> ''),
    kind       text NOT NULL DEFAULT 'user' CHECK (kind IN ('user', 'group')),
    db_role    name UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE authz.memberships (
    group_id  text NOT NULL REFERENCES authz.principals (id) ON DELETE CASCADE,
    member_id text NOT NULL REFERENCES authz.principals (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, member_id),
    CHECK (group_id <> member_id)
);
CREATE INDEX ON authz.memberships (member_id);

CREATE TABLE authz.roles (
    name    text PRIMARY KEY CHECK (name <> ''),
    builtin boolean NOT NULL DEFAULT false
);

CREATE TABLE authz.role_inheritance (
    role     text NOT NULL REFERENCES authz.roles (name) ON DELETE CASCADE,
    inherits text NOT NULL REFERENCES authz.roles (name) ON DELETE CASCADE,
    PRIMARY KEY (role, inherits),
    CHECK (role <> inherits)
);

-- Resource types are registered over the application's own tables; pg_authz keeps no copy.
-- The built-in type 'authz' (no table) is what "managing pg_authz" is a permission on.
CREATE TABLE authz.resource_types (
    name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]*$'),
    tbl           regclass,
    id_column     name,
    parent_type   text REFERENCES authz.resource_types (name),
    parent_column name,
    public_column name,
    owner_column  name,
    CHECK ((tbl IS NULL) = (id_column IS NULL)),
    CHECK ((parent_type IS NULL) = (parent_column IS NULL))
);

CREATE TABLE authz.role_assignments (
    id            bigserial PRIMARY KEY,
    principal     text NOT NULL REFERENCES authz.principals (id) ON DELETE CASCADE,
    role          text NOT NULL REFERENCES authz.roles (name) ON DELETE CASCADE,
    resource_type text REFERENCES authz.resource_types (name) ON DELETE CASCADE,
    resource_id   text,
    CHECK ((resource_type IS NULL) = (resource_id IS NULL))
);
CREATE UNIQUE INDEX role_assignments_unique ON authz.role_assignments
    (principal, role, coalesce(resource_type, ''), coalesce(resource_id, ''));

CREATE TABLE authz.rules (
    id            bigserial PRIMARY KEY,
    role          text NOT NULL REFERENCES authz.roles (name) ON DELETE CASCADE,
    resource_type text NOT NULL REFERENCES authz.resource_types (name) ON DELETE CASCADE,
    pattern       text NOT NULL CHECK (pattern <> ''),
    action        text NOT NULL CHECK (action <> ''),
    effect        text NOT NULL CHECK (effect IN ('allow', 'deny')),
    UNIQUE (role, resource_type, pattern, action, effect)
);

-- Verification keys. Key material never leaves this table: not through a view, not in the audit.
CREATE TABLE authz.keys (
    kid        text PRIMARY KEY CHECK (kid <> '' AND length(kid) <= 256),
    alg        text NOT NULL,
    key_format text NOT NULL CHECK (key_format IN ('secret', 'pem', 'jwk')),
    material   text NOT NULL,
    issuer     text,
    audience   text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Tables protected with authz.protect().
CREATE TABLE authz.protected (
    tbl                regclass PRIMARY KEY,
    id_column          name NOT NULL,
    resource_type      text NOT NULL REFERENCES authz.resource_types (name),
    owner_column       name,
    soft_delete_column name,
    protected_at       timestamptz NOT NULL DEFAULT now()
);

-- Token claims that name roles or groups (authz.map_claim()): held for the token's life, with no
-- principal row needed. issuer NULL: any issuer.
CREATE TABLE authz.claim_mappings (
    id     bigserial PRIMARY KEY,
    claim  text NOT NULL CHECK (claim ~ '^[^.]+(\.[^.]+)*$' AND claim !~ '[[:cntrl:]]'),
    kind   text NOT NULL CHECK (kind IN ('role', 'group')),
    prefix text NOT NULL DEFAULT '' CHECK (prefix !~ '[[:cntrl:]]'),
    issuer text,
    UNIQUE NULLS NOT DISTINCT (claim, kind, prefix, issuer)
);

-- The Casbin model authz.enforce() answers with (authz.import_casbin(policy, model, …)): one at a
-- time, with the resource type of objects without a type: prefix and the types the file named.
CREATE TABLE authz.casbin_model (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model         text NOT NULL,
    resource_type text REFERENCES authz.resource_types (name) ON DELETE CASCADE,
    object_types  text[] NOT NULL DEFAULT '{}',
    imported_at   timestamptz NOT NULL DEFAULT now()
);

-- What Casbin imports created (and nothing that existed before them), so that an import with
-- replace => true can take it back. Rows go with what they record.
CREATE TABLE authz.casbin_imported (
    rule_id       bigint REFERENCES authz.rules (id) ON DELETE CASCADE,
    assignment_id bigint REFERENCES authz.role_assignments (id) ON DELETE CASCADE,
    role          text,
    inherits      text,
    FOREIGN KEY (role, inherits) REFERENCES authz.role_inheritance (role, inherits) ON DELETE CASCADE,
    CHECK (pg_catalog.num_nonnulls(rule_id, assignment_id, inherits) = 1 AND (role IS NULL) = (inherits IS NULL))
);
CREATE INDEX ON authz.casbin_imported (rule_id);
CREATE INDEX ON authz.casbin_imported (assignment_id);
CREATE INDEX ON authz.casbin_imported (role, inherits);

CREATE TABLE authz.audit_changes (
    id           bigserial PRIMARY KEY,
    changed_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed_by   name NOT NULL DEFAULT session_user,
    token_sub    text,
    table_name   text NOT NULL,
    operation    text NOT NULL,
    old_value    jsonb,
    new_value    jsonb
);

-- Citus (authz.distribute()): the key that signs the identity a node vouches for to the others.
-- One row, made by distribute(), never dumped (a restored database is distributed again), and
-- readable by no one but pg_authz's owner.
CREATE TABLE authz.cluster (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    secret         bytea NOT NULL CHECK (pg_catalog.length(secret) >= 32),
    distributed_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON authz.cluster FROM PUBLIC;

INSERT INTO authz.roles (name, builtin) VALUES ('anonymous', true), ('authenticated', true), ('owner', true);
INSERT INTO authz.resource_types (name) VALUES ('authz');

REVOKE ALL ON ALL TABLES IN SCHEMA authz FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA authz FROM PUBLIC;
GRANT SELECT ON authz.principals, authz.memberships, authz.roles, authz.role_inheritance,
    authz.resource_types, authz.role_assignments, authz.rules, authz.protected,
    authz.audit_changes, authz.claim_mappings, authz.casbin_model, authz.casbin_imported TO authz_admin;
GRANT SELECT (kid, alg, key_format, issuer, audience, created_at) ON authz.keys TO authz_admin;

-- Policy data is configuration: pg_dump of a database keeps it.
SELECT pg_catalog.pg_extension_config_dump('authz.principals', '');
SELECT pg_catalog.pg_extension_config_dump('authz.memberships', '');
SELECT pg_catalog.pg_extension_config_dump('authz.roles', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('authz.role_inheritance', '');
SELECT pg_catalog.pg_extension_config_dump('authz.resource_types', 'WHERE name <> ''authz''');
SELECT pg_catalog.pg_extension_config_dump('authz.role_assignments', '');
SELECT pg_catalog.pg_extension_config_dump('authz.rules', '');
SELECT pg_catalog.pg_extension_config_dump('authz.keys', '');
SELECT pg_catalog.pg_extension_config_dump('authz.protected', '');
SELECT pg_catalog.pg_extension_config_dump('authz.audit_changes', '');
SELECT pg_catalog.pg_extension_config_dump('authz.claim_mappings', '');
SELECT pg_catalog.pg_extension_config_dump('authz.casbin_model', '');
SELECT pg_catalog.pg_extension_config_dump('authz.casbin_imported', '');
-- ...and so is where their sequences stand: a restored install must not hand out ids again.
SELECT pg_catalog.pg_extension_config_dump('authz.role_assignments_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('authz.rules_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('authz.audit_changes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('authz.claim_mappings_id_seq', '');
