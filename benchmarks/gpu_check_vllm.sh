#!/usr/bin/env bash
# The vLLM GPU check, in one go (under 8 minutes on one H100/H200), on random-weight models from
# config: prompt ids, weights loaded, log-prob gap (gpu_check_vllm.py), rollout tokens/s of vLLM vs
# HF generate with and without the static cache at 64 x 512 tokens (bench_rollout.py), and the whole
# GRPO step with each engine (bench_grpo_step.py). Needs the GPU environment: bash scripts/setup.sh --gpu
# Targets (issue #13): rollout tokens/s >= 5x HF generate; the GRPO step >= 3x faster.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python -c "import vllm; print('vllm', vllm.__version__)" || echo "vllm: not installed"
echo "== 1-3: prompt ids, weights, log-prob gap"
timeout 240 python benchmarks/gpu_check_vllm.py
echo "== 4: rollout tokens/s, 64 prompts x 512 tokens"
timeout 300 python benchmarks/bench_rollout.py --device cuda --model 2b --prompts 64 --group 1 \
  --max-new-tokens 512 --repeats 1 --engines hf,hf-static,vllm
echo "== 5: GRPO step, 8 prompts x 8 rollouts x 256 tokens"
for engine in hf vllm; do
  timeout 300 python benchmarks/bench_grpo_step.py --device cuda --model 2b --prompts 8 --group 8 \
    --max-new-tokens 256 --micro-batch 8 --steps 3 --warmup 1 --engine "$engine" --no-peer
done
