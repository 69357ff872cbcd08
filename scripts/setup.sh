#!/usr/bin/env bash
# Create .venv and install the project with its dev extras. Safe to re-run: it reinstalls only
# when pyproject.toml changed. Override the interpreter with PYTHON=..., torch with TORCH_SPEC=...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
# A venv cut short (killed while being created) has no activate script: make it again.
[ -f .venv/bin/activate ] || "$PY" -m venv --clear .venv
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.onethinker-installed
want=$( (cat pyproject.toml; echo "$TORCH_SPEC") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  python -m pip install -q $TORCH_SPEC
  python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
