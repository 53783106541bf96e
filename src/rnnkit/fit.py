"""Supervised training for the task models (`rnnkit.tasks`): one loop, written out.

    for each epoch: shuffle -> for each minibatch:
        batch -> forward -> zero_grad -> backward -> clip -> step -> log
    then evaluate on the validation set and keep the best weights

A dataset is a dict of tensors that share their first dimension N, named after the arguments of
the model's `forward` ("inputs", "targets", "lengths", ...); a minibatch is the same dict indexed by
B rows, passed as `model(**batch)`. The learning rate is a pure function of the step: linear
warm-up, then cosine decay to `lr * lr_min`. With a time budget (the command's, from its start)
the measured speeds decide: no step starts that would leave too little time for the evaluation
that ends its epoch and the caller's test, and the plan is re-estimated every 50 steps so that
the decay still ends when the time does. Ctrl-C stops after the current step and keeps the best
weights.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .checkpoint import write_safetensors
from .errors import RnnkitError, require_positive
from .training import StopRequest, lr_at, pick_device  # one schedule for both loops

Dataset = dict[str, Tensor]
Metric = Callable[[Tensor, Dataset], tuple[float, int]]  # (outputs, batch) -> (correct, count)
BEST = "model.safetensors"


@dataclass
class FitConfig:
    epochs: int = 30  # passes over the training set
    batch_size: int = 64  # B: examples per optimizer step
    lr: float = 3e-3  # peak learning rate of AdamW
    lr_min: float = 0.02  # the cosine decay ends at lr * lr_min
    warmup: int = 30  # steps of linear warm-up from 0 to lr
    weight_decay: float = 0.01  # AdamW's decoupled weight decay, on matrices only
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 turns clipping off
    max_time: float = 0.0  # seconds of training at most; 0: no limit
    seed: int = 0  # weights, shuffling and dropout
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"
    bucket: bool = True  # batch sequences of similar length together (see `batches`)

    def __post_init__(self):
        require_positive(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr)
        for name in ("warmup", "max_time", "grad_clip", "weight_decay", "seed"):
            if getattr(self, name) < 0:
                raise RnnkitError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not 0 < self.lr_min <= 1:
            raise RnnkitError(f"lr_min must be in (0, 1], got {self.lr_min}")


def size(data: Dataset) -> int:
    sizes = {len(v) for v in data.values()}
    if len(sizes) != 1:
        raise RnnkitError(f"dataset tensors disagree on their number of rows: {sorted(sizes)}")
    return sizes.pop()


def rows(data: Dataset, index: Tensor, device: torch.device) -> Dataset:
    """The rows `index` of every tensor, padding cut to the longest sequence among them.

    Synced targets (as long as the inputs) are cut with the inputs; a decoder's targets, which
    come with their own `target_lengths`, are left whole.
    """
    batch = {k: v[index] for k, v in data.items()}
    x = batch.get("inputs")
    # Sequences are (B, T, F) features or (B, T) token ids; a (B, F) float vector (a
    # generator's condition) has no time axis to cut.
    sequence = x is not None and (x.dim() >= 3 or (x.dim() == 2 and not x.is_floating_point()))
    if "lengths" in batch and sequence and len(index):
        T = int(batch["lengths"].max())
        y = batch.get("targets")
        if y is not None and "target_lengths" not in batch and y.dim() >= 2 \
                and y.shape[1] == x.shape[1]:
            batch["targets"] = y[:, :T]
        batch["inputs"] = x[:, :T]
    return {k: v.to(device) for k, v in batch.items()}


def batches(data: Dataset, batch_size: int, generator: torch.Generator,
            bucket: bool) -> list[Tensor]:
    """One epoch of minibatch indices, in random order.

    With `bucket` and variable lengths, each run of 32 batches is sorted by length before it is
    cut, so a batch holds sequences of similar length: the packed kernel loops over the longest
    one, so this is several times faster, and it changes only which rows meet in a batch.
    """
    order = torch.randperm(size(data), generator=generator)
    if not bucket or "lengths" not in data:
        return list(order.split(batch_size))
    lengths = data["lengths"][order]
    out = []
    for chunk, chunk_lengths in zip(order.split(32 * batch_size),
                                    lengths.split(32 * batch_size), strict=True):
        out += list(chunk[torch.argsort(chunk_lengths, stable=True)].split(batch_size))
    return [out[i] for i in torch.randperm(len(out), generator=generator).tolist()]


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
def evaluate(model: nn.Module, data: Dataset, batch_size: int, device: torch.device,
             metric: Metric | None = None) -> tuple[float, float | None]:
    """Mean loss over every row or real step of `data`, and the metric's fraction if given.

    A model's loss is a mean over its batch, so each batch's loss is weighted by the rows or
    steps it averaged over (`counted`): the result does not depend on `batch_size`.
    """
    was_training = model.training
    model.eval()
    n = size(data)
    total, terms, right, count = 0.0, 0, 0.0, 0
    for i in range(0, n, batch_size):
        batch = rows(data, torch.arange(i, min(n, i + batch_size)), device)
        outputs, loss = model(**batch)
        k = int(counted(outputs, batch).sum())
        total, terms = total + float(loss) * k, terms + k
        if metric is not None:
            r, c = metric(outputs, batch)
            right, count = right + r, count + c
    model.train(was_training)
    return total / max(terms, 1), (right / count if metric is not None and count else None)


@torch.no_grad()
def predict(model: nn.Module, data: Dataset, batch_size: int = 256,
            device: torch.device | str = "cpu") -> Tensor:
    """The model's outputs for every row of `data` (targets, if any, are ignored)."""
    was_training = model.training
    model.eval()
    n = size({k: v for k, v in data.items() if k != "targets"})
    inputs = {k: v for k, v in data.items() if k != "targets"}
    outputs = []
    for i in range(0, n, batch_size):
        out = model(**rows(inputs, torch.arange(i, min(n, i + batch_size)), device))[0].cpu()
        if out.dim() >= 3:  # per-step outputs of a cut batch: pad back to the full length
            out = torch.nn.functional.pad(out, (0, 0, 0, inputs["inputs"].shape[1] - out.shape[1]))
        outputs.append(out)
    model.train(was_training)
    return torch.cat(outputs)


def fit(model: nn.Module, train: Dataset, val: Dataset | None, cfg: FitConfig,
        run_dir: str | Path | None = None, metric: Metric | None = None,
        quiet: bool = False, started: float | None = None, test_rows: int = 0) -> dict:
    """Train `model` on `train`; keep (and load back at the end) the weights that did best on
    `val` (highest metric if given, else lowest loss; the last weights without `val`).

    With `run_dir`, the best weights are written to DIR/model.safetensors whenever they improve.
    With a time budget (`cfg.max_time`, counted from `started`, a `time.monotonic()` reading:
    the command's start; default now), no step starts that would leave too little time for the
    evaluation that ends its epoch and for the `test_rows` the caller runs afterwards, at the
    measured speeds. Each epoch's line gives its seconds and an estimate of the time left.
    Returns a summary: history (one dict per epoch), best, best_epoch, steps, seconds (all of
    fit), train_seconds (steps), eval_seconds (validating and saving), stopped (None, "time",
    "SIGINT" or "SIGTERM").
    """
    device = pick_device(cfg.device)
    n = size(train)
    if n == 0:
        raise RnnkitError("the training set is empty")
    t0 = time.monotonic()
    started = t0 if started is None else started
    deadline = started + cfg.max_time if cfg.max_time else math.inf
    if t0 >= deadline:
        raise RnnkitError(f"the time budget of {cfg.max_time:g}s was spent before training began "
                          f"({t0 - started:.1f}s went to reading the data); give a longer "
                          "--max-time")
    torch.manual_seed(cfg.seed)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": cfg.weight_decay},
                                   {"params": others, "weight_decay": 0.0}], lr=cfg.lr)
    per_epoch = math.ceil(n / cfg.batch_size)
    plan = full_plan = cfg.epochs * per_epoch
    n_val = size(val) if val is not None else 0
    say = (lambda *a: None) if quiet else tqdm.write
    history: list[dict] = []
    best_score, best_state, best_epoch = -math.inf, None, 0
    step, stopped = 0, None
    # Measured speeds, for the budget: seconds in steps; seconds and rows of validation;
    # seconds of the last save of the best weights.
    train_seconds, eval_seconds, eval_rows, save_seconds = 0.0, 0.0, 0, 0.0
    # As in training.py: a bar on terminals only (None), so logs hold just the epoch lines.
    bar = tqdm(total=plan, disable=True if quiet else None, dynamic_ncols=True, unit="step",
               file=sys.stderr, leave=False)
    try:
        with StopRequest() as stop:
            for epoch in range(1, cfg.epochs + 1):
                epoch_start = time.monotonic()
                loss_sum, seen = 0.0, 0
                for index in batches(train, cfg.batch_size, order_gen, cfg.bucket):
                    now = time.monotonic()
                    if step and cfg.max_time:
                        # Forward-only rows before the first validation: a training step's
                        # share, an overestimate (it also runs backward).
                        per_step = train_seconds / step
                        per_row = eval_seconds / eval_rows if eval_rows else \
                            per_step / cfg.batch_size
                        reserve = (n_val + test_rows) * per_row + save_seconds
                        if now + per_step + reserve >= deadline:
                            stopped = "time"
                            break
                        if step % 50 == 0:  # the decay must end with the budget
                            epoch_cost = per_epoch * per_step + n_val * per_row + save_seconds
                            usable = deadline - now - test_rows * per_row
                            left = int(usable / epoch_cost * per_epoch)
                            plan = min(full_plan, step + max(left, 0))
                            bar.total = plan
                    if stop.signal:
                        stopped = stop.signal
                        break
                    batch = rows(train, index, device)
                    lr = lr_at(step, plan, cfg)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    outputs, loss = model(**batch)
                    loss_value = loss.detach().item()
                    if not math.isfinite(loss_value):
                        raise RnnkitError(f"training loss became {loss_value} at step {step}; "
                                          "lower --lr or --grad-clip")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    step += 1
                    k = int(counted(outputs, batch).sum())  # the terms of this batch's mean
                    loss_sum, seen = loss_sum + loss_value * k, seen + k
                    bar.set_postfix({"epoch": epoch, "loss": f"{loss_value:.3f}",
                                     "lr": f"{lr:.1e}"}, refresh=False)
                    bar.update(1)
                    train_seconds += time.monotonic() - now
                if seen == 0:
                    break
                record = {"epoch": epoch, "step": step, "train_loss": loss_sum / seen}
                if n_val:
                    evaluated = time.monotonic()
                    record["val_loss"], score = evaluate(model, val, 4 * cfg.batch_size, device,
                                                         metric)
                    eval_seconds += time.monotonic() - evaluated
                    eval_rows += n_val
                    if score is not None:
                        record["val_metric"] = score
                    score = -record["val_loss"] if score is None else score
                else:
                    score = epoch  # no validation set: the latest weights are the best
                improved = score > best_score
                if improved:
                    saved = time.monotonic()
                    best_score, best_epoch = score, epoch
                    best_state = copy.deepcopy(model.state_dict())
                    if run_dir is not None:
                        write_safetensors(Path(run_dir) / BEST, best_state,
                                          {"epoch": str(epoch)})
                    save_seconds = time.monotonic() - saved
                    eval_seconds += save_seconds
                now = time.monotonic()
                record["seconds"] = now - t0
                history.append(record)
                shown = "".join(f" {k} {v:.4f}" for k, v in record.items()
                                if k in ("train_loss", "val_loss", "val_metric"))
                left = (cfg.epochs - epoch) * (now - t0) / epoch  # at the mean epoch's pace
                if stopped:
                    left = 0.0
                left = min(left, max(0.0, deadline - now))
                say(f"epoch {epoch}/{cfg.epochs}:{shown}{' *best' if improved else ''} "
                    f"({now - epoch_start:.1f}s, about {left:.0f}s left)")
                if stopped:
                    break
    except BaseException:
        bar.close()
        raise
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"history": history, "best": best_score, "best_epoch": best_epoch, "steps": step,
            "seconds": time.monotonic() - t0, "train_seconds": train_seconds,
            "eval_seconds": eval_seconds, "stopped": stopped}
