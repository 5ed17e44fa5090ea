#!/usr/bin/env python3
"""Revoking an issuer key, as the runbook says (docs/operations.md), against
the routed watch that `make test` started in sealed mode (WATCH_URL), whose
functions re-read the key set every JWT_KEYS_REFRESH_SECONDS: the revocation
is `auth-admin revoke-key` with ROTATE_KEYS_FUNCTION, an event to the
rotate-keys function through the emulator's Lambda Invoke API (as deployed,
through Lambda's); a token of the revoked kid passes before, and is
refused by every instance once the bound has passed; the JWKS drops the kid;
a new key signs at once, and the session's refresh token gets a token of the
new key. `auth-admin revoke-key` refuses, changing nothing, when it cannot
seal (deployed, only the rotation may). `auth-admin` runs with the watch's
environment (this script's)."""
import concurrent.futures, json, os, pathlib, subprocess, sys, time, urllib.error, urllib.parse, urllib.request, uuid
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from noted import note, note_answer  # noqa: E402
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from checks import check, finish, refused  # noqa: E402

import jwt
from jwt import PyJWKClient

root = pathlib.Path(__file__).resolve().parents[2]
base = os.environ["WATCH_URL"]
audience = os.environ["E2E_JWT_AUDIENCE"]
bound = int(os.environ["JWT_KEYS_REFRESH_SECONDS"])


def call(path, body=None, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base + path, data=body and json.dumps(body).encode(), headers=headers)
    note((body or {}).get("password"))
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
            note_answer(answer)
            return response.status, answer
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())




def admin(*args, env=None):
    done = subprocess.run([str(root / "target/debug/auth-admin"), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    return done.returncode, done.stdout + done.stderr


def rotation(event):
    """An event to the watch's rotate-keys function; its answer."""
    watch = urllib.parse.urlparse(base)
    done = subprocess.run(
        ["cargo", "lambda", "invoke", "rotate-keys", "--data-ascii", json.dumps(event), "--invoke-address",
         watch.hostname, "--invoke-port", str(watch.port), "--output-format", "json"],
        capture_output=True, text=True, cwd=root)
    if done.returncode != 0:
        print(done.stderr[-500:], file=sys.stderr)
        return None
    return json.loads(done.stdout)


def get_name_many(token, times=12):
    """get_name from several requests at once: the watch spreads them over its instances."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda _: call("/get_name", token=token)[0], range(times)))


def jwks_kids():
    status, jwks = call("/.well-known/jwks.json")
    return {k["kid"] for k in jwks["keys"]}


username, password = f"revoke-{uuid.uuid4().hex[:10]}", "revocation passphrase 7"
status, body = call("/register", {"username": username, "password": password, "name": "Re Voke"})
check("register", status == 201, body)
status, login = call("/login", {"username": username, "password": password})
check("login", status == 200, login)
old, refresh = login["access_token"], login["refresh_token"]
leaked = jwt.get_unverified_header(old)["kid"]
check("its token passes everywhere before", set(get_name_many(old)) == {200})
check("its kid is published", leaked in jwks_kids())

# An operator who cannot seal (here: a sealing key that is not the stack's)
# is refused before anything is revoked.
code, out = admin("revoke-key", leaked, env={"JWT_SIGNING_KEY": "sealed:00000000-0000-0000-0000-000000000000"})
check("auth-admin revoke-key refuses when it cannot seal", code != 0 and "nothing was changed" in out, out)
code, out = admin("list-keys")
check("… and nothing was revoked", code == 0 and not any(
    line.startswith(leaked) and "revoked" in line for line in out.splitlines()), out)
check("its token still passes", set(get_name_many(old, 4)) == {200})

answer = rotation({"revoke": ["no-such-kid"]})
check("the rotation function skips an unknown kid (cargo lambda invoke)",
      answer is not None and answer.get("revoked") == [] and answer.get("created") == [], answer)
through_function = {"ROTATE_KEYS_FUNCTION": "rotate-keys", "AWS_ENDPOINT_URL_LAMBDA": base}
code, out = admin("revoke-key", leaked, env=through_function)
check("auth-admin revoke-key, through the rotation function, revokes it and a new key is made",
      code == 0 and f"revoked {leaked}" in out and "created [\"" in out, out)
code, out = admin("list-keys")
check("list-keys shows it revoked", code == 0 and any(
    line.startswith(leaked) and "revoked at" in line for line in out.splitlines()), out)
time.sleep(bound + 0.5)

answers = get_name_many(old)
check(f"past the bound ({bound} s), every instance refuses it", set(answers) == {401}, answers)
check("the JWKS no longer has it", leaked not in jwks_kids())
status, login = call("/login", {"username": username, "password": password})
new = login.get("access_token", "")
check("a new login", status == 200, login)
check("signed by a new key, at once", jwt.get_unverified_header(new)["kid"] != leaked)
check("the new token passes everywhere", set(get_name_many(new)) == {200})
status, refreshed = call("/refresh", {"refresh_token": refresh})
check("the old session's refresh token gets a token of the new key",
      status == 200 and jwt.get_unverified_header(refreshed["access_token"])["kid"] != leaked, refreshed)

# An outside verifier (PyJWT) finds the new kid and not the revoked one.
jwks = PyJWKClient(f"{base}/.well-known/jwks.json", cache_keys=False)
claims = jwt.decode(new, jwks.get_signing_key_from_jwt(new).key, algorithms=["RS256"], audience=audience)
check("PyJWT verifies the new key's token", claims["username"] == username, claims)
refused("PyJWT finds no key for the revoked kid", lambda: jwks.get_signing_key_from_jwt(old), jwt.PyJWKClientError)

finish()
