#!/usr/bin/env bash
# Quickstart command 2: set up .venv, lint, and run the whole test suite (slow tests included).
# Then the numerically sensitive tests (marker `numerics`) run again under a second CPU kernel set,
# so their tolerances hold on AVX-512 and AVX2 machines alike (scripts/other_kernels.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export WANDB_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check .
python -m pytest -q "$@"
if [ $# -eq 0 ]; then
  bash scripts/other_kernels.sh python -m pytest -q -m numerics
fi
