"""The training engine: one loop for the language model and every task model.

    for each step until the plan ends, the time is up or a signal asks to stop:
        batch       the feeder's micro-batches of step i for this process, a pure function of i
        forward -> backward, micro-batch after micro-batch; DDP averages the gradients
        clip -> step, with the learning rate of step i (`schedule.lr_at`)
        check       the step before: its loss and gradient norm are read one step late, so that
                    the CPU queues step i+1 while the GPU still runs step i (no wait per step)
        log         a tqdm bar on terminals, a line every LOG_SECONDS in a log file
        evaluate -> keep the best -> checkpoint, at the feeder's evaluations and at the end
    on a NaN or an explosion: back to the last checkpoint with half the learning rate, or stop
    on Ctrl-C or SIGTERM: save exactly where the loop stands, to --resume from

What is fed differs, and only that: a `Feeder` says what a step reads and how a batch is
evaluated. The language model's feeder (`training.StreamFeeder`) carries the hidden state from batch
to batch over B streams of text (truncated BPTT); the task models' (`fitting.EpochFeeder`) deals epochs
of shuffled minibatches of examples. Both are pure functions of (seed, step), and so is every
step's dropout seed: a run stopped at any step and resumed from its checkpoint computes what it
would have computed, bit for bit on a CPU.

A checkpoint (rank 0's work) is DIR/last.safetensors (weights, AdamW's moments, the carried
state, the counters of `Progress`), DIR/model.safetensors when the evaluation improved, the rows
of DIR/metrics.csv since the last one and DIR/loss.png, each written atomically (`runfiles`).
Nothing is written before the pending step has been checked.

Under torchrun each process takes its share of the global batch, DDP averages the gradients and
rank 0 alone evaluates and writes; the numbers every rank must agree on (the loss, stop and time
flags, the plan, the validation loss) go through `distributed`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from . import checkpoint as ckpt
from . import distributed
from .config import from_dict
from .configs import RunConfig
from .devices import autocast, denormals_flushed, grad_scaler, wrap
from .errors import RnnkitError
from .plots import plot_losses
from .runfiles import append_metrics, truncate_metrics
from .schedule import PLAN_EVERY, StopRequest, fitted_plan, format_seconds, lr_at, step_seed

MAX_ROLLBACKS = 3
LOG_SECONDS = 10.0  # without a terminal (a log file, CI), a progress line this often
SIGNALS = ("SIGINT", "SIGTERM")
HISTORY_KEYS = {"step", "chars", "epoch", "train_loss", "val_loss", "val_metric", "seconds"}


class Diverged(RnnkitError):
    """The loss or the gradients became NaN or exploded."""


class Feeder(Protocol):
    """What a kind of run feeds the loop (see `training.StreamFeeder` and `fitting.EpochFeeder`)."""

    model: nn.Module  # the model itself, never the DDP wrapper
    end: int  # the last step of the run
    plan: int  # the steps the schedule spans, 0: keep the checkpoint's (fitted to the time)
    state_shape: tuple | None  # (L, B, H) of the state carried between steps, if any
    layout: dict  # what decides each step's batch; a resumed run must have the same ({}: none)
    # refuse a budget that cannot hold the final evaluation (a language model's run; a task's
    # ensemble members share one budget, and a small share still trains what it can)
    short_budget_refused: bool
    equal_parts: bool  # micro-batches of equal size: the step's loss is their plain mean
    loss_limit: float  # a training loss above this is an explosion
    unit: str  # what `items` counts, for the log: "chars", "bytes", "examples"
    more: str  # how to train a finished run further
    extra: float  # seconds the caller's work after the last evaluation takes (a sample, a test)

    def batch(self, step: int) -> list: ...  # this process's micro-batches of the step
    def items(self, step: int) -> int: ...  # characters or examples the step reads, all ranks
    def forward(self, net: nn.Module, micro) -> tuple[Tensor, Tensor | float]: ...
    def carry(self) -> None: ...  # after the backward passes: keep what the next step carries
    def eval_due(self, step: int) -> bool: ...
    def evaluate(self, train_loss: float) -> tuple[float | None, float | None]: ...
    def record(self, progress: Progress, train_loss: float, val: float | None,
               metric: float | None) -> dict: ...
    def report(self, record: dict, improved: bool, seconds: float, left: float) -> str: ...
    def after_checkpoint(self, run_dir: Path, progress: Progress) -> None: ...
    def measure_reserve(self) -> float: ...
    def full_state(self, world: distributed.World): ...  # a collective call
    def load_state(self, state) -> None: ...


@dataclass
class Progress:
    """The trainer's counters, saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    plan: int = 0  # steps the learning-rate schedule spans
    best_val: float = math.inf  # the lowest validation loss
    best_score: float = -math.inf  # the best evaluation: a metric, or minus the loss
    best_step: int = 0  # the step of the best evaluation
    loss_sum: float = 0.0  # training loss summed since the last evaluation (weighted by terms)
    loss_count: int = 0  # the terms (steps, or rows and time steps) in loss_sum
    chars: int = 0  # training items (characters, examples) seen
    history: list = field(default_factory=list)  # one dict per evaluation
    lr_scale: float = 1.0  # halved by each rollback after a divergence
    rollbacks: int = 0
    layout: dict = field(default_factory=dict)  # the feeder's `layout`, checked on resuming

    def __post_init__(self):
        # Read back from a checkpoint: the counters must make sense before the loop trusts them.
        counts = {"step": self.step, "plan": self.plan, "loss_count": self.loss_count,
                  "chars": self.chars, "rollbacks": self.rollbacks, "best_step": self.best_step}
        for name, value in counts.items():
            if value < 0:
                raise RnnkitError(f"progress.{name} is {value}, below 0")
        if not math.isfinite(self.loss_sum) or not (math.isfinite(self.lr_scale)
                                                    and self.lr_scale > 0):
            raise RnnkitError(f"progress.loss_sum {self.loss_sum} and lr_scale "
                              f"{self.lr_scale} must be finite (lr_scale above 0)")
        if self.best_score == -math.inf and math.isfinite(self.best_val):
            self.best_score = -self.best_val  # a checkpoint from before best_score existed
        for entry in self.history:
            if not (isinstance(entry, dict) and {"step", "train_loss"} <= set(entry)
                    <= HISTORY_KEYS and all(isinstance(v, (int, float))
                                            and not isinstance(v, bool) for v in entry.values())):
                raise RnnkitError(f"progress.history entry {entry!r} is not {{step, "
                                  f"train_loss, ...: numbers}} with keys among "
                                  f"{', '.join(sorted(HISTORY_KEYS))}")


@dataclass
class Pending:
    """A step queued on the device and not yet checked: its losses, gradient norm and row."""

    step: int  # its index (the step counter before it)
    lr: float
    losses: list  # (loss, terms) of each micro-batch, still on the device
    norm: Tensor | None  # the gradient norm before clipping
    started: float  # when it was queued


@dataclass
class Clock:
    """This call's time: when its budget began, where it started, what evaluations took."""

    started: float  # time.monotonic() when the caller's budget began
    start_step: int  # the step this call started at
    end: int  # the run's last step
    max_time: float = 0.0
    t0: float = field(default_factory=time.monotonic)  # when training began
    eval_seconds: float = 0.0  # evaluating and writing checkpoints: not training

    @property
    def deadline(self) -> float:
        return self.started + self.max_time if self.max_time else math.inf

    def speed(self, step: int, items: int) -> float:
        """Items (characters, examples) trained on per second in this call."""
        seconds = time.monotonic() - self.t0 - self.eval_seconds
        return (step - self.start_step) * items / seconds if seconds > 0 else 0.0

    def left(self, step: int) -> float:
        """Seconds the run has left at the pace so far, within the time budget."""
        now, done = time.monotonic(), step - self.start_step
        left = (self.end - step) * (now - self.t0) / done if done and self.end < sys.maxsize \
            else math.inf
        return max(0.0, min(left, self.deadline - now))


class Log:
    """A tqdm bar on terminals; in a log file (no terminal) a line every LOG_SECONDS."""

    def __init__(self, shown: bool, end: int, unit: str, say):
        self.bar = tqdm(total=end if end < sys.maxsize else None, dynamic_ncols=True,
                        disable=True if not shown else None, unit="step", file=sys.stderr,
                        leave=False)
        self.lines = shown and self.bar.disable
        self.of_plan = f" of {end:,}" if end < sys.maxsize else ""
        self.unit, self.say = unit, say
        self.last_line = self.last_eval = time.monotonic()

    def step(self, row: dict, clock: Clock, items: int) -> None:
        step, now = row["step"], time.monotonic()
        if not self.bar.disable:  # the bar: steps, and the line's figures beside them
            self.bar.n = step
            postfix = {"loss": f"{row['train_loss']:.3f}", "lr": f"{row['lr']:.1e}",
                       f"{self.unit}/s": f"{clock.speed(step, items):,.0f}"}
            if clock.max_time:  # the bar's own estimate counts toward the plan's last step
                postfix["left"] = format_seconds(max(0.0, clock.deadline - now))
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(0)
        if self.lines and now - self.last_line >= LOG_SECONDS:
            self.last_line = now
            left = clock.deadline - now if clock.max_time else clock.left(step)
            self.say(f"step {step:,}{self.of_plan}: loss {row['train_loss']:.4f}, "
                     f"{clock.speed(step, items):,.0f} {self.unit}/s"
                     + (f", {format_seconds(max(0.0, left))} left" if math.isfinite(left) else ""))

    def since_eval(self) -> float:
        """Seconds since the last evaluation ended (or training began)."""
        now = time.monotonic()
        seconds, self.last_eval = now - self.last_eval, now
        return seconds

    def close(self, error: bool = False) -> None:
        if error:
            self.bar.leave = False  # an error message follows: clear the bar, not leave half
        self.bar.close()


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices, and none on embeddings, biases and norms:
    an embedding row is a lookup, shrinking the rarely seen ones is no regularisation."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, rest = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 and id(p) not in embeddings else rest).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)


def run(feeder: Feeder, cfg: RunConfig, run_dir: Path | None, world: distributed.World,
        device: torch.device, resume: bool, say, started: float, quiet: bool = False) -> dict:
    """Train `feeder.model` as `cfg` says: the loop of this module's docstring.

    `run_dir` None (a task model trained in memory) writes nothing and keeps the best weights
    in memory. `started` (a time.monotonic() reading) is when the caller's time budget began.
    Returns a summary: the progress, how this call spent its time, why it stopped, and (in
    memory) the best weights. Each step seeds PyTorch's random generator (`step_seed`); the
    caller's is given back as it was, so that models made after a run do not all start alike.
    """
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    # fading gradients would otherwise slow some processors several times over
    with denormals_flushed(), torch.random.fork_rng(devices=cuda):
        return train(feeder, cfg, run_dir, world, device, resume, say, started, quiet)


def train(feeder: Feeder, cfg: RunConfig, run_dir: Path | None, world: distributed.World,
          device: torch.device, resume: bool, say, started: float, quiet: bool) -> dict:
    """`run`'s loop, on PyTorch's random generator as the steps seed it."""
    model = feeder.model
    optimizer = make_optimizer(model, cfg)
    progress = Progress(plan=feeder.plan, layout=feeder.layout)
    if resume and run_dir is not None and (run_dir / ckpt.LAST).exists():
        progress = load_checkpoint(run_dir, feeder, optimizer)
        differ = {k: (v, feeder.layout.get(k)) for k, v in progress.layout.items()
                  if feeder.layout.get(k) != v}
        if differ:  # other batches would follow: not the run it continues
            raise RnnkitError(f"{run_dir} was trained with " + ", ".join(
                f"{k} {a!r} ({b!r} now)" for k, (a, b) in differ.items()) + "; resume with the "
                "same data and batch settings, or train a new run")
        progress.layout = feeder.layout
        if feeder.plan:
            progress.plan = feeder.plan
    if run_dir is not None and world.main:
        truncate_metrics(run_dir / ckpt.METRICS, progress.step)  # steps this run does again
    net = wrap(model, world, device)
    scaler = grad_scaler(device, cfg.precision)
    end = feeder.end
    start_step = progress.step
    if resume:
        if progress.step >= end and progress.history \
                and progress.history[-1]["step"] == progress.step:
            say(f"rnnkit: {run_dir} has finished its {progress.step:,} steps; nothing left to "
                f"do ({feeder.more})")
            return summary_of(run_dir, progress, Clock(started, progress.step, end), world, None)
        say(f"rnnkit: resuming {run_dir} at step {progress.step:,}"
            f"{f' of {end:,}' if end < sys.maxsize else ''}")
    clock = Clock(started, start_step, end, cfg.max_time)
    log = Log(world.main and not quiet, end, feeder.unit, say)
    model.train()
    stopped, pending, best_weights = None, None, None
    # The time budget holds the last evaluation with its checkpoint (eval_cost) and what the
    # caller does after it (feeder.extra): measured on a slice before training, in full at each
    # evaluation. Training stops when one more step and those would not fit before the deadline.
    eval_cost, step_seconds = 0.0, 0.0
    if cfg.max_time:  # rank 0 measures; every rank gets its figure (a refusal quotes it)
        eval_cost = distributed.broadcast(world, feeder.measure_reserve() if world.main else 0.0)
    if cfg.max_time and feeder.short_budget_refused and not distributed.broadcast(
            world, float(time.monotonic() + eval_cost < clock.deadline)):  # rank 0's measure
        raise RnnkitError(f"the time budget of {cfg.max_time:g}s cannot hold the final "
                          f"evaluation, its checkpoint and sample ({eval_cost:.1f}s measured, "
                          f"{max(0.0, clock.deadline - time.monotonic()):.1f}s left); give a "
                          "longer --max-time, or a smaller --eval-tokens")
    rows: list[dict] = []  # metrics.csv rows since the last checkpoint, written with it
    try:
        with StopRequest() as stop:
            while True:
                try:
                    if progress.step < end and stopped is None:
                        # ---- one step, queued: batch -> forward -> backward -> clip -> step
                        queued = take_step(feeder, net, optimizer, scaler, progress, cfg,
                                           world, device)
                        progress.step += 1
                        # ---- check the step before, while this one keeps the device busy
                        if pending is not None:
                            stopped = check(pending, feeder, progress, rows, world, cfg,
                                            stop.signal, clock, step_seconds, eval_cost) \
                                or stopped
                            log.step(rows[-1], clock, feeder.items(pending.step))
                        pending, step_seconds = queued, time.monotonic() - queued.started
                        due = feeder.eval_due(progress.step)
                        if cfg.max_time and progress.step % PLAN_EVERY == 0:
                            progress.plan = replan(progress, clock, eval_cost, feeder, world)
                        if not (due or progress.step >= end or stopped):
                            continue
                        # ---- the last step is checked before anything is written
                        stopped = check(pending, feeder, progress, rows, world, cfg,
                                        stop.signal, clock, step_seconds, eval_cost) or stopped
                        log.step(rows[-1], clock, feeder.items(pending.step))
                        pending = None
                    elif stopped in SIGNALS or (
                            progress.history and progress.history[-1]["step"] == progress.step):
                        break
                    else:
                        due = True  # at the end without an evaluation there: the last one
                    # ---- evaluate and checkpoint at the feeder's evaluations and at the end
                    # (a signal saves below, without an extra evaluation)
                    final = progress.step >= end or stopped == "time"
                    if due or final:
                        before = time.monotonic()
                        best = evaluate_and_checkpoint(run_dir, feeder, optimizer, progress, rows,
                                                       world, say, log.since_eval(),
                                                       0.0 if final else clock.left(progress.step))
                        best_weights = best if best is not None else best_weights
                        rows = []
                        eval_cost = time.monotonic() - before
                        clock.eval_seconds += eval_cost
                        if cfg.max_time:  # the decay must end with the budget
                            progress.plan = replan(progress, clock, eval_cost, feeder, world)
                            if not final and stopped is None \
                                    and not room_after_evaluation(clock, step_seconds,
                                                                  eval_cost, feeder, world):
                                stopped = "time"  # this evaluation is the last
                    if final or stopped is not None:
                        break
                except Diverged as e:
                    progress = roll_back(e, run_dir, feeder, optimizer, progress, cfg, say)
                    pending, rows = None, []
    except BaseException:
        log.close(error=True)
        raise
    log.close()
    if stopped in SIGNALS:
        save_where_stopped(run_dir, feeder, optimizer, progress, rows, world)
        say(f"rnnkit: {stopped} received; stopped at step {progress.step} with a checkpoint "
            f"saved; continue with the same command plus --resume")
    summary = summary_of(run_dir, progress, clock, world, stopped)
    summary["best_weights"] = best_weights
    summary["chars_per_second"] = clock.speed(progress.step, feeder.items(progress.step))
    return summary


def take_step(feeder: Feeder, net: nn.Module, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler, progress: Progress, cfg: RunConfig,
              world: distributed.World, device: torch.device) -> Pending:
    """One optimizer step, queued on the device without waiting for it: forward and backward
    over the step's micro-batches (the gradients of the whole batch), clip, step."""
    started = time.monotonic()
    model = feeder.model
    micros = feeder.batch(progress.step)
    lr = lr_at(progress.step, progress.plan, cfg) * progress.lr_scale
    for group in optimizer.param_groups:
        group["lr"] = lr
    torch.manual_seed(step_seed(cfg.seed, world.rank, progress.step))
    optimizer.zero_grad(set_to_none=True)
    # Micro-batches of unequal size (examples of a task) are weighted by the terms their mean
    # loss averages over: their sum, divided by all ranks' terms, is the whole batch's mean.
    weighted = not feeder.equal_parts and (len(micros) > 1 or world.size > 1)
    losses = []
    for k, micro in enumerate(micros):
        sync = k == len(micros) - 1 or not world.joined  # DDP averages on the last backward
        with (contextlib.nullcontext() if sync else net.no_sync()), \
                autocast(device, cfg.precision):
            loss, terms = feeder.forward(net, micro)
        # weighted by its terms, or the plain mean of equal parts (or the one part's loss)
        objective = loss * terms if weighted else \
            loss / len(micros) if feeder.equal_parts else loss
        scaler.scale(objective).backward()
        losses.append((loss.detach(), terms))
    feeder.carry()
    if weighted:
        total = distributed.sum_tensor(world, sum(torch.as_tensor(t, dtype=torch.float32,
                                                                  device=device)
                                                  for _, t in losses))
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        torch._foreach_mul_(grads, world.size / total)  # DDP took the mean over the ranks
    norm = None
    if cfg.grad_clip:
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return Pending(progress.step, lr, losses, norm, started)


def check(pending: Pending, feeder: Feeder, progress: Progress, rows: list[dict],
          world: distributed.World, cfg: RunConfig, signal: str | None, clock: Clock,
          step_seconds: float, eval_cost: float) -> str | None:
    """Read a queued step's loss and gradient norm (waiting for it only now), raise Diverged on
    a NaN or an explosion, count it, and agree with the other ranks on whether to stop: returns
    "time", a signal's name, or None."""
    if feeder.equal_parts:
        numbers = [sum(float(loss) / len(pending.losses) for loss, _ in pending.losses)]
    else:
        numbers = [sum(float(loss) * float(terms) for loss, terms in pending.losses),
                   sum(float(terms) for _, terms in pending.losses)]
    # Room for one more step and the last evaluation, after a step's own evaluation when one
    # is due.
    evals = 2 if feeder.eval_due(progress.step + 1) else 1
    time_up = time.monotonic() + step_seconds + evals * eval_cost + feeder.extra \
        >= clock.deadline
    numbers = distributed.mean(world, [*numbers, float(signal is not None or time_up)])
    if feeder.equal_parts:
        loss_value, terms = numbers[0], 1
    else:
        terms = round(numbers[1] * world.size)
        loss_value = numbers[0] / max(numbers[1], 1e-30)
    # steps are counted from 1, as metrics.csv and the progress lines count them
    if not math.isfinite(loss_value) or loss_value > feeder.loss_limit:
        raise Diverged(f"training loss exploded to {loss_value:.4g} at step {pending.step + 1}")
    if pending.norm is not None and not torch.isfinite(pending.norm) \
            and cfg.precision != "fp16":  # fp16's scaler skips such a step by itself
        raise Diverged(f"gradients became infinite at step {pending.step + 1}")
    progress.chars += feeder.items(pending.step)
    progress.loss_sum += loss_value * terms if not feeder.equal_parts else loss_value
    progress.loss_count += terms
    rows.append({"step": pending.step + 1, "chars": progress.chars, "lr": pending.lr,
                 "train_loss": loss_value, "val_loss": ""})
    if numbers[-1] > 0:
        return signal or "time"
    return None


def room_after_evaluation(clock: Clock, step_seconds: float, eval_cost: float, feeder: Feeder,
                          world: distributed.World) -> bool:
    """Whether training may go on after an evaluation (rank 0's answer, on every rank). The
    first check after it comes with the second step queued, so two steps and the last
    evaluation must fit, with an evaluation's cost as just measured."""
    room = time.monotonic() + 2 * step_seconds + eval_cost + feeder.extra < clock.deadline
    return bool(distributed.broadcast(world, float(room)))


def replan(progress: Progress, clock: Clock, eval_cost: float, feeder: Feeder,
           world: distributed.World) -> int:
    """The plan fitted to the time left (rank 0's estimate, on every rank: a collective)."""
    now = time.monotonic()
    plan = fitted_plan(progress.step, clock.start_step, now - clock.t0,
                       clock.deadline - eval_cost - feeder.extra - now, clock.end)
    return int(distributed.broadcast(world, plan))


def evaluate_and_checkpoint(run_dir: Path | None, feeder: Feeder,
                            optimizer: torch.optim.Optimizer, progress: Progress,
                            rows: list[dict], world: distributed.World, say, seconds: float,
                            left: float) -> dict | None:
    """Evaluate, log, and write last (and best) checkpoints: rank 0's work. A NaN validation
    loss, or one above the feeder's loss_limit, raises Diverged before anything is written.
    Returns the best weights when they improved and there is no run directory to write them
    to (else None)."""
    model = feeder.model
    train_loss = progress.loss_sum / max(1, progress.loss_count)
    val = metric = None
    if world.main:
        val, metric = feeder.evaluate(train_loss)
    val, metric = shared(world, val), shared(world, metric)
    if val is not None and not math.isfinite(val):
        raise Diverged(f"validation loss became {val} at step {progress.step}")
    if val is not None and val > feeder.loss_limit:  # the last update's weights exploded: not
        # kept, or a rollback would come back to them and explode again whatever its rate
        raise Diverged(f"validation loss exploded to {val:.4g} at step {progress.step}")
    record = feeder.record(progress, train_loss, val, metric)
    progress.history.append(record)
    progress.loss_sum, progress.loss_count = 0.0, 0
    score = metric if metric is not None else -val if val is not None else progress.step
    # A metric's tie goes to the lower validation loss: on a few validation examples accuracy
    # reaches its top early, and the weights trained further are the better ones to keep.
    improved = score > progress.best_score or (
        score == progress.best_score and metric is not None and val is not None
        and val < progress.best_val)
    if improved:
        progress.best_score, progress.best_step = score, progress.step
    if val is not None:
        progress.best_val = min(val, progress.best_val)
    full_state = feeder.full_state(world)
    best = None
    if world.main:
        if rows and rows[-1]["step"] == progress.step:
            rows[-1]["val_loss"] = "" if val is None else val
        elif val is not None:  # resumed exactly here without a step: a row of its own
            rows.append({"step": progress.step, "chars": progress.chars, "lr": "",
                         "train_loss": "", "val_loss": val})
        if run_dir is None:
            best = copy.deepcopy(model.state_dict()) if improved else None
        else:
            if improved:
                meta = {"step": str(progress.step)}
                if val is not None:
                    meta["val_loss"] = repr(val)
                ckpt.write_safetensors(run_dir / ckpt.BEST, model.state_dict(), meta)
            # The rows before the checkpoint that covers them: a crash between the two leaves
            # rows past the checkpoint, which resuming truncates (see truncate_metrics).
            append_metrics(run_dir / ckpt.METRICS, rows)
            ckpt.save_trainer(run_dir, model, optimizer, full_state, asdict(progress))
            write_progress_files(run_dir, feeder, progress)
        say(feeder.report(record, improved, seconds, left))
    distributed.barrier(world)
    return best


def shared(world: distributed.World, value: float | None) -> float | None:
    """Rank 0's number, or its None, on every rank (a collective call)."""
    if not world.joined:
        return value
    present = distributed.broadcast(world, float(value is not None))
    value = distributed.broadcast(world, 0.0 if value is None else value)
    return value if present else None


def write_progress_files(run_dir: Path, feeder: Feeder, progress: Progress) -> None:
    """loss.png, and what the feeder adds (a language model's samples), for a user to watch."""
    try:
        if all("val_loss" in h for h in progress.history):
            plot_losses(progress.history, run_dir / "loss.png", feeder.unit)
        feeder.after_checkpoint(run_dir, progress)
    except OSError as e:
        raise RnnkitError(f"could not write to {run_dir} ({e.strerror or e}); the checkpoint "
                          "is saved; free disk space and --resume") from None


def save_where_stopped(run_dir: Path | None, feeder: Feeder, optimizer: torch.optim.Optimizer,
                       progress: Progress, rows: list[dict], world: distributed.World) -> None:
    """Save exactly where the loop stands, without an extra evaluation, so that resuming
    continues the same run (same counters, same loss log)."""
    full_state = feeder.full_state(world)
    if world.main and run_dir is not None:
        append_metrics(run_dir / ckpt.METRICS, rows)
        ckpt.save_trainer(run_dir, feeder.model, optimizer, full_state, asdict(progress))


def load_checkpoint(run_dir: Path, feeder: Feeder, optimizer: torch.optim.Optimizer) -> Progress:
    """The progress of last.safetensors, with its weights, moments and carried state loaded into
    the model, the optimizer and the feeder, everything in it checked first."""
    saved, state = ckpt.load_trainer(run_dir, feeder.model, optimizer, feeder.state_shape)
    try:
        progress = from_dict(Progress, saved, "progress")
    except RnnkitError as e:
        raise RnnkitError(f"{run_dir / ckpt.LAST}: {e}; this checkpoint cannot be resumed, so "
                          "train again with a new --out") from None
    feeder.load_state(state)
    return progress


def roll_back(error: Diverged, run_dir: Path | None, feeder: Feeder,
              optimizer: torch.optim.Optimizer, now: Progress, cfg: RunConfig,
              say) -> Progress:
    """Back to the last checkpoint with half the learning rate, or stop (--on-nan)."""
    can = cfg.on_nan == "rollback" and now.rollbacks < MAX_ROLLBACKS \
        and run_dir is not None and (run_dir / ckpt.LAST).exists()
    if not can and run_dir is None:  # trained in memory (`fitting.fit`): no checkpoint
        raise RnnkitError(f"{error}; stopped, and the model keeps the weights it had before "
                          "training; lower lr or grad_clip, and check the data for extreme values")
    if not (run_dir / ckpt.LAST).exists():  # before the first checkpoint: nothing to go back to
        raise RnnkitError(f"{error}, before the first checkpoint, so there is none to keep or "
                          "go back to; lower --lr or --grad-clip and train again")
    if not can:
        why = f" after {now.rollbacks} rollbacks" if cfg.on_nan == "rollback" else ""
        fix = "" if cfg.on_nan == "rollback" else ", or train with --on-nan rollback"
        raise RnnkitError(f"{error}; stopped{why}, the last good checkpoint is kept; lower "
                          f"--lr or --grad-clip and --resume{fix}")
    back = load_checkpoint(run_dir, feeder, optimizer)
    # the schedule in force, not the checkpoint's: a resumed run may have raised its length
    back.lr_scale, back.rollbacks, back.plan = now.lr_scale / 2, now.rollbacks + 1, now.plan
    say(f"rnnkit: {error}; rolled back to step {back.step} (the last checkpoint) with the "
        f"learning rate scaled by {back.lr_scale:g} (--on-nan rollback)")
    return back


def summary_of(run_dir: Path | None, progress: Progress, clock: Clock,
               world: distributed.World, stopped: str | None) -> dict:
    """What a run returns: its counters and how this call spent its time."""
    now = time.monotonic()
    return {"run_dir": None if run_dir is None else str(run_dir), "steps": progress.step,
            "steps_now": progress.step - clock.start_step, "best_val": progress.best_val,
            "best_score": progress.best_score, "best_step": progress.best_step,
            "seconds": now - clock.started,
            "train_seconds": max(0.0, now - clock.t0 - clock.eval_seconds),
            "eval_seconds": clock.eval_seconds, "stopped": stopped, "history": progress.history,
            "processes": world.size, "rank": world.rank, "best_weights": None}
