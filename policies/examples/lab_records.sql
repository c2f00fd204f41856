-- Example policy set: a neuroscience lab's records (Antelop-style).
--
-- Every row carries the experimenter who owns it; a lab's members read all of the lab's data but
-- insert, update and delete only their own rows. Deletes are temporary: the row's *_deleted flag
-- is set and the row disappears for everyone but the lab manager, who can restore it or delete it
-- for good (so a real delete takes two steps: the owner's, then the manager's).
--   * lab_member (held through the lab's group): read, write_own, delete_own on the lab.
--   * lab_manager > lab_member: also restore and purge.
--   * collaborator: read-only on one lab, and never an unpublished experiment (a deny).
--   * No public data: an unknown login sees nothing.
-- Principal ids are the experimenters' user names (the experimenter column), so map each
-- experimenter's database login with authz.map_login(), or have the application pass a token.
-- Run as a superuser after CREATE EXTENSION pg_authz.
CREATE SCHEMA lab;

CREATE TABLE lab.labs (
    id text PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE lab.experimenters (
    experimenter text PRIMARY KEY,             -- user name: also the pg_authz principal id
    full_name text NOT NULL,
    lab_id text NOT NULL REFERENCES lab.labs,
    admin boolean NOT NULL DEFAULT false
);
CREATE TABLE lab.experiments (
    experiment_id bigint PRIMARY KEY,
    lab_id text NOT NULL REFERENCES lab.labs,
    experimenter text NOT NULL REFERENCES lab.experimenters,
    experiment_name text NOT NULL,
    experiment_deleted boolean NOT NULL DEFAULT false
);
CREATE TABLE lab.sessions (
    session_id bigserial PRIMARY KEY,
    experiment_id bigint NOT NULL REFERENCES lab.experiments,
    experimenter text NOT NULL REFERENCES lab.experimenters,
    session_name text NOT NULL,
    session_timestamp timestamptz NOT NULL,
    session_deleted boolean NOT NULL DEFAULT false
);
CREATE INDEX sessions_experiment_id ON lab.sessions (experiment_id);

INSERT INTO lab.labs VALUES ('hausser', 'Hausser lab'), ('margrie', 'Margrie lab');
INSERT INTO lab.experimenters VALUES
    ('mia', 'Mia Manager', 'hausser', true),
    ('alice', 'Alice A.', 'hausser', false),
    ('bob', 'Bob B.', 'hausser', false),
    ('dora', 'Dora D.', 'margrie', false);
INSERT INTO lab.experiments VALUES
    (101, 'hausser', 'alice', 'cerebellum imaging', false),
    (102, 'hausser', 'bob', 'purkinje ephys', false),
    (103, 'hausser', 'alice', 'unpublished optogenetics', false),
    (201, 'margrie', 'dora', 'visual cortex', false);
INSERT INTO lab.sessions (experiment_id, experimenter, session_name, session_timestamp) VALUES
    (101, 'alice', 'img-01', '2026-01-05 10:00+00'),
    (101, 'alice', 'img-02', '2026-01-06 10:00+00'),
    (102, 'bob', 'ephys-01', '2026-01-07 09:00+00'),
    (102, 'bob', 'ephys-02', '2026-01-08 09:00+00'),
    (103, 'alice', 'opto-01', '2026-01-09 14:00+00'),
    (201, 'dora', 'v1-01', '2026-01-10 11:00+00');

-- Resource types: experiments belong to labs.
SELECT authz.register_resource_type('lab', 'lab.labs', 'id');
SELECT authz.register_resource_type('experiment', 'lab.experiments', 'experiment_id', 'lab', 'lab_id');
-- Rows are checked against their experiment (an experiment row against itself, so a deny on one
-- experiment hides the experiment too, not only its sessions); the experimenter column makes the
-- *_own rules apply, and the *_deleted flag turns DELETE into a temporary delete.
SELECT authz.protect('lab.experiments', 'experiment_id', 'experiment',
                     owner_column => 'experimenter', soft_delete_column => 'experiment_deleted');
SELECT authz.protect('lab.sessions', 'experiment_id', 'experiment',
                     owner_column => 'experimenter', soft_delete_column => 'session_deleted');

-- Roles.
SELECT authz.create_role('lab_member');
SELECT authz.allow('lab_member', 'lab', '*', 'read');
SELECT authz.allow('lab_member', 'lab', '*', 'write_own');
SELECT authz.allow('lab_member', 'lab', '*', 'delete_own');
SELECT authz.create_role('lab_manager', ARRAY['lab_member']);
SELECT authz.allow('lab_manager', 'lab', '*', 'restore');
SELECT authz.allow('lab_manager', 'lab', '*', 'purge');
SELECT authz.create_role('collaborator');
SELECT authz.allow('collaborator', 'lab', '*', 'read');
SELECT authz.deny('collaborator', 'experiment', '103', '*');   -- unpublished

-- Principals: the labs are groups, assigned their role on their own lab only.
SELECT authz.create_principal('hausser-lab', 'group');
SELECT authz.assign_role('hausser-lab', 'lab_member', 'lab', 'hausser');
SELECT authz.create_principal('margrie-lab', 'group');
SELECT authz.assign_role('margrie-lab', 'lab_member', 'lab', 'margrie');
SELECT authz.create_principal('mia');
SELECT authz.assign_role('mia', 'lab_manager', 'lab', 'hausser');
SELECT authz.create_principal('alice');
SELECT authz.add_member('hausser-lab', 'alice');
SELECT authz.create_principal('bob');
SELECT authz.add_member('hausser-lab', 'bob');
SELECT authz.create_principal('dora');
SELECT authz.add_member('margrie-lab', 'dora');
SELECT authz.create_principal('carl');                          -- external collaborator
SELECT authz.assign_role('carl', 'collaborator', 'lab', 'hausser');
