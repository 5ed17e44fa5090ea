#!/usr/bin/env python3
"""Contract test: schemathesis checks the running stack (the routed watch that
`make test` started, WATCH_URL) against openapi.yaml, with schemathesis.toml's
bounded, seeded settings. Authenticated operations use a real token of a user
no generated example touches; /logout runs last, alone, with a user of its own,
so the run never revokes the token it is using."""
import json, os, pathlib, subprocess, sys, urllib.request, uuid

root = pathlib.Path(__file__).resolve().parents[2]
base = os.environ["WATCH_URL"]


def post(path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def token_of_a_fresh_user(role):
    username = f"contract-{role}-{uuid.uuid4().hex[:10]}"
    password = f"contract passphrase {uuid.uuid4().hex[:8]}"
    post("/register", {"username": username, "password": password, "name": f"Contract {role}"})
    return post("/login", {"username": username, "password": password})["access_token"]


def schemathesis(token, *selection):
    command = ["st", "--config-file", str(root / "schemathesis.toml"), "run", str(root / "openapi.yaml"),
               "--url", base, "--header", f"Authorization: Bearer {token}", "--no-color", *selection]
    return subprocess.run(command, cwd=root).returncode


runs = [
    ("every operation but /logout", schemathesis(token_of_a_fresh_user("main"), "--exclude-path", "/logout")),
    ("/logout, last, with its own user", schemathesis(token_of_a_fresh_user("logout"), "--include-path", "/logout")),
]
failed = [name for name, code in runs if code != 0]
for name, code in runs:
    print(f"{'ok  ' if code == 0 else 'FAIL'} schemathesis: {name}")
print(f"{len(runs) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
