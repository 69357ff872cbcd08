#!/usr/bin/env bash
# Create .venv and install the project with its dev extras. Safe to re-run: it reinstalls only
# when pyproject.toml changed. Override the interpreter with PYTHON=..., torch with TORCH_SPEC=...
#
#   bash scripts/setup.sh            the CPU set in .venv: TORCH_SPEC, then ".[dev]"
#   bash scripts/setup.sh --gpu      the vLLM GPU set in .venv-gpu: ".[dev,vllm]" under
#                                    constraints/gpu-vllm.txt (torch comes from there, not TORCH_SPEC)
#   bash scripts/setup.sh --dry-run  print what would be installed, change nothing (with or without --gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
gpu=0
dry=0
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    --dry-run) dry=1 ;;
    -h | --help)
      sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "setup.sh: unknown option '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done
PY=${PYTHON:-python3}

if [ "$gpu" = 1 ]; then
  # A venv of its own: the GPU set pins an older torch and transformers than .venv, and one venv
  # for both would reinstall torch each time the other set is asked for.
  venv=.venv-gpu
  constraints=constraints/gpu-vllm.txt
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup.sh --gpu: vllm 0.33.0 needs Python >= 3.11; $("$PY" --version 2>&1) found (set PYTHON=...)" >&2
    exit 1
  fi
  [ "$dry" = 1 ] || command -v nvidia-smi > /dev/null ||
    echo "setup.sh --gpu: no nvidia-smi here; installing anyway, but vLLM rollouts need an NVIDIA GPU" >&2
  want=$( (cat pyproject.toml "$constraints"; echo gpu) | sha256sum | cut -d' ' -f1)
else
  venv=.venv
  TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
  want=$( (cat pyproject.toml; echo "$TORCH_SPEC") | sha256sum | cut -d' ' -f1)
fi
stamp=$venv/.onethinker-installed

if [ "$dry" = 1 ]; then
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "$venv is up to date: nothing to install"
    exit 0
  fi
  [ -f "$venv/bin/activate" ] || echo "$PY -m venv --clear $venv"
  echo "$venv/bin/python -m pip install -q --upgrade pip"
  if [ "$gpu" = 1 ]; then
    echo "$venv/bin/python -m pip install -q -c $constraints -e \".[dev,vllm]\""
  else
    echo "$venv/bin/python -m pip install -q $TORCH_SPEC"
    echo "$venv/bin/python -m pip install -q -e \".[dev]\""
  fi
  exit 0
fi

# A venv cut short (killed while being created) has no activate script: make it again.
[ -f "$venv/bin/activate" ] || "$PY" -m venv --clear "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  if [ "$gpu" = 1 ]; then
    python -m pip install -q -c "$constraints" -e ".[dev,vllm]"
  else
    # shellcheck disable=SC2086
    python -m pip install -q $TORCH_SPEC
    python -m pip install -q -e ".[dev]"
  fi
  echo "$want" > "$stamp"
fi
