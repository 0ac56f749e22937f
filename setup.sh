#!/usr/bin/env bash
# Sets up cosched in ./.venv: creates the venv (seeing any torch already installed on the
# system), installs torch==2.13.0 only when no torch >= 2.4 is importable, then installs
# cosched with its dev extra in editable mode. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv --system-site-packages .venv
fi
VPY=.venv/bin/python
if ! "$VPY" - <<'PYEOF' 2>/dev/null
import sys
import torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 4) else 1)
PYEOF
then
  echo "setup: no torch >= 2.4 importable; installing the pinned CPU build torch==2.13.0"
  "$VPY" -m pip install -q "torch==2.13.0"
fi
"$VPY" -m pip install -q -e '.[dev]'
echo "setup: done ($("$VPY" -c 'import torch; print("torch", torch.__version__)'))"
