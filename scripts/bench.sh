#!/usr/bin/env bash
# `make bench`: what Lambda runs, measured against the floor (a hello-world
# function on the same runtime and release profile) and beside the Flask
# peer (../shared/peers/flask-seed), all in one run on this machine: each
# function's init, first and warm invocations through a Runtime API of the
# bench's own, from the plain path to the production path (JSON logs at
# INFO, KMS keys through moto, TLS to DynamoDB and KMS); peak RSS on each
# success path; arm64 zip sizes; login's own work; login timing. Writes the
# tables, stamped, to docs/measured/bench.md, and exits non-zero when a
# budget is missed. Not part of `make test`: timings on a shared machine are
# noisy; the budgets compare figures of the same run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
begin_run
peer="${PEER:-$root/../shared/peers/flask-seed}"
functions=(login get-name register refresh logout password admin jwks web federation second-factor passkeys floor)

echo "== build (release, this machine; arm64 zips for the sizes)"
cargo build --release --workspace --bins
cargo lambda build --release --arm64 --output-format zip "${functions[@]/#/--bin=}"

echo "== the peer: $peer/bench.sh (its own cold start, wrk runs and RSS)"
N_USERS=${PEER_USERS:-100} bash "$peer/bench.sh" >"$work/peer.txt" 2>"$work/peer.log" || {
  tail -n 20 "$work/peer.log" >&2; exit 1; }

echo "== DynamoDB Local and a local KMS (moto), each behind the bench's own TLS terminator"
ddb_port=$(free_port)
start_dynamodb "$ddb_port" "$work/dynamodb.log"
kms_port=$(free_port)
start_kms "$kms_port" "$work/kms.log"
export DYNAMODB_TEST_ENDPOINT="http://127.0.0.1:$ddb_port" KMS_TEST_ENDPOINT="http://127.0.0.1:$kms_port"
echo "== the local identity provider (tools/idp), federation's to sign in with"
idp_port=$(free_port)
# The bench's client, its secret the run's own (the bench puts it in moto's
# SSM); its redirect URI on the bench's issuer (bench/src/main.rs).
export BENCH_IDP_ISSUER="http://127.0.0.1:$idp_port"
BENCH_IDP_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
export BENCH_IDP_SECRET
start_idp "$idp_port" "$work/idp.log" \
  "[{\"client_id\": \"auth-bench\", \"client_secret\": \"$BENCH_IDP_SECRET\", \"redirect_uris\": [\"https://bench.test/oidc/local/callback\"]}]"
export BENCH_BIN="$root/target/release"
bench="$root/target/release/auth-bench"

ours="$work/ours.txt"
echo "== every function, four layers from the plain path to the production path (a few minutes)"
"$bench" functions >"$ours"
echo "== unknown user vs wrong password"
timing_ok=true
"$bench" timing >>"$ours" || timing_ok=false
for fn in "${functions[@]}"; do
  echo "zip_bytes_$fn: $(stat -c %s "target/lambda/$fn/bootstrap.zip")" >>"$ours"
done

python3 scripts/bench-table.py "$work/peer.txt" "$ours" "$timing_ok" docs/measured/bench.md
