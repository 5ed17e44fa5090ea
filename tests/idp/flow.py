#!/usr/bin/env python3
"""The local identity provider (tools/idp, panva's oidc-provider) as the
federation will use it, driven like a browser: the authorization code flow
with PKCE (S256), state and nonce, through its development login and
consent forms; the answer carries `iss` (RFC 9207); the code is traded at
the token endpoint with the client's secret and the verifier; the ID token
verifies with the provider's JWKS (RS256, issuer, audience, nonce) and
carries the account's name and address (verified, unless the login starts
with "unverified-"). Refused: a code without its verifier, a code used
twice, a redirect URI not registered. Usage: flow.py <issuer> <client_id>
<client_secret> <redirect_uri>."""
import base64, hashlib, json, os, secrets, sys, urllib.parse

import jwt

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from checks import check, finish  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from browse import browser, get, walk  # noqa: E402

issuer, client_id, client_secret, redirect_uri = sys.argv[1:5]


def sign_in(login, redirect=redirect_uri):
    """The browser's part: the authorization request, the login form, the
    consent form; returns the final redirect's location and what was sent."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    query = urllib.parse.urlencode({"client_id": client_id, "redirect_uri": redirect, "response_type": "code",
                                    "scope": "openid email profile", "state": state, "nonce": nonce,
                                    "code_challenge": challenge, "code_challenge_method": "S256"})
    return walk(f"{issuer}/auth?{query}", login, redirect), state, nonce, verifier


def trade(code, verifier=None):
    basic = base64.b64encode(f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(client_secret)}".encode()).decode()
    fields = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier:
        fields["code_verifier"] = verifier
    status, _, body = get(browser(), f"{issuer}/token", urllib.parse.urlencode(fields).encode(),
                          {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"})
    return status, json.loads(body)


discovery = json.loads(get(browser(), f"{issuer}/.well-known/openid-configuration")[2])
check("discovery names the issuer exactly", discovery.get("issuer") == issuer, discovery.get("issuer"))
check("it offers S256 PKCE and the iss parameter", discovery.get("code_challenge_methods_supported") == ["S256"]
      and discovery.get("authorization_response_iss_parameter_supported") is True)

location, state, nonce, verifier = sign_in("Ada")
answer = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
check("the login and consent forms end at the redirect URI with a code", "code" in answer, location[:200])
check("… with our state and the issuer (RFC 9207)", answer.get("state") == state and answer.get("iss") == issuer,
      answer)
check("a code without its verifier is refused", trade(answer.get("code", ""))[1].get("error") == "invalid_grant")

location, state, nonce, verifier = sign_in("Ada")
code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query)).get("code", "")
status, tokens = trade(code, verifier)
check("the code and its verifier get an ID token", status == 200 and "id_token" in tokens, tokens.get("error"))
keys = jwt.PyJWKClient(discovery["jwks_uri"])
try:
    claims = jwt.decode(tokens["id_token"], keys.get_signing_key_from_jwt(tokens["id_token"]).key,
                        algorithms=["RS256"], audience=client_id, issuer=issuer)
except Exception as error:  # noqa: BLE001 - reported as the check's detail
    claims = {"error": repr(error)}
check("the ID token verifies with the JWKS (RS256, issuer, audience)", claims.get("sub") == "Ada", claims)
check("… carries our nonce", claims.get("nonce") == nonce)
check("… and the account's name and verified address", (claims.get("name"), claims.get("email"),
      claims.get("email_verified")) == ("Ada", "ada@idp.localhost", True), claims)
check("a code used twice is refused", trade(code, verifier)[1].get("error") == "invalid_grant")

location, *_ , verifier = sign_in("unverified-bo")
code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query)).get("code", "")
status, tokens = trade(code, verifier)
unverified = jwt.decode(tokens.get("id_token", ""), options={"verify_signature": False}) if status == 200 else {}
check("an \"unverified-\" login's address is not verified", unverified.get("email_verified") is False, unverified)

location, *_ = sign_in("Ada", redirect="http://localhost:1/elsewhere")
check("a redirect URI not registered gets no code", "code=" not in location, location[:200])
finish()
