"""Advantage estimators (SPEC §6) against hand-computed numbers."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from datamodules.tasks import task_key
from lightning_modules.rl.advantages import (
    AdvantageResult,
    TaskRewardEMA,
    compute_advantages,
    dr_grpo_advantages,
    ema_grpo_advantages,
    grpo_advantages,
)

pytestmark = pytest.mark.numerics  # rerun under a second CPU kernel set (scripts/test.sh)

EPS = 1e-6


def _t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _ids(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# task_key
# ---------------------------------------------------------------------------------------------
def test_task_key_by_task_splits_only_segmentation() -> None:
    assert task_key("multiple choice", "image") == "multiple choice"
    assert task_key("multiple choice", "video") == "multiple choice"
    assert task_key("tracking", "video") == "tracking"
    assert task_key("segmentation", "image") == "segmentation/image"
    assert task_key("segmentation", "video") == "segmentation/video"


def test_task_key_by_task_modality_splits_every_task() -> None:
    assert task_key("multiple choice", "image", by="task_modality") == "multiple choice/image"
    assert task_key("multiple choice", "video", by="task_modality") == "multiple choice/video"
    assert task_key("segmentation", "video", by="task_modality") == "segmentation/video"
    with pytest.raises(ValueError):
        task_key("OCR", "image", by="modality")  # type: ignore[arg-type]


def test_task_key_by_benchmark_splits_qa_and_segmentation() -> None:
    """metrics.json keys: QA and segmentation by modality; tasks whose modality is fixed, by type."""
    assert task_key("open-ended", "video", by="benchmark") == "open-ended/video"
    assert task_key("math", "image", by="benchmark") == "math/image"
    assert task_key("segmentation", "image", by="benchmark") == "segmentation/image"
    assert task_key("temporal grounding", "video", by="benchmark") == "temporal grounding"
    assert task_key("spatial grounding", "image", by="benchmark") == "spatial grounding"


# ---------------------------------------------------------------------------------------------
# TaskRewardEMA
# ---------------------------------------------------------------------------------------------
def test_ema_first_seen_initialises_without_bias_correction_then_decays() -> None:
    ema = TaskRewardEMA(decay=0.99)
    ema.update("qa", _t([0, 1, 1, 0]))
    # first time: m1 = μ = 2/4 = 0.5 ; m2 = ν = (0+1+1+0)/4 = 0.5 (NOT 0.01·μ as a zero-init EMA would)
    assert ema.mean("qa") == pytest.approx(0.5, abs=1e-15)
    assert ema.second_moment("qa") == pytest.approx(0.5, abs=1e-15)
    # σ = sqrt(0.5 − 0.5²) = sqrt(0.25) = 0.5
    assert ema.std("qa") == pytest.approx(0.5, abs=1e-15)
    assert ema.updates("qa") == 1

    ema.update("qa", _t([1, 1, 1, 1]))
    # μ = ν = 1: m1 = 0.99·0.5 + 0.01·1 = 0.505 ; m2 = 0.505
    # σ = sqrt(0.505 − 0.505²) = sqrt(0.505 − 0.255025) = sqrt(0.249975) = 0.49997499...
    assert ema.mean("qa") == pytest.approx(0.505, abs=1e-14)
    assert ema.second_moment("qa") == pytest.approx(0.505, abs=1e-14)
    assert ema.std("qa") == pytest.approx(math.sqrt(0.249975), abs=1e-12)
    assert ema.std("qa") == pytest.approx(0.4999749994, abs=1e-9)
    assert ema.updates("qa") == 2
    assert ema.keys() == ["qa"]
    with pytest.raises(KeyError):
        ema.std("tracking")


def test_ema_std_floor_and_negative_variance() -> None:
    ema = TaskRewardEMA(min_std=1e-3)
    ema.update("numerical", _t([0.7, 0.7, 0.7]))
    # m1 = 0.7, m2 = 0.49 → variance 0 (or −1e-17 by rounding) → σ = min_std = 1e-3
    assert ema.std("numerical") == pytest.approx(1e-3, abs=1e-15)
    ema.load_state_dict({"m1": {"x": 0.5}, "m2": {"x": 0.2}})
    # m2 − m1² = 0.2 − 0.25 = −0.05 < 0 → clamped to 0 → σ = 1e-3
    assert ema.std("x") == pytest.approx(1e-3, abs=1e-15)


def test_ema_update_many_mixed_keys() -> None:
    ema = TaskRewardEMA()
    moments = ema.update_many(["qa", "tracking", "qa", "tracking"], _t([1, 0.8, 0, 0.6]))
    # qa: ΣR = 1, ΣR² = 1, n = 2 ; tracking: ΣR = 1.4, ΣR² = 0.64 + 0.36 = 1.0, n = 2
    assert moments["qa"] == pytest.approx((1.0, 1.0, 2))
    assert moments["tracking"] == pytest.approx((1.4, 1.0, 2))
    # qa: μ = ν = 0.5 → σ = 0.5 ; tracking: μ = 0.7, ν = 0.5 → σ = sqrt(0.5 − 0.49) = 0.1
    assert ema.mean("qa") == pytest.approx(0.5)
    assert ema.std("qa") == pytest.approx(0.5)
    assert ema.mean("tracking") == pytest.approx(0.7)
    assert ema.std("tracking") == pytest.approx(0.1, abs=1e-12)
    assert ema.keys() == ["qa", "tracking"]


def test_ema_state_dict_round_trip_is_plain_python() -> None:
    ema = TaskRewardEMA(decay=0.9)
    ema.update_many(["qa", "tracking", "qa"], _t([1, 0.5, 0]))
    ema.update("qa", _t([1, 1]))
    state = ema.state_dict()
    restored = TaskRewardEMA(decay=0.9)
    restored.load_state_dict(json.loads(json.dumps(state)))  # plain floats/dicts survive JSON
    assert restored.state_dict() == state
    # identical continuation
    ema.update_many(["qa", "tracking"], _t([0, 0.25]))
    restored.update_many(["qa", "tracking"], _t([0, 0.25]))
    assert restored.state_dict() == ema.state_dict()
    # qa: step 1 μ = 0.5, ν = 0.5 → m1 = 0.5 ; step 2 μ = 1 → m1 = 0.9·0.5 + 0.1·1 = 0.55 ;
    # step 3 μ = 0 → m1 = 0.9·0.55 = 0.495
    assert ema.mean("qa") == pytest.approx(0.495, abs=1e-14)


# ---------------------------------------------------------------------------------------------
# GRPO and Dr.GRPO
# ---------------------------------------------------------------------------------------------
# Interleaved, non-contiguous ids: group 7 = rows 0,2,4,5 with rewards [0, 1, 1, 0];
# group 3 = rows 1,3 with rewards [2, 4].
REWARDS = [0.0, 2.0, 1.0, 4.0, 1.0, 0.0]
GROUPS = [7, 3, 7, 3, 7, 7]


def test_grpo_uses_unbiased_group_std() -> None:
    adv = grpo_advantages(_t(REWARDS), _ids(GROUPS))
    # group 7: mean 0.5, unbiased var = 4·0.25/3 = 1/3, std = 0.5773503 → A = ±0.5/0.5773503 = ±0.8660254
    #   (population std 0.5 would give ±1)
    # group 3: mean 3, unbiased var = (1 + 1)/1 = 2, std = 1.4142136 → A = ±1/1.4142136 = ±0.7071068
    a7 = 0.5 / (math.sqrt(1 / 3) + EPS)
    a3 = 1.0 / (math.sqrt(2) + EPS)
    expected = [-a7, -a3, a7, a3, a7, -a7]
    torch.testing.assert_close(adv, _t(expected), atol=1e-12, rtol=0)
    assert a7 == pytest.approx(0.8660254, abs=5e-6)  # the +1e-6 shifts the 7th digit
    assert adv.dtype == torch.float64


def test_dr_grpo_is_centered_only() -> None:
    adv = dr_grpo_advantages(_t(REWARDS), _ids(GROUPS))
    # group 7: R − 0.5 ; group 3: R − 3
    torch.testing.assert_close(adv, _t([-0.5, -1.0, 0.5, 1.0, 0.5, -0.5]), atol=1e-12, rtol=0)


def test_zero_variance_and_singleton_groups_get_zero() -> None:
    # group 0 all equal (0.1 in float64: Σ/3 = 0.10000000000000002, so a naive R − mean would be
    # −1.4e-17 and, divided by a 1e-6 std, −1.4e-11); group 2 a single rollout
    rewards = _t([0.1, 0.1, 0.1, 0.0, 1.0, 0.3])
    groups = _ids([0, 0, 0, 1, 1, 2])
    for adv in (grpo_advantages(rewards, groups), dr_grpo_advantages(rewards, groups)):
        assert adv.dtype == torch.float64
        assert adv[[0, 1, 2, 5]].tolist() == [0.0, 0.0, 0.0, 0.0]
    # group 1 under GRPO: mean .5, unbiased std sqrt(.5) = .7071 → ±0.5/.7071 = ±.7071
    assert grpo_advantages(rewards, groups)[4].item() == pytest.approx(0.5 / math.sqrt(0.5), abs=1e-5)

    ema = TaskRewardEMA()
    res = ema_grpo_advantages(rewards, groups, ["qa"] * 6, ema)
    # exactly zero although σ_qa is small: R − mean is set to 0 in zero-variance groups
    assert res.advantages[[0, 1, 2, 5]].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert res.zero_std_groups == pytest.approx(2 / 3)  # groups 0 and 2 of 3
    assert res.per_key["qa"]["zero_std_groups"] == pytest.approx(2 / 3)
    assert res.num_groups == 3


def test_integer_rewards_give_float_advantages() -> None:
    adv = dr_grpo_advantages(torch.tensor([0, 1, 1, 1]), _ids([0, 0, 1, 1]))
    assert adv.dtype == torch.float32
    assert adv.tolist() == [-0.5, 0.5, 0.0, 0.0]
    assert (
        grpo_advantages(torch.tensor([0.0, 1.0], dtype=torch.bfloat16), _ids([0, 0])).dtype == torch.bfloat16
    )


# ---------------------------------------------------------------------------------------------
# EMA-GRPO
# ---------------------------------------------------------------------------------------------
def _seeded(key: str = "numerical") -> TaskRewardEMA:
    """An EMA whose ``key`` has m1 = 0.5, m2 = 0.25 (σ = min_std = 1e-3)."""
    ema = TaskRewardEMA()
    ema.update(key, _t([0.5, 0.5]))
    assert ema.std(key) == pytest.approx(1e-3)
    return ema


def test_ema_grpo_updates_before_normalising() -> None:
    ema = _seeded()
    res = ema_grpo_advantages(_t([0.0, 1.0]), _ids([0, 0]), ["numerical"] * 2, ema, guard=100.0)
    # update first: μ = 0.5, ν = 0.5 → m1 = 0.99·0.5 + 0.01·0.5 = 0.5 ;
    #   m2 = 0.99·0.25 + 0.01·0.5 = 0.2475 + 0.005 = 0.2525 → σ = sqrt(0.2525 − 0.25) = 0.05
    # A = ∓0.5 / (0.05 + 1e-6) = ∓9.9998 (normalising BEFORE the update would give ∓0.5/0.001001 = ∓499.5)
    a = 0.5 / (0.05 + EPS)
    assert a == pytest.approx(9.9998, abs=1e-4)
    torch.testing.assert_close(res.advantages, _t([-a, a]), atol=1e-9, rtol=0)
    assert res.guarded_groups == 0
    assert res.per_key["numerical"]["ema_std"] == pytest.approx(0.05, abs=1e-12)
    assert res.per_key["numerical"]["ema_mean"] == pytest.approx(0.5, abs=1e-12)


# Seeded "numerical" (m1 = .5, m2 = .25); batch group 0 = [0, 1], group 1 = [0.5, 0.52]:
#   μ = (0 + 1 + .5 + .52)/4 = 0.505 ; ν = (0 + 1 + .25 + .2704)/4 = 0.3801
#   m1 = .99·.5 + .01·.505 = 0.50005 ; m2 = .99·.25 + .01·.3801 = 0.251301
#   σ = sqrt(0.251301 − 0.50005²) = sqrt(0.251301 − 0.2500500025) = sqrt(0.0012509975) = 0.0353694
#   group 0: A = ∓0.5/(σ + 1e-6) = ∓14.136 → |A| > 5 trips the guard
#   group 1: mean 0.51, A = ∓0.01/(σ + 1e-6) = ∓0.28273 → kept
SIGMA_GUARD = math.sqrt(0.251301 - 0.50005**2)


def test_ema_grpo_guard_fallback_uses_population_std_per_group() -> None:
    ema = _seeded()
    res = ema_grpo_advantages(_t([0.0, 1.0, 0.5, 0.52]), _ids([0, 0, 1, 1]), ["numerical"] * 4, ema)
    assert pytest.approx(0.0353694, abs=1e-7) == SIGMA_GUARD
    # group 0 falls back: population std 0.5 → A = ∓0.5/(0.5 + 1e-6) = ∓0.999998
    a0 = 0.5 / (0.5 + EPS)
    a1 = 0.01 / (SIGMA_GUARD + EPS)
    assert a1 == pytest.approx(0.28273, abs=1e-5)
    torch.testing.assert_close(res.advantages, _t([-a0, a0, -a1, a1]), atol=1e-9, rtol=0)
    assert res.guarded_groups == 1
    assert res.per_key["numerical"]["guarded_groups"] == 1


def test_ema_grpo_guard_clip_mode() -> None:
    ema = _seeded()
    res = ema_grpo_advantages(
        _t([0.0, 1.0, 0.5, 0.52]), _ids([0, 0, 1, 1]), ["numerical"] * 4, ema, guard_mode="clip"
    )
    # group 0: ∓14.136 clipped to ∓5 ; group 1 untouched
    a1 = 0.01 / (SIGMA_GUARD + EPS)
    torch.testing.assert_close(res.advantages, _t([-5.0, 5.0, -a1, a1]), atol=1e-9, rtol=0)
    assert res.guarded_groups == 1
    with pytest.raises(ValueError):
        ema_grpo_advantages(_t([0.0, 1.0]), _ids([0, 0]), ["numerical"] * 2, ema, guard_mode="none")  # type: ignore[arg-type]


def test_ema_grpo_task_first_appearing_later() -> None:
    ema = TaskRewardEMA()
    ema_grpo_advantages(_t([0, 1, 1, 0]), _ids([0, 0, 0, 0]), ["qa"] * 4, ema)
    assert ema.keys() == ["qa"]  # step 1: qa m1 = m2 = 0.5
    res = ema_grpo_advantages(
        _t([1.0, 0.0, 0.8, 0.6]), _ids([5, 5, 9, 9]), ["qa", "qa", "tracking", "tracking"], ema
    )
    # qa: μ = ν = 0.5 → m1 = m2 = 0.99·0.5 + 0.01·0.5 = 0.5 → σ = 0.5 ; A = ±0.5/(0.5 + 1e-6)
    # tracking (new): m1 = μ = 0.7, m2 = ν = (0.64 + 0.36)/2 = 0.5 → σ = sqrt(0.5 − 0.49) = 0.1
    #   A = ±0.1/(0.1 + 1e-6) = ±0.99999 (a zero-initialised EMA would give m1 = 0.007, σ ≈ 0.07)
    assert ema.keys() == ["qa", "tracking"]
    assert ema.updates("qa") == 2 and ema.updates("tracking") == 1
    assert ema.mean("tracking") == pytest.approx(0.7, abs=1e-12)
    assert ema.std("tracking") == pytest.approx(0.1, abs=1e-9)
    aq, at = 0.5 / (0.5 + EPS), 0.1 / (0.1 + EPS)
    torch.testing.assert_close(res.advantages, _t([aq, -aq, at, -at]), atol=1e-7, rtol=0)
    assert set(res.per_key) == {"qa", "tracking"}
    assert res.per_key["tracking"]["groups"] == 1


def test_ema_grpo_rejects_group_with_mixed_keys() -> None:
    with pytest.raises(ValueError, match="mixes task keys"):
        ema_grpo_advantages(_t([0, 1]), _ids([0, 0]), ["qa", "tracking"], TaskRewardEMA())


def test_compute_advantages_dispatch() -> None:
    r, g = _t(REWARDS), _ids(GROUPS)
    keys = ["qa"] * 6
    res = compute_advantages("grpo", r, g, task_keys=keys)
    assert isinstance(res, AdvantageResult)
    torch.testing.assert_close(res.advantages, grpo_advantages(r, g))
    assert res.per_key["qa"]["groups"] == 2
    torch.testing.assert_close(compute_advantages("dr_grpo", r, g).advantages, dr_grpo_advantages(r, g))
    ema = TaskRewardEMA()
    res = compute_advantages("ema_grpo", r, g, task_keys=keys, ema=ema)
    assert ema.keys() == ["qa"]
    # qa: μ = 8/6, ν = (0+4+1+16+1+0)/6 = 22/6 → σ = sqrt(22/6 − 64/36) = sqrt(68/36) = 1.3744
    sigma = math.sqrt(22 / 6 - (8 / 6) ** 2)
    torch.testing.assert_close(res.advantages, dr_grpo_advantages(r, g) / (sigma + EPS))
    with pytest.raises(ValueError):
        compute_advantages("ema_grpo", r, g)
    with pytest.raises(ValueError):
        compute_advantages("ppo", r, g)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Two gloo ranks == one process with the whole batch
# ---------------------------------------------------------------------------------------------
# Three steps. Each rank holds half of every step's batch; groups never straddle ranks.
# "tracking" exists only on rank 1 (step 1), "segmentation/image" only on rank 0 (step 2), and
# rank 0 has an empty batch at step 3.
STEPS: list[list[tuple[list[str], list[float], list[int]]]] = [
    [  # step 1: (keys, rewards, group ids) for rank 0, rank 1
        (["qa"] * 4, [1, 0, 1, 1], [0, 0, 1, 1]),
        (["qa", "qa", "tracking", "tracking"], [0, 0, 0.8, 0.6], [2, 2, 3, 3]),
    ],
    [
        (["segmentation/image"] * 2 + ["qa"] * 2, [0.3, 0.9, 1, 0], [0, 0, 1, 1]),
        (["qa", "qa", "tracking", "tracking"], [1, 1, 0.7, 0.75], [2, 2, 3, 3]),
    ],
    [
        ([], [], []),
        (["qa"] * 4, [0, 1, 1, 1], [0, 0, 1, 1]),
    ],
]


def _run_steps(
    ema: TaskRewardEMA, parts: list[tuple[list[str], list[float], list[int]]]
) -> list[torch.Tensor]:
    out = []
    for keys, rewards, groups in parts:
        res = ema_grpo_advantages(_t(rewards), _ids(groups), keys, ema)
        out.append(res.advantages)
    return out


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ema = TaskRewardEMA()
        advs = _run_steps(ema, [step[rank] for step in STEPS])
        torch.save({"state": ema.state_dict(), "advs": advs}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    # One process holding the whole batch of every step (rank 0's rows, then rank 1's).
    whole = TaskRewardEMA()
    whole_advs = []
    for step in STEPS:
        keys = step[0][0] + step[1][0]
        rewards = step[0][1] + step[1][1]
        groups = step[0][2] + [g + 100 for g in step[1][2]]
        whole_advs.append(ema_grpo_advantages(_t(rewards), _ids(groups), keys, whole).advantages)
    ref = whole.state_dict()

    # both ranks hold the same state (bit-identical), equal to the single process's
    assert ranks[0]["state"] == ranks[1]["state"]
    state = ranks[0]["state"]
    assert sorted(state["m1"]) == ["qa", "segmentation/image", "tracking"]
    assert state["updates"] == ref["updates"] == {"qa": 3, "segmentation/image": 1, "tracking": 2}
    for moment in ("m1", "m2"):
        for k in ref[moment]:
            assert state[moment][k] == pytest.approx(ref[moment][k], rel=1e-12, abs=1e-15)
    # hand check of tracking: step 1 m1 = 0.7 ; step 2 μ = 0.725 → m1 = 0.99·0.7 + 0.01·0.725 = 0.70025
    assert state["m1"]["tracking"] == pytest.approx(0.70025, abs=1e-12)
    # qa step 1 over BOTH ranks: rewards [1,0,1,1,0,0] → m1 = 3/6 = 0.5 (rank 0 alone would say 0.75)
    # step 2: qa [1,0,1,1] μ = 0.75 → 0.5025 ; step 3: [0,1,1,1] μ = 0.75 → 0.99·0.5025 + 0.0075 = 0.504975
    assert state["m1"]["qa"] == pytest.approx(0.504975, abs=1e-12)

    # and each rank's advantages are its slice of the whole-batch advantages
    for s, step in enumerate(STEPS):
        n0 = len(step[0][1])
        got = torch.cat([ranks[0]["advs"][s], ranks[1]["advs"][s]])
        torch.testing.assert_close(got, whole_advs[s], atol=1e-9, rtol=0)
        assert ranks[0]["advs"][s].numel() == n0
