"""`GRPOModule`: stage 2, RL with EMA-GRPO (or GRPO / Dr.GRPO: one flag)."""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable

import rewards
from lightning_modules.advantages import AdvantageResult, TaskRewardEMA, compute_advantages, task_key
from lightning_modules.backbone import VisionLanguageBackbone
from lightning_modules.losses import aggregate, global_counts, kl_penalty, policy_loss
from lightning_modules.rollout import HFGenerateEngine, RolloutEngine, Rollouts, select_rows
from lightning_modules.schedules import WarmupSchedule

REWARD_FIELDS = ("overall", "accuracy", "format", "structure")


def _adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=2e-6, weight_decay=0.01)


@dataclass
class ScoredPart:
    """Rollouts of one generate call that survived filtering, with their rewards."""

    rollouts: Rollouts
    rows: list[int]  # kept rows of ``rollouts``
    scores: dict[str, torch.Tensor]  # field -> [len(rows)]


def group_means(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` per group id (ids 0..G-1), shape [G]."""
    g = int(groups.max()) + 1 if groups.numel() else 0
    sums = torch.zeros(g, dtype=torch.float64).index_add_(0, groups, values.double())
    counts = torch.bincount(groups, minlength=g).clamp_min(1)
    return sums / counts


class GRPOModule(L.LightningModule):
    """Group-relative policy optimisation over a `VisionLanguageBackbone` (manual optimisation).

    Each training step: roll out ``rollouts_per_prompt`` responses per prompt, score them with
    ``rewards.score_batch``, keep groups whose mean ``filter_metric`` lies strictly inside
    ``filter_band`` (topping up from the data module's second stream up to ``max_resample`` times),
    compute advantages, take the old log-probs once, then run ``ppo_epochs`` passes of mini-batch
    updates of ``prompts_per_update`` prompts, each accumulated over micro-batches of
    ``micro_batch_size`` rows.

    Args:
        backbone: the policy (and processor).
        rollout: the rollout engine (HF ``generate`` by default).
        rollouts_per_prompt: group size (released: 8).
        advantage: the ablation flag: ``ema_grpo``, ``grpo`` or ``dr_grpo``.
        task_key_by: EMA key: ``task`` (segmentation split by modality) or ``task_modality``.
        guard: |A| above which EMA-GRPO's guard acts (released: 5).
        guard_mode: ``fallback`` to the group std (released) or ``clip`` (paper).
        reward_variant: ``released`` (0.9·acc + 0.1·format + structure) or ``paper``.
        reward_workers: process-pool workers for scoring (0: in process).
        filter_metric: reward field the online filter reads.
        filter_band: keep a group if low < its mean < high (released: 0.01, 0.99).
        filter_groups: turn online filtering on or off.
        max_resample: extra prompt batches drawn per step to refill filtered groups.
        prompts_per_update: prompts per optimizer step (released: 32 of 128 → 4 updates).
        ppo_epochs: passes over the step's rollouts (released: 1).
        micro_batch_size: rows per forward/backward (gradient accumulation inside an update).
        clip_low: PPO ε_low (0.2).
        clip_high: PPO ε_high (0.3).
        dual_clip: dual-clip c for negative advantages (3.0).
        loss_aggregation: ``token-mean`` (released), ``seq-mean-token-mean`` or ``constant``.
        kl_coef: KL weight against a frozen reference; 0 (released) builds no reference.
        kl_estimator: ``k1``, ``k2``, ``k3`` / ``low_var_kl``.
        entropy_coef: entropy bonus weight (released: 0).
        grad_clip: gradient-norm clip per update (1.0).
        optimizer: optimizer factory (released: AdamW lr 2e-6, weight decay 0.01).
        schedule: learning-rate schedule (released: constant).
        seed: seed of the rollout sampling.
        val_max_new_tokens: response cap of the reward evaluation in validation.
        val_samples: sampled responses per prompt in validation (0: greedy only).
    """

    def __init__(
        self,
        backbone: VisionLanguageBackbone,
        rollout: HFGenerateEngine | None = None,
        rollouts_per_prompt: int = 8,
        advantage: Literal["ema_grpo", "grpo", "dr_grpo"] = "ema_grpo",
        task_key_by: Literal["task", "task_modality"] = "task",
        guard: float = 5.0,
        guard_mode: Literal["fallback", "clip"] = "fallback",
        reward_variant: Literal["released", "paper"] = "released",
        reward_workers: int = 0,
        filter_metric: Literal["accuracy", "overall"] = "accuracy",
        filter_band: tuple[float, float] = (0.01, 0.99),
        filter_groups: bool = True,
        max_resample: int = 2,
        prompts_per_update: int = 32,
        ppo_epochs: int = 1,
        micro_batch_size: int = 8,
        clip_low: float = 0.2,
        clip_high: float = 0.3,
        dual_clip: float | None = 3.0,
        loss_aggregation: Literal["token-mean", "seq-mean-token-mean", "constant"] = "token-mean",
        kl_coef: float = 0.0,
        kl_estimator: Literal["k1", "k2", "k3", "low_var_kl"] = "low_var_kl",
        entropy_coef: float = 0.0,
        grad_clip: float = 1.0,
        optimizer: OptimizerCallable = _adamw,
        schedule: WarmupSchedule | None = None,
        seed: int = 0,
        val_max_new_tokens: int = 256,
        val_samples: int = 0,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.backbone = backbone
        self.rollout: RolloutEngine = rollout or HFGenerateEngine()
        self.save_hyperparameters(ignore=["backbone", "rollout", "optimizer", "schedule"])
        self.optimizer_factory = optimizer
        self.schedule = schedule or WarmupSchedule("constant", 0.0)
        self.reward_ema: TaskRewardEMA | None = None
        self.reference: torch.nn.Module | None = None
        self._resample_iter: Any = None

    # -- wiring -------------------------------------------------------------------------------
    def attach_reward_ema(self, ema: TaskRewardEMA) -> None:
        """The one entry point for the per-task EMA statistics (owned by TaskRewardStatsCallback)."""
        self.reward_ema = ema

    def on_fit_start(self) -> None:
        if self.hparams.advantage == "ema_grpo" and self.reward_ema is None:
            raise RuntimeError(
                "advantage 'ema_grpo' needs callbacks.task_reward_stats.TaskRewardStatsCallback in trainer.callbacks"
            )
        dm = getattr(self.trainer, "datamodule", None)
        records = getattr(dm, "records", {}).get("train", []) if dm is not None else []
        rewards.check_tasks(sorted({(r.problem_type, r.data_type) for r in records}))

    def setup(self, stage: str) -> None:
        # Built here, before Lightning restores a checkpoint, so that a resumed run loads the saved
        # reference (the initial policy) instead of failing on its keys or copying the resumed policy.
        if stage == "fit" and self.hparams.kl_coef > 0 and self.reference is None:
            self.reference = copy.deepcopy(self.backbone).eval().requires_grad_(False)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.backbone.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else 10_000
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.schedule.build(optimizer, total), "interval": "step"}}

    # -- rollout, scoring, filtering -----------------------------------------------------------
    def _score(self, ro: Rollouts) -> dict[str, torch.Tensor]:
        results = rewards.score_batch(
            ro.responses,
            [m["answer"] for m in ro.meta],
            [m["problem_type"] for m in ro.meta],
            [m["data_type"] for m in ro.meta],
            variant=self.hparams.reward_variant,
            workers=self.hparams.reward_workers,
            problem_ids=[m["problem_id"] for m in ro.meta],
        )
        return {f: torch.tensor([getattr(r, f) for r in results], dtype=torch.float32) for f in REWARD_FIELDS}

    def _rollout_and_filter(self, prompts: dict[str, Any], stats: dict[str, list]) -> ScoredPart:
        n = self.hparams.rollouts_per_prompt
        with torch.no_grad():
            ro = self.rollout(self.backbone, prompts, n)
        scores = self._score(ro)
        means = group_means(scores[self.hparams.filter_metric], ro.group_ids)
        low, high = self.hparams.filter_band
        keep_group = (means > low) & (means < high) if self.hparams.filter_groups else torch.ones_like(means, dtype=torch.bool)
        for g, kept in enumerate(keep_group.tolist()):
            meta = ro.meta[g * n]
            stats[task_key(meta["problem_type"], meta["data_type"], self.hparams.task_key_by)].append(float(kept))
        stats["_generated_tokens"].append(ro.generated_tokens)
        rows = [r for r in range(len(ro.responses)) if keep_group[int(ro.group_ids[r])]]
        return ScoredPart(ro, rows, {f: v[rows] for f, v in scores.items()})

    def _collect(self, batch: dict[str, Any]) -> tuple[list[ScoredPart], dict[str, list]]:
        wanted = len(batch["meta"])
        filter_stats: dict[str, list] = defaultdict(list)
        parts = [self._rollout_and_filter(batch, filter_stats)]
        n = self.hparams.rollouts_per_prompt
        tries = 0
        while sum(len(p.rows) for p in parts) < wanted * n and tries < self.hparams.max_resample and self.hparams.filter_groups:
            extra = self._next_resample_batch()
            if extra is None:
                break
            parts.append(self._rollout_and_filter(extra, filter_stats))
            tries += 1
        # keep at most `wanted` groups, in order
        budget = wanted * n
        trimmed = []
        for p in parts:
            take = p.rows[: max(0, budget)]
            budget -= len(take)
            if take:
                trimmed.append(ScoredPart(p.rollouts, take, {f: v[: len(take)] for f, v in p.scores.items()}))
        return trimmed, filter_stats

    def _next_resample_batch(self) -> dict[str, Any] | None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "resample_batches"):
            return None
        if self._resample_iter is None:
            self._resample_iter = dm.resample_batches()
        # Starting a DataLoader iterator draws from the global RNG; a resumed run starts this one at
        # a different step than the uninterrupted run, so keep it off the seeded rollout stream.
        with torch.random.fork_rng(devices=[]):
            batch = next(self._resample_iter)
        if not batch.get("meta"):
            return None
        return self.trainer.strategy.batch_to_device(batch)

    # -- update --------------------------------------------------------------------------------
    def _micro_batches(self, parts: list[ScoredPart], groups: list[int], group_rows: list[tuple[int, list[int]]]) -> list[tuple[int, list[int]]]:
        """(part index, rows) micro-batches covering ``groups``."""
        by_part: dict[int, list[int]] = defaultdict(list)
        for g in groups:
            part, rows = group_rows[g]
            by_part[part] += rows
        size = self.hparams.micro_batch_size
        return [(p, rows[i : i + size]) for p, rows in by_part.items() for i in range(0, len(rows), size)]

    def _max_response_tokens(self, mask: torch.Tensor) -> float:
        """Dr.GRPO's constant normaliser: the rollout engine's response cap (fixed across micro-batches)."""
        return float(getattr(self.rollout, "max_new_tokens", mask.shape[1]))

    def _logprobs(self, model: VisionLanguageBackbone, mb: dict[str, Any], entropy: bool = False) -> Any:
        return model.token_logprobs(mb, mb["response_mask"].bool(), with_entropy=entropy)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        started = time.perf_counter()
        if not batch.get("meta"):
            return
        # Sampling is seeded per step and rank, so a resumed run draws the same rollouts.
        torch.manual_seed(self.hparams.seed * 1_000_003 + self.global_step * 7919 + self.global_rank)
        parts, filter_stats = self._collect(batch)
        generated = sum(filter_stats.pop("_generated_tokens", [0]))
        gen_seconds = time.perf_counter() - started
        n = self.hparams.rollouts_per_prompt
        if not parts:
            self.log("train/filter/empty_steps", 1.0, on_step=True, batch_size=1)
            self._log_filter(filter_stats)
            return

        # flatten kept rows into groups
        rows_meta, group_ids, group_rows, scores = [], [], [], defaultdict(list)
        for pi, part in enumerate(parts):
            for start in range(0, len(part.rows), n):
                group_rows.append((pi, part.rows[start : start + n]))
            for f, v in part.scores.items():
                scores[f].append(v)
            rows_meta += [part.rollouts.meta[r] for r in part.rows]
        scores = {f: torch.cat(v) for f, v in scores.items()}
        group_ids = torch.arange(len(group_rows)).repeat_interleave(n)
        keys = [task_key(m["problem_type"], m["data_type"], self.hparams.task_key_by) for m in rows_meta]
        result = compute_advantages(
            self.hparams.advantage, scores["overall"], group_ids, keys, self.reward_ema, self.hparams.guard, self.hparams.guard_mode
        )
        advantages = result.advantages.float()
        row_advantage: dict[tuple[int, int], float] = {}
        cursor = 0
        for pi, part in enumerate(parts):
            for r in part.rows:
                row_advantage[(pi, r)] = float(advantages[cursor])
                cursor += 1

        # old (and reference) log-probs, once per step
        def part_batch(pi: int, rows: list[int]) -> dict[str, Any]:
            ro = parts[pi].rollouts
            mb = select_rows({**ro.batch, "response_mask": ro.response_mask}, rows)
            mb["advantages"] = torch.tensor(  # float32 also under bf16-true, whose default dtype is bf16
                [row_advantage[(pi, r)] for r in rows], dtype=torch.float32, device=mb["input_ids"].device
            )
            return mb

        all_groups = list(range(len(group_rows)))
        # per row (part, row): update micro-batches need not match these micro-batches
        old: dict[tuple[int, int], torch.Tensor] = {}
        ref: dict[tuple[int, int], torch.Tensor] = {}
        entropy_sum, entropy_tokens = 0.0, 0
        with torch.no_grad():
            for pi, rows in self._micro_batches(parts, all_groups, group_rows):
                mb = part_batch(pi, rows)
                lp, ent = self._logprobs(self.backbone, mb, entropy=True)
                old.update({(pi, r): lp[j] for j, r in enumerate(rows)})
                mask = mb["response_mask"].bool()
                entropy_sum += float(ent[mask].sum())
                entropy_tokens += int(mask.sum())
                if self.reference is not None:
                    ref_lp = self._logprobs(self.reference, mb)
                    ref.update({(pi, r): ref_lp[j] for j, r in enumerate(rows)})

        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        per_update = self.hparams.prompts_per_update
        world = self.trainer.world_size
        loss_log, clip_log, kl_log, dual_log = [], [], [], []
        for _ in range(self.hparams.ppo_epochs):
            for start in range(0, len(all_groups), per_update):
                micro = self._micro_batches(parts, all_groups[start : start + per_update], group_rows)
                batches = [part_batch(pi, rows) for pi, rows in micro]
                tokens, seqs = global_counts([b["response_mask"] for b in batches])
                update_loss = 0.0
                for (pi, rows), mb in zip(micro, batches):
                    mask = mb["response_mask"]
                    want_entropy = self.hparams.entropy_coef > 0
                    out = self._logprobs(self.backbone, mb, entropy=want_entropy)
                    lp, ent = out if want_entropy else (out, None)
                    per_token, st = policy_loss(
                        lp, torch.stack([old[(pi, r)] for r in rows]), mb["advantages"], mask,
                        self.hparams.clip_low, self.hparams.clip_high, self.hparams.dual_clip,
                    )
                    if self.reference is not None:
                        kl = kl_penalty(lp, torch.stack([ref[(pi, r)] for r in rows]), self.hparams.kl_estimator)
                        per_token = per_token + self.hparams.kl_coef * kl
                        kl_log.append(float((kl.detach() * mask).sum() / mask.sum().clamp_min(1)))
                    if ent is not None:
                        per_token = per_token - self.hparams.entropy_coef * ent
                    loss = aggregate(
                        per_token, mask, self.hparams.loss_aggregation,
                        constant_normalizer=self._max_response_tokens(mask), global_tokens=tokens, global_sequences=seqs,
                    )
                    self.manual_backward(loss * world)
                    update_loss += float(loss.detach())
                    clip_log.append(float(st.clip_fraction))
                    dual_log.append(float(st.dual_clip_fraction))
                self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                loss_log.append(update_loss)

        step_seconds = time.perf_counter() - started
        self._log_step(scores, keys, rows_meta, result, filter_stats, parts, loss_log, clip_log, dual_log, kl_log,
                       entropy_sum / max(entropy_tokens, 1), generated / max(gen_seconds, 1e-9), step_seconds)

    # -- logging -------------------------------------------------------------------------------
    def _log_filter(self, filter_stats: dict[str, list]) -> None:
        for key, kept in filter_stats.items():
            self.log(f"train/filter_pass_rate/{key}", sum(kept) / max(len(kept), 1), on_step=True, batch_size=1)

    def _log_step(self, scores, keys, rows_meta, result: AdvantageResult, filter_stats, parts, loss_log, clip_log,
                  dual_log, kl_log, entropy, gen_tps, step_seconds) -> None:
        log = lambda name, value: self.log(name, float(value), on_step=True, batch_size=1)  # noqa: E731
        lengths = torch.tensor(
            [float(p.rollouts.response_mask[r].sum()) for p in parts for r in p.rows], dtype=torch.float32
        )
        for f, v in scores.items():
            log(f"train/reward/{f}", v.mean())
        log("train/response_length", lengths.mean())
        by_key: dict[str, list[int]] = defaultdict(list)
        for i, k in enumerate(keys):
            by_key[k].append(i)
        for key, idx in by_key.items():
            index = torch.tensor(idx)
            for f, v in scores.items():
                log(f"train/reward/{f}/{key}", v[index].mean())
            log(f"train/response_length/{key}", lengths[index].mean())
            stats = result.per_key.get(key, {})
            if "zero_std_groups" in stats:
                log(f"train/zero_std_groups/{key}", stats["zero_std_groups"])
            if "ema_std" in stats:
                log(f"train/ema_sigma_used/{key}", stats["ema_std"])
        self._log_filter(filter_stats)
        log("train/zero_std_groups", result.zero_std_groups)
        log("train/guarded_groups", result.guarded_groups)
        log("train/advantage_abs_mean", result.advantages.abs().mean())
        log("train/loss", sum(loss_log) / max(len(loss_log), 1))
        log("train/clip_fraction", sum(clip_log) / max(len(clip_log), 1))
        log("train/dual_clip_fraction", sum(dual_log) / max(len(dual_log), 1))
        if kl_log:
            log("train/kl", sum(kl_log) / len(kl_log))
        log("train/entropy", entropy)
        log("train/generation_tokens_per_sec", gen_tps)
        log("train/step_seconds", step_seconds)
        log("train/lr", self.optimizers().param_groups[0]["lr"])
        self.last_rollouts = {"parts": parts, "scores": scores, "advantages": result.advantages, "meta": rows_meta}

    # -- validation: greedy reward evaluation --------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Greedy rewards (``val/reward/...``), and with ``val_samples > 0`` the mean reward of that many
        samples per prompt at the rollout temperature (``val/sampled_reward/...``), which RL optimises."""
        if not batch.get("meta"):
            return
        keys = [task_key(m["problem_type"], m["data_type"], self.hparams.task_key_by) for m in batch["meta"]]
        out = self.backbone.generate(batch, num_return_sequences=1, max_new_tokens=self.hparams.val_max_new_tokens, do_sample=False)
        self._log_val_scores("val/reward", self._score_generated(batch, out, 1), keys)
        if self.hparams.val_samples > 0:
            n = self.hparams.val_samples
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.hparams.seed * 7_919 + batch_idx)
                sampled = self.backbone.generate(
                    batch, num_return_sequences=n, temperature=getattr(self.rollout, "temperature", 1.0),
                    top_p=getattr(self.rollout, "top_p", 1.0), max_new_tokens=self.hparams.val_max_new_tokens,
                )
            self._log_val_scores("val/sampled_reward", self._score_generated(batch, sampled, n), [k for k in keys for _ in range(n)])

    def _score_generated(self, batch: dict[str, Any], out: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        tok = self.backbone.tokenizer
        mask = out["response_mask"]
        texts = tok.batch_decode(out["response_ids"] * mask + tok.pad_token_id * (1 - mask), skip_special_tokens=True)
        meta = [m for m in batch["meta"] for _ in range(n)]
        return self._score(Rollouts(batch, mask, texts, torch.arange(len(texts)), meta, int(mask.sum())))

    def _log_val_scores(self, prefix: str, scores: dict[str, torch.Tensor], keys: list[str]) -> None:
        for f, v in scores.items():
            self.log(f"{prefix}/{f}", v.mean(), on_epoch=True, batch_size=len(keys))
        for key in sorted(set(keys)):
            idx = torch.tensor([i for i, k in enumerate(keys) if k == key])
            for f in ("overall", "accuracy"):
                self.log(f"{prefix}/{f}/{key}", scores[f][idx].mean(), on_epoch=True, batch_size=len(idx))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["backbone_init"] = self.backbone.init_args
