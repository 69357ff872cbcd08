#!/usr/bin/env bash
# Fault injection on the tiny model (a few minutes on 2 CPU cores): kills during RL and evaluation, a
# full disk during a checkpoint, an unwritable output folder, corrupt media. Prints fault -> outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export WANDB_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python scripts/fault_check.py "$@"
