#!/usr/bin/env python3
"""Contract test: schemathesis checks the running stack (the routed watch that
`make test` started, WATCH_URL) against openapi.yaml, with schemathesis.toml's
bounded, seeded settings. Six runs:
- every operation but /logout and the admin API, with a real token of a user
  no generated example touches (examples, coverage and fuzzing);
- the admin API, with a user that holds the admin role (granted by
  auth-admin, the break-glass) and has just logged in, so the fresh-login
  rule lets it act, every act on one user the run made (admin_target.py);
- /logout, alone, with a user of its own, so no run revokes the token it uses;
- the stateful phase with no token configured: it follows openapi.yaml's
  links from a registration to its login, and from the login to every use of
  its tokens (get_name, refresh and the refreshes after it, password change,
  logout, deletion), each with the token or password the chain carries
  (fresh_names.py keeps the chains from meeting generated usernames and
  addresses); then again, for the sessions list and re-authentication alone;
- the stateful phase as an admin: from a registration to each admin act on
  the user it registered;
then the passkeys' success answers, which need an authenticator to reach
(passkeys.py), each checked against its operation in openapi.yaml.
Each stateful run must see each of its operations succeed at the end of a
chain, in four seeded walks at most; a walk prints what each operation
answered, so a chain that stops early shows where."""
import collections, json, os, pathlib, re, subprocess, sys, tempfile, urllib.error, urllib.parse, urllib.request, uuid
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from noted import note, note_answer  # noqa: E402
import passkeys  # noqa: E402
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import totp  # noqa: E402

root = pathlib.Path(__file__).resolve().parents[2]
base = os.environ["WATCH_URL"]



def post(path, body, access=None, expect=None):
    headers = {"content-type": "application/json"}
    if access:
        headers["authorization"] = f"Bearer {access}"
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    note(body.get("password"))
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code != expect:
            raise
        answer = json.loads(error.read())
    note_answer(answer)
    return answer


def token_of_a_fresh_user(role):
    username = f"contract-{role}-{uuid.uuid4().hex[:10]}"
    password = f"contract passphrase {uuid.uuid4().hex[:8]}"
    post("/register", {"username": username, "password": password, "name": f"Contract {role}"})
    return post("/login", {"username": username, "password": password})["access_token"]


def token_of_a_fresh_admin():
    """An admin as the watch's deployment wants one (SECOND_FACTOR_ROLES:
    admin): a second factor enrolled through the API, the role granted, then
    a sign-in with the password and a recovery code (this moment's code is
    the enrolment's, spent)."""
    username = f"contract-admin-{uuid.uuid4().hex[:10]}"
    password = f"contract passphrase {uuid.uuid4().hex[:8]}"
    post("/register", {"username": username, "password": password, "name": "Contract admin"})
    access = post("/login", {"username": username, "password": password})["access_token"]
    secret = post("/account/second-factor", {}, access)["secret"]
    recovery = post("/account/second-factor/confirm", {"code": totp.code(secret)}, access)["recovery_codes"]
    environment = {**os.environ, "TABLE_NAME": os.environ["E2E_TABLE_NAME"],
                   "AWS_ENDPOINT_URL_DYNAMODB": os.environ["DYNAMODB_TEST_ENDPOINT"]}
    subprocess.run([str(root / "target" / "debug" / "auth-admin"), "grant", username, "admin"],
                   env=environment, check=True, stdout=subprocess.DEVNULL)
    asked = post("/login", {"username": username, "password": password}, expect=401)
    assert asked["error"] == "mfa_required", asked
    signed_in = post("/login/second-factor", {"mfa_token": asked["mfa_token"], "recovery_code": recovery[0]})
    return signed_in["access_token"]


def schemathesis(token, *selection, hooks=None):
    """One run; returns its exit code, the links it covered (of how many),
    and the operations it saw succeed (2xx)."""
    har = pathlib.Path(scratch.name) / f"{uuid.uuid4().hex}.har"
    command = ["st", "--config-file", str(root / "schemathesis.toml"), "run", str(root / "openapi.yaml"),
               "--url", base, "--no-color", "--report", "har", "--report-har-path", str(har), *selection]
    if token is not None:
        command += ["--header", f"Authorization: Bearer {token}"]
    environment = dict(os.environ)
    if hooks is not None:
        environment.update(SCHEMATHESIS_HOOKS=hooks, PYTHONPATH=str(root / "tests" / "contract"))
    run = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True)
    print(run.stdout, end="")
    print(run.stderr, end="", file=sys.stderr)
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", run.stdout)
    seen, statuses = set(), {}
    for entry in json.loads(har.read_text())["log"]["entries"] if har.exists() else []:
        operation = f"{entry['request']['method']} {template_of(urllib.parse.urlsplit(entry['request']['url']).path)}"
        status = entry["response"]["status"]
        statuses.setdefault(operation, collections.Counter())[status] += 1
        if 200 <= status < 300:
            seen.add(operation)
    return run.returncode, (int(links.group(1)), int(links.group(2))) if links else None, seen, statuses


def walks(token, *selection, succeeded):
    """The stateful phase, seed after seed (each walk is random, and
    reproducible by its seed), until every operation of `succeeded` has
    answered with success at the end of a chain, four walks at most.
    Returns the exit code (the first failing walk's) and what never succeeded."""
    seen = set()
    for seed in (42, 43, 44, 45):
        code, links, ok, statuses = schemathesis(token(), "--phases", "stateful", "--seed", str(seed), *selection,
                                                 hooks="fresh_names")
        seen |= ok
        print(f"walk with seed {seed}: exit {code}, links {links}, succeeded so far {len(seen & set(succeeded))}"
              f" of {len(succeeded)}; answers: "
              + "; ".join(f"{op} {dict(sorted(count.items()))}" for op, count in sorted(statuses.items())))
        if code != 0 or set(succeeded) <= seen:
            return code, set(succeeded) - seen
    return 0, set(succeeded) - seen


def template_of(path):
    """A path as openapi.yaml names it."""
    for pattern, template in [(r"/admin/users/[^/]+/roles/[^/]+", "/admin/users/{username}/roles/{role}"),
                              (r"/admin/users/[^/]+/(lock|sessions|password)", r"/admin/users/{username}/\1"),
                              (r"/admin/users/[^/]+", "/admin/users/{username}"),
                              (r"/sessions/[^/]+", "/sessions/{id}")]:
        if re.fullmatch(pattern, path):
            return re.sub(pattern, template, path)
    return path


# The HAR reports carry tokens and passwords: kept in a folder that goes with the run.
scratch = tempfile.TemporaryDirectory()


# The admin run's every act targets this user (admin_target.py).
target = f"contract-target-{uuid.uuid4().hex[:10]}"
post("/register", {"username": target, "password": f"contract passphrase {uuid.uuid4().hex[:8]}", "name": "Target"})
os.environ["CONTRACT_ADMIN_TARGET"] = target

STATELESS = ["--phases", "examples,coverage,fuzzing"]
stateless = [
    ("every operation but /logout and the admin API",
     schemathesis(token_of_a_fresh_user("main"), *STATELESS, "--exclude-path", "/logout",
                  "--exclude-path-regex", "^/admin/")),
    ("the admin API, as an admin",
     schemathesis(token_of_a_fresh_admin(), *STATELESS, "--include-path-regex", "^/admin/", hooks="admin_target")),
    ("/logout, with its own user",
     schemathesis(token_of_a_fresh_user("logout"), *STATELESS, "--include-path", "/logout")),
]
# The chains: no token configured, the links carry each chain's own. One
# session's id is in no answer (only in its token), and the discovery
# documents link nowhere: the user's chains leave them out.
stateful = [
    ("the links: register, log in, use the tokens",
     # The recovery and address routes have no links: a walk that picked them
     # would spend its steps away from the chain.
     walks(lambda: None, "--exclude-path-regex", r"^/(admin/|\.well-known/|sessions/|password/reset|account/email)",
           succeeded=["POST /register", "POST /login", "GET /get_name", "POST /refresh",
                      "POST /password", "POST /logout", "DELETE /account"])),
    # Fifteen links from a login: a walk of all of them picks some rarely. The
    # session list and re-authentication get a walk of their own.
    ("the links: register, log in, list the sessions, re-authenticate",
     walks(lambda: None, "--include-path-regex", r"^/(register|login|get_name|sessions|reauthenticate)$",
           succeeded=["POST /register", "POST /login", "GET /sessions", "POST /reauthenticate"])),
    ("the links: register, then each admin act on that user",
     walks(token_of_a_fresh_admin, "--include-path-regex", "^/(register$|admin/)",
           succeeded=["GET /admin/users/{username}", "PATCH /admin/users/{username}",
                      "DELETE /admin/users/{username}", "PUT /admin/users/{username}/roles/{role}",
                      "DELETE /admin/users/{username}/roles/{role}", "DELETE /admin/users/{username}/lock",
                      "DELETE /admin/users/{username}/sessions", "PUT /admin/users/{username}/password",
                      "GET /admin/users"])),
]
failed = []
passkey_problems = passkeys.walk(base, note, note_answer, totp)
for problem in passkey_problems:
    print(f"  {problem}")
print(f"{'FAIL' if passkey_problems else 'ok  '} the passkeys' answers against openapi.yaml")
if passkey_problems:
    failed.append("the passkeys' answers")
for name, (code, *_) in stateless:
    print(f"{'ok  ' if code == 0 else 'FAIL'} schemathesis: {name}" + ("" if code == 0 else f" (exit {code})"))
    if code != 0:
        failed.append(name)
for name, (code, missing) in stateful:
    problem = f"exit {code}" if code != 0 else f"never succeeded: {sorted(missing)}" if missing else None
    print(f"{'FAIL' if problem else 'ok  '} schemathesis: {name}" + (f" ({problem})" if problem else ""))
    if problem:
        failed.append(name)
total = len(stateless) + len(stateful) + 1
print(f"{total - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
