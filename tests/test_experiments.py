"""Every YAML under experiments/ parses; runnable recipes run with fast_dev_run; export round-trips."""

from __future__ import annotations

import inspect
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
SHARED_CPU = [EXPERIMENTS / "shared" / "trainer_cpu.yaml"]
# Recipes that run on CPU with the tiny model, and the GPU recipes (parsed and type-checked only).
CPU_RECIPES = sorted((EXPERIMENTS / "demo").glob("*.yaml"))
GPU_RECIPES = sorted(EXPERIMENTS.glob("*.yaml"))


def onethinker(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def config_args(paths: list[Path]) -> list[str]:
    return [a for p in paths for a in ("--config", str(p))]


@pytest.mark.parametrize(
    "path", sorted(EXPERIMENTS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(EXPERIMENTS))
)
def test_every_yaml_parses(path: Path):
    """Each config holds only LightningCLI sections, and every ``class_path`` in it names a class that
    imports (a typo in a recipe fails here, not at the start of a GPU job)."""
    import importlib

    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data
    assert set(data) <= {"seed_everything", "trainer", "model", "data", "ckpt_path"}, sorted(data)

    def class_paths(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["class_path"]] if isinstance(node.get("class_path"), str) else []
            return own + [c for v in node.values() for c in class_paths(v)]
        return [c for v in node for c in class_paths(v)] if isinstance(node, list) else []

    for class_path in class_paths(data):
        module, _, name = class_path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), f"{path.name}: {class_path}"


@pytest.fixture(scope="module")
def suite_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from datamodules.synthetic import generate_suite

    return generate_suite(tmp_path_factory.mktemp("suite"), per_task=1, seed=0)


@pytest.fixture(scope="module")
def suite(suite_paths: dict[str, Path]) -> Path:
    return suite_paths["sft"]


def recipe_overrides(recipe: Path, paths: dict[str, Path]) -> list[str]:
    """Point a demo recipe at the test's suite (and the GRPO recipe at a fresh tiny model)."""
    mode = yaml.safe_load(recipe.read_text())["data"]["mode"]
    args = [f"--data.train_manifests=[{paths[mode]}]", "--data.num_workers=0", "--data.synthetic_suite=null"]
    if mode == "rl":
        args += [
            "--model.init_args.backbone.init_args.model_name_or_path=tiny",
            "--model.init_args.rollout.init_args.max_new_tokens=8",
            "--model.init_args.rollouts_per_prompt=2",
            f"--data.val_manifests=[{paths['eval']}]",
            "--data.batch_size=2",
        ]
    return args


@pytest.mark.slow
@pytest.mark.parametrize("recipe", CPU_RECIPES, ids=lambda p: p.name)
def test_cpu_recipe_fast_dev_run(recipe: Path, suite_paths: dict[str, Path], tmp_path: Path):
    result = onethinker(
        "fit",
        *config_args([*SHARED_CPU, EXPERIMENTS / "shared" / "logger_demo.yaml", recipe]),
        "--trainer.fast_dev_run=2",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false",
        *recipe_overrides(recipe, suite_paths),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The run reached step 2 (two SFT steps; one RL step of two updates) with a finite metric: the
    # recipe's RunSummary line (train/loss for SFT, train/reward/overall for RL).
    summary = re.search(
        r"\[run summary\] (train/\S+): (\S+) at step (\d+) -> (\S+) at step (\d+)", result.stdout
    )
    assert summary, result.stdout[-3000:]
    metric, first, _, last, last_step = summary.groups()
    assert int(last_step) == 2 and math.isfinite(float(first)) and math.isfinite(float(last))
    assert metric == ("train/loss" if "sft" in recipe.name else "train/reward/overall")


@pytest.mark.slow
def test_demo_sft_config_runs_alone_in_a_fresh_folder(tmp_path: Path):
    """No `onethinker synth` first: the recipe writes the demo's synthetic suite on first use."""
    result = onethinker(
        "fit", *config_args([*SHARED_CPU, EXPERIMENTS / "shared" / "logger_demo.yaml", EXPERIMENTS / "demo" / "sft.yaml"]),
        "--trainer.fast_dev_run=1", "--trainer.logger=false", "--data.num_workers=0", "--data.synthetic_per_task=1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "outputs" / "demo" / "synthetic" / "sft.json").is_file()


SHARDED_TRAINERS = {"trainer_fsdp.yaml": (1, "auto"), "trainer_hsdp.yaml": ("auto", "auto")}


@pytest.mark.parametrize("trainer", sorted(SHARDED_TRAINERS))
@pytest.mark.parametrize("recipe", GPU_RECIPES, ids=lambda p: p.name)
def test_gpu_recipe_is_a_valid_config(recipe: Path, trainer: str, tmp_path: Path):
    shared = [EXPERIMENTS / "shared" / trainer, EXPERIMENTS / "shared" / "logger_wandb.yaml"]
    result = onethinker("fit", *config_args([*shared, recipe]), "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = yaml.safe_load(result.stdout)
    assert printed["model"]["init_args"]["backbone"]["init_args"]["model_name_or_path"] != "tiny"
    assert printed["trainer"]["use_distributed_sampler"] is False
    strategy = printed["trainer"]["strategy"]
    assert (
        strategy["class_path"] == "lightning_modules.training.atomic_checkpoint.AtomicModelParallelStrategy"
    )
    mesh = (strategy["init_args"]["data_parallel_size"], strategy["init_args"]["tensor_parallel_size"])
    assert mesh == SHARDED_TRAINERS[trainer]
    # Lightning must not cast the sharded master weights: bf16 comes from the module's sharding policy.
    assert printed["trainer"]["precision"] == "32-true"


def test_rl_8b_recipe_matches_spec_section_7():
    """The released RL configuration, value by value (SPEC §7)."""
    cfg = yaml.safe_load((EXPERIMENTS / "ema_grpo_qwen3vl_8b.yaml").read_text())
    module = cfg["model"]["init_args"]
    assert module["rollout"]["init_args"] == {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4096}
    assert module["rollouts_per_prompt"] == 8 and cfg["data"]["global_batch_size"] == 128
    assert module["prompts_per_update"] == 32 and module["ppo_epochs"] == 1  # 4 updates per RL step
    assert (module["clip_low"], module["clip_high"], module["dual_clip"]) == (0.2, 0.3, 3.0)
    assert module["loss_aggregation"] == "token-mean"
    assert module["kl_coef"] == 0.0 and module["entropy_coef"] == 0.0  # released: no KL, no reference
    assert module["filter_groups"] and module["filter_metric"] == "accuracy"
    assert module["filter_band"] == [0.01, 0.99]
    assert module["advantage"] == "ema_grpo" and module["reward_variant"] == "released"
    assert module["optimizer"] == {
        "class_path": "torch.optim.AdamW",
        "init_args": {"lr": 2e-6, "weight_decay": 0.01},
    }
    assert module["schedule"] == {"name": "constant", "warmup_ratio": 0.0} and module["grad_clip"] == 1.0
    backbone = module["backbone"]["init_args"]
    assert backbone["freeze_vision_tower"] is False and backbone["dtype"] == "bfloat16"
    from lightning_modules.rl.losses import LOG_RATIO_CLAMP

    assert LOG_RATIO_CLAMP == 20.0


def test_one_switch_selects_the_vllm_engine(tmp_path: Path):
    """The shared fragment, or one flag, puts the vLLM engine in the 8B RL recipe (parsed here, no vLLM)."""
    shared = [EXPERIMENTS / "shared" / "trainer_fsdp.yaml", EXPERIMENTS / "shared" / "logger_wandb.yaml"]
    recipe = EXPERIMENTS / "ema_grpo_qwen3vl_8b.yaml"
    engine = "lightning_modules.rl.vllm_engine.VLLMColocateEngine"
    by_fragment = [
        *config_args([*shared, recipe, EXPERIMENTS / "shared" / "rollout_vllm.yaml"]),
        "--print_config",
    ]
    by_flag = [
        *config_args([*shared, recipe]),
        f"--model.init_args.rollout.class_path={engine}",
        "--print_config",
    ]
    for args in (by_fragment, by_flag):
        result = onethinker("fit", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        rollout = yaml.safe_load(result.stdout)["model"]["init_args"]["rollout"]
        assert rollout["class_path"] == engine
        assert rollout["init_args"]["max_new_tokens"] == 4096 and rollout["init_args"]["sleep_level"] == 1


def test_8b_recipes_name_the_sharded_trainer():
    for recipe in GPU_RECIPES:
        assert "experiments/shared/trainer_fsdp.yaml" in recipe.read_text(), recipe.name
    assert not (EXPERIMENTS / "shared" / "trainer_gpu.yaml").exists()


def test_sft_8b_recipe_matches_paper():
    cfg = yaml.safe_load((EXPERIMENTS / "sft_qwen3vl_8b.yaml").read_text())
    backbone = cfg["model"]["init_args"]["backbone"]["init_args"]
    assert backbone["model_name_or_path"] == "Qwen/Qwen3-VL-8B-Instruct"
    assert (
        backbone["freeze_vision_tower"] and backbone["freeze_projector"] and backbone["dtype"] == "bfloat16"
    )
    assert cfg["model"]["init_args"]["optimizer"]["init_args"]["lr"] == pytest.approx(1e-5)
    assert cfg["model"]["init_args"]["schedule"] == {"name": "cosine", "warmup_ratio": 0.02}
    assert cfg["data"]["max_length"] == 16384
    assert cfg["data"]["pack_tokens"] <= cfg["data"]["max_length"]  # packing changes no row's limit
    fsdp = yaml.safe_load((EXPERIMENTS / "shared" / "trainer_fsdp.yaml").read_text())["trainer"]
    assert fsdp["strategy"]["class_path"].endswith("ModelParallelStrategy")
    # bf16 compute, fp32 gradient reduction: the SFT module's sharding defaults.
    from lightning_modules.sft import SFTModule

    sharding = inspect.signature(SFTModule).parameters["sharding"]
    assert sharding.default is None  # -> ShardingSettings()
    from lightning_modules.training.sharding import ShardingSettings

    assert (ShardingSettings().param_dtype, ShardingSettings().reduce_dtype) == ("bfloat16", "float32")


@pytest.mark.slow
def test_export_round_trip_matches_logits(suite: Path, tmp_path: Path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from datamodules.collate import Collator, build_example
    from datamodules.media import stage_media
    from datamodules.records import load_records
    from lightning_modules.model.backbone import VisionLanguageBackbone

    result = onethinker(
        "fit",
        *config_args([*SHARED_CPU, EXPERIMENTS / "demo" / "sft.yaml"]),
        "--trainer.max_steps=2",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={tmp_path / 'ckpt'}",
        f"--data.train_manifests=[{suite}]",
        "--data.num_workers=0",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = next((tmp_path / "ckpt").glob("*.ckpt"))
    out = tmp_path / "hf"
    exported = onethinker("export", str(ckpt), "--out", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]

    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    state, init = saved["state_dict"], saved["backbone_init"]
    trained = VisionLanguageBackbone(**init)
    trained.load_state_dict({k[len("backbone.") :]: v for k, v in state.items()}, strict=False)
    fresh = VisionLanguageBackbone(**init)
    assert not torch.equal(
        fresh.hf_model.lm_head.weight, trained.hf_model.lm_head.weight
    )  # training moved it

    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    records = load_records(suite, "sft")[:3]
    batch = Collator(processor, "sft")([build_example(r, "sft", stage_media("sft")) for r in records])
    inputs = VisionLanguageBackbone.model_inputs(batch)
    with torch.no_grad():
        expected = trained.hf_model.eval()(**inputs).logits
        got = model(**inputs).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arm", ["grpo", "dr_grpo", "ema_grpo"])
def test_ablation_arm_differs_only_in_advantage(arm: str, tmp_path: Path):
    configs = [*SHARED_CPU, EXPERIMENTS / "demo" / "ema_grpo.yaml", EXPERIMENTS / "ablation" / f"{arm}.yaml"]
    result = onethinker("fit", *config_args(configs), "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = yaml.safe_load(result.stdout)
    assert printed["model"]["init_args"]["advantage"] == arm
    recipe = yaml.safe_load((EXPERIMENTS / "demo" / "ema_grpo.yaml").read_text())["model"]["init_args"]
    for key in (
        "rollouts_per_prompt",
        "prompts_per_update",
        "filter_band",
        "clip_high",
    ):  # the rest is the recipe's
        assert printed["model"]["init_args"][key] == recipe[key]


EVAL = EXPERIMENTS / "eval"
EVAL_FAMILIES = sorted(p for p in EVAL.glob("*.yaml") if p.name not in ("demo.yaml", "onethinker_8b.yaml"))


@pytest.mark.slow
def test_eval_demo_config_runs_from_scratch(tmp_path: Path):
    """`onethinker test --config experiments/eval/demo.yaml` writes the suite, then all three reports."""
    result = onethinker("test", "--config", str(EVAL / "demo.yaml"), "--trainer.logger=false",
                        "--data.synthetic_per_task=1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "outputs" / "eval" / "demo"
    metrics = yaml.safe_load((out / "metrics.json").read_text())
    tasks = metrics["benchmarks"]["eval"]["tasks"]
    assert len(tasks) == 16 and all(t["samples"] == 1 for t in tasks.values())
    assert {"cIoU", "gIoU"} <= set(tasks["segmentation/image"]) and "J&F" in tasks["segmentation/video"]
    assert (out / "summary.md").exists() and len((out / "predictions.jsonl").read_text().splitlines()) == 16


@pytest.mark.parametrize("family", EVAL_FAMILIES, ids=lambda p: p.name)
def test_eval_family_config_names_the_authors_files(family: Path, tmp_path: Path):
    configs = [EXPERIMENTS / "shared" / "trainer_eval_gpu.yaml", EVAL / "onethinker_8b.yaml", family]
    result = onethinker("test", *config_args(configs), "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = yaml.safe_load(result.stdout)
    init = printed["model"]["init_args"]
    assert init["backbone"]["init_args"]["model_name_or_path"] == "OneThink/OneThinker-8B"
    assert init["mask_predictor"]["init_args"]["model_name_or_path"] == "facebook/sam2.1-hiera-large"
    assert init["output_dir"] == f"outputs/eval/{family.stem}" and init["max_new_tokens"] == 8192
    manifests = printed["data"]["test_manifests"]
    assert manifests and all(Path(m).name.startswith("eval_") and m.endswith(".json") for m in manifests)
    assert printed["data"]["mode"] == "eval" and printed["trainer"]["strategy"] == "ddp"


@pytest.mark.slow
@pytest.mark.parametrize("steps", [1, 4])
def test_a_fit_on_skipped_rows_only_fails_with_the_counts(
    suite_paths: dict[str, Path], tmp_path: Path, steps: int
):
    """Every row's media is missing (`on_bad_media: skip`): the fit fails, naming counts per reason and
    the first files, after `skip_check_rows` rows (4 steps) or at the end of a shorter run (1 step)."""
    import json

    records = json.loads(suite_paths["sft"].read_text())
    for r in records:
        for key in ("images", "videos"):
            if r.get(key):
                r[key] = [f"missing/{Path(p).name}" for p in r[key]]
    bad = tmp_path / "bad_sft.json"
    bad.write_text(json.dumps(records))
    result = onethinker(
        "fit", *config_args([*SHARED_CPU, EXPERIMENTS / "shared" / "logger_demo.yaml", EXPERIMENTS / "demo" / "sft.yaml"]),
        f"--data.train_manifests=[{bad}]", "--data.synthetic_suite=null", "--data.num_workers=0",
        "--data.skip_check_rows=8", f"--trainer.max_steps={steps}", "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "train rows read were skipped" in result.stderr and "bad_media/" in result.stderr
    assert "missing/" in result.stderr  # the first files
    assert "Traceback" not in result.stderr and "onethinker fit: " in result.stderr
    assert ("Nothing was trained on" in result.stderr) == (steps == 1)


def test_an_unwritable_output_folder_fails_at_set_up(tmp_path: Path):
    """A checkpoint folder that cannot be created (here: under a file) stops `fit` before any model
    is built, naming the folder, instead of at the first save."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = onethinker(
        "fit", *config_args([*SHARED_CPU, EXPERIMENTS / "demo" / "sft.yaml"]), "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}", "--data.synthetic_suite=null",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", f"--trainer.callbacks.dirpath={blocker}/ckpt",
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot write to {blocker}/ckpt" in result.stderr


def test_unnamed_loggers_take_the_recipe_name(tmp_path: Path, monkeypatch):
    """logger_wandb.yaml names no run: W&B's name, group and tags and the CSV folder come from the
    recipe (the last config that sets model.class_path, not a fragment after it); explicit names stay."""
    from datamodules.datamodule import OneThinkerDataModule
    from experiments.lightning_cli import OneThinkerCLI, recipe_name

    assert recipe_name(
        [EXPERIMENTS / "ema_grpo_qwen3vl_8b.yaml", EXPERIMENTS / "shared" / "rollout_vllm.yaml"]
    ) == ("ema_grpo_qwen3vl_8b")
    assert recipe_name([EXPERIMENTS / "shared" / "trainer_cpu.yaml"]) is None
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    tiny = "--model.init_args.backbone.init_args.model_name_or_path=tiny"

    def loggers(logger: str, recipe: Path) -> list:
        configs = [EXPERIMENTS / "shared" / "trainer_cpu.yaml", EXPERIMENTS / "shared" / logger, recipe]
        args = [a for c in configs for a in ("--config", str(c))] + [tiny]
        cli = OneThinkerCLI(
            datamodule_class=OneThinkerDataModule, subclass_mode_model=True, run=False, args=args
        )
        return cli.trainer.loggers

    wandb, csv = loggers("logger_wandb.yaml", EXPERIMENTS / "demo" / "ema_grpo.yaml")
    expected = "demo-ema_grpo"
    assert (wandb._wandb_init["name"], wandb._wandb_init["group"], wandb._wandb_init["tags"]) == (
        expected, expected, [expected],
    )  # fmt: skip
    assert csv.name == expected
    wandb, csv = loggers("logger_demo.yaml", EXPERIMENTS / "demo" / "sft.yaml")  # names set: kept
    assert (wandb._wandb_init["name"], wandb._wandb_init["group"], csv.name) == ("demo-sft", "demo", "csv")
