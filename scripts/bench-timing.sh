#!/usr/bin/env bash
# `make bench-timing`: login timing for unknown users vs wrong passwords,
# and reset requests and wrong reset codes whatever exists, in process,
# against a DynamoDB Local of its own. Not part of `make test`:
# timings on a shared machine are noisy, so this is a benchmark, not a test.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
begin_run
cargo build --release -p auth-bench
port=$(free_port)
start_dynamodb "$port" "$work/dynamodb.log"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
DYNAMODB_TEST_ENDPOINT="http://127.0.0.1:$port" "$root/target/release/auth-bench" timing
