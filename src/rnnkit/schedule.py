"""The training loop's clock: the learning-rate schedule, the plan fitted to a time budget, the
dropout seed of each step, and stopping on Ctrl-C or SIGTERM. Pure functions of their
arguments (the schedule of step i is the same in a run resumed at i), shared by every run.

    lr = lr_at(step, plan, cfg)       # linear warm-up, then cosine from lr to lr * lr_min
    with StopRequest() as stop:       # stop.signal: None, "SIGINT" or "SIGTERM"
        ...
"""

from __future__ import annotations

import contextlib
import math
import signal

PLAN_EVERY = 50  # with a time budget, the plan is fitted again this often (and at evaluations)


def lr_at(step: int, plan: int, cfg) -> float:
    """Linear warm-up over `warmup` steps, then cosine from lr down to lr * lr_min at `plan`.

    `cfg` is any config with `lr`, `lr_min` and `warmup` (a `configs.RunConfig`).
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if plan <= cfg.warmup:
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup) / (plan - cfg.warmup))
    return cfg.lr * (cfg.lr_min + (1 - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * progress)))


def fitted_plan(step: int, start_step: int, seconds: float, left: float, end: int) -> int:
    """The steps the schedule should span so that its decay ends with the time budget: `step`
    plus as many as fit in `left` seconds at the pace so far (`step - start_step` steps in
    `seconds`, evaluations included, since they recur), at most `end`."""
    rate = (step - start_step) / max(seconds, 1e-9)
    return min(end, step + max(0, int(rate * left)))


def step_seed(seed: int, rank: int, step: int) -> int:
    """The dropout seed of one step on one rank: a pure function, so resuming repeats it."""
    return ((seed * 1_000_003 + rank) * 1_000_003 + step) % (1 << 63)


def order_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's order of minibatches (a task's): a pure function, as above."""
    return ((seed * 1_000_003 + 999_983) * 1_000_003 + epoch) % (1 << 63)


def format_seconds(seconds: float) -> str:
    """'42s', '3m05s', '2h07m': time left in a progress line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class StopRequest:
    """Turns the first Ctrl-C or SIGTERM into a request to stop after the current step."""

    def __init__(self):
        self.signal: str | None = None

    def __enter__(self):
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        if self.signal is not None:  # asked twice: stop now
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
