#!/usr/bin/env python3
"""Checks every relative link of README.md and docs/*.md: the file exists, and
a #anchor names a heading of it by GitHub's slug rules (lower case; letters,
digits, spaces, hyphens and underscores kept, other punctuation dropped;
spaces become hyphens; a repeated slug gets -1, -2, ...). Links to other
sites are not fetched (no network here). Run by `make test`."""
import pathlib, re, sys

root = pathlib.Path(__file__).resolve().parents[2]
files = [root / "README.md"] + sorted((root / "docs").glob("*.md"))

LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def strip_code(text):
    """Markdown without fenced blocks and inline code, where links are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", text)


def slugs(path):
    seen, result = {}, set()
    in_fence = False
    for line in path.read_text().split("\n"):
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        m = None if in_fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # link text only
        slug = re.sub(r"[^\w\- ]", "", text.lower(), flags=re.U).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        result.add(slug if n == 0 else f"{slug}-{n}")
    return result


failures, checked = [], 0
for path in files:
    for target in LINK.findall(strip_code(path.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        checked += 1
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}: {target}"
        if not linked.exists():
            failures.append(f"{where}: no such file")
            continue
        if anchor:
            if linked.suffix != ".md":
                failures.append(f"{where}: an anchor into a file that is not Markdown")
            elif anchor not in slugs(linked):
                failures.append(f"{where}: no heading with that slug in {linked.relative_to(root)}")

for failure in failures:
    print(f"FAIL {failure}")
print(f"links: {checked} checked, {len(failures)} broken")
sys.exit(1 if failures or checked == 0 else 0)
