"""`OneThinkerDataModule` on the synthetic suite: all modes, worker processes, exact resume, skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.datamodule import OneThinkerDataModule
from datamodules.synthetic import generate_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_suite(tmp_path_factory.mktemp("suite"), per_task=2, seed=0)


def make(suite: dict[str, Path], processor, **kw) -> OneThinkerDataModule:
    dm = OneThinkerDataModule(train_manifests=[str(suite[kw.pop("train", "rl")])], **kw)
    dm.connect(processor)
    return dm


def ids_of(batch) -> list[int]:
    return [m["problem_id"] for m in batch["meta"]]


@pytest.mark.parametrize("mode", ["rl", "sft"])
def test_train_batches_mix_images_and_videos(suite, processor, mode: str):
    dm = make(
        suite,
        processor,
        mode=mode,
        train=mode,
        batch_size=6,
        samples_per_epoch=12,
        seed=1,
        weights={"data_type": {"image": 1, "video": 1}},
    )
    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    kinds = {m["data_type"] for b in batches for m in b["meta"]}
    assert kinds == {"image", "video"}
    assert ("labels" in batches[0]) == (mode == "sft")


def test_eval_mode_reads_test_manifest_in_order(suite, processor):
    dm = OneThinkerDataModule(mode="eval", test_manifests=[str(suite["eval"])], batch_size=8)
    dm.connect(processor)
    seen = [pid for b in dm.test_dataloader() for pid in ids_of(b)]
    expected = [r["problem_id"] for r in json.loads(suite["eval"].read_text())]
    assert seen == expected


def test_resume_continues_exactly_with_workers(suite, processor):
    kw = dict(mode="rl", batch_size=3, samples_per_epoch=15, seed=7, num_workers=1)
    reference = [ids_of(b) for b in make(suite, processor, **kw).train_dataloader()]

    first = make(suite, processor, **kw)
    seen = []
    for batch in first.train_dataloader():  # workers prefetch ahead; only consumed batches count
        batch = first.on_before_batch_transfer(batch, 0)
        seen.append(ids_of(batch))
        if len(seen) == 2:
            break
    state = first.state_dict()
    assert state["sampler"] == {"epoch": 0, "start": 6}

    resumed = make(suite, processor, **kw)
    resumed.load_state_dict(state)
    seen += [ids_of(b) for b in resumed.train_dataloader()]
    assert seen == reference


def test_bad_media_skipped_and_counted(suite, processor, tmp_path: Path):
    records = json.loads(suite["rl"].read_text())
    video = next(r for r in records if r["data_type"] == "video")
    broken = {**video, "videos": ["does/not/exist.mp4"], "problem_id": 999}
    manifest = tmp_path / "rl.json"
    root = suite["rl"].parent
    manifest.write_text(json.dumps([broken, records[0]]))
    dm = OneThinkerDataModule(
        mode="rl", val_manifests=[str(manifest)], media_root=str(root), batch_size=2, on_bad_media="skip"
    )
    dm.connect(processor)
    batch = dm.on_before_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert ids_of(batch) == [records[0]["problem_id"]]
    assert dm.skipped == {f"bad_media/{video['problem_type']}/video": 1}
    strict = OneThinkerDataModule(
        mode="rl", val_manifests=[str(manifest)], media_root=str(root), batch_size=2
    )
    strict.connect(processor)
    with pytest.raises(Exception, match="does/not/exist.mp4"):
        next(iter(strict.val_dataloader()))


def test_processor_must_be_connected(suite):
    dm = OneThinkerDataModule(mode="rl", train_manifests=[str(suite["rl"])])
    with pytest.raises(RuntimeError, match="connect"):
        dm.train_dataloader()


def test_global_batch_size_splits_over_ranks_or_fails_at_setup(suite, processor):
    from types import SimpleNamespace

    for world, per_rank in ((1, 8), (2, 4), (4, 2)):
        dm = make(suite, processor, mode="rl", global_batch_size=8, batch_size=3, samples_per_epoch=16)
        dm.trainer = SimpleNamespace(global_rank=world - 1, world_size=world)
        dm.setup("fit")
        assert dm.train_batch_size == per_rank
        assert len(next(iter(dm.train_dataloader()))["meta"]) == per_rank
    dm = make(suite, processor, mode="rl", global_batch_size=8)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=3)
    with pytest.raises(ValueError, match=r"global_batch_size=8 does not split over 3 ranks"):
        dm.setup("fit")
    assert make(suite, processor, mode="rl", batch_size=3).train_batch_size == 3  # per rank, as before


def test_family_follows_the_connected_processor():
    """The backbone is the one source of the family: its processor sets the patch factor; a data.family
    that disagrees with it fails clearly."""
    from lightning_modules.model.processing import build_processor

    for family, factor in (("qwen3_vl", 32), ("qwen2_5_vl", 28)):
        dm = OneThinkerDataModule(mode="rl")
        assert dm.media is None
        dm.connect(build_processor(family))
        assert dm.media.factor == factor, family
    pinned = OneThinkerDataModule(mode="rl", family="qwen2_5_vl")
    with pytest.raises(
        ValueError, match="data.family is qwen2_5_vl but the backbone's processor is qwen3_vl"
    ):
        pinned.connect(build_processor("qwen3_vl"))
