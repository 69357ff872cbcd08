"""`EvaluationModule` sharded with FSDP2: two torchrun ranks (``ModelParallelStrategy``, mesh (2, 1))
answer the synthetic evaluation records greedily with the tiny model; the answers equal one
unsharded process's. Rows go one at a time (no padding), so the two runs compute the same
float32 logits and greedy decoding picks the same tokens. The tiny model's weights are redrawn
(normal, std 0.1, one seed) because its default initialisation answers only newlines.

Then both ranks decode the same record with different ``max_new_tokens`` (3 and 9): rank 0 is
done first and keeps joining the all-gathers only through ``synced_gpus`` (else rank 1 hangs). Last,
rank 0 gets a batch whose every row was skipped: its ``test_step`` decodes a placeholder row so that
rank 1's sharded ``generate`` can finish."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # fmt: skip
TIMEOUT = 400

SCRIPT = """
import json, sys
import torch
import lightning as L
from lightning.pytorch.strategies import ModelParallelStrategy
from datamodules.datamodule import OneThinkerDataModule
from lightning_modules.model.backbone import VisionLanguageBackbone
from lightning_modules.evaluation import EvaluationModule
from lightning_modules.training.sharding import ShardingSettings, is_sharded

manifest, out, devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
backbone = VisionLanguageBackbone("tiny", family="qwen3_vl", seed=0, tiny_vocab="synthetic", attn_implementation="sdpa")
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for p in backbone.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.1)
dm = OneThinkerDataModule(mode="eval", test_manifests=[manifest], eval_batch_size=1, num_workers=0)
dm.connect(backbone.processor)
module = EvaluationModule(backbone, output_dir=out, max_new_tokens=12, mask_source="ground_truth",
                          sharding=ShardingSettings(param_dtype="float32"))
strategy = ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1) if devices > 1 else "auto"
trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False,
                    enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
trainer.test(module, datamodule=dm, verbose=False)
assert is_sharded(module.backbone) == (devices > 1)

rank = trainer.global_rank
batch = next(iter(dm.test_dataloader()))  # the same first record on every rank
new = 3 + 6 * rank if devices > 1 else 9
ids = module.backbone.generate(batch, max_new_tokens=new, do_sample=False)["response_ids"][0].tolist()
with open(f"{out}/early_stop.rank{rank}.json", "w") as f:
    json.dump(ids, f)
if devices > 1:  # rank 0's batch had every row skipped: its test_step joins rank 1's sharded generate
    if rank == 0:
        module.test_step({"meta": [], "skipped": {"bad_media": 1}}, 0)
    else:
        module.backbone.generate(batch, max_new_tokens=12, do_sample=False)
    open(f"{out}/joined.rank{rank}", "w").close()
"""


def answers(out: Path) -> dict[tuple[str, int], str]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return {(r["benchmark"], r["problem_id"]): r["response"] for r in rows}


@pytest.mark.slow
def test_sharded_evaluation_answers_equal_one_process(tmp_path: Path):
    from datamodules.synthetic import generate_suite

    manifest = generate_suite(tmp_path / "suite", per_task=1, seed=0)["eval"]
    script = tmp_path / "run_eval.py"
    script.write_text(SCRIPT)
    runs = {}
    for devices in (1, 2):
        out = tmp_path / f"out{devices}"
        launcher = (
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
            if devices > 1
            else [sys.executable]
        )
        try:
            proc = subprocess.run([*launcher, str(script), str(manifest), str(out), str(devices)],
                                  cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail(f"evaluation on {devices} processes did not finish within {TIMEOUT} s (hang?)")
        assert proc.returncode == 0, proc.stderr[-4000:]
        runs[devices] = answers(out)
        assert devices == 1 or "MEMBER: 2/2" in proc.stdout + proc.stderr  # two ranks really ran
    assert len(runs[1]) == len(json.loads(Path(manifest).read_text())) == len(runs[2])
    assert runs[2] == runs[1]
    assert len(set(runs[1].values())) > 1  # not one degenerate answer

    full = json.loads((tmp_path / "out1" / "early_stop.rank0.json").read_text())
    short = json.loads((tmp_path / "out2" / "early_stop.rank0.json").read_text())
    long = json.loads((tmp_path / "out2" / "early_stop.rank1.json").read_text())
    assert len(full) == 9 and short == full[:3] and long == full
    assert (tmp_path / "out2" / "joined.rank0").exists() and (tmp_path / "out2" / "joined.rank1").exists()
