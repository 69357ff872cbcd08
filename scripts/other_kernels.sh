#!/usr/bin/env bash
# Run a command under a CPU kernel set other than this machine's default, so that a numeric
# tolerance that holds on one CPU kind only fails here too:
#   AVX-512 machine -> the AVX2 kernels (what AMD EPYC and older Intel machines run);
#   AVX2 machine    -> the scalar kernels (no SIMD in ATen; MKL and oneDNN at SSE4).
# Usage: bash scripts/other_kernels.sh python -m pytest -q -m numerics
set -euo pipefail
default=$(python -c "import torch; print(torch.backends.cpu.get_cpu_capability())")
case "$default" in
  AVX512*) export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ;;
  *) export ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41 ;;
esac
used=$(python -c "import torch; print(torch.backends.cpu.get_cpu_capability())")
echo "== kernels: default $default -> $used (MKL $MKL_ENABLE_INSTRUCTIONS, oneDNN $ONEDNN_MAX_CPU_ISA): $* =="
exec "$@"
