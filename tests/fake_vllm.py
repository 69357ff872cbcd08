"""A recording stand-in for ``vllm.LLM`` (CPU tests of `VLLMColocateEngine`, and the multi-process
GRPO runner): it logs wake / load / generate / sleep and answers each prompt with fixed text."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from lightning_modules.model.processing import build_processor

ENGINE_LOGPROB = -50.0  # far below the tiny model's (about -12): π_old/π_engine is huge, any cap binds


class FakeLLM:
    """Records what a colocated engine asks of ``vllm.LLM``; answers every prompt with fixed text."""

    drop_stop_token = True  # on odd samples, as some vLLM versions do

    def __init__(self, calls: list, tokenizer: Any, end_id: int, **engine_args: Any):
        self.calls, self.engine_args, self.loaded = calls, engine_args, {}
        self.tokenizer, self.end_id = tokenizer, end_id
        model = SimpleNamespace(load_weights=self._load_weights)
        worker = SimpleNamespace(worker=SimpleNamespace(model_runner=SimpleNamespace(model=model)))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=worker))
        calls.append(("init",))

    def _load_weights(self, weights):
        self.loaded = dict(weights)
        self.calls.append(("load", len(self.loaded)))

    def wake_up(self, tags=None):
        self.calls.append(("wake", tuple(tags)))

    def sleep(self, level=1):
        self.calls.append(("sleep", level))

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append(("generate", len(prompts)))
        outputs = []
        for row, (prompt, p) in enumerate(zip(prompts, params)):
            assert p["seed"] >= 0 and "prompt_token_ids" in prompt
            text = self.tokenizer.decode(prompt["prompt_token_ids"])
            asked = re.search(r"Question (\d+)", text)  # the toy records' question number, else the row
            key = asked.group(1) if asked else row
            completions = []
            for j in range(p["n"]):
                ids = self.tokenizer.encode(f"<answer>{key}.{j}</answer>", add_special_tokens=False)
                ids = ids + [self.end_id] if j % 2 == 0 or not self.drop_stop_token else ids
                steps = [{t: SimpleNamespace(logprob=ENGINE_LOGPROB)} for t in ids]
                completions.append(
                    SimpleNamespace(
                        token_ids=ids, logprobs=steps, finish_reason="stop", stop_reason=self.end_id
                    )
                )
            outputs.append(SimpleNamespace(outputs=completions))
        return outputs


def fake_llm_factory(calls: list, holder: dict[str, Any]) -> Any:
    """A ``build_llm`` replacement that makes a `FakeLLM` and keeps it in ``holder["llm"]``."""

    def build(**kwargs: Any) -> FakeLLM:
        tok = build_processor("qwen3_vl").tokenizer
        holder["llm"] = FakeLLM(calls, tok, tok.convert_tokens_to_ids("<|im_end|>"), **kwargs)
        return holder["llm"]

    return build
