"""Helpers for numeric comparisons that hold on every CPU kernel set (AVX-512, AVX2, scalar).

Two float32 computations of the same function that sum in a different order (another chunking,
another batch shape, another kernel) differ by float32 rounding, which depends on the CPU. Tests
that check that two code paths compute the *same function* run both paths in float64, where that
rounding is ~1e-16 and a tight tolerance is safe everywhere.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

# Two float64 evaluations of one function in different summation orders: a margin far above
# float64 rounding (1e-16 relative), far below any real difference between the paths.
FLOAT64_TOLERANCE = {"atol": 1e-10, "rtol": 1e-9}

# Two float64 forwards of a Qwen-VL model over different batch shapes. The model keeps float32
# islands (RMSNorm, rotary embeddings): inputs that differ by float64 rounding can round to
# float32 one ulp apart (6e-8 relative), which reaches the log-probabilities as ~1e-8 relative
# (seen: 1.2e-7 absolute on values near 12 with the scalar kernels).
FLOAT64_MODEL_TOLERANCE = {"atol": 1e-6, "rtol": 1e-6}


def batch_to(batch: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """``batch`` with its floating-point tensors (pixels) cast to ``dtype``; ids and masks untouched."""
    return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}


def float32_sum_atol(terms: int, magnitude: float = 1.0) -> float:
    """Absolute tolerance for a float32 reduction over ``terms`` values of about ``magnitude``.

    Rounding errors of a sum grow like sqrt(terms) * eps in practice (n * eps is the worst case);
    a factor 8 covers the kernel sets seen here (AVX-512, AVX2, scalar).
    """
    return 8 * terms**0.5 * torch.finfo(torch.float32).eps * magnitude


def assert_same_report(got: Any, want: Any, path: str = "") -> None:
    """Nested dicts/lists equal, floats up to float64 rounding: a sum of per-rank parts adds in
    another order than one process's sum."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (
            f"{path}: keys {sorted(got)} != {sorted(want)}"
        )
        for key in want:
            assert_same_report(got[key], want[key], f"{path}/{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_report(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15, nan_ok=True), path
    else:
        assert got == want, path
