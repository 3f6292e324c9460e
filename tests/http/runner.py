"""Runs one black-box test function: `runner.py --binary PATH FILE.py test_name`.

ctest registers every `def test_*` of tests/http/test_*.py as its own test, so each case runs in
its own process with its own servers and temporary directory.
"""

import argparse
import importlib.util
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import SKIP, Harness, Skip  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("file")
    ap.add_argument("test")
    a = ap.parse_args()
    spec = importlib.util.spec_from_file_location("t", a.file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn = getattr(mod, a.test)
    h = Harness(a.binary)
    ok = False
    try:
        fn(h)
        ok = True
    except Skip as e:
        h.cleanup()
        print("skipped: %s" % e)
        return SKIP
    except Exception:
        traceback.print_exc()
    problems = h.cleanup()
    if problems:
        ok = False
        print("\n".join(problems), file=sys.stderr)
    if not ok:
        for s in h.servers:
            print("---- server log (%s) ----\n%s" % (s.data_dir, s.log()), file=sys.stderr)
    print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
