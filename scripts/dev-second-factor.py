#!/usr/bin/env python3
"""make dev's demo admin signs in with a second factor (SECOND_FACTOR_ROLES:
admin needs one): once the watch serves, enrol the demo user through the API
as a person would (sign in, POST /account/second-factor, confirm with a code)
and keep the secret and the recovery codes beside the password, in the state
folder (.dev/demo-totp-secret, .dev/demo-recovery-codes), then wait for the
next code (the enrolment spent this moment's). Does nothing when the demo
user has its factor already.

    dev-second-factor.py BASE_URL STATE_DIR"""
import json, os, sys, time, urllib.error, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import totp  # noqa: E402

base, state = sys.argv[1].rstrip("/"), sys.argv[2]


def call(path, body, access=None):
    headers = {"content-type": "application/json"}
    if access:
        headers["authorization"] = f"Bearer {access}"
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, {"error": body[:200].decode(errors="replace")}


password = open(os.path.join(state, "demo-password")).read().strip()
deadline = time.time() + 300
while True:
    try:
        status, answer = call("/login", {"username": "demo", "password": password})
        break
    except (urllib.error.URLError, ConnectionError):
        if time.time() > deadline:
            sys.exit("dev-second-factor: the watch never answered /login")
        time.sleep(0.5)
secret_file = os.path.join(state, "demo-totp-secret")
if status == 401 and answer.get("error") == "mfa_required":
    if not os.path.exists(secret_file):
        sys.exit("dev-second-factor: demo has a second factor whose secret is not in "
                 f"{secret_file}; remove it (target/debug/auth-admin remove-second-factor demo) and restart")
    sys.exit(0)
if status != 200:
    sys.exit(f"dev-second-factor: demo's login answered {status}: {answer}")
access = answer["access_token"]
status, begun = call("/account/second-factor", {}, access)
if status != 201:
    sys.exit(f"dev-second-factor: beginning the enrolment answered {status}: {begun}")



def keep(name, text):
    """A file only its owner reads, as the password's."""
    descriptor = os.open(os.path.join(state, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as f:
        f.write(text)


# Kept before it is confirmed: a stop in between leaves no factor without its secret.
keep("demo-totp-secret", begun["secret"] + "\n")
status, confirmed = call("/account/second-factor/confirm", {"code": totp.code(begun["secret"])}, access)
if status != 200:
    sys.exit(f"dev-second-factor: confirming answered {status}: {confirmed}")
keep("demo-recovery-codes", "\n".join(confirmed["recovery_codes"]) + "\n")
# The enrolment spent this moment's code: ready at the next, as an
# authenticator app shows it.
time.sleep(totp.STEP - time.time() % totp.STEP + 1)
