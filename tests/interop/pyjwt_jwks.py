#!/usr/bin/env python3
"""Interop: another service verifies our tokens with a standard JWT library
that is not ours (PyJWT and its JWKS client), from our discovery documents,
against the routed watch that `make test` started (WATCH_URL)."""
import json, os, pathlib, sys, urllib.error, urllib.request, uuid
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from noted import note, note_answer  # noqa: E402
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from checks import check, finish, refused  # noqa: E402

import jwt
from jwt import PyJWKClient

base = os.environ["WATCH_URL"]
audience = os.environ["E2E_JWT_AUDIENCE"]



def call(path, body=None):
    request = urllib.request.Request(base + path, data=body and json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    note((body or {}).get("password"))
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
            note_answer(answer)
            return response.status, answer, response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers




username, password = f"pyjwt-{uuid.uuid4().hex[:10]}", "interop passphrase 42"
status, body, _ = call("/register", {"username": username, "password": password, "name": "Py Jwt"})
check("register", status == 201, body)
status, body, _ = call("/login", {"username": username, "password": password})
check("login", status == 200, body)
token = body["access_token"]

status, discovery, headers = call("/.well-known/openid-configuration")
check("discovery document", status == 200, discovery)
check("discovery is cacheable", "max-age" in headers.get("cache-control", ""))
issuer = discovery["issuer"]
check("issuer matches the tokens' iss", jwt.decode(token, options={"verify_signature": False})["iss"] == issuer)
check("RS256 advertised", discovery["id_token_signing_alg_values_supported"] == ["RS256"])

# What any other service would do: the JWKS client picks the key by kid.
signing_key = PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
claims = jwt.decode(token, signing_key.key, algorithms=["RS256"], audience=audience, issuer=issuer,
                    options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]})
check("PyJWT verifies our token", claims["username"] == username, claims)
check("typ is at+jwt", jwt.get_unverified_header(token)["typ"] == "at+jwt")

head, payload, signature = token.split(".")
forged_payload = jwt.utils.base64url_encode(json.dumps({**claims, "username": "mallory"}).encode()).decode()
refused("PyJWT refuses an edited payload",
        lambda: jwt.decode(f"{head}.{forged_payload}.{signature}", signing_key.key, algorithms=["RS256"],
                           audience=audience, issuer=issuer),
        jwt.InvalidSignatureError)

finish()
