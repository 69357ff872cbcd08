"""Packed SFT batches (`datamodules.packing`): row filling by hand, each sample's own positions,
attention kept inside each sample, and the loss and gradients of a packed batch equal to the padded one."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from datamodules.collate import Collator
from datamodules.packing import pack_rows, sample_spans, segment_positions
from datamodules.records import load_records
from datamodules.synthetic import generate_suite
from lightning_modules.model.backbone import VisionLanguageBackbone, packed_position_ids
from lightning_modules.sft import SFTModule
from tests.numerics import FLOAT64_MODEL_TOLERANCE, FLOAT64_TOLERANCE, batch_to
from tests.test_sft import examples

pytestmark = pytest.mark.numerics

FAMILIES = ("qwen3_vl", "qwen2_5_vl")
MIX = ("image", "video", "text", "image")


@pytest.fixture(scope="module")
def sft_records(tmp_path_factory: pytest.TempPathFactory):
    suite = generate_suite(tmp_path_factory.mktemp("suite"), per_task=1, seed=0)
    return load_records(suite["sft"], "sft")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def backbone(family: str) -> VisionLanguageBackbone:
    return VisionLanguageBackbone("tiny", family=family, seed=2, logprob_chunk_size=16).double()


def two_row_budget(processor, exs) -> int:
    """A budget that packs the first two samples together and needs a second row for the rest."""
    lengths = Collator(processor, "sft")(exs)["attention_mask"].sum(dim=1).tolist()
    return max(lengths[0] + lengths[1], *lengths)


def packed_and_padded(backbone, sft_records, family):
    exs = examples(sft_records, family, MIX)
    budget = two_row_budget(backbone.processor, exs)
    padded = batch_to(Collator(backbone.processor, "sft")(exs), torch.float64)
    packed = batch_to(Collator(backbone.processor, "sft", pack_tokens=budget)(exs), torch.float64)
    return exs, padded, packed


# --------------------------------------------------------------------------- filling rows


def test_pack_rows_by_hand():
    assert pack_rows([3, 4, 2, 5], 7) == [[0, 1], [2, 3]]
    assert pack_rows([3, 4, 2, 5], 9) == [[0, 1, 2], [3]]
    assert pack_rows([3, 4, 2, 5], 5) == [[0], [1], [2], [3]]
    assert pack_rows([], 5) == []
    with pytest.raises(ValueError, match="sample 1 has 6 tokens, more than the packing budget 5"):
        pack_rows([2, 6], 5)


def test_packed_rows_hold_the_samples_unpadded(backbone, sft_records, family):
    exs, padded, packed = packed_and_padded(backbone, sft_records, family)
    lengths = padded["attention_mask"].sum(dim=1).tolist()
    assert packed["pack_lengths"][0] == lengths[:2] and len(packed["pack_lengths"]) >= 2
    assert sum(map(len, packed["pack_lengths"])) == len(exs) == len(packed["meta"])
    for s, (row, start, end) in enumerate(sample_spans(packed)):
        for key in ("input_ids", "labels", "mm_token_type_ids"):
            assert torch.equal(packed[key][row, start:end], padded[key][s, : lengths[s]]), (key, s)
    # The pixels and grids are the processor's, untouched and in sample order.
    for key in ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw"):
        assert torch.equal(packed[key], padded[key])
    # Row padding is unlabelled and counts as no token.
    assert int(packed["attention_mask"].sum()) == sum(lengths)
    assert int((packed["labels"] != -100).sum()) == int((padded["labels"] != -100).sum())


# --------------------------------------------------------------------------- positions


def test_each_sample_keeps_its_own_positions(backbone, sft_records, family):
    exs, _, packed = packed_and_padded(backbone, sft_records, family)
    model = backbone.hf_model.model
    positions = packed_position_ids(model, packed)
    assert positions.shape == (4, *packed["input_ids"].shape)
    for s, (row, start, end) in enumerate(sample_spans(packed)):
        alone = Collator(backbone.processor, "sft")([exs[s]])
        n = int(alone["attention_mask"].sum())
        assert end - start == n
        # Text positions restart at every sample: that is what keeps attention inside it.
        assert torch.equal(positions[0, row, start:end], torch.arange(n))
        if alone["image_grid_thw"] is None and alone["video_grid_thw"] is None:
            want = torch.arange(n).expand(3, n)  # text only: the model's default positions
        else:
            grids = {k: alone.get(k) for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")}
            want, _ = model.get_rope_index(
                alone["input_ids"],
                mm_token_type_ids=alone["mm_token_type_ids"],
                attention_mask=alone["attention_mask"],
                **{k: v for k, v in grids.items() if v is not None},
            )
            want = want[:, 0]
            assert int(want.max()) < n  # each sample's positions start from 0, not after the last one
        assert torch.equal(positions[1:, row, start:end], want), f"sample {s} ({exs[s].task})"


def test_segment_positions_by_hand():
    batch = {"input_ids": torch.zeros(2, 6, dtype=torch.long), "pack_lengths": [[2, 3], [4]]}
    assert segment_positions(batch).tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 0, 1]]
    assert sample_spans(batch) == [(0, 0, 2), (0, 2, 5), (1, 0, 4)]


# --------------------------------------------------------------------------- attention


def perturbed(batch: dict, row: int, start: int, end: int) -> dict:
    """``batch`` with the labelled (answer) tokens of one sample replaced by other text tokens."""
    ids = batch["input_ids"].clone()
    span = ids[row, start:end]
    answer = batch["labels"][row, start:end] != -100
    span[answer] = (span[answer] + 7) % 1000 + 100  # plain text ids of the 151k vocabulary
    return {**batch, "input_ids": ids}


@torch.no_grad()
def test_attention_stays_inside_each_sample(backbone, sft_records, family):
    _, _, packed = packed_and_padded(backbone, sft_records, family)
    spans = sample_spans(packed)
    (row, s0, e0), (row1, s1, e1) = spans[0], spans[1]
    assert row == row1 == 0
    hidden = backbone(packed)
    # Changing sample 1 leaves sample 2 unchanged (they share row 0) and changes sample 1 itself.
    after = backbone(perturbed(packed, row, s0, e0))
    torch.testing.assert_close(after[row, s1:e1], hidden[row, s1:e1], **FLOAT64_TOLERANCE)
    assert not torch.allclose(after[row, s0:e0], hidden[row, s0:e0])
    # Changing sample 2 leaves sample 1 unchanged.
    after = backbone(perturbed(packed, row, s1, e1))
    torch.testing.assert_close(after[row, s0:e0], hidden[row, s0:e0], **FLOAT64_TOLERANCE)
    # The same rows without the sample boundaries (one causal sequence): sample 2 does see sample 1,
    # so the check above can fail.
    plain = {k: v for k, v in packed.items() if k != "pack_lengths"}
    plain["attention_mask"] = torch.ones_like(packed["input_ids"])
    joined = backbone(plain)
    joined_after = backbone(perturbed(plain | {"labels": packed["labels"]}, row, s0, e0))
    assert not torch.allclose(joined_after[row, s1:e1], joined[row, s1:e1])


# --------------------------------------------------------------------------- loss and gradients


def test_packed_loss_and_gradients_equal_the_padded_batch(backbone, sft_records, family):
    _, padded, packed = packed_and_padded(backbone, sft_records, family)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    module = SFTModule(backbone)
    params = [p for p in backbone.parameters() if p.requires_grad]
    results = []
    for batch in (padded, packed):
        loss, tasks, tokens = module.loss(batch)
        grads = torch.autograd.grad(loss, params)
        results.append((loss.detach(), tasks, tokens, grads))
    (loss_a, tasks_a, tokens_a, grads_a), (loss_b, tasks_b, tokens_b, grads_b) = results
    assert tokens_a == tokens_b
    torch.testing.assert_close(loss_b, loss_a, **FLOAT64_MODEL_TOLERANCE)
    assert tasks_a.keys() == tasks_b.keys()
    for key in tasks_a:
        assert tasks_a[key][1] == tasks_b[key][1]
        torch.testing.assert_close(tasks_b[key][0], tasks_a[key][0], **FLOAT64_MODEL_TOLERANCE)
    for got, want in zip(grads_b, grads_a, strict=True):
        torch.testing.assert_close(got, want, **FLOAT64_MODEL_TOLERANCE)


# --------------------------------------------------------------------------- bad input


def test_a_conversation_over_the_budget_is_skipped_and_counted(backbone, sft_records, family):
    exs = examples(sft_records, family, MIX)
    lengths = Collator(backbone.processor, "sft")(exs)["attention_mask"].sum(dim=1).tolist()
    budget = max(lengths) - 1  # the longest conversation(s) do not fit
    over = [ex.task for ex, n in zip(exs, lengths, strict=True) if n > budget]
    batch = Collator(backbone.processor, "sft", pack_tokens=budget)(exs)
    assert batch["skipped"] == dict(Counter(f"too_long/{task}" for task in over))
    assert len(batch["meta"]) == len(exs) - len(over)
    assert max(map(sum, batch["pack_lengths"])) <= budget


def test_packing_is_for_sft_only(backbone):
    with pytest.raises(ValueError, match="the 'rl' stage does not pack"):
        Collator(backbone.processor, "rl", pack_tokens=64)
    with pytest.raises(ValueError, match="pack_tokens must be positive"):
        Collator(backbone.processor, "sft", pack_tokens=0)


def test_a_budget_below_the_longest_prompt_fails_at_setup(backbone, tmp_path: Path):
    from datamodules.datamodule import OneThinkerDataModule

    suite = generate_suite(tmp_path / "suite", per_task=1, seed=0)
    dm = OneThinkerDataModule("sft", train_manifests=[str(suite["sft"])], pack_tokens=40)
    dm.connect(backbone.processor)
    with pytest.raises(ValueError, match=r"data.pack_tokens=40 is smaller than the longest prompt: .*sft"):
        dm.setup("fit")
    fits = OneThinkerDataModule("sft", train_manifests=[str(suite["sft"])], pack_tokens=4096)
    fits.connect(backbone.processor)
    fits.setup("fit")
