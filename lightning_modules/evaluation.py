"""`EvaluationModule`: greedy answers on evaluation manifests, benchmark metrics and reports.

``onethinker test`` runs it. Each batch is decoded greedily, segmentation answers become masks
through SAM2, and the rows are appended to ``predictions.jsonl`` at once, so an interrupted run
resumes where it stopped. At the end the rows of every rank are gathered, scored with the
torchmetrics of `lightning_modules.eval.scoring` (states synced across ranks), and written
to ``metrics.json`` and ``summary.md``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

from datamodules.media import read_frames, read_image
from lightning_modules.eval.report import (
    PredictionStore,
    decode_mask,
    encode_mask,
    row_key,
    write_metrics,
    write_summary,
)
from lightning_modules.eval.sam2_masks import MaskPredictor, parse_segmentation_prompt, predict_masks
from lightning_modules.eval.scoring import PROTOCOLS, BenchmarkScores, Row
from lightning_modules.model.backbone import VisionLanguageBackbone, decode_responses, join_sharded_call
from lightning_modules.training.sharding import ShardingSettings, configure_sharding
from rewards.parsing import extract_answer, normalize_response

log = logging.getLogger(__name__)


def ground_truth_masks(record: Any) -> np.ndarray:
    """A segmentation record's masks: [H, W] (image) or [T, H, W] over its sorted frame keys (video)."""
    seg = record.segmentation_output
    if record.data_type == "image":
        return decode_mask(seg)
    if not isinstance(seg, dict) or not seg:
        raise ValueError(
            f"{record.source} problem_id={record.problem_id}: segmentation_output must map frames to RLE"
        )
    return np.stack([decode_mask(seg[k]) for k in sorted(seg, key=int)])


class EvaluationModule(L.LightningModule):
    """Benchmark evaluation of a `VisionLanguageBackbone` (our checkpoints or a released model).

    Args:
        backbone: the model; for a released model, ``model_name_or_path: OneThink/OneThinker-8B``.
        output_dir: where predictions.jsonl, metrics.json and summary.md go. Re-running with the
            same folder skips the predictions already there.
        max_new_tokens: greedy decoding cap (the released evaluation uses 8192).
        mask_predictor: SAM2 for segmentation answers; built with its defaults
            (``facebook/sam2.1-hiera-large``) on first use when not given.
        mask_source: ``sam2``, or ``ground_truth`` to bypass SAM2 with the records' own masks
            (checks the pipeline; an upper bound, not a result).
        lenient_json: accept code fences, trailing commas and single quotes in JSON answers.
        reward_variant: QA accuracy semantics (``released`` or ``paper``).
        sharding: FSDP2 settings, applied when the Trainer's strategy is ``ModelParallelStrategy``
            (ignored on one device and under DDP). Use ``data_parallel_size`` = world size and
            ``tensor_parallel_size: 1`` there: Lightning splits the records over the
            ``data_parallel`` dimension only.
    """

    def __init__(
        self,
        backbone: VisionLanguageBackbone,
        output_dir: str = "outputs/eval",
        max_new_tokens: int = 8192,
        mask_predictor: MaskPredictor | None = None,
        mask_source: Literal["sam2", "ground_truth"] = "sam2",
        lenient_json: bool = False,
        reward_variant: Literal["released", "paper"] = "released",
        sharding: ShardingSettings | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.output_dir = Path(output_dir)
        self.max_new_tokens = max_new_tokens
        self.mask_predictor = mask_predictor
        self.mask_source = mask_source
        self.lenient_json = lenient_json
        self.reward_variant = reward_variant
        self.sharding = sharding or ShardingSettings()
        self._records: dict[tuple[str, int], Any] = {}
        self._new_rows: list[dict[str, Any]] = []
        self._store: PredictionStore | None = None
        self._predict_seconds = 0.0
        self.results: dict[str, Any] | None = None

    def configure_model(self) -> None:
        mesh = self.device_mesh
        if mesh is not None and mesh.ndim == 2 and mesh.shape[1] > 1:
            raise ValueError(
                f"evaluation under ModelParallelStrategy needs tensor_parallel_size=1 (got mesh {tuple(mesh.shape)}): "
                "Lightning's distributed sampler splits the records over data_parallel_size ranks only, so set "
                "data_parallel_size to the world size"
            )
        configure_sharding(self, self.backbone, self.sharding)

    # -- set-up: skip what an earlier run already predicted -------------------------------------
    def setup(self, stage: str) -> None:
        if stage not in ("test", "predict"):
            return
        self._store = PredictionStore(self.output_dir, self.global_rank, self.trainer.world_size)
        datamodule = self.trainer.datamodule
        datamodule.setup(stage)
        from datamodules.records import record_key

        self._records = {record_key(r): r for r in datamodule.records["test"]}
        done = self._store.done() & set(self._records)
        remaining = datamodule.exclude_test(done)
        if done:
            log.info(
                "evaluation: %d predictions found in %s; %d records left",
                len(done),
                self.output_dir,
                remaining,
            )

    def _masks(self) -> MaskPredictor:
        if self.mask_predictor is None:
            from lightning_modules.eval.sam2_masks import Sam2MaskPredictor

            self.mask_predictor = Sam2MaskPredictor(device=str(self.device))
        return self.mask_predictor

    # -- one batch --------------------------------------------------------------------------------
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if not batch.get("meta"):  # every row was skipped
            join_sharded_call(self.backbone, self.device, max_new_tokens=self.max_new_tokens, do_sample=False)
            return
        started = time.perf_counter()
        out = self.backbone.generate(batch, max_new_tokens=self.max_new_tokens, do_sample=False)
        texts = decode_responses(self.backbone.tokenizer, out["response_ids"], out["response_mask"])
        rows = [self._row(meta, text) for meta, text in zip(batch["meta"], texts)]
        self._store.append(rows)
        self._new_rows += rows
        self._predict_seconds += time.perf_counter() - started

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.test_step(batch, batch_idx)

    def _row(self, meta: dict[str, Any], response: str) -> dict[str, Any]:
        key = (Path(meta["source"]).stem, int(meta["problem_id"]))
        record = self._records[key]
        row = {
            "benchmark": key[0],
            "problem_id": key[1],
            "index": meta["index"],
            "problem_type": meta["problem_type"],
            "data_type": meta["data_type"],
            "data_source": meta["data_source"],
            "response": response,
            "prediction": extract_answer(normalize_response(response)),
            "solution": meta["answer"],
            "media_size": meta["media_size"],
            "fps": meta["fps"],
        }
        if meta["problem_type"] == "segmentation":
            row["mask"], row["mask_ok"] = self._segment(record, response)
        return row

    def _segment(self, record: Any, response: str) -> tuple[Any, bool]:
        """Masks (RLE; a frame-keyed map for video) from the answer through SAM2, or the ground truth."""
        if self.mask_source == "ground_truth":
            masks, ok = ground_truth_masks(record), True
        else:
            path = record.media[0]
            if record.data_type == "image":
                media, fps = read_image(path), None
            else:
                media, fps = read_frames(path)
            height, width = media.shape[-3:-1]
            prompt = parse_segmentation_prompt(
                response, width, height, record.data_type, lenient=self.lenient_json
            )
            masks, ok = predict_masks(self._masks(), media, prompt, record.data_type, record.fps or fps)
        if record.data_type == "image":
            return encode_mask(masks), ok
        return {str(i): encode_mask(m) for i, m in enumerate(masks)}, ok

    # -- the end: gather, score, report ------------------------------------------------------------
    def on_test_epoch_end(self) -> None:
        self._finish()

    def on_predict_epoch_end(self) -> None:
        self._finish()

    def teardown(self, stage: str) -> None:
        # With nothing left to predict Lightning skips the loop and its hooks; teardown still runs
        # (and never after a crash), so the reports are rewritten from predictions.jsonl.
        if stage in ("test", "predict") and self.results is None and self._store is not None:
            self._finish()

    def _gather(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return rows
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, rows)
        return [r for part in parts for r in part]

    def _broadcast(self, rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return rows or []
        box = [rows]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _finish(self) -> None:
        gathered = self._gather(self._new_rows)
        self.trainer.strategy.barrier()
        rows = self._store.merge(gathered) if self.global_rank == 0 else None
        rows = self._broadcast(rows)
        rows = [r for r in rows if (r["benchmark"], r["problem_id"]) in self._records]
        metrics = self.score(rows)
        seconds = torch.tensor([self._predict_seconds], dtype=torch.float64, device=self.device)
        count = len({row_key(r) for r in gathered})  # a padded sampler repeats rows
        seconds = float(self.trainer.strategy.reduce(seconds, reduce_op="max"))
        metrics["run"] = {
            "predicted_now": count,
            "seconds": round(seconds, 3),
            "samples_per_second": round(count / seconds, 3) if seconds > 0 else None,
        }
        if self.global_rank == 0:
            write_metrics(self.output_dir, metrics)
            write_summary(self.output_dir, metrics)
        self.results = metrics
        self._log_figures(metrics)
        self._new_rows = []

    def score(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """metrics.json's content: per benchmark and task, figures and protocols."""
        rank, world = self.global_rank, self.trainer.world_size
        by_bench: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_bench[r["benchmark"]].append(r)
        out: dict[str, Any] = {"benchmarks": {}}
        for bench in sorted(by_bench):
            scores = BenchmarkScores(self.lenient_json, self.reward_variant)
            items = by_bench[bench]
            for i, r in enumerate(items):
                mine = i % world == rank  # this rank's share of the updates; every rank declares every task
                row = self._scoring_row(r, with_masks=mine)
                scores.declare(row)
                if mine:
                    try:
                        scores.update(row)
                    except ValueError as err:  # a malformed ground truth: name the record
                        source = self._records[row_key(r)].source
                        raise ValueError(
                            f"{source}: problem_id={r['problem_id']}: field 'solution': {err}"
                        ) from err
            for m in scores.all_metrics():
                m.to(self.device)
            # Rounded so that sums taken in another order (other world sizes) write the same file.
            tasks = {t: {k: round(v, 10) for k, v in figs.items()} for t, figs in scores.compute().items()}
            out["benchmarks"][bench] = {
                "samples": len(items),
                "tasks": tasks,
                "protocols": {t: _protocol(t, figures) for t, figures in tasks.items()},
            }
        return out

    def _scoring_row(self, row: dict[str, Any], with_masks: bool) -> Row:
        record = self._records[(row["benchmark"], row["problem_id"])]
        size = row.get("media_size")
        scoring = Row(
            problem_type=row["problem_type"],
            data_type=row["data_type"],
            response=row["response"],
            solution=row["solution"],
            media_size=tuple(size) if size else record.resolution,
            fps=row.get("fps"),
            frame_boxes=getattr(record, "frame_boxes", None),
            frame_absent=getattr(record, "frame_absent", None),
            mask_ok=row.get("mask_ok", True),
        )
        if with_masks and row["problem_type"] == "segmentation":
            gt = ground_truth_masks(record)
            if row["data_type"] == "image":
                scoring.pred_masks, scoring.gt_masks = decode_mask(row["mask"]), gt
            else:
                keys = sorted(record.segmentation_output, key=int)
                pred = {int(k): decode_mask(v) for k, v in row["mask"].items()}
                stacked = np.zeros(gt.shape, dtype=bool)
                for i, k in enumerate(keys):
                    if int(k) in pred and pred[int(k)].shape == gt.shape[1:]:
                        stacked[i] = pred[int(k)]
                scoring.pred_masks, scoring.gt_masks = stacked, gt
        return scoring

    def _log_figures(self, metrics: dict[str, Any]) -> None:
        """Every figure to the loggers as ``test/<benchmark>/<task>/<figure>`` (W&B included)."""
        if self.trainer.logger is None or self.global_rank != 0:
            return
        flat = {
            f"test/{bench}/{task}/{k}": v
            for bench, entry in metrics["benchmarks"].items()
            for task, figures in entry["tasks"].items()
            for k, v in figures.items()
        }
        if metrics["run"]["samples_per_second"] is not None:
            flat["test/samples_per_second"] = metrics["run"]["samples_per_second"]
        self.trainer.logger.log_metrics(flat, step=0)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["backbone_init"] = self.backbone.init_args


def _protocol(task: str, figures: dict[str, Any]) -> str:
    if task.startswith("tracking"):
        text = PROTOCOLS["tracking/onethinker"]
        return text + (
            "; got10k/*: " + PROTOCOLS["tracking/got10k"]
            if any(k.startswith("got10k/") for k in figures)
            else ""
        )
    if task.startswith("segmentation/"):
        return PROTOCOLS[task]
    return PROTOCOLS.get(task, PROTOCOLS["qa"])
