"""Peak host RSS per phase of a short GRPO fit (ours or TRL), sampled by a background thread.

Runs the GRPO benchmark's own code path (`bench_grpo_step.run_ours` / ``run_trl``: the same model,
prompts, module, Trainer and settings) in this process, with named phase marks put around it by
wrapping functions: imports, the synthetic suite, the model build, Lightning's fit set-up piece by
piece (setup hook, ``configure_model``, accelerator / device set-up, precision conversion, model to
device, optimizer creation), then per RL step the rollout (generate), the reward, the old
log-probs and the update (with the optimizer step separately), and the fit's end.

Two measurements per phase:

- **exact peak**: at every phase boundary the kernel's high-water mark ``VmHWM`` is read (the peak
  RSS since the last boundary, however short the spike) and reset to the current RSS by writing ``5``
  to ``/proc/self/clear_refs`` (Linux >= 4.0). Where that write is refused, the column is the
  process's running high-water mark instead, and says so;
- **sampled**: a thread reads ``/proc/self/status`` every ``--interval`` seconds (default 5 ms) and
  keeps each phase's sampled peak with its anonymous / file-backed split (tensors and allocator caches
  are anonymous; shared libraries mapped in, e.g. CUDA's, are file-backed).

The process's peak is the largest exact peak. (``getrusage``'s ``ru_maxrss`` is not used: the resets
lower it too, and a process started through Python's ``subprocess`` inherits its parent's
high-water mark at ``exec``, because CPython spawns through ``vfork``. So the ``peak_rss_mib`` that
``bench_grpo_step`` itself computes is not valid inside this script.)

    python benchmarks/rss_profile.py                                   # tiny model, CPU, ours
    python benchmarks/rss_profile.py --side trl                        # the same for TRL's GRPOTrainer
    python benchmarks/rss_profile.py --model 2b --prompts 2 --group 2 --max-new-tokens 4 \\
        --updates 1 --micro-batch 4 --steps 1                          # the 2B shape in bf16, on CPU
    python benchmarks/rss_profile.py --model 2b --device cuda --prompts 8 --group 8 --max-new-tokens 128 \\
        --updates 2 --micro-batch 8 --steps 2                          # the GPU run of benchmarks/README.md
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

MIB = 2**20
COLUMNS = (
    "phase", "calls", "seconds", "entry_rss_mib", "peak_rss_mib", "peak_anon_mib", "peak_file_mib",
    "exit_rss_mib", "exact_peak_mib",
)  # fmt: skip


def reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def read_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile and RssShmem of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) * 1024
    return out


class PhaseStats:
    def __init__(self, entry: dict[str, int]) -> None:
        self.calls = 0
        self.seconds = 0.0
        self.entry_rss = entry["VmRSS"]  # at the first entry
        self.peak: dict[str, int] = dict(entry)  # status at the sampled peak
        self.exact_peak = 0  # the largest VmHWM over this phase's intervals (see RSSMonitor)
        self.exit_rss = entry["VmRSS"]  # at the last exit
        self.exit_probe: dict[str, float] = {}  # the monitor's probe at the last exit (e.g. GPU memory)

    def see(self, status: dict[str, int]) -> None:
        if status["VmRSS"] > self.peak["VmRSS"]:
            self.peak = status


class RSSMonitor:
    """Per-phase exact peak RSS (``VmHWM`` read and reset at each boundary) and 5 ms samples.

    Phases nest: ``with monitor.phase("x"):`` (or `wrap`) opens ``x`` inside the current phase, and
    time, samples and peaks count to the innermost open phase only.
    """

    def __init__(self, interval: float = 0.005, first_phase: str = "start-up") -> None:
        self.interval = interval
        self.probe: Any = None  # optional: called at each phase boundary, returns {name: number}
        self.live = False  # print each phase's exit to stderr
        self.stats: dict[str, PhaseStats] = {}
        self._stack: list[str] = []
        self._lock = threading.Lock()
        self._since = time.perf_counter()
        self.resets = reset_peak()
        self._stop = threading.Event()
        self._switch_in(first_phase)
        self._thread = threading.Thread(target=self._run, name="rss-monitor", daemon=True)
        self._thread.start()

    # -- phases ------------------------------------------------------------------------------
    def _account(self, status: dict[str, int]) -> None:
        """Close the current interval of the innermost phase at ``status`` (lock held)."""
        now = time.perf_counter()
        stats = self.stats[self._stack[-1]]
        stats.seconds += now - self._since
        stats.see(status)
        stats.exit_rss = status["VmRSS"]
        stats.exact_peak = max(stats.exact_peak, status["VmHWM"])
        self._since = now
        if self.resets:
            self.resets = reset_peak()

    def _switch_in(self, name: str) -> None:
        status, probe = read_status(), self.probe() if self.probe else {}
        with self._lock:
            if self._stack:
                self._account(status)
                self.stats[self._stack[-1]].exit_probe = probe
            stats = self.stats.get(name)
            if stats is None:
                stats = self.stats[name] = PhaseStats(status)
            stats.calls += 1
            self._stack.append(name)

    def _switch_out(self) -> None:
        status, probe = read_status(), self.probe() if self.probe else {}
        with self._lock:
            self._account(status)
            name = self._stack.pop()
            self.stats[name].exit_probe = probe
            peak = self.stats[name].exact_peak
        if self.live:  # one line per phase exit, so that a run cut short still leaves its numbers
            print(
                f"[rss] {name}: peak {peak / MIB:,.0f} MiB, at exit {status['VmRSS'] / MIB:,.0f} MiB "
                f"{probe or ''}",
                file=sys.stderr,
                flush=True,
            )

    def next(self, name: str) -> None:
        """Close the current phase and open ``name`` in its place."""
        self._switch_out()
        self._switch_in(name)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._switch_in(name)
        try:
            yield
        finally:
            self._switch_out()

    def wrap(self, fn: Any, name: Any) -> Any:
        """``fn`` run inside phase ``name`` (a string, or a callable returning the name at each call)."""

        @functools.wraps(fn)
        def wrapped(*a: Any, **k: Any) -> Any:
            with self.phase(name() if callable(name) else name):
                return fn(*a, **k)

        return wrapped

    def patch(self, owner: Any, attr: str, name: Any) -> None:
        """Replace ``owner.attr`` (a class or an instance) by its wrapped self."""
        setattr(owner, attr, self.wrap(getattr(owner, attr), name))

    # -- sampling ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            status = read_status()
            with self._lock:
                if self._stack:  # between two phases nothing is open
                    self.stats[self._stack[-1]].see(status)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        status = read_status()
        with self._lock:
            self._account(status)
        return status

    # -- report ------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        return [
            {  # COLUMNS, then the probe's numbers
                "phase": name,
                "calls": s.calls,
                "seconds": s.seconds,
                "entry_rss_mib": s.entry_rss / MIB,
                "peak_rss_mib": s.peak["VmRSS"] / MIB,
                "peak_anon_mib": s.peak.get("RssAnon", 0) / MIB,
                "peak_file_mib": s.peak.get("RssFile", 0) / MIB,
                "exit_rss_mib": s.exit_rss / MIB,
                "exact_peak_mib": s.exact_peak / MIB,
                **s.exit_probe,
            }
            for name, s in self.stats.items()
        ]

    def table(self) -> str:
        rows = self.rows()
        extra = sorted({k for r in rows for k in r} - set(COLUMNS))  # the probe's numbers
        lines = [
            f"| phase | calls | s | RSS at entry | {'exact peak' if self.resets else 'high-water mark at exit'} "
            "| sampled peak (anon + file) | RSS at exit |" + "".join(f" {k} at exit |" for k in extra),
            "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(extra),
        ]
        for r in rows:
            lines.append(
                f"| {r['phase']} | {r['calls']} | {r['seconds']:.1f} | {r['entry_rss_mib']:,.0f} | "
                f"**{r['exact_peak_mib']:,.0f}** | "
                f"{r['peak_rss_mib']:,.0f} ({r['peak_anon_mib']:,.0f} + {r['peak_file_mib']:,.0f}) | "
                f"{r['exit_rss_mib']:,.0f} |" + "".join(f" {r[k]:,.0f} |" if k in r else " |" for k in extra)
            )
        return "\n".join(lines) + "\n(MiB)"


# --------------------------------------------------------------------------- the marks


def step_label(updates: int, global_step: Any) -> Any:
    """Phase names per RL step: ``step 1: x`` for the first, ``steps 2+: x`` for the rest."""

    def label(what: str) -> Any:
        def name() -> str:
            step = global_step() // updates + 1
            return f"{'step 1' if step == 1 else 'steps 2+'}: {what}"

        return name

    return label


def mark_ours(monitor: RSSMonitor, args: Any) -> None:
    """Phase marks around `bench_grpo_step.run_ours`: Lightning's fit set-up and each RL phase."""
    import lightning as L
    from lightning.pytorch.core.optimizer import LightningOptimizer
    from lightning.pytorch.trainer import call

    from lightning_modules.grpo import GRPOModule

    state: dict[str, Any] = {"trainer": None}
    label = step_label(args.updates, lambda: state["trainer"].global_step)

    monitor.patch(GRPOModule, "__init__", "GRPOModule()")
    monitor.patch(L.Trainer, "__init__", "Trainer()")
    monitor.patch(call, "_call_setup_hook", "fit set-up: setup hooks")
    monitor.patch(call, "_call_configure_model", "fit set-up: configure_model")
    monitor.patch(GRPOModule, "on_fit_start", "fit set-up: on_fit_start (engine set-up)")
    monitor.patch(GRPOModule, "training_step", label("other (advantages, logging)"))
    monitor.patch(GRPOModule, "_generate", label("generate"))
    monitor.patch(GRPOModule, "_score", label("reward"))
    monitor.patch(GRPOModule, "_old_logprobs", label("old log-probs"))
    monitor.patch(GRPOModule, "_update", label("update: forward + backward"))
    monitor.patch(LightningOptimizer, "step", label("update: optimizer step (+ grad clip)"))
    monitor.patch(GRPOModule, "on_fit_end", "fit end")

    fit = L.Trainer.fit

    def marked_fit(trainer: Any, *a: Any, **k: Any) -> Any:
        state["trainer"] = trainer
        strategy = trainer.strategy
        monitor.patch(strategy, "setup_environment", "fit set-up: strategy environment (device)")
        monitor.patch(strategy.accelerator, "setup", "fit set-up: accelerator set-up")
        monitor.patch(strategy.precision_plugin, "convert_module", "fit set-up: precision convert_module")
        monitor.patch(strategy, "model_to_device", "fit set-up: model to device")
        monitor.patch(strategy, "setup_optimizers", "fit set-up: optimizer creation")
        monitor.patch(strategy, "setup_precision_plugin", "fit set-up: precision plugin connect")
        with monitor.phase("fit: other (loops, data loader)"):
            return fit(trainer, *a, **k)

    L.Trainer.fit = marked_fit


def mark_trl(monitor: RSSMonitor, args: Any) -> None:
    """Phase marks around `bench_grpo_step.run_trl`: the trainer's construction and each RL phase."""
    from trl import GRPOTrainer

    state: dict[str, Any] = {"trainer": None}
    label = step_label(args.updates, lambda: state["trainer"].state.global_step)

    init = GRPOTrainer.__init__

    def marked_init(trainer: Any, *a: Any, **k: Any) -> None:
        state["trainer"] = trainer
        with monitor.phase("GRPOTrainer()"):
            init(trainer, *a, **k)

    GRPOTrainer.__init__ = marked_init
    monitor.patch(GRPOTrainer, "train", "train: other (set-up, loops)")
    monitor.patch(GRPOTrainer, "create_optimizer", "train set-up: optimizer creation")
    monitor.patch(GRPOTrainer, "training_step", label("update: forward + backward (+ old log-probs)"))
    monitor.patch(GRPOTrainer, "_generate_single_turn", label("generate"))
    monitor.patch(GRPOTrainer, "_calculate_rewards", label("reward"))
    import torch

    monitor.patch(torch.optim.AdamW, "step", label("update: optimizer step"))


# --------------------------------------------------------------------------- driver


def parse_args() -> Any:
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", choices=("ours", "trl"), default="ours")
    ap.add_argument("--model", choices=("tiny", "2b"), default="tiny")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--prompts", type=int, default=4, help="prompts per RL step (P)")
    ap.add_argument("--group", type=int, default=4, help="responses per prompt (G)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="response cap (L)")
    ap.add_argument("--updates", type=int, default=2, help="optimizer updates per RL step")
    ap.add_argument("--micro-batch", type=int, default=4, help="rollout rows per forward/backward")
    ap.add_argument("--steps", type=int, default=2, help="RL steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--engine", choices=("hf", "hf-static", "vllm"), default="hf")
    ap.add_argument("--suite-dir", type=Path, default=None, help="an existing synthetic suite")
    ap.add_argument("--interval", type=float, default=0.005, help="sampling interval (s)")
    ap.add_argument("--json", type=Path, default=None, help="write the phase rows and summary here")
    ap.add_argument("--quiet", action="store_true", help="no line per phase exit on stderr")
    return ap.parse_args()


def main() -> None:
    monitor = RSSMonitor(first_phase="imports (torch, transformers, lightning / trl)")
    import json
    import math
    import tempfile
    from pathlib import Path

    args = parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_grpo_step as bench
    import torch
    import transformers  # noqa: F401  (the model classes load lazily, inside "model build")

    import datamodules.collate  # noqa: F401
    import datamodules.synthetic  # noqa: F401
    import rewards  # noqa: F401

    if args.side == "ours":
        import lightning  # noqa: F401

        import lightning_modules.grpo  # noqa: F401
    else:
        import datasets  # noqa: F401
        import trl  # noqa: F401

    def gpu_probe() -> dict[str, float]:
        if not torch.cuda.is_initialized():
            return {}
        return {"GPU allocated MiB": torch.cuda.memory_allocated() / MIB}

    monitor.probe = gpu_probe
    monitor.next("driver (outside every other phase)")
    monitor.interval, monitor.live = args.interval, not args.quiet
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: skipped, CUDA is not available on this machine (nothing measured).")
        return
    args.warmup = 1
    summarise = bench.summarise

    def summarise_short(side: str, ends: list, tokens: list, warmup: int, *rest: Any) -> dict:
        if len(ends) > warmup:
            return summarise(side, ends, tokens, warmup, *rest)
        # one RL step: nothing left to time; the settings and the GPU peak are what this script reads
        gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_initialized() else 0.0
        return {"settings": rest[-1], "peak_gpu_gib": gpu}

    bench.summarise = summarise_short  # run_ours / run_trl look it up at call time
    if args.threads:
        torch.set_num_threads(args.threads)
    (mark_ours if args.side == "ours" else mark_trl)(monitor, args)
    summary: dict[str, Any] = {}

    build_backbone = bench.build_backbone

    def build(build_args: Any) -> Any:
        with monitor.phase("model build"):
            backbone = build_backbone(build_args)
        summary["rss_after_model_build_mib"] = read_status()["VmRSS"] / MIB
        return backbone

    bench.build_backbone = build  # run_ours / run_trl look it up at call time
    with tempfile.TemporaryDirectory() as tmp:
        with monitor.phase("synthetic suite"):
            if args.suite_dir is not None:
                args.suite = args.suite_dir
            else:
                from datamodules.synthetic import SYNTHETIC_TASKS, generate_suite

                args.suite = Path(tmp) / "suite"
                per_task = max(1, math.ceil(args.prompts * args.steps / len(SYNTHETIC_TASKS)))
                generate_suite(args.suite, per_task, args.seed)
        summary["rss_after_imports_and_suite_mib"] = read_status()["VmRSS"] / MIB
        with monitor.phase("benchmark code outside the marks (prompts, collate)"):
            result = bench.run_ours(args) if args.side == "ours" else bench.run_trl(args, Path(tmp))
    end = monitor.stop()
    rows = monitor.rows()
    top = max(rows, key=lambda r: r["exact_peak_mib"])
    summary.update(
        side=args.side,
        model=args.model,
        device=args.device,
        peak_rss_mib=top["exact_peak_mib"],
        peak_phase=top["phase"],
        exact_peaks=monitor.resets,
        final_rss_mib=end["VmRSS"] / MIB,
        optimizer_steps=result["settings"]["optimizer_steps"],
        params=result["settings"]["params"],
        dtype=result["settings"]["dtype"],
        peak_gpu_gib=result["peak_gpu_gib"],
    )
    print(
        f"{args.side}, model {args.model} ({summary['params'] / 1e9:.3f}B params, {summary['dtype']}), "
        f"{args.device}: P={args.prompts} G={args.group} L={args.max_new_tokens}, {args.updates} updates/step, "
        f"{args.steps} RL steps, {summary['optimizer_steps']} optimizer steps; sampled every "
        f"{monitor.interval * 1000:.0f} ms"
    )
    print(monitor.table())
    print(
        f"peak RSS {summary['peak_rss_mib']:,.0f} MiB, in {top['phase']!r}; after imports + suite "
        f"{summary['rss_after_imports_and_suite_mib']:,.0f}; after the model build "
        f"{summary['rss_after_model_build_mib']:,.0f}; at the end {summary['final_rss_mib']:,.0f}"
        + ("" if monitor.resets else " (VmHWM could not be reset: per-phase peaks are running maxima)")
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": summary, "phases": rows}, indent=1))


if __name__ == "__main__":
    main()
