"""`VisionLanguageBackbone` on the tiny presets: determinism, batches of every kind, chunked
log-probabilities against the naive computation, generation, freezing, checkpointing, LoRA, export."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from datamodules.collate import Collator, build_example
from datamodules.media import PixelBudget, stage_media
from datamodules.records import load_records
from datamodules.synthetic import generate_suite
from lightning_modules.model.backbone import (
    LoraSettings,
    VisionLanguageBackbone,
    gather_token_logprobs,
    placeholder_row,
    response_mask,
    vision_grad_anchor,
)
from lightning_modules.model.processing import VISION_TOKENS
from tests.numerics import FLOAT64_TOLERANCE, batch_to

pytestmark = pytest.mark.numerics  # rerun under a second CPU kernel set (scripts/test.sh)

FAMILIES = ("qwen3_vl", "qwen2_5_vl")


@pytest.fixture(scope="module")
def sft_records(tmp_path_factory: pytest.TempPathFactory):
    paths = generate_suite(tmp_path_factory.mktemp("suite"), per_task=1, seed=0)
    return load_records(paths["sft"], "sft")


def small_media(family: str):
    """The SFT media settings with tiny pixel budgets and few frames, so batches stay short."""
    factor = 32 if family == "qwen3_vl" else 28
    return dataclasses.replace(
        stage_media("sft", family),
        image=PixelBudget(4 * factor * factor, 16 * factor * factor),
        video_frame=PixelBudget(factor * factor, 4 * factor * factor),
        max_frames=4,
    )


def examples(records, family: str, kinds: tuple[str, ...]):
    """One SFT example per kind: ``image``, ``video`` or ``text`` (an image record with its media removed)."""
    media, out = small_media(family), []
    for kind in kinds:
        source = next(r for r in records if r.data_type == ("image" if kind == "text" else kind))
        if kind == "text":
            source = dataclasses.replace(source, media=())
        ex = build_example(source, "sft", media)
        if kind == "text":
            user = ex.messages[0]
            ex.messages[0] = {**user, "content": [part for part in user["content"] if part["type"] == "text"]}
        out.append(ex)
    return out


def make_batch(backbone: VisionLanguageBackbone, records, kinds: tuple[str, ...], mode: str = "sft") -> dict:
    return Collator(backbone.processor, mode)(examples(records, backbone.family, kinds))


def naive_logprobs(
    backbone: VisionLanguageBackbone, batch: dict, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Full [B, T, vocab] log-softmax over the model's logits, shifted by one, zero off the mask."""
    logits = backbone.hf_model(**backbone.model_inputs(batch), use_cache=False).logits / temperature
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    out = torch.zeros(batch["input_ids"].shape, dtype=logp.dtype)
    out[:, 1:] = torch.where(mask[:, 1:], logp, torch.zeros_like(logp))
    return out


def truncate(batch: dict, length: int) -> dict:
    """The first ``length`` positions of a right-padded batch (media come first, so all of it stays)."""
    out = dict(batch)
    for key in ("input_ids", "attention_mask", "labels", "mm_token_type_ids"):
        if out.get(key) is not None:
            out[key] = out[key][:, :length]
    return out


def vision_ids(backbone: VisionLanguageBackbone) -> list[int]:
    return backbone.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))


# --------------------------------------------------------------------------- presets


def test_tiny_preset_is_deterministic_per_seed():
    state = torch.random.get_rng_state()
    a = VisionLanguageBackbone("tiny", seed=0).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state), (
        "building the preset must not move the global RNG"
    )
    b = VisionLanguageBackbone("tiny", seed=0).state_dict()
    c = VisionLanguageBackbone("tiny", seed=1).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    differs = [k for k in a if a[k].is_floating_point() and a[k].std() > 0 and not torch.equal(a[k], c[k])]
    assert any("visual" in k for k in differs) and any("language_model" in k for k in differs)


@pytest.mark.parametrize("family", FAMILIES)
def test_both_families_build_with_the_real_tokenizer(family: str):
    bb = VisionLanguageBackbone("tiny", family=family)
    assert bb.family == family
    assert bb.hf_model.config.model_type == family
    tok = bb.tokenizer
    assert len(tok) <= bb.hf_model.config.text_config.vocab_size
    # Token ids in the config are the real tokenizer's.
    for key, token in (
        ("image_token_id", "<|image_pad|>"),
        ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"),
    ):
        assert getattr(bb.hf_model.config, key) == tok.convert_tokens_to_ids(token)


# --------------------------------------------------------------------------- forward / backward


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "kinds",
    [("image",), ("video",), ("image", "video", "text")],
    ids=["image", "video", "mixed"],
)
def test_forward_backward_on_image_video_and_mixed_batches(sft_records, family: str, kinds: tuple[str, ...]):
    bb = VisionLanguageBackbone("tiny", family=family)
    bb.set_trainable(True, True)
    bb.train()
    batch = make_batch(bb, sft_records, kinds)
    has_image, has_video = "image" in kinds, "video" in kinds
    assert (batch["pixel_values"] is not None) == has_image
    assert (batch["pixel_values_videos"] is not None) == has_video
    hidden = bb(batch)
    assert hidden.shape == (*batch["input_ids"].shape, bb.hf_model.config.text_config.hidden_size)
    mask = batch["labels"] != -100
    loss = -(bb.token_logprobs(batch, mask).sum() / mask.sum())
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    grads = {n: p.grad for n, p in bb.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    lm = [g for n, g in grads.items() if "language_model" in n]
    assert lm and all(g is not None for g in lm)
    # Pixels reach the model: the vision tower gets gradient.
    visual = [g for n, g in grads.items() if ".visual." in n and "merger" not in n]
    assert visual
    assert any(g is not None and g.abs().sum() > 0 for g in visual)


# --------------------------------------------------------------------------- token log-probabilities


@pytest.fixture(scope="module")
def logprob_case(sft_records):
    """The tiny model and a batch in float64: the chunked and naive paths are compared there,
    where summation order costs ~1e-16 on any CPU kernel set (``tests/numerics.py``)."""
    bb = VisionLanguageBackbone("tiny", family="qwen3_vl", seed=3).double()
    bb.set_trainable(True, True)
    batch = batch_to(truncate(make_batch(bb, sft_records, ("image", "text")), 64), torch.float64)
    gen = torch.Generator().manual_seed(0)
    mask = (torch.rand(batch["input_ids"].shape, generator=gen) < 0.6) & batch["attention_mask"].bool()
    weights = torch.randn(batch["input_ids"].shape, generator=gen, dtype=torch.float64)
    return bb, batch, mask, weights


@pytest.mark.parametrize(("chunk", "temperature"), [(1024, 1.0), (7, 0.7)])
def test_token_logprobs_match_naive_log_softmax(logprob_case, chunk: int, temperature: float):
    bb, batch, mask, weights = logprob_case
    bb.logprob_chunk_size = chunk
    params = [p for p in bb.parameters() if p.requires_grad]
    rows: list[int] = []  # rows of hidden states each lm_head call projects
    handle = bb.hf_model.lm_head.register_forward_hook(
        lambda m, args, out: rows.append(math.prod(args[0].shape[:-1]))
    )
    try:
        got = bb.token_logprobs(batch, mask, temperature=temperature)
        g_got = torch.autograd.grad((got * weights).sum(), params, allow_unused=True)
    finally:
        handle.remove()
    targets = int(mask[:, 1:].sum())
    assert max(rows) <= chunk
    # Forward, then the checkpointed recomputation in backward: no other position is ever projected.
    assert sum(rows) == 2 * targets

    want = naive_logprobs(bb, batch, mask, temperature)
    assert got.dtype == torch.float64 and got.shape == batch["input_ids"].shape
    assert (got[~mask] == 0).all() and (got[:, 0] == 0).all()
    assert (got[:, 1:][mask[:, 1:]] < 0).all()
    torch.testing.assert_close(got.detach(), want.detach(), **FLOAT64_TOLERANCE)

    g_want = torch.autograd.grad((want * weights).sum(), params, allow_unused=True)
    compared = 0
    for a, b in zip(g_got, g_want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, **FLOAT64_TOLERANCE)
            compared += 1
    assert compared > len(params) // 2


def test_fused_cross_entropy_path_equals_the_log_softmax_path_in_float32():
    """Temperature 1 without entropy takes one fused cross-entropy per chunk; its log-probs and
    gradients equal the log-softmax + gather path (taken when the entropy is asked for) within 1e-5."""
    gen = torch.Generator().manual_seed(0)
    head = nn.Linear(32, 1000, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.3)
    hidden = torch.randn(50, 32, generator=gen, requires_grad=True)
    targets = torch.randint(0, 1000, (50,), generator=gen)
    weights = torch.randn(50, generator=gen)
    results = []
    for with_entropy in (False, True):
        out = gather_token_logprobs(hidden, head, targets, chunk_size=16, with_entropy=with_entropy)
        logp = out[0] if with_entropy else out
        grads = torch.autograd.grad((logp * weights).sum(), [hidden, head.weight])
        results.append((logp.detach(), grads))
    (fused, g_fused), (plain, g_plain) = results
    assert fused.dtype == torch.float32 and fused.shape == (50,)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fused, g_plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("model_dtype", "score"),
    [(torch.bfloat16, torch.float32), (torch.float32, torch.float32), (torch.float64, torch.float64)],
)
def test_logprobs_are_scored_in_float32_at_least(model_dtype: torch.dtype, score: torch.dtype):
    torch.manual_seed(0)
    head = nn.Linear(8, 50, bias=False).to(model_dtype)
    h = torch.randn(6, 8, dtype=model_dtype)
    targets = torch.randint(50, (6,))
    logp, entropy = gather_token_logprobs(h, head, targets, chunk_size=4, with_entropy=True)
    assert logp.dtype == entropy.dtype == score
    # The head's own logits, then a float64 log-softmax; compared at the default tolerance of the score dtype.
    want = torch.log_softmax(head(h).double(), -1)[torch.arange(6), targets]
    torch.testing.assert_close(logp, want.to(score))
    assert gather_token_logprobs(h[:0], head, targets[:0]).dtype == score


class RecordingHead(nn.Linear):
    """An lm_head that records how many rows of logits it is asked for at once."""

    def __init__(self, hidden: int, vocab: int):
        super().__init__(hidden, vocab, bias=False)
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(x.shape[0])
        return super().forward(x)


def saved_logits_numel(fn, vocab: int) -> int:
    """Elements of [*, vocab] float tensors autograd keeps for the backward pass of ``fn()``."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if t.is_floating_point() and t.dim() >= 1 and t.shape[-1] == vocab:
            total += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.sum().backward()
    return total


def test_gather_token_logprobs_never_holds_more_than_a_chunk_of_logits():
    torch.manual_seed(0)
    n, hidden, vocab, chunk = 37, 8, 50, 5
    head = RecordingHead(hidden, vocab).double()
    h = torch.randn(n, hidden, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(vocab, (n,))

    got = gather_token_logprobs(h, head, targets, chunk_size=chunk, temperature=0.8)
    want = torch.log_softmax(head(h) / 0.8, dim=-1)[torch.arange(n), targets]
    torch.testing.assert_close(got, want, **FLOAT64_TOLERANCE)
    g_want = torch.autograd.grad(want.sum(), h)[0]
    g_got = torch.autograd.grad(got.sum(), h)[0]
    torch.testing.assert_close(g_got, g_want, **FLOAT64_TOLERANCE)

    head.rows.clear()
    h.grad = None
    held = saved_logits_numel(lambda: gather_token_logprobs(h, head, targets, chunk_size=chunk), vocab)
    assert max(head.rows) <= chunk
    assert len(head.rows) == 2 * math.ceil(n / chunk)  # each chunk recomputed in backward
    assert held <= chunk * vocab
    # The same probe sees the full logits when they are computed naively (the check can fail).
    assert (
        saved_logits_numel(lambda: torch.log_softmax(head(h), -1)[torch.arange(n), targets], vocab)
        >= n * vocab
    )

    with torch.no_grad():
        head.rows.clear()
        torch.testing.assert_close(
            gather_token_logprobs(h, head, targets, chunk, 0.8), want.detach(), **FLOAT64_TOLERANCE
        )
        assert max(head.rows) <= chunk
    assert gather_token_logprobs(h[:0], head, targets[:0], chunk_size=chunk).shape == (0,)


# --------------------------------------------------------------------------- generation


def test_response_mask_by_hand():
    E, P = 9, 8  # end-of-turn and end-of-text ids
    response = torch.tensor(
        [
            [5, 7, E, 3, E],
            [E, 1, 2, 3, 4],
            [1, 2, 3, 4, 5],
            [1, P, E, P, P],
            [1, 2, 3, 4, E],
        ]
    )
    want = torch.tensor(
        [
            [1, 1, 1, 0, 0],
            [1, 0, 0, 0, 0],
            [1, 1, 1, 1, 1],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 1, 1],
        ]
    )
    assert torch.equal(response_mask(response, [E, P]), want)
    assert torch.equal(response_mask(response, [E])[3], torch.tensor([1, 1, 1, 0, 0]))


class Bias:
    """lm_head forward hook: vision tokens dominate every step; end-of-turn wins for ``end_row`` at ``end_call``."""

    def __init__(self, vision: list[int], end_id: int, end_row: int, end_call: int):
        self.vision, self.end_id, self.end_row, self.end_call, self.calls = (
            vision,
            end_id,
            end_row,
            end_call,
            0,
        )

    def __call__(self, module, args, out):
        self.calls += 1
        out = out.clone()
        out[..., self.vision] += 1e4
        if self.calls == self.end_call:
            out[self.end_row, ..., self.end_id] += 2e4
        return out


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_never_emits_vision_tokens_and_masks_after_end_of_turn(sft_records, family: str):
    bb = VisionLanguageBackbone("tiny", family=family, seed=5)
    bb.eval()
    batch = make_batch(bb, sft_records, ("image", "video", "text"), mode="rl")
    assert (batch["attention_mask"][:, -1] == 1).all(), "prompts are left-padded"
    vision, tok = vision_ids(bb), bb.tokenizer
    end_id, pad_id = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id

    # With the bias, the unsuppressed next token would be a vision token in every row.
    handle = bb.hf_model.lm_head.register_forward_hook(Bias(vision, end_id, end_row=1, end_call=0))
    with torch.no_grad():
        logits = bb.hf_model(**bb.model_inputs(batch), use_cache=False, logits_to_keep=1).logits[:, -1]
    assert set(logits.argmax(-1).tolist()) <= set(vision)
    handle.remove()

    # Greedy; row 1 is pushed to end its turn at its third token.
    new = 6
    handle = bb.hf_model.lm_head.register_forward_hook(Bias(vision, end_id, end_row=1, end_call=3))
    try:
        out = bb.generate(batch, max_new_tokens=new, do_sample=False)
    finally:
        handle.remove()
    rows = len(batch["meta"])
    ids, mask = out["response_ids"], out["response_mask"]
    assert ids.shape == mask.shape == (rows, new)
    assert torch.equal(out["sequences"][:, : batch["input_ids"].shape[1]], batch["input_ids"])
    assert not torch.isin(ids, torch.tensor(vision)).any()
    assert ids[1, 2] == end_id and (ids[1, 3:] == pad_id).all()
    assert mask[1].tolist() == [1, 1, 1, 0, 0, 0]
    for r in range(rows):  # independently: 1 up to and including the first end token
        ends = [
            i
            for i, t in enumerate(ids[r].tolist())
            if t in (end_id, tok.convert_tokens_to_ids("<|endoftext|>"))
        ]
        stop = ends[0] + 1 if ends else new
        assert mask[r].tolist() == [1] * stop + [0] * (new - stop)

    # Sampling at temperature / top-p, two samples per prompt, keeps the suppression.
    handle = bb.hf_model.lm_head.register_forward_hook(Bias(vision, end_id, end_row=0, end_call=0))
    try:
        torch.manual_seed(0)
        out = bb.generate(batch, num_return_sequences=2, temperature=1.3, top_p=0.9, max_new_tokens=4)
    finally:
        handle.remove()
    assert out["response_ids"].shape[0] == 2 * rows
    assert torch.equal(
        out["sequences"][:, : batch["input_ids"].shape[1]], batch["input_ids"].repeat_interleave(2, 0)
    )
    assert not torch.isin(out["response_ids"], torch.tensor(vision)).any()


# --------------------------------------------------------------------------- freezing


def names_by_part(bb: VisionLanguageBackbone) -> dict[str, dict[str, bool]]:
    parts: dict[str, dict[str, bool]] = {"tower": {}, "projector": {}, "language": {}}
    for name, p in bb.hf_model.named_parameters():
        if ".visual." in f".{name}":
            sub = name.split("visual.", 1)[1]
            parts["projector" if sub.startswith(("merger", "deepstack_merger_list")) else "tower"][name] = (
                p.requires_grad
            )
        else:
            parts["language"][name] = p.requires_grad
    return parts


@pytest.mark.parametrize("family", FAMILIES)
def test_freezing_defaults_and_set_trainable(family: str):
    bb = VisionLanguageBackbone("tiny", family=family)
    parts = names_by_part(bb)
    assert all(len(v) > 0 for v in parts.values())
    assert any("embed_tokens" in n for n in parts["language"])
    assert not any(parts["tower"].values()) and not any(parts["projector"].values())
    assert all(parts["language"].values())
    for tower, projector in [(True, False), (False, True), (True, True), (False, False)]:
        bb.set_trainable(tower, projector)
        parts = names_by_part(bb)
        assert set(parts["tower"].values()) == {tower}
        assert set(parts["projector"].values()) == {projector}
        assert all(parts["language"].values())
    unfrozen = names_by_part(VisionLanguageBackbone("tiny", family=family, freeze_vision_tower=False))
    assert all(unfrozen["tower"].values()) and not any(unfrozen["projector"].values())


def test_vision_grad_anchor_gives_text_batches_a_zero_vision_gradient(sft_records):
    """A text-only batch reaches no vision parameter; with the anchor every trainable one gets a zero
    gradient (the loss is unchanged), frozen ones none. A batch with media needs no anchor."""
    bb = VisionLanguageBackbone("tiny", freeze_vision_tower=False, freeze_projector=True)
    text, scored = placeholder_row(bb, torch.device("cpu"))
    loss = bb.token_logprobs(text, scored).sum()
    anchored = loss + vision_grad_anchor(bb, text)
    assert float(anchored) == float(loss)
    anchored.backward()
    visual = dict(VisionLanguageBackbone._visual(bb.model).named_parameters())
    trainable = [p for p in visual.values() if p.requires_grad]
    assert trainable and all(p.grad is not None and not p.grad.any() for p in trainable)
    assert all(p.grad is None for p in visual.values() if not p.requires_grad)
    assert vision_grad_anchor(bb, make_batch(bb, sft_records, ("image",))) == 0.0


# --------------------------------------------------------------------------- gradient checkpointing


def loss_and_grads(bb: VisionLanguageBackbone, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    bb.train()
    bb.zero_grad(set_to_none=True)
    mask = batch["labels"] != -100
    loss = -(bb.token_logprobs(batch, mask).sum() / mask.sum())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in bb.named_parameters() if p.grad is not None}


def counted(fn, calls: dict[str, int], key: str):
    def wrapper(*args, **kwargs):
        calls[key] += 1
        return fn(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_matches_plain_backward(sft_records, family: str):
    plain = VisionLanguageBackbone("tiny", family=family, freeze_projector=False).double()
    ckpt = VisionLanguageBackbone(
        "tiny", family=family, freeze_projector=False, gradient_checkpointing=True
    ).double()
    batch = batch_to(make_batch(plain, sft_records, ("image", "text")), torch.float64)
    calls = {"plain": 0, "ckpt": 0}
    for key, bb in (("plain", plain), ("ckpt", ckpt)):
        mlp = bb.hf_model.model.language_model.layers[0].mlp  # inside the checkpointed layer
        mlp.forward = counted(mlp.forward, calls, key)
    loss_a, grads_a = loss_and_grads(plain, batch)
    loss_b, grads_b = loss_and_grads(ckpt, batch)
    assert calls == {"plain": 1, "ckpt": 2}, "checkpointed layers are recomputed in backward"
    torch.testing.assert_close(loss_b, loss_a, **FLOAT64_TOLERANCE)
    assert grads_a.keys() == grads_b.keys() and any("merger" in k for k in grads_a)
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], **FLOAT64_TOLERANCE)


# --------------------------------------------------------------------------- LoRA


def test_lora_initialisation_ignores_the_callers_rng():
    """FSDP2 ranks never broadcast parameters: each must draw the same adapters whatever its RNG state."""
    torch.manual_seed(1)
    a = VisionLanguageBackbone("tiny", seed=0, lora=LoraSettings(r=4, alpha=8))
    torch.manual_seed(2)
    b = VisionLanguageBackbone("tiny", seed=0, lora=LoraSettings(r=4, alpha=8))
    c = VisionLanguageBackbone("tiny", seed=1, lora=LoraSettings(r=4, alpha=8))
    lora_a = lambda bb: [p for n, p in bb.named_parameters() if "lora_A" in n]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(lora_a(a), lora_a(b)))
    assert not all(torch.equal(x, y) for x, y in zip(lora_a(a), lora_a(c)))


def perturb_lora(bb: VisionLanguageBackbone) -> None:
    """LoRA B starts at zero (an identity adapter); give it weights so merging is visible."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in bb.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def reference_logits(model: nn.Module, batch: dict, last: int = 32) -> torch.Tensor:
    """Last hidden states at every position, and the logits of the ``last`` positions (full logits are large)."""
    with torch.no_grad():
        out = model(
            **VisionLanguageBackbone.model_inputs(batch),
            use_cache=False,
            logits_to_keep=last,
            output_hidden_states=True,
        )
    return torch.cat([out.hidden_states[-1].flatten(1), out.logits.flatten(1)], dim=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_only_adapters_outside_the_vision_tower(sft_records, family: str):
    bb = VisionLanguageBackbone("tiny", family=family, lora=LoraSettings(r=4, alpha=8))
    trainable = [n for n, p in bb.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    lora_modules = [n for n, m in bb.named_modules() if hasattr(m, "lora_A")]
    assert lora_modules and not any(".visual." in n for n in lora_modules)
    # Every target projection of every language layer is adapted.
    layers = bb.hf_model.config.text_config.num_hidden_layers
    assert len(lora_modules) == layers * len(LoraSettings().target_modules)

    batch = make_batch(bb, sft_records, ("image", "text"))
    bb.train()
    mask = batch["labels"] != -100
    (-(bb.token_logprobs(batch, mask).sum() / mask.sum())).backward()
    with_grad = {n for n, p in bb.named_parameters() if p.grad is not None}
    assert with_grad == set(trainable)
    assert any(bb.get_parameter(n).grad.abs().sum() > 0 for n in with_grad if "lora_B" in n)

    vision = VisionLanguageBackbone(
        "tiny", family=family, lora=LoraSettings(r=4, include_vision=True, target_modules=["qkv", "q_proj"])
    )
    names = [n for n, m in vision.named_modules() if hasattr(m, "lora_A")]
    assert any(".visual." in n for n in names) and any("language_model" in n for n in names)


def test_lora_save_pretrained_merges_adapters(sft_records, tmp_path: Path):
    family = "qwen3_vl"  # merging is peft's, the same for both families; export covers both
    from transformers import AutoModelForImageTextToText

    bb = VisionLanguageBackbone("tiny", family=family, lora=LoraSettings(r=4, alpha=8))
    perturb_lora(bb)
    bb.eval()
    batch = make_batch(bb, sft_records, ("image", "video", "text"))
    lora_logits = reference_logits(bb.hf_model, batch)
    base = VisionLanguageBackbone("tiny", family=family).eval()
    assert (reference_logits(base.hf_model, batch) - lora_logits).abs().max() > 1e-2, (
        "the adapters change the model"
    )

    bb.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert not any("lora" in k for k in reloaded.state_dict())
    # Merging reassociates float32 sums (W + BA)x vs Wx + B(Ax): equal up to rounding.
    torch.testing.assert_close(reference_logits(reloaded, batch), lora_logits, atol=1e-4, rtol=1e-4)
    # Saving leaves the training model's adapters in place.
    assert any("lora_B" in n for n, _ in bb.named_parameters())
    torch.testing.assert_close(reference_logits(bb.hf_model, batch), lora_logits, atol=0, rtol=0)


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("family", FAMILIES)
def test_export_round_trip_through_from_pretrained(sft_records, family: str, tmp_path: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    bb = VisionLanguageBackbone("tiny", family=family, seed=11).eval()
    with torch.no_grad():  # trained-looking weights, not a re-creatable initialisation
        for p in bb.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = make_batch(bb, sft_records, ("image", "video", "text"))
    want = reference_logits(bb.hf_model, batch)

    bb.save_pretrained(tmp_path)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(processor) is type(bb.processor)
    again = Collator(processor, "sft")(examples(sft_records, family, ("image", "video", "text")))
    for key in (
        "input_ids",
        "attention_mask",
        "labels",
        "pixel_values",
        "pixel_values_videos",
        "image_grid_thw",
        "video_grid_thw",
    ):
        assert torch.equal(again[key], batch[key]), key
    torch.testing.assert_close(reference_logits(model, again), want, atol=1e-5, rtol=1e-5)


def test_decode_responses_keeps_only_masked_in_tokens():
    import torch

    from lightning_modules.model.backbone import decode_responses
    from lightning_modules.model.processing import qwen_tokenizer

    tok = qwen_tokenizer()
    first, second = tok.encode("<answer>B</answer>"), tok.encode(" tail")
    end = tok.convert_tokens_to_ids("<|im_end|>")
    ids = torch.tensor([first + [end] + second])
    mask = torch.tensor([[1] * (len(first) + 1) + [0] * len(second)])
    assert decode_responses(tok, ids, mask) == ["<answer>B</answer>"]
    assert decode_responses(tok, ids, torch.ones_like(mask)) == ["<answer>B</answer> tail"]
