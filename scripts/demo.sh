#!/usr/bin/env bash
# Quickstart command 1: set up .venv and run the demo on the embedded synthetic suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
onethinker demo --out "${DEMO_DIR:-outputs/demo}" "$@"
