"""The interop scripts' checks: each printed as it is made, and a summary
whose exit status is the run's (a failure anywhere fails `make test`)."""
import sys

failures, checked = [], []


def check(name, condition, detail=""):
    print(f"{'ok  ' if condition else 'FAIL'} {name} {detail if not condition else ''}")
    checked.append(name)
    if not condition:
        failures.append(name)


def refused(name, attempt, error):
    """Checks that `attempt()` raises `error` (and nothing else passes for it)."""
    try:
        attempt()
        check(name, False, "accepted")
    except error:
        check(name, True)


def finish():
    print(f"{len(checked) - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
