"""One rank of the weight-stream check under FSDP2 (run by tests/test_rollout_engines.py with torchrun):
the tensors `policy_weights` gathers from the sharded tiny model (plain and with LoRA merged) equal
the ones it yields before sharding. Each rank writes OUT/rank{r}.json with what it compared."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from lightning_modules.model.backbone import LoraSettings, VisionLanguageBackbone
from lightning_modules.rl.vllm_weights import policy_weights
from lightning_modules.training.sharding import shard_backbone
from tests.test_backbone import perturb_lora


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    report = {}
    for lora in (False, True):
        bb = VisionLanguageBackbone("tiny", seed=0, lora=LoraSettings(r=4, alpha=8) if lora else None)
        if lora:
            perturb_lora(bb)
        want = {name: t.clone() for name, t in policy_weights(bb)}
        shard_backbone(bb, mesh, param_dtype=torch.float32)
        sharded = sum(hasattr(p, "full_tensor") for p in bb.parameters())
        got = dict(policy_weights(bb))
        report["lora" if lora else "plain"] = {
            "names_equal": sorted(got) == sorted(want),
            "tensors_equal": all(torch.equal(got[n], want[n]) for n in want),
            "differ": [n for n in want if not torch.equal(got[n], want[n])][:3],
            "sent": len(got),
            "sharded_parameters": sharded,
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
