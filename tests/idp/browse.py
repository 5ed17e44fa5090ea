"""A browser's part at the local identity provider (tools/idp): follow its
redirects and fill its development login and consent forms, one hop at a
time (no redirect is followed blindly), until it sends the browser to the
redirect URI. Shared by flow.py and federation.py."""
import html, http.cookiejar, re, urllib.error, urllib.parse, urllib.request


class Stop(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: each hop is looked at."""
    def redirect_request(self, *args, **kwargs):
        return None


def browser():
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), Stop())


def get(opener, url, data=None, headers=None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def walk(url, login, redirect):
    """From the authorization URL to the redirect back: its location (or
    what went wrong, as text)."""
    opener = browser()
    for _ in range(10):
        status, headers, body = get(opener, url)
        if status in (302, 303):
            location = urllib.parse.urljoin(url, headers["Location"])
            if location.startswith(redirect):
                return location
            url = location
            continue
        form = re.search(r'<form[^>]*action="([^"]+)"', body)
        if status != 200 or not form:
            return f"{status}: {body[:200]}"
        prompt = re.search(r'name="prompt" value="(\w+)"', body).group(1)
        fields = {"prompt": prompt} | ({"login": login, "password": "any"} if prompt == "login" else {})
        status, headers, body = get(opener, urllib.parse.urljoin(url, html.unescape(form.group(1))),
                                    urllib.parse.urlencode(fields).encode())
        if status not in (302, 303):
            return f"{status} after {prompt}: {body[:200]}"
        url = urllib.parse.urljoin(url, headers["Location"])
    return "too many hops"
