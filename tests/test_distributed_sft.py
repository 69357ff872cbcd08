"""SFT sharded with FSDP2 (Lightning's ``ModelParallelStrategy``) on CPU with gloo, several processes
launched by torchrun: the same losses as one process on the global batch, sharded checkpoints that
``onethinker export`` turns into a Hugging Face folder, and a clear error for a wrong mesh.

Each launch has a hard timeout, so a hang fails the test instead of stalling CI.

Tolerance: the sharded and the one-process runs compute the same float32 sums in a different order
(per-rank partial sums, then a reduce-scatter / all-reduce; rows padded to a different length), so
they agree to rounding, not bit for bit: measured differences are below 1e-6 on losses near 6.9 and
on log-probabilities. We allow 1e-5 (absolute and relative); a missing or doubled gradient
reduction moves the losses of steps 2 and 3 by more than 1e-3 (the losses fall by ~0.13 over the
three steps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_modules.training.sharding import (
    data_parallel_mesh,
    hf_gradient_checkpointing,
    shard_backbone,
    total_grad_norm,
    transformer_blocks,
)
from tests.dist_sft_worker import directory_digest

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "dist_sft_worker.py"
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
ENV = {
    **os.environ,
    "WANDB_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": str(ROOT),
    "OMP_NUM_THREADS": "1",
}


def launch(nproc: int, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    """The worker under ``torchrun --standalone`` (``nproc`` > 0) or as one plain process (0)."""
    runner = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        if nproc
        else [sys.executable]
    )
    try:
        return subprocess.run(
            [*runner, str(WORKER), *args], env=ENV, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as hang:  # subprocess.run killed the launcher; fail, do not wait
        pytest.fail(
            f"{nproc} processes did not finish within {timeout} s (hang?)\n{(hang.stderr or b'')[-3000:]!r}"
        )


def run_worker(out: Path, manifest: Path, nproc: int, extra: list[str], timeout: int = 400) -> dict:
    result = launch(nproc, ["--manifest", str(manifest), "--out", str(out), *extra], timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return {**json.loads((out / "losses.json").read_text()), "logprobs": torch.load(out / "logprobs.pt")}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datamodules.synthetic import generate_suite

    return generate_suite(tmp_path_factory.mktemp("suite"), per_task=1, seed=0)["sft"]


@pytest.fixture(scope="module")
def reference(manifest: Path, tmp_path_factory: pytest.TempPathFactory):
    """One process, no strategy, on the whole global batch; one run per family."""
    runs: dict[str, dict] = {}

    def get(family: str) -> dict:
        if family not in runs:
            runs[family] = run_worker(
                tmp_path_factory.mktemp(f"single_{family}"), manifest, 0, ["--family", family]
            )
        return runs[family]

    return get


def assert_same_run(got: dict, want: dict) -> None:
    assert len(got["losses"]) == len(want["losses"]) == 3
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(want["losses"]), **TOLERANCE)
    torch.testing.assert_close(got["logprobs"], want["logprobs"], **TOLERANCE)
    assert want["losses"][0] - want["losses"][2] > 0.05  # the updates change the later losses


# --------------------------------------------------------------------------- no processes


class FakeMesh:
    """Shape and names of a DeviceMesh; slicing returns the named 1-D dimension."""

    def __init__(
        self, shape: tuple[int, ...], names: tuple[str, ...] | None = ("data_parallel", "tensor_parallel")
    ):
        self.shape, self.ndim, self.mesh_dim_names = shape, len(shape), names

    def __getitem__(self, name: str) -> FakeMesh:
        return FakeMesh((self.shape[self.mesh_dim_names.index(name)],), (name,))


@pytest.mark.parametrize(
    ("shape", "want"),
    [
        ((1, 4), ("tensor_parallel",)),
        ((4, 1), ("data_parallel",)),
        ((2, 2), ("data_parallel", "tensor_parallel")),
    ],
)
def test_mesh_size_one_dimensions_are_dropped(shape, want):
    assert data_parallel_mesh(FakeMesh(shape)).mesh_dim_names == want


def test_swap_in_replaces_a_file_a_folder_or_nothing(tmp_path: Path):
    from lightning_modules.training.atomic_checkpoint import partial_path, swap_in

    for previous in ("file", "folder", None):
        target = tmp_path / f"{previous}.ckpt"
        if previous == "file":
            target.write_text("old")
        elif previous == "folder":
            (target / "shard").mkdir(parents=True)
        partial = partial_path(target)
        partial.mkdir()
        (partial / "new.distcp").write_text("new")
        swap_in(partial, target)
        assert sorted(p.name for p in target.iterdir()) == ["new.distcp"]
        assert not partial.exists() and not target.with_name(f".{target.name}.old").exists()


def test_three_dimensional_mesh_is_refused():
    with pytest.raises(ValueError, match="1-D .* or 2-D"):
        data_parallel_mesh(FakeMesh((2, 2, 2), ("a", "b", "c")))


@pytest.mark.parametrize(
    ("family", "layer", "block"),
    [
        ("qwen3_vl", "Qwen3VLTextDecoderLayer", "Qwen3VLVisionBlock"),
        ("qwen2_5_vl", "Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"),
    ],
)
def test_units_are_the_decoder_layers_and_vision_blocks(family: str, layer: str, block: str):
    from lightning_modules.model.backbone import LoraSettings, VisionLanguageBackbone

    for lora in (None, LoraSettings(r=2)):
        backbone = VisionLanguageBackbone(
            "tiny", family=family, tiny_layers=3, tiny_vocab="synthetic", lora=lora
        )
        layers, blocks = transformer_blocks(backbone)
        assert [type(m).__name__ for m in layers] == [layer] * 3
        assert [type(m).__name__ for m in blocks] == [block] * 2


def test_activation_checkpointing_refuses_the_backbones_gradient_checkpointing():
    """Both recompute each layer: sharding refuses the pair before it touches the mesh (the check reads
    the layers' flags, which transformers 5.20 and 5.25 share; the model's property was renamed)."""
    from lightning_modules.model.backbone import VisionLanguageBackbone

    plain = VisionLanguageBackbone("tiny", family="qwen2_5_vl", tiny_layers=2, tiny_vocab="synthetic")
    ckpt = VisionLanguageBackbone(
        "tiny", family="qwen2_5_vl", tiny_layers=2, tiny_vocab="synthetic", gradient_checkpointing=True
    )
    assert not hf_gradient_checkpointing(plain)
    assert hf_gradient_checkpointing(ckpt)
    with pytest.raises(ValueError, match="set only one"):
        shard_backbone(ckpt, FakeMesh((2,), ("data_parallel",)), activation_checkpointing=True)


def test_total_grad_norm_by_hand():
    module = torch.nn.Sequential(
        torch.nn.Linear(2, 1, bias=False), torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1)
    )
    module[0].weight.grad = torch.tensor([[3.0, 4.0]])
    module[1].weight.grad = torch.tensor([[12.0]])  # module[2] has no gradient: left out
    assert float(total_grad_norm(module)) == pytest.approx(13.0)  # sqrt(9 + 16 + 144)
    assert total_grad_norm(torch.nn.Linear(1, 1)) is None


# --------------------------------------------------------------------------- several processes


@pytest.mark.slow
def test_fsdp_two_processes_equal_one_process(manifest: Path, reference, tmp_path: Path):
    """Qwen2.5-VL, 1-D mesh of 2, activation checkpointing on: the losses and final log-probs of one process."""
    got = run_worker(
        tmp_path,
        manifest,
        2,
        ["--family", "qwen2_5_vl", "--replicate", "1", "--shard", "2", "--activation-checkpointing"],
    )
    assert got["sharded"] and got["mesh"] == [1, 2] and got["world_size"] == 2
    assert_same_run(got, reference("qwen2_5_vl"))


@pytest.mark.slow
def test_packed_fsdp_two_processes_equal_one_padded_process(manifest: Path, reference, tmp_path: Path):
    """Each rank packs its rows into one row (no padding between them): the losses and final
    log-probs of one process on the padded global batch, so packing keeps the global token mean."""
    got = run_worker(tmp_path, manifest, 2, ["--replicate", "1", "--shard", "2", "--pack-tokens", "4096"])
    assert got["packed_rows"] == [1, 1, 1]
    assert_same_run(got, reference("qwen3_vl"))


@pytest.mark.slow
def test_bf16_compute_stays_close_to_float32(manifest: Path, reference, tmp_path: Path):
    """The default policy (bf16 parameters in compute, fp32 gradient reduction) really computes in
    bf16: close to the float32 run (measured: losses within 4e-4, log-probabilities within 6e-3)
    but not equal to it."""
    got = run_worker(tmp_path, manifest, 2, ["--replicate", "1", "--shard", "2", "--param-dtype", "bfloat16"])
    want = reference("qwen3_vl")
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(want["losses"]), atol=5e-3, rtol=0)
    torch.testing.assert_close(got["logprobs"], want["logprobs"], atol=5e-2, rtol=0)
    assert (got["logprobs"] - want["logprobs"]).abs().max() > 1e-4  # not float32


@pytest.fixture(scope="module")
def hsdp_run(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """Qwen3-VL, four processes on a 2x2 mesh (replicate 2, shard 2), a sharded checkpoint at the end."""
    root = tmp_path_factory.mktemp("hsdp")
    run = run_worker(
        root / "run",
        manifest,
        4,
        ["--replicate", "2", "--shard", "2", "--checkpoint-dir", str(root / "ckpt")],
    )
    return run, root / "ckpt" / "last.ckpt"


@pytest.mark.slow
def test_hsdp_four_processes_equal_one_process(hsdp_run, reference):
    got, _ = hsdp_run
    assert got["sharded"] and got["mesh"] == [2, 2] and got["world_size"] == 4
    assert_same_run(got, reference("qwen3_vl"))


@pytest.mark.slow
def test_sharded_checkpoint_exports_to_the_trained_model(hsdp_run, manifest: Path, tmp_path: Path):
    from experiments.export import export_checkpoint
    from lightning_modules.model.backbone import VisionLanguageBackbone
    from tests.dist_sft_worker import global_batches

    got, ckpt = hsdp_run
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 4 and (ckpt / "meta.pt").is_file()
    out = export_checkpoint(ckpt, tmp_path / "hf")
    exported = VisionLanguageBackbone(str(out), attn_implementation="sdpa").eval()
    fresh = VisionLanguageBackbone("tiny", seed=0, tiny_vocab="synthetic", attn_implementation="sdpa").eval()
    probe = global_batches(str(manifest), exported, 1, 4, 0, 1)[0]
    target = probe["labels"] != -100
    with torch.no_grad():
        logprobs, untrained = exported.token_logprobs(probe, target), fresh.token_logprobs(probe, target)
    # The log-probabilities the trained, sharded model computed at the end of the run.
    torch.testing.assert_close(logprobs, got["logprobs"], **TOLERANCE)
    assert (untrained - got["logprobs"]).abs().max() > 0.1  # training moved the weights


@pytest.mark.slow
def test_sharded_resume_continues_exactly(manifest: Path, tmp_path: Path):
    """Two FSDP ranks, 4 steps, a sharded checkpoint (a DCP folder) at step 2. A run from another
    initialisation, resumed from it, gives the uninterrupted run's losses at steps 3 and 4 and its
    final log-probabilities (measured: bit for bit)."""
    mesh = ["--replicate", "1", "--shard", "2", "--steps", "4"]
    full = run_worker(
        tmp_path / "full",
        manifest,
        2,
        [*mesh, "--checkpoint-dir", str(tmp_path / "ckpt"), "--checkpoint-every", "2"],
    )
    ckpt = tmp_path / "ckpt" / "step=2.ckpt"
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2
    resumed = run_worker(tmp_path / "resumed", manifest, 2, [*mesh, "--seed", "1", "--resume", str(ckpt)])
    assert len(full["losses"]) == 4 and len(resumed["losses"]) == 2
    torch.testing.assert_close(torch.tensor(resumed["losses"]), torch.tensor(full["losses"][2:]), **TOLERANCE)
    torch.testing.assert_close(resumed["logprobs"], full["logprobs"], **TOLERANCE)
    assert abs(full["losses"][3] - full["losses"][1]) > 0.05  # the steps differ


@pytest.mark.slow
@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "lightning"])
def test_failed_sharded_save_keeps_the_previous_checkpoint(manifest: Path, tmp_path: Path, atomic: bool):
    """``last.ckpt`` saved at step 2, then rank 1's shard writes fail (a full disk) while it is saved
    again at step 4. With `AtomicModelParallelStrategy` the run fails, ``last.ckpt`` is byte for byte
    the step-2 one, nothing else is left in the folder, and a run resumes from it. Lightning's own
    strategy rewrites rank 0's shard in place: the control that shows the check can fail."""
    ckpt = tmp_path / "ckpt"
    args = ["--replicate", "1", "--shard", "2", "--steps", "4", "--checkpoint-dir", str(ckpt)]
    args += ["--checkpoint-every", "2", "--save-last", "--fail-save-at-step", "4"]
    args += [] if atomic else ["--plain-strategy"]
    result = launch(2, ["--manifest", str(manifest), "--out", str(tmp_path / "run"), *args], timeout=300)
    assert result.returncode != 0 and "No space left on device (injected)" in result.stderr, result.stderr[
        -3000:
    ]
    digests = json.loads((tmp_path / "run" / "digests.json").read_text())
    assert sorted(digests) == ["2", "3"]  # recorded after the step-2 save, before the failing one
    after = directory_digest(ckpt / "last.ckpt")
    if not atomic:
        assert after != digests["3"]
        return
    assert after == digests["3"]
    assert [p.name for p in ckpt.iterdir()] == ["last.ckpt"]
    resumed = run_worker(
        tmp_path / "resumed",
        manifest,
        2,
        ["--replicate", "1", "--shard", "2", "--steps", "4", "--resume", str(ckpt / "last.ckpt")],
    )
    assert len(resumed["losses"]) == 2


@pytest.mark.slow
def test_rank_whose_rows_were_all_skipped_does_not_hang(manifest: Path, tmp_path: Path):
    """Step 2: rank 1's every row was skipped. It runs a zero-token placeholder row (no hang), and the
    step equals one process on the rows that remain. Rank 1 also recomputes with the backbone's
    (Hugging Face) gradient checkpointing, as the 8B recipes do, and the vision tower trains: the
    placeholder's text row reaches it only through vision_grad_anchor."""
    skip = ["--skip", "1", "1", "2", "--train-vision"]
    want = run_worker(tmp_path / "single", manifest, 0, skip)
    got = run_worker(
        tmp_path / "fsdp",
        manifest,
        2,
        [*skip, "--replicate", "1", "--shard", "2", "--gradient-checkpointing"],
    )
    assert got["sharded"] and got["world_size"] == 2
    assert_same_run(got, want)


@pytest.mark.slow
def test_vision_block_units_fail_when_ranks_call_the_tower_differently(manifest: Path, tmp_path: Path):
    """Why ``shard_vision_blocks`` is off by default: at step 2 rank 1 holds an image and a video (two
    vision-tower calls), rank 0 two images (one call). With one unit per vision block their
    all-gathers no longer match; gloo reports the mismatch (NCCL would hang). The default setting
    runs the same data (test_fsdp_two_processes_equal_one_process)."""
    args = [
        "--manifest",
        str(manifest),
        "--out",
        str(tmp_path),
        "--replicate",
        "1",
        "--shard",
        "2",
        "--shard-vision-blocks",
    ]
    result = launch(2, args, timeout=300)
    assert result.returncode != 0
    assert "collective mismatch" in result.stderr or "Connection reset" in result.stderr, result.stderr[
        -3000:
    ]


@pytest.mark.slow
def test_mesh_that_does_not_match_the_world_size_fails_at_setup(manifest: Path, tmp_path: Path):
    result = launch(
        2,
        ["--manifest", str(manifest), "--out", str(tmp_path), "--replicate", "3", "--shard", "1"],
        timeout=180,
    )
    assert result.returncode != 0
    assert "data_parallel_size=3" in result.stderr and "should equal the world size (2)" in result.stderr
    assert not (tmp_path / "losses.json").exists()
