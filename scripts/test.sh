#!/usr/bin/env bash
# `make test`: lint, then every test against a DynamoDB Local and a routed
# `cargo lambda watch` of its own, on free ports (it runs beside `make dev`).
# Everything it starts is stopped when it ends, pass or fail.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
begin_run

echo "== format and lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cfn-lint template.yaml
SAM_CLI_TELEMETRY=0 sam validate --lint >/dev/null
python3 tests/template/test_template.py
# Every finding fixed or skipped in the template with its reason (docs/operations.md).
.tools/checkov/bin/checkov -f template.yaml --framework cloudformation --compact --quiet --skip-download
python3 tests/docs/check_links.py
# The shared crate's modules in layers, no import circle (bottom up, printed).
python3 tests/code/check_imports.py
npm --prefix web run --silent typecheck
npm --prefix web run --silent lint

echo "== build"
cargo build --workspace --all-targets

echo "== start DynamoDB Local, a local KMS (moto) and the watch"
ddb_port=$(free_port)
start_dynamodb "$ddb_port" "$work/dynamodb.log"
export DYNAMODB_TEST_ENDPOINT="http://127.0.0.1:$ddb_port"
kms_port=$(free_port)
start_kms "$kms_port" "$work/kms.log"
export KMS_TEST_ENDPOINT="http://127.0.0.1:$kms_port"

# The watch's functions get their settings from this environment; the e2e
# test reads the same variables to seed its user and check its tokens. They
# sign with a KMS key (moto), as deployed, and keep the deployed reuse grace
# period (10 s): parallel refreshes of one token are a race, not theft, even
# on a loaded machine; the reuse test waits it out.
watch_port=$(free_port)
key_id=$(create_kms_key "$KMS_TEST_ENDPOINT")
export E2E_TABLE_NAME="e2e-$(date +%s)-$$"
export E2E_JWT_VERIFICATION_KEYS="kms:$key_id"
export E2E_JWT_ISSUER="http://127.0.0.1:$watch_port" E2E_JWT_AUDIENCE="auth-e2e"
TABLE_NAME=$E2E_TABLE_NAME JWT_SIGNING_KEY="kms:$key_id" JWT_VERIFICATION_KEYS=$E2E_JWT_VERIFICATION_KEYS \
  JWT_ISSUER=$E2E_JWT_ISSUER JWT_AUDIENCE=$E2E_JWT_AUDIENCE BCRYPT_COST=10 \
  AWS_ENDPOINT_URL_DYNAMODB=$DYNAMODB_TEST_ENDPOINT AWS_ENDPOINT_URL_KMS=$KMS_TEST_ENDPOINT \
  REFRESH_REUSE_GRACE_SECONDS=10 LOGIN_LIMIT_PER_IP_PER_MINUTE=100000 REGISTER_LIMIT_PER_IP_PER_HOUR=100000 \
  RUST_LOG=info \
  start_group "$work/watch.log" cargo lambda watch --ignore-changes --concurrency 4 --disable-cors \
    --invoke-address 127.0.0.1 --invoke-port "$watch_port"
wait_for_port "$watch_port" 120 "cargo lambda watch" "$work/watch.log"
TABLE_NAME=$E2E_TABLE_NAME AWS_ENDPOINT_URL_DYNAMODB=$DYNAMODB_TEST_ENDPOINT target/debug/auth-admin create-table >/dev/null
export WATCH_URL="http://127.0.0.1:$watch_port"

echo "== test"
if ! cargo test --workspace; then
  echo "--- watch log (last 40 lines)" >&2
  tail -n 40 "$work/watch.log" >&2
  exit 1
fi

echo "== browser: the page in headless Chromium (Playwright, web/tests/)"
if ! npm --prefix web run --silent test:browser; then
  echo "--- watch log (last 40 lines)" >&2
  tail -n 40 "$work/watch.log" >&2
  exit 1
fi

echo "== events/: each sample through the watch with cargo lambda invoke --data-file"
python3 tests/template/check_events.py

echo "== contract: schemathesis checks the watch against openapi.yaml"
python3 tests/contract/run.py

echo "== interop: PyJWT verifies our tokens through the JWKS"
python3 tests/interop/pyjwt_jwks.py

echo "== make dev, as a newcomer runs it (scratch state, free ports), and the docs' curl sessions against it"
python3 scripts/check-dev.py

echo "== make screenshot, into a scratch folder: the docs' pictures can always be made anew"
scripts/screenshot.sh "$work/screenshots"
for picture in page-sign-in page-signed-in; do
  [[ $(stat -c %s "$work/screenshots/$picture.png") -gt 5000 ]] || { echo "screenshot $picture.png is missing or blank" >&2; exit 1; }
done

echo "== metrics: the EMF lines the functions wrote in every stage above"
python3 tests/template/check_metrics.py "$work/watch.log"

echo "== no secret in the watch's logs (every stage above: e2e, events, contract, interop)"
python3 - "$work/watch.log" <<'PY'
import re, sys
log = open(sys.argv[1], errors="replace").read()
# Bcrypt hashes, JWTs, PEM keys and the passwords the e2e tests use.
patterns = [r"\$2[aby]\$\d\d\$", r"eyJ[A-Za-z0-9_-]{10,}\.", r"PRIVATE KEY", r"e2e-password", r"passphrase"]
found = [p for p in patterns if re.search(p, log)]
print(f"{len(patterns) - len(found)} passed, {len(found)} failed" + (f": {found}" if found else ""))
sys.exit(1 if found else 0)
PY

