"""``onethinker export``: a training checkpoint → a Hugging Face folder that ``from_pretrained`` loads."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_modules.backbone import LoraSettings, VisionLanguageBackbone

PREFIX = "backbone."


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Rebuild the checkpoint's backbone, load its weights, and save weights, config and processor."""
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    init = dict(state.get("backbone_init") or {})
    if not init:
        raise ValueError(f"{checkpoint}: no 'backbone_init' entry; was it written by an onethinker LightningModule?")
    if init.get("lora") is not None:
        init["lora"] = LoraSettings(**init["lora"])
    backbone = VisionLanguageBackbone(**init)
    weights = {k[len(PREFIX) :]: v for k, v in state["state_dict"].items() if k.startswith(PREFIX)}
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    # Tied output embeddings may be stored once; anything else missing is an error.
    missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{checkpoint}: weights do not fit the backbone (missing {missing[:5]}, unexpected {unexpected[:5]})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backbone.save_pretrained(out)
    return out
