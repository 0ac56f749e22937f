#!/usr/bin/env bash
# Fetches into .whl/ the wheels that cosched needs and the GPU machine's image lacks, so that
# they can travel with the working tree to a machine with no network and be installed there
# with `python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl`.
#
# Usage, on a machine that reaches PyPI, from anywhere in the repository:
#   scripts/gpu/fetch-wheels.sh
# It empties .whl/ first (two versions of one package stop that install), downloads exactly
# the pins below as CPython 3.12 manylinux x86_64 (or pure-Python) wheels, prints each wheel
# and the total, and fails if the total exceeds 40 MiB: the whole tree that travels, these
# wheels included, must stay under 64 MiB.
#
# The pins are the full closure of xgboost-cpu, optuna and pydantic, less what the image
# already holds (numpy, scipy, packaging, pyyaml, tqdm, typing-extensions, markupsafe, attrs;
# its list is in the device notes, KINDS.md). Not needed: greenlet (SQLAlchemy 2.1 needs it
# only for its asyncio extra), tomli (Python < 3.11 only), colorama (Windows only).
# Versions match the development venv's. After changing one, recheck its needs with
#   unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist
set -euo pipefail
cd "$(dirname "$0")/../.."

PINS=(
    xgboost-cpu==3.2.0                # needs numpy, scipy; bundles its own libgomp
    optuna==5.0.0                     # needs alembic, colorlog, sqlalchemy, numpy, packaging, tqdm, pyyaml
    alembic==1.20.1                   # needs sqlalchemy, mako, typing-extensions
    colorlog==6.12.0
    mako==1.4.3                       # needs markupsafe
    sqlalchemy==2.1.9                 # needs typing-extensions
    pydantic==2.13.4                  # plan JSON; needs annotated-types, pydantic-core, typing-extensions, typing-inspection
    pydantic-core==2.46.4             # compiled: the cp312 wheel
    annotated-types==0.7.0
    typing-inspection==0.4.2          # needs typing-extensions
)
MAX_BYTES=$((40 * 1024 * 1024))
DEST=.whl

rm -rf "$DEST"
mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    -d "$DEST" "${PINS[@]}"

shopt -s nullglob
wheels=("$DEST"/*.whl)
if [ "${#wheels[@]}" -ne "${#PINS[@]}" ]; then
    echo "fetch-wheels: expected ${#PINS[@]} wheels in $DEST/, found ${#wheels[@]}" >&2
    exit 1
fi

total=0
for w in "${wheels[@]}"; do
    size=$(stat -c %s "$w")
    total=$((total + size))
    printf '%10d  %s\n' "$size" "$(basename "$w")"
done
printf '%10d  total (%d.%02d MiB, limit 40 MiB)\n' "$total" \
    $((total / 1048576)) $((total % 1048576 * 100 / 1048576))
if [ "$total" -gt "$MAX_BYTES" ]; then
    echo "fetch-wheels: $DEST/ holds $total bytes, over the 40 MiB limit ($MAX_BYTES);" \
        "the working tree that travels must stay under 64 MiB" >&2
    exit 1
fi
