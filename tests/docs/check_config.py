#!/usr/bin/env python3
"""docs/configuration.md names every variable the code reads from its
environment: each quoted UPPER_CASE name in the functions', the shared
crate's and auth-admin's code (outside unit tests and build scripts) must be
in it. Run by `make test`; fails on a variable the page does not name."""
import pathlib, re, sys

root = pathlib.Path(__file__).resolve().parents[2]
page = (root / "docs" / "configuration.md").read_text()
read = {}
for folder in ("shared/src", "functions", "tools"):
    for path in (root / folder).rglob("*.rs"):
        if path.name == "build.rs":
            continue  # build-time only: cargo's and the toolchain's
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", path.read_text())[0]
        text = re.sub(r"//[^\n]*", "", text)
        text = re.sub(r'env!\("[A-Z_]+"\)', "", text)  # compile time, cargo's
        for name in re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"', text):
            read.setdefault(name, set()).add(str(path.relative_to(root)))
missing = sorted(name for name in read if f"`{name}`" not in page)
for name in missing:
    print(f"FAIL docs/configuration.md does not name {name} (read in {', '.join(sorted(read[name]))})")
print(f"configuration: {len(read)} variables the code reads, {len(read) - len(missing)} named in docs/configuration.md")
# The claims docs/tokens.md lists are the ones discovery publishes
# (claims_supported, shared/src/handlers/discovery.rs): each token carries them.
discovery = (root / "shared" / "src" / "handlers" / "discovery.rs").read_text()
supported = re.search(r'claims_supported: \[\s*("[^\]]*)\]', discovery)
supported = set(re.findall(r'"(\w+)"', supported.group(1))) if supported else set()
tokens = (root / "docs" / "tokens.md").read_text()
table = tokens[tokens.index("<!-- claims:"):]
table = table[:table.index("\n\n", table.index("| claim |"))]
listed = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
if listed != supported or len(supported) < 10:
    print(f"FAIL docs/tokens.md lists the claims {sorted(listed)}; discovery publishes {sorted(supported)}")
else:
    print(f"claims: docs/tokens.md lists the {len(listed)} claims discovery publishes")
sys.exit(1 if missing or len(read) < 30 or listed != supported else 0)
