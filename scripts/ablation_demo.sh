#!/usr/bin/env bash
# The estimator ablation on the demo, end to end; regenerates docs/ablation_demo/.
# EMA-GRPO, GRPO and Dr.GRPO x 3 seeds x 48 RL steps from the demo SFT model, the held-out set every
# 8 RL steps and the starting model once per seed (2 runs at a time, one torch thread each).
# Its ema_grpo arm is the demo's RL recipe: its gain at logged step 23 (after 24 RL steps, the demo's
# length) is the demo's gain over 3 RL seeds.
# Extra arguments go to `onethinker ablate` (e.g. --seeds '[5]'); the outputs stay under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DEMO=${DEMO_DIR:-outputs/demo}
OUT=${OUT:-outputs/ablation_demo}
if [ ! -f "$DEMO/sft_hf/config.json" ]; then
  onethinker demo --out "$DEMO" --sft_only true
fi
onethinker ablate --configs "[experiments/shared/trainer_cpu.yaml, experiments/demo/ema_grpo.yaml, experiments/ablation/heldout.yaml]" \
  --advantages "[grpo, dr_grpo, ema_grpo]" --seeds 3 --parallel 2 --threads 1 --evaluate_start true \
  --heldout_at 23 --skip_done true --out "$OUT" "$@" \
  -- "--model.init_args.backbone.init_args.model_name_or_path=$DEMO/sft_hf" \
  "--data.synthetic_suite=$DEMO/synthetic" "--data.train_manifests=[$DEMO/synthetic/rl.json]" "--data.val_manifests=[$DEMO/synthetic/eval.json]"
mkdir -p docs/ablation_demo
cp "$OUT"/*.md "$OUT"/*.png docs/ablation_demo/
echo "[ablation_demo] tables and plots copied to docs/ablation_demo/"
