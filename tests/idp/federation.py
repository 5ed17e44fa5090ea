#!/usr/bin/env python3
"""Federation end to end, over HTTP: the watch's federation function and the
local identity provider (tools/idp, a certified oidc-provider), as a browser
drives them. Sign up with the provider (a new account, signed in through the
refresh cookie, as the page does after the redirect), sign in again (the same
account), the callback replayed (nothing), a callback in a browser that did
not start the round trip (nothing), and the provider's refusal (back to the
page with why). Usage: federation.py <watch URL> <provider's issuer>."""
import json, os, sys, urllib.error, urllib.parse, urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from checks import check, finish  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from browse import browser, walk  # noqa: E402

watch, issuer = sys.argv[1:3]
callback = f"{watch}/oidc/local/callback"
api = browser()  # cookies are ours to carry: they are Secure, and this is http


def note_secret(secret):
    path = os.environ.get("TEST_SECRETS_FILE")
    if path and secret and len(secret) >= 8:
        with open(path, "a") as f:
            f.write(secret + "\n")


def call(method, path, body=None, cookies=None, origin=True):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if origin:
        headers["Origin"] = watch
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    request = urllib.request.Request(f"{watch}{path}", data=None if body is None else json.dumps(body).encode(),
                                     headers=headers, method=method)
    try:
        response = api.open(request, timeout=60)
    except urllib.error.HTTPError as error:
        response = error
    set_cookies = {}
    for value in response.headers.get_all("Set-Cookie") or []:
        name, rest = value.split("=", 1)
        set_cookies[name] = (rest.split(";")[0], value)
    text = response.read().decode()
    return response.status, response.headers, set_cookies, (json.loads(text) if text.startswith("{") else text)


def start():
    status, _, cookies, body = call("POST", "/oidc/local/start", {})
    check("start: 200 with the provider's URL and the round trip's cookie",
          status == 200 and body.get("authorization_url", "").startswith(f"{issuer}/auth?")
          and "__Host-oidc" in cookies, (status, body))
    handle, attributes = cookies.get("__Host-oidc", ("", ""))
    check("… its cookie is HttpOnly, Secure, SameSite=Lax", all(a in attributes for a in
          ("HttpOnly", "Secure", "SameSite=Lax", "Path=/")), attributes)
    return body.get("authorization_url", ""), handle


def come_back(location, handle):
    path = location[len(watch):]
    status, headers, cookies, _ = call("GET", path, cookies={"__Host-oidc": handle} if handle else None,
                                       origin=False)
    return status, headers.get("Location", ""), cookies


def signed_in_as(cookies):
    refresh = cookies.get("__Host-refresh_token", ("", ""))[0]
    note_secret(refresh)
    if not refresh:
        return None
    status, _, _, body = call("POST", "/refresh", {}, cookies={"__Host-refresh_token": refresh})
    if status != 200:
        return f"refresh {status}: {body}"
    note_secret(body["access_token"])
    request = urllib.request.Request(f"{watch}/get_name", headers={"Authorization": f"Bearer {body['access_token']}"})
    with api.open(request, timeout=60) as response:
        return json.loads(response.read())


status, _, _, providers = call("GET", "/oidc/providers", origin=False)
check("the providers' list names the local one", status == 200 and providers == {"providers": [
    {"id": "local", "name": "Local IdP"}]}, providers)

# Sign up: a new account, named by the provider.
url, handle = start()
location = walk(url, "Grace", callback)
check("the provider sends the browser back to our callback with a code",
      location.startswith(callback) and "code=" in location, location[:200])
status, page, cookies = come_back(location, handle)
check("the callback: 303 to the page, signed in", status == 303 and page == f"{watch}/"
      and "__Host-refresh_token" in cookies, (status, page, sorted(cookies)))
first = signed_in_as(cookies)
check("… as a new account, its name the provider's", isinstance(first, dict) and first.get("name") == "Grace", first)
check("… the round trip's cookie cleared", "Max-Age=0" in cookies.get("__Host-oidc", ("", ""))[1])

# The same callback again: the round trip is used up.
status, page, cookies = come_back(location, handle)
check("the callback replayed: back to the page with sign_in_failed, no session",
      status == 303 and page == f"{watch}/#sign_in_error=sign_in_failed" and "__Host-refresh_token" not in cookies,
      (status, page))

# Sign in again: the same account.
url, handle = start()
status, page, cookies = come_back(walk(url, "Grace", callback), handle)
again = signed_in_as(cookies)
check("signing in again reaches the same account", status == 303 and again == first, again)

# A callback in a browser that did not start it (login CSRF).
url, _ = start()
status, page, cookies = come_back(walk(url, "Mallory", callback), None)
check("a callback without the round trip's cookie signs nobody in",
      page == f"{watch}/#sign_in_error=sign_in_failed" and "__Host-refresh_token" not in cookies, page)

# The person says no at the provider: the provider's own error answer.
url, handle = start()
state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["state"]
denied = f"{callback}?" + urllib.parse.urlencode({"error": "access_denied", "state": state, "iss": issuer})
status, page, cookies = come_back(denied, handle)
check("the provider's refusal lands on the page with access_denied",
      page == f"{watch}/#sign_in_error=access_denied" and "__Host-refresh_token" not in cookies, page)
finish()
