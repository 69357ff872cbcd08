"""Log-prob head: forward + backward of `gather_token_logprobs` (fused cross-entropy at temperature 1)
against the log-softmax + gather formula it replaced, on [rows, hidden] states and the real Qwen
vocabulary (151,936), in chunks, one torch thread.

    python benchmarks/bench_logprob_head.py --rows 512 --hidden 128 --chunk 256 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lightning_modules.model.backbone import gather_token_logprobs  # noqa: E402


def log_softmax_gather(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk: int
) -> torch.Tensor:
    """The previous path: logits / temperature, logsumexp, gather; each chunk checkpointed."""

    def scores(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = head(h).float() / 1.0
        return logits.gather(-1, t.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    return torch.cat([checkpoint(scores, hidden[i : i + chunk], targets[i : i + chunk], use_reentrant=False)
                      for i in range(0, hidden.shape[0], chunk)])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    head = nn.Linear(args.hidden, args.vocab, bias=False)
    hidden = torch.randn(args.rows, args.hidden, generator=g, requires_grad=True)
    targets = torch.randint(0, args.vocab, (args.rows,), generator=g)
    paths = {
        "fused (ours)": lambda: gather_token_logprobs(hidden, head, targets, chunk_size=args.chunk),
        "log-softmax + gather": lambda: log_softmax_gather(hidden, head, targets, args.chunk),
    }
    best: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved
        for name, fn in paths.items():
            started = time.perf_counter()
            fn().sum().backward()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    for name, seconds in best.items():
        print(f"{name}: {seconds * 1e3:.0f} ms (best of {args.repeats})")
    print(f"speed-up: {best['log-softmax + gather'] / best['fused (ours)']:.2f}x")


if __name__ == "__main__":
    main()
