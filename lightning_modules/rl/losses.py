"""Policy-gradient losses for GRPO-style RL (SPEC §7): clipped PPO loss with dual-clip,
loss aggregation, KL estimators and entropy.

Pure functions on tensors; nothing here imports Lightning or another package of this repository.
Shapes: per-token tensors are ``[B, T]`` (response tokens), ``mask`` is ``[B, T]`` (bool or
0/1), advantages are ``[B]`` (one per sequence, broadcast over tokens) or ``[B, T]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "PolicyLossStats",
    "aggregate",
    "entropy_from_logits",
    "global_counts",
    "kl_penalty",
    "masked_mean",
    "policy_loss",
]

LOG_RATIO_CLAMP = 20.0
"""The log-ratio logπ − logπ_old is clamped to ±20 before exponentiation."""

LOW_VAR_KL_CLAMP = 10.0
"""k3 (low_var_kl) per-token values are clamped to [−10, 10], as verl does."""

AggregationMode = Literal["token-mean", "seq-mean-token-mean", "constant"]
KLKind = Literal["k1", "kl", "k2", "mse", "k3", "low_var_kl"]


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask`` (0 when the mask is empty)."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def _masked(values: Tensor, mask: Tensor) -> Tensor:
    """``values`` where mask, else 0 (``where``, so NaN/inf in padding cannot leak)."""
    return torch.where(mask.bool(), values, torch.zeros_like(values))


# --------------------------------------------------------------------------------------------
# Clipped policy loss
# --------------------------------------------------------------------------------------------
@dataclass
class PolicyLossStats:
    """Detached 0-d tensors, masked means over this call's tokens.

    ``clip_fraction``: tokens where the PPO clip is active (the clipped term is the larger loss).
    ``dual_clip_fraction``: tokens with A < 0 where the dual-clip bound −A·c is active.
    ``approx_kl``: KL(π_old ‖ π) estimated as mean((r − 1) − log r) (k3, ≥ 0).
    ``ratio_mean``: mean of r = π/π_old.
    """

    clip_fraction: Tensor
    dual_clip_fraction: Tensor
    approx_kl: Tensor
    ratio_mean: Tensor


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.3,
    dual_clip: float | None = 3.0,
) -> tuple[Tensor, PolicyLossStats]:
    """Per-token clipped surrogate loss ``[B, T]`` (0 at masked tokens) and its stats.

    r = exp(clamp(logπ − logπ_old, ±20));
    L = max(−A·r, −A·clamp(r, 1 − clip_low, 1 + clip_high));
    where A < 0 (dual-clip, c = ``dual_clip``): L = min(L, −A·c). ``dual_clip=None`` disables it.
    Reduce the result with :func:`aggregate`.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    if advantages.dim() == logprobs.dim() - 1:
        advantages = advantages.unsqueeze(-1)
    advantages = advantages.to(logprobs.dtype)
    mask_b = mask.bool()

    log_ratio = (logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(loss_unclipped, loss_clipped)
    clipped = loss_clipped > loss_unclipped

    negative = (advantages < 0).expand_as(loss)
    if dual_clip is not None:
        loss_dual = -advantages * dual_clip
        dual_active = negative & (loss > loss_dual)
        loss = torch.where(negative, torch.minimum(loss, loss_dual), loss)
    else:
        dual_active = torch.zeros_like(mask_b)

    loss = _masked(loss, mask_b)
    with torch.no_grad():
        approx_kl = masked_mean(_masked((ratio - 1.0) - log_ratio, mask_b), mask_b)
        stats = PolicyLossStats(
            clip_fraction=masked_mean(clipped.to(logprobs.dtype), mask_b).detach(),
            dual_clip_fraction=masked_mean(dual_active.to(logprobs.dtype), mask_b).detach(),
            approx_kl=approx_kl.detach(),
            ratio_mean=masked_mean(_masked(ratio, mask_b), mask_b).detach(),
        )
    return loss, stats


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------
def aggregate(
    loss_tokens: Tensor,
    mask: Tensor,
    mode: AggregationMode = "token-mean",
    constant_normalizer: float | None = None,
    global_tokens: Tensor | float | None = None,
    global_sequences: Tensor | float | None = None,
) -> Tensor:
    """Reduce a per-token loss ``[B, T]`` to a scalar.

    - ``"token-mean"`` (released): Σ loss·mask / (number of unmasked tokens).
    - ``"seq-mean-token-mean"``: each sequence's token mean, then the mean over sequences
      (sequences with no unmasked token are not counted).
    - ``"constant"`` (Dr.GRPO): Σ loss·mask / (number of sequences × ``constant_normalizer``);
      the normaliser defaults to T (pass the max response length to be exact).

    **Gradient accumulation and DDP.** The denominators above count only this call's tokens
    (sequences). To get the exact mean over a whole mini-batch split into micro-batches and
    ranks, pass the mini-batch totals: ``global_tokens`` (unmasked tokens, summed over all its
    micro-batches and all ranks; used by ``token-mean``) and ``global_sequences`` (sequences with
    at least one token, same sums; used by the two other modes). :func:`global_counts` computes
    both with one all-reduce. Then the per-micro-batch results *sum* to the mini-batch loss: call
    ``backward`` on each without dividing by the number of micro-batches, and, since DDP
    *averages* gradients over ``world_size`` ranks, multiply each micro-batch loss by
    ``world_size`` before ``backward`` (log the unscaled value)::

        tokens, seqs = global_counts([mb.mask for mb in mini_batch])   # collective
        for mb in mini_batch:
            per_tok, stats = policy_loss(lp(mb), mb.old_lp, mb.adv, mb.mask)
            loss = aggregate(per_tok, mb.mask, global_tokens=tokens)
            manual_backward(loss * world_size)
    """
    m = mask.to(loss_tokens.dtype)
    masked = _masked(loss_tokens, mask)
    if mode == "token-mean":
        denom = m.sum() if global_tokens is None else global_tokens
        return masked.sum() / torch.as_tensor(
            denom, dtype=loss_tokens.dtype, device=loss_tokens.device
        ).clamp_min(1.0)
    tokens_per_seq = m.sum(dim=-1)
    n_seq = (tokens_per_seq > 0).sum() if global_sequences is None else global_sequences
    n_seq_t = torch.as_tensor(n_seq, dtype=loss_tokens.dtype, device=loss_tokens.device).clamp_min(1.0)
    if mode == "seq-mean-token-mean":
        seq_means = masked.sum(dim=-1) / tokens_per_seq.clamp_min(1.0)
        return seq_means.sum() / n_seq_t
    if mode == "constant":
        norm = float(loss_tokens.shape[-1]) if constant_normalizer is None else float(constant_normalizer)
        if norm <= 0:
            raise ValueError(f"constant_normalizer must be positive, got {norm}")
        return masked.sum() / (n_seq_t * norm)
    raise ValueError(f"unknown aggregation mode {mode!r}; use token-mean, seq-mean-token-mean or constant")


def global_counts(masks: Sequence[Tensor], sync_dist: bool = True) -> tuple[Tensor, Tensor]:
    """Unmasked tokens and non-empty sequences over a mini-batch's micro-batch ``masks``,
    summed across ranks (one all-reduce) when ``torch.distributed`` is initialised.

    Collective under DDP: every rank must call it. Returns two 0-d float tensors on the masks'
    device, for :func:`aggregate`'s ``global_tokens`` / ``global_sequences``.
    """
    if not masks:
        raise ValueError("global_counts needs at least one mask")
    device = masks[0].device
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for m in masks:
        per_seq = m.to(device=device, dtype=torch.float64).sum(dim=-1)
        counts[0] += per_seq.sum()
        counts[1] += (per_seq > 0).sum()
    if sync_dist and dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    return counts[0].float(), counts[1].float()


# --------------------------------------------------------------------------------------------
# KL and entropy
# --------------------------------------------------------------------------------------------
def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: KLKind = "k3") -> Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from samples of π (Schulman's estimators).

    - ``k1`` / ``kl``: logπ − logπ_ref.
    - ``k2`` / ``mse``: ½ (logπ − logπ_ref)².
    - ``k3`` / ``low_var_kl`` (paper's choice): with d = clamp(logπ_ref − logπ, ±20),
      exp(d) − d − 1, clamped to [−10, 10] as verl does (it is ≥ 0, so only the upper clamp
      ever bites).
    Mask and reduce with :func:`aggregate`.
    """
    if kind in ("k1", "kl"):
        return logprobs - ref_logprobs
    if kind in ("k2", "mse"):
        return 0.5 * (logprobs - ref_logprobs).square()
    if kind in ("k3", "low_var_kl"):
        d = (ref_logprobs - logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        return (torch.exp(d) - d - 1.0).clamp(-LOW_VAR_KL_CLAMP, LOW_VAR_KL_CLAMP)
    raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2, k3 (low_var_kl)")


def entropy_from_logits(logits: Tensor, chunk_size: int | None = 1024) -> Tensor:
    """Entropy of the softmax distribution at every position: ``[..., V] → [...]`` (float32).

    H = logsumexp(z) − Σ softmax(z)·z. Positions are processed ``chunk_size`` rows at a time
    (``None``: all at once), which bounds the float32 temporaries to ``chunk_size × V``. Under
    ``torch.no_grad()`` (logging) that bounds peak memory; with grad (an entropy bonus, e.g.
    ``loss − coef · aggregate(entropy, mask)``) autograd still keeps each chunk's softmax.
    """
    shape = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    step = flat.shape[0] if chunk_size is None or chunk_size <= 0 else chunk_size
    out = []
    for start in range(0, flat.shape[0], max(step, 1)):
        z = flat[start : start + step].float()
        z_finite = torch.where(torch.isfinite(z), z, torch.zeros_like(z))  # p = 0 where z = −inf
        out.append(torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z_finite).sum(dim=-1))
    if not out:
        return flat.new_zeros(shape, dtype=torch.float32)
    return torch.cat(out).reshape(shape)


def truncated_is_weights(old_logprobs: Tensor, sampling_logprobs: Tensor, cap: float) -> Tensor:
    """Truncated importance-sampling weights ``min(exp(logπ_old − logπ_engine), cap)`` per token.

    The rollout engine samples from its own copy of the policy, whose probabilities differ slightly
    from the trainer's (kernels, precision); these weights correct the policy gradient towards the
    trainer's π_old. Detached: they scale the loss, they are not optimised.
    """
    if cap <= 0:
        raise ValueError(f"tis_cap must be > 0, got {cap}")
    log_ratio = (old_logprobs - sampling_logprobs).detach().clamp(max=LOG_RATIO_CLAMP)
    return torch.exp(log_ratio).clamp(max=cap).nan_to_num(nan=1.0)  # NaN: the engine gave no log-prob


def logprob_gap(trainer_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor) -> tuple[float, float, int]:
    """Sum and max of |trainer − engine| log-probability over the masked tokens, and their count
    (tokens whose engine log-prob is NaN, i.e. not reported, are left out)."""
    gap = (trainer_logprobs.detach().double() - engine_logprobs.detach().double()).abs()
    gap = gap[mask.bool() & ~engine_logprobs.isnan()]
    return float(gap.sum()), float(gap.max()) if gap.numel() else 0.0, int(gap.numel())
