#!/usr/bin/env bash
# `make deploy`: `sam deploy` with the project's tools first on PATH (sam,
# cargo-lambda and zig live in .tools/venv, which no shell has on its PATH),
# after `make stack` has built the stack. Guided unless given arguments:
# `make deploy ARGS="--parameter-overrides SigningMode=kms"`. The operator's
# own AWS credentials, profile and region are used as they are: nothing of
# the test scripts' local settings (lib.sh) is sourced here.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/tools.sh"
export PATH="$root/.tools/venv/bin:$PATH" SAM_CLI_TELEMETRY=0
(($#)) || set -- --guided
exec sam deploy "$@"
