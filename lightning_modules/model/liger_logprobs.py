"""Per-token log-probabilities through Liger-Kernel's fused linear cross-entropy (optional, GPU).

`liger_token_logprobs` is the GPU counterpart of the fused path of
`lightning_modules.model.backbone.gather_token_logprobs` (temperature 1, no entropy): log p(target) for rows
of ``hidden`` [N, H] against an ``lm_head`` weight [V, H], with gradients to both, without ever
holding more than a chunk of [N, V] logits. Liger's Triton kernel computes the loss and the logits'
gradient (softmax − one-hot) in one pass over each chunk, in place.

Facts of the installed API this relies on (liger-kernel ``ops/fused_linear_cross_entropy.py``):

- ``liger_kernel.transformers.functional.liger_fused_linear_cross_entropy(input, weight, target,
  bias=None, ..., reduction="mean", ..., accum_dtype=None, ...)`` returns the loss in float32.
- ``reduction="none"`` returns one loss per row. Its backward weights each row by its own upstream
  gradient only from liger-kernel 0.8.2 on: there the forward computes the losses alone and the
  backward recomputes the chunked logits, scaling each row's logits gradient before the projections
  sum over rows. Releases before 0.8.2 multiplied the whole gradient by the first element of the
  upstream gradient, which is right for ``mean``/``sum`` but wrong per token: `liger_available`
  refuses them.
- Rows whose target equals ``ignore_index`` (-100) get loss 0 and no gradient; targets here are
  token ids, never negative.

Cost, for the record: ``none`` runs four vocabulary matmuls per row (forward; recomputed forward,
then the two gradient matmuls in the backward), as many as the checkpointed chunks of
`gather_token_logprobs`. ``mean``/``sum`` would run three (the gradient is made in the forward) but
return no per-token values, which SFT logs per task and the GRPO loss weights per token.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

MIN_LIGER_VERSION = "0.8.2"
INSTALL_HINT = "pip install -e '.[liger]' (liger-kernel>=0.8.2, needs triton and a CUDA GPU)"


@functools.cache
def liger_importable() -> bool:
    """liger-kernel >= 0.8.2 is installed and its fused linear cross-entropy imports (checked once)."""
    if importlib.util.find_spec("liger_kernel") is None:
        return False
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        if Version(version("liger-kernel")) < Version(MIN_LIGER_VERSION):
            return False
    except PackageNotFoundError:  # importable from a source tree without metadata: try the import alone
        pass
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy  # noqa: F401
    except Exception:  # triton missing or broken: the kernel cannot run here
        return False
    return True


def liger_available() -> bool:
    """A CUDA device is present and liger-kernel (>= 0.8.2) imports. Imports it on the first call only."""
    return torch.cuda.is_available() and liger_importable()


def liger_token_logprobs(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    accum_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """[N] float32 log p(``targets``) under the logits ``hidden @ lm_head_weight.T (+ bias)``.

    Args:
        hidden: [N, H] rows to score (float32, bfloat16 or float16), on the kernel's device.
        lm_head_weight: [V, H] the vocabulary projection (``lm_head.weight``).
        targets: [N] token ids in [0, V).
        bias: [V] or ``None`` (Qwen-VL heads have none).
        accum_dtype: dtype of the weight-gradient accumulator across chunks; ``None`` keeps the
            weight's dtype (as autograd does across the chunks of `gather_token_logprobs`),
            ``torch.float32`` accumulates bf16 gradients in float32 at the cost of a [V, H] float32 buffer.

    Differentiable in ``hidden``, ``lm_head_weight`` and ``bias`` with any upstream gradient per row.
    """
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(
            f"hidden must be [N, H] and targets [N]; got {tuple(hidden.shape)}, {tuple(targets.shape)}"
        )
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError as err:
        raise ImportError(f"liger_token_logprobs needs liger-kernel: {INSTALL_HINT}") from err
    nll = liger_fused_linear_cross_entropy(
        hidden.contiguous(),
        lm_head_weight,
        targets.contiguous(),
        bias=bias,
        reduction="none",
        accum_dtype=accum_dtype,
    )
    return -nll
