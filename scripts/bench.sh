#!/usr/bin/env bash
# `make bench`: our functions beside the Flask peer (../shared/peers/flask-seed),
# all from one run, on this machine: cold start, warm get-name, login overhead,
# peak RSS, zip sizes, and the unknown-user vs wrong-password timing. Prints
# one table with ratios and budgets, and exits non-zero when a budget is missed.
# Not part of `make test`: timings on a shared machine are noisy; ratios matter.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
begin_run
peer="${PEER:-$root/../shared/peers/flask-seed}"

echo "== build (release, this machine; arm64 zips for the sizes)"
cargo build --release --workspace --bins
cargo lambda build --release --arm64 --output-format zip \
  --bin login --bin get-name --bin register --bin refresh --bin logout --bin password --bin jwks

echo "== the peer: $peer/bench.sh (its own cold start, wrk runs and RSS)"
N_USERS=${PEER_USERS:-100} bash "$peer/bench.sh" >"$work/peer.txt" 2>"$work/peer.log" || {
  tail -n 20 "$work/peer.log" >&2; exit 1; }

echo "== our stack: DynamoDB Local, a Runtime API (cargo lambda watch --only-lambda-apis)"
ddb_port=$(free_port)
start_dynamodb "$ddb_port" "$work/dynamodb.log"
export DYNAMODB_TEST_ENDPOINT="http://127.0.0.1:$ddb_port" AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$ddb_port"
api_port=$(free_port)
start_group "$work/watch.log" cargo lambda watch --only-lambda-apis --invoke-address 127.0.0.1 --invoke-port "$api_port"
wait_for_port "$api_port" 60 "cargo lambda watch" "$work/watch.log"
export RUNTIME_API="127.0.0.1:$api_port"

# What every function reads at init: a local PEM key (no KMS here), the table.
"$root/target/release/auth-admin" generate-key "$work/key.pem" "$work/key.pub.pem" >/dev/null
export BENCH_KEY="$work/key.pem" BENCH_TABLE="bench-$$" TABLE_NAME="bench-$$"
export JWT_SIGNING_KEY="pem:$work/key.pem" JWT_VERIFICATION_KEYS="pem:$work/key.pub.pem"
export JWT_ISSUER="https://bench.test" JWT_AUDIENCE="bench" BCRYPT_COST=12 RUST_LOG=warn
bench="$root/target/release/auth-bench"
BENCH_TOKEN=$("$bench" token)
export BENCH_TOKEN

ours="$work/ours.txt"
: >"$ours"
echo "== cold start: exec of get-name's release binary to its first response, x10"
"$bench" cold "$root/target/release/get-name" get-name.json | tee -a "$ours"
echo "== warm get-name, in process, 1,000 invocations"
"$bench" warm | tee -a "$ours"
echo "== login against its bare work"
"$bench" login | tee -a "$ours"
echo "== unknown user vs wrong password"
timing_ok=true
"$bench" timing | tee -a "$ours" || timing_ok=false
echo "== peak RSS of each function after a warm run"
for pair in login:login.json get-name:get-name.json register:register.json refresh:refresh.json \
            logout:logout.json password:password.json jwks:jwks.json; do
  fn=${pair%%:*} ev=${pair#*:}
  kib=$("$bench" rss "$root/target/release/$fn" "$ev" 30 | awk '/^peak_rss_kib:/ {print $2}')
  echo "rss_kib_$fn: $kib" | tee -a "$ours"
done
for fn in login get-name register refresh logout password jwks; do
  echo "zip_bytes_$fn: $(stat -c %s "target/lambda/$fn/bootstrap.zip")" >>"$ours"
done

python3 - "$work/peer.txt" "$ours" "$timing_ok" <<'PY'
import os, sys
def read(path):
    values = {}
    for line in open(path):
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values
peer, ours = read(sys.argv[1]), read(sys.argv[2])
f = lambda d, k: float(d[k])
load = open("/proc/loadavg").read().split()[:3]
print(f"\n== bench: {os.cpu_count()} cores, load {' '.join(load)} (peer: {peer.get('noisy_phases', '?')} noisy phases)\n")
rows, misses = [], []
def row(what, us, them, ratio, budget, ok):
    rows.append((what, us, them, ratio, budget, "ok" if ok else "MISSED"))
    if not ok:
        misses.append(what)
cold, peer_cold = f(ours, "cold_start_ms_median"), f(peer, "cold_start_ms_median")
row("cold start, median of 10 (ms)", f"{cold:.1f}", f"{peer_cold:.1f}", f"1/{peer_cold / cold:.0f}", "≤ 1/50 of the peer", cold * 50 <= peer_cold)
h50, r50 = f(ours, "warm_get_name_handler_p50_ms"), f(ours, "warm_get_name_dynamodb_read_p50_ms")
row("warm get-name handler p50 (ms)", f"{h50:.3f}", f"{f(peer, 'get_name_p50_ms'):.2f} (HTTP)", f"read {f(ours, 'warm_get_name_read_share_pct'):.0f} %", "≤ read + 0.2 ms", h50 - r50 <= 0.2)
rows.append(("warm get-name handler p99 (ms)", f"{f(ours, 'warm_get_name_handler_p99_ms'):.3f}", f"{f(peer, 'get_name_p99_ms'):.2f} (HTTP)", "", "", ""))
rows.append(("  its DynamoDB read p50 (ms)", f"{r50:.3f}", "", "", "", ""))
login, bare = f(ours, "login_p50_ms"), f(ours, "login_bare_work_p50_ms")
row("login p50 (ms)", f"{login:.1f}", f"{f(peer, 'login_p50_ms'):.1f} (HTTP)", f"{f(ours, 'login_overhead_pct'):+.1f} % over bare", "≤ +3 % over bcrypt + calls", login <= bare * 1.03)
rows.append(("  bare bcrypt-12 + calls p50 (ms)", f"{bare:.1f}", "", "", "", ""))
peer_rss = f(peer, "worker_peak_rss_kib_vmhwm_max") / 1024
for fn in ["login", "get-name", "register", "refresh", "logout", "password", "jwks"]:
    mb = f(ours, f"rss_kib_{fn}") / 1024
    row(f"peak RSS, {fn} (MB)", f"{mb:.1f}", f"{peer_rss:.1f}", f"1/{peer_rss / mb:.1f}", "≤ 20 MB", mb <= 20)
for fn in ["login", "get-name", "register", "refresh", "logout", "password", "jwks"]:
    mb = f(ours, f"zip_bytes_{fn}") / 1e6
    row(f"arm64 zip, {fn} (MB)", f"{mb:.2f}", "", "", "≤ 3 MB", mb <= 3.0)
u, w = f(ours, "timing_unknown_user_login_p50_ms"), f(ours, "timing_wrong_password_login_p50_ms")
row("login unknown user vs wrong password p50 (ms)", f"{u:.1f} / {w:.1f}", "", f"{f(ours, 'timing_difference_pct'):.1f} % apart", "≤ 10 % apart", sys.argv[3] == "true")
width = [max(len(str(r[i])) for r in rows + [("what", "ours", "peer", "ratio", "budget", "")]) for i in range(6)]
line = lambda r: "| " + " | ".join(str(c).ljust(width[i]) for i, c in enumerate(r)) + " |"
print(line(("what", "ours", "peer", "ratio", "budget", "")))
print("|" + "|".join("-" * (w + 2) for w in width) + "|")
for r in rows:
    print(line(r))
print(f"\n{len(misses)} budget(s) missed" + (": " + ", ".join(misses) if misses else ""))
sys.exit(1 if misses else 0)
PY
