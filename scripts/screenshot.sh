#!/usr/bin/env bash
# `make screenshot`: the page's pictures in docs/images/ (or the folder given),
# as a newcomer sees it: `make dev` on free ports with a scratch state, the
# demo user signing in, headless Chromium. `make test` runs it too, into a
# scratch folder, so the command keeps working.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"
out=$(realpath -m "${1:-docs/images}")
"$root/scripts/tools.sh"
state=$(mktemp -d)
trap 'stop_started; rm -rf "$state"' EXIT
trap 'exit 130' INT TERM
port=$(free_port)
DEV_DIR=$state DEV_PORT=$port DEV_DYNAMODB_PORT=$(free_port) DEV_SES_PORT=$(free_port) BCRYPT_COST=10 \
  start_group "$state/make-dev.log" make --no-print-directory dev
wait_for_port "$port" 600 "make dev" "$state/make-dev.log"
# Ready once the demo admin has its second factor.
for _ in $(seq 600); do grep -q "== ready on" "$state/make-dev.log" && break; sleep 0.5; done
grep -q "== ready on" "$state/make-dev.log" || { tail -n 30 "$state/make-dev.log" >&2; exit 1; }
npm --prefix web run --silent screenshot -- "http://localhost:$port" demo "$(cat "$state/demo-password")" "$out" \
  "$(sed -n 1p "$state/demo-recovery-codes")" "$(sed -n 2p "$state/demo-recovery-codes")"
