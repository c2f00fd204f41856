-- Example policy set: a crystallographic fragment-screening platform (Fragalysis-style).
--
-- Data is organised by proposal visit: every project row is one "target access string" (TAS),
-- the ISPyB proposal code, number and session, e.g. 'lb12345-20'. Targets belong to a project;
-- site observations (the ligand-bound crystal structures) belong to a target.
--   * Projects flagged open_to_public are readable by everyone, logged in or not; only
--     administrators set the flag (logins get SELECT only on xtal.projects, so no one else can
--     UPDATE it, whatever their pg_authz rules say).
--   * A visitor gets access to one visit (a role assignment scoped to that project).
--   * A proposal's team gets the whole visit range, current and future, with one glob rule:
--     'lb12345-*' matches lb12345-3, lb12345-20, lb12345-21 ... but not lb123456-1.
--   * Facility staff read everything except the proprietary industrial proposal sw30001
--     (deny beats allow); administrators may do everything.
--   * A suspended account is denied everything, public projects included.
-- Run as a superuser after CREATE EXTENSION pg_authz. Map logins or add a key to try it:
--   SELECT authz.map_login('ann', 'ann_login');   or   SELECT authz.add_key(...); SET LOCAL authz.token = ...
CREATE SCHEMA xtal;

CREATE TABLE xtal.projects (
    id text PRIMARY KEY,                          -- the target access string: proposal-visit
    proposal text NOT NULL,
    title text NOT NULL,
    open_to_public boolean NOT NULL DEFAULT false
);
CREATE TABLE xtal.targets (
    id bigint PRIMARY KEY,
    project_id text NOT NULL REFERENCES xtal.projects,
    title text NOT NULL,
    upload_status text NOT NULL DEFAULT 'SUCCESS'
);
CREATE INDEX targets_project_id ON xtal.targets (project_id);
CREATE TABLE xtal.site_observations (
    id bigserial PRIMARY KEY,
    target_id bigint NOT NULL REFERENCES xtal.targets,
    code text NOT NULL,                           -- crystal and chain, e.g. Mpro-x0072_A
    smiles text,
    resolution real
);
CREATE INDEX site_observations_target_id ON xtal.site_observations (target_id);

INSERT INTO xtal.projects VALUES
    ('lb12345-3',  'lb12345', 'Mpro fragment screen, first visit', false),
    ('lb12345-20', 'lb12345', 'Mpro fragment screen',              false),
    ('lb12345-21', 'lb12345', 'NSP3 macrodomain follow-up',        false),
    ('lb123456-1', 'lb123456', 'PTP1B allosteric site',            false),   -- not part of lb12345
    ('lb12346-1',  'lb12346', 'Zika NS2B-NS3 protease',            false),
    ('lb27995-1',  'lb27995', 'A71EV2A public release',            true),
    ('sw30001-1',  'sw30001', 'industrial partner (proprietary)',  false);
INSERT INTO xtal.targets (id, project_id, title) VALUES
    (1, 'lb12345-3', 'Mpro-early'), (2, 'lb12345-20', 'Mpro'), (3, 'lb12345-21', 'NSP3'),
    (4, 'lb123456-1', 'PTP1B'), (5, 'lb12346-1', 'NS2B-NS3'), (6, 'lb27995-1', 'A71EV2A'),
    (7, 'sw30001-1', 'ENPP1');
INSERT INTO xtal.site_observations (target_id, code, smiles, resolution)
SELECT t.id, format('%s-x%s_A', t.title, lpad((t.id * 100 + g)::text, 4, '0')), 'c1ccccc1', 1.2 + g / 10.0
FROM xtal.targets t, generate_series(1, 3) g;

-- Resource types: a target belongs to a project; a project may be public.
SELECT authz.register_resource_type('project', 'xtal.projects', 'id', public_column => 'open_to_public');
SELECT authz.register_resource_type('target', 'xtal.targets', 'id', 'project', 'project_id');
-- Every row of these tables is checked against its project or target.
SELECT authz.protect('xtal.projects', 'id', 'project');
SELECT authz.protect('xtal.targets', 'project_id', 'project');
SELECT authz.protect('xtal.site_observations', 'target_id', 'target');

-- Roles.
SELECT authz.create_role('visitor');                            -- on one visit (scoped assignment)
SELECT authz.allow('visitor', 'project', '*', 'read');
SELECT authz.allow('visitor', 'project', '*', 'write');
SELECT authz.create_role('proposal-lb12345');                   -- every visit of proposal lb12345
SELECT authz.allow('proposal-lb12345', 'project', 'lb12345-*', 'read');
SELECT authz.allow('proposal-lb12345', 'project', 'lb12345-*', 'write');
SELECT authz.create_role('staff');                              -- beamline and XChem staff
SELECT authz.allow('staff', 'project', '*', 'read');
SELECT authz.deny('staff', 'project', 'sw30001-*', '*');        -- proprietary: never staff
SELECT authz.create_role('admin', ARRAY['visitor']);            -- platform administrators
SELECT authz.allow('admin', 'project', '*', '*');
SELECT authz.allow('admin', 'authz', '*', 'manage');
SELECT authz.create_role('suspended');                          -- account under review
SELECT authz.deny('suspended', 'project', '*', '*');

-- Principals (ids are the identity provider's user names, the tokens' sub claim).
SELECT authz.create_principal('ada');                           -- administrator
SELECT authz.assign_role('ada', 'admin');
SELECT authz.create_principal('sam');                           -- staff scientist
SELECT authz.assign_role('sam', 'staff');
SELECT authz.create_principal('pat');                           -- PI of proposal lb12345
SELECT authz.assign_role('pat', 'proposal-lb12345');
SELECT authz.create_principal('ann');                           -- user on visit lb12345-20 only
SELECT authz.assign_role('ann', 'visitor', 'project', 'lb12345-20');
SELECT authz.create_principal('sid');                           -- was on lb12345-20, now suspended
SELECT authz.assign_role('sid', 'visitor', 'project', 'lb12345-20');
SELECT authz.assign_role('sid', 'suspended');
SELECT authz.create_principal('zika-team', 'group');            -- the lb12346 collaboration
SELECT authz.assign_role('zika-team', 'visitor', 'project', 'lb12346-1');
SELECT authz.create_principal('gus');
SELECT authz.add_member('zika-team', 'gus');
