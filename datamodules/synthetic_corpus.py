"""Text of the synthetic suite (prompts and assistant turns), which the demo's small vocabulary was trained
on. ``python -m datamodules.synthetic_corpus`` retrains it and rewrites the shipped file
(`lightning_modules.model.processing.SYNTHETIC_BPE`), e.g. after the generator's text changed."""

from __future__ import annotations

import tempfile
from functools import lru_cache

from datamodules.prompts import build_prompt
from datamodules.records import load_records
from datamodules.synthetic import generate_suite


@lru_cache(maxsize=1)
def synthetic_corpus(per_task: int = 24, seed: int = 12345) -> tuple[str, ...]:
    """Built prompts, SFT turns and answers of a freshly generated suite (a seed the demo does not use)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = generate_suite(tmp, per_task=per_task, seed=seed)
        texts = [build_prompt(r) for r in load_records(paths["rl"], "rl")]
        texts += [r.answer for r in load_records(paths["rl"], "rl")]
        texts += [t.content for r in load_records(paths["sft"], "sft") for t in r.messages]
    return tuple(texts)


def write_synthetic_bpe() -> None:
    import json

    from lightning_modules.model.processing import SYNTHETIC_BPE, train_synthetic_bpe

    SYNTHETIC_BPE.write_text(json.dumps(train_synthetic_bpe(synthetic_corpus()), ensure_ascii=False) + "\n")
    print(f"wrote {SYNTHETIC_BPE}")


if __name__ == "__main__":
    write_synthetic_bpe()
