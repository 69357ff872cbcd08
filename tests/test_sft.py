"""`SFTModule` on the tiny Qwen-VL presets: the loss mask, the loss against a hand computation,
overfitting a fixed batch, and exact resume from a mid-run checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from datamodules.collate import Collator, build_example
from datamodules.datamodule import OneThinkerDataModule
from datamodules.media import PixelBudget, stage_media
from datamodules.records import load_records
from datamodules.synthetic import generate_suite
from experiments.ablate import read_task_curves
from lightning_modules.model.backbone import VisionLanguageBackbone
from lightning_modules.model.processing import VISION_TOKENS
from lightning_modules.sft import SFTModule
from lightning_modules.training.schedules import WarmupSchedule
from tests.numerics import FLOAT64_MODEL_TOLERANCE, batch_to

pytestmark = pytest.mark.numerics  # rerun under a second CPU kernel set (scripts/test.sh)

KINDS = ("image", "video", "text")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_suite(tmp_path_factory.mktemp("suite"), per_task=1, seed=0)


@pytest.fixture(scope="module")
def sft_records(suite):
    return load_records(suite["sft"], "sft")


def factor(family: str) -> int:
    return 32 if family == "qwen3_vl" else 28


def small_media(family: str):
    f = factor(family)
    return dataclasses.replace(
        stage_media("sft", family),
        image=PixelBudget(4 * f * f, 16 * f * f),
        video_frame=PixelBudget(f * f, 4 * f * f),
        max_frames=4,
    )


def examples(records, family: str, kinds: tuple[str, ...], mode: str = "sft"):
    """One example per kind; ``text`` is an image record with its media and image part removed."""
    out = []
    for kind in kinds:
        source = next(r for r in records if r.data_type == ("image" if kind == "text" else kind))
        if kind == "text":
            source = dataclasses.replace(source, media=())
        ex = build_example(source, mode, small_media(family))
        if kind == "text":
            user = ex.messages[0]
            ex.messages[0] = {**user, "content": [p for p in user["content"] if p["type"] == "text"]}
        out.append(ex)
    return out


def naive_mean_nll(backbone: VisionLanguageBackbone, batch: dict, labels: torch.Tensor) -> torch.Tensor:
    """Mean over labelled tokens of -log softmax(logits at t - 1)[token t], one row at a time."""
    total, count = torch.zeros((), dtype=torch.float64), 0
    grids = {
        "image": iter(batch["image_grid_thw"] if batch["image_grid_thw"] is not None else []),
        "video": iter(batch["video_grid_thw"] if batch["video_grid_thw"] is not None else []),
    }
    pixels = {"image": 0, "video": 0}
    for row in range(labels.shape[0]):
        inputs = {
            "input_ids": batch["input_ids"][row : row + 1],
            "attention_mask": batch["attention_mask"][row : row + 1],
        }
        kind = batch["meta"][row]["data_type"] if batch["meta"][row]["media"] else None
        if kind is not None:  # one medium per row in these batches
            grid = next(grids[kind])
            n = int(grid.prod())
            key, grid_key = (
                ("pixel_values", "image_grid_thw")
                if kind == "image"
                else ("pixel_values_videos", "video_grid_thw")
            )
            inputs[key] = batch[key][pixels[kind] : pixels[kind] + n]
            inputs[grid_key] = grid[None]
            pixels[kind] += n
            if kind == "video" and batch.get("second_per_grid_ts") is not None:
                inputs["second_per_grid_ts"] = batch["second_per_grid_ts"][:1]
        if batch.get("mm_token_type_ids") is not None:
            inputs["mm_token_type_ids"] = batch["mm_token_type_ids"][row : row + 1]
        logits = backbone.hf_model(**inputs, use_cache=False).logits[0]
        logp = torch.log_softmax(logits[:-1], dim=-1)
        for t in range(1, labels.shape[1]):
            if labels[row, t] != -100:
                total = total - logp[t - 1, labels[row, t]]
                count += 1
    return total / count


# --------------------------------------------------------------------------- loss mask


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_labels_cover_exactly_the_assistant_turn(sft_records, tokenizer, family: str):
    from lightning_modules.model.processing import build_processor

    processor = build_processor(family, tokenizer)
    exs = examples(sft_records, family, KINDS)
    batch = Collator(processor, "sft")(exs)
    ids, labels = batch["input_ids"], batch["labels"]
    vision = torch.tensor(tokenizer.convert_tokens_to_ids(list(VISION_TOKENS)))
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert torch.isin(ids, vision).any()
    assert (labels[torch.isin(ids, vision)] == -100).all()

    for row, ex in enumerate(exs):
        # The prompt alone, as generation sees it: everything in it is context, never a target.
        prompt = Collator(processor, "rl")([dataclasses.replace(ex, messages=ex.messages[:1])])["input_ids"][
            0
        ]
        answer = tokenizer.encode(ex.messages[1]["content"], add_special_tokens=False)
        p, a = len(prompt), len(answer)
        assert torch.equal(ids[row, :p], prompt)
        assert ids[row, p : p + a].tolist() == answer and ids[row, p + a] == end
        want = torch.full_like(ids[row], -100)
        want[p : p + a + 1] = ids[row, p : p + a + 1]  # the answer and its <|im_end|>
        assert torch.equal(labels[row], want), f"row {row} ({ex.task})"


def test_loss_is_the_mean_nll_of_assistant_tokens(sft_records):
    # float64, one row at a time against the batch (tests/numerics.py).
    backbone = VisionLanguageBackbone("tiny", family="qwen3_vl", seed=2, logprob_chunk_size=16).double()
    module = SFTModule(backbone)
    batch = batch_to(
        Collator(backbone.processor, "sft")(examples(sft_records, "qwen3_vl", KINDS)), torch.float64
    )
    loss, tasks, tokens = module.loss(batch)
    labels = batch["labels"]
    assert tokens == int((labels != -100).sum())
    with torch.no_grad():
        want = naive_mean_nll(backbone, batch, labels)
    torch.testing.assert_close(loss.detach(), want, **FLOAT64_MODEL_TOLERANCE)
    # Per-task sums add up to the batch loss; every row's task is reported.
    assert {f"{m['problem_type']}/{m['data_type']}" for m in batch["meta"]} == set(tasks)
    total = sum(float(s) for s, _ in tasks.values())
    assert sum(n for _, n in tasks.values()) == tokens
    assert total / tokens == pytest.approx(float(want), rel=1e-6)


# --------------------------------------------------------------------------- overfitting


class LossRecorder(Callback):
    """Training loss per optimizer step (``global_step`` after the step)."""

    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def trainer(root: Path, max_steps: int, callbacks: list[Callback], **kw) -> L.Trainer:
    kw.setdefault("logger", False)
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        deterministic=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(root),
        callbacks=callbacks,
        **kw,
    )


@pytest.mark.slow
def test_sft_overfits_a_fixed_batch(sft_records, tmp_path: Path):
    L.seed_everything(0, verbose=False)
    backbone = VisionLanguageBackbone("tiny", family="qwen3_vl", seed=0)
    # One video row: every step projects each target onto 151,936 logits, so the batch stays small.
    batch = Collator(backbone.processor, "sft")(examples(sft_records, "qwen3_vl", ("video",)))
    steps = 36
    loader = torch.utils.data.DataLoader([batch] * steps, batch_size=None, collate_fn=lambda b: b)
    module = SFTModule(
        backbone,
        # The tied 151,936-token embedding needs a few times the recipe's rate to fit in 36 steps.
        optimizer=lambda params: torch.optim.AdamW(params, lr=5e-3, weight_decay=0.0),
        schedule=WarmupSchedule("constant", 0.0),
    )
    recorder = LossRecorder()
    csv_logger = CSVLogger(tmp_path, name="csv", version=0)
    run = trainer(
        tmp_path, steps, [recorder], enable_checkpointing=False, logger=csv_logger, log_every_n_steps=1
    )
    run.fit(module, loader)
    losses = [recorder.losses[s] for s in sorted(recorder.losses)]
    assert len(losses) == steps
    assert losses[-1] < 0.1 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    # What the module logs each step.
    task = f"train/loss/{batch['meta'][0]['problem_type']}/video"
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_sec"} <= set(run.callback_metrics)
    assert float(run.callback_metrics["train/loss"]) == pytest.approx(losses[-1], rel=1e-6)
    per_task = read_task_curves(tmp_path / "csv" / "version_0" / "metrics.csv", "train/loss")
    assert per_task[task.removeprefix("train/loss/")][1][-1] == pytest.approx(losses[-1], rel=1e-5)
    assert float(run.callback_metrics["train/lr"]) == pytest.approx(5e-3)


# --------------------------------------------------------------------------- resume


def fit_run(
    suite, root: Path, seed: int, ckpt_every: int | None = None, ckpt_path: str | None = None
) -> LossRecorder:
    """Two epochs of 3 steps; the schedule's length comes from the data (``max_steps`` unset)."""
    L.seed_everything(0, verbose=False)
    f = factor("qwen3_vl")
    data = OneThinkerDataModule(
        mode="sft",
        train_manifests=[str(suite["sft"])],
        batch_size=2,
        samples_per_epoch=6,  # 3 steps an epoch: the resumed run crosses an epoch boundary
        num_workers=0,
        seed=3,
        image_pixels=(4 * f * f, 16 * f * f),
        video_pixels=(f * f, 4 * f * f),
        max_frames=4,
    )
    backbone = VisionLanguageBackbone("tiny", family="qwen3_vl", seed=seed)
    data.connect(backbone.processor)
    module = SFTModule(
        backbone,
        optimizer=lambda params: torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01),
        schedule=WarmupSchedule("cosine", 0.3),
    )
    recorder = LossRecorder()
    callbacks: list[Callback] = [recorder]
    if ckpt_every:
        callbacks.append(ModelCheckpoint(dirpath=str(root), every_n_train_steps=ckpt_every, save_top_k=-1))
    run = trainer(
        root, -1, callbacks, max_epochs=2, enable_checkpointing=bool(ckpt_every), gradient_clip_val=1.0
    )
    run.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return recorder


@pytest.mark.slow
def test_resume_from_mid_run_checkpoint_gives_the_same_next_losses(suite, tmp_path: Path):
    full = fit_run(suite, tmp_path / "full", seed=0, ckpt_every=2)
    assert sorted(full.losses) == list(range(1, 7))
    ckpt = tmp_path / "full" / "epoch=0-step=2.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in (tmp_path / "full").iterdir())
    # A different initialisation: everything the resumed run does must come from the checkpoint.
    resumed = fit_run(suite, tmp_path / "resumed", seed=1, ckpt_path=str(ckpt))
    assert sorted(resumed.losses) == list(range(3, 7))
    for step in range(3, 7):
        assert resumed.losses[step] == pytest.approx(full.losses[step], abs=1e-6, rel=0), f"step {step}"
    assert len({round(v, 4) for v in full.losses.values()}) == 6  # the batches and weights do change
