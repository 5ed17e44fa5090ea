#!/usr/bin/env bash
# What the project cannot install into .tools/ itself: the system's own
# programs. Checked before anything is installed. On Debian or Ubuntu
# (apt-get, as root) the missing ones are installed; anywhere else, the
# newcomer is told exactly what to install, and nothing else happens. When
# all is there, prints nothing: make dev and make test go on.
set -euo pipefail

missing=()   # what, and how to get it, one line each
packages=()  # the Debian packages of those apt-get can install, in the same order
lack() { missing+=("$1"); packages+=("${2:-}"); }

version_at_least() { # have want: dotted versions
  [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1) == "$2" ]]
}

command -v cargo >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1 \
  || lack "Rust, stable, with cargo and rustup: https://rustup.rs"
command -v cc >/dev/null 2>&1 \
  || lack "a C compiler (cc: the AWS SDK's aws-lc builds with it)  Debian: gcc  Fedora: gcc  macOS: xcode-select --install" gcc
if command -v python3 >/dev/null 2>&1; then
  py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  version_at_least "$py" 3.11 || lack "Python 3.11 or later (python3 is $py)"
  python3 -c 'import venv, ensurepip' 2>/dev/null \
    || lack "Python's venv module  Debian: python3-venv  Fedora: python3 (included)" python3-venv
else
  lack "Python 3.11 or later (python3)  Debian: python3 python3-venv  Fedora: python3  macOS: brew install python@3.11" python3
fi
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  node_version=$(node --version | tr -d v)
  version_at_least "$node_version" 20.19 || lack "Node.js 20.19 or later with npm (node is $node_version; Vite needs it)"
else
  lack "Node.js 20.19 or later with npm  https://nodejs.org  macOS: brew install node@20"
fi
if command -v java >/dev/null 2>&1; then :; else
  lack "Java 17 or later, a JRE (DynamoDB Local runs on it)  Debian: openjdk-17-jre-headless  Fedora: java-17-openjdk-headless  macOS: brew install openjdk@17" openjdk-17-jre-headless
fi
chromium=${CHROMIUM_PATH:-}
if [[ -z $chromium ]]; then
  for candidate in /usr/lib/chromium/chromium /usr/bin/chromium; do
    [[ -x $candidate ]] && chromium=$candidate && break
  done
fi
[[ -n $chromium && -x $chromium ]] \
  || lack "Chromium or Chrome, for the browser tests and screenshots  Debian: chromium  Fedora: chromium  macOS: brew install --cask chromium; elsewhere, set CHROMIUM_PATH to its binary" chromium
# The screenshots' text: any sans font will do where fontconfig is absent.
if command -v fc-list >/dev/null 2>&1 && ! grep -qi "liberation sans" <<<"$(fc-list 2>/dev/null)"; then
  lack "the Liberation fonts (the screenshots' text)  Debian: fonts-liberation2  Fedora: liberation-sans-fonts" fonts-liberation2
fi

((${#missing[@]})) || exit 0
if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
  installable=() rest=()
  for i in "${!missing[@]}"; do
    if [[ -n ${packages[$i]} ]]; then installable+=("${packages[$i]}"); else rest+=("${missing[$i]}"); fi
  done
  if ((${#installable[@]})); then
    echo "tools: installing ${installable[*]} (Debian)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${installable[@]}" >/dev/null
  fi
  missing=("${rest[@]}")
  ((${#missing[@]})) || exit 0
fi
{
  echo "This machine lacks what the project cannot install by itself. Install:"
  printf '  - %s\n' "${missing[@]}"
  echo "then run the command again. Everything else goes into .tools/ by itself."
} >&2
exit 1
