#!/usr/bin/env bash
# Regenerates shared/data/common-passwords.txt: Django's CommonPasswordValidator
# list (BSD-3-Clause; ~20,000 passwords, lower-case, most common first, after
# Royce Williams' list), taken from the Django wheel on PyPI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps -d "$tmp" "django==${DJANGO_VERSION:-5.2.19}"
python3 - "$tmp" "$root/shared/data/common-passwords.txt" <<'PY'
import glob, gzip, sys, zipfile
wheel = glob.glob(f"{sys.argv[1]}/*.whl")[0]
data = gzip.decompress(zipfile.ZipFile(wheel).read("django/contrib/auth/common-passwords.txt.gz"))
open(sys.argv[2], "wb").write(data)
PY
wc -l "$root/shared/data/common-passwords.txt"
