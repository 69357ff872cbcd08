"""`VLLMColocateEngine`: rollouts from a vLLM engine that shares each rank's GPU with the trainer.

One ``vllm.LLM`` per rank (``distributed_executor_backend="external_launcher"``: it joins the
trainer's processes instead of spawning its own), built with random ("dummy") weights, then fed the
policy's weights whenever the policy changed. Sleep mode hands the GPU memory back to training
between rollouts. Per rollout:

    wake(weights) -> load the policy's weights (if its version changed) -> wake(KV cache)
    -> generate this rank's prompts -> sleep

vLLM is imported only here, and only when the engine is set up: CPU installs never need it.
GPU set-up: ``bash scripts/setup.sh --gpu`` (constraints/gpu-vllm.txt).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Literal

import torch

from lightning_modules.model.backbone import VisionLanguageBackbone
from lightning_modules.rl.rollout import RolloutEngine, Rollouts, layout_rollouts, pad_completions
from lightning_modules.rl.rollout_requests import build_requests, request_seed, sampling_params
from lightning_modules.rl.vllm_weights import load_into_vllm, policy_weights

SLEEP_TAGS = ("weights", "kv_cache")  # what vLLM's sleep mode releases and wake_up takes back


def build_llm(**kwargs: Any) -> Any:
    """``vllm.LLM(**kwargs)`` (the one import of vLLM)."""
    try:
        from vllm import LLM
    except ImportError as err:
        raise ImportError(
            "VLLMColocateEngine needs vLLM on a CUDA machine: bash scripts/setup.sh --gpu "
            "(installs vllm==0.33.0 with constraints/gpu-vllm.txt)"
        ) from err
    return LLM(**kwargs)


def single_process_rendezvous() -> None:
    """The torchrun variables vLLM's external launcher reads, for a run started without torchrun."""
    import socket

    if "MASTER_PORT" not in os.environ:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)


def make_sampling_params(params: dict[str, Any]) -> Any:
    from vllm import SamplingParams

    return SamplingParams(**params)


def completion_tokens(completion: Any, stop_ids: list[int]) -> tuple[list[int], list[float] | None]:
    """A vLLM completion's token ids, ending with its stop token when it stopped on one (so the
    trainer scores the end of turn, as after HF ``generate``), and each token's log-probability."""
    tokens = list(completion.token_ids)
    logprobs = None
    if completion.logprobs is not None:
        logprobs = [float(step[token].logprob) for step, token in zip(completion.logprobs, tokens)]
    stopped_on = getattr(completion, "stop_reason", None)
    if (
        completion.finish_reason == "stop"
        and (not tokens or tokens[-1] not in stop_ids)
        and stopped_on in stop_ids
    ):
        tokens.append(stopped_on)  # vLLM left the stop token out; its log-prob is unknown (the gap skips it)
        if logprobs is not None:
            logprobs.append(float("nan"))
    return tokens, logprobs


class VLLMColocateEngine(RolloutEngine):
    """Rollouts with vLLM, colocated with training on every rank.

    Args:
        temperature: sampling temperature (released: 1.0).
        top_p: nucleus mass (released: 1.0).
        max_new_tokens: response length cap (released: 4,096).
        gpu_memory_utilization: share of the GPU vLLM may take (weights + KV cache) while awake.
        tensor_parallel_size: GPUs one vLLM engine spans (1: one engine per rank).
        max_model_len: prompt + response tokens vLLM plans for (default: the model config's).
        sleep_level: 1 keeps the weights in host memory while asleep (no reload when the policy has
            not changed, e.g. between a step's resample rounds); 2 drops them (less host memory;
            every rollout reloads).
        enforce_eager: skip CUDA-graph capture (faster start, slower decoding).
        dtype: the engine's weight dtype.
        limit_mm_per_prompt: most images and videos in one prompt (vLLM plans memory for them).
    """

    def __init__(
        self,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 4096,
        gpu_memory_utilization: float = 0.35,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        sleep_level: Literal[1, 2] = 1,
        enforce_eager: bool = False,
        dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16",
        limit_mm_per_prompt: dict[str, int] | None = None,
    ):
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.gpu_memory_utilization, self.tensor_parallel_size = gpu_memory_utilization, tensor_parallel_size
        self.max_model_len, self.sleep_level = max_model_len, sleep_level
        self.enforce_eager, self.dtype = enforce_eager, dtype
        self.limit_mm_per_prompt = limit_mm_per_prompt or {"image": 8, "video": 2}
        self.llm: Any = None
        self.loaded_version: int | None = None
        self.loaded_names: set[str] | None = None  # what vLLM reported loaded at the last sync
        self.timestamped_video = True
        self._model_dir: tempfile.TemporaryDirectory | None = None
        self._sleeping: set[str] = set()

    # -- life cycle ---------------------------------------------------------------------------
    def engine_args(self, model_dir: str, seed: int) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": model_dir,
            "load_format": "dummy",  # random weights at start; the policy's arrive through sync_weights
            "distributed_executor_backend": "external_launcher",
            "enable_sleep_mode": True,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "dtype": self.dtype,
            "enforce_eager": self.enforce_eager,
            "seed": seed,
            "limit_mm_per_prompt": dict(self.limit_mm_per_prompt),
        }
        if self.max_model_len is not None:
            args["max_model_len"] = self.max_model_len
        return args

    def setup(self, backbone: VisionLanguageBackbone, rank: int, world_size: int) -> None:
        if self.llm is not None:
            return
        if world_size % self.tensor_parallel_size:
            raise ValueError(
                f"tensor_parallel_size={self.tensor_parallel_size} does not divide the world size {world_size}"
            )
        if world_size == 1:
            single_process_rendezvous()
        # vLLM builds the model from a folder: the policy's config and processor, no weights.
        self._model_dir = tempfile.TemporaryDirectory(prefix="onethinker_vllm_")
        backbone.hf_model.config.save_pretrained(self._model_dir.name)
        backbone.processor.save_pretrained(self._model_dir.name)
        self.timestamped_video = backbone.family == "qwen3_vl"
        self.llm = build_llm(**self.engine_args(self._model_dir.name, seed=rank // self.tensor_parallel_size))
        self.loaded_version = None
        self.sleep()

    def wake(self, tags: list[str] | None = None) -> None:
        """Wake the sleeping parts named (``weights``, ``kv_cache``; default both)."""
        waking = [t for t in (tags or SLEEP_TAGS) if t in self._sleeping]
        if waking:
            self.llm.wake_up(tags=waking)
            self._sleeping -= set(waking)

    def sleep(self) -> None:
        if self._sleeping != set(SLEEP_TAGS):  # something is awake
            self.llm.sleep(level=self.sleep_level)
            self._sleeping = set(SLEEP_TAGS)
            if self.sleep_level >= 2:
                self.loaded_version = None  # level 2 drops the weights

    def sync_weights(self, backbone: VisionLanguageBackbone, version: int) -> None:
        """Wake the weights and stream the policy in, unless the engine already holds ``version``.
        Every rank calls it (the same version on all: gathering sharded parameters is collective)."""
        self.wake(tags=["weights"])
        if version == self.loaded_version:
            return
        dtype = getattr(torch, self.dtype)
        self.loaded_names = load_into_vllm(self.llm, policy_weights(backbone, dtype=dtype))
        self.loaded_version = version

    def teardown(self) -> None:
        self.llm = None
        if self._model_dir is not None:
            self._model_dir.cleanup()
            self._model_dir = None

    # -- rollouts ----------------------------------------------------------------------------
    def __call__(
        self,
        backbone: VisionLanguageBackbone,
        prompts: dict[str, Any],
        rollouts_per_prompt: int,
        seed: int = 0,
    ) -> Rollouts:
        requests = build_requests(prompts, backbone.tokenizer, self.timestamped_video)
        stop = backbone.end_token_ids
        params = [
            make_sampling_params(sampling_params(
                rollouts_per_prompt, self.temperature, self.top_p, self.max_new_tokens, request_seed(seed, row), stop,
            ))
            for row in range(len(requests))
        ]  # fmt: skip
        self.wake()  # the KV cache (and the weights, if sync_weights was not called)
        try:
            outputs = self.llm.generate([r.as_vllm() for r in requests], params, use_tqdm=False)
        finally:
            self.sleep()
        tokens: list[list[int]] = []
        logprobs: list[list[float]] = []
        for output in outputs:
            for completion in output.outputs:
                ids, lps = completion_tokens(completion, stop)
                tokens.append(ids)
                logprobs.append(lps if lps is not None else [float("nan")] * len(ids))
        response = pad_completions(tokens, backbone.tokenizer.pad_token_id)
        sampled = torch.full(response.shape, float("nan"))
        for row, lps in enumerate(logprobs):
            sampled[row, : len(lps)] = torch.tensor(lps, dtype=torch.float32)
        return layout_rollouts(backbone, prompts, response, rollouts_per_prompt, sampling_logprobs=sampled)
