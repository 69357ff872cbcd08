"""The prepared GPU throughput check (issue #15) on CPU: its command lines and its summary table."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from benchmarks.gpu_check_throughput import summary

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check_throughput.sh"


def test_dry_run_prints_every_arm_and_runs_nothing(tmp_path: Path):
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"],
        env={**os.environ, "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    commands = [line for line in proc.stdout.splitlines() if line.startswith("+ timeout ")]
    sft = [c for c in commands if "bench_sft.py --gpu-8b" in c]
    assert len(sft) == 3
    padded, packed, liger = sft
    assert "--sides peer,ours" in padded and "--pack-tokens" not in padded
    assert "--sides ours --pack-tokens 16384" in packed and "--liger" not in packed
    assert "--pack-tokens 16384 --liger" in liger
    # One carried file of padded batches serves every arm.
    assert len({c.split("--batches-file ")[1].split()[0] for c in sft}) == 1
    assert any("rss_profile.py --model 2b --device cuda" in c for c in commands)
    assert not any(out.glob("*.json"))


def run(side: str, tokens_per_s: float, **extra: object) -> dict:
    return {
        "side": side,
        "tokens_per_s": tokens_per_s,
        "s_per_step": 12_845 / tokens_per_s,
        "peak_gpu_gib": 70.0,
        "peak_reserved_gib": 75.0,
        "first_loss": 12.9,
        "model": "Qwen3-VL-8B-shaped",
        "device": "NVIDIA H200",
        "torch": "2.14.0",
        "transformers": "5.20.2",
        "n_flops": 7.57e9,
        "attn": "sdpa",
        **extra,
    }


def write(folder: Path, name: str, runs: dict[str, dict], mfu: dict[str, float]) -> None:
    data = {"data": "32 SFT rows", "median": runs, "mfu": mfu, "peak_tflops": 989.4, "peak_source": "spec"}
    (folder / name).write_text(json.dumps(data))


def test_summary_table_ratios_and_missing_liger_calls(tmp_path: Path):
    write(
        tmp_path,
        "sft_padded.json",
        {"peer": run("peer", 2000.0), "ours": run("ours", 2500.0, fused_loss="torch", liger_calls=0)},
        {"peer": 0.09, "ours": 0.115},
    )
    write(
        tmp_path,
        "sft_packed.json",
        {"ours": run("ours", 5000.0, fused_loss="torch", liger_calls=0)},
        {"ours": 0.23},
    )
    write(
        tmp_path,
        "sft_packed_liger.json",
        {"ours": run("ours", 5500.0, fused_loss="liger", liger_calls=0)},
        {"ours": 0.25},
    )
    (tmp_path / "rss_ours.json").write_text(
        json.dumps(
            {
                "summary": {"peak_rss_mib": 3072.0},
                "phases": [{"phase": "model build", "peak_rss_mib": 3000.0}],
            }
        )
    )
    text = summary(tmp_path)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert (
        "| 2,500 |" in rows["ours, padded (today's path)"]
        and "| 11.5% |" in rows["ours, padded (today's path)"]
    )
    packed = rows["ours, packed"]
    assert "| 2.00x | 2.50x |" in packed  # against ours padded, against the Trainer padded
    assert "| 0.80x | 1.00x |" in rows["transformers Trainer, padded"]
    assert "never called Liger's kernel" in text
    assert "peak RSS 3.00 GiB (3,072 MiB)" in text and "model build (3,000 MiB)" in text
    assert (tmp_path / "summary.md").exists() is False  # summary() only returns; main() writes the file


def test_summary_without_results_says_so(tmp_path: Path):
    text = summary(tmp_path)
    assert "No SFT results" in text and "no rss_*.json here" in text
