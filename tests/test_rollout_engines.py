"""Rollout engines without vLLM: the requests a vLLM engine is given expand back to our prompt ids,
the sampling parameters, one layout for every engine (replaying HF ``generate``'s tokens gives
`HFGenerateEngine`'s rollouts), the weight stream under vLLM's names (LoRA merged), and the
engine's call order against a recording fake of ``vllm.LLM``, alone and inside a GRPO fit."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers.video_utils import VideoMetadata

from datamodules.collate import Collator, build_example
from datamodules.records import load_records
from lightning_modules.model.backbone import LoraSettings, VisionLanguageBackbone
from lightning_modules.model.processing import build_processor
from lightning_modules.rl import vllm_engine
from lightning_modules.rl.rollout import (
    HFGenerateEngine,
    RolloutEngine,
    Rollouts,
    layout_rollouts,
    pad_completions,
    rollout_seed,
)
from lightning_modules.rl.rollout_requests import build_requests, request_seed, sampling_params
from lightning_modules.rl.vllm_engine import VLLMColocateEngine, completion_tokens
from lightning_modules.rl.vllm_weights import policy_weights, vllm_name
from tests.fake_vllm import ENGINE_LOGPROB, FakeLLM, fake_llm_factory
from tests.test_backbone import perturb_lora
from tests.test_grpo import grpo_run, media_files, mixed_prompts, mixed_task_manifest, tiny_media, toy_rewards  # noqa: F401

FAMILIES = ("qwen3_vl", "qwen2_5_vl")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- requests


@pytest.fixture(scope="module")
def rl_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datamodules.synthetic import generate_suite

    return generate_suite(tmp_path_factory.mktemp("suite"), per_task=1, seed=0)["rl"]


def rl_batch(manifest: Path, family: str, kinds: tuple[str, ...]) -> tuple[dict[str, Any], Any]:
    """A left-padded RL batch, one record of each listed data type, in that order."""
    processor = build_processor(family)
    records = load_records(manifest, "rl")
    picked = [next(r for r in records if r.data_type == kind and r.media) for kind in kinds]
    media = tiny_media(family)
    return Collator(processor, "rl")([build_example(r, "rl", media) for r in picked]), processor


@pytest.mark.parametrize("family", FAMILIES)
def test_requests_expand_back_to_the_collated_prompt_ids(rl_manifest: Path, family: str):
    """The HF processor, given a request's unexpanded ids (as text) and its media, reproduces the
    collated row exactly: image rows, and video rows with Qwen3-VL's per-frame timestamps."""
    batch, processor = rl_batch(rl_manifest, family, ("image", "video", "image"))
    tok = processor.tokenizer
    requests = build_requests(batch, tok, timestamped_video=family == "qwen3_vl")
    assert len(requests) == 3 and batch["attention_mask"].min() == 0  # left padding was there to remove
    for row, request in enumerate(requests):
        text = tok.decode(
            request.prompt_token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        pads = text.count("<|image_pad|>") + text.count("<|video_pad|>")
        assert pads == 1 and "seconds>" not in text, text  # one placeholder, nothing expanded
        kwargs: dict[str, Any] = {"images": request.images or None}
        if request.videos:
            frames, meta = request.videos[0]
            assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype.name == "uint8"
            kwargs.update(videos=[frames], video_metadata=[VideoMetadata(**meta)], do_sample_frames=False)
        expanded = processor(text=[text], do_resize=False, return_tensors="pt", **kwargs)["input_ids"][0]
        want = batch["input_ids"][row][batch["attention_mask"][row].bool()]
        assert expanded.tolist() == want.tolist(), row
        assert len(request.prompt_token_ids) <= len(want) - (1 if request.videos else 0)
    assert requests[1].videos and not requests[1].images and requests[0].images and not requests[0].videos
    vllm_prompt = requests[1].as_vllm()
    assert vllm_prompt["mm_processor_kwargs"] == {"do_resize": False, "do_sample_frames": False}
    assert set(vllm_prompt["multi_modal_data"]) == {"video"}


def test_a_batch_without_row_media_is_refused(rl_manifest: Path):
    batch, processor = rl_batch(rl_manifest, "qwen3_vl", ("image",))
    del batch["row_media"]
    with pytest.raises(ValueError, match="row_media"):
        build_requests(batch, processor.tokenizer, timestamped_video=True)


def test_sampling_params_golden():
    assert sampling_params(8, 1.0, 1.0, 4096, 1234, [151645, 151643]) == {
        "n": 8,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "max_tokens": 4096,
        "seed": 1234,
        "stop_token_ids": [151645, 151643],
        "bad_words": [
            "<|vision_start|>",
            "<|vision_end|>",
            "<|vision_pad|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ],
        "logprobs": 0,
        "skip_special_tokens": True,
    }


def test_seeds_by_rank_step_and_row():
    assert rollout_seed(2, 3, 1) == 2 * 1_000_003 + 3 * 7919 + 1  # the formula GRPO seeded torch with
    assert rollout_seed(0, 0, 0) != rollout_seed(0, 0, 1) != rollout_seed(0, 1, 0)
    assert request_seed(5, 2) == (5 * 1_000_003 + 2 * 9973) % 2**31
    seeds = {
        request_seed(rollout_seed(0, step, rank), row)
        for step in range(50)
        for rank in range(8)
        for row in range(16)
    }
    assert len(seeds) == 50 * 8 * 16 and all(0 <= s < 2**31 for s in seeds)


# --------------------------------------------------------------------------- one layout


def test_layout_by_hand():
    """A response ends at its first end-of-turn token; what follows becomes padding; the engine's
    log-probs land on the response positions (NaN kept where it gave none)."""
    bb = VisionLanguageBackbone("tiny", seed=0)
    tok, end = bb.tokenizer, bb.end_token_ids[0]
    prompts = {
        "input_ids": torch.tensor([[tok.pad_token_id, 11, 12]]),
        "attention_mask": torch.tensor([[0, 1, 1]]),
    }
    prompts |= {"meta": [{"data_type": "image", "media": []}]}
    a, b = tok.encode("A", add_special_tokens=False)[0], tok.encode("B", add_special_tokens=False)[0]
    response = torch.tensor([[a, end, b, b], [b, b, b, b]])
    engine_lp = torch.tensor([[-0.1, -0.2, -0.3, -0.4], [-1.0, float("nan"), -1.0, -1.0]])
    ro = layout_rollouts(bb, prompts, response, 2, sampling_logprobs=engine_lp)
    pad = tok.pad_token_id
    assert ro.batch["input_ids"].tolist() == [[pad, 11, 12, a, end, pad, pad], [pad, 11, 12, b, b, b, b]]
    assert ro.batch["attention_mask"].tolist() == [[0, 1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1]]
    assert ro.response_mask.tolist() == [[0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1]]
    assert ro.responses == ["A", "BBBB"] and ro.generated_tokens == 6 and ro.group_ids.tolist() == [0, 0]
    assert ro.sampling_logprobs[0].tolist() == pytest.approx([0, 0, 0, -0.1, -0.2, 0, 0])
    assert ro.sampling_logprobs[1, 4].isnan() and ro.sampling_logprobs[1, 3] == -1.0


class Replay(RolloutEngine):
    """Returns given completions (token lists), as a vLLM engine does."""

    def __init__(self, completions: list[list[int]]):
        self.completions = completions

    def __call__(self, backbone, prompts, rollouts_per_prompt, seed=0) -> Rollouts:
        return layout_rollouts(
            backbone,
            prompts,
            pad_completions(self.completions, backbone.tokenizer.pad_token_id),
            rollouts_per_prompt,
        )


def assert_same_rollouts(got: Rollouts, want: Rollouts) -> None:
    assert got.batch.keys() == want.batch.keys()
    for key, value in want.batch.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got.batch[key], value), key
        else:
            assert got.batch[key] == value, key
    assert torch.equal(got.response_mask, want.response_mask)
    assert got.responses == want.responses and got.meta == want.meta
    assert torch.equal(got.group_ids, want.group_ids) and got.generated_tokens == want.generated_tokens


@pytest.mark.parametrize("family", FAMILIES)
def test_replayed_generate_tokens_give_the_hf_engines_rollouts(media_files, family: str):  # noqa: F811
    bb = VisionLanguageBackbone("tiny", family=family, seed=0)
    prompts = mixed_prompts(bb, media_files)
    bb.end_token_ids = [
        *bb.end_token_ids,
        *bb.tokenizer.encode(" the", add_special_tokens=False),
    ]  # some rows end early
    torch.manual_seed(7)
    want = HFGenerateEngine(max_new_tokens=6)(bb, prompts, 2)
    torch.manual_seed(7)
    out = bb.generate(prompts, num_return_sequences=2, max_new_tokens=6)
    completions = [ids[: int(m.sum())].tolist() for ids, m in zip(out["response_ids"], out["response_mask"])]
    assert_same_rollouts(Replay(completions)(bb, prompts, 2), want)


# --------------------------------------------------------------------------- weight stream


def test_vllm_names():
    assert (
        vllm_name("model.language_model.layers.0.self_attn.q_proj.weight")
        == "language_model.model.layers.0.self_attn.q_proj.weight"
    )
    assert vllm_name("model.visual.blocks.1.attn.qkv.weight") == "visual.blocks.1.attn.qkv.weight"
    assert vllm_name("lm_head.weight") == "language_model.lm_head.weight"
    assert (
        vllm_name("model.language_model.layers.0.mlp.up_proj.base_layer.weight")
        == "language_model.model.layers.0.mlp.up_proj.weight"
    )
    with pytest.raises(ValueError, match="no vLLM name"):
        vllm_name("model.other.weight")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_is_sent_once_under_a_vllm_name(family: str):
    bb = VisionLanguageBackbone("tiny", family=family, seed=0)
    sent = list(policy_weights(bb))
    names = [name for name, _ in sent]
    params = dict(bb.hf_model.named_parameters())  # tied weights appear once
    assert len(names) == len(set(names)) == len(params)
    assert all(name.startswith(("language_model.model.", "visual.")) for name in names)
    assert bb.hf_model.config.tie_word_embeddings and "language_model.model.embed_tokens.weight" in names
    by_vllm = {vllm_name(name): p for name, p in params.items()}
    assert all(torch.equal(tensor, by_vllm[name]) for name, tensor in sent)
    cast = dict(policy_weights(bb, dtype=torch.bfloat16))
    assert all(t.dtype == torch.bfloat16 for t in cast.values())


def test_lora_is_merged_as_peft_merges_it():
    bb = VisionLanguageBackbone("tiny", seed=0, lora=LoraSettings(r=4, alpha=8))
    perturb_lora(bb)
    merged = copy.deepcopy(bb.model).merge_and_unload()
    want = {vllm_name(name): p for name, p in merged.named_parameters()}
    sent = dict(policy_weights(bb))
    assert sent.keys() == want.keys()
    lora_targets = [n for n in sent if n.endswith("q_proj.weight") and n.startswith("language_model")]
    assert lora_targets
    for name, tensor in sent.items():
        torch.testing.assert_close(tensor, want[name], atol=1e-6, rtol=1e-6)
    base = dict(bb.hf_model.named_parameters())
    q = next(n for n in base if n.endswith("q_proj.base_layer.weight") and "language_model" in n)
    assert not torch.allclose(sent[vllm_name(q)], base[q])  # the adapter changed the sent weight


# --------------------------------------------------------------------------- the engine's call order


@pytest.fixture
def fake_vllm(monkeypatch):
    calls: list = []
    holder: dict[str, FakeLLM] = {}

    monkeypatch.setattr(vllm_engine, "build_llm", fake_llm_factory(calls, holder))
    monkeypatch.setattr(vllm_engine, "make_sampling_params", dict)
    return calls, holder


def test_engine_call_order_and_no_reload_of_the_same_version(fake_vllm, media_files):  # noqa: F811
    calls, holder = fake_vllm
    bb = VisionLanguageBackbone("tiny", seed=0)
    prompts = mixed_prompts(bb, media_files)
    engine = VLLMColocateEngine(max_new_tokens=16, gpu_memory_utilization=0.3)
    engine.setup(bb, rank=1, world_size=2)
    args = holder["llm"].engine_args
    assert args["load_format"] == "dummy" and args["distributed_executor_backend"] == "external_launcher"
    assert (
        args["enable_sleep_mode"]
        and args["gpu_memory_utilization"] == 0.3
        and args["tensor_parallel_size"] == 1
    )
    assert (Path(args["model"]) / "config.json").exists()
    n_params = len(dict(bb.hf_model.named_parameters()))
    engine.sync_weights(bb, version=0)
    ro = engine(bb, prompts, 2, seed=11)
    engine.sync_weights(bb, version=0)  # a resample round: the policy has not changed
    engine(bb, prompts, 2, seed=12)
    engine.sync_weights(bb, version=1)
    assert calls == [
        ("init",), ("sleep", 1),
        ("wake", ("weights",)), ("load", n_params), ("wake", ("kv_cache",)), ("generate", 4), ("sleep", 1),
        ("wake", ("weights",)), ("wake", ("kv_cache",)), ("generate", 4), ("sleep", 1),
        ("wake", ("weights",)), ("load", n_params),
    ]  # fmt: skip
    assert holder["llm"].loaded.keys() == {name for name, _ in policy_weights(bb)}
    # Every completion ends with the end-of-turn token, which is scored; the log-probs line up.
    assert ro.responses[:2] == ["<answer>0.0</answer>", "<answer>0.1</answer>"]
    ends = ro.batch["input_ids"][ro.response_mask.bool()]
    assert int((ends == bb.end_token_ids[0]).sum()) == 8
    reported = ro.sampling_logprobs[ro.response_mask.bool()]
    assert int(reported.isnan().sum()) == 4 and torch.all(reported[~reported.isnan()] == ENGINE_LOGPROB)
    engine.teardown()
    assert not Path(args["model"]).exists()


def test_sleep_level_two_reloads_every_rollout(fake_vllm):
    calls, _ = fake_vllm
    bb = VisionLanguageBackbone("tiny", seed=0)
    engine = VLLMColocateEngine(sleep_level=2)
    engine.setup(bb, 0, 1)
    engine.sync_weights(bb, version=0)
    engine.sleep()
    engine.sync_weights(bb, version=0)
    assert [c[0] for c in calls] == ["init", "sleep", "wake", "load", "sleep", "wake", "load"]


def test_completion_tokens_keep_the_stop_token():
    stop = [7, 8]
    done = SimpleNamespace(token_ids=[1, 2, 7], logprobs=None, finish_reason="stop", stop_reason=7)
    cut = SimpleNamespace(token_ids=[1, 2], logprobs=[{1: SimpleNamespace(logprob=-1.0)}, {2: SimpleNamespace(logprob=-2.0)}],
                          finish_reason="stop", stop_reason=8)  # fmt: skip
    long = SimpleNamespace(token_ids=[1, 2], logprobs=None, finish_reason="length", stop_reason=None)
    assert completion_tokens(done, stop) == ([1, 2, 7], None)
    tokens, lps = completion_tokens(cut, stop)
    assert tokens == [1, 2, 8] and lps[:2] == [-1.0, -2.0] and lps[2] != lps[2]  # NaN: unknown
    assert completion_tokens(long, stop) == ([1, 2], None)


def test_grpo_fit_with_the_vllm_engine_logs_the_gap(fake_vllm, toy_rewards, tmp_path: Path):  # noqa: F811
    """Two RL steps through GRPOModule with the colocated engine (fake vLLM): the weights are loaded
    once per policy version (resample rounds reuse them), the trainer/engine log-prob gap is logged,
    and truncated importance sampling trains."""
    calls, holder = fake_vllm
    engine = VLLMColocateEngine(max_new_tokens=16)
    module, spy, *_ = grpo_run(mixed_task_manifest(tmp_path), 2, rollout=engine, tis_cap=2.0)
    logged = spy.steps()
    gaps = logged["train/rollout_logprob_gap/mean"]
    assert (
        len(gaps) == 2 and all(g > 30 for g in gaps) and logged["train/rollout_logprob_gap/max"][0] >= gaps[0]
    )
    loads = [c for c in calls if c[0] == "load"]
    generates = [c for c in calls if c[0] == "generate"]
    assert len(loads) == 2 and len(generates) > 2  # one load per policy version; resample rounds reuse it
    assert calls[-1] == ("sleep", 1)
    assert engine.llm is None  # torn down at the end of fit


def test_truncated_importance_weights_scale_the_gradient(fake_vllm, toy_rewards, tmp_path: Path, monkeypatch):  # noqa: F811
    """The fake engine's log-probs are far below the trainer's, so every weight min(π_old/π_engine,
    cap) is the cap: with plain SGD (no clipping) the first update moves the weights by exactly cap
    times the uncorrected update."""
    monkeypatch.setattr(FakeLLM, "drop_stop_token", False)  # a token vLLM gave no log-prob for gets weight 1
    manifest = mixed_task_manifest(tmp_path)
    sgd = {"optimizer": lambda p: torch.optim.SGD(p, lr=1.0), "grad_clip": 1e9, "filter_groups": False}
    start = torch.nn.utils.parameters_to_vector(VisionLanguageBackbone("tiny", seed=0).parameters())
    moved = {}
    for cap in (None, 0.25):
        module = grpo_run(manifest, 1, rollout=VLLMColocateEngine(max_new_tokens=16), tis_cap=cap, **sgd)[0]
        moved[cap] = torch.nn.utils.parameters_to_vector(module.backbone.parameters()) - start
    assert moved[None].abs().max() > 1e-4
    torch.testing.assert_close(moved[0.25], 0.25 * moved[None], atol=1e-7, rtol=1e-4)


def test_truncated_is_weights_and_gap_by_hand():
    from lightning_modules.rl.losses import logprob_gap, truncated_is_weights

    old = torch.tensor([[-1.0, -2.0, -0.5]])
    engine = torch.tensor([[-1.5, -1.0, float("nan")]])
    w = truncated_is_weights(old, engine, cap=1.5)
    assert w[0, 0] == pytest.approx(1.5) and w[0, 1] == pytest.approx(float(torch.exp(torch.tensor(-1.0))))
    assert w[0, 2] == 1.0
    total, worst, count = logprob_gap(old, engine, torch.tensor([[1, 1, 1]]))
    assert (total, worst, count) == (pytest.approx(1.5), pytest.approx(1.0), 2)
    with pytest.raises(ValueError, match="tis_cap"):
        truncated_is_weights(old, engine, cap=0.0)


@pytest.mark.slow
def test_sharded_weights_gather_to_the_unsharded_ones(tmp_path: Path):
    """Two gloo ranks under FSDP2: every rank gathers every parameter (plain, and LoRA merged) and
    gets exactly the unsharded tensors."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "tests.vllm_weights_run",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for rank in range(2):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for kind in ("plain", "lora"):
            assert report[kind]["names_equal"] and report[kind]["tensors_equal"], (
                rank,
                kind,
                report[kind]["differ"],
            )
            assert report[kind]["sharded_parameters"] > 0 and report[kind]["sent"] > 50
