"""An oracle backbone for evaluation tests: it answers every record with its ground truth, optionally
shifted (boxes moved right by ``box_shift`` on the 0-1000 scale, times moved by ``time_shift`` s)."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from rewards.parsing import strip_ground_truth


def shifted_answer(problem_type: str, answer: str, box_shift: float = 0.0, time_shift: float = 0.0) -> str:
    """The ground-truth answer text with its boxes and times moved."""
    gt = strip_ground_truth(answer)
    if not (box_shift or time_shift) or problem_type not in (
        "temporal grounding",
        "spatial grounding",
        "spatial-temporal grounding",
        "tracking",
    ):
        return gt
    obj = json.loads(gt)

    def move(box: list[float]) -> list[float]:
        return [box[0] + box_shift, box[1], box[2] + box_shift, box[3]]

    if "time" in obj:
        obj["time"] = [t + time_shift for t in obj["time"]]
    boxes = obj.get("boxes")
    if isinstance(boxes, dict):
        obj["boxes"] = {k: move(v) for k, v in boxes.items()}
    elif isinstance(boxes, list):
        obj["boxes"] = move(boxes)
    return json.dumps(obj)


class OracleBackbone(nn.Module):
    """Duck-types `VisionLanguageBackbone.generate` around a real processor (for its tokenizer)."""

    def __init__(
        self, processor: Any, box_shift: float = 0.0, time_shift: float = 0.0, fail_after: int | None = None
    ):
        super().__init__()
        self.processor, self.box_shift, self.time_shift = processor, box_shift, time_shift
        self.fail_after, self.calls = fail_after, 0
        self.init_args: dict[str, Any] = {}

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    def generate(self, batch: dict[str, Any], **_: Any) -> dict[str, torch.Tensor]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("oracle stopped on purpose")
        self.calls += 1
        tok = self.tokenizer
        end = tok.convert_tokens_to_ids("<|im_end|>")
        texts = [
            f"<think>oracle</think><answer>{shifted_answer(m['problem_type'], m['answer'], self.box_shift, self.time_shift)}</answer>"
            for m in batch["meta"]
        ]
        ids = [tok(t, add_special_tokens=False)["input_ids"] + [end] for t in texts]
        width = max(len(i) for i in ids)
        response = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            response[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return {"response_ids": response, "response_mask": mask}
