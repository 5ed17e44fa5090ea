#!/usr/bin/env python3
"""Checks `make dev` as a newcomer uses it, on free ports and a scratch state
folder (so it runs beside a real `make dev`): it serves /login and /get_name for
the demo user it prints, the user survives a restart, and Ctrl-C (SIGINT to the
foreground process group) stops everything it started, Java included. While
the first run is up, every curl session of README.md and docs/ runs against it
(tests/docs/run_examples.py), a registration's verification mail is printed
to the console and filed in the state folder's mail/ (moto's SES) with a
link that verifies the address, and a table of an earlier version gets both
indexes from `auth-admin create-table`."""
import glob, http.client, json, os, re, signal, socket, subprocess, sys, tempfile, time, urllib.error, urllib.request, uuid

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0

def request(url, body=None, headers=None):
    headers = {"content-type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=body and json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

def fail(message, log):
    print(f"check-dev: FAIL: {message}\n--- make dev output:\n{open(log).read()[-3000:]}", file=sys.stderr)
    sys.exit(1)

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def run_once(state, ddb_port, port, log, examples=False):
    idp_port = free_port()
    env = dict(os.environ, DEV_DIR=state, DEV_DYNAMODB_PORT=str(ddb_port), DEV_PORT=str(port),
               DEV_SES_PORT=str(free_port()), DEV_IDP_PORT=str(idp_port), BCRYPT_COST="10")
    # Ctrl-C in a terminal: SIGINT to the whole foreground group, default disposition.
    proc = subprocess.Popen(["make", "--no-print-directory", "dev"], env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: (signal.signal(signal.SIGINT, signal.SIG_DFL), os.setpgrp()))
    try:
        deadline = time.time() + 600
        # Ready once the demo admin has its second factor (through the API).
        while not port_open(port) or f"== ready on http://localhost:{port}" not in open(log).read():
            if proc.poll() is not None or time.time() > deadline:
                fail("the watch never started", log)
            time.sleep(0.5)
        password = open(os.path.join(state, "demo-password")).read().strip()
        secret = open(os.path.join(state, "demo-totp-secret")).read().strip()
        recovery = open(os.path.join(state, "demo-recovery-codes")).read().split()
        if os.environ.get("TEST_SECRETS_FILE"):
            with open(os.environ["TEST_SECRETS_FILE"], "a") as secrets:
                secrets.write("\n".join([password, secret, *recovery]) + "\n")
        printed = open(log).read()
        if password not in printed or f"with a second factor: secret {secret} " not in printed:
            fail("make dev did not print the demo password and second factor's secret", log)
        if len(recovery) != 10:
            fail(f"make dev kept {len(recovery)} recovery codes of the demo admin's, not 10", log)
        base = f"http://127.0.0.1:{port}"
        # The demo admin's password asks for the second factor; a recovery
        # code (one per run: the docs' session below spends a code of the
        # moment, which a second use in the same 30 s would find spent).
        status, body = request(f"{base}/login", {"username": "demo", "password": password})
        if (status, body.get("error")) != (401, "mfa_required"):
            fail(f"login as demo, a password alone: {status} {body}", log)
        status, body = request(f"{base}/login/second-factor",
                               {"mfa_token": body["mfa_token"], "recovery_code": recovery[0 if examples else 1]})
        if status != 200:
            fail(f"login as demo, then a recovery code: {status} {body}", log)
        status, body = request(f"{base}/get_name", headers={"Authorization": f"Bearer {body['access_token']}"})
        if (status, body.get("name")) != (200, "Demo User"):
            fail(f"get_name: {status} {body}", log)
        # The page at 127.0.0.1 sends a newcomer to its one origin, localhost.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/")
        answer = conn.getresponse()
        location = answer.getheader("location")
        conn.close()
        if (answer.status, location) != (308, f"http://localhost:{port}/"):
            fail(f"GET http://127.0.0.1:{port}/: {answer.status} {location}", log)
        # Every curl session of the README and docs/, as written, against this stack.
        if examples:
            docs = subprocess.run([sys.executable, os.path.join(root, "tests/docs/run_examples.py"),
                                   f"http://localhost:{port}"], capture_output=True, text=True,
                                  env=dict(os.environ, DEV_DIR=state))
            print(docs.stdout, end="")
            if docs.returncode != 0:
                fail("the docs' curl sessions do not hold (above)", log)
        if examples:
            mail_check(state, base, port, log)
            upgrade_check(ddb_port, log)
            # "Sign in with Local IdP", as the page does it, against make dev's provider.
            federation = subprocess.run([sys.executable, os.path.join(root, "tests/idp/federation.py"),
                                         f"http://localhost:{port}", f"http://127.0.0.1:{idp_port}"],
                                        capture_output=True, text=True)
            print(federation.stdout, end="")
            if federation.returncode != 0:
                fail("make dev's Local IdP does not sign in (above)", log)
        # Several instances per function, as Lambda runs them: races can happen locally.
        watch = subprocess.run(["pgrep", "-af", "--", "lambda watch"], capture_output=True, text=True).stdout
        if f"--invoke-port {port} --concurrency 4 --disable-cors" not in watch:
            fail(f"the watch does not run 4 instances per function with its own CORS off: {watch.strip()}", log)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass  # make dev has already ended (a failed build): its output says why
        proc.wait(timeout=60)
    # make test scans what make dev wrote for secrets, with the watch's logs:
    # all of it but the banner, which prints the demo password on purpose
    # (its own line, and the curl hint under it), and its second factor's secret.
    # And the mail pump's line naming the address a message went to, printed
    # on purpose.
    if os.environ.get("CHECK_DEV_LOG"):
        password = open(os.path.join(state, "demo-password")).read().strip()
        secret = open(os.path.join(state, "demo-totp-secret")).read().strip()
        banner = lambda line: (password in line and (
            "== demo user:" in line or '"username": "demo"' in line)) or line.startswith("mail-pump: mail to ") \
            or f"with a second factor: secret {secret} " in line
        with open(os.environ["CHECK_DEV_LOG"], "a") as kept:
            kept.writelines(l for l in open(log, errors="replace") if not banner(l))
    for _ in range(100):
        if not port_open(port) and not port_open(ddb_port):
            break
        time.sleep(0.2)
    else:
        fail("after Ctrl-C something still listens on the dev ports", log)
    # "--": without it pgrep reads the pattern "-dbPath ..." as its own -d option.
    leftovers = subprocess.run(["pgrep", "-f", "--", f"-dbPath {state}"], capture_output=True, text=True).stdout.strip()
    if leftovers:
        fail(f"after Ctrl-C DynamoDB Local is still running: pid {leftovers}", log)

def mail_check(state, base, port, log):
    """A registration with an address: its verification, sent through moto's
    SES by the mail function (from the table's stream), is printed with its
    link and filed as JSON (to, subject, text) in the state folder's mail/;
    the link's token verifies the address."""
    address = f"newcomer-{uuid.uuid4().hex[:10]}@example.com"
    password = f"check-dev passphrase {uuid.uuid4().hex[:8]}"
    if os.environ.get("TEST_SECRETS_FILE"):
        with open(os.environ["TEST_SECRETS_FILE"], "a") as secrets:
            secrets.write(password + "\n")
    username = f"newcomer-{uuid.uuid4().hex[:8]}"
    status, body = request(f"{base}/register", {"username": username, "password": password,
                                                "name": "Newcomer", "email": address})
    if status != 201:
        fail(f"register with an address: {status} {body}", log)
    deadline, filed = time.time() + 120, None
    while filed is None and time.time() < deadline:
        for path in glob.glob(os.path.join(state, "mail", "*.json")):
            message = json.load(open(path))
            if message.get("to") == address:
                filed = message
        time.sleep(0.5)
    if filed is None:
        fail(f"no message to the new address in {state}/mail/ after two minutes", log)
    if filed["subject"] != "Verify your email address" or set(filed) != {"to", "subject", "text"}:
        fail(f"the filed message: {sorted(filed)} {filed['subject']!r}", log)
    link = re.search(rf"http://localhost:{port}/#verify=([A-Za-z0-9_-]{{64}})", filed["text"])
    if not link:
        fail("the filed message holds no link to the page", log)
    printed = open(log).read()
    if f"mail-pump: mail to {address}: Verify your email address" not in printed or link.group(0) not in printed:
        fail("make dev did not print the message's recipient, subject and link", log)
    status, body = request(f"{base}/account/email/verify", {"token": link.group(1)})
    if status != 200:
        fail(f"the mailed link's token does not verify the address: {status} {body}", log)
    print("check-dev: a registration's verification mail, printed and filed, verifies its address")

def upgrade_check(ddb_port, log):
    """A table of an earlier version, on make dev's disk-backed DynamoDB Local
    (DynamoDB Local in memory never finishes building an index it is given
    later): `auth-admin create-table`, as make dev runs it, adds the two
    indexes, one at a time, built over the items already there: a session
    joins the sessions index, a user the index by id (auth-admin show finds
    it by its id)."""
    import boto3
    ddb = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{ddb_port}", region_name="us-east-1",
                       aws_access_key_id="local", aws_secret_access_key="local")
    table = f"upgrade-{os.getpid()}-{int(time.time())}"
    keys = [("pk", "HASH"), ("sk", "RANGE")]
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
                     KeySchema=[{"AttributeName": k, "KeyType": kind} for k, kind in keys])
    ddb.put_item(TableName=table, Item={"pk": {"S": "SESSION#old"}, "sk": {"S": "SESSION"},
                                        "session_owner": {"S": "u-1"}, "created_at": {"N": "1"}})
    user_id = "0b7a4f1e-1c1e-4f5e-9a55-5a1f0c2d3e4f"
    ddb.put_item(TableName=table, Item={"pk": {"S": "USER#olduser"}, "sk": {"S": "PROFILE"}, "kind": {"S": "user"},
                                        "user_id": {"S": user_id}, "username": {"S": "olduser"},
                                        "name": {"S": "Old User"}, "password_hash": {"S": "$2b$10$" + "x" * 53},
                                        "active": {"BOOL": True}, "created_at": {"N": "1"},
                                        "session_epoch": {"N": "0"}, "revoked_sessions": {"M": {}}})
    env = dict(os.environ, TABLE_NAME=table, AWS_ENDPOINT_URL_DYNAMODB=f"http://127.0.0.1:{ddb_port}",
               AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_REGION="us-east-1")
    created = subprocess.run([os.path.join(root, "target/debug/auth-admin"), "create-table"], env=env,
                             capture_output=True, text=True, timeout=120)
    if created.returncode != 0:
        fail(f"auth-admin create-table over an earlier table: {created.stderr.strip()}", log)
    indexes = ddb.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])
    if sorted((i["IndexName"], i["IndexStatus"]) for i in indexes) != [("sessions_by_user", "ACTIVE"),
                                                                         ("users_by_id", "ACTIVE")]:
        fail(f"the earlier table did not get both indexes: {indexes}", log)
    found = ddb.query(TableName=table, IndexName="sessions_by_user", KeyConditionExpression="session_owner = :u",
                      ExpressionAttributeValues={":u": {"S": "u-1"}})["Count"]
    if found != 1:
        fail(f"the index does not hold the session already stored: {found}", log)
    shown = subprocess.run([os.path.join(root, "target/debug/auth-admin"), "show", user_id], env=env,
                           capture_output=True, text=True, timeout=60)
    if shown.returncode != 0 or "olduser" not in shown.stdout:
        fail(f"auth-admin show <id> does not find the user stored before the index: {shown.stderr.strip()}", log)
    ddb.delete_table(TableName=table)

def main():
    with tempfile.TemporaryDirectory() as state:
        log = os.path.join(state, "make-dev.log")
        ddb_port, port = free_port(), free_port()
        run_once(state, ddb_port, port, log, examples=True)
        first = open(log).read()
        if "created user demo" not in first:
            fail("the first run did not seed the demo user", log)
        run_once(state, ddb_port, port, log)  # data on disk: the same user, same password
        if "user demo exists already" not in open(log).read():
            fail("the demo user did not survive a restart", log)
    print("check-dev: make dev serves login and get_name, keeps its users, and stops cleanly on Ctrl-C")

main()
