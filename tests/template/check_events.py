#!/usr/bin/env python3
"""Every file in events/ through the watch emulator, the way AWS hands it to
the function: `cargo lambda invoke <function> --data-file events/<file>`,
with the function chosen by the event's path through the watch router.
Checks each answer's status against what the event stands for. Needs the
watch that `make test` started (WATCH_URL)."""
import json, os, pathlib, re, subprocess, sys, tomllib, urllib.parse

root = pathlib.Path(__file__).resolve().parents[2]
watch = urllib.parse.urlparse(os.environ["WATCH_URL"])

# What each sample event must get from a fresh test table (no such users, and
# placeholder tokens), in API Gateway's payload format 2.0 response.
EXPECTED = {
    "login.json": 401,  # events-user does not exist in the watch's table
    "login-wrong-password.json": 401,
    "login-unknown-user.json": 401,
    "login-invalid-json.json": 400,
    "login-missing-password.json": 400,
    "login-wrong-method.json": 405,
    "login-base64.json": 401,  # a base64 body, as API Gateway sends binary ones
    "login-invalid-base64.json": 400,  # lambda_http would panic on it: our runtime answers 400
    "login-no-content-type.json": 415,  # a body must say it is JSON (no-cors fetch, sendBeacon)
    "get-name.json": 401,  # placeholder token
    "get-name-no-token.json": 401,
    "get-name-wrong-method.json": 405,
    "register.json": None,  # 201 the first time, 409 after: checked below
    "register-common-password.json": 400,
    "register-wrong-method.json": 405,
    "refresh.json": 401,  # placeholder refresh token
    "refresh-missing-token.json": 400,
    "refresh-wrong-method.json": 405,
    "logout.json": 401,
    "logout-all.json": 401,
    "logout-no-token.json": 401,
    "logout-wrong-method.json": 405,
    "password.json": 401,
    "password-wrong-method.json": 405,
    "jwks.json": 200,
    "openid-configuration.json": 200,
    "jwks-wrong-method.json": 405,
    "page.json": 200,  # the sign-in page (the web function)
    "page-wrong-method.json": 405,
    "reauthenticate.json": 401,  # placeholder token
    "reauthenticate-wrong-method.json": 405,
    "delete-account.json": 401,
    "delete-account-wrong-method.json": 405,
    "admin-user.json": 401,
    "admin-user-wrong-method.json": 405,
    "admin-deactivate.json": 401,
    "admin-delete-user.json": 401,
    "admin-grant-role.json": 401,
    "admin-revoke-role.json": 401,
    "admin-unlock.json": 401,
    "admin-end-sessions.json": 401,
    "sessions.json": 401,  # placeholder token
    "sessions-wrong-method.json": 405,
    "end-session.json": 401,
    "end-session-wrong-method.json": 405,
    "password-reset.json": 202,  # the same answer for every identifier
    "oidc-providers.json": 200,  # the watch's one provider, the local identity provider
    "oidc-start.json": 403,  # not from the watch's origin: no round trip begins
    "oidc-callback.json": 303,  # no round trip's cookie: back to the page, sign_in_error
    "password-reset-confirm.json": 400,  # placeholder token: invalid_ticket
    "account-email.json": 401,  # placeholder token
    "account-email-verify.json": 400,  # placeholder token: invalid_ticket
    "login-second-factor.json": 401,  # placeholder mfa_token: invalid_mfa_token
    "second-factor.json": 401,  # placeholder token
    "second-factor-confirm.json": 401,  # placeholder token
    "passkey-options.json": 401,  # placeholder token
    "passkey-register.json": 401,  # placeholder token (checked before the body)
    "passkeys.json": 401,  # placeholder token
    "passkey-rename.json": 401,  # placeholder token
    "passkey-remove.json": 401,  # placeholder token
    "passkey-verify-options.json": 401,  # placeholder token
    "passkey-verify.json": 401,  # placeholder token (checked before the body)
    "login-passkey-options.json": 200,  # a challenge for anyone
    "login-passkey.json": 400,  # a placeholder credential: not one
}

router = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["metadata"]["lambda"]["watch"]["router"]


def pattern(route):
    """A route ({name} one segment, {*name} the rest) as a regular expression."""
    return "^" + re.sub(r"\\\{\\\*\w+\\\}", ".+", re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(route))) + "$"


def route_of(path):
    """The route API Gateway picks: a literal route before any with a {name}."""
    if path in router:
        return path
    return next((r for r in router if re.match(pattern(r), path)), None)


files = sorted(p.name for p in (root / "events").glob("*.json"))
failures = []
if set(files) != set(EXPECTED):
    failures.append(f"events/ and this table differ: {sorted(set(files) ^ set(EXPECTED))}")

for name in files:
    event = json.loads((root / "events" / name).read_text())
    route = route_of(event["rawPath"])
    check_shape = event.get("version") == "2.0" and event["requestContext"]["stage"] == "$default" \
        and event["routeKey"] == f"ANY {route}" == event["requestContext"]["routeKey"] \
        and event["requestContext"]["http"]["path"] == event["rawPath"]
    if not check_shape:
        failures.append(f"{name}: not an HTTP API v2 event of the $default stage with an ANY route")
    function = router.get(route)
    if function is None:
        failures.append(f"{name}: no function routes {event['rawPath']}")
        continue
    result = subprocess.run(
        ["cargo", "lambda", "invoke", function, "--data-file", f"events/{name}", "--invoke-address",
         watch.hostname, "--invoke-port", str(watch.port), "--output-format", "json"],
        cwd=root, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        failures.append(f"{name}: invoke failed: {result.stderr.strip()[-300:]}")
        continue
    response = json.loads(result.stdout)
    status = response.get("statusCode")
    expected = EXPECTED.get(name)
    allowed = {201, 409} if expected is None else {expected}
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    if headers.get("content-type", "").startswith("text/html"):
        # The page: the built index.html, under its policy.
        ok = status in allowed and '<div id="root">' in response.get("body", "") \
            and "default-src 'none'" in headers.get("content-security-policy", "")
    elif status == 303:
        # The provider's callback: always back to the page, never elsewhere.
        ok = status in allowed and headers.get("location", "").startswith(os.environ["WATCH_URL"] + "/#")
    else:
        body = json.loads(response.get("body") or "null")
        ok = status in allowed and isinstance(body, dict) and (status < 400 or {"error", "message"} <= set(body))
    print(f"{'ok  ' if ok else 'FAIL'} {name} -> {function}: {status}")
    if not ok:
        failures.append(f"{name}: {status} {response.get('body')}, expected {sorted(allowed)} with a JSON body")

for failure in failures:
    print(f"FAIL {failure}")
print(f"{len(files) - len([f for f in failures if ':' in f])} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
