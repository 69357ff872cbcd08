#!/usr/bin/env bash
# The test suite under another transformers release on CPU: the one the vLLM GPU set pins
# (constraints/gpu-vllm.txt), with the CPU torch of scripts/setup.sh. README "Supported pin sets"
# records a run.
#
#   bash scripts/test_pins.sh                   the whole suite (fast tests, then the slow ones)
#   bash scripts/test_pins.sh -m "not slow" -x  your own pytest arguments instead
#
# The venv lies outside the repository (PINS_VENV=..., default under ~/.cache/onethinker) and is
# reused while pyproject.toml and the pins are unchanged. TRANSFORMERS=... picks another release,
# TORCH_SPEC=... and PYTHON=... as in scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TRANSFORMERS=${TRANSFORMERS:-5.20.2}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
venv=${PINS_VENV:-"${XDG_CACHE_HOME:-$HOME/.cache}/onethinker/venv-transformers-$TRANSFORMERS"}

[ -f "$venv/bin/activate" ] || "$PY" -m venv --clear "$venv"
stamp=$venv/.onethinker-installed
want=$( (cat pyproject.toml; echo "$TORCH_SPEC $TRANSFORMERS $PWD") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q $TORCH_SPEC
  # One resolution for the project and the transformers pin: a dev dependency that needs a newer
  # transformers fails here instead of leaving a mixed environment.
  "$venv/bin/python" -m pip install -q -e ".[dev]" "transformers==$TRANSFORMERS"
  echo "$want" > "$stamp"
fi

export WANDB_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$venv/bin/python" - "$TRANSFORMERS" <<'EOF'
import os
import sys

import lightning_modules
import tokenizers
import torch
import transformers

if transformers.__version__ != sys.argv[1]:
    sys.exit(f"test_pins.sh: transformers {transformers.__version__} installed, {sys.argv[1]} wanted")
if not lightning_modules.__file__.startswith(os.getcwd() + os.sep):
    sys.exit(f"test_pins.sh: lightning_modules imports from {lightning_modules.__file__}, not this checkout")
print(f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
EOF
echo "$(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
start=$SECONDS
status=0
if [ $# -gt 0 ]; then
  "$venv/bin/python" -m pytest -q "$@" || status=$?
else
  "$venv/bin/python" -m pytest -q -m "not slow" || status=$?
  echo "fast tests: $((SECONDS - start)) s"
  "$venv/bin/python" -m pytest -q -m slow || status=$?
fi
echo "test_pins.sh (transformers $TRANSFORMERS): $((SECONDS - start)) s"
exit "$status"
