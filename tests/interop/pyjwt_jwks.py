#!/usr/bin/env python3
"""Interop: another service verifies our tokens with a standard JWT library
that is not ours (PyJWT and its JWKS client), from our discovery documents,
against the routed watch that `make test` started (WATCH_URL); and the
backend snippets of docs/clients.md (PyJWT, Node's jose) do, as written."""
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

# The backend snippets of docs/clients.md, as written there, given our issuer
# and audience: PyJWT's in this process, jose's in Node (web/node_modules).
import subprocess  # noqa: E402

root = pathlib.Path(__file__).resolve().parents[2]
docs = (root / "docs" / "clients.md").read_text()


def snippet(name, language):
    start = docs.index(f"<!-- snippet: {name} -->")
    block = docs[docs.index(f"```{language}\n", start) + len(language) + 4:]
    return block[:block.index("\n```")]


forged = f"{head}.{forged_payload}.{signature}"
scope = {"ISSUER": issuer, "AUDIENCE": audience}
exec(snippet("pyjwt", "python"), scope)
check("the docs' PyJWT snippet verifies our token", scope["verify"](token)["sub"] == claims["sub"])
refused("the docs' PyJWT snippet refuses an edited payload", lambda: scope["verify"](forged), jwt.InvalidTokenError)
runner = root / "web" / "node_modules" / ".cache" / "snippet-jose.mjs"
runner.parent.mkdir(parents=True, exist_ok=True)
runner.write_text(f"const ISSUER = {json.dumps(issuer)}, AUDIENCE = {json.dumps(audience)};\n"
                  + snippet("jose", "js") + """
const [good, bad] = process.argv.slice(2);
const payload = await verify(good);
let refused = false;
try { await verify(bad); } catch { refused = true; }
console.log(JSON.stringify({ sub: payload.sub, refused }));
""")
ran = subprocess.run(["node", str(runner), token, forged], capture_output=True, text=True, timeout=60)
result = json.loads(ran.stdout or "{}") if ran.returncode == 0 else {}
check("the docs' jose snippet verifies our token", result.get("sub") == claims["sub"], ran.stderr[-500:])
check("the docs' jose snippet refuses an edited payload", result.get("refused") is True, result)

finish()
