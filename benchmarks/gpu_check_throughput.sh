#!/usr/bin/env bash
# The training-throughput GPU check of issue #15, in one go (about 6 minutes expected on one H200;
# each stage under a timeout, 9 minutes at the very worst), on random bf16 weights from config, nothing
# downloaded:
#   1. SFT on the Qwen3-VL-8B shape, the same 32-conversation steps each time: today's padded path
#      against transformers' Trainer (bench_sft.py --gpu-8b);
#   2. ours packed (--pack-tokens 16384);
#   3. ours packed + Liger-Kernel's fused linear cross-entropy (--liger; needs the backbone's
#      fused_loss argument and liger-kernel, skipped without either);
#   4. the GRPO process's peak host RSS on the 2B shape (benchmarks/rss_profile.py).
# Each prints tokens/s, MFU (6·N·tokens/s / dense bf16 peak) and peak GPU memory; the runs leave JSON
# under $OUT (default outputs/gpu_check_throughput) and the last step prints $OUT/summary.md.
#
# The lent GPU machine has no av/decord to collate videos and no network: on the dev box first run
#   bash benchmarks/gpu_check_throughput.sh --prepare   # collates one padded batch file (~35 MiB; the
#                                                       # packed runs pack it on load), writes the RL suite,
#                                                       # fetches the Liger wheel, all under .whl/
# then carry .whl (the `run` tool's carry) and run, on the GPU machine:
#   bash benchmarks/gpu_check_throughput.sh
# Other modes: --dry-run prints every command and runs none; --smoke runs the same steps on CPU with
# the tiny model (code-path check, minutes). Settings by environment: BATCH (conversations per step,
# 32; 16 on an 80 GB card, where the Trainer's full logits would not fit), PACK (16384), STEPS (6),
# WARMUP (2), BATCHES (distinct batches, cycled: 1, to keep the carried file small), DATA (.whl/data),
# WHEELS (.whl/wheels), PEER_LIGER=1 adds the Trainer with use_liger_kernel, RSS_TRL=1 adds TRL's RSS.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export WANDB_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=.

mode=gpu
for arg in "$@"; do
  case "$arg" in
    --prepare) mode=prepare ;;
    --dry-run) mode=dry ;;
    --smoke) mode=smoke ;;
    *) echo "usage: bash benchmarks/gpu_check_throughput.sh [--prepare|--dry-run|--smoke]" >&2; exit 2 ;;
  esac
done

BATCH=${BATCH:-32} PACK=${PACK:-16384} STEPS=${STEPS:-6} WARMUP=${WARMUP:-2} BATCHES=${BATCHES:-1}
DATA=${DATA:-.whl/data} WHEELS=${WHEELS:-.whl/wheels} OUT=${OUT:-outputs/gpu_check_throughput}
RSS_ARGS=(--model 2b --device cuda --prompts 8 --group 8 --max-new-tokens 128 --updates 2 --micro-batch 8 --steps 2)
RSS_DESC="2B shape, 8 prompts x 8 rollouts x 128 tokens, 2 updates, 2 RL steps"
SMOKE=() SCALE=1
if [ "$mode" = smoke ]; then  # the tiny model on CPU through the --gpu-8b code path (bf16 on CPU is slow)
  BATCH=4 PACK=4096 STEPS=2 WARMUP=1 BATCHES=1 DATA="$OUT/data" SCALE=4
  SMOKE=(--gpu-smoke)
  RSS_ARGS=(--model tiny --device cpu --prompts 2 --group 2 --max-new-tokens 4 --updates 1 --micro-batch 4 --steps 2)
  RSS_DESC="tiny model on CPU"
fi
# One file of padded batches serves every arm: --pack-tokens packs them on load with the packing step
# of Collator(..., pack_tokens=N) (datamodules.packing.pack_batch), so all arms see the same conversations.
PADDED="$DATA/sft_8b_padded_b${BATCH}x${BATCHES}_seed0.pt"
SUITE="$DATA/suite_rl_p8x2_seed0"
SFT=(python benchmarks/bench_sft.py --gpu-8b "${SMOKE[@]}" --batch-size "$BATCH" --batches "$BATCHES"
  --steps "$STEPS" --warmup "$WARMUP")

# step NAME LIMIT_S CMD...: print the command; unless --dry-run, run it under a time limit with its
# output in $OUT/NAME.log. A failed step is reported and the script goes on to the next.
step() {
  local name=$1 limit=$(($2 * SCALE))
  shift 2
  echo "+ timeout $limit $*"
  [ "$mode" = dry ] && return 0
  local t0=$SECONDS rc=0
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" || rc=$?
  if [ "$rc" = 0 ]; then
    echo "== $name: done in $((SECONDS - t0)) s"
  else
    echo "== $name: FAILED (exit $rc; 124 = over its $limit s) after $((SECONDS - t0)) s; log: $OUT/$name.log"
  fi
  return 0
}

mkdir -p "$OUT"
if [ "$mode" = prepare ]; then
  # Dev box (CPU, network): everything the GPU machine cannot make itself.
  mkdir -p "$DATA" "$WHEELS"
  step collate_padded 600 python benchmarks/bench_sft.py --collate-only --batch-size "$BATCH" \
    --batches "$BATCHES" --batches-file "$PADDED"
  # rss_profile.py reads the first prompts x steps RL rows of the suite (8 x 2; 2 rows per task suffice).
  step suite 300 python -c "from pathlib import Path; from datamodules.synthetic import generate_suite; \
generate_suite(Path('$SUITE'), 2, 0)"
  step liger_wheel 300 python -m pip download --no-deps -d "$WHEELS" "liger-kernel>=0.8.2"
  du -sh "$DATA" "$WHEELS" 2>/dev/null
  echo "carry .whl to the GPU machine (the run tool's carry: [\".whl\"]; 64 MiB at most)"
  exit 0
fi

echo "== environment"
if [ "$mode" != dry ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
  if [ "$mode" = gpu ] && ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check_throughput: CUDA is not available here; nothing measured (--smoke runs the code path on CPU)"
    exit 0
  fi
fi
if [ "$mode" = gpu ] && [ ! -f "$PADDED" ]; then
  echo "missing $PADDED: collating here needs av and decord (bash benchmarks/gpu_check_throughput.sh --prepare on the dev box)"
fi

# Liger: from the carried wheel if it is not installed (no index: the machine has no network).
has_liger() { python -c "from lightning_modules.model.liger_logprobs import liger_importable as ok; import sys; sys.exit(not ok())"; }
if [ "$mode" = gpu ] && ! has_liger; then
  wheel=$(find "$WHEELS" -maxdepth 1 -name 'liger_kernel-*.whl' 2>/dev/null | sort | tail -1)
  if [ -n "$wheel" ]; then
    python -m pip install --no-index --no-deps "$wheel" || echo "liger-kernel: install from $wheel failed"
  fi
fi
liger_arm=1
if [ "$mode" != dry ]; then
  if [ "$mode" = gpu ] && ! has_liger; then
    echo "liger-kernel (>= 0.8.2) not importable: step 3 skipped"
    liger_arm=0
  fi
  if ! python -c "import inspect, sys; from lightning_modules.model.backbone import VisionLanguageBackbone as B; \
sys.exit('fused_loss' not in inspect.signature(B.__init__).parameters)"; then
    echo "VisionLanguageBackbone has no fused_loss argument yet (the Liger wiring): step 3 skipped"
    liger_arm=0
  fi
fi

if [ "$mode" = gpu ] || [ "$mode" = dry ]; then
  # Loads cuBLAS / cuDNN / fused AdamW kernels once, so the first measured process does not pay for a
  # cold page cache (the first-process penalty seen in benchmarks/README.md, "SFT on a GPU").
  step warmup 45 python -c "
import torch
x = torch.randn(4096, 4096, device='cuda', dtype=torch.bfloat16, requires_grad=True)
q = torch.randn(1, 8, 1024, 128, device='cuda', dtype=torch.bfloat16, requires_grad=True)
(x @ x).sum().backward()
torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
opt = torch.optim.AdamW([x], fused=True); opt.step(); torch.cuda.synchronize(); print('warm-up done')"
fi

echo "== 1: SFT, padded: transformers Trainer, then ours ($BATCH conversations per step)"
step sft_padded 190 "${SFT[@]}" --sides peer,ours --batches-file "$PADDED" --json-out "$OUT/sft_padded.json"
if [ "${PEER_LIGER:-0}" = 1 ]; then
  step sft_peer_liger 100 "${SFT[@]}" --sides peer --liger --batches-file "$PADDED" \
    --json-out "$OUT/sft_peer_liger.json"
fi
echo "== 2: SFT, ours packed into rows of $PACK tokens"
step sft_packed 95 "${SFT[@]}" --sides ours --pack-tokens "$PACK" --batches-file "$PADDED" \
  --json-out "$OUT/sft_packed.json"
echo "== 3: SFT, ours packed + Liger fused linear cross-entropy"
if [ "$liger_arm" = 1 ]; then
  step sft_packed_liger 95 "${SFT[@]}" --sides ours --pack-tokens "$PACK" --liger --batches-file "$PADDED" \
    --json-out "$OUT/sft_packed_liger.json"
else
  echo "skipped (see the environment lines above)"
fi

echo "== 4: GRPO host RSS ($RSS_DESC)"
# benchmarks/rss_profile.py is the host-memory work of issue #15 (written alongside this script);
# where it is absent the step is skipped, not failed.
if [ "$mode" = dry ] || [ -f benchmarks/rss_profile.py ]; then
  suite=()
  [ -d "$SUITE" ] && suite=(--suite-dir "$SUITE")
  step rss_ours 90 python benchmarks/rss_profile.py "${RSS_ARGS[@]}" "${suite[@]}" --json "$OUT/rss_ours.json"
  if [ "${RSS_TRL:-0}" = 1 ]; then
    step rss_trl 90 python benchmarks/rss_profile.py --side trl "${RSS_ARGS[@]}" "${suite[@]}" \
      --json "$OUT/rss_trl.json"
  fi
else
  echo "benchmarks/rss_profile.py is not in this checkout: step 4 skipped"
fi

echo "== summary"
[ "$mode" = dry ] && exit 0
python benchmarks/gpu_check_throughput.py "$OUT"
echo "total: $SECONDS s"
