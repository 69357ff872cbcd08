"""Summary of `benchmarks/gpu_check_throughput.sh`: one table from the JSON files its runs left in a folder.

Reads ``sft_padded.json`` (ours and the transformers ``Trainer``, padded), ``sft_packed.json``,
``sft_packed_liger.json``, ``sft_peer_liger.json`` (each optional; written by ``bench_sft.py
--json-out``) and ``rss_ours.json`` / ``rss_trl.json`` (``rss_profile.py --json``), prints a markdown
summary and writes it to ``summary.md`` in the same folder.

    python benchmarks/gpu_check_throughput.py outputs/gpu_check_throughput
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# (file, side, label) in the order of the table.
SFT_ARMS = (
    ("sft_padded.json", "peer", "transformers Trainer, padded"),
    ("sft_peer_liger.json", "peer", "transformers Trainer, padded, use_liger_kernel"),
    ("sft_padded.json", "ours", "ours, padded (today's path)"),
    ("sft_packed.json", "ours", "ours, packed"),
    ("sft_packed_liger.json", "ours", "ours, packed + Liger fused linear CE"),
)
RSS_RUNS = (("rss_ours.json", "ours (GRPO, Lightning)"), ("rss_trl.json", "TRL GRPOTrainer"))
MIB = 2**20


def load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def sft_rows(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per arm that ran (median run of its side), with MFU from the file's own peak."""
    rows, meta = [], {}
    for name, side, label in SFT_ARMS:
        data = load(folder, name)
        run = (data or {}).get("median", {}).get(side)
        if run is None:
            continue
        mfu = (data.get("mfu") or {}).get(side)
        meta = meta or {
            "model": run.get("model"),
            "device": run.get("device"),
            "torch": run.get("torch"),
            "transformers": run.get("transformers"),
            "n_flops": run.get("n_flops"),
            "peak_tflops": data.get("peak_tflops"),
            "peak_source": data.get("peak_source"),
            "attn": run.get("attn"),
        }
        rows.append({"label": label, "file": name, "data": data.get("data", ""), "mfu": mfu, **run})
    return rows, meta


def fmt(value: Any, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def summary(folder: Path) -> str:
    rows, meta = sft_rows(folder)
    out = [f"# GPU throughput check ({folder})", ""]
    if rows:
        out += [
            f"Model: {meta['model']}, random bf16 weights, attention {meta['attn']}; GPU {meta['device']}, "
            f"torch {meta['torch']}, transformers {meta['transformers']}.",
            f"MFU = 6 * N * tokens/s / peak, N = {fmt(meta['n_flops'] and meta['n_flops'] / 1e9, '.2f')}B "
            "(language model without input embeddings, + lm_head), tokens = attention_mask tokens "
            f"(padding and pack tails not counted), peak = {meta['peak_tflops']} TFLOP/s ({meta['peak_source']}).",
            "",
            "| arm | loss path | Liger calls | tokens/s | s/step | MFU | peak allocated | peak reserved "
            "| loss step 1 | vs ours padded | vs Trainer padded |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        base = {r["label"]: r["tokens_per_s"] for r in rows}
        ours = base.get("ours, padded (today's path)")
        peer = base.get("transformers Trainer, padded")
        for r in rows:
            out.append(
                f"| {r['label']} | {r.get('fused_loss', '')} | {fmt(r.get('liger_calls'), 'd', '')} "
                f"| {r['tokens_per_s']:,.0f} | {r['s_per_step']:.3f} | {fmt(r['mfu'], '.1%')} "
                f"| {r['peak_gpu_gib']:.1f} GiB | {r['peak_reserved_gib']:.1f} GiB | {r['first_loss']:.5f} "
                f"| {fmt(ours and r['tokens_per_s'] / ours, '.2f')}x | {fmt(peer and r['tokens_per_s'] / peer, '.2f')}x |"
            )
        out += ["", "Data per arm:"] + [f"- {r['label']}: {r['data']}" for r in rows]
        liger = [r for r in rows if "Liger fused" in r["label"]]
        if liger and not liger[0].get("liger_calls"):
            out.append("- NOTE: the Liger arm never called Liger's kernel: it measured the torch path.")
    else:
        out.append("No SFT results (no sft_*.json here).")
    out += ["", "GRPO host memory (`rss_profile.py`, peak RSS = the process's VmHWM):", ""]
    found = False
    for name, label in RSS_RUNS:
        data = load(folder, name)
        if data is None:
            continue
        found = True
        s = data.get("summary", {})
        peak = s.get("peak_rss_mib")
        out.append(f"- {label}: peak RSS {fmt(peak and peak / 1024, '.2f')} GiB ({fmt(peak, ',.0f')} MiB)")
        phases = [r for r in data.get("phases", []) if isinstance(r, dict) and "peak_rss_mib" in r]
        if phases:
            top = max(phases, key=lambda r: r["peak_rss_mib"])
            out.append(f"  - highest sampled phase: {top.get('phase')} ({top['peak_rss_mib']:,.0f} MiB)")
    if not found:
        out.append("- no rss_*.json here (rss_profile.py missing, skipped or failed: see its log)")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    text = summary(args.folder)
    (args.folder / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
