"""The shipped HSDP trainer config across two "nodes": two torchrun launchers over loopback
(``--nnodes 2 --nproc-per-node 1``, node ranks 0 and 1) run ``onethinker fit`` of the demo SFT recipe
for 2 steps on CPU, save a sharded checkpoint, and ``onethinker export`` turns it into a Hugging Face
folder. Each launcher has a hard timeout, so a hang fails the test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # fmt: skip
TIMEOUT = 400


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_node_torchrun_fit_and_export(tmp_path: Path):
    from datamodules.synthetic import generate_suite

    manifest = generate_suite(tmp_path / "suite", per_task=1, seed=0)["sft"]
    port = free_port()
    fit = [
        "-m", "experiments.cli", "fit",
        "--config", str(EXPERIMENTS / "shared" / "trainer_hsdp.yaml"), "--config", str(EXPERIMENTS / "demo" / "sft.yaml"),
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=2", "--trainer.max_steps=2",
        "--trainer.logger=false", "--model.init_args.sharding.param_dtype=float32",
        f"--data.train_manifests=[{manifest}]", "--data.num_workers=0", f"--trainer.default_root_dir={tmp_path}",
    ]  # fmt: skip
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={rank}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                *fit,
            ],  # fmt: skip
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = []
    try:
        for launcher in launchers:
            outputs.append(launcher.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"the two-node fit did not finish within {TIMEOUT} s (hang?)")
    finally:
        for launcher in launchers:  # only the launchers this test started
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
    for rank, (launcher, out) in enumerate(zip(launchers, outputs)):
        assert launcher.returncode == 0, f"node {rank}:\n{out[-4000:]}"
    assert "`max_steps=2` reached" in outputs[0]

    # The demo recipe's ModelCheckpoint (save_last) wrote a sharded folder: one shard per rank.
    ckpt = tmp_path / "outputs" / "demo" / "checkpoints" / "last.ckpt"
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2, list(ckpt.parent.rglob("*"))
    exported = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "export", str(ckpt), "--out", str(tmp_path / "hf")],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "hf")
    assert model.config.text_config.num_hidden_layers == 4  # the demo recipe's tiny_layers
