-- Example policy set: a cryo-EM platform (Magellon-style). Sessions belong to projects; images
-- belong to sessions. admin > operator > viewer; viewers read only the sessions they were granted;
-- a deny rule on operator keeps session 13 under embargo for operators and, because admin inherits
-- operator and a deny through any role wins, for admins too.
CREATE TABLE projects (id bigint PRIMARY KEY, name text NOT NULL, public boolean NOT NULL DEFAULT false);
CREATE TABLE sessions (id bigint PRIMARY KEY, project_id bigint NOT NULL REFERENCES projects, name text NOT NULL,
                       embargoed boolean NOT NULL DEFAULT false);
CREATE TABLE images (id bigserial PRIMARY KEY, session_id bigint NOT NULL REFERENCES sessions,
                     filename text NOT NULL, defocus real, uploaded_by text, deleted_at timestamptz);
CREATE INDEX images_session_id ON images (session_id);

INSERT INTO projects VALUES (1, 'ribosome', false), (2, 'spike protein', false), (3, 'public tutorial', true);
INSERT INTO sessions VALUES
    (11, 1, 'ribo-2026-01', false), (12, 1, 'ribo-2026-02', false), (13, 1, 'ribo-embargo', true),
    (21, 2, 'spike-a', false), (22, 2, 'spike-b', false),
    (31, 3, 'tutorial', false);
INSERT INTO images (session_id, filename, defocus, uploaded_by)
SELECT s.id, format('%s_%s.mrc', s.name, lpad(g::text, 4, '0')), -1.5 - (g % 10) / 10.0, 'operator1'
FROM sessions s, generate_series(1, 100) g;

SELECT authz.register_resource_type('project', 'projects', 'id', public_column => 'public');
SELECT authz.register_resource_type('session', 'sessions', 'id', 'project', 'project_id');
SELECT authz.protect('images', 'session_id', 'session', owner_column => 'uploaded_by', soft_delete_column => 'deleted_at');

SELECT authz.create_role('viewer');
SELECT authz.create_role('operator', ARRAY['viewer']);
SELECT authz.create_role('admin', ARRAY['operator']);
SELECT authz.allow('viewer', 'session', '*', 'read');
SELECT authz.allow('operator', 'session', '*', 'write');
SELECT authz.allow('operator', 'session', '*', 'delete_own');
SELECT authz.allow('admin', 'project', '*', '*');
SELECT authz.allow('admin', 'authz', '*', 'manage');
SELECT authz.deny('operator', 'session', '13', '*');   -- embargo: operators and viewers never see session 13

SELECT authz.create_principal('admin1');
SELECT authz.assign_role('admin1', 'admin');
SELECT authz.create_principal('operator1');
SELECT authz.assign_role('operator1', 'operator', 'project', '1');
SELECT authz.create_principal('viewer1');
SELECT authz.assign_role('viewer1', 'viewer', 'session', '21');
SELECT authz.create_principal('spike-team', 'group');
SELECT authz.assign_role('spike-team', 'viewer', 'project', '2');
SELECT authz.create_principal('member1');
SELECT authz.add_member('spike-team', 'member1');
