#!/usr/bin/env bash
# `make admin STACK=<stack name> ARGS="<auth-admin command>"`: auth-admin
# against a deployed stack, with the environment it needs read from the
# stack's outputs (sam list stack-outputs, with your AWS credentials):
# TABLE_NAME, ROLES, BCRYPT_COST, JWT_ISSUER, and in sealed mode
# ROTATE_KEYS_FUNCTION and JWT_SIGNING_KEY. Prints that environment (no secret
# is in it) before it runs the command.
#
# No prebuilt auth-admin is published: the first run builds it in release
# mode (the AWS SDK: a few minutes); later runs rebuild only what changed.
# AUTH_ADMIN=<path> runs another build of it.
#
#   scripts/admin.sh --stack auth-lambda [--region eu-west-1] -- grant alice admin
# The region: --region, else AWS_REGION, else samconfig.toml's deploy region,
# else the AWS configuration's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# None of the steps before auth-admin may read standard input: it may hold a password.
"$root/scripts/tools.sh" </dev/null
# The project's sam (SAM=<path>: another, as the test's stand-in).
sam=${SAM:-$root/.tools/venv/bin/sam}

stack="" region=""
while (($#)); do
  case $1 in
    --stack) stack=$2; shift 2 ;;
    --region) region=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
if [[ -z $stack || $# -eq 0 ]]; then
  echo "usage: scripts/admin.sh --stack <stack name> [--region <region>] [--] <auth-admin command>" >&2
  echo "   or: make admin STACK=<stack name> ARGS=\"<auth-admin command>\"" >&2
  exit 2
fi

# The stack's region: --region, else the one samconfig.toml saved for the
# deploy, else the AWS configuration's. sam and auth-admin get the same one.
if [[ -z $region && -z ${AWS_REGION:-} && -f $root/samconfig.toml ]]; then
  region=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb")).get("default", {}).get("deploy", {}).get("parameters", {}).get("region", ""))' "$root/samconfig.toml")
fi
outputs=$(SAM_CLI_TELEMETRY=0 "$sam" list stack-outputs --stack-name "$stack" ${region:+--region "$region"} --output json </dev/null)
environment=$(python3 - "$outputs" <<'PY'
import json, sys
outputs = {o["OutputKey"]: o["OutputValue"] for o in json.loads(sys.argv[1])}
wanted = {"TABLE_NAME": "TableName", "ROLES": "Roles", "BCRYPT_COST": "BcryptCost", "JWT_ISSUER": "Issuer",
          "ROTATE_KEYS_FUNCTION": "RotateKeysFunctionName"}
missing = [key for key in ("TableName", "Roles", "BcryptCost", "Issuer") if key not in outputs]
if missing:
    sys.exit(f"the stack's outputs lack {missing}: is it this project's stack, deployed from this version?")
if any("\n" in value or "\r" in value for value in outputs.values()):
    sys.exit("an output of the stack spans lines: refusing to use it")
for variable, key in wanted.items():
    if key in outputs:
        print(f"{variable}={outputs[key]}")
if "SealingKeyArn" in outputs:
    print(f"JWT_SIGNING_KEY=sealed:{outputs['SealingKeyArn']}")
PY
)
while IFS= read -r line; do
  export "${line?}"
done <<<"$environment"
[[ -n $region ]] && export AWS_REGION=$region
echo "auth-admin environment, from the outputs of stack $stack:" >&2
sed 's/^/  /' <<<"$environment" >&2

admin=${AUTH_ADMIN:-}
if [[ -z $admin ]]; then
  # Built from this checkout every time: nothing to do when it is current.
  [[ -x $root/target/release/auth-admin ]] || echo "building auth-admin (release; the first time takes a few minutes)" >&2
  cargo build --release -q -p auth-admin --manifest-path "$root/Cargo.toml" </dev/null
  admin=$root/target/release/auth-admin
fi
exec "$admin" "$@"
