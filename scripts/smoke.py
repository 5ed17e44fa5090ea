#!/usr/bin/env python3
"""`make smoke URL=https://…`: after a deploy, one user's whole life through
the real API, each step printed: the discovery document names the URL as
its issuer (else the page's cookie cannot work), the JWKS verifies the
tokens, the page is served; then a throwaway user registers, logs in, reads
its name, asks a password reset (the one fixed answer; it has no address,
so nothing is mailed), refreshes, logs out everywhere its refresh token
dies, and deletes itself, so the stack is left as it was. With sign-up closed (403
sign_up_closed), give an existing account instead: SMOKE_USERNAME and
SMOKE_PASSWORD (nothing is deleted then, but that account is logged out
everywhere). A failure prints the status and the error code, never a body
that may carry a token. Exit status 0 only if every step passed. Standard
library and PyJWT (in .tools/venv) only."""
import json
import os
import secrets
import sys
import urllib.error
import urllib.request

import jwt

if len(sys.argv) != 2 or not sys.argv[1].startswith(("http://", "https://")):
    sys.exit("usage: scripts/smoke.py <the API's URL, e.g. the stack's ApiUrl output>")
base = sys.argv[1].rstrip("/")
failures = []


def step(name, condition, detail=""):
    print(f"{'ok  ' if condition else 'FAIL'} {name}" + ("" if condition else f": {detail}"))
    if not condition:
        failures.append(name)
    return condition


def call(method, path, body=None, token=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()
    except OSError as error:
        return 0, {}, str(error).encode()


def said(status, answer):
    """What a failure prints: the status and the error code, never a token."""
    return f"{status} {answer.get('error', '')}".strip()


def answer(method, path, body=None, token=None):
    status, _, raw = call(method, path, body, token)
    try:
        return status, json.loads(raw or b"{}")
    except ValueError:
        return status, {"raw": raw[:200].decode(errors="replace")}


def finish():
    print(f"smoke: {'all passed' if not failures else f'{len(failures)} failed'} against {base}")
    sys.exit(1 if failures else 0)


status, discovery = answer("GET", "/.well-known/openid-configuration")
step("discovery answers", status == 200, said(status, discovery))
step("its issuer is this URL (JwtIssuer, or the custom domain)", discovery.get("issuer") == base,
     f"{discovery.get('issuer')!r}: set JwtIssuer to {base!r} and deploy again")
status, jwks = answer("GET", "/.well-known/jwks.json")
keys = jwks.get("keys", []) if status == 200 else []
step("the JWKS lists a signing key", any(k.get("kty") == "RSA" for k in keys), said(status, jwks))
status, headers, page = call("GET", "/")
step("the sign-in page is served", status == 200 and "text/html" in headers.get("content-type", ""),
     f"{status} {headers.get('content-type')}")

username = os.environ.get("SMOKE_USERNAME")
password = os.environ.get("SMOKE_PASSWORD")
throwaway = not username
if throwaway:
    username, password = f"smoke-{secrets.token_hex(6)}", f"smoke {secrets.token_urlsafe(18)}"
    status, created = answer("POST", "/register", {"username": username, "password": password, "name": "Smoke Test"})
    if status == 403 and created.get("error") == "sign_up_closed":
        step("registration", False, "sign-up is closed here: set SMOKE_USERNAME and SMOKE_PASSWORD to an account")
        finish()
    step("a throwaway user registers", status == 201, said(status, created))

status, login = answer("POST", "/login", {"username": username, "password": password})
if not step("it logs in", status == 200 and "access_token" in login, said(status, login)):
    finish()
access, refresh = login["access_token"], login["refresh_token"]
try:
    kid = jwt.get_unverified_header(access)["kid"]
    key = next(jwt.PyJWK(k) for k in keys if k.get("kid") == kid)
    claims = jwt.decode(access, key.key, algorithms=["RS256"], issuer=base, options={"verify_aud": False})
    step("the access token verifies with the JWKS (RS256, issuer, expiry)", claims.get("sub") is not None)
except (StopIteration, jwt.PyJWTError, KeyError) as error:
    step("the access token verifies with the JWKS (RS256, issuer, expiry)", False, repr(error))

status, name = answer("GET", "/get_name", token=access)
step("/get_name with the token", status == 200 and "name" in name, said(status, name))
if throwaway:
    # No address: the mail function finds nothing to send.
    status, reset = answer("POST", "/password/reset", {"username": username})
    step("a reset request gets the one fixed answer (202)", status == 202 and "message" in reset, said(status, reset))
status, renewed = answer("POST", "/refresh", {"refresh_token": refresh})
step("the refresh token gives new tokens", status == 200 and "access_token" in renewed, said(status, renewed))
access, old_refresh = renewed.get("access_token", access), refresh
refresh = renewed.get("refresh_token", refresh)
status, _ = answer("POST", "/logout", {"all": True}, token=access)
step("log out everywhere", status == 200, status)
status, dead = answer("POST", "/refresh", {"refresh_token": refresh})
step("after it, the refresh token is refused", status == 401, said(status, dead))

if throwaway:
    status, relogin = answer("POST", "/login", {"username": username, "password": password})
    token = relogin.get("access_token")
    status, gone = answer("DELETE", "/account", {"password": password}, token=token)
    step("the throwaway user deletes itself", status == 200, said(status, gone))
finish()
