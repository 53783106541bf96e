"""Supervised training for the task models (`rnnkit.tasks`): epochs of shuffled minibatches.

    summary = fit(model, train, val, FitConfig(epochs=10), run_dir="runs/x", metric=accuracy)

A dataset is a dict of tensors that share their first dimension N, named after the arguments of
the model's `forward` ("inputs", "targets", "lengths", ...); a minibatch is the same dict indexed by
B rows, passed as `model(**batch)`. The loop is the engine's (`rnnkit.engine`), the same as the
language model's: warm-up and cosine schedule fitted to the time budget, clipping, accumulation,
autocast, DDP under torchrun, checkpoints with exact resume, --on-nan. What this module adds is
the feeder, `EpochFeeder`: the order of each epoch's minibatches is a pure function of (seed,
epoch), so step i's minibatch is known without replaying the ones before it, and the validation
after each epoch that picks the best weights (highest metric, else lowest loss). With a time
budget (the caller's, from its start) no step starts that would leave too little time for the
evaluation that ends it and the caller's test afterwards (`test_rows`, at the measured speed).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from . import checkpoint as ckpt
from . import distributed, engine
from .cells import evaluating
from .configs import FitConfig
from .devices import denormals_flushed, pick_device
from .errors import RnnkitError
from .schedule import lr_at, order_seed
from .tasks import MLPConfig, TaggerConfig, time_mask, token_ids

__all__ = ["EpochFeeder", "FitConfig", "accuracy", "batches", "counted", "dataset_loss",
           "fit", "lr_at", "predict", "step_seconds"]

Dataset = dict[str, Tensor]
Metric = Callable[[Tensor, Dataset], tuple[float, int]]  # (outputs, batch) -> (correct, count)
MAX_EVALS = 100  # a run of fixed epochs evaluates at most this many times
EVAL_SHARE = 0.1  # a run until the time is up spends at most this share of it evaluating
TEST_MARGIN = 1.5  # the test is reserved this many times its measured time
TEST_FIXED = 0.02  # and this share of the budget, for the report after it


def as_dataset(model: nn.Module, data, name: str) -> Dataset:
    """`fit`'s `train` or `val`, checked, as tensors: arrays and lists converted (floats, and
    the inputs of a model that reads features, to float32; the rest to int64), the keys the
    model's forward takes, targets present, lengths within the sequences, no NaN or infinity,
    and class ids within the model's classes (on the real steps of a per-step model)."""
    if not isinstance(data, dict):
        raise RnnkitError(f"{name} must be a dict of arrays such as {{'inputs': x, 'targets': "
                          f"y}}, got {type(data).__name__}")
    parameters = inspect.signature(model.forward).parameters.values()
    takes = [p.name for p in parameters if p.kind is not p.VAR_KEYWORD]
    anything = any(p.kind is p.VAR_KEYWORD for p in parameters)  # forward(**kwargs) takes all
    unknown = [] if anything else sorted(set(data) - set(takes))
    if unknown:
        raise RnnkitError(f"{name} has {unknown}, which {type(model).__name__} does not take; "
                          f"its keys are {takes}")
    if "targets" not in data:
        raise RnnkitError(f"{name} has no 'targets'; fit learns to give them")
    needed = [p.name for p in parameters if p.default is p.empty
              and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in data]
    if needed:  # forward() would fail on the first batch with a TypeError
        raise RnnkitError(f"{name} has no {needed[0]!r}, which {type(model).__name__} reads")
    out = {}
    for key, value in data.items():
        try:
            t = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError, RuntimeError):
            raise RnnkitError(f"{name}[{key!r}] is not an array of numbers") from None
        # features (of every model but those that read ids) are floats, whatever they came as
        features = key == "inputs" and not getattr(model, "token_inputs", False)
        t = t.float() if t.is_floating_point() or features else t.long()
        out[key] = t
    size(out)
    for key, (count, what, dims) in getattr(model, "id_sizes", dict)().items():
        if key in out:  # a decoder's tokens, a condition's classes: whole ids in range
            out[key] = token_ids(out[key], count, f"{name}[{key!r}]", what, dims)
    x, lengths = out.get("inputs"), out.get("lengths")
    # a sequence's lengths (a generator's condition has no time axis: its lengths are the
    # targets', which the model checks)
    sequence = x is not None and (x.dim() >= 3 or (x.dim() == 2 and not x.is_floating_point()))
    if sequence and x.shape[1] == 0:
        raise RnnkitError(f"{name}['inputs'] has no time steps (shape {tuple(x.shape)}); every "
                          "sequence needs at least one")
    config = getattr(model, "config", None)  # a recurrent reader's input_size: per step
    width = config.input_size if isinstance(config, TaggerConfig) else None
    if width is not None and x is not None and x.dim() != 3:
        raise RnnkitError(f"{name}['inputs'] must be sequences (N, T, {width}), got shape "
                          f"{tuple(x.shape)}; one feature per step is x[..., None]")
    if width is not None and x is not None and x.shape[-1] != width:
        raise RnnkitError(f"{name}['inputs'] has {x.shape[-1]} features per step, and the model "
                          f"reads {width} (its input_size); give {width}, or make the model for "
                          f"{x.shape[-1]}")
    if isinstance(config, MLPConfig) and x is not None and len(x) and \
            x[0].numel() != config.input_size:
        raise RnnkitError(f"{name}['inputs'] hold {x[0].numel()} values a row (shape "
                          f"{tuple(x.shape)}), and the MLP reads {config.input_size} (its "
                          "input_size)")
    if synced(model) and x is not None and x.dim() == 3 and out["targets"].shape[:2] != \
            x.shape[:2]:
        raise RnnkitError(f"{name}['targets'] must be one per step, (N, T) = "
                          f"{tuple(x.shape[:2])} as the inputs, got shape "
                          f"{tuple(out['targets'].shape)}")
    if lengths is not None and (lengths.dim() != 1 or (lengths.is_floating_point() and not bool(
            (lengths == lengths.round()).all()))):
        raise RnnkitError(f"{name}['lengths'] must be whole numbers of steps, one per sequence "
                          f"(shape (N,)), got shape {tuple(lengths.shape)} of "
                          f"{str(lengths.dtype).removeprefix('torch.')}")
    if lengths is not None and lengths.is_floating_point():
        lengths = out["lengths"] = lengths.long()
    if lengths is not None and sequence and len(lengths) and (
            int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]):
        raise RnnkitError(f"{name}['lengths'] must be from 1 to the inputs' {x.shape[1]} steps, "
                          f"got {int(lengths.min())} to {int(lengths.max())}")
    y = out["targets"]
    # the real steps of per-step targets: their padding may hold anything (-1, NaN)
    real = time_mask(lengths, *y.shape[:2], y.device) if synced(model) and \
        lengths is not None and y.dim() >= 2 else torch.ones(y.shape[:1], dtype=torch.bool)
    for key, t in out.items():
        values = t[real] if key == "targets" else t
        if t.is_floating_point() and not bool(torch.isfinite(values).all()):
            raise RnnkitError(f"{name}[{key!r}] holds NaN or infinite values; give numbers "
                              "(pad with zeros)")
    config = getattr(model, "config", None)
    if getattr(config, "head", None) == "classify" and not synced(model) and y.dim() != 1:
        raise RnnkitError(f"{name}['targets'] of a classifier are one class id per row, shape "
                          f"(N,), got shape {tuple(y.shape)}"
                          + ("; one-hot rows are y.argmax(1)" if y.dim() == 2 else ""))
    if getattr(config, "head", None) == "classify" and len(y):
        classes = config.output_size
        inside = real.reshape(*real.shape, *[1] * (y.dim() - real.dim()))  # broadcast over y
        if y.is_floating_point() and bool((y[real] == y[real].round()).all()):  # ids as floats
            y = out["targets"] = torch.where(inside, y, 0.0).long()
        bad = inside & ((y < 0) | (y >= classes))
        if y.is_floating_point() or bool(bad.any()):
            shown = y[bad][0].item() if bool(bad.any()) else "a fraction"
            raise RnnkitError(f"{name}['targets'] must be class ids from 0 to {classes - 1}, got "
                              f"{shown}")
    return out


def size(data: Dataset) -> int:
    sizes = {len(v) for v in data.values()}
    if len(sizes) != 1:
        raise RnnkitError(f"dataset tensors disagree on their number of rows: {sorted(sizes)}")
    return sizes.pop()


def rows(data: Dataset, index: Tensor, device: torch.device, synced: bool = False) -> Dataset:
    """The rows `index` of every tensor, padding cut to the longest sequence among them.

    A `synced` model's targets (one per input step: `Tagger.synced`) are cut with the inputs;
    any other model's are left whole, whatever their shape (a regression's C values, a
    decoder's targets).
    """
    batch = {k: v[index] for k, v in data.items()}
    x = batch.get("inputs")
    # Sequences are (B, T, F) features or (B, T) token ids; a (B, F) float vector (a
    # generator's condition) has no time axis to cut.
    sequence = x is not None and (x.dim() >= 3 or (x.dim() == 2 and not x.is_floating_point()))
    if "lengths" in batch and sequence and len(index):
        T = int(batch["lengths"].max())
        y = batch.get("targets")
        if y is not None and synced:
            batch["targets"] = y[:, :T]
        batch["inputs"] = x[:, :T]
    return {k: v.to(device) for k, v in batch.items()}


def synced(model: nn.Module) -> bool:
    """Whether the model's targets are one per input step (its class says so: `Tagger`)."""
    return getattr(model, "synced", False)


def batches(data: Dataset, batch_size: int, generator: torch.Generator,
            bucket: bool, processes: int = 1) -> list[Tensor]:
    """One epoch of minibatch indices, in random order.

    With `bucket` and variable lengths, each run of 32 batches is sorted by length before it is
    cut, so a batch holds sequences of similar length: the packed kernel loops over the longest
    one, so this is several times faster, and it changes only which rows meet in a batch.
    A last batch too small to give each of `processes` a row joins the batch before it.
    """
    order = torch.randperm(size(data), generator=generator)
    if not bucket or "lengths" not in data:
        return shared_out(list(order.split(batch_size)), processes)
    lengths = data["lengths"][order]
    out = []
    for chunk, chunk_lengths in zip(order.split(32 * batch_size),
                                    lengths.split(32 * batch_size), strict=True):
        out += list(chunk[torch.argsort(chunk_lengths, stable=True)].split(batch_size))
    out = shared_out(out, processes)
    return [out[i] for i in torch.randperm(len(out), generator=generator).tolist()]


def shared_out(batches: list[Tensor], processes: int) -> list[Tensor]:
    """The batches, the last one joined to the one before when it has fewer rows than there are
    processes to share it (only the last batch can be short)."""
    if len(batches) > 1 and len(batches[-1]) < processes:
        batches = [*batches[:-2], torch.cat(batches[-2:])]
    return batches


def counted(outputs: Tensor, batch: Dataset) -> Tensor:
    """What a model's mean loss averages over, as a mask: (B,) rows for one output per row
    (B, C), or (B, T) real steps for one output per step (B, T, C), cut by `target_lengths`
    (a decoder) or `lengths`. Sums over batches of different sizes and lengths use it."""
    if outputs.dim() < 3:
        return torch.ones(outputs.shape[0], dtype=torch.bool, device=outputs.device)
    B, T = outputs.shape[:2]
    lengths = batch.get("target_lengths", batch.get("lengths"))
    if lengths is None:
        return torch.ones(B, T, dtype=torch.bool, device=outputs.device)
    return torch.arange(T, device=outputs.device)[None, :] < lengths.to(outputs.device)[:, None]


def accuracy(outputs: Tensor, batch: Dataset) -> tuple[float, int]:
    """Correct argmax predictions and their count: (B, C) against (B,), or (B, T, C) against
    (B, T) counting only the real steps (see `counted`)."""
    mask = counted(outputs, batch)
    right = (outputs.argmax(-1) == batch["targets"]) & mask
    return float(right.sum()), int(mask.sum())


@torch.no_grad()
def dataset_loss(model: nn.Module, data: Dataset, batch_size: int, device: torch.device,
             metric: Metric | None = None) -> tuple[float, float | None]:
    """Mean loss over every row or real step of `data`, and the metric's fraction if given.

    A model's loss is a mean over its batch, so each batch's loss is weighted by the rows or
    steps it averaged over (`counted`): the result does not depend on `batch_size`.
    """
    n = size(data)
    total, terms, right, count = 0.0, 0, 0.0, 0
    with evaluating(model):
        for i in range(0, n, batch_size):
            batch = rows(data, torch.arange(i, min(n, i + batch_size)), device, synced(model))
            outputs, loss = model(**batch)
            k = int(counted(outputs, batch).sum())
            total, terms = total + float(loss) * k, terms + k
            if metric is not None:
                r, c = metric(outputs, batch)
                right, count = right + r, count + c
    return total / max(terms, 1), (right / count if metric is not None and count else None)


@torch.no_grad()
def predict(model: nn.Module, data: Dataset, batch_size: int = 256,
            device: torch.device | str = "cpu") -> Tensor:
    """The model's outputs for every row of `data` (targets, if any, are ignored)."""
    n = size({k: v for k, v in data.items() if k != "targets"})
    inputs = {k: v for k, v in data.items() if k != "targets"}
    outputs = []
    with evaluating(model):
        for i in range(0, n, batch_size):
            out = model(**rows(inputs, torch.arange(i, min(n, i + batch_size)), device))[0].cpu()
            if out.dim() >= 3:  # per-step outputs of a cut batch: pad back to the full length
                out = torch.nn.functional.pad(out, (0, 0, 0, inputs["inputs"].shape[1] - out.shape[1]))
            outputs.append(out)
    return torch.cat(outputs)


def step_seconds(model: nn.Module, train: Dataset, cfg: FitConfig, steps: int) -> float:
    """Seconds an optimizer step on `train`'s minibatches takes, the median of `steps` (after
    one more that warms up), timed on `model`, which it trains: give it a copy to spare."""
    device = pick_device(cfg.device, cfg.precision)
    model.to(device).train()
    optimizer = engine.make_optimizer(model, cfg)
    order = batches(train, cfg.batch_size, torch.Generator().manual_seed(cfg.seed), cfg.bucket)
    times = []
    with denormals_flushed():  # as training steps (`engine.run`)
        for i in range(steps + 1):
            t = time.perf_counter()
            model(**rows(train, order[i % len(order)], device, synced(model)))[1].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def fit(model: nn.Module, train: Dataset, val: Dataset | None, cfg: FitConfig,
        run_dir: str | Path | None = None, metric: Metric | None = None,
        quiet: bool = False, started: float | None = None, test_rows: int = 0,
        resume: bool = False) -> dict:
    """Train `model` on `train`; keep (and load back at the end) the weights that did best on
    `val` (highest metric if given, else lowest loss; the last weights without `val`).

    With `run_dir`, the engine's checkpoints go there: DIR/model.safetensors (the best weights),
    DIR/last.safetensors (what `resume=True` continues from, exactly), DIR/metrics.csv and
    DIR/loss.png; without, nothing is written and the best weights are kept in memory. With a
    time budget (`cfg.max_time`, counted from `started`, a `time.monotonic()` reading: the
    command's start; default now), no step starts that would leave too little time for the
    evaluation that ends it and for the `test_rows` the caller runs afterwards. Under torchrun
    each process trains on its share of every batch. Returns a summary: history (one dict per
    evaluation: every epoch, or every few, `MAX_EVALS`), best (the engine's score of the kept
    weights, higher is better: the metric, or minus the validation loss, or without `val` the
    step of the last weights), best_epoch, epochs (reached, the
    last perhaps cut short), steps, seconds (all of fit), train_seconds (steps), eval_seconds
    (validating and saving), stopped (None, "time", "SIGINT" or "SIGTERM").
    """
    t0 = time.monotonic()
    started = t0 if started is None else started
    if not isinstance(cfg, FitConfig):
        raise RnnkitError(f"cfg must be a FitConfig, got {type(cfg).__name__}")
    train = as_dataset(model, train, "train")
    val = None if val is None else as_dataset(model, val, "val")
    if size(train) == 0:
        raise RnnkitError("the training set is empty")
    if cfg.max_time and t0 >= started + cfg.max_time:
        raise RnnkitError(f"the time budget of {cfg.max_time:g}s was spent before training began "
                          f"({t0 - started:.1f}s went to reading the data); give a longer "
                          "--max-time")
    run_dir = None if run_dir is None else Path(run_dir)
    if run_dir is not None and not resume and any(
            (run_dir / name).exists() for name in (ckpt.LAST, ckpt.BEST)):  # was written over
        raise RnnkitError(f"{run_dir} already holds a run; pass resume=True to continue it, or "
                          "give another run_dir")
    if cfg.on_nan == "rollback" and run_dir is None:
        raise RnnkitError("on_nan='rollback' goes back to the last checkpoint, which needs a "
                          "run_dir; give one, or leave on_nan as 'stop'")
    # In memory, a run that fails leaves the model as it found it, not half-trained or NaN.
    before = None if run_dir is not None else \
        {k: v.detach().clone() for k, v in model.state_dict().items()}
    world, device_name = distributed.setup(cfg.device)
    try:
        device = pick_device(device_name, cfg.precision)
        if run_dir is not None:  # once the call is known to be sound: a refused one makes none
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise RnnkitError(f"cannot make the run directory {run_dir} "
                                  f"({e.strerror or e}); give a writable run_dir") from None
        model.to(device)
        feeder = EpochFeeder(model, train, val, cfg, metric, world, device, test_rows)
        say = tqdm.write if world.main and not quiet else (lambda *a: None)
        # a second fit into the same run_dir is refused while this one writes (rank 0 writes)
        with ckpt.RunLock(run_dir) if run_dir is not None and world.main else \
                contextlib.nullcontext():
            summary = engine.run(feeder, cfg, run_dir, world, device, resume, say, started,
                                 quiet)
    except RnnkitError:
        if before is not None:
            model.load_state_dict(before)
            model.eval()
        raise
    finally:
        distributed.teardown(world)
    if summary["best_weights"] is not None:
        model.load_state_dict(summary["best_weights"])
    elif run_dir is not None and (run_dir / ckpt.BEST).exists():  # improved before this call
        model.load_state_dict(ckpt.read_safetensors(run_dir / ckpt.BEST)[0])
    model.eval()
    return {"history": summary["history"], "best": summary["best_score"],
            "best_epoch": math.ceil(summary["best_step"] / feeder.per_epoch),
            "epochs": math.ceil(summary["steps"] / feeder.per_epoch), "steps": summary["steps"],
            "seconds": time.monotonic() - t0,
            "train_seconds": summary["train_seconds"], "eval_seconds": summary["eval_seconds"],
            "stopped": summary["stopped"]}


class EpochFeeder:
    """The task models' feeder of the engine (see `engine.Feeder`): step i is minibatch
    i % per_epoch of epoch i // per_epoch, each epoch's order drawn from (seed, epoch); this
    process reads its share of the minibatch's rows, split into `accumulate` micro-batches.
    An evaluation on the validation set ends each epoch."""

    equal_parts = False  # micro-batches of different sizes: weighted by the terms they average
    short_budget_refused = False  # an ensemble member's small share trains what it can
    unit = "examples"
    more = "raise --epochs to train it further"
    state_shape = None  # nothing is carried from one minibatch to the next
    loss_limit = math.inf  # a regression's loss has no natural bound: only NaN diverges

    def __init__(self, model: nn.Module, train: Dataset, val: Dataset | None, cfg: FitConfig,
                 metric: Metric | None, world: distributed.World, device: torch.device,
                 test_rows: int):
        self.model, self.train, self.val, self.cfg, self.metric = model, train, val, cfg, metric
        self.world, self.device, self.test_rows = world, device, test_rows
        if cfg.batch_size < world.size:  # a process without rows would miss DDP's collectives
            raise RnnkitError(f"--batch-size {cfg.batch_size} is smaller than the {world.size} "
                              f"processes, each of which needs rows of every batch; give at "
                              f"least {world.size}")
        self.n_val = size(val) if val is not None else 0
        # what decides which rows meet in which batch: a resumed run must keep it
        self.layout = {**{k: getattr(cfg, k) for k in FitConfig.layout}, "rows": size(train)}
        self.cached: tuple[int, list[Tensor]] = (-1, [])
        self.per_epoch = len(self.epoch(0))
        # epochs 0: until the time budget ends, the schedule fitted to it (`engine.replan`)
        self.end = cfg.epochs * self.per_epoch or sys.maxsize
        self.plan = cfg.epochs * self.per_epoch
        # A set number of epochs: at most MAX_EVALS evaluations (and one at the end).
        self.eval_epochs = max(1, math.ceil(cfg.epochs / MAX_EVALS))
        self.extra = 0.0  # seconds of the caller's test after the last evaluation
        self.per_row = 0.0  # seconds per evaluated row, in full batches (`measure_reserve`)
        self.t0 = self.eval_began = time.monotonic()
        self.eval_cost = 0.0  # seconds the last evaluation took, its checkpoint included

    def epoch(self, e: int) -> list[Tensor]:
        """The minibatch indices of epoch e (counted from 0), in their order."""
        if self.cached[0] != e:
            order = torch.Generator().manual_seed(order_seed(self.cfg.seed, e))
            self.cached = (e, batches(self.train, self.cfg.batch_size, order, self.cfg.bucket,
                                      self.world.size))
        return self.cached[1]

    def global_batch(self, step: int) -> Tensor:
        return self.epoch(step // self.per_epoch)[step % self.per_epoch]

    def batch(self, step: int) -> list[Dataset]:
        mine = self.global_batch(step).tensor_split(self.world.size)[self.world.rank]
        return [rows(self.train, part, self.device, synced(self.model))
                for part in mine.tensor_split(self.cfg.accumulate) if len(part)]

    def forward(self, net: nn.Module, micro: Dataset) -> tuple[Tensor, Tensor]:
        outputs, loss = net(**micro)
        return loss, counted(outputs, micro).sum()  # the terms of this batch's mean

    def carry(self) -> None:
        pass

    def items(self, step: int) -> int:
        return len(self.global_batch(min(step, self.end - 1)))

    def eval_due(self, step: int) -> bool:
        """At the end of an epoch: every `eval_epochs` epochs, or, training until the time
        budget ends (epochs 0), once EVAL_SHARE or less of the time since the last evaluation
        would go to this one (a small set's epoch is one or two steps: evaluating after each
        would cost more than them). A set number of epochs keeps its cadence under a budget
        too, so that a seed repeats its run wherever the budget is not reached: timed
        evaluations made the best epoch, and so the model, follow the machine's pace (three
        runs of one seed on one machine picked epochs 30, 16 and 15)."""
        if step % self.per_epoch:
            return False
        if self.cfg.max_time and not self.cfg.epochs:  # rank 0's answer, on every rank
            due = self.eval_cost <= EVAL_SHARE * (time.monotonic() - self.eval_began)
            return bool(distributed.broadcast(self.world, float(due)))
        return (step // self.per_epoch) % self.eval_epochs == 0

    def evaluate(self, train_loss: float) -> tuple[float | None, float | None]:
        self.eval_began = started = time.monotonic()
        self.eval_cost = 0.0
        if not self.n_val:
            return None, None
        val_loss, score = dataset_loss(self.model, self.val, 4 * self.cfg.batch_size, self.device,
                                   self.metric)
        self.eval_cost = time.monotonic() - started
        if self.n_val >= 4 * self.cfg.batch_size:  # full batches: the test's pace, measured again
            self.per_row = self.eval_cost / self.n_val
            self.extra = self.reserve_for_test()
        return val_loss, score

    def record(self, progress: engine.Progress, train_loss: float, val: float | None,
               metric: float | None) -> dict:
        record = {"epoch": math.ceil(progress.step / self.per_epoch), "step": progress.step,
                  "train_loss": train_loss}
        if val is not None:
            record["val_loss"] = val
        if metric is not None:
            record["val_metric"] = metric
        record["seconds"] = time.monotonic() - self.t0
        return record

    def report(self, record: dict, improved: bool, seconds: float, left: float) -> str:
        shown = "".join(f" {k} {v:.4f}" for k, v in record.items()
                        if k in ("train_loss", "val_loss", "val_metric"))
        of = f"/{self.cfg.epochs}" if self.cfg.epochs else ""
        return (f"epoch {record['epoch']}{of}:{shown}"
                f"{' *best' if improved else ''} ({seconds:.1f}s, about {left:.0f}s left)")

    def after_checkpoint(self, run_dir: Path, progress: engine.Progress) -> None:
        self.eval_cost = time.monotonic() - self.eval_began  # the checkpoint's writing included

    def reserve_for_test(self) -> float:
        """Seconds to keep for the caller's test of `test_rows` rows at `per_row`, with a
        margin: the test's batches are as large as an evaluation's or larger, but the machine
        may be busier by then, and what follows the test (its report) takes time too."""
        if not self.test_rows:
            return 0.0
        return TEST_MARGIN * self.test_rows * self.per_row + TEST_FIXED * self.cfg.max_time

    def measure_reserve(self) -> float:
        """Seconds the last evaluation will take, measured before training on one full
        evaluation batch (rows of the validation set, else of the training set, repeated up to
        the batch size when there are fewer), after an untimed first call: a first call's
        set-up, or a batch of 5 rows, would overstate the pace of the whole evaluation and of
        the caller's test many times over, and stop training early. The caller's test at
        that pace, with a margin, becomes `extra`."""
        data = self.val if self.n_val else self.train
        rows_wanted = 4 * self.cfg.batch_size
        index = torch.arange(rows_wanted) % size(data)
        part = {k: v[index] for k, v in data.items()}
        dataset_loss(self.model, {k: v[:2] for k, v in part.items()}, rows_wanted, self.device,
                     self.metric)  # set-up, untimed
        started = time.monotonic()
        dataset_loss(self.model, part, rows_wanted, self.device, self.metric)
        self.per_row = (time.monotonic() - started) / rows_wanted
        self.extra = self.reserve_for_test()
        return max(1, math.ceil(self.n_val / rows_wanted)) * rows_wanted * self.per_row

    def full_state(self, world: distributed.World) -> None:
        return None

    def load_state(self, state) -> None:
        pass


