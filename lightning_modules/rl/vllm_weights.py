"""The policy's weights as vLLM's Qwen3-VL / Qwen2.5-VL models name them, one tensor at a time.

`policy_weights` gathers each FSDP2 shard (``full_tensor``, a collective: every rank iterates the
same parameters in the same order), merges LoRA into its base weight, and yields
``(vLLM name, tensor)``; nothing else of the model is ever gathered at once. `load_into_vllm` is the
one call that depends on vLLM's internals.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from lightning_modules.model.backbone import VisionLanguageBackbone

# transformers (>= 4.52) module names -> vLLM's (its hf_to_vllm_mapper for both Qwen-VL families).
VLLM_PREFIXES = (
    ("model.language_model.", "language_model.model."),
    ("model.visual.", "visual."),
    ("lm_head.", "language_model.lm_head."),
)
LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.", ".lora_magnitude_vector.")


def vllm_name(name: str) -> str:
    """A transformers parameter name (LoRA's ``base_layer`` removed) under vLLM's module names."""
    name = name.replace(".base_layer.", ".")
    for hf, vllm in VLLM_PREFIXES:
        if name.startswith(hf):
            return vllm + name[len(hf) :]
    raise ValueError(f"no vLLM name for parameter {name!r}")


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly FSDP2-sharded) parameter; collective when sharded."""
    tensor = tensor.detach()
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _lora_delta(module: nn.Module) -> torch.Tensor:
    """``scaling · B @ A`` summed over the active adapters of a peft LoRA linear layer.

    By hand because peft's own merge writes into the (sharded) base weight in place; here A and B
    are gathered first and the base weight is left untouched.
    """
    delta = None
    for adapter in module.active_adapters:
        if adapter not in module.lora_A:
            continue
        a, b = _full(module.lora_A[adapter].weight).float(), _full(module.lora_B[adapter].weight).float()
        term = (b @ a) * module.scaling[adapter]
        delta = term if delta is None else delta + term
    return delta


def policy_weights(
    backbone: VisionLanguageBackbone, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter of the policy once, as ``(vLLM name, full tensor)``; LoRA merged in.

    Tied embeddings are one parameter, so ``lm_head.weight`` is not sent separately (vLLM ties it
    too). ``dtype`` casts each tensor (default: the parameter's own).
    """
    model = backbone.hf_model
    lora_layers = {
        name: m for name, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")
    }
    for name, param in model.named_parameters():
        if any(marker in name for marker in LORA_MARKERS):
            continue
        tensor = _full(param)
        owner = name.rsplit(".base_layer.", 1)[0] if ".base_layer." in name else None
        if owner in lora_layers and name.endswith(".base_layer.weight"):
            delta = _lora_delta(lora_layers[owner])
            if delta is not None:
                tensor = (tensor.float() + delta).to(tensor.dtype)
        yield vllm_name(name), tensor.to(dtype) if dtype is not None else tensor


def load_into_vllm(llm: Any, weights: Iterator[tuple[str, torch.Tensor]]) -> set[str] | None:
    """Hand ``weights`` to the model inside a colocated ``vllm.LLM`` (the version-sensitive call).

    With ``distributed_executor_backend="external_launcher"`` the model lives in this process; vLLM
    0.33 reaches it through the executor's driver worker. Its ``load_weights`` consumes the iterator
    one tensor at a time and maps names itself (names already in vLLM's form pass unchanged).
    Returns the names vLLM reports as loaded (its parameter names), if it reports them.
    """
    executor = llm.llm_engine.model_executor
    worker = executor.driver_worker
    worker = getattr(worker, "worker", worker)  # a WorkerWrapperBase holds the worker
    return worker.model_runner.model.load_weights(weights=weights)
