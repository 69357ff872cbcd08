"""Run a function under a time limit, from any thread and inside worker processes.

math-verify's own timeout uses `signal.alarm`, which only works in the main thread. We switch its
timeout off and wrap the whole check here instead:
- main thread (also the main thread of every pool worker): a `setitimer` alarm, re-armed until the
  call unwinds, so a bare `except:` deep inside sympy cannot swallow it;
- any other thread: a persistent helper process (spawned, non-daemonic parent required) that runs
  the call under its own alarm; if it does not answer in time it is killed and restarted.
If neither is possible (a thread inside a daemonic process) `call_with_timeout` returns `default`
without running the call, so the caller's cheap fallback applies.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["CallTimeout", "add_timeouts", "call_with_timeout", "shutdown_helper", "timeouts"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

_REARM_S = 0.05  # re-fire interval once expired
_HELPER_GRACE_S = 5.0  # extra wait before the parent kills a silent helper
_HELPER_START_S = 120.0
_TIMEOUTS: dict[str, int] = {}  # label -> calls that ran out of time (or found no way to be timed)
_TIMED_OUT = object()


class CallTimeout(BaseException):
    """Raised inside the timed call; BaseException so `except Exception` cannot swallow it."""


class _AlarmState:
    active = False


def _on_alarm(signum: int, frame: Any) -> None:
    if _AlarmState.active:
        signal.setitimer(signal.ITIMER_REAL, _REARM_S)
        raise CallTimeout()


def _signals_usable() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _call_with_alarm(fn: Callable[..., T], args: tuple, timeout_s: float, default: T) -> T:
    old_handler = signal.signal(signal.SIGALRM, _on_alarm)
    started = time.monotonic()
    old_delay, _ = signal.setitimer(signal.ITIMER_REAL, timeout_s)
    _AlarmState.active = True
    try:
        try:
            return fn(*args)
        except CallTimeout:
            return default
        finally:
            _disarm(old_handler, old_delay, started)
    except CallTimeout:  # fired during the unwinding, after the result was decided
        return default


def _disarm(old_handler: Any, old_delay: float, started: float) -> None:
    while True:  # a late alarm may interrupt the clean-up itself; retry until it completes
        try:
            _AlarmState.active = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL if old_handler is None else old_handler)
            if old_delay > 0:  # give back what remained of an outer timer
                signal.setitimer(signal.ITIMER_REAL, max(old_delay - (time.monotonic() - started), 1e-3))
            return
        except CallTimeout:
            continue


def _helper_main(conn: Any, preload: list[str]) -> None:
    for name in preload:
        importlib.import_module(name)
    conn.send("ready")
    missing = object()
    while True:
        try:
            fn, args, timeout_s = conn.recv()
        except (EOFError, OSError):
            return
        try:
            res = _call_with_alarm(fn, args, timeout_s, missing)
            conn.send(("timeout", None) if res is missing else ("ok", res))
        except Exception as e:  # report, keep serving
            conn.send(("error", repr(e)))


class _Helper:
    def __init__(self, preload: list[str]) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_helper_main, args=(child, preload), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(_HELPER_START_S) or self.conn.recv() != "ready":
            self.close()
            raise RuntimeError("timeout helper process did not start")

    def call(self, fn: Callable[..., T], args: tuple, timeout_s: float, default: T) -> tuple[bool, T]:
        self.conn.send((fn, args, timeout_s))
        if not self.conn.poll(timeout_s + _HELPER_GRACE_S):
            self.close()
            return False, default
        status, value = self.conn.recv()
        if status == "ok":
            return True, value
        if status == "error":
            logger.debug("timed call failed in helper: %s", value)
        return True, default

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


_helper: _Helper | None = None
_helper_lock = threading.Lock()
_helper_unavailable = False


def shutdown_helper() -> None:
    """Stop the helper process, if any."""
    global _helper
    with _helper_lock:
        if _helper is not None:
            _helper.close()
            _helper = None


def _call_in_helper(fn: Callable[..., T], args: tuple, timeout_s: float, default: T) -> T:
    global _helper, _helper_unavailable
    with _helper_lock:
        if _helper_unavailable:
            return default
        if _helper is None:
            try:
                _helper = _Helper([fn.__module__])
            except (AssertionError, OSError, RuntimeError) as e:  # e.g. daemonic process
                _helper_unavailable = True
                logger.warning("no timeout helper process (%s); timed calls fall back", e)
                return default
        alive, value = _helper.call(fn, args, timeout_s, default)
        if not alive:
            _helper = None
        return value


def call_with_timeout(
    fn: Callable[..., T], args: tuple, timeout_s: float | None, default: T, *, label: str = "call"
) -> T:
    """`fn(*args)`, or `default` if it takes longer than `timeout_s` (None/<=0: no limit). Every
    `default` given for lack of time is counted under `label` (`timeouts()`).

    Off the main thread, `fn` and `args` must be picklable (module-level function).
    """
    if timeout_s is None or timeout_s <= 0:
        return fn(*args)
    if _signals_usable():
        result = _call_with_alarm(fn, args, timeout_s, _TIMED_OUT)
    else:
        result = _call_in_helper(fn, args, timeout_s, _TIMED_OUT)
    if result is _TIMED_OUT:
        add_timeouts({label: 1})
        return default
    return result


def timeouts() -> dict[str, int]:
    """Timed-out calls per label since start-up, in this process (`add_timeouts` merges workers')."""
    return dict(_TIMEOUTS)


def add_timeouts(counts: dict[str, int]) -> None:
    for label, n in counts.items():
        _TIMEOUTS[label] = _TIMEOUTS.get(label, 0) + n
