"""`VisionLanguageBackbone`: the Qwen-VL model + processor that SFT, GRPO and evaluation share."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from datamodules.packing import sample_spans, segment_positions, unpack_rows
from lightning_modules.model.processing import build_processor, vision_token_ids

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "pixel_values_videos",
    "image_grid_thw",
    "video_grid_thw",
    "second_per_grid_ts",
    "mm_token_type_ids",
)
# Projector modules inside ``model.visual`` (Qwen3-VL adds DeepStack mergers).
PROJECTOR_PREFIXES = ("merger", "deepstack_merger_list")
LANGUAGE_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSettings:
    """LoRA through peft.

    Args:
        r: rank.
        alpha: scaling numerator (``lora_alpha``).
        dropout: dropout on the LoRA input.
        target_modules: linear layer names to adapt.
        include_vision: also adapt the vision tower's matching layers.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LANGUAGE_LINEARS))
    include_vision: bool = False


def resolve_attention(attn_implementation: str) -> str:
    """``auto`` is flash-attention 2 when it is installed and CUDA is present, else sdpa."""
    if attn_implementation != "auto":
        return attn_implementation
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _vocab_args(tokenizer: Any, tiny_vocab: str) -> dict[str, Any]:
    """Vocabulary size and vision token ids of the tiny preset for ``tokenizer``."""
    if tiny_vocab == "qwen":
        return {}
    names = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    return {
        "vocab_size": len(tokenizer),
        "token_ids": {k: tokenizer.convert_tokens_to_ids(v) for k, v in names.items()},
    }


def model_family(model_type: str) -> str:
    """``qwen3_vl`` (dense and MoE) or ``qwen2_5_vl`` from a config's ``model_type``."""
    if model_type.startswith("qwen3_vl"):
        return "qwen3_vl"
    if model_type.startswith("qwen2_5_vl"):
        return "qwen2_5_vl"
    raise ValueError(f"unsupported model_type {model_type!r}; supported: qwen3_vl, qwen3_vl_moe, qwen2_5_vl")


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """Log-probabilities are kept in float32 at least: bf16/fp16 go up, float64 stays."""
    return torch.promote_types(dtype, torch.float32)


def gather_token_logprobs(
    hidden: torch.Tensor,
    lm_head: nn.Module,
    targets: torch.Tensor,
    chunk_size: int = 1024,
    temperature: float = 1.0,
    with_entropy: bool = False,
    fused_loss: Literal["auto", "liger", "torch"] = "torch",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log p(target) for rows of ``hidden`` [N, H], ``chunk_size`` rows of logits at a time.

    Each chunk is checkpointed, so neither the forward nor the backward pass ever holds more than
    [chunk_size, vocab] logits, in float32 at least (float64 stays float64). With ``with_entropy``
    the entropy of each row's distribution comes back too. At temperature 1 without entropy (SFT,
    the GRPO update) a chunk is one fused cross-entropy: no temperature pass over [chunk, vocab] and
    no dense backward of the gather.
    """
    dtype = score_dtype(hidden.dtype)
    fused = temperature == 1.0 and not with_entropy
    liger_fits = hidden.is_cuda and hidden.dtype != torch.float64 and isinstance(lm_head, nn.Linear)
    if fused and fused_loss != "torch" and liger_fits:
        from lightning_modules.model.liger_logprobs import liger_available, liger_token_logprobs

        if fused_loss == "liger" or liger_available():  # Liger's fused linear cross-entropy (CUDA)
            return liger_token_logprobs(hidden, lm_head.weight, targets, bias=lm_head.bias)

    def chunk_scores(h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if fused:  # log_softmax + gather in one kernel whose backward is softmax − one-hot
            return -F.cross_entropy(lm_head(h).to(dtype), t, reduction="none"), h.new_zeros(0, dtype=dtype)
        logits = lm_head(h).to(dtype) / temperature
        log_z = torch.logsumexp(logits, dim=-1)
        picked = logits.gather(-1, t.unsqueeze(-1)).squeeze(-1) - log_z
        if not with_entropy:
            return picked, picked.new_zeros(0)
        probs = torch.softmax(logits, dim=-1)
        return picked, log_z - (probs * logits).sum(-1)

    logps, entropies = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        h, t = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(chunk_scores, h, t, use_reentrant=False)
        else:
            lp, ent = chunk_scores(h, t)
        logps.append(lp)
        entropies.append(ent)
    empty = hidden.new_zeros(0, dtype=dtype)
    logp = torch.cat(logps) if logps else empty
    if not with_entropy:
        return logp
    return logp, torch.cat(entropies) if entropies else empty


class VisionLanguageBackbone(nn.Module):
    """A Qwen3-VL / Qwen2.5-VL model with its processor.

    Args:
        model_name_or_path: a hub id or local folder for ``from_pretrained``, or ``tiny`` for a
            randomly initialised toy model of ``family`` (real tokenizer, no download).
        family: architecture of the ``tiny`` preset (ignored for pretrained models).
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        attn_implementation: ``auto``, ``sdpa``, ``eager`` or ``flash_attention_2``.
        freeze_vision_tower: keep the vision encoder fixed.
        freeze_projector: keep the vision-to-language merger fixed.
        gradient_checkpointing: recompute activations in the backward pass.
        lora: LoRA settings; ``None`` trains the full model.
        seed: initialisation seed of the ``tiny`` preset and of the LoRA adapters.
        logprob_chunk_size: rows of logits computed at once by `token_logprobs`.
        tiny_hidden: hidden size of the ``tiny`` preset's language model.
        tiny_layers: decoder layers of the ``tiny`` preset.
        fused_loss: the log-prob head at temperature 1: ``liger`` (Liger-Kernel's fused linear
            cross-entropy; CUDA and the ``liger`` extra), ``torch`` (chunked cross-entropy), or ``auto``
            (Liger when it is available).
        tiny_vocab: ``qwen`` (the real 151k tokenizer) or ``synthetic`` (a 1k byte-level BPE trained on
            the synthetic suite, with the Qwen special tokens: lets the CPU demo learn in minutes).
    """

    def __init__(
        self,
        model_name_or_path: str = "tiny",
        family: Literal["qwen3_vl", "qwen2_5_vl"] = "qwen3_vl",
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        attn_implementation: str = "auto",
        freeze_vision_tower: bool = True,
        freeze_projector: bool = True,
        gradient_checkpointing: bool = False,
        lora: LoraSettings | None = None,
        seed: int = 0,
        logprob_chunk_size: int = 1024,
        tiny_hidden: int = 64,
        tiny_layers: int = 2,
        tiny_vocab: Literal["qwen", "synthetic"] = "qwen",
        fused_loss: Literal["auto", "liger", "torch"] = "auto",
    ):
        super().__init__()
        from transformers import AutoModelForImageTextToText

        self.name_or_path, self.logprob_chunk_size = model_name_or_path, logprob_chunk_size
        if fused_loss == "liger":
            from lightning_modules.model.liger_logprobs import INSTALL_HINT, liger_available

            if not liger_available():
                raise ImportError(f"fused_loss='liger' needs CUDA and liger-kernel: {INSTALL_HINT}")
        self.fused_loss = fused_loss
        # Enough to rebuild this backbone around a checkpoint's weights (export, evaluation).
        self.init_args: dict[str, Any] = {
            "model_name_or_path": model_name_or_path,
            "family": family,
            "dtype": dtype,
            "attn_implementation": attn_implementation,
            "lora": None if lora is None else vars(lora),
            "seed": seed,
            "tiny_hidden": tiny_hidden,
            "tiny_layers": tiny_layers,
            "tiny_vocab": tiny_vocab,
        }
        attn = resolve_attention(attn_implementation)
        if model_name_or_path == "tiny":
            from lightning_modules.model.presets import tiny_config
            from lightning_modules.model.processing import qwen_tokenizer, synthetic_tokenizer

            tokenizer = synthetic_tokenizer() if tiny_vocab == "synthetic" else qwen_tokenizer()
            config = tiny_config(family, tiny_hidden, tiny_layers, **_vocab_args(tokenizer, tiny_vocab))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = AutoModelForImageTextToText.from_config(
                    config, dtype=DTYPES[dtype], attn_implementation=attn
                )
            processor = build_processor(family, tokenizer)
        else:
            from transformers import AutoProcessor

            model = AutoModelForImageTextToText.from_pretrained(
                model_name_or_path, dtype=DTYPES[dtype], attn_implementation=attn
            )
            processor = AutoProcessor.from_pretrained(model_name_or_path)
            family = model_family(model.config.model_type)
        model.train()  # from_pretrained returns eval mode; Lightning switches modes per stage from here
        self.family, self.processor = family, processor
        self.suppressed_token_ids = vision_token_ids(processor.tokenizer)
        # A response ends at the first of these (sampling stops there; later tokens are padding).
        self.end_token_ids = [
            processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")
        ]
        self.set_trainable(not freeze_vision_tower, not freeze_projector, model)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        self.lora = lora
        if lora is not None:
            # Seeded here, not by the caller's RNG: sharded (FSDP2) ranks never broadcast parameters,
            # so every rank must draw the same adapter weights by itself.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)
                model = self._add_lora(model, lora)
        self.model = model

    @staticmethod
    def _visual(model: nn.Module) -> nn.Module:
        return model.get_base_model().model.visual if hasattr(model, "get_base_model") else model.model.visual

    def set_trainable(self, vision_tower: bool, projector: bool, model: nn.Module | None = None) -> None:
        """Freeze or unfreeze the vision encoder and the projector."""
        visual = self._visual(model if model is not None else self.model)
        for name, param in visual.named_parameters():
            is_projector = name.startswith(PROJECTOR_PREFIXES)
            param.requires_grad_(projector if is_projector else vision_tower)

    @staticmethod
    def _add_lora(model: nn.Module, lora: LoraSettings) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        names = "|".join(lora.target_modules)
        scope = r".*" if lora.include_vision else r".*language_model.*"
        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=rf"{scope}\.({names})"
        )
        return get_peft_model(model, config)

    @property
    def hf_model(self) -> nn.Module:
        """The transformers model (LoRA layers inside, if any)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Last hidden states [B, T, H] of the language model (no logits over the vocabulary).

        A packed batch (``pack_lengths``, `datamodules.packing`) runs without an attention mask and
        with each sample's own positions: transformers then keeps attention inside each sample
        (flash-attention varlen, or sdpa/eager with a block-diagonal causal mask).
        """
        inputs = self.model_inputs(batch)
        if batch.get("pack_lengths") is not None:
            inputs.pop("attention_mask", None)
            inputs["position_ids"] = packed_position_ids(self.hf_model.model, batch)
        return self.hf_model.model(**inputs, use_cache=False).last_hidden_state

    def token_logprobs(
        self,
        batch: dict[str, Any],
        target_mask: torch.Tensor,
        temperature: float = 1.0,
        with_entropy: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """[B, T] log-probabilities of the tokens of ``input_ids`` where ``target_mask`` is set, else 0.

        A token at position t is scored from the hidden state at t - 1; only those rows ever reach
        the vocabulary projection, in chunks. ``with_entropy`` also returns the [B, T] entropy of
        the predictive distribution at the same positions.
        """
        hidden = self(batch)
        ids = batch["input_ids"]
        picked = target_mask[:, 1:].bool()
        scores = gather_token_logprobs(
            hidden[:, :-1][picked],
            self.hf_model.lm_head,
            ids[:, 1:][picked],
            self.logprob_chunk_size,
            temperature,
            with_entropy,
            self.fused_loss,
        )
        logp, entropy = scores if with_entropy else (scores, None)
        out = torch.zeros(ids.shape, dtype=logp.dtype, device=ids.device)
        out[:, 1:][picked] = logp
        if entropy is None:
            return out
        ent = torch.zeros(ids.shape, dtype=entropy.dtype, device=ids.device)
        ent[:, 1:][picked] = entropy
        return out, ent

    @torch.no_grad()
    def generate(
        self,
        batch: dict[str, Any],
        num_return_sequences: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        do_sample: bool = True,
        cache_implementation: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Sample responses to left-padded prompts; vision special tokens are never produced.

        With sharded parameters (FSDP2) and several ranks, every rank keeps running forward passes
        until all have finished (``synced_gpus``): each forward gathers parameters collectively.

        Returns ``sequences`` (prompt + response), ``response_ids`` and ``response_mask`` (1 up to
        and including the first end-of-turn token), each with ``num_return_sequences`` rows per prompt.
        """
        tok = self.tokenizer
        eos = self.end_token_ids
        kwargs: dict[str, Any] = {"do_sample": do_sample, "max_new_tokens": max_new_tokens}
        if cache_implementation is not None:
            kwargs["cache_implementation"] = cache_implementation
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        if sharded_across_ranks(self):
            # Every rank keeps decoding (on padding) until all ranks are done: each decoding step
            # all-gathers the sharded layers, so a rank that stopped early would hang the others.
            kwargs["synced_gpus"] = True
        sequences = self.hf_model.generate(
            **self.model_inputs(batch),
            num_return_sequences=num_return_sequences,
            suppress_tokens=self.suppressed_token_ids,
            eos_token_id=eos,
            pad_token_id=tok.pad_token_id,
            **kwargs,
        )
        prompt_len = batch["input_ids"].shape[1]
        response = sequences[:, prompt_len:]
        return {
            "sequences": sequences,
            "response_ids": response,
            "response_mask": response_mask(response, eos),
        }

    def save_pretrained(self, out: str | Path) -> None:
        """A Hugging Face folder (weights, config, processor); LoRA weights are merged in."""
        model = self.model
        if hasattr(model, "merge_and_unload"):
            import copy

            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(str(out))
        self.processor.save_pretrained(str(out))


def packed_position_ids(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """[4, R, L] positions of a packed batch: row 0 counts tokens inside each sample (what marks the
    sample boundaries for attention); rows 1-3 are each sample's multimodal rotary positions, computed
    by the model's own ``get_rope_index`` on the samples unpacked, as if each were alone."""
    ids, real = unpack_rows(batch, "input_ids")
    if batch.get("mm_token_type_ids") is not None:
        types, _ = unpack_rows(batch, "mm_token_type_ids")
    else:
        types = torch.zeros_like(ids)
    grids = {
        k: batch[k]
        for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
        if batch.get(k) is not None
    }
    rope, _ = model.get_rope_index(ids, mm_token_type_ids=types, attention_mask=real, **grids)
    packed = batch["input_ids"]
    mrope = torch.zeros((3, *packed.shape), dtype=rope.dtype, device=packed.device)
    for s, (r, start, end) in enumerate(sample_spans(batch)):
        mrope[:, r, start:end] = rope[:, s, : end - start]
    return torch.cat([segment_positions(batch).unsqueeze(0).to(rope.dtype), mrope])


def is_sharded(module: nn.Module) -> bool:
    """``module`` is an FSDP2 (``fully_shard``) unit."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def sharded_across_ranks(module: nn.Module) -> bool:
    """``module`` is sharded with FSDP2 in a process group of more than one rank."""
    import torch.distributed as dist

    return is_sharded(module) and dist.is_initialized() and dist.get_world_size() > 1


def placeholder_row(
    backbone: VisionLanguageBackbone, device: torch.device
) -> tuple[dict[str, Any], torch.Tensor]:
    """A one-row text batch of two pad tokens and a mask scoring the second: what a rank with no rows
    runs so that it joins the forwards, backwards and collectives of the others (at zero weight)."""
    ids = torch.full((1, 2), backbone.tokenizer.pad_token_id, device=device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "meta": []}, torch.tensor(
        [[False, True]], device=device
    )


def join_sharded_call(backbone: VisionLanguageBackbone, device: torch.device, **generate_kwargs: Any) -> None:
    """What a rank with no rows runs while the others run a sharded (FSDP2) forward, or with
    ``generate_kwargs`` a ``generate`` call: the same call on a placeholder row, so it joins their
    parameter all-gathers. Its output is dropped; unsharded, it does nothing."""
    if not sharded_across_ranks(backbone):
        return
    batch, scored = placeholder_row(backbone, device)
    with torch.no_grad():
        if generate_kwargs:
            backbone.generate(batch, 1, **generate_kwargs)
        else:
            backbone.token_logprobs(batch, scored)


def response_mask(response: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """1 on each response token up to and including its first end-of-sequence token."""
    is_eos = torch.isin(response, torch.tensor(eos_ids, device=response.device))
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return (~after_eos).long()


def decode_responses(tokenizer: Any, response_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """The text of each response's masked-in tokens (special tokens dropped): what rewards score."""
    kept = torch.where(mask.bool(), response_ids, torch.full_like(response_ids, tokenizer.pad_token_id))
    return tokenizer.batch_decode(kept, skip_special_tokens=True)


def vision_grad_anchor(backbone: VisionLanguageBackbone, batch: dict[str, Any]) -> torch.Tensor | float:
    """Zero, with a (zero) gradient for every trainable vision parameter when ``batch`` has no media.

    Across ranks, gradients are reduced parameter by parameter (DDP buckets, FSDP2 reduce-scatters
    of the parameters that have a gradient): a rank whose micro-batch is text only would leave the
    vision tower out while the others reduce it, and the ranks would wait on different collectives.
    Add this to the loss of every multi-rank backward. Sharded (DTensor) vision blocks are left out:
    ``ShardingSettings.shard_vision_blocks`` documents why they need equal tower calls instead.
    """
    if batch.get("pixel_values") is not None or batch.get("pixel_values_videos") is not None:
        return 0.0
    visual = VisionLanguageBackbone._visual(backbone.model).parameters()
    unreached = [p.sum() for p in visual if p.requires_grad and not hasattr(p, "full_tensor")]
    return 0.0 * sum(unreached) if unreached else 0.0
