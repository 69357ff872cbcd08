"""`liger_token_logprobs` (Liger-Kernel's fused linear cross-entropy) against the reference log-prob path.

The reference is `gather_token_logprobs` at temperature 1 (fused cross-entropy per checkpointed
chunk). On a CUDA machine with liger-kernel the comparison runs on the GPU; on a CPU machine with
liger-kernel installed it runs in Triton's interpreter (``TRITON_INTERPRET=1``, in a subprocess,
since the flag must be set before the kernels are defined). Without liger-kernel both skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_modules.model.backbone import gather_token_logprobs
from lightning_modules.model.liger_logprobs import liger_available, liger_importable, liger_token_logprobs

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
NEEDS_LIGER = "liger-kernel>=0.8.2 (pip install -e '.[liger]')"


def compare(device: str, n: int = 300, hidden_size: int = 64, vocab: int = 1000) -> dict[str, float]:
    """Max |liger − reference| of the log-probs and of both gradients, float32, under random per-row
    upstream gradients (as the GRPO loss weights tokens); asserts they are within 1e-5."""
    gen = torch.Generator().manual_seed(0)
    head = nn.Linear(hidden_size, vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden_size, generator=gen) * 0.3)
    head = head.to(device)
    hidden = torch.randn(n, hidden_size, generator=gen).to(device).requires_grad_(True)
    targets = torch.randint(0, vocab, (n,), generator=gen).to(device)
    upstream = torch.randn(n, generator=gen).to(device)

    want = gather_token_logprobs(hidden, head, targets, chunk_size=64)
    g_want = torch.autograd.grad((want * upstream).sum(), [hidden, head.weight])
    got = liger_token_logprobs(hidden, head.weight, targets)
    g_got = torch.autograd.grad((got * upstream).sum(), [hidden, head.weight])

    assert got.dtype == torch.float32 and got.shape == (n,)
    torch.testing.assert_close(got, want, **TOLERANCE)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, **TOLERANCE)
    with torch.no_grad():  # the old-policy / reference log-probs of GRPO: no graph, same values
        torch.testing.assert_close(
            liger_token_logprobs(hidden, head.weight, targets), want.detach(), **TOLERANCE
        )
    assert liger_token_logprobs(hidden[:0], head.weight, targets[:0]).shape == (0,)
    return {
        "logp": float((got - want).abs().max()),
        "grad_hidden": float((g_got[0] - g_want[0]).abs().max()),
        "grad_weight": float((g_got[1] - g_want[1]).abs().max()),
    }


def test_liger_is_not_available_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: availability then depends on liger-kernel alone")
    assert liger_available() is False


def test_bad_shapes_are_refused_before_any_kernel():
    with pytest.raises(ValueError, match=r"\[N, H\]"):
        liger_token_logprobs(torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.zeros(2, dtype=torch.long))


@pytest.mark.skipif(
    not liger_available(), reason=f"needs a CUDA GPU and {NEEDS_LIGER}: this machine lacks one or both"
)
def test_liger_equals_the_reference_path_on_cuda():
    compare("cuda")


@pytest.mark.skipif(not liger_importable(), reason=f"needs {NEEDS_LIGER}, not installed here")
def test_liger_equals_the_reference_path_in_the_triton_interpreter():
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    code = (
        "import json; from tests.test_liger_logprobs import compare; "
        "print('DIFFS ' + json.dumps(compare('cpu', n=96, hidden_size=32, vocab=300)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    diffs = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("DIFFS "))[6:])
    assert max(diffs.values()) <= 1e-5, diffs
