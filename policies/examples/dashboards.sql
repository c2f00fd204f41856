-- Example policy set: a data-dashboard platform (Depictio-style).
--
-- Projects hold dashboards; dashboards hold components (figures, tables, cards).
--   * Per project, a user is owner, editor or viewer (role assignments scoped to the project);
--     a dashboard inherits its project's permissions (a scoped role covers everything below it).
--       view dashboards: viewer, editor, project owner   create/edit: editor, project owner
--       delete dashboards, manage project settings: project owner
--   * Whoever created a dashboard (dashboards.owner) holds the built-in role 'owner' on it and
--     may do anything with it, even without a role in its project.
--   * Groups: a team is assigned a role on a project and every member (nested groups too) has it.
--   * A public project makes all its dashboards public; a single dashboard can be public too.
--     Public means readable by everyone, anonymous visitors included.
--   * External collaborators never see dashboards marked internal (deny beats every allow).
--   * System administrators may do everything, including managing pg_authz itself.
-- The per-project owner role is called project_owner: 'owner' is pg_authz's built-in role for
-- the principal named in a resource's owner column.
-- Run as a superuser after CREATE EXTENSION pg_authz.
CREATE SCHEMA dash;

CREATE TABLE dash.projects (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    is_public boolean NOT NULL DEFAULT false
);
CREATE TABLE dash.dashboards (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id bigint NOT NULL REFERENCES dash.projects,
    title text NOT NULL,
    owner text NOT NULL,                       -- principal id of the creator
    is_public boolean NOT NULL DEFAULT false,
    internal boolean NOT NULL DEFAULT false,   -- documentation only: the deny rule names the id
    updated_at timestamptz NOT NULL DEFAULT '2026-01-01'
);
CREATE INDEX dashboards_project_id ON dash.dashboards (project_id);
CREATE TABLE dash.components (
    id bigserial PRIMARY KEY,
    dashboard_id uuid NOT NULL REFERENCES dash.dashboards ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('figure', 'table', 'card', 'text')),
    title text NOT NULL
);
CREATE INDEX components_dashboard_id ON dash.components (dashboard_id);

INSERT INTO dash.projects VALUES
    (1, 'single-cell atlas', false),
    (2, 'proteomics core', false),
    (3, 'demo project', true);
INSERT INTO dash.dashboards (id, project_id, title, owner, is_public, internal) VALUES
    ('d0000000-0000-4000-8000-000000000011', 1, 'QC overview',        'eddie',  false, false),
    ('d0000000-0000-4000-8000-000000000012', 1, 'Cluster markers',    'olivia', true,  false),
    ('d0000000-0000-4000-8000-000000000013', 1, 'Internal QC review', 'olivia', false, true),
    ('d0000000-0000-4000-8000-000000000021', 2, 'Mass spec runs',     'owen',   false, false),
    ('d0000000-0000-4000-8000-000000000022', 2, 'Protein abundance',  'gwen',   false, false),
    ('d0000000-0000-4000-8000-000000000031', 3, 'Iris demo',          'root',   false, false);
INSERT INTO dash.components (dashboard_id, kind, title)
SELECT d.id, k.kind, d.title || ' / ' || k.kind
FROM dash.dashboards d, (VALUES ('figure'), ('table'), ('card')) k(kind)
ORDER BY d.id, k.kind;

-- Resource types: a dashboard belongs to a project; both can be public; a dashboard has an owner.
SELECT authz.register_resource_type('project', 'dash.projects', 'id', public_column => 'is_public');
SELECT authz.register_resource_type('dashboard', 'dash.dashboards', 'id', 'project', 'project_id',
                                    public_column => 'is_public', owner_column => 'owner');
SELECT authz.protect('dash.projects', 'id', 'project');
SELECT authz.protect('dash.dashboards', 'id', 'dashboard');
SELECT authz.protect('dash.components', 'dashboard_id', 'dashboard');

-- Roles: project_owner > editor > viewer.
SELECT authz.create_role('viewer');
SELECT authz.allow('viewer', 'project', '*', 'read');
SELECT authz.create_role('editor', ARRAY['viewer']);
SELECT authz.allow('editor', 'dashboard', '*', 'write');
SELECT authz.create_role('project_owner', ARRAY['editor']);
SELECT authz.allow('project_owner', 'dashboard', '*', 'delete');
SELECT authz.allow('project_owner', 'project', '*', 'write');
SELECT authz.create_role('admin', ARRAY['project_owner']);
SELECT authz.allow('admin', 'project', '*', '*');
SELECT authz.allow('admin', 'authz', '*', 'manage');
-- The creator of a dashboard may do anything with it.
SELECT authz.allow('owner', 'dashboard', '*', '*');
-- External collaborators: never the internal QC review.
SELECT authz.create_role('external');
SELECT authz.deny('external', 'dashboard', 'd0000000-0000-4000-8000-000000000013', '*');

-- Principals.
SELECT authz.create_principal('root');                          -- system administrator
SELECT authz.assign_role('root', 'admin');
SELECT authz.create_principal('olivia');                        -- owner of project 1
SELECT authz.assign_role('olivia', 'project_owner', 'project', '1');
SELECT authz.create_principal('eddie');                         -- editor of project 1
SELECT authz.assign_role('eddie', 'editor', 'project', '1');
SELECT authz.create_principal('vic');                           -- viewer of project 1
SELECT authz.assign_role('vic', 'viewer', 'project', '1');
SELECT authz.create_principal('xena');                          -- external viewer of project 1
SELECT authz.assign_role('xena', 'viewer', 'project', '1');
SELECT authz.assign_role('xena', 'external');
SELECT authz.create_principal('owen');                          -- created dashboard 21, no project role
-- Groups: the proteomics team views project 2; the core facility (nested) is part of it.
SELECT authz.create_principal('proteomics-team', 'group');
SELECT authz.create_principal('core-facility', 'group');
SELECT authz.add_member('proteomics-team', 'core-facility');
SELECT authz.assign_role('proteomics-team', 'viewer', 'project', '2');
SELECT authz.create_principal('gwen');
SELECT authz.add_member('core-facility', 'gwen');
