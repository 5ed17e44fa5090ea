"""The passkeys' success answers against openapi.yaml. schemathesis makes
every request of its own runs, and no generated request can answer a
WebAuthn challenge: here the tests' software authenticator
(tools/authenticator's command, `authenticator`) does, as a browser on
the watch's passkey origin would, and each answer of the walk is checked
against the operation openapi.yaml documents for it (status, headers, body):
add a passkey, list, rename, sign in with it alone, prove it within the
session, sign in with a password and then the passkey as the second step,
remove it. Returns the problems found, none when the answers conform."""
import json, pathlib, subprocess, tempfile, urllib.parse, uuid

import requests
import schemathesis

root = pathlib.Path(__file__).resolve().parents[2]
authenticator = root / "target" / "debug" / "authenticator"


def walk(base, note, note_answer, totp):
    schema = schemathesis.openapi.from_path(str(root / "openapi.yaml"))
    # make test's watch serves on 127.0.0.1 and names http://localhost:<port>
    # its passkeys' origin (PASSKEY_ORIGINS): the browser's page is there.
    origin = f"http://localhost:{urllib.parse.urlsplit(base).port}"
    problems, checked = [], []
    state = pathlib.Path(tempfile.mkdtemp()) / "authenticator.json"

    def call(method, path, template, body=None, access=None, expect=200):
        headers = {"authorization": f"Bearer {access}"} if access else {}
        response = requests.request(method, base + path, json=body, headers=headers, timeout=120)
        answer = response.json() if response.content else {}
        note_answer(answer)
        checked.append(f"{method} {template} {response.status_code}")
        if response.status_code != expect:
            problems.append(f"{method} {template}: {response.status_code}, not {expect}: {response.text[:300]}")
            return answer
        try:
            schema[template][method].validate_response(response)
        except Exception as failure:  # schemathesis's failure groups
            problems.append(f"{method} {template} {response.status_code}: {failure}")
        return answer

    def answer(action, options):
        """The authenticator's answer to `options` ({"publicKey": …})."""
        run = subprocess.run([str(authenticator), str(state), origin, action], input=json.dumps(options),
                             capture_output=True, text=True, check=True)
        return json.loads(run.stdout)

    try:
        username = f"contract-passkey-{uuid.uuid4().hex[:10]}"
        password = f"contract passphrase {uuid.uuid4().hex[:8]}"
        note(password)
        call("POST", "/register", "/register", {"username": username, "password": password, "name": "Passkey"},
             expect=201)
        access = call("POST", "/login", "/login", {"username": username, "password": password})["access_token"]

        begun = call("POST", "/account/passkeys/options", "/account/passkeys/options", {}, access)
        added = call("POST", "/account/passkeys", "/account/passkeys",
                     {"ceremony": begun["ceremony"], "credential": answer("create", begun["options"]), "name": "Laptop"},
                     access, expect=201)
        listed = call("GET", "/account/passkeys", "/account/passkeys", access=access)
        if [p["id"] for p in listed.get("passkeys", [])] != [added.get("id")]:
            problems.append(f"the list is not the passkey added: {listed}")
        escaped = urllib.parse.quote(added["id"], safe="")
        call("PATCH", f"/account/passkeys/{escaped}", "/account/passkeys/{id}", {"name": "Work laptop"}, access)

        begun = call("POST", "/login/passkey/options", "/login/passkey/options", {})
        signed_in = call("POST", "/login/passkey", "/login/passkey",
                         {"ceremony": begun["ceremony"], "credential": answer("get", begun["options"])})
        passkey_access = signed_in.get("access_token")

        begun = call("POST", "/account/passkeys/verify/options", "/account/passkeys/verify/options", {}, passkey_access)
        call("POST", "/account/passkeys/verify", "/account/passkeys/verify",
             {"ceremony": begun["ceremony"], "credential": answer("get", begun["options"])}, passkey_access)

        # A code factor beside the passkey: the password's step asks for a
        # second, and the passkey may be it.
        secret = call("POST", "/account/second-factor", "/account/second-factor", {}, passkey_access,
                      expect=201)["secret"]
        note(secret)
        call("POST", "/account/second-factor/confirm", "/account/second-factor/confirm", {"code": totp.code(secret)},
             passkey_access)
        asked = call("POST", "/login", "/login", {"username": username, "password": password}, expect=401)
        if "passkey" not in asked.get("factors", []):
            problems.append(f"the password's step does not offer the passkey: {asked.get('factors')}")
        begun = call("POST", "/login/passkey/options", "/login/passkey/options", {"mfa_token": asked["mfa_token"]})
        second = call("POST", "/login/passkey", "/login/passkey",
                      {"ceremony": begun["ceremony"], "credential": answer("get", begun["options"]),
                       "mfa_token": asked["mfa_token"]})

        call("DELETE", f"/account/passkeys/{escaped}", "/account/passkeys/{id}", access=second.get("access_token"))
        listed = call("GET", "/account/passkeys", "/account/passkeys", access=second.get("access_token"))
        if listed.get("passkeys"):
            problems.append(f"the passkey is still listed after its removal: {listed}")
    except Exception as failure:  # a step that could not go on: its answer is above
        problems.append(f"the walk stopped after {checked[-1:] or 'nothing'}: {failure!r}")
    print("passkeys' answers checked against openapi.yaml: " + "; ".join(checked))
    return problems
