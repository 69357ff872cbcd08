"""`GRPOModule`: stage 2, RL with EMA-GRPO (or GRPO / Dr.GRPO: one flag)."""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable

import rewards
from datamodules.collate import RowMedia
from datamodules.tasks import task_key
from lightning_modules.model.backbone import (
    VisionLanguageBackbone,
    decode_responses,
    join_sharded_call,
    placeholder_row,
    sharded_across_ranks,
    vision_grad_anchor,
)
from lightning_modules.rl.advantage_diagnostics import advantage_diagnostics
from lightning_modules.rl.advantages import (
    AdvantageResult,
    Estimator,
    GuardMode,
    TaskRewardEMA,
    compute_advantages,
)
from lightning_modules.rl.losses import (
    aggregate,
    global_counts,
    kl_penalty,
    logprob_gap,
    policy_loss,
    truncated_is_weights,
)
from lightning_modules.rl.rl_step import (
    GroupRecord,
    MicroBatch,
    gather_groups,
    kept_groups,
    micro_batch_count,
    passes_filter,
    plan_updates,
    rank_micro_batches,
)
from lightning_modules.rl.rollout import HFGenerateEngine, RolloutEngine, Rollouts, rollout_seed, select_rows
from lightning_modules.training.schedules import WarmupSchedule
from lightning_modules.training.sharding import ShardingSettings, configure_sharding
from lightning_modules.training.step_metrics import log_step_metrics
from rewards import REWARD_FIELDS
from rewards.reward_model import OpenAIChatRewardScorer


def _adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=2e-6, weight_decay=0.01)


@dataclass
class ScoredPart:
    """This rank's kept rows of one generate call, with their rewards (read by the rollout table)."""

    rollouts: Rollouts
    rows: list[int]  # kept rows of ``rollouts``
    scores: dict[str, torch.Tensor]  # field -> [len(rows)]


@dataclass
class Collected:
    """Phase 1's result: this rank's generate calls and every rank's groups, the kept ones agreed."""

    parts: list[Rollouts] = field(default_factory=list)  # this rank's generate calls, in order
    scores: list[dict[str, torch.Tensor]] = field(default_factory=list)  # per part: field -> [rows]
    groups: list[GroupRecord] = field(default_factory=list)  # every rank's groups, global order
    kept: list[GroupRecord] = field(default_factory=list)  # the groups trained on, global order
    generated_tokens: int = 0
    generation_seconds: float = 0.0
    agreement_seconds: float = 0.0  # in the gathers (waiting for the slowest rank included)


@dataclass
class OldLogprobs:
    """Phase 3's result for this rank's kept rows, keyed by (part, row)."""

    policy: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    reference: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    entropy_sum: float = 0.0
    entropy_tokens: int = 0
    gap_sum: float = 0.0  # |trainer - engine| log-prob of the sampled tokens (engines that report them)
    gap_max: float = 0.0
    gap_tokens: int = 0


@dataclass
class UpdateStats:
    """Phase 4's result: each update's loss (this rank's share) and this rank's clip and KL figures."""

    losses: list[torch.Tensor] = field(default_factory=list)
    clip: list[float] = field(default_factory=list)
    dual_clip: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)


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
        rollout: the rollout engine: `HFGenerateEngine` (default) or
            `lightning_modules.rl.vllm_engine.VLLMColocateEngine` (``class_path``).
        rollouts_per_prompt: group size (released: 8).
        advantage: the ablation flag: ``ema_grpo``, ``grpo`` or ``dr_grpo``.
        task_key_by: EMA key: ``task`` (segmentation split by modality) or ``task_modality``.
        guard: |A| above which EMA-GRPO's guard acts (released: 5).
        guard_mode: ``fallback`` to the group std (released) or ``clip`` (paper).
        reward_variant: ``released`` (0.9·acc + 0.1·format + structure) or ``paper``.
        reward_workers: process-pool workers for scoring (0: in process).
        reward_model: a judge for open-ended answers (the paper: POLAR-7B) behind an OpenAI-compatible
            endpoint, e.g. ``vllm serve <model>``; its scores are min-max normalised per prompt group,
            and items it fails fall back to ROUGE (counted: ``train/reward_model_failures``).
            ``None``: ROUGE for every open-ended answer (the released default).
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
        tis_cap: truncated importance sampling: weight each token's policy loss by
            min(π_old/π_engine, cap), correcting for the rollout engine sampling from slightly
            different probabilities than the trainer computes; needs an engine that reports its
            log-probabilities (vLLM). ``None`` (released) turns it off.
        kl_coef: KL weight against a frozen reference; 0 (released) builds no reference.
        kl_estimator: ``k1``, ``k2``, ``k3`` / ``low_var_kl``.
        entropy_coef: entropy bonus weight (released: 0).
        grad_clip: gradient-norm clip per update (1.0).
        optimizer: optimizer factory (released: AdamW lr 2e-6, weight decay 0.01).
        schedule: learning-rate schedule (released: constant).
        seed: seed of the rollout sampling.
        val_max_new_tokens: response cap of the reward evaluation in validation.
        val_samples: sampled responses per prompt in validation (0: greedy only).
        sharding: FSDP2 settings, applied (to the policy and the KL reference) when the Trainer's
            strategy is ``ModelParallelStrategy``.
    """

    def __init__(
        self,
        backbone: VisionLanguageBackbone,
        rollout: RolloutEngine | None = None,
        rollouts_per_prompt: int = 8,
        advantage: Estimator = "ema_grpo",
        task_key_by: Literal["task", "task_modality"] = "task",
        guard: float = 5.0,
        guard_mode: GuardMode = "fallback",
        reward_variant: Literal["released", "paper"] = "released",
        reward_workers: int = 0,
        reward_model: OpenAIChatRewardScorer | None = None,
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
        tis_cap: float | None = None,
        kl_coef: float = 0.0,
        kl_estimator: Literal["k1", "k2", "k3", "low_var_kl"] = "low_var_kl",
        entropy_coef: float = 0.0,
        grad_clip: float = 1.0,
        optimizer: OptimizerCallable = _adamw,
        schedule: WarmupSchedule | None = None,
        seed: int = 0,
        val_max_new_tokens: int = 256,
        val_samples: int = 0,
        sharding: ShardingSettings | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.backbone = backbone
        self.rollout: RolloutEngine = rollout or HFGenerateEngine()
        self.save_hyperparameters(
            ignore=["backbone", "rollout", "optimizer", "schedule", "sharding", "reward_model"]
        )
        self.reward_model = reward_model
        self.sharding = sharding or ShardingSettings()
        self.optimizer_factory = optimizer
        self.schedule = schedule or WarmupSchedule("constant", 0.0)
        self.reward_ema: TaskRewardEMA | None = None
        self.reference: torch.nn.Module | None = None
        self._resample_iter: Any = None
        self.last_step: dict[str, Any] | None = None  # the last RL step's global figures (None: skipped)

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
        self.rollout.setup(self.backbone, self.global_rank, self.trainer.world_size)

    def on_fit_end(self) -> None:
        self.rollout.teardown()

    def _generate(self, prompts: dict[str, Any], n: int, part: int) -> Rollouts:
        """This rank's rollouts of ``prompts`` from the current policy (every rank calls it together:
        the engine's weight sync gathers sharded parameters)."""
        self.rollout.sync_weights(self.backbone, version=self.global_step)
        seed = rollout_seed(self.hparams.seed, self.global_step, self.global_rank) + 1_000_033 * part
        with torch.no_grad():
            return self.rollout(self.backbone, prompts, n, seed=seed)

    def setup(self, stage: str) -> None:
        # Built here, before Lightning restores a checkpoint, so that a resumed run loads the saved
        # reference (the initial policy) instead of failing on its keys or copying the resumed policy.
        if stage == "fit" and self.hparams.kl_coef > 0 and self.reference is None:
            self.reference = copy.deepcopy(self.backbone).eval().requires_grad_(False)

    def configure_model(self) -> None:
        # After setup(): the reference is a copy of the unsharded policy, sharded the same way.
        configure_sharding(self, self.backbone, self.sharding)
        if self.reference is not None:
            configure_sharding(self, self.reference, self.sharding)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.backbone.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        total = self.schedule.horizon(self.trainer.max_steps, "GRPOModule")
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.schedule.build(optimizer, total), "interval": "step"},
        }

    # -- phase 1: collect (roll out, score, filter: one global decision) -----------------------
    def _score(self, ro: Rollouts) -> dict[str, torch.Tensor]:
        results = rewards.score_batch(
            ro.responses,
            [m["answer"] for m in ro.meta],
            [m["problem_type"] for m in ro.meta],
            [m["data_type"] for m in ro.meta],
            variant=self.hparams.reward_variant,
            workers=self.hparams.reward_workers,
            problem_ids=[m["problem_id"] for m in ro.meta],
            prompts=[m.get("problem") or "" for m in ro.meta] if self.reward_model is not None else None,
            reward_model=self.reward_model,
        )
        return {f: torch.tensor([getattr(r, f) for r in results], dtype=torch.float32) for f in REWARD_FIELDS}

    def _roll_out(self, prompts: dict[str, Any], part: int, collected: Collected) -> list[GroupRecord]:
        """This rank's rollouts of ``prompts``, scored, as the group records every rank will see."""
        n = self.hparams.rollouts_per_prompt
        ro = self._generate(prompts, n, part)
        scores = self._score(ro)
        collected.parts.append(ro)
        collected.scores.append(scores)
        collected.generated_tokens += ro.generated_tokens
        rank, by = self.global_rank, self.hparams.task_key_by
        tokens = ro.response_mask.sum(-1).tolist()
        return [
            GroupRecord(
                rank,
                part,
                g,
                task_key(ro.meta[g * n]["problem_type"], ro.meta[g * n]["data_type"], by),
                {f: tuple(v[g * n : g * n + n].tolist()) for f, v in scores.items()},
                tuple(tokens[g * n : g * n + n]),
            )
            for g in range(len(ro.responses) // n)
        ]

    def _collect(self, batch: dict[str, Any]) -> Collected:
        """Roll out this rank's prompts; gather every rank's groups; keep the same groups on every rank.

        A resample round is drawn (by every rank together) while fewer groups than the step's global
        prompts were kept, up to ``max_resample`` rounds.
        """
        started = time.perf_counter()
        collected = Collected()
        prompts: dict[str, Any] | None = batch
        wanted = 0
        band, metric, enabled = (
            tuple(self.hparams.filter_band),
            self.hparams.filter_metric,
            self.hparams.filter_groups,
        )
        for round_ in range(1 + self.hparams.max_resample):
            if round_ > 0:
                if not enabled or len(kept_groups(collected.groups, metric, band, enabled, wanted)) >= wanted:
                    break
                prompts = self._next_resample_batch()
            if prompts and prompts.get("meta"):
                local = self._roll_out(prompts, len(collected.parts), collected)
            else:  # every row of this rank's batch was skipped
                local = self._join_generation(len(collected.parts))
            gather_started = time.perf_counter()
            gathered = gather_groups(local)
            collected.agreement_seconds += time.perf_counter() - gather_started
            wanted = wanted or len(gathered)  # round 0: the step's global prompts
            collected.groups += gathered
        collected.kept = kept_groups(collected.groups, metric, band, enabled, wanted)
        collected.generation_seconds = time.perf_counter() - started
        return collected

    def _join_generation(self, part: int) -> list[GroupRecord]:
        """With no prompts, still roll out a placeholder row on a sharded policy, through the rollout
        engine: the other ranks' decoding steps gather parameters collectively and need this rank's
        part (``synced_gpus``). Its answers are dropped."""
        if self._lockstep_forwards():
            batch, _ = placeholder_row(self.backbone, self.device)
            meta = {"problem_id": "placeholder", "problem_type": "", "data_type": "image", "media": []}
            self._generate({**batch, "meta": [meta], "row_media": [RowMedia()]}, 1, part)
        return []

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

    # -- phase 2: advantages (global batch, identical on every rank) --------------------------
    def _advantages(
        self, kept: list[GroupRecord]
    ) -> tuple[AdvantageResult, dict[tuple[int, int, int], torch.Tensor]]:
        """Advantages of the kept groups and the EMA update, computed from the gathered rewards, so
        every rank (and one process on the whole batch) gets the same σ_τ. Returns them per group
        ``(rank, part, index)`` too."""
        n = self.hparams.rollouts_per_prompt
        overall = torch.tensor([r for g in kept for r in g.scores["overall"]], dtype=torch.float32)
        group_ids = torch.arange(len(kept)).repeat_interleave(n)
        keys = [g.key for g in kept for _ in range(n)]
        result = compute_advantages(
            self.hparams.advantage,
            overall,
            group_ids,
            keys,
            self.reward_ema,
            self.hparams.guard,
            self.hparams.guard_mode,
        )
        advantages = result.advantages.float()
        return result, {(g.rank, g.part, g.index): advantages[i * n : i * n + n] for i, g in enumerate(kept)}

    # -- phases 3 and 4: old log-probs, updates ------------------------------------------------
    def _micro_batch(
        self, collected: Collected, part: int, rows: list[int], advantages: dict, weight: float = 1.0
    ) -> dict[str, Any]:
        """Rows of one generate call as a training micro-batch; ``weight`` 0 makes a padding micro-batch
        (a real forward and backward that adds nothing)."""
        ro = collected.parts[part]
        mb = select_rows({**ro.batch, "response_mask": ro.response_mask}, rows)
        n = self.hparams.rollouts_per_prompt
        device = mb["input_ids"].device
        if weight == 0.0:
            mb["response_mask"] = torch.zeros_like(mb["response_mask"])
            adv = torch.zeros(len(rows))
        else:
            adv = torch.stack([advantages[(self.global_rank, part, r // n)][r % n] for r in rows])
        mb["advantages"] = adv.to(device=device, dtype=torch.float32)  # float32 also under bf16-true
        mb["token_mask"] = (
            ro.response_mask[torch.tensor(rows)].to(device).bool()
        )  # scored positions, padding included
        if ro.sampling_logprobs is not None:
            mb["sampling_logprobs"] = ro.sampling_logprobs[torch.tensor(rows)].to(device)
        return mb

    def _padded(
        self, collected: Collected, groups: list[GroupRecord], advantages: dict
    ) -> list[tuple[MicroBatch | None, dict[str, Any]]]:
        """This rank's micro-batches of ``groups``, padded to the most any rank runs (``None``: padding)."""
        n, size = self.hparams.rollouts_per_prompt, self.hparams.micro_batch_size
        mine = rank_micro_batches(groups, self.global_rank, n, size)
        count = micro_batch_count(groups, self.trainer.world_size, n, size)
        out: list[tuple[MicroBatch | None, dict[str, Any]]] = [
            (mb, self._micro_batch(collected, *mb, advantages)) for mb in mine
        ]
        out += [(None, self._padding_micro_batch(collected, advantages)) for _ in range(count - len(mine))]
        return out

    def _padding_micro_batch(self, collected: Collected, advantages: dict) -> dict[str, Any]:
        """Rows of this rank's first generate call at zero weight, or a placeholder text row when it
        rolled out nothing (every prompt of its batch was skipped)."""
        if collected.parts:
            rows = list(range(min(self.hparams.micro_batch_size, len(collected.parts[0].responses))))
            return self._micro_batch(collected, 0, rows, advantages, weight=0.0)
        batch, scored = placeholder_row(self.backbone, self.device)
        zeros = torch.zeros_like(batch["input_ids"])
        return {
            **batch,
            "response_mask": zeros,
            "token_mask": scored,
            "advantages": torch.zeros(1, device=self.device),
        }

    def _lockstep_forwards(self) -> bool:
        """Forward passes are collective (FSDP2 gathers parameters): pad no-grad passes too."""
        return sharded_across_ranks(self.backbone)

    def _old_logprobs(self, collected: Collected, advantages: dict) -> OldLogprobs:
        """Old (and reference) log-probs of this rank's kept rows, once per step; the entropy sums."""
        old = OldLogprobs()
        groups = [g for g in collected.kept if g.rank == self.global_rank or self._lockstep_forwards()]
        with torch.no_grad():
            for located, mb in self._padded(collected, groups, advantages):
                lp, ent = self._logprobs(self.backbone, mb, entropy=True)
                ref_lp = self._logprobs(self.reference, mb) if self.reference is not None else None
                if located is None:
                    continue
                part, rows = located
                old.policy.update({(part, r): lp[j] for j, r in enumerate(rows)})
                if ref_lp is not None:
                    old.reference.update({(part, r): ref_lp[j] for j, r in enumerate(rows)})
                mask = mb["response_mask"].bool()
                old.entropy_sum += float(ent[mask].sum())
                old.entropy_tokens += int(mask.sum())
                if "sampling_logprobs" in mb:
                    gap_sum, gap_max, tokens = logprob_gap(lp, mb["sampling_logprobs"], mask)
                    old.gap_sum, old.gap_tokens = old.gap_sum + gap_sum, old.gap_tokens + tokens
                    old.gap_max = max(old.gap_max, gap_max)
        return old

    def _max_response_tokens(self, mask: torch.Tensor) -> float:
        """Dr.GRPO's constant normaliser: the rollout engine's response cap (fixed across micro-batches)."""
        return float(getattr(self.rollout, "max_new_tokens", mask.shape[1]))

    def _logprobs(self, model: VisionLanguageBackbone, mb: dict[str, Any], entropy: bool = False) -> Any:
        return model.token_logprobs(mb, mb["token_mask"], with_entropy=entropy)

    def _update(self, collected: Collected, advantages: dict, old: OldLogprobs) -> UpdateStats:
        """``ppo_epochs`` passes of updates over the kept groups; every rank runs each update's padded
        micro-batches, so forwards, backwards, the token count and the optimizer step stay in lockstep."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        world = self.trainer.world_size
        stats = UpdateStats()
        for _ in range(self.hparams.ppo_epochs):
            for groups in plan_updates(collected.kept, self.hparams.prompts_per_update):
                batches = self._padded(collected, groups, advantages)
                tokens, seqs = global_counts([mb["response_mask"] for _, mb in batches])
                update_loss = torch.zeros((), dtype=torch.float64)
                for located, mb in batches:
                    mask = mb["response_mask"]
                    want_entropy = self.hparams.entropy_coef > 0
                    out = self._logprobs(self.backbone, mb, entropy=want_entropy)
                    lp, ent = out if want_entropy else (out, None)
                    part, rows = located if located is not None else (0, [])
                    old_lp = torch.stack([old.policy[(part, r)] for r in rows]) if rows else lp.detach()
                    per_token, st = policy_loss(
                        lp,
                        old_lp,
                        mb["advantages"],
                        mask,
                        self.hparams.clip_low,
                        self.hparams.clip_high,
                        self.hparams.dual_clip,
                    )
                    if self.hparams.tis_cap is not None and "sampling_logprobs" in mb and rows:
                        tis = truncated_is_weights(old_lp, mb["sampling_logprobs"], self.hparams.tis_cap)
                        per_token = per_token * tis
                    if self.reference is not None:
                        ref_lp = (
                            torch.stack([old.reference[(part, r)] for r in rows]) if rows else lp.detach()
                        )
                        kl = kl_penalty(lp, ref_lp, self.hparams.kl_estimator)
                        per_token = per_token + self.hparams.kl_coef * kl
                        if rows:
                            stats.kl.append(float((kl.detach() * mask).sum() / mask.sum().clamp_min(1)))
                    if ent is not None:
                        per_token = per_token - self.hparams.entropy_coef * ent
                    loss = aggregate(
                        per_token, mask, self.hparams.loss_aggregation,
                        constant_normalizer=self._max_response_tokens(mask), global_tokens=tokens, global_sequences=seqs,
                    )  # fmt: skip
                    if located is None:
                        loss = (
                            loss * 0.0
                        )  # padding: a backward that joins the gradient reduction, adding nothing
                    if world > 1:
                        loss = loss + vision_grad_anchor(self.backbone, mb)
                    self.manual_backward(loss * world)
                    update_loss += loss.detach().double().cpu()
                    if rows:
                        stats.clip.append(float(st.clip_fraction))
                        stats.dual_clip.append(float(st.dual_clip_fraction))
                self.clip_gradients(
                    optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm"
                )
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                stats.losses.append(update_loss)
        return stats

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One RL step in named phases: collect, advantages, old log-probs, update, log. Every rank runs
        the same collective calls whatever its data (lightning_modules/rl/rl_step.py)."""
        started = time.perf_counter()
        # Sampling is seeded per step and rank, so a resumed run draws the same rollouts.
        torch.manual_seed(rollout_seed(self.hparams.seed, self.global_step, self.global_rank))
        self.last_step = None
        collected = self._collect(batch)
        if not collected.kept:  # a global decision: every rank sees the same groups, so all skip together
            self._log_task_metrics(
                {"train/filter/empty_steps": 1.0, **self._filter_metrics(collected.groups)}
            )
            return
        ema_before = self.reward_ema.state_dict() if self.reward_ema is not None else None
        result, advantages = self._advantages(collected.kept)
        old = self._old_logprobs(collected, advantages)
        updates = self._update(collected, advantages, old)
        self._log_step(collected, result, old, updates, time.perf_counter() - started)
        self.last_step["ema_before"] = ema_before  # type: ignore[index]

    # -- logging -------------------------------------------------------------------------------
    def _filter_metrics(self, groups: list[GroupRecord]) -> dict[str, float]:
        kept: dict[str, list[float]] = defaultdict(list)
        band, metric, enabled = (
            tuple(self.hparams.filter_band),
            self.hparams.filter_metric,
            self.hparams.filter_groups,
        )
        for g in groups:
            kept[g.key].append(float(passes_filter(g, metric, band, enabled)))
        return {f"train/filter_pass_rate/{key}": sum(f) / len(f) for key, f in kept.items()}

    def _log_task_metrics(self, metrics: dict[str, float]) -> None:
        """Metrics of this step (its tasks, its kept batch), logged for this step only (step_metrics.py)."""
        log_step_metrics(self, metrics)

    def _log_step(
        self,
        collected: Collected,
        result: AdvantageResult,
        old: OldLogprobs,
        updates: UpdateStats,
        step_seconds: float,
    ) -> None:
        """Rewards, lengths, filter and advantage statistics of the global kept batch; losses summed over
        ranks (one all-reduce); clip fractions and KL of this rank's rows."""
        metrics: dict[str, float] = {}  # all go out at once, for this step only (step_metrics.py)
        log = lambda name, value: metrics.__setitem__(name, float(value))  # noqa: E731
        kept = collected.kept
        timed_out = rewards.reward_timeouts()  # this rank's time-limited reward calls that ran out, so far
        timed = [float(timed_out.get(label, 0)) for label in rewards.TIME_LIMITED_TASKS]
        totals = torch.tensor([*map(float, updates.losses), old.entropy_sum, float(old.entropy_tokens), *timed],
                              dtype=torch.float64)  # fmt: skip
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        totals, timed = totals[: -len(timed)], totals[-len(timed) :].tolist()
        losses, entropy = totals[:-2], float(totals[-2] / totals[-1].clamp_min(1))
        for label, count in zip(rewards.TIME_LIMITED_TASKS, timed):
            log(f"train/reward_timeouts/{label}", count)
        self.last_step = {  # the step's global figures, the same on every rank
            "kept": [(g.rank, g.part, g.index) for g in kept],
            "advantages": result.advantages.tolist(),
            "update_losses": [float(v) for v in losses],
            "step_seconds": step_seconds,
            "agreement_seconds": collected.agreement_seconds,
            # what the step's advantages were computed from (callbacks/reward_record.py records it)
            "groups": [
                {"key": g.key, "overall": list(g.scores["overall"]), "tokens": list(g.tokens)} for g in kept
            ],
        }
        by_key: dict[str, list[GroupRecord]] = defaultdict(list)
        for g in kept:
            by_key[g.key].append(g)

        def mean(groups: list[GroupRecord], f: str) -> float:
            values = [v for g in groups for v in (g.tokens if f == "length" else g.scores[f])]
            return sum(values) / max(len(values), 1)

        for f in REWARD_FIELDS:
            log(f"train/reward/{f}", mean(kept, f))
        log("train/response_length", mean(kept, "length"))
        tasks: dict[str, float] = {}
        for key, groups in by_key.items():
            for f in REWARD_FIELDS:
                tasks[f"train/reward/{f}/{key}"] = mean(groups, f)
            tasks[f"train/response_length/{key}"] = mean(groups, "length")
            stats = result.per_key.get(key, {})
            if "zero_std_groups" in stats:
                tasks[f"train/zero_std_groups/{key}"] = stats["zero_std_groups"]
            if "ema_std" in stats:
                tasks[f"train/adv/sigma/{key}"] = stats["ema_std"]
        for key, values in self._diagnostics(kept, result).items():
            tasks.update({f"train/adv/{name}/{key}": value for name, value in values.items()})
        metrics.update(tasks)
        metrics.update(self._filter_metrics(collected.groups))
        log("train/zero_std_groups", result.zero_std_groups)
        log("train/guarded_groups", result.guarded_groups)
        log("train/advantage_abs_mean", result.advantages.abs().mean())
        log("train/loss", float(losses.mean()))
        log("train/clip_fraction", sum(updates.clip) / max(len(updates.clip), 1))
        log("train/dual_clip_fraction", sum(updates.dual_clip) / max(len(updates.dual_clip), 1))
        if updates.kl:
            log("train/kl", sum(updates.kl) / len(updates.kl))
        if old.gap_tokens:  # this rank's sampled tokens
            log("train/rollout_logprob_gap/mean", old.gap_sum / old.gap_tokens)
            log("train/rollout_logprob_gap/max", old.gap_max)
        log("train/entropy", entropy)
        log(
            "train/generation_tokens_per_sec",
            collected.generated_tokens / max(collected.generation_seconds, 1e-9),
        )
        log("train/step_seconds", step_seconds)
        log("train/agreement_seconds", collected.agreement_seconds)
        log("train/lr", self.optimizers().param_groups[0]["lr"])
        if self.reward_model is not None:
            log("train/reward_model_failures", rewards.reward_model_failures())
        self._log_task_metrics(metrics)
        self.last_rollouts = self._local_rollouts(collected, result)

    def _diagnostics(self, kept: list[GroupRecord], result: AdvantageResult) -> dict[str, dict[str, float]]:
        """Per-task advantage diagnostics of the step's global kept batch (advantage_diagnostics.py)."""
        n = self.hparams.rollouts_per_prompt
        return advantage_diagnostics(
            result.advantages,
            torch.tensor([r for g in kept for r in g.scores["overall"]], dtype=torch.float64),
            torch.arange(len(kept)).repeat_interleave(n),
            [g.key for g in kept for _ in range(n)],
            torch.tensor([t for g in kept for t in g.tokens], dtype=torch.float64),
        )

    def _local_rollouts(self, collected: Collected, result: AdvantageResult) -> dict[str, Any]:
        """This rank's kept rows, for the rollout table: parts, scores, advantages and metadata."""
        n, rank = self.hparams.rollouts_per_prompt, self.global_rank
        rows_by_part: dict[int, list[int]] = defaultdict(list)
        advantages: list[torch.Tensor] = []
        for i, g in enumerate(collected.kept):  # a rank's kept groups run in (part, group) order
            if g.rank == rank:
                rows_by_part[g.part] += g.rows(n)
                advantages.append(result.advantages[i * n : i * n + n])
        parts = [
            ScoredPart(collected.parts[p], rows, {f: v[rows] for f, v in collected.scores[p].items()})
            for p, rows in rows_by_part.items()
        ]
        scores = {
            f: torch.cat([p.scores[f] for p in parts]) if parts else torch.zeros(0) for f in REWARD_FIELDS
        }
        meta = [p.rollouts.meta[r] for p in parts for r in p.rows]
        return {
            "parts": parts,
            "scores": scores,
            "advantages": torch.cat(advantages) if advantages else torch.zeros(0),
            "meta": meta,
        }

    # -- validation: greedy reward evaluation --------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Greedy rewards (``val/reward/...``), and with ``val_samples > 0`` the mean reward of that many
        samples per prompt at the rollout temperature (``val/sampled_reward/...``), which RL optimises."""
        if not batch.get("meta"):  # join the others' generate calls (greedy, then sampled)
            for _ in range(1 + (self.hparams.val_samples > 0)):
                join_sharded_call(
                    self.backbone,
                    self.device,
                    max_new_tokens=self.hparams.val_max_new_tokens,
                    do_sample=False,
                )
            return
        keys = [task_key(m["problem_type"], m["data_type"], self.hparams.task_key_by) for m in batch["meta"]]
        out = self.backbone.generate(
            batch, num_return_sequences=1, max_new_tokens=self.hparams.val_max_new_tokens, do_sample=False
        )
        self._log_val_scores("val/reward", self._score_generated(batch, out, 1), keys)
        if self.hparams.val_samples > 0:
            n = self.hparams.val_samples
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.hparams.seed * 7_919 + batch_idx)
                sampled = self.backbone.generate(
                    batch,
                    num_return_sequences=n,
                    temperature=getattr(self.rollout, "temperature", 1.0),
                    top_p=getattr(self.rollout, "top_p", 1.0),
                    max_new_tokens=self.hparams.val_max_new_tokens,
                )
            self._log_val_scores(
                "val/sampled_reward",
                self._score_generated(batch, sampled, n),
                [k for k in keys for _ in range(n)],
            )

    def _score_generated(
        self, batch: dict[str, Any], out: dict[str, torch.Tensor], n: int
    ) -> dict[str, torch.Tensor]:
        mask = out["response_mask"]
        texts = decode_responses(self.backbone.tokenizer, out["response_ids"], mask)
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
