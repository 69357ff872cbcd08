"""Learning-rate schedules: warm-up from a ratio, and the run length they need."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.training.schedules import WarmupSchedule


def _rates(schedule: WarmupSchedule, total: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = schedule.build(optimizer, total)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_then_linear_decay_by_hand():
    # 10 steps, warm-up ceil(0.2 * 10) = 2: 0, 1/2, then 1 - (k - 2) / 8 for k = 2..9
    expected = [0.0, 0.5] + [1 - (k - 2) / 8 for k in range(2, 10)]
    assert _rates(WarmupSchedule("linear", 0.2), 10) == pytest.approx(expected)


def test_a_schedule_that_needs_the_run_length_says_so():
    assert WarmupSchedule("cosine", 0.02).horizon(500, "SFT") == 500
    with pytest.raises(ValueError, match=r"GRPOModule: the 'cosine' schedule .* set trainer.max_steps"):
        WarmupSchedule("cosine", 0.0).horizon(-1, "GRPOModule")
    with pytest.raises(ValueError, match="warmup_ratio=0.1"):
        WarmupSchedule("constant", 0.1).horizon(-1, "GRPOModule")
    constant = WarmupSchedule("constant", 0.0)
    assert not constant.needs_horizon and constant.horizon(-1, "GRPOModule") == 1
    assert _rates(constant, 3) == [1.0, 1.0, 1.0]
