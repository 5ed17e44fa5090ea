#!/usr/bin/env bash
# `make stack`: the deployable build, offline: `sam validate --lint`, then
# `sam build` (cargo-lambda, release, arm64, zig from PyPI), then a check that
# every function of template.yaml got a `bootstrap` that is an aarch64 ELF,
# and that the web function's embeds the page.
# Nothing here reaches the network: dummy credentials, telemetry off.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"
"$root/scripts/tools.sh"
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$AWS_REGION

echo "== sam validate --lint"
sam validate --lint
echo "== sam build (release, arm64)"
sam build
echo "== every function's bootstrap is an aarch64 ELF"
python3 - <<'PY'
import pathlib, struct, sys, yaml

class Loader(yaml.SafeLoader):
    pass
Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
template = yaml.load(open("template.yaml"), Loader=Loader)
functions = [n for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
bad = []
for name in functions:
    path = pathlib.Path(".aws-sam/build") / name / "bootstrap"
    head = path.read_bytes()[:20] if path.exists() else b""
    elf = head[:4] == b"\x7fELF" and head[4] == 2  # 64-bit
    machine = struct.unpack("<H", head[18:20])[0] if len(head) == 20 else None
    ok = elf and machine == 183  # EM_AARCH64
    size = path.stat().st_size if path.exists() else 0
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {path} ({size / 1e6:.1f} MB)")
    if not ok:
        bad.append(name)
# The page is inside the web function: sam build ran its build script (npm, Vite).
web = pathlib.Path(".aws-sam/build/WebFunction/bootstrap")
embedded = web.exists() and b'<div id="root"></div>' in web.read_bytes()
print(f"{'ok  ' if embedded else 'FAIL'} WebFunction embeds the built page")
if not embedded:
    bad.append("WebFunction page")
print(f"{len(functions) + 1 - len(bad)} passed, {len(bad)} failed")
sys.exit(1 if bad else 0)
PY
