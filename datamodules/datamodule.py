"""`OneThinkerDataModule`: manifests → mixed-task sampling → media in workers → processor batches."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.collate import Collator, Example, Mode, Skipped, load_example, prompt_lengths
from datamodules.media import MediaConfig, PixelBudget, processor_family, stage_media
from datamodules.records import Record, detect_kind, load_records, record_key
from datamodules.sampling import MixedTaskSampler, sampling_probabilities

log = logging.getLogger(__name__)
RECORD_KIND = {"sft": "sft", "rl": "rl", "eval": "eval"}


class RecordDataset(Dataset):
    """Records whose media decode on access (so in DataLoader workers).

    Keys are record indices, or the (epoch, position, index) keys `MixedTaskSampler` yields.
    """

    def __init__(self, records: list[Record], mode: Mode, media: MediaConfig, on_bad_media: str = "error"):
        self.records, self.mode, self.media, self.on_bad_media = records, mode, media, on_bad_media

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int, int]) -> Example | Skipped:
        position = None
        if isinstance(key, tuple):
            epoch, pos, key = key
            position = (epoch, pos)
        item = load_example(self.records[key], self.mode, self.media, self.on_bad_media, position)
        if isinstance(item, Skipped):
            log.warning("skipping record with bad media: %s", item.reason)
        return item


class SkippedDataError(RuntimeError):
    """Too much of the training data was skipped (bad media, too long) for the run to mean anything."""


class OneThinkerDataModule(L.LightningDataModule):
    """OneThinker data for one stage.

    Args:
        mode: ``sft`` (ShareGPT records, labels on assistant tokens), ``rl`` (RL records, left-padded
            prompts) or ``eval`` (evaluation records, left-padded prompts).
        train_manifests: RL or SFT manifests (JSON list or JSONL) drawn from together.
        val_manifests: manifests of the same kind, read in order.
        test_manifests: evaluation manifests, read in order (``test`` and ``predict``).
        media_root: folder relative media paths resolve against (default: each manifest's folder).
        weights: target shares per dimension (``problem_type``, ``mix_group``, ``data_type``,
            ``data_source``), e.g. ``{"data_type": {"image": 1, "video": 1}}``.
        temperature: flattens natural dataset sizes before the weights apply (1 keeps them).
        samples_per_epoch: draws per rank and epoch (default: the number of train records).
        batch_size: rows per batch and rank (prompts in RL).
        global_batch_size: rows per step over all ranks, instead of ``batch_size``: each rank takes
            ``global_batch_size / world size``, which must be whole (the released RL step: 128 prompts).
        eval_batch_size: rows per validation/test batch (default: ``batch_size``).
        num_workers: DataLoader worker processes that decode media.
        seed: sampling seed; ranks read disjoint positions of one seeded stream.
        family: backbone family, which sets the patch factor (``qwen3_vl``: 32, ``qwen2_5_vl``: 28).
            Default: the connected processor's (`connect`), so the backbone is the one source; a value
            set here must agree with it.
        media_stage: SPEC §4 budget set (``rl``, ``sft`` or ``eval``; default: by ``mode``).
        image_pixels: (min, max) pixels per image, overriding the stage's.
        video_pixels: (min, max) pixels per video frame, overriding the stage's.
        fps: video sampling rate.
        max_frames: frames per video at most.
        on_bad_media: ``error`` raises `MediaError`; ``skip`` drops the row, counted per task.
        max_length: rows with more tokens are dropped and counted (SFT uses 16,384).
        pack_tokens: SFT only: pack the conversations of each batch into rows of at most this many
            tokens, without padding between them (``batch_size`` still counts conversations); a
            conversation over the budget is dropped and counted. Checked at set-up against the
            longest prompt text of the train records. ``None`` pads every row instead.
        max_skip_fraction: stop training with an error once more than this share of the train rows
            read so far was skipped (bad media, too long), summed over ranks; checked every
            ``skip_check_rows`` rows per rank, and at the end of a shorter run that skipped every row.
        skip_check_rows: rows per rank between two checks of ``max_skip_fraction``.
        synthetic_suite: when set, write the synthetic suite (``per_task`` samples of each task, seed
            0) into this folder first unless its manifests are there (demo and tests; ``prepare_data``).
        synthetic_per_task: samples per task of that suite.
    """

    def __init__(
        self,
        mode: Literal["sft", "rl", "eval"] = "rl",
        train_manifests: list[str] | None = None,
        val_manifests: list[str] | None = None,
        test_manifests: list[str] | None = None,
        media_root: str | None = None,
        weights: dict[str, dict[str, float]] | None = None,
        temperature: float = 1.0,
        samples_per_epoch: int | None = None,
        batch_size: int = 8,
        global_batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        family: Literal["qwen3_vl", "qwen2_5_vl"] | None = None,
        media_stage: Literal["sft", "rl", "eval"] | None = None,
        image_pixels: tuple[int, int] | None = None,
        video_pixels: tuple[int, int] | None = None,
        fps: float = 2.0,
        max_frames: int = 128,
        on_bad_media: Literal["error", "skip"] = "error",
        max_length: int | None = None,
        pack_tokens: int | None = None,
        max_skip_fraction: float = 0.5,
        skip_check_rows: int = 64,
        synthetic_suite: str | None = None,
        synthetic_per_task: int = 4,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.mode = mode
        self.processor: Any = None
        self.records: dict[str, list[Record]] = {}
        self.skipped: Counter[str] = Counter()
        self.rows_read = 0  # train rows this rank's main stream delivered (kept or skipped)
        self.rows_skipped = 0
        self._skip_examples: list[str] = []
        self._excluded: set[tuple[str, int]] = set()
        self._sampler: MixedTaskSampler | None = None
        self._pending_state: dict[str, Any] | None = None
        self._resample_sampler: MixedTaskSampler | None = None
        self._pending_resample: dict[str, Any] | None = None
        self.media: MediaConfig | None = self._media(family) if family is not None else None

    def _media(self, family: str) -> MediaConfig:
        h = self.hparams
        media = replace(stage_media(h.media_stage or self.mode, family), fps=h.fps, max_frames=h.max_frames)
        if h.image_pixels is not None:
            media = replace(media, image=PixelBudget(*h.image_pixels))
        if h.video_pixels is not None:
            media = replace(media, video_frame=PixelBudget(*h.video_pixels))
        return media

    def prepare_data(self) -> None:
        from datamodules.synthetic import SPLITS, generate_suite

        suite = self.hparams.synthetic_suite
        if suite is not None and not all((Path(suite) / f"{split}.json").exists() for split in SPLITS):
            generate_suite(suite, per_task=self.hparams.synthetic_per_task, seed=0)

    def connect(self, processor: Any) -> None:
        """Inject the backbone's processor (the data side never builds a model); its family sets the
        media budgets unless ``family`` was given, which must then agree."""
        family = processor_family(processor)
        if self.hparams.family is not None and family is not None and self.hparams.family != family:
            raise ValueError(
                f"data.family is {self.hparams.family} but the backbone's processor is {family}: "
                "leave data.family unset (it follows the backbone)"
            )
        self.processor = processor
        self.media = self._media(self.hparams.family or family or "qwen3_vl")

    def _load(self, manifests: list[str] | None, kind: str | None) -> list[Record]:
        """Records of the manifests; ``kind=None`` reads each manifest's kind from its first record."""
        records: list[Record] = []
        for path in manifests or []:
            records += load_records(path, kind or detect_kind(path), self.hparams.media_root)
        return records

    def setup(self, stage: str | None = None) -> None:
        kind = RECORD_KIND[self.mode]
        if "train" not in self.records:
            self.records["train"] = self._load(
                self.hparams.train_manifests, "eval" if kind == "eval" else kind
            )
            # RL validation may score evaluation records (held-out answers) as well as RL records.
            self.records["val"] = self._load(self.hparams.val_manifests, kind if kind == "sft" else None)
            self.records["test"] = self._load(self.hparams.test_manifests, "eval")
        if stage == "fit":
            self.train_batch_size  # noqa: B018  (a global batch that does not split fails here, not at the first step)
            if self.hparams.pack_tokens is not None:
                self._check_pack_budget()

    def _check_pack_budget(self) -> None:
        """Fail at set-up when a train prompt's text alone (media not yet expanded) exceeds the budget."""
        if self.mode != "sft":
            raise ValueError(f"data.pack_tokens packs SFT conversations; mode is {self.mode!r}")
        if self.processor is None:
            return  # checked once connected (the CLI connects before fit)
        budget = self.hparams.pack_tokens
        records = self.records["train"]
        lengths = prompt_lengths(self.processor, records)
        if lengths:
            longest = max(range(len(lengths)), key=lengths.__getitem__)
            if lengths[longest] > budget:
                r = records[longest]
                raise ValueError(
                    f"data.pack_tokens={budget} is smaller than the longest prompt: {r.source} record "
                    f"#{r.index} (problem_id={r.problem_id}) has {lengths[longest]} prompt tokens before "
                    "its media are expanded; raise pack_tokens"
                )

    def _collator(self, mode: Mode) -> Collator:
        if self.processor is None:
            raise RuntimeError("OneThinkerDataModule needs a processor: call connect(processor) first")
        return Collator(
            self.processor, mode, self.hparams.max_length, self.hparams.pack_tokens if mode == "sft" else None
        )

    def exclude_test(self, keys: set[tuple[str, int]]) -> int:
        """Leave out of ``test``/``predict`` the records whose (manifest stem, problem_id) is in ``keys``
        (an evaluation resuming from its predictions); returns how many records remain."""
        self._excluded = set(keys)
        return len(self._test_records())

    def _test_records(self) -> list[Record]:
        self.setup()
        return [r for r in self.records["test"] if record_key(r) not in self._excluded]

    def _dataset(self, split: str, mode: Mode) -> RecordDataset:
        self.setup()
        records = self._test_records() if split == "test" else self.records[split]
        if not self.records[split]:
            raise ValueError(f"no {split} records: set {split}_manifests")
        return RecordDataset(records, mode, self.media, self.hparams.on_bad_media)

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @property
    def train_batch_size(self) -> int:
        """Rows per train batch on this rank."""
        total = self.hparams.global_batch_size
        if total is None:
            return self.hparams.batch_size
        _, world = self._world()
        if total < world or total % world:
            raise ValueError(
                f"data.global_batch_size={total} does not split over {world} ranks: use a multiple of {world}"
            )
        return total // world

    def _new_sampler(self, seed: int, state: dict[str, Any] | None) -> MixedTaskSampler:
        self.setup()
        rank, world = self._world()
        records = self.records["train"]
        probs = sampling_probabilities(records, self.hparams.weights, self.hparams.temperature)
        sampler = MixedTaskSampler(probs, self.hparams.samples_per_epoch or len(records), seed, rank, world)
        if state:
            sampler.load_state_dict(state)
        return sampler

    def train_sampler(self) -> MixedTaskSampler:
        """The train sampler, built once, with this rank's place and any restored position."""
        if self._sampler is None:
            self._sampler = self._new_sampler(self.hparams.seed, self._pending_state)
        return self._sampler

    def resample_batches(self) -> Iterator[dict[str, Any]]:
        """An endless second stream of train batches, for online filtering to top a step up.

        It has its own seeded sampler, whose position is checkpointed with the main one.
        """
        if self._resample_sampler is None:
            self._resample_sampler = self._new_sampler(self.hparams.seed + 7919, self._pending_resample)
        sampler = self._resample_sampler
        dataset = self._dataset("train", self.mode)
        while True:
            for batch in self._loader(dataset, self.train_batch_size, self.mode, sampler):
                self.skipped.update(batch.get("skipped", {}))
                positions = [p for p in batch.get("positions", []) if p is not None]
                if positions:
                    sampler.consumed(*max(positions))
                yield batch
            sampler.set_epoch(sampler.epoch + 1)

    def _loader(self, dataset: Dataset, batch_size: int, mode: Mode, sampler: Any = None) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            collate_fn=self._collator(mode),
            persistent_workers=False,
            prefetch_factor=2 if workers else None,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train", self.mode)
        return self._loader(dataset, self.train_batch_size, self.mode, self.train_sampler())

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        if not self.records["val"]:
            return []  # no validation manifests: Lightning skips validation
        return self._loader(
            self._dataset("val", self.mode),
            self.hparams.eval_batch_size or self.hparams.batch_size,
            self.mode,
        )

    def test_dataloader(self) -> DataLoader:
        return self._loader(
            self._dataset("test", "eval"), self.hparams.eval_batch_size or self.hparams.batch_size, "eval"
        )

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Runs in the main process on each consumed batch: advance the resume point, count skips."""
        self.skipped.update(batch.get("skipped", {}))
        positions = [p for p in batch.get("positions", []) if p is not None]
        if positions and self._sampler is not None:
            self._sampler.consumed(*max(positions))
        if positions:  # a train batch
            before = self.rows_read
            self.rows_read += len(positions)
            self.rows_skipped += sum(batch.get("skipped", {}).values())
            self._skip_examples += batch.get("skip_examples", [])[: 3 - len(self._skip_examples)]
            every = self.hparams.skip_check_rows
            if self.rows_read // every > before // every:  # every rank crosses at the same batch
                self._check_skips()
        return batch

    def _check_skips(self) -> None:
        """Fail once more than ``max_skip_fraction`` of the train rows read (all ranks) were skipped."""
        read, skipped = self.rows_read, self.rows_skipped
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            counts = trainer.strategy.reduce(
                torch.tensor([read, skipped], dtype=torch.float64), reduce_op="sum"
            )
            read, skipped = (int(v) for v in counts.tolist())
        if read and skipped / read > self.hparams.max_skip_fraction:
            raise SkippedDataError(self._skip_message(read, skipped))

    def _skip_message(self, read: int, skipped: int) -> str:
        reasons = ", ".join(f"{k}: {n}" for k, n in sorted(self.skipped.items()))
        examples = "".join(f"\n  {e}" for e in self._skip_examples)
        return (
            f"{skipped} of the {read} train rows read were skipped (more than data.max_skip_fraction="
            f"{self.hparams.max_skip_fraction}); by reason: {reasons}. First ones:{examples or ' (none recorded)'}"
        )

    def teardown(self, stage: str) -> None:
        # A run shorter than one check that skipped every row trained on nothing.
        trainer = getattr(self, "trainer", None)
        single = trainer is None or trainer.world_size == 1
        if stage == "fit" and single and self.rows_read and self.rows_skipped == self.rows_read:
            raise SkippedDataError(
                self._skip_message(self.rows_read, self.rows_skipped) + "\nNothing was trained on."
            )

    def state_dict(self) -> dict[str, Any]:
        main = self._sampler.state_dict() if self._sampler is not None else dict(self._pending_state or {})
        extra = (
            self._resample_sampler.state_dict()
            if self._resample_sampler is not None
            else dict(self._pending_resample or {})
        )
        return {
            "sampler": main,
            "resample_sampler": extra,
            "skipped": dict(self.skipped),
            "rows": [self.rows_read, self.rows_skipped],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = state_dict.get("sampler") or None
        self._pending_resample = state_dict.get("resample_sampler") or None
        self.skipped = Counter(state_dict.get("skipped", {}))
        self.rows_read, self.rows_skipped = state_dict.get("rows", [0, 0])
        if self._sampler is not None and self._pending_state:
            self._sampler.load_state_dict(self._pending_state)
        if self._resample_sampler is not None and self._pending_resample:
            self._resample_sampler.load_state_dict(self._pending_resample)
