"""`GRPOModule` end to end on the tiny model: rollout layout, rollout log-probabilities against
HF ``generate``'s own scores, learning a toy reward with each advantage estimator, exact resume,
online filtering with resampling, the KL reference and the EMA wiring check.

Everything runs on one CPU thread: the tiny model is far faster that way than with two threads
fighting over a loaded two-core machine.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import rewards
from callbacks.task_reward_stats import TaskRewardStatsCallback
from datamodules.collate import Collator, build_example
from datamodules.datamodule import OneThinkerDataModule
from datamodules.media import PixelBudget, stage_media
from datamodules.records import load_records
from lightning_modules.grpo import GRPOModule
from lightning_modules.model.backbone import VisionLanguageBackbone
from lightning_modules.rl.rollout import HFGenerateEngine, Rollouts, repeat_prompts, select_rows
from tests.conftest import write_bar_video
from tests.numerics import FLOAT64_MODEL_TOLERANCE, batch_to, float32_sum_atol

# numerics: rerun under a second CPU kernel set (scripts/test.sh)
pytestmark = [pytest.mark.numerics, pytest.mark.usefixtures("one_torch_thread")]

LETTERS = "ABCD"


# --------------------------------------------------------------------------- helpers


def write_manifest(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps(records), encoding="utf-8")
    return str(path)


def rl_record(
    pid: int,
    problem_type: str,
    answer: str,
    image: str | None = None,
    video: str | None = None,
    options: list[str] | None = None,
) -> dict[str, Any]:
    """An RL record; with neither image nor video it is text only."""
    rec: dict[str, Any] = {
        "problem_id": pid, "problem": f"Question {pid}: which one?", "data_type": "video" if video else "image",
        "problem_type": problem_type, "options": options or [], "data_source": "toy", "answer": f"<answer>{answer}</answer>",
    }  # fmt: skip
    if image:
        rec.update(images=[image], problem="<image>" + rec["problem"])
    if video:
        rec.update(videos=[video], problem="<video>" + rec["problem"])
    return rec


def tiny_media(family: str = "qwen3_vl"):
    factor = 32 if family == "qwen3_vl" else 28
    return dataclasses.replace(
        stage_media("rl", family),
        image=PixelBudget(4 * factor * factor, 4 * factor * factor),
        video_frame=PixelBudget(factor * factor, factor * factor),
        max_frames=4,
        min_frames=4,
    )


def trainer(max_steps: int, callbacks: list[L.Callback], **kw: Any) -> L.Trainer:
    defaults: dict[str, Any] = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False,
    )  # fmt: skip
    defaults.update(kw)
    return L.Trainer(max_steps=max_steps, callbacks=callbacks, **defaults)


class LogSpy:
    """Records every ``module.log`` call and every per-task metric as (global_step, name, value), the
    callbacks' calls included."""

    def __init__(self, module: L.LightningModule):
        self.module, self.calls = module, []
        real = module.log

        def log(name: str, value: Any, *args: Any, **kwargs: Any) -> None:
            self.calls.append((module.global_step, name, float(value)))
            real(name, value, *args, **kwargs)

        module.log = log  # type: ignore[method-assign]
        real_tasks = module._log_task_metrics

        def log_tasks(metrics: dict[str, float]) -> None:
            self.calls += [(module.global_step, name, float(v)) for name, v in metrics.items()]
            real_tasks(metrics)

        module._log_task_metrics = log_tasks  # type: ignore[method-assign]

    def steps(self) -> dict[str, list[float]]:
        """name -> the values logged, in order."""
        out: dict[str, list[float]] = defaultdict(list)
        for _, name, value in self.calls:
            out[name].append(value)
        return out


def crc_score(text: str) -> float:
    """A deterministic pseudo-random score in [0, 1] of a string (stable across processes)."""
    return (zlib.crc32(text.encode("utf-8")) % 997) / 996


def toy_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """0 for ground truth ``zero`` (its groups are all-0), else a pseudo-random score (mixed groups)."""
    return 0.0 if gt == "zero" else crc_score(pred)


@pytest.fixture
def toy_rewards():
    """Test rewards for image OCR and image numerical questions (they shadow the built-ins)."""
    for problem_type in ("ocr", "numerical"):
        rewards.register_reward(problem_type, data_type="image", structure=0.0, check_answer=lambda gt: None)(
            toy_accuracy
        )
    yield
    for problem_type in ("ocr", "numerical"):
        rewards.unregister_reward(problem_type, data_type="image")


# --------------------------------------------------------------------------- rollout layout


@pytest.fixture(scope="module")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from PIL import Image

    root = tmp_path_factory.mktemp("grpo_media")
    rng = np.random.default_rng(0)
    for name in ("one", "two"):  # same size, different content: swapping them must show
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / f"{name}.png")
    write_bar_video(root / "bar.mp4", frames=16, fps=8, width=64, height=64)
    return {
        "one": str(root / "one.png"),
        "two": str(root / "two.png"),
        "video": str(root / "bar.mp4"),
        "root": str(root),
    }


def mixed_prompts(backbone: VisionLanguageBackbone, media_files: dict[str, str]) -> dict[str, Any]:
    """Left-padded RL prompts: image one, video, text only, image two."""
    recs = [
        rl_record(0, "OCR", "x", image=media_files["one"]),
        rl_record(1, "OCR", "x", video=media_files["video"]),
        rl_record(2, "OCR", "x"),
        rl_record(3, "OCR", "x", image=media_files["two"]),
    ]
    path = write_manifest(Path(media_files["root"]) / f"mixed_{backbone.family}.json", recs)
    media = tiny_media(backbone.family)
    return Collator(backbone.processor, "rl")(
        [build_example(r, "rl", media) for r in load_records(path, "rl")]
    )


@pytest.mark.parametrize("family", ("qwen3_vl", "qwen2_5_vl"))
def test_select_rows_and_repeat_prompts_keep_media_aligned(media_files, family: str):
    # float64: sub-batches sum in another order than the full batch (tests/numerics.py).
    backbone = VisionLanguageBackbone("tiny", family=family).double().eval()
    batch = batch_to(mixed_prompts(backbone, media_files), torch.float64)
    assert batch["pixel_values"] is not None and batch["pixel_values_videos"] is not None
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        full = backbone.token_logprobs(batch, mask)
        for rows in ([3, 1, 0, 3, 2, 1], [2], [0, 0]):
            sub = select_rows(batch, rows)
            assert [m["problem_id"] for m in sub["meta"]] == rows
            got = backbone.token_logprobs(sub, sub["attention_mask"].bool())
            torch.testing.assert_close(got, full[rows], **FLOAT64_MODEL_TOLERANCE)
            if 1 not in rows:
                assert sub["pixel_values_videos"] is None and sub["video_grid_thw"] is None
        rep = repeat_prompts(batch, 3)
        assert [m["problem_id"] for m in rep["meta"]] == [r for r in range(4) for _ in range(3)]
        torch.testing.assert_close(
            backbone.token_logprobs(rep, rep["attention_mask"].bool()),
            full.repeat_interleave(3, dim=0),
            **FLOAT64_MODEL_TOLERANCE,
        )

        # The check can see misalignment: the two images' patches swapped change the image rows.
        swapped = dict(batch)
        a, b = torch.split(batch["pixel_values"], batch["image_grid_thw"].prod(-1).tolist())
        swapped["pixel_values"] = torch.cat([b, a])
        wrong = backbone.token_logprobs(swapped, mask)
        assert (wrong[[0, 3]] - full[[0, 3]]).abs().max() > 1e-3


def test_rollout_logprobs_match_generate_scores(media_files):
    """The rollout batch re-scored by `token_logprobs` gives the log-softmax HF generate sampled from."""
    # float64: generate's cached decoding and the one full forward sum in different orders.
    backbone = VisionLanguageBackbone("tiny").double().eval()
    prompts = batch_to(mixed_prompts(backbone, media_files), torch.float64)
    engine = HFGenerateEngine(temperature=1.0, top_p=1.0, max_new_tokens=6)
    n = 2
    torch.manual_seed(11)
    ro = engine(backbone, prompts, n)

    tok = backbone.tokenizer
    torch.manual_seed(11)  # the same draw, with HF's scores this time
    out = backbone.hf_model.generate(
        **backbone.model_inputs(prompts), num_return_sequences=n, suppress_tokens=backbone.suppressed_token_ids,
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tok.pad_token_id, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=6,
        output_scores=True, output_logits=True, return_dict_in_generate=True,
    )  # fmt: skip
    assert torch.equal(ro.batch["input_ids"], out.sequences)
    prompt_len = prompts["input_ids"].shape[1]
    response = ro.response_mask[:, prompt_len:].bool()
    assert ro.response_mask[:, :prompt_len].sum() == 0 and response.sum() == ro.generated_tokens > 0
    assert ro.group_ids.tolist() == [g for g in range(4) for _ in range(n)]
    assert [m["problem_id"] for m in ro.meta] == [g for g in range(4) for _ in range(n)]

    with torch.no_grad():
        ours = backbone.token_logprobs(ro.batch, ro.response_mask)[:, prompt_len:]
    raw = torch.stack([torch.log_softmax(lg, -1) for lg in out.logits], 1)
    hf_raw = raw.gather(-1, out.sequences[:, prompt_len:, None]).squeeze(-1)
    hf_scores = backbone.hf_model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    assert ours[response].abs().min() > 1.0  # real log-probabilities of a 150k vocabulary, not zeros
    # generate hands back float32 logits, and its scores take a float32 log-softmax over the vocabulary.
    atol = float32_sum_atol(raw.shape[-1])
    torch.testing.assert_close(ours[response].float(), hf_raw[response], atol=atol, rtol=0)
    torch.testing.assert_close(ours[response].float(), hf_scores[response], atol=atol, rtol=0)
    assert (ours[~response] == 0).all()


# --------------------------------------------------------------------------- learning

LEARN_RL_STEPS = 8  # two updates per RL step
WARM_STEPS = 30


@pytest.fixture(scope="module")
def letter_prior(tmp_path_factory: pytest.TempPathFactory):
    """Toy multiple-choice prompts whose answer is always B, and a tiny model warm-started to answer
    ``X<|im_end|>`` with X uniform over A–D.

    A random tiny model puts ~1e-5 on "B" (150k vocabulary), so no handful of RL steps could find
    the reward; these few supervised steps play the SFT stage. They are symmetric in the letters,
    so whatever preference for B the policy ends with comes from RL.
    """
    root = tmp_path_factory.mktemp("letters")
    options = ["A. red", "B. blue", "C. green", "D. pink"]
    manifest = write_manifest(
        root / "rl.json", [rl_record(i, "multiple choice", "B", options=options) for i in range(4)]
    )
    backbone = VisionLanguageBackbone("tiny", seed=0)
    media = stage_media("rl")
    prompts = Collator(backbone.processor, "rl")(
        [build_example(r, "rl", media) for r in load_records(manifest, "rl")]
    )
    tok = backbone.tokenizer
    letters = tok.convert_tokens_to_ids(list(LETTERS))
    end = tok.convert_tokens_to_ids("<|im_end|>")
    n = len(prompts["meta"])
    ids = torch.cat([prompts["input_ids"], torch.tensor(letters[:n])[:, None], torch.full((n, 1), end)], 1)
    mask = torch.cat([prompts["attention_mask"], torch.ones(n, 2, dtype=torch.long)], 1)
    opt = torch.optim.Adam(backbone.parameters(), lr=3e-2)
    for _ in range(WARM_STEPS):
        logp = (
            backbone.hf_model.lm_head(backbone({"input_ids": ids, "attention_mask": mask})[:, -3:-1])
            .float()
            .log_softmax(-1)
        )
        loss = -(logp[:, 0, letters].mean() + logp[:, 1, end].mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    return {"manifest": manifest, "prompts": prompts, "state": state, "letters": letters}


def letter_probs(
    backbone: VisionLanguageBackbone, prompts: dict[str, Any], letters: list[int]
) -> torch.Tensor:
    """Exact mean probability of each letter as the first response token, over the prompts."""
    with torch.no_grad():
        logits = backbone.hf_model.lm_head(backbone(prompts)[:, -1]).float()
    return torch.softmax(logits, -1)[:, letters].mean(0)


def sampled_reward(backbone: VisionLanguageBackbone, prompts: dict[str, Any], n: int = 16) -> float:
    """Mean released reward of ``n`` fixed-seed samples per prompt."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        ro = HFGenerateEngine(max_new_tokens=4)(backbone, prompts, n)
    results = rewards.score_batch(
        ro.responses,
        [m["answer"] for m in ro.meta],
        [m["problem_type"] for m in ro.meta],
        [m["data_type"] for m in ro.meta],
    )
    return float(np.mean([r.overall for r in results]))


@pytest.mark.slow
@pytest.mark.parametrize("advantage", ("ema_grpo", "grpo", "dr_grpo"))
def test_grpo_learns_to_answer_b(letter_prior, advantage: str):
    backbone = VisionLanguageBackbone("tiny", seed=0)
    backbone.load_state_dict(letter_prior["state"])
    prompts, letters = letter_prior["prompts"], letter_prior["letters"]
    before = letter_probs(backbone, prompts, letters)
    reward_before = sampled_reward(backbone, prompts)
    assert 0.05 < before[1] < 0.2 and before.sum() > 0.3, f"warm start off: {before}"

    module = GRPOModule(
        backbone, rollout=HFGenerateEngine(max_new_tokens=4), rollouts_per_prompt=8, advantage=advantage,
        filter_groups=False, prompts_per_update=1, micro_batch_size=16, seed=0,
        optimizer=lambda p: torch.optim.AdamW(p, lr=5e-3, weight_decay=0.0),
    )  # fmt: skip
    spy = LogSpy(module)
    dm = OneThinkerDataModule(
        mode="rl", train_manifests=[letter_prior["manifest"]], batch_size=2, samples_per_epoch=64
    )
    dm.connect(backbone.processor)
    trainer(2 * LEARN_RL_STEPS, [TaskRewardStatsCallback()]).fit(module, dm)

    logged = spy.steps()
    assert len(logged["train/loss"]) == LEARN_RL_STEPS
    after = letter_probs(backbone, prompts, letters)
    reward_after = sampled_reward(backbone, prompts)
    train_rewards = logged["train/reward/overall"]
    msg = (
        f"{advantage}: P(letters) {before.tolist()} -> {after.tolist()}; sampled reward {reward_before:.3f} -> "
        f"{reward_after:.3f}; train rewards {[round(r, 2) for r in train_rewards]}"
    )
    print(msg)
    # (with lr=0 every one of these fails: P(B) and the sampled reward stay put)
    assert after[1] > before[1] + 0.4, msg
    assert after[1] > 5 * after[[0, 2, 3]].max(), msg
    assert reward_after > reward_before + 0.25, msg
    assert np.mean(train_rewards[-2:]) > np.mean(train_rewards[:2]) + 0.1, msg


# --------------------------------------------------------------------------- filtering, resume


def mixed_task_manifest(root: Path, media_files: dict[str, str] | None = None) -> str:
    """OCR questions whose reward is always 0 (filtered) and numerical ones with mixed rewards (kept)."""
    image = media_files["one"] if media_files else None
    recs = [rl_record(i, "OCR", "zero") for i in range(4)] + [
        rl_record(4 + i, "numerical", "mix", image=image) for i in range(4)
    ]
    return write_manifest(root / "mixed_tasks.json", recs)


def grpo_run(
    manifest: str,
    max_steps: int,
    *,
    filter_groups: bool = True,
    ckpt_dir: Path | None = None,
    ckpt_path: str | None = None,
    trainer_kw: dict[str, Any] | None = None,
    extra_callbacks: list[L.Callback] = (),
    data_seed: int = 5,
    **module_kw: Any,
) -> tuple[GRPOModule, LogSpy, OneThinkerDataModule, TaskRewardStatsCallback, list]:
    backbone = VisionLanguageBackbone("tiny", seed=0)
    kw: dict[str, Any] = dict(
        rollout=HFGenerateEngine(max_new_tokens=4), rollouts_per_prompt=4, advantage="ema_grpo", filter_groups=filter_groups,
        max_resample=2, prompts_per_update=2, micro_batch_size=8, seed=3,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
    )  # fmt: skip
    kw.update(module_kw)
    module = GRPOModule(backbone, **kw)
    spy = LogSpy(module)
    resamples: list[int] = []
    real_next = module._next_resample_batch

    def counted_next():
        resamples.append(module.global_step)
        return real_next()

    module._next_resample_batch = counted_next  # type: ignore[method-assign]
    dm = OneThinkerDataModule(
        mode="rl",
        train_manifests=[manifest],
        batch_size=2,
        samples_per_epoch=32,
        seed=data_seed,
        image_pixels=(4 * 32 * 32, 4 * 32 * 32),
    )
    dm.connect(backbone.processor)
    stats = TaskRewardStatsCallback()
    callbacks: list[L.Callback] = [stats, *extra_callbacks]
    if ckpt_dir is not None:
        callbacks.append(
            ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_top_k=-1, filename="{step}")
        )
    trainer(max_steps, callbacks, enable_checkpointing=ckpt_dir is not None, **(trainer_kw or {})).fit(
        module, dm, ckpt_path=ckpt_path
    )
    return module, spy, dm, stats, resamples


def test_online_filter_drops_all_zero_groups_and_tops_up(toy_rewards, tmp_path: Path):
    manifest = mixed_task_manifest(tmp_path)
    module, spy, _, _, resamples = grpo_run(manifest, 3)
    logged = spy.steps()
    ocr_rates, num_rates = logged["train/filter_pass_rate/OCR"], logged["train/filter_pass_rate/numerical"]
    assert ocr_rates and num_rates, sorted(logged)
    assert set(ocr_rates) == {0.0} and set(num_rates) == {1.0}
    assert resamples, "a step with an all-0 OCR group must draw from resample_batches"
    assert max(resamples.count(s) for s in set(resamples)) <= 2  # max_resample per step
    kept = module.last_rollouts["meta"]
    assert {m["problem_type"] for m in kept} == {"numerical"}
    # a step is never over-filled; it is full whenever enough kept groups were found
    assert len(kept) in (4, 8) and len(kept) == module.last_rollouts["scores"]["overall"].numel()
    assert "train/reward/overall/OCR" not in logged and "train/ema/mean/OCR" not in logged
    assert logged["train/ema/mean/numerical"]

    module, spy, _, _, resamples = grpo_run(manifest, 3, filter_groups=False)
    logged = spy.steps()
    assert resamples == []
    assert (
        set(logged["train/filter_pass_rate/OCR"]) == {1.0} == set(logged["train/filter_pass_rate/numerical"])
    )
    assert len(module.last_rollouts["meta"]) == 8
    assert len(logged["train/reward/overall/OCR"]) + len(logged["train/reward/overall/numerical"]) >= 3
    assert logged["train/zero_std_groups/OCR"] and set(logged["train/zero_std_groups/OCR"]) == {1.0}


@pytest.mark.slow
def test_resume_continues_exactly(toy_rewards, media_files, tmp_path: Path):
    """Save after RL step k, resume with fresh objects: step k+1 (its rollouts, resampling, rewards,
    loss, KL, EMA and weights) matches the uninterrupted run's."""
    k, updates = 2, 2  # prompts_per_update=1: two optimizer steps per RL step
    manifest = mixed_task_manifest(tmp_path, media_files)
    kw: dict[str, Any] = dict(prompts_per_update=1, kl_coef=0.1)
    full, full_spy, _, full_stats, full_resamples = grpo_run(
        manifest, (k + 1) * updates, ckpt_dir=tmp_path / "ckpt", **kw
    )
    ckpt = tmp_path / "ckpt" / f"step={k * updates}.ckpt"
    assert ckpt.exists(), sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    resumed, spy, _, stats, resamples = grpo_run(manifest, (k + 1) * updates, ckpt_path=str(ckpt), **kw)

    def at(calls: list, step: int) -> dict[str, float]:
        # values logged after the updates that took global_step to ``step``
        return {name: value for s, name, value in calls if s == step}

    last = (k + 1) * updates
    assert {s for s, _, _ in spy.calls} == {last}, "the resumed run must run step k+1 only"
    assert resamples == [s for s in full_resamples if s == k * updates] and resamples, (
        "resampling must be exercised"
    )
    want, got = at(full_spy.calls, last), at(spy.calls, last)
    assert want.keys() == got.keys()
    assert abs(want["train/loss"]) > 1e-4 and want["train/kl"] > 0
    for name in want:
        if not name.startswith(
            ("train/step_seconds", "train/agreement_seconds", "train/generation_tokens_per_sec")
        ):
            assert got[name] == pytest.approx(want[name], abs=1e-6), name
    ema_full, ema_resumed = full_stats.ema.state_dict(), stats.ema.state_dict()
    assert ema_full["updates"] == {"numerical": k + 1}  # every step kept numerical groups only
    assert ema_resumed == ema_full
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):  # policy and reference
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=name)


# --------------------------------------------------------------------------- KL, wiring


def test_kl_reference_is_frozen_and_starts_at_zero(toy_rewards, tmp_path: Path):
    manifest = mixed_task_manifest(tmp_path)
    module, spy, _, _, _ = grpo_run(
        manifest,
        3,
        filter_groups=False,
        kl_coef=0.1,
        advantage="grpo",
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0),
    )
    assert module.reference is not None
    kl = spy.steps()["train/kl"]
    assert len(kl) == 3 and abs(kl[0]) < 1e-6 and kl[-1] > 1e-6, kl
    initial = VisionLanguageBackbone("tiny", seed=0).state_dict()
    ref = module.reference.state_dict()
    assert not any(p.requires_grad for p in module.reference.parameters())
    assert all(torch.equal(ref[name], initial[name]) for name in initial)
    assert any(not torch.equal(v, initial[name]) for name, v in module.backbone.state_dict().items())

    module, spy, _, _, _ = grpo_run(manifest, 1, filter_groups=False, advantage="grpo")
    assert module.reference is None and "train/kl" not in spy.steps()


def test_ema_grpo_without_the_stats_callback_fails_clearly(toy_rewards, tmp_path: Path):
    backbone = VisionLanguageBackbone("tiny", seed=0)
    module = GRPOModule(
        backbone, rollout=HFGenerateEngine(max_new_tokens=2), rollouts_per_prompt=2, advantage="ema_grpo"
    )
    dm = OneThinkerDataModule(mode="rl", train_manifests=[mixed_task_manifest(tmp_path)], batch_size=2)
    dm.connect(backbone.processor)
    with pytest.raises(RuntimeError, match="TaskRewardStatsCallback"):
        trainer(1, []).fit(module, dm)


def test_advantages_stay_float32_under_bf16_true(toy_rewards, tmp_path: Path, monkeypatch):
    """bf16-true makes bf16 the default dtype inside the step; advantages must not be rounded to it."""
    import lightning_modules.grpo as grpo_module

    seen: list[torch.dtype] = []
    real = grpo_module.policy_loss

    def spy(logp, old, advantages, *args, **kwargs):
        seen.append(advantages.dtype)
        return real(logp, old, advantages, *args, **kwargs)

    monkeypatch.setattr(grpo_module, "policy_loss", spy)
    grpo_run(mixed_task_manifest(tmp_path), 1, filter_groups=False, advantage="grpo",
             trainer_kw={"precision": "bf16-true"})  # fmt: skip
    assert seen and all(d == torch.float32 for d in seen)


def test_a_task_absent_from_a_step_logs_nothing_for_it(toy_rewards, tmp_path: Path, monkeypatch):
    """The CSV and the offline W&B history a real fit writes hold a per-task value only at the steps whose
    batch had the task, and a step that kept no group repeats none of the previous step's figures:
    as many cells as the module logged, never an earlier step's value repeated (Lightning repeats
    on-step metrics that a later step does not log again). The advantage diagnostics are there."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from experiments.ablate import read_task_curves
    from tests.wandb_history import history_rows

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr("rewards.reward_timeouts", lambda: {"math": 2})  # as if two math checks ran out
    csv = CSVLogger(tmp_path, name="csv", version=0)
    wandb = WandbLogger(project="test", save_dir=str(tmp_path), offline=True)
    module, spy, *_ = grpo_run(
        mixed_task_manifest(tmp_path),
        6,
        trainer_kw={"logger": [csv, wandb], "log_every_n_steps": 1},
        max_resample=0,
        seed=5,
    )
    wandb.experiment.finish()
    path = tmp_path / "csv" / "version_0" / "metrics.csv"
    logged = spy.steps()
    written = read_task_curves(path, "train/filter_pass_rate")
    steps_with_logs = len(read_task_curves(path, "train/reward/overall")["all"][0])
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    history = history_rows(run_file)
    for task in ("OCR", "numerical"):
        key = f"train/filter_pass_rate/{task}"
        assert len(written[task][0]) == len(logged[key]), task
        in_wandb = [(row["trainer/global_step"], row[key]) for row in history if key in row]
        assert [v for _, v in in_wandb] == pytest.approx(logged[key]), task  # once per step that had it
        assert [s for s, _ in in_wandb] == written[task][0].tolist(), task
    # An RL step that kept no group (both prompts OCR: the data seed's third batch) logs its filter
    # figures only, never the previous step's rewards again; 6 updates take 7 RL steps.
    empty = read_task_curves(path, "train/filter")["empty_steps"][0]
    assert len(empty) == len(logged["train/filter/empty_steps"]) == 1
    assert steps_with_logs == len(logged["train/loss"]) == 6
    kept_numerical = read_task_curves(path, "train/reward/overall")["numerical"][0]
    assert len(kept_numerical) == len(logged["train/reward/overall/numerical"]) == 6
    assert empty[0] not in kept_numerical.tolist()
    assert logged["train/reward_timeouts/math"] == [2.0] * len(logged["train/loss"])
    assert logged["train/reward_timeouts/multiple choice"] == [0.0] * len(logged["train/loss"])
    shares = read_task_curves(path, "train/adv/mass_share")
    assert shares["numerical"][1] == pytest.approx(np.ones_like(shares["numerical"][1]))  # the only kept task
    assert "numerical" in read_task_curves(path, "train/adv/sigma") and "numerical" in read_task_curves(
        path, "train/adv/amplified"
    )


def test_the_reward_model_scores_open_ended_rollouts(tmp_path: Path):
    """`GRPOModule(reward_model=...)` sends open-ended rollouts to an OpenAI-compatible judge on the
    loopback: scores are min-max normalised per prompt group; an item the judge fails or lets stall
    past the per-request timeout falls back to ROUGE (then normalised with its group) and is counted."""
    import threading
    from http.server import ThreadingHTTPServer

    from rewards.qa import rouge_accuracy
    from rewards.reward_model import OpenAIChatRewardScorer, reward_model_failures
    from tests.rewards.test_rewards_reward_model import _Judge

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        module = GRPOModule(
            VisionLanguageBackbone("tiny", seed=0), rollouts_per_prompt=3, advantage="grpo",
            reward_model=OpenAIChatRewardScorer(url=url, model="judge", timeout_s=1.0),
        )  # fmt: skip
        answers = ["score=2", "score=6", "score=9", "fail a horse", "stall a horse", "score=4"]
        meta = [{"problem_id": i // 3, "problem_type": "open-ended", "data_type": "image", "answer": "<answer>a horse</answer>",
                 "problem": f"Describe picture {i // 3}.", "media": []} for i in range(6)]  # fmt: skip
        texts = [f"<think>t</think><answer>{a}</answer>" for a in answers]
        before = reward_model_failures()
        scores = module._score(Rollouts({}, torch.zeros(6, 1), texts, torch.arange(6) // 3, meta, 6))
        accuracy = scores["accuracy"].tolist()
        assert accuracy[:3] == pytest.approx(
            [0.0, 4 / 7, 1.0], abs=1e-4
        )  # (0.2, 0.6, 0.9) min-max in group 0
        assert reward_model_failures() - before == 2
        # group 1: ROUGE 0.756 for the failed and the stalled item, the judge's 0.4 for the third, then min-max
        assert rouge_accuracy("a horse", "fail a horse") > 0.4
        assert accuracy[3:] == pytest.approx([1.0, 1.0, 0.0], abs=1e-4)
        assert {s["body"]["messages"][0]["content"].count("Describe picture") for s in _Judge.seen} == {1}
    finally:
        server.shutdown()
        server.server_close()
