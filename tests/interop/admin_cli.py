"""auth-admin's user commands on a table it makes: create-user and
set-password refuse what the password policy refuses, show finds a user by
username and by the id the logs name (through the index by id) and shows
the verified and the pending address, set-password
replaces the hash, moves the epoch on (every session ends) and forgets failed
logins; remove-second-factor takes a lost second factor away and ends every
session; and scripts/admin.sh runs it with the environment a stack's outputs
give. (A table of an earlier version getting its indexes is make dev's
check: DynamoDB Local in memory may never finish building an index added to
a table; scripts/check-dev.py runs it on make dev's disk-backed one.)"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import uuid

import boto3

sys.path.insert(0, os.path.dirname(__file__))
from checks import check, finish  # noqa: E402

endpoint = os.environ["DYNAMODB_TEST_ENDPOINT"]
table = f"cli-{uuid.uuid4()}"
env = dict(os.environ, TABLE_NAME=table, AWS_ENDPOINT_URL_DYNAMODB=endpoint, BCRYPT_COST="10",
           AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_REGION="us-east-1")
ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="local", aws_secret_access_key="local")


def admin(*args, password=None):
    return subprocess.run(["target/debug/auth-admin", *args], env=env, text=True,
                          capture_output=True, input=None if password is None else password + "\n")


def user_item(name):
    return ddb.get_item(TableName=table, Key={"pk": {"S": f"USER#{name}"}, "sk": {"S": "PROFILE"}},
                        ConsistentRead=True).get("Item")


made_table = admin("create-table")
check("create-table makes the table with both indexes", made_table.returncode == 0 and sorted(
    i["IndexName"] for i in ddb.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", []))
    == ["sessions_by_user", "users_by_id"], made_table.stderr)
made = admin("create-user", "alice", "Alice Liddell", password="a long enough one")
check("create-user", made.returncode == 0, made.stderr)

weak = admin("create-user", "bob", "Bob", password="password")
check("create-user refuses a common password", weak.returncode != 0 and "common" in weak.stderr
      and user_item("bob") is None, weak.stderr)

alice = user_item("alice")
alice_id = alice["user_id"]["S"]
by_name = admin("show", "alice")
by_id = admin("show", alice_id)
check("show by username", by_name.returncode == 0 and alice_id in by_name.stdout, by_name.stderr)
check("show by id, through the index", by_id.returncode == 0 and "alice" in by_id.stdout
      and "Alice Liddell" in by_id.stdout, by_id.stdout + by_id.stderr)
check("show: no address yet", "email       none (verified)" in by_name.stdout
      and "pending     none" in by_name.stdout, by_name.stdout)
# An address verified and another waiting for its verification, as the
# account routes leave them.
ddb.update_item(TableName=table, Key={"pk": {"S": "USER#alice"}, "sk": {"S": "PROFILE"}},
                UpdateExpression="SET email = :e, email_pending = :p",
                ExpressionAttributeValues={":e": {"S": "alice@example.com"}, ":p": {"S": "alice@example.org"}})
addressed = admin("show", "alice").stdout
check("show: the verified address and the pending one", "email       alice@example.com (verified)" in addressed
      and "pending     alice@example.org" in addressed, addressed)
nobody = admin("show", str(uuid.uuid4()))
check("show of an unknown id fails", nobody.returncode != 0 and "no user with id" in nobody.stderr,
      nobody.stderr)

# A lockout, as a person who forgot the password may have.
ddb.put_item(TableName=table, Item={"pk": {"S": "LOCK#alice"}, "sk": {"S": "LOGIN"},
                                    "failures": {"N": "5"}, "locked_until": {"N": "9999999999"}})
refused = admin("set-password", "alice", password="alice")
check("set-password refuses what the policy refuses", refused.returncode != 0
      and user_item("alice")["password_hash"] == alice["password_hash"], refused.stderr)
done = admin("set-password", "alice", password="another long passphrase")
after = user_item("alice")
lock = ddb.get_item(TableName=table, Key={"pk": {"S": "LOCK#alice"}, "sk": {"S": "LOGIN"}},
                    ConsistentRead=True).get("Item")
check("set-password sets a new hash", done.returncode == 0
      and after["password_hash"] != alice["password_hash"], done.stderr)
check("set-password ends every session (the epoch moves on)",
      int(after["session_epoch"]["N"]) == int(alice["session_epoch"]["N"]) + 1)
check("set-password forgets failed logins", lock is None, str(lock))
check("the password is in no output", "passphrase" not in done.stdout + done.stderr)
check("show says unlocked", "locked      no" in admin("show", alice_id).stdout)

# scripts/admin.sh: the same commands against a deployed stack, the
# environment from its outputs. A stand-in `sam` answers `sam list
# stack-outputs` with this table's outputs, as CloudFormation would.
with tempfile.TemporaryDirectory() as fake_bin:
    outputs = [{"OutputKey": "TableName", "OutputValue": table}, {"OutputKey": "Roles", "OutputValue": "admin support"},
               {"OutputKey": "BcryptCost", "OutputValue": "10"},
               {"OutputKey": "Issuer", "OutputValue": "https://auth.example.com"},
               {"OutputKey": "ApiUrl", "OutputValue": "https://auth.example.com"}]
    sam = pathlib.Path(fake_bin, "sam")
    sam.write_text("#!/bin/sh\n"
                   "echo \"$*\" > \"$(dirname \"$0\")/args\"\n"
                   f"cat <<'JSON'\n{json.dumps(outputs)}\nJSON\n")
    sam.chmod(0o755)
    stack_env = dict(env, SAM=str(sam), AUTH_ADMIN=str(pathlib.Path("target/debug/auth-admin").resolve()))
    for variable in ("TABLE_NAME", "BCRYPT_COST", "ROLES"):
        stack_env.pop(variable, None)
    granted = subprocess.run(["scripts/admin.sh", "--stack", "auth-prod", "--region", "us-east-1", "--",
                              "grant", "alice", "support"], env=stack_env, text=True, capture_output=True)
    asked = pathlib.Path(fake_bin, "args").read_text()
    check("admin.sh reads the named stack's outputs in its region",
          "list stack-outputs --stack-name auth-prod --region us-east-1 --output json" in asked, asked)
    check("admin.sh runs auth-admin with the stack's table and roles (support, from the outputs)",
          granted.returncode == 0 and "support" in user_item("alice").get("roles", {}).get("SS", []),
          granted.stdout + granted.stderr)
    check("admin.sh shows the environment it used", f"TABLE_NAME={table}" in granted.stderr
          and "ROLES=admin support" in granted.stderr, granted.stderr)
    usage = subprocess.run(["scripts/admin.sh", "grant", "alice"], env=stack_env, text=True, capture_output=True)
    check("admin.sh without a stack: usage, exit 2", usage.returncode == 2 and "--stack" in usage.stderr, usage.stderr)

# A second factor lost with its recovery codes: the break-glass removes it
# (its item and the flag) and ends every session. The factor is written
# here as confirming one would leave it (the CLI does not enrol).
none = admin("remove-second-factor", "alice")
check("remove-second-factor: none to remove", none.returncode != 0 and "no second factor" in none.stderr,
      none.stderr)
before = user_item("alice")
ddb.update_item(TableName=table, Key={"pk": {"S": "USER#alice"}, "sk": {"S": "PROFILE"}},
                UpdateExpression="SET second_factor = :t", ExpressionAttributeValues={":t": {"BOOL": True}})
factor_key = {"pk": {"S": f"FACTOR#{alice_id}"}, "sk": {"S": "TOTP"}}
ddb.put_item(TableName=table, Item=dict(factor_key, state={"S": "active"}, sealed={"B": b"x" * 65},
                                        created_at={"N": "1"}, failures={"N": "0"}))
check("show says the second factor", "2nd factor  yes" in admin("show", "alice").stdout)
removed = admin("remove-second-factor", "alice")
after = user_item("alice")
check("remove-second-factor: the factor and the flag gone, every session ended",
      removed.returncode == 0 and "second_factor" not in after
      and "Item" not in ddb.get_item(TableName=table, Key=factor_key, ConsistentRead=True)
      and int(after["session_epoch"]["N"]) == int(before["session_epoch"]["N"]) + 1, removed.stdout + removed.stderr)
check("show says none", "2nd factor  no" in admin("show", "alice").stdout)

ddb.delete_table(TableName=table)
finish()
