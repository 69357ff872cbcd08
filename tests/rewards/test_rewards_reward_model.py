"""Open-ended reward from an OpenAI-compatible endpoint, against a local test server."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import rewards
from rewards.qa import rouge_accuracy


class _Judge(BaseHTTPRequestHandler):
    """Replies with a score encoded in the answer text: `score=7` -> "7"; `fail` -> HTTP 500;
    `stall` -> no reply for 3 s."""

    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        text = body["messages"][0]["content"]
        output = text.split("Answer to grade: ", 1)[1]
        if "stall" in output:
            time.sleep(3.0)
        if "fail" in output:
            self.send_response(500)
            self.end_headers()
            return
        m = re.search(r"score=(\d+)", output)
        reply = {"choices": [{"message": {"role": "assistant", "content": m.group(1) if m else "no idea"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def judge_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    _Judge.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_scorer_parses_scores_and_marks_failures(judge_url: str) -> None:
    scorer = rewards.OpenAIChatRewardScorer(url=judge_url, model="judge", api_key="k", concurrency=4)
    assert isinstance(scorer, rewards.RewardModelScorer)
    out = scorer.score(["q"] * 4, ["ref"] * 4, ["score=7", "score=10", "fail", "no number"])
    assert out == [0.7, 1.0, None, None]
    assert _Judge.seen[0]["path"] == "/v1/chat/completions"
    assert _Judge.seen[0]["auth"] == "Bearer k" and _Judge.seen[0]["body"]["model"] == "judge"


def test_unreachable_server_gives_failures() -> None:
    scorer = rewards.OpenAIChatRewardScorer(url="http://127.0.0.1:9/v1", model="m", timeout_s=2)
    assert scorer.score(["q"], ["r"], ["score=3"]) == [None]


def test_normalize_by_group_hand_computed() -> None:
    # group a: [0.2, 0.4, 0.8] -> z-score then min-max = (v − 0.2) / 0.6; group b constant -> ones
    out = rewards.normalize_by_group([0.2, 0.4, 0.8, 0.5, 0.5], ["a", "a", "a", "b", "b"])
    assert out == pytest.approx([0.0, 1 / 3, 1.0, 1.0, 1.0], abs=1e-5)


def test_score_batch_with_reward_model_and_rouge_fallback(judge_url: str) -> None:
    scorer = rewards.OpenAIChatRewardScorer(url=judge_url, model="judge")
    ref = "a man rides a horse"
    answers = ["score=2", "score=6", "fail a man rides", "score=9 a cat"]
    responses = [f"<think>t</think><answer>{a}</answer>" for a in answers] + ["<answer>B</answer>"]
    before = rewards.reward_model_failures()
    res = rewards.score_batch(
        responses,
        [f"<answer>{ref}</answer>"] * 4 + ["<answer>B</answer>"],
        ["open-ended"] * 4 + ["multiple choice"],
        ["video"] * 5,
        problem_ids=[1, 1, 1, 2, 3],
        prompts=["describe"] * 5,
        reward_model=scorer,
    )
    assert rewards.reward_model_failures() == before + 1
    # group 1: [0.2, 0.6, rouge] min-max normalized; group 2 has one item -> 1.0
    raw = np.array([0.2, 0.6, rouge_accuracy(ref, "fail a man rides")], dtype=np.float32)
    z = (raw - raw.mean()) / (raw.std() + 1e-6)
    expect = (z - z.min()) / (z.max() - z.min() + 1e-12)
    assert [r.accuracy for r in res[:3]] == pytest.approx(list(expect), abs=1e-6)
    assert res[3].accuracy == 1.0
    assert res[0].overall == pytest.approx(0.9 * res[0].accuracy + 0.1 + 0.5)
    assert res[4].accuracy == 1.0 and res[4].format == 0.0  # other tasks untouched
    assert all("describe" in s["body"]["messages"][0]["content"] for s in _Judge.seen)


def test_broken_scorer_falls_back_to_rouge() -> None:
    class Broken:
        def score(self, prompts, references, outputs):
            raise RuntimeError("down")

    res = rewards.score_batch(
        ["<answer>a man rides a horse</answer>"],
        ["<answer>a man rides a horse</answer>"],
        ["open-ended"],
        ["image"],
        reward_model=Broken(),
        normalize_reward_model=False,
    )
    assert res[0].accuracy == pytest.approx(1.0)
