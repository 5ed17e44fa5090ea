#!/usr/bin/env python3
"""Contract test: schemathesis checks the running stack (the routed watch that
`make test` started, WATCH_URL) against openapi.yaml, with schemathesis.toml's
bounded, seeded settings. Authenticated operations use a real token of a user
no generated example touches; /logout runs last, alone, with a user of its own,
so the run never revokes the token it is using. The admin API runs with a
user that holds the admin role (granted by auth-admin, the break-glass) and
has just logged in, so the fresh-login rule lets it act."""
import json, os, pathlib, subprocess, sys, urllib.request, uuid
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from noted import note, note_answer  # noqa: E402

root = pathlib.Path(__file__).resolve().parents[2]
base = os.environ["WATCH_URL"]



def post(path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    note(body.get("password"))
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())
    note_answer(answer)
    return answer


def token_of_a_fresh_user(role):
    username = f"contract-{role}-{uuid.uuid4().hex[:10]}"
    password = f"contract passphrase {uuid.uuid4().hex[:8]}"
    post("/register", {"username": username, "password": password, "name": f"Contract {role}"})
    return post("/login", {"username": username, "password": password})["access_token"]


def token_of_a_fresh_admin():
    username = f"contract-admin-{uuid.uuid4().hex[:10]}"
    password = f"contract passphrase {uuid.uuid4().hex[:8]}"
    post("/register", {"username": username, "password": password, "name": "Contract admin"})
    environment = {**os.environ, "TABLE_NAME": os.environ["E2E_TABLE_NAME"],
                   "AWS_ENDPOINT_URL_DYNAMODB": os.environ["DYNAMODB_TEST_ENDPOINT"]}
    subprocess.run([str(root / "target" / "debug" / "auth-admin"), "grant", username, "admin"],
                   env=environment, check=True, stdout=subprocess.DEVNULL)
    return post("/login", {"username": username, "password": password})["access_token"]


def schemathesis(token, *selection):
    command = ["st", "--config-file", str(root / "schemathesis.toml"), "run", str(root / "openapi.yaml"),
               "--url", base, "--header", f"Authorization: Bearer {token}", "--no-color", *selection]
    return subprocess.run(command, cwd=root).returncode


# The admin run's every act targets this user (schemathesis.toml).
target = f"contract-target-{uuid.uuid4().hex[:10]}"
post("/register", {"username": target, "password": f"contract passphrase {uuid.uuid4().hex[:8]}", "name": "Target"})
os.environ["CONTRACT_ADMIN_TARGET"] = target

runs = [
    ("every operation but /logout and the admin API",
     schemathesis(token_of_a_fresh_user("main"), "--exclude-path", "/logout", "--exclude-path-regex", "^/admin/")),
    ("the admin API, as an admin", schemathesis(token_of_a_fresh_admin(), "--include-path-regex", "^/admin/")),
    ("/logout, last, with its own user", schemathesis(token_of_a_fresh_user("logout"), "--include-path", "/logout")),
]
failed = [name for name, code in runs if code != 0]
for name, code in runs:
    print(f"{'ok  ' if code == 0 else 'FAIL'} schemathesis: {name}")
print(f"{len(runs) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
