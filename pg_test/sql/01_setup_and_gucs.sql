-- 01: installation, version, settings and the privilege boundary around them.
\set SHOW_CONTEXT never
CREATE EXTENSION pg_authz;

-- The version is part of the contract.
SELECT authz.version();

-- The extension lives in schema authz.
SELECT n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_authz';

-- Every authz.* setting and who may change it: only authz.token is user-settable.
SELECT name, context FROM pg_settings WHERE name LIKE 'authz.%' ORDER BY name;

-- Defaults.
SHOW authz.audit;
SHOW authz.leeway_seconds;
SHOW authz.user_claim;

CREATE ROLE regress_01_user LOGIN;
SET SESSION AUTHORIZATION regress_01_user;

-- A client cannot loosen verification or auditing.
SET authz.audit = 'off';
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SET authz.leeway_seconds = 3600;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SET authz.issuers = '';
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SET authz.user_claim = 'email';
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- ... but may set its own token.
SET authz.token = '';

-- Policy tables and keys are not readable by PUBLIC.
SELECT count(*) FROM authz.keys;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT count(*) FROM authz.rules;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT count(*) FROM authz.principals;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Management functions refuse a plain role.
SELECT authz.create_principal('x');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

RESET SESSION AUTHORIZATION;

-- Unknown settings under the reserved authz prefix are refused.
SET authz.no_such_setting = 'x';
\echo SQLSTATE :LAST_ERROR_SQLSTATE

DROP ROLE regress_01_user;
DROP EXTENSION pg_authz CASCADE;
