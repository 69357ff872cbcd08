"""FSDP2 sharding of a `VisionLanguageBackbone`: one unit per decoder layer (and optionally per vision
block), then the backbone itself as the root unit.

`shard_backbone` is the pure part (a backbone and a mesh in, the backbone sharded in place);
`configure_sharding` is what a LightningModule's ``configure_model`` calls: it shards only when the
strategy provides a device mesh (Lightning's ``ModelParallelStrategy``) and does nothing otherwise,
so the same module runs unsharded on one device or under DDP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from lightning_modules.model.backbone import DTYPES, is_sharded

if TYPE_CHECKING:
    import lightning as L
    from torch.distributed.device_mesh import DeviceMesh

    from lightning_modules.model.backbone import VisionLanguageBackbone

# Backbone methods that run the model without calling ``backbone.forward``: FSDP runs its root
# pre/post-forward hooks around them too (Hugging Face ``generate`` calls ``hf_model.forward``).
# ``token_logprobs`` needs none: it calls ``forward``, after which the root unit stays gathered
# (``reshard_after_forward=False``) for ``lm_head``; so a bare forward and ``token_logprobs`` issue
# the same collectives.
FORWARD_METHODS = ("generate",)


@dataclass
class ShardingSettings:
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) settings, used under ``ModelParallelStrategy``.

    Args:
        param_dtype: dtype parameters are all-gathered in and compute runs in; the sharded (master)
            parameters and the optimizer state keep the backbone's ``dtype``.
        reduce_dtype: dtype gradients are reduce-scattered (and all-reduced across replicas) in.
        activation_checkpointing: recompute each decoder layer (and each sharded vision block) in the
            backward pass. Do not combine with the backbone's ``gradient_checkpointing``.
        reshard_after_forward: free each layer's gathered parameters after its forward and gather
            them again in backward (ZeRO-3); ``False`` keeps them until backward (more memory,
            fewer all-gathers). The root unit always stays gathered until backward.
        shard_vision_blocks: one unit per vision block. Off by default: a rank whose batch holds
            images and videos calls the vision tower twice, a rank with only images once, so
            per-block units would all-gather a different number of times on different ranks and
            hang. Off, the vision tower is gathered once per step with the root unit.
    """

    param_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    reduce_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    activation_checkpointing: bool = False
    reshard_after_forward: bool = True
    shard_vision_blocks: bool = False


def data_parallel_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """The mesh ``fully_shard`` takes: size-1 dimensions dropped; 1-D shards (FSDP), 2-D replicates
    over dimension 0 and shards over dimension 1 (HSDP).

    Lightning's ``ModelParallelStrategy`` builds a (``data_parallel``, ``tensor_parallel``) mesh; we
    use no tensor parallelism, so both dimensions are data-parallel: ``data_parallel`` replicates
    (across nodes) and ``tensor_parallel`` shards (within a node).
    """
    if mesh.ndim == 1:
        return mesh
    if mesh.ndim != 2:
        raise ValueError(
            f"sharding takes a 1-D (shard) or 2-D (replicate, shard) device mesh, got shape {tuple(mesh.shape)}"
        )
    names = mesh.mesh_dim_names
    if names is None:
        raise ValueError("a 2-D device mesh needs dimension names, e.g. ('data_parallel', 'tensor_parallel')")
    replicate, shard = mesh.shape
    if replicate == 1:
        return mesh[names[1]]
    if shard == 1:
        return mesh[names[0]]
    return mesh


def transformer_blocks(backbone: VisionLanguageBackbone) -> tuple[list[nn.Module], list[nn.Module]]:
    """The language model's decoder layers and the vision tower's blocks (Qwen3-VL and Qwen2.5-VL)."""
    inner = backbone.hf_model.model
    return list(inner.language_model.layers), list(inner.visual.blocks)


def hf_gradient_checkpointing(backbone: VisionLanguageBackbone) -> bool:
    """Whether the Hugging Face model recomputes its layers (``gradient_checkpointing_enable``).

    Read from the layers' ``gradient_checkpointing`` flags, as transformers itself does: the model's
    property for it is ``is_gradient_checkpointing`` in 5.20 and ``is_activation_checkpointing`` (the old
    name deprecated) by 5.25.
    """
    return any(getattr(m, "gradient_checkpointing", False) for m in backbone.hf_model.modules())


def shard_backbone(
    backbone: VisionLanguageBackbone,
    device_mesh: DeviceMesh,
    *,
    param_dtype: torch.dtype = torch.bfloat16,
    reduce_dtype: torch.dtype = torch.float32,
    activation_checkpointing: bool = False,
    reshard_after_forward: bool = True,
    shard_vision_blocks: bool = False,
) -> VisionLanguageBackbone:
    """Apply ``fully_shard`` per decoder layer (and per vision block), then to ``backbone`` (the root).

    The root unit holds the embeddings (tied with ``lm_head``), the final norm and, unless
    ``shard_vision_blocks``, the vision tower; it stays gathered from forward to backward, so
    ``token_logprobs`` can apply ``lm_head`` after ``forward``. ``generate`` is registered as a
    forward method, so it gathers the root unit like ``forward``. Returns ``backbone``, sharded in
    place.
    """
    from torch.distributed._composable import checkpoint
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    if activation_checkpointing and hf_gradient_checkpointing(backbone):
        raise ValueError(
            "activation_checkpointing and the backbone's gradient_checkpointing both recompute each layer; "
            "set only one"
        )
    mesh = data_parallel_mesh(device_mesh)
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    layers, vision_blocks = transformer_blocks(backbone)
    for block in layers + (vision_blocks if shard_vision_blocks else []):
        if activation_checkpointing:
            checkpoint(block)  # composable: hooks, no wrapper, so state-dict keys do not change
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    # The root stays gathered from forward to backward: lm_head runs after ``forward`` (token_logprobs).
    fully_shard(backbone, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    for name in FORWARD_METHODS:
        register_fsdp_forward_method(backbone, name)
    return backbone


def total_grad_norm(module: nn.Module) -> torch.Tensor | None:
    """L2 norm of all gradients of ``module``; sharded (DTensor) gradients are reduced across ranks,
    so every rank must call it. ``None`` when no parameter has a gradient."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return None
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def configure_sharding(
    module: L.LightningModule, backbone: VisionLanguageBackbone, settings: ShardingSettings
) -> None:
    """``configure_model`` body: shard ``backbone`` when the strategy gives ``module`` a device mesh.

    A no-op without a mesh (one device, DDP) and when the backbone is already sharded (Lightning
    calls ``configure_model`` again for each ``fit`` / ``test`` on the same module).
    """
    mesh = module.device_mesh
    if mesh is None or is_sharded(backbone):
        return
    shard_backbone(
        backbone,
        mesh,
        param_dtype=DTYPES[settings.param_dtype],
        reduce_dtype=DTYPES[settings.reduce_dtype],
        activation_checkpointing=settings.activation_checkpointing,
        reshard_after_forward=settings.reshard_after_forward,
        shard_vision_blocks=settings.shard_vision_blocks,
    )
