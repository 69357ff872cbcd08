"""RolloutTableCallback: row sampling, W&B table contents (fake experiment) and the JSONL fallback."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from PIL import Image

from callbacks.rollout_table import COLUMNS, RolloutTableCallback, media_thumbnail
from lightning_modules.grpo import ScoredPart
from lightning_modules.rl.rollout import Rollouts

N = 2  # rollouts per prompt


class FakeTokenizer:
    vocab = {1: "<|im_start|>", 2: "<|image_pad|>", 3: "what", 4: "colour", 5: "?", 6: "A", 7: "B"}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.vocab[i] for i in ids)


class FakeExperiment:
    def __init__(self):
        self.logged = []

    def log(self, data, **kwargs):
        self.logged.append(data)


class FakeWandbLogger(WandbLogger):
    """A WandbLogger whose run is a recorder (no wandb.init)."""

    def __init__(self):
        super().__init__(offline=True)
        self._fake = FakeExperiment()

    @property
    def experiment(self):
        return self._fake


def make_rollouts(media_dir: Path):
    metas = [
        {
            "problem_id": "img-0",
            "problem_type": "multiple choice",
            "data_type": "image",
            "media": [str(media_dir / "a.png")],
            "answer": "B",
            "timestamps": None,
        },
        {
            "problem_id": "vid-0",
            "problem_type": "temporal grounding",
            "data_type": "video",
            "media": [str(media_dir / "bar.mp4")],
            "answer": "[1.0, 2.0]",
            "timestamps": [0.0, 1.0],
        },
        {
            "problem_id": "seg-0",
            "problem_type": "segmentation",
            "data_type": "image",
            "media": [str(media_dir / "b.png")],
            "answer": "x",
            "timestamps": None,
        },
    ]
    rows_meta = [m for m in metas for _ in range(N)]
    # prompt: <|im_start|> <|image_pad|> x3, "what", "colour", "?"; response: 1 or 2 tokens, then padding
    prompt = [1, 2, 2, 2, 3, 4, 5]
    input_ids, resp_mask, attn = [], [], []
    for r in range(len(rows_meta)):
        resp = [6] if r % 2 == 0 else [7, 6]
        pad = 2 - len(resp)
        input_ids.append(prompt + resp + [0] * pad)
        resp_mask.append([0] * len(prompt) + [1] * len(resp) + [0] * pad)
        attn.append([1] * len(prompt) + [1] * len(resp) + [0] * pad)
    ro = Rollouts(
        batch={"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(attn)},
        response_mask=torch.tensor(resp_mask),
        responses=[f"response {r}" for r in range(len(rows_meta))],
        group_ids=torch.arange(len(metas)).repeat_interleave(N),
        meta=rows_meta,
        generated_tokens=9,
    )
    # the second prompt's group was filtered out: kept rows 0, 1, 4, 5
    kept = [0, 1, 4, 5]
    scores = {
        "overall": torch.tensor([1.0, 0.0, 0.5, 0.25]),
        "accuracy": torch.tensor([1.0, 0.0, 0.4, 0.2]),
        "format": torch.tensor([1.0, 1.0, 0.0, 1.0]),
        "structure": torch.tensor([0.0, 0.0, 0.1, 0.0]),
    }
    part = ScoredPart(ro, kept, scores)
    # a second generate call (resampling) with the video prompt
    ro2 = Rollouts(
        batch={"input_ids": torch.tensor(input_ids[2:4]), "attention_mask": torch.tensor(attn[2:4])},
        response_mask=torch.tensor(resp_mask[2:4]),
        responses=["video a", "video b"],
        group_ids=torch.zeros(2, dtype=torch.long),
        meta=rows_meta[2:4],
        generated_tokens=3,
    )
    scores2 = {f: torch.tensor([0.75, 0.5]) for f in scores}
    part2 = ScoredPart(ro2, [0, 1], scores2)
    last = {
        "parts": [part, part2],
        "scores": {f: torch.cat([scores[f], scores2[f]]) for f in scores},
        "advantages": torch.tensor([0.7, -0.7, 0.1, -0.1, 0.3, -0.3]),
        "meta": [rows_meta[r] for r in kept] + rows_meta[2:4],
    }
    return last


def fake_module(last):
    return SimpleNamespace(
        last_rollouts=last,
        hparams={"task_key_by": "task"},
        backbone=SimpleNamespace(tokenizer=FakeTokenizer()),
    )


def fake_trainer(loggers, step, root):
    return SimpleNamespace(
        is_global_zero=True,
        loggers=loggers,
        global_step=step * 4,  # several optimizer steps per RL step: the callback uses the loggers' step
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=step)),
        default_root_dir=str(root),
        log_dir=None,
    )


def test_media_thumbnail_image_and_video_strip(media_dir):
    img = media_thumbnail({"data_type": "image", "media": [str(media_dir / "a.png")]}, size=64)
    assert img.size == (64, 38)  # 200x120 shrunk to fit 64x64
    strip = media_thumbnail({"data_type": "video", "media": [str(media_dir / "bar.mp4")]}, size=64)
    w, h = strip.size
    assert h <= 64 and w >= 3 * h  # four frames side by side
    assert media_thumbnail({"data_type": "image", "media": []}) is None
    assert media_thumbnail({"data_type": "image", "media": [str(media_dir / "corrupt.png")]}) is None


def test_select_rows_round_robin_over_tasks(media_dir):
    last = make_rollouts(media_dir)
    cb = RolloutTableCallback(every_n_steps=1, max_rows=4)
    picked = cb.select_rows(last, step=3)
    tasks = [last["meta"][i]["problem_type"] for i in picked]
    assert len(picked) == 4 and len(set(picked)) == 4
    assert set(tasks[:3]) == {"multiple choice", "temporal grounding", "segmentation"}
    assert cb.select_rows(last, step=3) == picked  # deterministic per step
    assert sorted(RolloutTableCallback(max_rows=100).select_rows(last, step=0)) == list(range(6))


def test_wandb_table_columns_and_rows(media_dir, tmp_path):
    import wandb

    last = make_rollouts(media_dir)
    logger = FakeWandbLogger()
    cb = RolloutTableCallback(every_n_steps=5, max_rows=16)
    module = fake_module(last)

    cb.on_train_batch_end(fake_trainer([logger], 3, tmp_path), module, None, None, 0)
    assert logger.experiment.logged == []  # step 3 is not a multiple of 5

    cb.on_train_batch_end(fake_trainer([logger], 5, tmp_path), module, None, None, 0)
    assert len(logger.experiment.logged) == 1
    logged = logger.experiment.logged[0]
    assert logged["trainer/global_step"] == 5
    table = logged["rollouts"]
    assert isinstance(table, wandb.Table)
    assert list(table.columns) == list(COLUMNS)
    assert len(table.data) == 6
    rows = {(r[2], r[5]): dict(zip(COLUMNS, r)) for r in table.data}
    img = rows[("img-0", "response 0")]
    assert img["step"] == 5 and img["task"] == "multiple choice"
    assert isinstance(img["media"], wandb.Image)
    assert img["prompt"] == "<|im_start|><|image_pad|>whatcolour?"  # pads collapsed, response excluded
    assert (img["reward_overall"], img["reward_accuracy"], img["reward_format"], img["reward_structure"]) == (
        1.0,
        1.0,
        1.0,
        0.0,
    )
    assert img["advantage"] == pytest.approx(0.7)
    seg = rows[("seg-0", "response 5")]
    assert seg["task"] == "segmentation/image"
    assert (seg["reward_overall"], seg["reward_structure"], seg["advantage"]) == (
        0.25,
        0.0,
        pytest.approx(-0.1),
    )
    vid = rows[("vid-0", "video b")]
    assert vid["task"] == "temporal grounding" and isinstance(vid["media"], wandb.Image)
    assert (vid["reward_accuracy"], vid["advantage"]) == (0.5, pytest.approx(-0.3))

    # the same rollouts object is not logged twice (e.g. a step whose groups were all filtered out)
    cb.on_train_batch_end(fake_trainer([logger], 10, tmp_path), module, None, None, 0)
    assert len(logger.experiment.logged) == 1


def test_jsonl_fallback_without_wandb(media_dir, tmp_path):
    last = make_rollouts(media_dir)
    csv = CSVLogger(tmp_path, name="csv", version=0)
    cb = RolloutTableCallback(every_n_steps=2, max_rows=3)
    cb.on_train_batch_end(fake_trainer([csv], 4, tmp_path), fake_module(last), None, None, 0)

    path = Path(csv.log_dir) / "rollouts" / "rollouts.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 3
    assert {row["problem_id"] for row in lines} == {"img-0", "vid-0", "seg-0"}
    for row in lines:
        assert set(COLUMNS) <= set(row) and row["step"] == 4
        assert Image.open(path.parent / row["media"]).size[0] > 0
        assert row["media_paths"] and row["answer"] is not None
        assert isinstance(row["reward_overall"], float) and isinstance(row["advantage"], float)

    # no logger at all: falls back to the trainer's root dir; later steps append
    cb2 = RolloutTableCallback(every_n_steps=1, max_rows=2)
    cb2.on_train_batch_end(fake_trainer([], 7, tmp_path / "root"), fake_module(last), None, None, 0)
    last2 = dict(last)
    cb2.on_train_batch_end(fake_trainer([], 8, tmp_path / "root"), fake_module(last2), None, None, 0)
    lines = (tmp_path / "root" / "rollouts" / "rollouts.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [7, 7, 8, 8]


def test_non_zero_rank_and_missing_rollouts_log_nothing(tmp_path):
    cb = RolloutTableCallback(every_n_steps=1)
    trainer = fake_trainer([], 0, tmp_path)
    cb.on_train_batch_end(trainer, SimpleNamespace(), None, None, 0)  # no last_rollouts yet
    trainer.is_global_zero = False
    cb.on_train_batch_end(trainer, fake_module({"parts": [], "meta": []}), None, None, 0)
    assert not (tmp_path / "rollouts").exists()
