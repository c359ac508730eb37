#!/usr/bin/env bash
# Run hone's test suite against the newest releases of its dependencies, past the caps in
# pyproject.toml, on purpose: the way to find out whether a cap can be raised.
#
#   bash scripts/test_newest.sh            # arguments are passed on to pytest, e.g. -x -k lora
#
# It works in its own venv, .venv-newest (made on the first run, reused after), so the
# tested environment stays as it is. torch stays at the local CPU wheel (override with
# HONE_TORCH="torch==X.Y.Z"); everything else is upgraded to its newest release.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-newest
TORCH="${HONE_TORCH:-torch==2.13.0}"
# transformers, peft and trl are where breakage comes from; accelerate is theirs.
FRAGILE=(transformers peft trl bitsandbytes accelerate)

if [ ! -x "$VENV/bin/python" ]; then
  python -m venv "$VENV"
fi
PY="$VENV/bin/python"

# Every requirement of hone[dev] by name only, so pyproject's caps do not apply.
mapfile -t NAMES < <("$PY" - <<'EOF'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
    name = re.split(r"[\s<>=!~;\[(]", line, maxsplit=1)[0]
    if name.lower() != "torch":
        print(name)
EOF
)
[ "${#NAMES[@]}" -gt 0 ] || { echo "test_newest: no requirements read from pyproject.toml; check its [project] table" >&2; exit 2; }

"$PY" -m pip install "$TORCH"
# No -c constraints.txt: the newest of everything, with torch held where it is.
"$PY" -m pip install -U --upgrade-strategy eager "$TORCH" "${FRAGILE[@]}" "${NAMES[@]}"
# --no-deps: hone's own caps would otherwise pull the upgrades back down.
"$PY" -m pip install --no-deps -e .

echo
echo "== versions under test =="
"$PY" - <<'EOF'
from importlib import metadata
for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "tokenizers", "safetensors"):
    try:
        print(f"  {name:14} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"  {name:14} (not installed)")
EOF
echo

status=0
HONE_ALLOW_UNTESTED=1 "$PY" -m pytest -q "$@" || status=$?

echo
if [ "$status" -eq 0 ]; then
  cat <<'EOF'
== the suite passed on these releases; to make them the tested set ==
  1. raise the caps in pyproject.toml to the first release above each version printed above
     (e.g. transformers 5.27.1 -> "transformers>=5.0,<5.28"), and the same numbers in
     src/hone/versions.py (TESTED);
  2. regenerate the pins:  PYTHON=.venv-newest/bin/python bash scripts/freeze_constraints.sh
  3. check the three agree: .venv-newest/bin/python -m pytest -q tests/test_versions.py
  4. commit pyproject.toml, src/hone/versions.py and constraints.txt together.
EOF
else
  cat <<EOF
== the suite FAILED on these releases (pytest exit $status) ==
  Keep the caps as they are. Fix hone for the new releases first (the failures above say
  where), then run this script again; the tested set is unchanged meanwhile.
EOF
fi
exit "$status"
