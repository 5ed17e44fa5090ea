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
load=$(cut -d' ' -f1-3 /proc/loadavg)
echo "machine: $(nproc) cores, load $load"
# The handlers' metric lines go to the run's folder; the medians are
# printed and written to docs/measured/timing.md.
status=0
DYNAMODB_TEST_ENDPOINT="http://127.0.0.1:$port" "$root/target/release/auth-bench" timing \
  >"$work/timing.txt" || status=$?
grep '^timing_' "$work/timing.txt"
commit=$(git -C "$root" rev-parse --short HEAD)
git -C "$root" diff --quiet HEAD -- || commit="$commit (with uncommitted changes)"
{
  echo "# Measured: failed logins and resets, by what exists"
  echo
  echo "Written by \`make bench-timing\` (scripts/bench-timing.sh); do not edit."
  echo "$(date -u +%F), commit $commit, $(nproc) cores, load $load."
  echo "Release build, in process, one current-thread runtime as in Lambda,"
  echo "against DynamoDB Local; medians of 40 of each, interleaved. Budget: the"
  echo "medians of one kind of question within 3 ms of each other"
  echo "(docs/security.md). Exit status $status (0: within the budget)."
  echo
  echo '```'
  grep '^timing_' "$work/timing.txt"
  echo '```'
} >"$root/docs/measured/timing.md"
echo "written to docs/measured/timing.md"
exit "$status"
