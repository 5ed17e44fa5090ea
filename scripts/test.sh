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
# The machine check tells a newcomer without apt what to install, and is silent here.
python3 tests/code/check_preflight.py
# make deploy's wrapper finds the project's sam and hands it its arguments.
scripts/deploy.sh --help | grep "sam deploy" >/dev/null
# Every finding fixed or skipped in the template with its reason (docs/operations.md).
.tools/checkov/bin/checkov -f template.yaml --framework cloudformation --compact --quiet --skip-download
python3 tests/docs/check_links.py
# Every variable the code reads is in docs/configuration.md.
python3 tests/docs/check_config.py
# docs/deploy.md and docs/runbooks.md against the template, SAM and the cost
# model; docs/architecture.md's pictures against the template and the code.
python3 tests/docs/check_deploy.py
python3 tests/docs/check_diagrams.py
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
echo "== auth-admin: the operator's user commands, and scripts/admin.sh with a stack's outputs"
python3 tests/interop/admin_cli.py

kms_port=$(free_port)
start_kms "$kms_port" "$work/kms.log"
export KMS_TEST_ENDPOINT="http://127.0.0.1:$kms_port"

# The watch's functions get their settings from this environment; the e2e
# test reads the same variables to seed its user and check its tokens. They
# run in sealed mode, as deployed by default: the table's issuer keys, made
# by a rotation (auth-admin rotate-keys, below) and sealed by a symmetric KMS
# key (moto); the functions re-read the key set every 2 s, so that the
# revocation stage can wait its bound out. They keep the deployed reuse grace
# period (10 s): parallel refreshes of one token are a race, not theft, even
# on a loaded machine; the reuse test waits it out. A second watch, on the
# same table, runs KMS mode (kms:Sign per token) for the token paths of
# both modes (modes.rs) and PyJWT.
watch_port=$(free_port)
kms_watch_port=$(free_port)
key_id=$(create_kms_key "$KMS_TEST_ENDPOINT")
sealing_id=$(create_kms_key "$KMS_TEST_ENDPOINT" SYMMETRIC_DEFAULT ENCRYPT_DECRYPT)
export E2E_TABLE_NAME="e2e-$(date +%s)-$$"
export E2E_KMS_KEY_ID=$key_id E2E_SEALING_KEY="sealed:$sealing_id"
export E2E_JWT_ISSUER="http://127.0.0.1:$watch_port" E2E_JWT_AUDIENCE="auth-e2e"
# The local identity provider (tools/idp, started below), with a client and
# secret of the run's own: the watch's federation function signs in with it
# as "local" (its secret in moto's SSM, read at init, as deployed), and the
# provider client's tests (cargo test) call it.
idp_port=$(free_port)
idp_secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
idp_redirect="$E2E_JWT_ISSUER/oidc/local/callback"
export IDP_TEST_ISSUER="http://127.0.0.1:$idp_port"
put_secure_parameter "$KMS_TEST_ENDPOINT" /auth-test/oidc/local "$idp_secret"
oidc_providers="[{\"id\": \"local\", \"name\": \"Local IdP\", \"issuer\": \"$IDP_TEST_ISSUER\", \"client_id\": \"auth-test\", \"client_secret_parameter\": \"/auth-test/oidc/local\"}]"
watch_env=(TABLE_NAME="$E2E_TABLE_NAME" JWT_AUDIENCE="$E2E_JWT_AUDIENCE" BCRYPT_COST=10
  AWS_ENDPOINT_URL_DYNAMODB="$DYNAMODB_TEST_ENDPOINT" AWS_ENDPOINT_URL_KMS="$KMS_TEST_ENDPOINT"
  AWS_ENDPOINT_URL_SESV2="$KMS_TEST_ENDPOINT" MAIL_FROM=no-reply@auth.test
  AWS_ENDPOINT_URL_SSM="$KMS_TEST_ENDPOINT" OIDC_PROVIDERS="$oidc_providers" OIDC_PARAMETER_PATH=/auth-test/oidc/
  SECOND_FACTOR_KEY="kms:$sealing_id"
  REFRESH_REUSE_GRACE_SECONDS=10 LOGIN_LIMIT_PER_IP_PER_MINUTE=100000 REGISTER_LIMIT_PER_IP_PER_HOUR=100000
  RUST_LOG=info)
env "${watch_env[@]}" JWT_ISSUER="$E2E_JWT_ISSUER" TABLE_NAME="$E2E_TABLE_NAME" target/debug/auth-admin create-table >/dev/null
env "${watch_env[@]}" JWT_ISSUER="$E2E_JWT_ISSUER" JWT_SIGNING_KEY="$E2E_SEALING_KEY" target/debug/auth-admin rotate-keys
start_group "$work/watch.log" env "${watch_env[@]}" JWT_ISSUER="$E2E_JWT_ISSUER" \
  PASSKEY_ORIGINS="http://localhost:$watch_port" CORS_ALLOWED_ORIGINS="http://localhost:$watch_port" \
  JWT_SIGNING_KEY="$E2E_SEALING_KEY" JWT_VERIFICATION_KEYS=table JWT_KEYS_REFRESH_SECONDS=2 \
  cargo lambda watch --ignore-changes --concurrency 4 --disable-cors \
    --invoke-address 127.0.0.1 --invoke-port "$watch_port"
start_group "$work/watch-kms.log" env "${watch_env[@]}" JWT_ISSUER="http://127.0.0.1:$kms_watch_port" \
  PASSKEY_ORIGINS="http://localhost:$kms_watch_port" \
  JWT_SIGNING_KEY="kms:$key_id" JWT_VERIFICATION_KEYS="kms:$key_id" \
  cargo lambda watch --ignore-changes --concurrency 1 --disable-cors \
    --invoke-address 127.0.0.1 --invoke-port "$kms_watch_port"
wait_for_port "$watch_port" 120 "cargo lambda watch" "$work/watch.log"
wait_for_port "$kms_watch_port" 120 "cargo lambda watch (KMS mode)" "$work/watch-kms.log"
export WATCH_URL="http://127.0.0.1:$watch_port" KMS_WATCH_URL="http://127.0.0.1:$kms_watch_port"
# The table's stream to the watch's mail function (sending through moto's
# SES), as the deployed event source mapping does.
start_group "$work/mail-pump.log" python3 scripts/mail-pump.py --dynamodb "$DYNAMODB_TEST_ENDPOINT" \
  --table "$E2E_TABLE_NAME" --watch "$WATCH_URL" --ses "$KMS_TEST_ENDPOINT" --sender no-reply@auth.test

start_idp "$idp_port" "$work/idp.log" \
  "[{\"client_id\": \"auth-test\", \"client_secret\": \"$idp_secret\", \"redirect_uris\": [\"$idp_redirect\"]}]"

# Every secret a test uses or receives through the watch goes here, for the last stage.
export TEST_SECRETS_FILE="$work/secrets.txt"
: > "$TEST_SECRETS_FILE"
echo "$idp_secret" >> "$TEST_SECRETS_FILE"
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

echo "== interop: PyJWT verifies our tokens through the JWKS, in sealed mode, then in KMS mode"
python3 tests/interop/pyjwt_jwks.py
WATCH_URL=$KMS_WATCH_URL python3 tests/interop/pyjwt_jwks.py

echo "== the local identity provider: oidc-provider as the federation will drive it (tools/idp)"
python3 tests/idp/flow.py "$IDP_TEST_ISSUER" auth-test "$idp_secret" "$idp_redirect"
echo "== federation through the watch: sign up and in with the local identity provider, over HTTP"
python3 tests/idp/federation.py "$WATCH_URL" "$IDP_TEST_ISSUER"

echo "== make smoke: one user's life through the watch, as after a deploy"
python3 scripts/smoke.py "$WATCH_URL"

echo "== revocation: an event to the rotation function through the watch (sealed mode), refused everywhere within the bound"
env "${watch_env[@]}" JWT_ISSUER="$E2E_JWT_ISSUER" JWT_SIGNING_KEY="$E2E_SEALING_KEY" JWT_KEYS_REFRESH_SECONDS=2 \
  python3 tests/interop/revocation.py

export CHECK_DEV_LOG="$work/make-dev.log"
echo "== make dev, as a newcomer runs it (scratch state, free ports), and the docs' curl sessions against it"
python3 scripts/check-dev.py

echo "== make screenshot, into a scratch folder: the docs' pictures can always be made anew"
scripts/screenshot.sh "$work/screenshots"
for picture in page-sign-in page-forgot-password page-signed-in; do
  [[ $(stat -c %s "$work/screenshots/$picture.png") -gt 5000 ]] || { echo "screenshot $picture.png is missing or blank" >&2; exit 1; }
done

echo "== metrics: the EMF lines the functions wrote in every stage above"
python3 tests/template/check_metrics.py "$work/watch.log"

echo "== no secret and no address in the logs: the watch's (every stage above) and make dev's (its check)"
python3 - "$TEST_SECRETS_FILE" "$work/watch.log" "$work/watch-kms.log" "$CHECK_DEV_LOG" <<'PY'
import re, sys
secrets_file, *logs = sys.argv[1:]
log = "".join(open(path, errors="replace").read() for path in logs)
# Bcrypt hashes, JWTs, PEM keys, and every password, token and device proof
# the tests used or received through the watch or make dev (noted by the
# e2e, browser, contract, interop and make dev checks).
# And no email address: the code names users by id, never by address (a
# domain ends in letters: cargo's `auth-shared@0.1.0` is no address).
patterns = [r"\$2[aby]\$\d\d\$", r"eyJ[A-Za-z0-9_-]{10,}\.", r"PRIVATE KEY", r"passphrase",
            r"[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b"]
found = [p for p in patterns if re.search(p, log)]
secrets = {line.strip() for line in open(secrets_file) if len(line.strip()) >= 8}
# Each kind must be there, or the scan would pass by knowing nothing.
kinds = {"passwords": [s for s in secrets if " " in s or "password" in s],
         "tokens": [s for s in secrets if s.startswith("eyJ")],
         "refresh tokens and proofs": [s for s in secrets if re.fullmatch(r"[A-Za-z0-9_-]{43}", s)]}
empty = [kind for kind, found_of in kinds.items() if len(found_of) < 5]
leaked = [s[:6] + "…" for s in secrets if s in log]
print(f"{len(secrets)} secrets ({', '.join(f'{len(v)} {k}' for k, v in kinds.items())}) and "
      f"{len(patterns)} patterns over {len(log)} bytes of logs: "
      f"{len(found) + len(leaked)} found" + (f": {found + leaked}" if found or leaked else "")
      + (f"; too few {empty}" if empty else ""))
sys.exit(1 if found or leaked or empty else 0)
PY

