#!/usr/bin/env python3
"""make bench's tables, from the `metric: value` lines of one run (ours and
the Flask peer's): printed, and written to OUT (docs/measured/bench.md)
stamped with the date, commit, cores and load. Exits non-zero when a budget
is missed. Usage: bench-table.py PEER OURS TIMING_OK OUT"""
import datetime, os, re, subprocess, sys

peer_path, ours_path, timing_ok, out = sys.argv[1:5]


def read(path):
    values = {}
    for line in open(path):
        key, sep, value = line.partition(":")
        # Only `metric: value` lines (in-process logins also print their
        # metric lines, JSON, to the bench's stdout, as the functions do).
        if sep and re.fullmatch(r"[\w.\-]+", key.strip()):
            values[key.strip()] = value.strip()
    return values


peer, ours = read(peer_path), read(ours_path)
f = lambda key: float(ours[key])
FUNCTIONS = ["login", "get-name", "register", "refresh", "logout", "password", "admin", "jwks", "web", "federation",
             "second-factor", "passkeys"]
VERIFIERS = {"get-name", "logout", "password", "admin", "jwks", "federation", "second-factor", "passkeys"}
ISSUERS = ["login", "refresh", "password", "federation", "second-factor", "passkeys"]
# In sealed mode (the production path) every function that signs or
# verifies calls AWS at init: the key set's query, and an issuer's Decrypt;
# federation reads its providers' client secrets (SSM) after them;
# second-factor reads and unseals its data key (GetItem, Decrypt) beside
# its issuer's Decrypt.
CALLS_AT_INIT = VERIFIERS | set(ISSUERS)
LAYERS = ["plain", "logs", "sealed", "production"]
cold_runs = ours["cold_runs"]


def table(header, rows):
    width = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(width[i]) for i, c in enumerate(r)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in width) + "|"] + [line(r) for r in rows])


def per_function(key_of, fmt="{:.2f}"):
    return lambda fn: fmt.format(f(key_of(fn)))


# Each function on every layer: where init and latency go as the production path is built up.
rows = []
for fn in ["floor"] + FUNCTIONS:
    if fn == "floor":
        init = [f"{f('floor.init_ms'):.2f}"] * 4
        first = [f"{f('floor.first_ms'):.2f}"] * 2
        warm = [f"{f('floor.warm_p50_ms'):.3f}"] * 2
        rss, lines, zip_mb = f("floor.rss_kib") / 1024, 0.0, f("zip_bytes_floor") / 1e6
    else:
        init = [f"{f(f'{layer}.{fn}.init_ms'):.2f}" for layer in LAYERS]
        first = [f"{f(f'{layer}.{fn}.first_ms'):.2f}" for layer in ("plain", "production")]
        warm = [f"{f(f'{layer}.{fn}.warm_p50_ms'):.3f}" for layer in ("plain", "production")]
        rss = f(f"production.{fn}.rss_kib") / 1024
        lines = f(f"production.{fn}.log_lines_per_invocation")
        zip_mb = f(f"zip_bytes_{fn}") / 1e6
    rows.append([fn, *init, *first, *warm, f"{rss:.1f}", f"{lines:.0f}", f"{zip_mb:.2f}"])
functions_table = table(
    ["function", "init plain", "+ JSON logs", "+ sealed keys", "+ TLS (production)", "first plain", "first production",
     "warm p50 plain", "warm p50 production", "peak RSS MB", "log lines / inv.", "arm64 zip MB"], rows)

# The functions that sign, on the production path in each mode.
modes_table = table(
    ["function (production path)", "init, sealed", "init, KMS mode", "first, sealed", "first, KMS mode",
     "warm p50, sealed", "warm p50, KMS mode", "bytes sent KMS after init, sealed / KMS mode"],
    [[fn, f"{f(f'production.{fn}.init_ms'):.2f}", f"{f(f'kms.{fn}.init_ms'):.2f}",
      f"{f(f'production.{fn}.first_ms'):.2f}", f"{f(f'kms.{fn}.first_ms'):.2f}",
      f"{f(f'production.{fn}.warm_p50_ms'):.3f}", f"{f(f'kms.{fn}.warm_p50_ms'):.3f}",
      f"{ours[f'production.{fn}.kms_bytes_after_init']} / {ours[f'kms.{fn}.kms_bytes_after_init']}"] for fn in ISSUERS])

calls_table = table(
    ["call (p50, ms)", "plain HTTP", "production (TLS)"],
    [["DynamoDB GetItem, new connection", f"{f('plain.dynamodb_first_call_ms'):.2f}", f"{f('production.dynamodb_first_call_ms'):.2f}"],
     ["DynamoDB GetItem, kept connection", f"{f('plain.dynamodb_read_ms'):.2f}", f"{f('production.dynamodb_read_ms'):.2f}"],
     ["KMS GetPublicKey, new connection", f"{f('plain.kms_first_call_ms'):.2f}", f"{f('production.kms_first_call_ms'):.2f}"],
     ["KMS GetPublicKey, kept connection", f"{f('plain.kms_call_ms'):.2f}", f"{f('production.kms_call_ms'):.2f}"],
     ["get-name's init call (sealed mode), by a minimal client in a fresh process: the key set's query, a new connection (beside its cold starts)",
      f"{f('sealed.get-name.init_calls_fresh_ms'):.2f}", f"{f('production.get-name.init_calls_fresh_ms'):.2f}"],
     ["… of which waiting (wall minus the process's CPU)",
      f"{f('sealed.get-name.init_calls_fresh_wait_ms'):.2f}", f"{f('production.get-name.init_calls_fresh_wait_ms'):.2f}"],
     ["login's init calls (sealed mode), the same: the key set's query, then the signing key's Decrypt and parsing",
      f"{f('sealed.login.init_calls_fresh_ms'):.2f}", f"{f('production.login.init_calls_fresh_ms'):.2f}"],
     ["… of which waiting",
      f"{f('sealed.login.init_calls_fresh_wait_ms'):.2f}", f"{f('production.login.init_calls_fresh_wait_ms'):.2f}"],
     ["second-factor's init calls (sealed mode): the key set's query, then the signing key's Decrypt beside the data key's GetItem and Decrypt",
      f"{f('sealed.second-factor.init_calls_fresh_ms'):.2f}", f"{f('production.second-factor.init_calls_fresh_ms'):.2f}"],
     ["… of which waiting",
      f"{f('sealed.second-factor.init_calls_fresh_wait_ms'):.2f}", f"{f('production.second-factor.init_calls_fresh_wait_ms'):.2f}"],
     ["get-name's init calls in KMS mode: KMS's keys and DynamoDB's warm-up at once (production path only)",
      "–", f"{f('kms.password.init_calls_fresh_ms'):.2f} (password's)"]])

stretches = sum(1 for key in ours if key.startswith("login.idle_stretch_"))
batches = [f(f"login.batch_{i}_own_beyond_aws_p50_ms") for i in range(int(ours["login.batches"]))]
judged = int(ours["login.judged_batch"])
login_table = table(
    [f"login, production path, in process (p50, ms; batch {judged + 1} of {len(batches)}, the least disturbed)", "value"],
    [["own work beyond the AWS calls, each batch of 30 logins (before the cold starts, between the layers, at the end)",
      " / ".join(f"{b:.2f}" for b in batches)],
     ["whole login", f"{f('login.p50_ms'):.1f}"],
     ["its own work: the login minus its bcrypt verification", f"{f('login.own_work_p50_ms'):.2f}"],
     ["the wall time its AWS calls cover, each from the SDK's span for it (opened before it applies its configuration, closed as its orchestrator returns)",
      f"{f('login.aws_calls_covered_p50_ms'):.2f}"],
     ["the same calls' durations summed (two run at once)", f"{f('login.aws_calls_summed_p50_ms'):.2f}"],
     ["own work beyond the AWS calls", f"{f('login.own_beyond_aws_p50_ms'):.2f}"],
     [f"… where it lies: each stretch with no call open, median (before the first of its {ours['login.calls']} calls "
      f"in {ours['login.phases']} phases, between the phases, bcrypt's taken out, after the last)",
      " / ".join(f"{f(f'login.idle_stretch_{i}_p50_ms'):.3f}" for i in range(stretches))],
     ["… those medians summed", f"{f('login.own_beyond_aws_by_stretch_ms'):.2f}"],
     ["one RS256 signature in memory, measured beside the batch (sealed mode; taken out of the own work above, as bcrypt is)",
      f"{f('login.signature_in_memory_p50_ms'):.3f}"],
     ["KMS mode, one batch: whole login / own work beyond its AWS calls (kms:Sign one of them)",
      f"{f('login_kms.p50_ms'):.1f} / {f('login_kms.own_beyond_aws_p50_ms'):.2f}"]])

refresh_table = table(
    ["refresh, production path, sealed mode, in process (p50, ms; 30 of a chain)", "value"],
    [["whole refresh", f"{f('refresh.p50_ms'):.3f}"],
     [f"the wall time its {ours['refresh.calls']} DynamoDB calls cover", f"{f('refresh.dynamodb_calls_covered_p50_ms'):.3f}"],
     ["one RS256 signature in memory, measured beside", f"{f('refresh.signature_in_memory_p50_ms'):.3f}"],
     ["beyond both", f"{f('refresh.beyond_calls_and_signature_p50_ms'):.3f}"],
     ["its calls to KMS", ours["refresh.kms_calls"]]])

budgets, misses = [], []


def budget(what, measured, rule, ok):
    budgets.append([what, measured, rule, "ok" if ok else "MISSED"])
    if not ok:
        misses.append(what)


for fn in FUNCTIONS:
    # Judged process by process (init_beyond_budget_ms, the median over the
    # cold starts of each one's init beyond the budget): against twice the
    # floor's, started just before it, and, for a verifier, the round trips
    # (wall time, new connections and TLS handshakes included) of the calls
    # of its init as a minimal client in a fresh process made them between
    # the two. The medians of floor and round trips are shown for reading:
    # the median of the differences is not the difference of the medians.
    init, floor_init = f(f"production.{fn}.init_ms"), f(f"production.{fn}.floor_init_ms")
    beyond = f(f"production.{fn}.init_beyond_budget_ms")
    rule = f"≤ 2 × floor ({floor_init:.2f})"
    if fn in CALLS_AT_INIT:
        rule += f" + its init's round trips ({f(f'production.{fn}.init_calls_fresh_ms'):.2f})"
    budget(f"init, {fn} (ms)", f"{init:.2f}", f"{rule}; median excess, process by process: {beyond:+.2f}", beyond <= 0)
handshake = f("production.dynamodb_first_call_ms") - f("production.dynamodb_read_ms")
first, warm = f("production.get-name.first_ms"), f("production.get-name.warm_p50_ms")
limit = warm + handshake + 1
budget("get-name, first invocation (ms)", f"{first:.2f}",
       f"≤ its warm p50 ({warm:.2f}) + a DynamoDB handshake ({handshake:.2f}) + 1 = {limit:.2f}", first <= limit)
floor_warm, read = f("floor.warm_p50_ms"), f("production.dynamodb_read_ms")
limit = floor_warm + read + 0.2
budget("get-name, warm p50 through the runtime loop (ms)", f"{warm:.3f}",
       f"≤ floor ({floor_warm:.3f}) + its DynamoDB read ({read:.3f}) + 0.2 = {limit:.3f}", warm <= limit)
beyond = f("login.own_beyond_aws_p50_ms")
assert abs(beyond - min(batches)) < 0.001, "the judged batch is the lowest"
budget("login's own work beyond its AWS calls and its signature in memory, p50 of each login's, lowest of the batches' (ms)", f"{beyond:.2f}",
       f"≤ 0.5 (own work {f('login.own_work_p50_ms'):.2f}, AWS calls {f('login.aws_calls_covered_p50_ms'):.2f}, "
       f"signature {f('login.signature_in_memory_p50_ms'):.2f}; "
       f"batches {' / '.join(f'{b:.2f}' for b in batches)}, the highest {max(batches) - min(batches):.2f} above the lowest)",
       beyond <= 0.5)
whole, calls_ms, signature = f("refresh.p50_ms"), f("refresh.dynamodb_calls_covered_p50_ms"), f("refresh.signature_in_memory_p50_ms")
budget("refresh, warm p50, sealed mode, in process (ms)", f"{whole:.3f}",
       f"≤ its DynamoDB calls ({calls_ms:.3f}) + one signature in memory ({signature:.3f}) + 0.5; "
       f"median excess, refresh by refresh: {f('refresh.beyond_calls_and_signature_p50_ms') - 0.5:+.3f}",
       f("refresh.beyond_calls_and_signature_p50_ms") <= 0.5)
sent = {fn: int(ours[f"production.{fn}.kms_bytes_after_init"]) for fn in FUNCTIONS}
budget("no KMS call in any function's request path, sealed mode: bytes sent KMS after init", 
       f"{sum(sent.values())}", "0, every function (and refresh's in-process calls: " + ours["refresh.kms_calls"] + ")",
       not any(sent.values()) and ours["refresh.kms_calls"] == "0")
for fn in FUNCTIONS:
    mb = f(f"production.{fn}.rss_kib") / 1024
    budget(f"peak RSS, {fn}, success path (MB)", f"{mb:.1f}", "≤ 16", mb <= 16)
# Federation alone carries a second trust store (Mozilla's roots, for the
# providers: ~0.2 MB of certificates) and the SSM client (its secrets).
# Passkeys carry a pure-Rust WebAuthn library (webauthn-rs 0.6; 0.5 needs
# OpenSSL): its own curves and RSA (RustCrypto, for the assertions'
# signatures), CBOR, and X.509 for registration (docs/performance.md).
ZIP_MB = {"federation": (3.5, "≤ 3.5 (Mozilla's roots and the SSM client beside the rest)"),
          "passkeys": (3.5, "≤ 3.5 (webauthn-rs: RustCrypto's curves and RSA, CBOR, X.509)")}
for fn in FUNCTIONS:
    mb = f(f"zip_bytes_{fn}") / 1e6
    limit, rule = ZIP_MB.get(fn, (3.0, "≤ 3"))
    budget(f"arm64 zip, {fn} (MB)", f"{mb:.2f}", rule, mb <= limit)
cold = f("production.get-name.init_ms") + first
peer_cold = float(peer["cold_start_ms_median"])
budget("cold start, get-name: exec to first 200 (ms)", f"{cold:.1f}",
       f"≤ 1/50 of the Flask peer's ({peer_cold:.1f}): {peer_cold / 50:.1f} (ours is 1/{peer_cold / cold:.0f})",
       cold * 50 <= peer_cold)
u, w, o = (f(f"timing_{k}_login_p50_ms") for k in ("unknown_user", "wrong_password", "older_hash"))
budget("failed login, p50: unknown user / wrong password / wrong password of a hash below the cost (ms)",
       f"{u:.1f} / {w:.1f} / {o:.1f}",
       f"≤ {f('timing_gap_budget_ms'):.0f} ms apart ({f('timing_gap_ms'):.2f} ms)",
       f("timing_gap_ms") <= f("timing_gap_budget_ms"))
# The same bench's password-reset timings (recovery), judged on the same gap.
gap = f("timing_reset_request_gap_ms")
budget("password reset asked, p50: unknown or known name or address, mailed or not: the widest gap (ms)", f"{gap:.2f}",
       f"≤ {f('timing_gap_budget_ms'):.0f}", gap <= f("timing_gap_budget_ms"))
for way in ("name", "address"):
    gap = f(f"timing_reset_confirm_by_{way}_gap_ms")
    budget(f"a wrong reset code by {way}, p50: unknown, known, ticketed: the widest gap (ms)", f"{gap:.2f}",
           f"≤ {f('timing_gap_budget_ms'):.0f}", gap <= f("timing_gap_budget_ms"))
assert (timing_ok == "true") == all(row[3] == "ok" for row in budgets[-4:]), "the timing bench and its rows agree"
budgets_table = table(["budget", "measured", "rule", ""], budgets)

peer_table = table(
    ["the Flask peer (gunicorn, SQLite, bcrypt 12), same machine, same run", "value"],
    [["cold start: exec to first 200 on /get_name, median (ms)", peer["cold_start_ms_median"]],
     ["get_name over HTTP, p50 / p99 (ms)", f"{peer['get_name_p50_ms']} / {peer['get_name_p99_ms']}"],
     ["login over HTTP, p50 (ms)", peer["login_p50_ms"]],
     ["worker peak RSS (MB)", f"{float(peer['worker_peak_rss_kib_vmhwm_max']) / 1024:.1f}"],
     ["phases that never had a quiet machine", peer.get("noisy_phases", "?") or "none"]])

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
load = " ".join(open("/proc/loadavg").read().split()[:3])
stamp = (f"Measured by `make bench` on {datetime.date.today().isoformat()} at commit {commit}"
         f"{' (with uncommitted changes)' if dirty else ''}, {os.cpu_count()} cores, load {load}. "
         f"{len(budgets) - len(misses)} of {len(budgets)} budgets held.")
document = f"""# `make bench`: the last run

{stamp} Written by `scripts/bench-table.py`; never edited by hand. How it is
measured, and what these figures cannot say about AWS:
[performance.md](../performance.md).

## Each function, from the plain path to the production path

Init is exec to the first poll of the Runtime API (Lambda's `Init Duration`);
first and warm are through the runtime loop, the event's bytes handed over to
the response's last byte (the first event waiting at the Runtime API before
the process starts, as on a Lambda cold start); init and first are medians of {cold_runs} processes, warm of
30 invocations of the success path. Each of those processes starts right after
a cold start of the floor, and an init budget compares each process with the
floor's started just before it (the floor's row is its own {cold_runs}) and,
for a function whose init calls AWS, with the round trips it still makes
(sealed mode: the key set's query, and an issuer's `Decrypt` after it), as
a minimal client in a fresh process made them between the two; the budget's figure is the median of those
comparisons, which the medians shown beside it need not add up to. The layers add up from left to right:
plain HTTP to DynamoDB Local and a PEM key; JSON logs at INFO; sealed
mode's keys (the table's key set, made by a rotation; issuers unseal with
moto's KMS); TLS to DynamoDB and KMS (a local terminator, `AWS_CA_BUNDLE`):
the production path. Peak RSS, log lines per invocation:
production path, after 31 invocations of the success path.

{functions_table}

## Calls to DynamoDB Local and moto, this machine

{calls_table}

## Sealed mode and KMS mode, the functions that sign

Both on the production path, same run: sealed mode unseals its key at init
(one `Decrypt`, after the key set's query) and signs in memory; KMS mode
calls `kms:Sign` for every token. The last column counts the bytes each
function sent KMS after its init, over all its processes and invocations:
any KMS call on the request path moves it.

{modes_table}

## Login's own work, measured inside the same invocations

{login_table}

## Refresh beside its calls and one signature

{refresh_table}

## Budgets

{budgets_table}

## The peer

{peer_table}
"""
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as file:
    file.write(document)
print(document)
print(f"{len(misses)} budget(s) missed" + (": " + ", ".join(misses) if misses else ""))
sys.exit(1 if misses else 0)
