#!/usr/bin/env bash
# Build the five wheels and install one plugin, with all its requirements, into a fresh
# virtual environment, as a user would: `pip install dlguide-medical` from a folder of wheels.
# Shows that the core comes along and no other plugin does.
#   bash tools/check_install.sh [plugin]     (default: medical)
set -euo pipefail
plugin="${1:-medical}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip wheel -q --no-deps -w "$work/wheels" "$root/core" "$root/plugins/vision" "$root/plugins/nlp" \
  "$root/plugins/recsys" "$root/plugins/medical"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --find-links "$work/wheels" "dlguide-$plugin"
echo "installed dlguide distributions:"
"$work/venv/bin/pip" list 2>/dev/null | grep -i '^dlguide'
"$work/venv/bin/dlguide" plugins
"$work/venv/bin/dlguide" list
