"""PyCasbin as the oracle for authz.import_casbin()/authz.enforce() (tests/casbin_oracle.rs).

Reads JSON from the file named by its argument: a list of cases {"model": text, "policy": text, "requests": [[values]]}.
Writes JSON to stdout: for each case, the list of PyCasbin's decisions (true/false), or
{"error": message} when PyCasbin itself cannot load or evaluate the case.
"""
import json
import os
import sys
import tempfile

import casbin
from casbin.model import Model


def decide(case):
    model = Model()
    model.load_model_from_text(case["model"])
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write(case["policy"])
        path = f.name
    try:
        enforcer = casbin.Enforcer(model, casbin.persist.adapters.FileAdapter(path))
        return [bool(enforcer.enforce(*request)) for request in case["requests"]]
    except Exception as e:  # the Rust side reports it with the case
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        os.unlink(path)


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    json.dump([decide(c) for c in cases], sys.stdout)


if __name__ == "__main__":
    main()
