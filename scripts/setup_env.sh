#!/usr/bin/env bash
# Create (or update) the project virtualenv with the exact pins of requirements.lock, then install
# raygen itself in editable mode. Usage: bash scripts/setup_env.sh [VENV_DIR]   (default .venv)
set -euo pipefail
venv="${1:-.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "RayGen needs Python 3.11 (found $("$python" --version)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r requirements.lock
"$venv/bin/python" -m pip install --quiet --no-deps -e .
echo "environment ready: $venv"
