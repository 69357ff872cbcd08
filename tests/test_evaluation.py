"""EvaluationModule end to end on the synthetic evaluation manifest, with an oracle backbone:
perfect answers score perfectly, shifted answers score the hand-computed values, an interrupted run
resumes to the same metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from datamodules.datamodule import OneThinkerDataModule
from datamodules.synthetic import generate_suite
from lightning_modules.evaluation import EvaluationModule
from rewards.parsing import strip_ground_truth
from tests.eval_oracle import OracleBackbone
from tests.numerics import assert_same_report

BOX_SHIFT, TIME_SHIFT = 20.0, 0.5
PERFECT_KEYS = (
    "accuracy",
    "mIoU",
    "R@",
    "Acc@",
    "AO",
    "SR@",
    "cIoU",
    "gIoU",
    "J",
    "F",
    "J&F",
    "tIoU/",
    "sIoU/",
)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("suite")
    generate_suite(out, per_task=2, seed=3)
    return out


@pytest.fixture(scope="module")
def synthetic_processor():
    from lightning_modules.model.processing import build_processor, synthetic_tokenizer

    return build_processor("qwen3_vl", synthetic_tokenizer())


def run_eval(suite: Path, out: Path, backbone: OracleBackbone, processor, **module_kwargs) -> dict:
    return run_eval_file(suite / "eval.json", out, backbone, processor, **module_kwargs)


def run_eval_file(manifest: Path, out: Path, backbone: OracleBackbone, processor, **module_kwargs) -> dict:
    dm = OneThinkerDataModule(mode="eval", test_manifests=[str(manifest)], eval_batch_size=4)
    dm.connect(processor)
    module = EvaluationModule(
        backbone, output_dir=str(out), max_new_tokens=8, mask_source="ground_truth", **module_kwargs
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.test(module, datamodule=dm, verbose=False)
    return json.loads((out / "metrics.json").read_text())


def figures(metrics: dict) -> dict[str, float]:
    return {
        f"{task}:{k}": v
        for entry in metrics["benchmarks"].values()
        for task, figs in entry["tasks"].items()
        for k, v in figs.items()
        if k not in ("samples", "unparseable")
    }


def test_oracle_scores_perfectly(suite, synthetic_processor, tmp_path):
    metrics = run_eval(suite, tmp_path, OracleBackbone(synthetic_processor), synthetic_processor)
    tasks = metrics["benchmarks"]["eval"]["tasks"]
    assert len(tasks) == 16  # 6 QA types x 2 modalities, minus 2 absent, + 6 structured tasks
    assert "got10k/AO" in tasks["tracking"]  # the synthetic tracking records carry per-frame boxes
    assert {"cIoU", "gIoU"} <= set(tasks["segmentation/image"]) and "J&F" in tasks["segmentation/video"]
    for key, value in figures(metrics).items():
        assert value == pytest.approx(1.0, abs=1e-9), key
    assert all(t["unparseable"] == 0 for t in tasks.values())
    assert metrics["benchmarks"]["eval"]["samples"] == len(json.loads((suite / "eval.json").read_text()))
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["benchmarks"]["eval"]["samples"]
    assert "| eval | tracking |" in (tmp_path / "summary.md").read_text()


def _span_iou(gt: list[float]) -> float:
    length = gt[1] - gt[0]
    return max(0.0, length - TIME_SHIFT) / (length + TIME_SHIFT)


def _shift_iou(box: list[float]) -> float:
    width = box[2] - box[0]
    return max(0.0, width - BOX_SHIFT) / (width + BOX_SHIFT)


def expected_offsets(records: list[dict]) -> dict[str, float]:
    """Closed forms: a span moved by d keeps L - d of L over a hull of L + d; a box moved right by d
    keeps w - d of w over w + d. GOT-10k frames use the toolkit's own rect_iou on clipped boxes."""
    from got10k.utils.metrics import rect_iou

    by_type: dict[str, list] = {}
    for r in records:
        if r["problem_type"] not in (
            "temporal grounding",
            "spatial grounding",
            "spatial-temporal grounding",
            "tracking",
        ):
            continue
        by_type.setdefault(r["problem_type"], []).append((r, json.loads(strip_ground_truth(r["solution"]))))
    tg = [_span_iou(gt["time"]) for _, gt in by_type["temporal grounding"]]
    sg = [_shift_iou(gt["boxes"]) for _, gt in by_type["spatial grounding"]]
    st_t = [_span_iou(gt["time"]) for _, gt in by_type["spatial-temporal grounding"]]
    st_s = [
        np.mean([_shift_iou(b) for b in gt["boxes"].values()])
        for _, gt in by_type["spatial-temporal grounding"]
    ]
    videos = [np.mean([_shift_iou(b) for b in gt["boxes"].values()]) for _, gt in by_type["tracking"]]
    frame_ious = []
    for r, _ in by_type["tracking"]:
        w, h = r["resolution"]["width"], r["resolution"]["height"]
        gt_frames = np.array(r["frame_boxes"], dtype=np.float64)
        t = np.arange(len(gt_frames)) / r["fps"]
        pred = gt_frames.copy()
        pred[:, 0] += BOX_SHIFT * w / 1000 * np.minimum(t, 1.0)  # the shift ramps in over the first second
        frame_ious += list(rect_iou(pred[1:], gt_frames[1:], bound=(w, h)))
    return {
        "temporal grounding:tIoU/mIoU": np.mean(tg),
        "temporal grounding:tIoU/R@0.5": np.mean([v >= 0.5 for v in tg]),
        "spatial grounding:mIoU": np.mean(sg),
        "spatial grounding:Acc@0.5": np.mean([v >= 0.5 for v in sg]),
        "spatial-temporal grounding:tIoU/mIoU": np.mean(st_t),
        "spatial-temporal grounding:sIoU/mIoU": np.mean(st_s),
        "spatial-temporal grounding:sIoU/R@0.5": np.mean([v >= 0.5 for v in st_s]),
        "tracking:AO": np.mean(videos),
        "tracking:R@0.7": np.mean([v >= 0.7 for v in videos]),
        "tracking:got10k/AO": np.mean(frame_ious),
        "tracking:got10k/SR@0.75": np.mean([v > 0.75 for v in frame_ious]),
    }


def test_shifted_oracle_gives_hand_computed_values(suite, synthetic_processor, tmp_path):
    backbone = OracleBackbone(synthetic_processor, box_shift=BOX_SHIFT, time_shift=TIME_SHIFT)
    got = figures(run_eval(suite, tmp_path, backbone, synthetic_processor))
    expected = expected_offsets(json.loads((suite / "eval.json").read_text()))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    assert 0.2 < got["spatial grounding:mIoU"] < 0.95  # the shift is felt, not absorbed
    assert got["multiple choice/image:accuracy"] == pytest.approx(1.0)  # QA answers are not shifted


def whole_and_stopped_runs(suite, processor, tmp_path, name: str) -> dict:
    """An uninterrupted run's report; and a run under ``tmp_path / name`` stopped after 3 batches."""
    reference = run_eval(suite, tmp_path / "whole", OracleBackbone(processor, box_shift=BOX_SHIFT), processor)
    stopped = OracleBackbone(processor, box_shift=BOX_SHIFT, fail_after=3)
    with pytest.raises(RuntimeError, match="on purpose"):
        run_eval(suite, tmp_path / name, stopped, processor)
    return reference


def test_interrupted_run_resumes_to_the_same_metrics(suite, synthetic_processor, tmp_path):
    reference = whole_and_stopped_runs(suite, synthetic_processor, tmp_path, "resumed")
    done = (tmp_path / "resumed" / "predictions.jsonl").read_text().splitlines()
    assert len(done) == 12  # three batches of four were written before the stop
    again = OracleBackbone(synthetic_processor, box_shift=BOX_SHIFT)
    resumed = run_eval(suite, tmp_path / "resumed", again, synthetic_processor)
    total = reference["benchmarks"]["eval"]["samples"]
    assert again.calls == -(-(total - 12) // 4)  # only the rest was predicted
    assert resumed["benchmarks"] == reference["benchmarks"]
    assert resumed["run"]["predicted_now"] == total - 12
    assert len((tmp_path / "resumed" / "predictions.jsonl").read_text().splitlines()) == total
    idle = OracleBackbone(synthetic_processor, box_shift=BOX_SHIFT)
    rerun = run_eval(suite, tmp_path / "resumed", idle, synthetic_processor)  # everything is done already
    assert idle.calls == 0 and rerun["run"]["predicted_now"] == 0
    assert rerun["benchmarks"] == reference["benchmarks"]


def test_a_row_torn_mid_write_is_redone(suite, synthetic_processor, tmp_path, caplog):
    """A run killed while writing a row leaves a fragment; the re-run cuts it off (with a warning),
    predicts that record again, and its metrics.json equals an uninterrupted run's."""
    reference = whole_and_stopped_runs(suite, synthetic_processor, tmp_path, "torn")
    path = tmp_path / "torn" / "predictions.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # the last row, cut mid-write
    again = OracleBackbone(synthetic_processor, box_shift=BOX_SHIFT)
    with caplog.at_level("WARNING"):
        resumed = run_eval(suite, tmp_path / "torn", again, synthetic_processor)
    assert "dropped an unfinished last row" in caplog.text
    total = reference["benchmarks"]["eval"]["samples"]
    assert resumed["run"]["predicted_now"] == total - 11  # the torn record is predicted again
    assert resumed["benchmarks"] == reference["benchmarks"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == total and len({(r["benchmark"], r["problem_id"]) for r in rows}) == total


DDP_SCRIPT = """
import json, sys
import lightning as L
from datamodules.datamodule import OneThinkerDataModule
from lightning_modules.evaluation import EvaluationModule
from lightning_modules.model.processing import build_processor, synthetic_tokenizer
from lightning_modules.eval.sam2_masks import Sam2MaskPredictor
from tests.eval_oracle import OracleBackbone

suite, out, devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
processor = build_processor("qwen3_vl", synthetic_tokenizer())
dm = OneThinkerDataModule(mode="eval", test_manifests=[suite + "/eval.json"], eval_batch_size=3)
dm.connect(processor)
module = EvaluationModule(OracleBackbone(processor, box_shift=20.0, time_shift=0.5), output_dir=out,
                          mask_predictor=Sam2MaskPredictor("tiny", device="cpu"), mask_source="sam2")
trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                    enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
trainer.test(module, datamodule=dm, verbose=False)
"""


def test_two_processes_write_the_same_metrics_as_one(suite, tmp_path):
    """DDP over gloo: records split across ranks, predictions and metric states gathered; metrics.json
    must equal a one-process run's."""
    import os
    import subprocess
    import sys

    script = tmp_path / "run_eval.py"
    script.write_text(DDP_SCRIPT)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"out{devices}"
        proc = subprocess.run(
            [sys.executable, str(script), str(suite), str(out), str(devices)],
            cwd=root, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert devices == 1 or "MEMBER: 2/2" in proc.stdout + proc.stderr  # two ranks really ran
        results[devices] = json.loads((out / "metrics.json").read_text())
        assert not list(out.glob("predictions.rank*"))
    assert_same_report(results[2]["benchmarks"], results[1]["benchmarks"])
    tasks = results[2]["benchmarks"]["eval"]["tasks"]
    assert 0 < tasks["spatial grounding"]["mIoU"] < 1  # the shifted oracle: non-trivial figures
    assert "J&F" in tasks["segmentation/video"]  # masks came from the tiny SAM2 on each rank
    rows = (tmp_path / "out2" / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == results[1]["benchmarks"]["eval"]["samples"]


def test_malformed_solution_names_file_record_and_field(suite, synthetic_processor, tmp_path):
    records = json.loads((suite / "eval.json").read_text())
    bad = next(r for r in records if r["problem_type"] == "temporal grounding")
    bad["solution"] = '<answer>{"time": "soon"}</answer>'
    broken = tmp_path / "eval_broken.json"
    broken.write_text(json.dumps([{**r, "path": str(suite / r["path"])} for r in records]))
    with pytest.raises(
        ValueError, match=rf"eval_broken.json: problem_id={bad['problem_id']}: field 'solution'"
    ):
        run_eval_file(broken, tmp_path / "out", OracleBackbone(synthetic_processor), synthetic_processor)
