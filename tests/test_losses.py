"""Policy loss, aggregation, KL estimators and entropy (SPEC §7) against hand-computed values,
in the style of torchtune's PPO loss tests."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.rl.losses import (
    aggregate,
    entropy_from_logits,
    global_counts,
    kl_penalty,
    masked_mean,
    policy_loss,
)

pytestmark = pytest.mark.numerics  # rerun under a second CPU kernel set (scripts/test.sh)


def _lp(ratios: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logprobs, old_logprobs) [1, T] whose ratio π/π_old is ``ratios``; logprobs requires grad."""
    old = torch.full((1, len(ratios)), -1.0, dtype=torch.float64)
    new = (old + torch.log(torch.tensor([ratios], dtype=torch.float64))).requires_grad_(True)
    return new, old


# ---------------------------------------------------------------------------------------------
# policy_loss: one token per case, ε_low = 0.2, ε_high = 0.3, c = 3
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ratio", "adv", "expected", "clipped", "dual"),
    [
        # unclipped: r = 1.1 inside [0.8, 1.3]: L = −A·r = −1.1
        (1.1, 1.0, -1.1, False, False),
        # positive A, r = 1.5 > 1.3: max(−1.5, −1.3) = −1.3 (clipped high)
        (1.5, 1.0, -1.3, True, False),
        # positive A, r = 0.5 < 0.8: max(−0.5, −0.8) = −0.5 (not clipped: the objective keeps
        # pushing the probability up)
        (0.5, 1.0, -0.5, False, False),
        # negative A, r = 0.5 < 0.8: max(0.5, 0.8) = 0.8 (clipped low); dual bound 3 not active
        (0.5, -1.0, 0.8, True, False),
        # negative A, r = 1.5 > 1.3: max(1.5, 1.3) = 1.5 (not clipped); 1.5 < 3 → no dual clip
        (1.5, -1.0, 1.5, False, False),
        # negative A, r = 4: max(4, 1.3) = 4 ; dual clip min(4, −A·c = 3) = 3
        (4.0, -1.0, 3.0, False, True),
        # negative A = −2, r = 2: max(4, 2.6) = 4 ; dual bound −A·c = 6 > 4 → stays 4
        (2.0, -2.0, 4.0, False, False),
        # POSITIVE A, r = 10: max(−10, −1.3) = −1.3 ; dual clip must NOT apply (min(−1.3, −3) = −3 would)
        (10.0, 1.0, -1.3, True, False),
    ],
)
def test_policy_loss_single_token(
    ratio: float, adv: float, expected: float, clipped: bool, dual: bool
) -> None:
    new, old = _lp([ratio])
    loss, stats = policy_loss(
        new, old, torch.tensor([adv], dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool)
    )
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert stats.clip_fraction.item() == float(clipped)
    assert stats.dual_clip_fraction.item() == float(dual)


def test_policy_loss_gradients_vanish_where_clipped() -> None:
    # tokens: r = 1.1 (A=+1, unclipped), 1.5 (A=+1, clipped), 4 (A=−1, dual-clipped)
    new, old = _lp([1.1, 1.5, 4.0])
    adv = torch.tensor([[1.0, 1.0, -1.0]], dtype=torch.float64)
    loss, _ = policy_loss(new, old, adv, torch.ones(1, 3))
    loss.sum().backward()
    # dL/dlogπ = −A·r for the unclipped token = −1.1 ; 0 where a constant bound is active
    torch.testing.assert_close(new.grad, torch.tensor([[-1.1, 0.0, 0.0]], dtype=torch.float64))


def test_policy_loss_batch_masks_and_stats() -> None:
    # row 0: r = [1.1, 1.5, 0.5] with A = +1 ; row 1: r = [0.5, 4.0, 1.5, 100 (padding)] with A = −1
    old = torch.full((2, 4), -2.0)
    ratios = torch.tensor([[1.1, 1.5, 0.5, 1.0], [0.5, 4.0, 1.5, 100.0]])
    new = old + ratios.log()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0])  # [B], broadcast over tokens
    loss, stats = policy_loss(new, old, adv, mask)
    # per token (see the single-token cases): [−1.1, −1.3, −0.5, 0 | 0.8, 3, 1.5, 0 (masked)]
    expected = torch.tensor([[-1.1, -1.3, -0.5, 0.0], [0.8, 3.0, 1.5, 0.0]])
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)
    # clipped: (r=1.5, A+) and (r=0.5, A−) → 2 of 6 ; dual: (r=4, A−) → 1 of 6 (padding r=100 ignored)
    assert stats.clip_fraction.item() == pytest.approx(2 / 6)
    assert stats.dual_clip_fraction.item() == pytest.approx(1 / 6)
    # approx KL = mean((r − 1) − log r):
    #   1.1: 0.1 − 0.0953102 = 0.0046898 ; 1.5: 0.5 − 0.4054651 = 0.0945349 ; 0.5: −0.5 + 0.6931472 = 0.1931472
    #   4: 3 − 1.3862944 = 1.6137056 ; total = 0.0046898 + 2·0.0945349 + 2·0.1931472 + 1.6137056 = 2.1937596
    assert stats.approx_kl.item() == pytest.approx(2.1937596 / 6, abs=1e-6)
    # mean ratio = (1.1 + 1.5 + 0.5 + 0.5 + 4 + 1.5)/6 = 9.1/6
    assert stats.ratio_mean.item() == pytest.approx(9.1 / 6, abs=1e-6)


def test_policy_loss_masked_nan_does_not_leak() -> None:
    old = torch.tensor([[-1.0, float("nan")]])
    new = torch.tensor([[-1.0, float("inf")]], requires_grad=True)
    loss, stats = policy_loss(new, old, torch.tensor([1.0]), torch.tensor([[1, 0]]))
    assert loss.tolist() == [[-1.0, 0.0]]
    assert math.isfinite(stats.approx_kl.item())
    aggregate(loss, torch.tensor([[1, 0]])).backward()
    assert torch.isfinite(new.grad).all()


def test_ratio_is_clamped_at_exp_20() -> None:
    # log-ratio 50 is clamped to 20; A = −1 and no dual clip: L = −A·exp(20) = 4.85165e8, not exp(50)
    new, old = torch.tensor([[49.0]]), torch.tensor([[-1.0]])
    loss, _ = policy_loss(new.double(), old.double(), torch.tensor([-1.0]), torch.ones(1, 1), dual_clip=None)
    assert loss.item() == pytest.approx(math.exp(20), rel=1e-12)
    assert math.exp(20) == pytest.approx(4.85165195e8, rel=1e-8)
    # with the dual clip: min(exp(20), 3) = 3
    loss, _ = policy_loss(new, old, torch.tensor([-1.0]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(3.0)
    with pytest.raises(ValueError):
        policy_loss(new, old, torch.tensor([-1.0]), torch.ones(1, 1), dual_clip=1.0)


def test_policy_loss_asymmetric_clip_range_is_configurable() -> None:
    new, old = _lp([1.25, 0.75])
    loss, stats = policy_loss(new, old, torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 2))
    # r = 1.25 < 1 + 0.3 → unclipped (a symmetric 0.2 would clip it to 1.2) ; r = 0.75, A+ → −0.75
    torch.testing.assert_close(loss, torch.tensor([[-1.25, -0.75]], dtype=torch.float64))
    loss, _ = policy_loss(new, old, torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 2), clip_high=0.2)
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -0.75]], dtype=torch.float64))
    assert stats.clip_fraction.item() == 0.0


# ---------------------------------------------------------------------------------------------
# aggregate
# ---------------------------------------------------------------------------------------------
LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [7.0, 7.0, 7.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])  # third row: no response tokens


def test_aggregate_token_mean() -> None:
    # (1 + 2 + 3 + 4)/4 = 2.5 (masked 9s and the empty row ignored)
    assert aggregate(LOSS, MASK).item() == pytest.approx(2.5)
    assert aggregate(LOSS, MASK, "token-mean").item() == pytest.approx(2.5)


def test_aggregate_seq_mean_token_mean() -> None:
    # row means: (1+2+3)/3 = 2 ; 4/1 = 4 ; empty row not counted → (2 + 4)/2 = 3
    assert aggregate(LOSS, MASK, "seq-mean-token-mean").item() == pytest.approx(3.0)


def test_aggregate_constant_dr_grpo() -> None:
    # Σ = 10 over 2 non-empty sequences × normaliser: default T = 3 → 10/6 ; 4096 → 10/8192
    assert aggregate(LOSS, MASK, "constant").item() == pytest.approx(10 / 6)
    assert aggregate(LOSS, MASK, "constant", constant_normalizer=4096).item() == pytest.approx(10 / 8192)
    with pytest.raises(ValueError):
        aggregate(LOSS, MASK, "sum")  # type: ignore[arg-type]


def test_aggregate_global_counts_make_micro_batches_sum_to_the_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor(
        [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool
    )  # 5 + 2 + 1 + 3 = 11 tokens, 4 sequences
    micro = [slice(0, 1), slice(1, 4)]  # unequal micro-batches: 5 tokens | 6 tokens
    tokens, seqs = global_counts([mask[s] for s in micro])
    assert (tokens.item(), seqs.item()) == (11.0, 4.0)
    for mode in ("token-mean", "seq-mean-token-mean", "constant"):
        x.grad = None
        whole = aggregate(x * x, mask, mode)
        whole.backward()
        grad_whole = x.grad.clone()
        x.grad = None
        parts = [
            aggregate((x * x)[s], mask[s], mode, global_tokens=tokens, global_sequences=seqs) for s in micro
        ]
        for p in parts:
            p.backward()
        torch.testing.assert_close(sum(parts), whole)
        torch.testing.assert_close(x.grad, grad_whole)
    # without global counts, averaging two micro-batch token means is NOT the token mean:
    # micro 0 mean over 5 tokens, micro 1 over 6 → (m0 + m1)/2 ≠ Σ/11 in general
    loss = torch.arange(20, dtype=torch.float64).reshape(4, 5)
    naive = sum(aggregate(loss[s], mask[s]) for s in micro) / 2
    # row 0: 0+1+2+3+4 = 10 ; rows 1-3: (5+6) + 10 + (15+16+17) = 69 → exact 79/11 = 7.1818 ;
    # naive (10/5 + 69/6)/2 = (2 + 11.5)/2 = 6.75
    assert aggregate(loss, mask).item() == pytest.approx(79 / 11)
    assert naive.item() == pytest.approx(6.75)


def test_masked_mean_empty_mask_is_zero() -> None:
    assert masked_mean(torch.ones(2, 2), torch.zeros(2, 2)).item() == 0.0


# ---------------------------------------------------------------------------------------------
# KL estimators
# ---------------------------------------------------------------------------------------------
def test_kl_estimators_hand_values() -> None:
    logp = torch.tensor([math.log(0.5), math.log(0.25)], dtype=torch.float64)
    ref = torch.tensor([math.log(0.25), math.log(0.25)], dtype=torch.float64)
    # token 0: logπ − logπ_ref = log 2 = 0.6931472 ; token 1: 0
    # k1 = 0.6931472 ; k2 = ½·0.4804530 = 0.2402265 ; k3 with d = ref − logπ = −log 2:
    #   exp(−log 2) − (−log 2) − 1 = 0.5 + 0.6931472 − 1 = 0.1931472
    torch.testing.assert_close(
        kl_penalty(logp, ref, "k1"), torch.tensor([0.6931472, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        kl_penalty(logp, ref, "k2"), torch.tensor([0.2402265, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        kl_penalty(logp, ref, "k3"), torch.tensor([0.1931472, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        kl_penalty(logp, ref, "low_var_kl"), kl_penalty(logp, ref)
    )  # k3 is the default
    torch.testing.assert_close(kl_penalty(logp, ref, "kl"), kl_penalty(logp, ref, "k1"))
    torch.testing.assert_close(kl_penalty(logp, ref, "mse"), kl_penalty(logp, ref, "k2"))
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k4")  # type: ignore[arg-type]


def test_low_var_kl_is_clamped_to_10() -> None:
    # d = ref − logπ = 3: e³ − 3 − 1 = 20.0855 − 4 = 16.0855 → clamped to 10 ; d = 2: e² − 3 = 4.3890561 (kept)
    logp = torch.tensor([-5.0, -5.0], dtype=torch.float64)
    ref = torch.tensor([-2.0, -3.0], dtype=torch.float64)
    torch.testing.assert_close(
        kl_penalty(logp, ref, "k3"), torch.tensor([10.0, 4.3890561], dtype=torch.float64)
    )
    # d = −3: e⁻³ + 3 − 1 = 2.0497871 (never below 0, so the lower clamp never bites)
    assert kl_penalty(ref[:1] - 1.0, ref[:1] - 4.0, "k3").item() == pytest.approx(2.0497871, abs=1e-7)


# ---------------------------------------------------------------------------------------------
# entropy
# ---------------------------------------------------------------------------------------------
def test_entropy_from_logits_hand_values_and_chunking() -> None:
    # uniform over 4: log 4 = 1.3862944 ; probs [.25, .75, 0, 0] via logits [0, log 3, −inf, −inf]:
    #   −(.25·log .25 + .75·log .75) = .25·1.3862944 + .75·0.2876821 = 0.3465736 + 0.2157616 = 0.5623351
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -math.inf, -math.inf]],
            [[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]],
        ]
    )
    expected = torch.tensor([[1.3862944, 0.5623351], [1.3862944, 1.3862944]])
    for chunk in (None, 1, 3, 1024):
        h = entropy_from_logits(logits, chunk_size=chunk)
        assert h.shape == (2, 2) and h.dtype == torch.float32
        torch.testing.assert_close(h, expected, atol=1e-6, rtol=0)
    # bf16 logits are upcast
    assert entropy_from_logits(logits.bfloat16()).dtype == torch.float32
    # differentiable (entropy bonus) and finite with −inf logits
    z = logits.clone().requires_grad_(True)
    entropy_from_logits(z, chunk_size=1).sum().backward()
    assert torch.isfinite(z.grad).all()
