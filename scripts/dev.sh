#!/usr/bin/env bash
# `make dev`: the local stack in one command. Installs what is missing into
# .tools/, keeps its state in .dev/ (both git-ignored): DynamoDB Local with its
# data on disk (users survive a restart), the table, a demo user (an admin), and
# `cargo lambda watch` routing /login and /get_name on port 9000 like API
# Gateway, with several instances of each function (DEV_CONCURRENCY, default
# 4), as Lambda runs them, so that requests can race locally as they do
# deployed. Mail goes through moto's SES, as deployed through SES: each message
# is printed here and filed in .dev/mail/. A local OpenID provider (tools/idp,
# any login and password) is configured as "Local IdP": the page's "Sign in
# with Local IdP" signs up and in with it. Ctrl-C stops everything it started.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"
"$root/scripts/tools.sh"

dev=${DEV_DIR:-"$root/.dev"}
mkdir -p "$dev/dynamodb"
ddb_port=${DEV_DYNAMODB_PORT:-8000}
watch_port=${DEV_PORT:-9000}
ses_port=${DEV_SES_PORT:-8025}
idp_port=${DEV_IDP_PORT:-9011}
concurrency=${DEV_CONCURRENCY:-4}
[[ $concurrency =~ ^[1-9][0-9]*$ ]] || { echo "DEV_CONCURRENCY must be a positive number, got '$concurrency'" >&2; exit 1; }
for port in "$ddb_port" "$watch_port" "$ses_port" "$idp_port"; do
  if port_in_use "$port"; then
    echo "port $port is in use (another make dev?); set DEV_DYNAMODB_PORT / DEV_PORT / DEV_SES_PORT / DEV_IDP_PORT to use others" >&2
    exit 1
  fi
done

# Secrets are generated here, once, and never leave .dev/.
umask 077
[[ -s $dev/demo-password ]] || python3 -c 'import secrets; print(secrets.token_urlsafe(12))' >"$dev/demo-password"
[[ -s $dev/idp-secret ]] || python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$dev/idp-secret"
# The second factor's data key: deployed, KMS makes and seals it; here moto
# forgets its keys at every start, so it is kept in a file of its own.
[[ -s $dev/second-factor-key ]] || python3 -c 'import secrets; print(secrets.token_hex(32))' >"$dev/second-factor-key"
umask 022

trap 'echo; echo "stopping..."; stop_started' EXIT
trap 'exit 130' INT TERM

echo "== building the functions (first time: a few minutes)"
cargo build --workspace --bins
admin="$root/target/debug/auth-admin"

# The local signing key (RS256, PEM). Deployed stacks sign with KMS instead.
mkdir -p "$dev/keys"
[[ -s $dev/keys/signing.pem ]] || "$admin" generate-key "$dev/keys/signing.pem" "$dev/keys/signing.pub.pem"

echo "== starting DynamoDB Local on port $ddb_port (data in .dev/dynamodb)"
start_dynamodb "$ddb_port" "$dev/dynamodb.log" -sharedDb -dbPath "$dev/dynamodb"

echo "== starting moto's SES on port $ses_port (mail is printed here and filed in .dev/mail/)"
start_kms "$ses_port" "$dev/ses.log"

echo "== starting the local identity provider on port $idp_port (\"Local IdP\": any login and password)"
start_idp "$idp_port" "$dev/idp.log" \
  "[{\"client_id\": \"auth-dev\", \"client_secret\": \"$(cat "$dev/idp-secret")\", \"redirect_uris\": [\"http://localhost:$watch_port/oidc/local/callback\"]}]"
# Its client secret in moto's SSM, read by the federation function at init, as deployed.
put_secure_parameter "http://127.0.0.1:$ses_port" /auth/oidc/local "$(cat "$dev/idp-secret")"

export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$ddb_port"
export AWS_ENDPOINT_URL_SESV2="http://127.0.0.1:$ses_port"
export MAIL_FROM=no-reply@auth.localhost
export TABLE_NAME=users
export JWT_ISSUER="http://localhost:$watch_port" JWT_AUDIENCE=auth-api
export JWT_SIGNING_KEY="pem:$dev/keys/signing.pem" JWT_VERIFICATION_KEYS="pem:$dev/keys/signing.pub.pem"
export BCRYPT_COST=${BCRYPT_COST:-12} RUST_LOG=${RUST_LOG:-info}
export SECOND_FACTOR_KEY="file:$dev/second-factor-key"
export AWS_ENDPOINT_URL_SSM="http://127.0.0.1:$ses_port" OIDC_PARAMETER_PATH=/auth/oidc/
export OIDC_PROVIDERS="[{\"id\": \"local\", \"name\": \"Local IdP\", \"issuer\": \"http://127.0.0.1:$idp_port\", \"client_id\": \"auth-dev\", \"client_secret_parameter\": \"/auth/oidc/local\"}]"

"$admin" create-table
"$admin" create-user demo "Demo User" --if-missing <"$dev/demo-password"
"$admin" grant demo admin >/dev/null

echo "== serving on http://localhost:$watch_port, up to $concurrency instances per function"
# --disable-cors: the emulator's own permissive CORS off, so what a browser
# sees locally is our code's answer, as deployed behind API Gateway's CORS.
start_group - cargo lambda watch --invoke-port "$watch_port" --concurrency "$concurrency" --disable-cors
watch_pid=${started_pids[-1]}
# The table's stream to the mail function, as the deployed event source mapping does.
start_group - python3 "$root/scripts/mail-pump.py" --dynamodb "$AWS_ENDPOINT_URL_DYNAMODB" --table "$TABLE_NAME" \
  --watch "http://127.0.0.1:$watch_port" --ses "$AWS_ENDPOINT_URL_SESV2" --sender "$MAIL_FROM" --mailbox "$dev/mail"
# The admin role needs a second factor: the demo admin gets one, through the API.
python3 "$root/scripts/dev-second-factor.py" "http://127.0.0.1:$watch_port" "$dev"

cat <<MSG

== demo user: username "demo", password "$(cat "$dev/demo-password")" (kept in .dev/demo-password), an admin
   with a second factor: secret $(cat "$dev/demo-totp-secret") (kept in .dev/demo-totp-secret; add it to
   an authenticator app, or scripts/totp.py .dev/demo-totp-secret prints its code), and recovery codes
   in .dev/demo-recovery-codes. Try:
     curl -s -X POST localhost:$watch_port/login -H 'content-type: application/json' \\
          -d '{"username": "demo", "password": "$(cat "$dev/demo-password")"}'
     curl -s -X POST localhost:$watch_port/login/second-factor -H 'content-type: application/json' \\
          -d '{"mfa_token": "<mfa_token>", "code": "'\$(scripts/totp.py .dev/demo-totp-secret)'"}'
     curl -s localhost:$watch_port/get_name -H "Authorization: Bearer <access_token>"
     curl -s localhost:$watch_port/.well-known/jwks.json
   or open http://localhost:$watch_port/ and "Sign in with Local IdP" (any login and password there)

== ready on http://localhost:$watch_port (Ctrl-C stops it all)
MSG
wait "$watch_pid"
