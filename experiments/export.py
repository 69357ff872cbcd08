"""``onethinker export``: a training checkpoint → a Hugging Face folder that ``from_pretrained`` loads.

The checkpoint is a ``.ckpt`` file (one device, DDP) or the folder Lightning's ``ModelParallelStrategy``
writes under FSDP2 (``torch.distributed.checkpoint`` shards plus ``meta.pt``); a folder is read in one
process, without a process group, and only its model weights are loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightning_modules.model.backbone import LoraSettings, VisionLanguageBackbone

PREFIX = "backbone."


class CheckpointError(ValueError):
    """A path that is not a checkpoint ``onethinker export`` can read."""


SHARDED_META = "meta.pt"  # Lightning's file of non-tensor state next to the shards
SHARDED_WEIGHTS = "state_dict"  # the model's entry in ModelParallelStrategy's distributed checkpoint


def _backbone(checkpoint: str | Path, meta: dict[str, Any]) -> VisionLanguageBackbone:
    init = dict(meta.get("backbone_init") or {})
    if not init:
        raise CheckpointError(
            f"{checkpoint}: no 'backbone_init' entry; was it written by an onethinker LightningModule?"
        )
    if init.get("lora") is not None:
        init["lora"] = LoraSettings(**init["lora"])
    return VisionLanguageBackbone(**init)


def _check_fit(checkpoint: str | Path, missing: list[str], unexpected: list[str]) -> None:
    # Tied output embeddings may be stored once; anything else missing is an error.
    missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint}: weights do not fit the backbone (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )


def load_file_checkpoint(checkpoint: Path) -> VisionLanguageBackbone:
    """The backbone of a single-file ``.ckpt``."""
    if not checkpoint.is_file():
        raise CheckpointError(
            f"{checkpoint}: no such checkpoint (expected a .ckpt file or a sharded checkpoint folder)"
        )
    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises pickle, zip and runtime errors for a file that is not one
        raise CheckpointError(
            f"{checkpoint}: not a readable Lightning checkpoint ({type(err).__name__}: {err}); a save cut short?"
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{checkpoint}: not a Lightning checkpoint (no 'state_dict' entry)")
    backbone = _backbone(checkpoint, state)
    weights = {k[len(PREFIX) :]: v for k, v in state["state_dict"].items() if k.startswith(PREFIX)}
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    _check_fit(checkpoint, missing, unexpected)
    return backbone


def load_sharded_checkpoint(checkpoint: Path) -> VisionLanguageBackbone:
    """The backbone of a ``ModelParallelStrategy`` checkpoint folder (DCP shards of any world size)."""
    import torch.distributed.checkpoint as dcp

    meta_file = checkpoint / SHARDED_META
    if not meta_file.is_file():
        raise CheckpointError(
            f"{checkpoint}: a folder but not a sharded Lightning checkpoint (no {SHARDED_META})"
        )
    backbone = _backbone(checkpoint, torch.load(meta_file, map_location="cpu", weights_only=False))
    stored = {
        k[len(SHARDED_WEIGHTS) + 1 + len(PREFIX) :]
        for k in dcp.FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
        if k.startswith(f"{SHARDED_WEIGHTS}.{PREFIX}")
    }
    target = backbone.state_dict()
    # DCP reads each requested tensor from every shard that holds a piece of it, in place.
    wanted = {PREFIX + k: v for k, v in target.items() if k in stored}
    dcp.load({SHARDED_WEIGHTS: wanted}, checkpoint_id=str(checkpoint))
    _check_fit(checkpoint, sorted(set(target) - stored), sorted(stored - set(target)))
    backbone.load_state_dict({k[len(PREFIX) :]: v for k, v in wanted.items()}, strict=False)  # ties, buffers
    return backbone


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Rebuild the checkpoint's backbone, load its weights, and save weights, config and processor."""
    path = Path(checkpoint)
    backbone = load_sharded_checkpoint(path) if path.is_dir() else load_file_checkpoint(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backbone.save_pretrained(out)
    return out
