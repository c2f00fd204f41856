#!/usr/bin/env python3
"""A psycopg 3 application on the shared login switching tokens per transaction.

Usage: confinement_psycopg.py HOST PORT USER DBNAME TOKEN_A TOKEN_B

Prints one JSON object describing what each identity saw; tests/python_client.rs compares it
with what the Rust driver sees for the same tokens. Every step is reported, never asserted here,
so a wrong answer shows up as a precise diff on the Rust side.
"""
import json
import sys

import psycopg
from psycopg import errors, sql

QUERY = "SELECT id, session_id FROM images ORDER BY id"


def seen(conn):
    """Identity and rows of the protected table, through a server-side prepared statement."""
    user = conn.execute("SELECT authz.user_id()").fetchone()[0]
    rows = conn.execute(QUERY, prepare=True).fetchall()
    return {"user": user, "ids": [r[0] for r in rows], "sessions": sorted({r[1] for r in rows})}


def error_report(e):
    return {"class": type(e).__name__, "sqlstate": e.sqlstate, "message": e.diag.message_primary}


def main():
    host, port, user, dbname, tok_a, tok_b = sys.argv[1:7]
    out = {"psycopg": psycopg.__version__}
    notices = []
    with psycopg.connect(
        host=host, port=int(port), user=user, dbname=dbname, autocommit=True, connect_timeout=10
    ) as conn:
        conn.add_notice_handler(lambda d: notices.append(f"{d.severity_nonlocalized}: {d.message_primary}"))
        out["before"] = seen(conn)

        # authz.login(token) inside a transaction, both tokens in turn.
        for name, tok in (("login_a", tok_a), ("login_b", tok_b)):
            with conn.transaction():
                returned = conn.execute("SELECT authz.login(%s)", [tok]).fetchone()[0]
                out[name] = dict(seen(conn), returned=returned)
            out["after_" + name] = seen(conn)

        # SET LOCAL (SET takes no bind parameters: the token goes in as a quoted literal).
        for name, tok in (("set_local_b", tok_b), ("set_local_a", tok_a)):
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL authz.token = {}").format(sql.Literal(tok)))
                out[name] = seen(conn)
            out["after_" + name] = seen(conn)

        # A token switch inside one transaction is seen by the next statement.
        with conn.transaction():
            conn.execute("SELECT authz.login(%s)", [tok_a])
            first = seen(conn)["user"]
            conn.execute("SELECT authz.login(%s)", [tok_b])
            out["switch_in_tx"] = [first, seen(conn)["user"]]

        # A forged token: one character of the signature flipped.
        forged = tok_a[:-1] + ("B" if tok_a[-1] == "A" else "A")
        try:
            with conn.transaction():
                conn.execute("SELECT authz.login(%s)", [forged])
            out["bad_login"] = {"class": None}
        except errors.InvalidAuthorizationSpecification as e:
            out["bad_login"] = dict(error_report(e), caught_as="InvalidAuthorizationSpecification")
        except psycopg.Error as e:
            out["bad_login"] = error_report(e)
        # The same forged token via SET LOCAL fails at the first statement that needs the identity.
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL authz.token = {}").format(sql.Literal(forged)))
                out["bad_set_local_set"] = "accepted"
                conn.execute(QUERY).fetchall()
            out["bad_set_local"] = {"class": None}
        except errors.InvalidAuthorizationSpecification as e:
            out["bad_set_local"] = dict(error_report(e), caught_as="InvalidAuthorizationSpecification")
        except psycopg.Error as e:
            out["bad_set_local"] = error_report(e)
        out["after_bad"] = seen(conn)

        # authz.login() outside a transaction (autocommit): warns, and lasts only for its statement.
        notices.clear()
        conn.execute("SELECT authz.login(%s)", [tok_a])
        out["login_outside_tx_notices"] = list(notices)
        out["after_login_outside_tx"] = seen(conn)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
