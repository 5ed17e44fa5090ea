#!/usr/bin/env python3
"""Runs every ```console session of README.md and docs/*.md against a running
stack (BASE, e.g. http://127.0.0.1:9123, as `make dev` serves it), in the order
written, and compares each answer with what the docs show. Run by
scripts/check-dev.py while its `make dev` is up.

Conventions (docs/contributing.md):
- a line starting with "$ " is a command, a trailing backslash continues it;
  the lines after it, up to the next command, are its expected output;
- localhost:9000 stands for the stack's address;
- $AT and $RT are the access and refresh token of the last answer that
  carried them, or what a command `AT=$(curl …)` (or `RT=`) printed, as a
  reader pasting the session sets them; $MT the `mfa_token` of the last
  answer that asked for a second factor;
- commands run in the project's root, and .dev/ stands for make dev's state
  folder (DEV_DIR when it is another);
- compared: the status line and the headers shown; JSON bodies key for key;
  fixed values exactly; tokens, ids, keys and times by pattern; a string
  ending in "..." by the prefix before the dots."""
import json, os, pathlib, re, subprocess, sys, urllib.parse

root = pathlib.Path(__file__).resolve().parents[2]
FIRST = ["README.md", "docs/api.md", "docs/clients.md"]

PATTERNS = {
    "access_token": r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
    "refresh_token": r"[A-Za-z0-9_-]{43}",
    "mfa_token": r"[A-Za-z0-9_-]{43}",
    "device": r"[A-Za-z0-9_-]{43}",
    "id": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "kid": r"[A-Za-z0-9_-]{20,}",
    "n": r"[A-Za-z0-9_-]{300,}",
    # The client and address a session began from: this machine's curl, the watch's idea of us.
    "user_agent": r"curl/[0-9][0-9A-Za-z.-]*",
    "ip": r"[0-9A-Fa-f.:]+",
}
TIMES = {"created_at", "last_used_at", "expires_at"}


def sessions(path):
    """Each ```console block of a file: a list of (command, expected lines, line number)."""
    blocks, current, inside = [], None, False
    lines = path.read_text().split("\n")
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            if inside:
                blocks.append(current)
                inside = False
            elif line.strip() == "```console":
                inside, current = True, []
            continue
        if not inside:
            continue
        if line.startswith("$ "):
            current.append([line[2:], [], number])
        elif current and current[-1][0].endswith("\\"):
            current[-1][0] = current[-1][0][:-1] + " " + line.strip()
        elif current:
            current[-1][1].append(line)
        elif line.strip():
            raise SystemExit(f"{path}:{number}: output before any command")
    return blocks


def match_value(key, expected, actual, where):
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        problems = []
        if set(expected) != set(actual):
            problems.append(f"{where}: keys {sorted(actual)} differ from the docs' {sorted(expected)}")
        for k in set(expected) & set(actual):
            problems += match_value(k, expected[k], actual[k], f"{where}.{k}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {len(expected)} items, got {actual!r}"]
        return [p for i, (e, a) in enumerate(zip(expected, actual)) for p in match_value(key, e, a, f"{where}[{i}]")]
    if key in PATTERNS and isinstance(actual, str):
        return [] if re.fullmatch(PATTERNS[key], actual) else [f"{where}: {actual!r} is not a {key}"]
    if key in TIMES:
        return [] if isinstance(actual, int) and actual > 1_000_000_000 else [f"{where}: {actual!r} is not a time"]
    if isinstance(expected, str) and expected.endswith("..."):
        prefix = expected[:-3]
        return [] if isinstance(actual, str) and actual.startswith(prefix) else [f"{where}: {actual!r} does not start with {prefix!r}"]
    return [] if expected == actual else [f"{where}: {actual!r}, the docs say {expected!r}"]


def compare(expected_lines, output, base_host):
    expected_lines = [l.replace("localhost:9000", base_host) for l in expected_lines]
    while expected_lines and not expected_lines[-1].strip():
        expected_lines.pop()
    if not expected_lines:
        return []
    problems = []
    output = output.replace("\r\n", "\n")
    body = output
    expected_body = "\n".join(expected_lines)
    if expected_lines[0].startswith("HTTP/"):
        head, _, body = output.partition("\n\n")
        head_lines = head.split("\n")
        exp_head, _, expected_body = expected_body.partition("\n\n")
        exp_head_lines = exp_head.split("\n")
        status = lambda l: l.split(" ")[1] if len(l.split(" ")) > 1 else l
        if status(head_lines[0]) != status(exp_head_lines[0]):
            problems.append(f"status: {head_lines[0]!r}, the docs say {exp_head_lines[0]!r}")
        headers = {}
        for l in head_lines[1:]:
            name, _, value = l.partition(":")
            headers[name.strip().lower()] = value.strip()
        for l in exp_head_lines[1:]:
            name, _, value = l.partition(":")
            actual = headers.get(name.strip().lower())
            if actual != value.strip():
                problems.append(f"header {name.strip()}: {actual!r}, the docs say {value.strip()!r}")
    try:
        expected_json = json.loads(expected_body)
    except json.JSONDecodeError:
        if body.strip() != expected_body.strip():
            problems.append(f"output {body.strip()!r}, the docs say {expected_body.strip()!r}")
        return problems
    try:
        actual_json = json.loads(body)
    except json.JSONDecodeError:
        return problems + [f"not JSON: {body.strip()[:200]!r}"]
    return problems + match_value(None, expected_json, actual_json, "body")


def main():
    base = sys.argv[1].rstrip("/")
    host = urllib.parse.urlparse(base).netloc
    files = [root / f for f in FIRST] + sorted(p for p in (root / "docs").glob("*.md")
                                              if str(p.relative_to(root)) not in FIRST)
    env = dict(os.environ, AT="", RT="", MT="")
    dev_dir = os.environ.get("DEV_DIR")
    failures, ran = [], 0
    for path in files:
        for block in sessions(path):
            for command, expected, number in block:
                assigned = None
                if command[:5] in ("AT=$(", "RT=$(") and command.endswith(")"):
                    assigned, command = command[:2], command[5:-1]
                if not command.startswith("curl "):
                    failures.append(f"{path.relative_to(root)}:{number}: only curl commands run here: {command}")
                    continue
                command = command.replace("localhost:9000", host)
                if dev_dir:
                    command = command.replace(" .dev/", f" {dev_dir.rstrip('/')}/")
                result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60,
                                        cwd=root)
                ran += 1
                if assigned:
                    value = result.stdout.strip()
                    problems = [] if value else [f"{assigned}=$(…) printed nothing"]
                    if "".join(expected).strip():
                        problems.append("an assignment prints nothing: the docs show output")
                    if result.returncode != 0:
                        problems.append(f"exited {result.returncode}: {result.stderr.strip()}")
                    failures += [f"{path.relative_to(root)}:{number}: {p}" for p in problems]
                    env[assigned] = value
                    continue
                problems = compare(expected, result.stdout, host)
                if result.returncode != 0:
                    problems.append(f"curl exited {result.returncode}: {result.stderr.strip()}")
                for problem in problems:
                    failures.append(f"{path.relative_to(root)}:{number}: {problem}")
                try:
                    answer = json.loads(result.stdout.replace("\r\n", "\n").split("\n\n")[-1])
                except json.JSONDecodeError:
                    answer = None
                if isinstance(answer, dict):
                    env["AT"] = answer.get("access_token", env["AT"])
                    env["RT"] = answer.get("refresh_token", env["RT"])
                    env["MT"] = answer.get("mfa_token", env["MT"])
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"docs examples: {ran} commands run, {len(failures)} failed")
    sys.exit(1 if failures or ran == 0 else 0)


main()
