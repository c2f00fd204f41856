-- 02: verification keys, token login, claims, and every way a token is rejected (SQLSTATE 28000).
\set SHOW_CONTEXT never
CREATE EXTENSION pg_authz;
CREATE ROLE regress_02_user LOGIN;

-- Tokens used below (HS256; valid ones expire in year 2100; "expired" expired in 2023).
\set alice 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazEifQ.eyJzdWIiOiAiYWxpY2UiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDAsICJlbWFpbCI6ICJhbGljZUBleGFtcGxlLmNvbSIsICJyZWFsbV9hY2Nlc3MiOiB7InJvbGVzIjogWyJhIiwgImIiXX19.cju93hJYT7BXtrg53uWqN-EPND2K-RwXjXh24DJ2Dzk'
\set bob 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazEifQ.eyJzdWIiOiAiYm9iIiwgImV4cCI6IDQxMDI0NDQ4MDAsICJpYXQiOiAxNzAwMDAwMDAwfQ.Veuu31xz9wDQYxirxd2HzcpZOzFKGLFmtbyTKk7sR8Q'
\set expired 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazEifQ.eyJzdWIiOiAiYWxpY2UiLCAiZXhwIjogMTcwMDAwMDAwMCwgImlhdCI6IDE2OTk5OTY0MDB9.NL3drhW5pW2zGnKxvQRxYx2WNK27p7Fs6Euv-St6Qg8'
\set badsig 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazEifQ.eyJzdWIiOiAiYWxpY2UiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDB9.lzaIpgoFJIkA3cSBSR78qiMBh3qPFOtvAmniuVSR0oU'
\set unknownkid 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazkifQ.eyJzdWIiOiAiYWxpY2UiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDB9.uLQXi2Tuv-QT-lIi357HvWYf9BuXBZzDkEgTih5DDOY'
\set none 'eyJhbGciOiAibm9uZSIsICJraWQiOiAiazEifQ.eyJzdWIiOiAiYWxpY2UiLCAiZXhwIjogNDEwMjQ0NDgwMH0.'
\set nosub 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazEifQ.eyJleHAiOiA0MTAyNDQ0ODAwLCAiaWF0IjogMTcwMDAwMDAwMH0.B5LM35bcmh8309cYoCNC9P_4SzRK2Y0I2-kucVlo8_w'
\set expstr 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazEifQ.eyJzdWIiOiAiYWxpY2UiLCAiZXhwIjogIjQxMDI0NDQ4MDAiLCAiaWF0IjogMTcwMDAwMDAwMH0.O2oo2fR1H6MxofZHhKVuaRKdGrwzk5YgSmevTNemSUQ'
\set noexp 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazEifQ.eyJzdWIiOiAiYWxpY2UiLCAiaWF0IjogMTcwMDAwMDAwMH0.v_zSwlL65d4y6QgdFi9M86MGCrTmth52CgKGLujQECI'
\set iss_missing 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazIifQ.eyJzdWIiOiAiY2Fyb2wiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDB9.QzCuE2DzdAjhYXC5bkz9p39gupsl5oobqVU122gHvs4'
\set iss_wrong 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazIifQ.eyJzdWIiOiAiY2Fyb2wiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDAsICJpc3MiOiAiaHR0cHM6Ly9ldmlsIn0.rC8Wb2NAAy1Hlfc29a-m0nfqxn03P_7ArjOrTgw4Dek'
\set iss_ok 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazIifQ.eyJzdWIiOiAiY2Fyb2wiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDAsICJpc3MiOiAiaHR0cHM6Ly9pZHAifQ.gdwvH0MrH4G5TTr4qSW8h4lxyjJy5vEn9uDi1e659v4'
\set aud_wrong 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazMifQ.eyJzdWIiOiAiZGF2ZSIsICJleHAiOiA0MTAyNDQ0ODAwLCAiaWF0IjogMTcwMDAwMDAwMCwgImF1ZCI6ICJvdGhlciJ9.u9BC-2Fa3fgwkcTD5QVL_cUkpQIUwFKCPhSOhsjExkQ'
\set aud_missing 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazMifQ.eyJzdWIiOiAiZGF2ZSIsICJleHAiOiA0MTAyNDQ0ODAwLCAiaWF0IjogMTcwMDAwMDAwMH0.8GGQPRy756nYD0MNGtIu7vE1j3xrWsXKxLcDaudy7As'
\set aud_ok 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazMifQ.eyJzdWIiOiAiZGF2ZSIsICJleHAiOiA0MTAyNDQ0ODAwLCAiaWF0IjogMTcwMDAwMDAwMCwgImF1ZCI6IFsieCIsICJhcGkiXX0.Igm0T42_2RTMyNBukzMnA3AkMWBVBuox6ih49AvjqPo'
\set k4 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazQifQ.eyJzdWIiOiAiZXJpbiIsICJleHAiOiA0MTAyNDQ0ODAwLCAiaWF0IjogMTcwMDAwMDAwMH0.j1XMfHI0J1NQgRYpfhJNuqVbzfF85JGLUvBH8h9oK5w'
\set nbf 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCIsICJraWQiOiAiazEifQ.eyJzdWIiOiAiYWxpY2UiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDAsICJuYmYiOiA0MTAyNDQ0NzkwfQ.Hbml7q2HDYuaxquNutOUL1OwQJZoSErqDi0-MjgKt6E'

-- Keys: an HS256 secret of at least 32 bytes is accepted.
SELECT authz.add_key('k1', 'HS256', 'regress-02-secret-0123456789abcdef-XYZ');
-- A short secret is refused.
SELECT authz.add_key('short', 'HS256', 'tooshort');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- An unsupported algorithm is refused.
SELECT authz.add_key('bad', 'XS999', 'regress-02-secret-0123456789abcdef-XYZ');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- The algorithm "none" is not a key algorithm either.
SELECT authz.add_key('bad', 'none', 'regress-02-secret-0123456789abcdef-XYZ');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- A PEM-looking key can't be used as a shared secret.
SELECT authz.add_key('bad', 'HS256', '-----BEGIN PUBLIC KEY-----xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Nothing but k1 was stored.
SELECT kid, alg, key_format, issuer, audience FROM authz.keys ORDER BY kid;

-- A non-privileged role is refused before its arguments are looked at.
SET SESSION AUTHORIZATION regress_02_user;
SELECT authz.add_key('', 'garbage', '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.revoke_key('k1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;

-- Without a token (and no principal mapped to the login) the caller is anonymous.
SELECT authz.user_id() IS NULL AS anonymous, authz.identity()->>'source' AS source, authz.claims() AS claims;

-- Login with SET LOCAL inside a transaction: identity and claims come from the verified token.
BEGIN;
SET LOCAL authz.token = :'alice';
SELECT authz.user_id(), authz.identity()->>'source' AS source, authz.identity()->>'kid' AS kid;
SELECT authz.claim('email') AS email, authz.claim('realm_access.roles') AS roles,
       authz.claim('realm_access') AS realm_access, authz.claim('no.such.claim') IS NULL AS missing;
SELECT authz.claims() - 'iat' AS claims;
COMMIT;
-- After COMMIT the transaction-local token is gone.
SELECT authz.user_id() IS NULL AS anonymous, authz.identity()->>'source' AS source;

-- authz.login() verifies first and returns the user id; local by default.
BEGIN;
SELECT authz.login(:'bob');
SELECT authz.user_id();
SELECT authz.logout();
SELECT authz.user_id() IS NULL AS logged_out;
COMMIT;

-- ROLLBACK TO SAVEPOINT restores the previous token, and identity follows.
BEGIN;
SET LOCAL authz.token = :'alice';
SELECT authz.user_id();
SAVEPOINT s1;
SET LOCAL authz.token = :'bob';
SELECT authz.user_id();
ROLLBACK TO SAVEPOINT s1;
SELECT authz.user_id();
COMMIT;

-- Rejections: every one is SQLSTATE 28000, never a fall-back to another identity.
-- Expired.
BEGIN;
SET LOCAL authz.token = :'expired';
SELECT authz.user_id();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Not yet valid (nbf in the future).
BEGIN;
SET LOCAL authz.token = :'nbf';
SELECT authz.user_id();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Signed with another secret under the same kid.
BEGIN;
SET LOCAL authz.token = :'badsig';
SELECT authz.user_id();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Unknown kid.
BEGIN;
SET LOCAL authz.token = :'unknownkid';
SELECT authz.user_id();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Unsigned (alg none).
BEGIN;
SET LOCAL authz.token = :'none';
SELECT authz.user_id();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Malformed: garbage, and a "Bearer " prefix.
BEGIN;
SET LOCAL authz.token = 'garbage';
SELECT authz.user_id();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT authz.login('Bearer ' || :'alice');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- No user claim (sub).
SELECT authz.login(:'nosub');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- exp is a string, not a number.
SELECT authz.login(:'expstr');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- No exp at all.
SELECT authz.login(:'noexp');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- A key bound to an issuer accepts only tokens from that issuer.
SELECT authz.add_key('k2', 'HS256', 'regress-02-secret-0123456789abcdef-XYZ', issuer => 'https://idp');
SELECT authz.login(:'iss_missing');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.login(:'iss_wrong');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT authz.login(:'iss_ok');
SELECT authz.identity()->>'iss' AS iss;
COMMIT;

-- A key bound to an audience accepts only tokens addressed to it.
SELECT authz.add_key('k3', 'HS256', 'regress-02-secret-0123456789abcdef-XYZ', audience => 'api');
SELECT authz.login(:'aud_wrong');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT authz.login(:'aud_missing');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT authz.login(:'aud_ok');
COMMIT;

-- revoke_key: a token that verified before now fails with unknown kid.
SELECT authz.add_key('k4', 'HS256', 'regress-02-secret-0123456789abcdef-XYZ');
BEGIN;
SELECT authz.login(:'k4');
COMMIT;
SELECT authz.revoke_key('k4');
SELECT authz.revoke_key('k4') AS revoked_again;
SELECT authz.login(:'k4');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- Session token set with SET (not LOCAL) by a client also fails after revocation.
SET authz.token = :'k4';
SELECT authz.user_id();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET authz.token;

-- A non-superuser may log in with a token too (authz.token is user-settable).
SET SESSION AUTHORIZATION regress_02_user;
BEGIN;
SET LOCAL authz.token = :'alice';
SELECT authz.user_id(), authz.identity()->>'session_user' AS session_user;
COMMIT;
RESET SESSION AUTHORIZATION;

SELECT kid FROM authz.keys ORDER BY kid;
DROP ROLE regress_02_user;
SELECT authz.uninstall() >= 0 AS uninstalled;
DROP EXTENSION pg_authz CASCADE;
