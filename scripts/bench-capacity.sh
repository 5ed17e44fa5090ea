#!/usr/bin/env bash
# `make bench-capacity`: our own code's CPU time per invocation of each route,
# release build, in process, on the production configuration (KMS keys through
# moto, DynamoDB Local), beside its wall time. Writes docs/measured/cpu.md,
# stamped with date, commit, cores and load: the capacity model
# (docs/capacity.md) rests on it. Not a test: timings here are noisy.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
begin_run

echo "== build (release)"
cargo build --release -p auth-bench

echo "== DynamoDB Local and a local KMS (moto)"
ddb_port=$(free_port)
start_dynamodb "$ddb_port" "$work/dynamodb.log"
kms_port=$(free_port)
start_kms "$kms_port" "$work/kms.log"
key_id=$(create_kms_key "http://127.0.0.1:$kms_port")

echo "== each route's success path, in process"
table=$(TABLE_NAME="capacity-$$" JWT_SIGNING_KEY="kms:$key_id" JWT_VERIFICATION_KEYS="kms:$key_id" \
  JWT_ISSUER="https://capacity.test" JWT_AUDIENCE="capacity" BCRYPT_COST=12 \
  AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$ddb_port" AWS_ENDPOINT_URL_KMS="http://127.0.0.1:$kms_port" \
  LOGIN_LIMIT_PER_IP_PER_MINUTE=100000 REGISTER_LIMIT_PER_IP_PER_HOUR=100000 RUST_LOG=warn \
  "$root/target/release/auth-bench" cpu)

out="$root/docs/measured/cpu.md"
mkdir -p "$(dirname "$out")"
{
  echo "# Measured: CPU time per invocation"
  echo
  echo "Written by \`make bench-capacity\` (scripts/bench-capacity.sh); do not edit."
  echo "$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)'),"
  echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Release build, one current-thread runtime per route as in Lambda, KMS keys"
  echo "(moto) and DynamoDB Local on this machine: their CPU is theirs, not ours."
  echo
  echo "$table"
} >"$out"
cat "$out"
