"""Training a character language model: one loop, written out.

    batch -> forward -> zero_grad -> backward -> clip -> step -> log

with the hidden state carried from batch to batch (truncated backpropagation through time), an
evaluation and a checkpoint every `eval_every` steps, and a learning rate that is a pure function
of the step (linear warm-up, then cosine decay to `lr * lr_min` at the end of the plan).

The plan is `max_steps` when given. With only a time budget (`max_time`) the plan is estimated
from the measured speed at each evaluation, so the decay still ends when the time does.

Exact resume: a checkpoint holds the weights, the optimizer's moments, the carried state, the RNG
state and the counters; batch i is a pure function of i (see `text.Streams`). On CPU a run that is
stopped and resumed ends with the same weights as one that was not.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import from_dict
from .errors import RnnkitError, require_positive
from .lm import CharLM, ModelConfig
from .recurrent import detach_state
from .text import (
    TOKENIZERS,
    PreparedData,
    Streams,
    check_corpus_files,
    default_corpus,
    fit_batch_size,
    prepare,
)

# Options that fix which characters land in which batch: a resumed run must keep them.
DATA_LAYOUT = ("seq_len", "batch_size", "val_fraction", "tokenizer", "seed")


@dataclass
class TrainConfig:
    seq_len: int = 128  # T: time steps per batch, the horizon of backpropagation
    batch_size: int = 64  # B: contiguous streams read side by side
    lr: float = 3e-3  # peak learning rate of AdamW
    lr_min: float = 0.05  # the cosine decay ends at lr * lr_min
    warmup: int = 50  # steps of linear warm-up from 0 to lr
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 turns clipping off
    max_steps: int = 5000  # optimizer steps of the whole run, resumes included; 0: until max_time
    max_time: float = 0.0  # seconds this invocation may train; 0: no limit
    val_fraction: float = 0.1  # the end of the corpus held out for validation
    eval_every: int = 200  # steps between evaluations (each also writes a checkpoint)
    eval_tokens: int = 1 << 20  # at most this many validation tokens per evaluation
    tokenizer: str = "char"  # "char" (Unicode code points) or "byte"
    seed: int = 1337  # weights, dropout and epoch offsets
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"

    def __post_init__(self):
        require_positive(seq_len=self.seq_len, batch_size=self.batch_size, lr=self.lr,
                         eval_every=self.eval_every, eval_tokens=self.eval_tokens)
        for name in ("warmup", "max_steps", "max_time", "grad_clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise RnnkitError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.max_steps == 0 and self.max_time == 0:
            raise RnnkitError("give --max-steps or --max-time (or both) so the run can end")
        if not 0 < self.lr_min <= 1:
            raise RnnkitError(f"lr_min must be in (0, 1], got {self.lr_min}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise RnnkitError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.tokenizer not in TOKENIZERS:
            raise RnnkitError(f"unknown tokenizer {self.tokenizer!r}; choose char or byte")
        if self.device not in ("auto", "cpu", "cuda"):
            raise RnnkitError(f"unknown device {self.device!r}; choose auto, cpu or cuda")


@dataclass
class Progress:
    """The trainer's counters, saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    plan: int = 0  # steps the learning-rate schedule spans
    best_val: float = math.inf
    loss_sum: float = 0.0  # training loss summed since the last evaluation
    loss_count: int = 0
    chars: int = 0  # training characters seen
    history: list = field(default_factory=list)  # one dict per evaluation


def lr_at(step: int, plan: int, cfg: TrainConfig) -> float:
    """Linear warm-up over `warmup` steps, then cosine from lr down to lr * lr_min at `plan`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if plan <= cfg.warmup:
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup) / (plan - cfg.warmup))
    return cfg.lr * (cfg.lr_min + (1 - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * progress)))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RnnkitError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: CharLM, tokens: np.ndarray, batch_size: int, seq_len: int,
             device: torch.device, max_tokens: int | None = None) -> float:
    """Mean loss in nats per token over `tokens` (its first max_tokens), state carried."""
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    if len(tokens) < 2:
        raise RnnkitError(f"{len(tokens)} tokens are too few to evaluate on; give more text")
    seq_len = min(seq_len, len(tokens) - 1)
    streams = Streams(tokens, fit_batch_size(len(tokens), batch_size, seq_len), seq_len)
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    for i in range(streams.per_epoch):
        x, y, _ = streams.batch(i)
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        _, loss, state = model(x, y, state)
        total += float(loss) * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


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


def open_data(run_dir: Path, texts: list[str], tokenizer: str, resume: bool) -> PreparedData:
    """The run's prepared data: encoded now from `texts`, or reused when resuming."""
    data_dir = run_dir / "data"
    if resume and (data_dir / "data.json").exists():
        return PreparedData.open(data_dir)
    files = check_corpus_files(texts) if texts else default_corpus()
    return prepare(files, data_dir, tokenizer)


def check_resume(run_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 given: set[str]) -> tuple[ModelConfig, TrainConfig]:
    """The configs to continue with: the run's own, with the options given now where allowed."""
    saved, saved_model, _ = ckpt.read_run_config(run_dir)
    saved_train = from_dict(TrainConfig, saved.get("train"), "config.json train")
    for name in given:
        if name in asdict(saved_model) and getattr(model_cfg, name) != getattr(saved_model, name):
            raise RnnkitError(f"--{name} {getattr(model_cfg, name)} differs from the run's "
                              f"{getattr(saved_model, name)}; drop it to resume, or train a new "
                              "--out")
        if name in DATA_LAYOUT and getattr(train_cfg, name) != getattr(saved_train, name):
            raise RnnkitError(f"--{name.replace('_', '-')} {getattr(train_cfg, name)} differs "
                              f"from the run's {getattr(saved_train, name)}; resuming needs the "
                              "same data layout")
    changes = {k: getattr(train_cfg, k) for k in given if k in asdict(saved_train)}
    return saved_model, TrainConfig(**{**asdict(saved_train), **changes})


def save_last(run_dir: Path, model: CharLM, optimizer: torch.optim.Optimizer, state,
              progress: Progress) -> None:
    """The full trainer state, for --resume."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for i, entry in opt["state"].items():
        for k, v in entry.items():
            tensors[f"optim.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    if state is not None:
        h, c = state if isinstance(state, tuple) else (state, None)
        tensors["state.h"] = h
        if c is not None:
            tensors["state.c"] = c
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and next(model.parameters()).is_cuda:
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"progress": json.dumps(asdict(progress)),
            "param_groups": json.dumps(opt["param_groups"])}
    ckpt.write_safetensors(run_dir / ckpt.LAST, tensors, meta)


def load_last(run_dir: Path, model: CharLM, optimizer: torch.optim.Optimizer,
              device: torch.device):
    """Restore what save_last wrote; returns (progress, carried state)."""
    shapes = ckpt.model_shapes(model.config)
    tensors, meta = ckpt.read_safetensors(run_dir / ckpt.LAST, shapes, "model.")
    try:
        progress = from_dict(Progress, json.loads(meta["progress"]), "trainer progress")
        param_groups = json.loads(meta["param_groups"])
    except (KeyError, json.JSONDecodeError) as e:
        raise RnnkitError(f"{run_dir / ckpt.LAST} has no readable trainer state ({e}); "
                          "start a new run") from None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, i, key = name.split(".", 2)
            opt_state.setdefault(int(i), {})[key] = v
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": param_groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise RnnkitError(f"{run_dir / ckpt.LAST}: optimizer state does not fit the model "
                          f"({e}); start a new run") from None
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    state = None
    if "state.h" in tensors:
        h = tensors["state.h"].to(device)
        state = (h, tensors["state.c"].to(device)) if "state.c" in tensors else h
    return progress, state


def train(texts: list[str], out: str, model_cfg: ModelConfig | None = None,
          train_cfg: TrainConfig | None = None, resume: bool = False,
          given: set[str] = frozenset(), quiet: bool = False) -> dict:
    """Train (or resume) a run in directory `out` on text files `texts` (default corpus if empty).

    `given` names the options the user set explicitly; on resume they are checked against the
    run. Returns a summary: steps, best validation loss, seconds, run directory.
    """
    run_dir = Path(out)
    model_cfg, train_cfg = model_cfg or ModelConfig(), train_cfg or TrainConfig()
    if resume:
        model_cfg, train_cfg = check_resume(run_dir, model_cfg, train_cfg, given)
    elif (run_dir / "config.json").exists():
        raise RnnkitError(f"{out} already holds a training run; add --resume to continue it, "
                          "or choose another --out")
    device = pick_device(train_cfg.device)
    with ckpt.RunLock(run_dir):
        data = open_data(run_dir, texts, train_cfg.tokenizer, resume)
        train_tokens, val_tokens = data.split(train_cfg.val_fraction)
        B = fit_batch_size(len(train_tokens), train_cfg.batch_size, train_cfg.seq_len)
        if train_cfg.val_fraction > 0 and len(val_tokens) < 2:
            raise RnnkitError(f"the validation split has {len(val_tokens)} tokens; raise "
                              "--val-fraction, add text, or use --val-fraction 0")
        model_cfg = ModelConfig(**{**asdict(model_cfg), "vocab_size": len(data.vocab)})
        if not resume:
            ckpt.write_run_files(run_dir, model_cfg, asdict(train_cfg), data.vocab)
        return run(run_dir, data, train_tokens, val_tokens, B, model_cfg, train_cfg, device,
                   resume, quiet)


def run(run_dir: Path, data: PreparedData, train_tokens, val_tokens, B: int,
        model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device, resume: bool,
        quiet: bool) -> dict:
    """The training loop proper; see `train` for the arguments."""
    torch.manual_seed(cfg.seed)
    model = CharLM(model_cfg, data.vocab).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    progress, state = Progress(plan=cfg.max_steps), None
    if resume and (run_dir / ckpt.LAST).exists():
        progress, state = load_last(run_dir, model, optimizer, device)
        if cfg.max_steps:
            progress.plan = cfg.max_steps
    streams = Streams(train_tokens, B, cfg.seq_len, cfg.seed)
    V = model_cfg.vocab_size
    say = (lambda *a: None) if quiet else tqdm.write
    if not resume:
        say(f"rnnkit: {model_cfg.layers} x {model_cfg.hidden} {model_cfg.cell}, "
            f"{model.num_parameters():,} parameters, vocabulary {V} ({cfg.tokenizer}), "
            f"{len(train_tokens):,} training / {len(val_tokens):,} validation tokens, "
            f"batch {B} x {cfg.seq_len}, on {device.type}")
    start_step, t0 = progress.step, time.monotonic()
    deadline = t0 + cfg.max_time if cfg.max_time else math.inf
    end = cfg.max_steps or sys.maxsize
    bar = tqdm(total=cfg.max_steps or None, initial=progress.step, disable=quiet,
               dynamic_ncols=True, unit="step", file=sys.stderr)
    model.train()
    stopped = None
    timing = {"checkpoint": 0.0}  # seconds spent evaluating and writing, not training

    def checkpoint() -> None:
        """Evaluate, log, and write last (and best) checkpoints."""
        started = time.monotonic()
        train_loss = progress.loss_sum / max(1, progress.loss_count)
        val = evaluate(model, val_tokens, B, cfg.seq_len, device, cfg.eval_tokens) \
            if len(val_tokens) >= 2 else train_loss
        if not math.isfinite(val):
            raise RnnkitError(f"validation loss became {val} at step {progress.step}; stopped, "
                              "the last good checkpoint is kept; lower --lr and --resume")
        progress.history.append({"step": progress.step, "chars": progress.chars,
                                 "train_loss": train_loss, "val_loss": val})
        progress.loss_sum, progress.loss_count = 0.0, 0
        improved = val < progress.best_val
        if improved:
            progress.best_val = val
            ckpt.write_safetensors(run_dir / ckpt.BEST, model.state_dict(),
                                   {"step": str(progress.step), "val_loss": repr(val)})
        save_last(run_dir, model, optimizer, state, progress)
        say(f"step {progress.step}: train {train_loss:.4f} nats/char "
            f"({train_loss / math.log(2):.3f} bpc), val {val:.4f} nats/char "
            f"({val / math.log(2):.3f} bpc){' *best' if improved else ''}")
        timing["checkpoint"] += time.monotonic() - started

    try:
        with StopRequest() as stop:
            while progress.step < end:
                if time.monotonic() >= deadline:
                    stopped = "time"
                    break
                x, y, fresh = streams.batch(progress.step)
                if fresh:
                    state = None  # a new epoch starts the streams at new offsets
                x = torch.from_numpy(x).to(device, non_blocking=True)
                y = torch.from_numpy(y).to(device, non_blocking=True)
                lr = lr_at(progress.step, progress.plan, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                _, loss, new_state = model(x, y, state)
                loss_value = loss.detach().item()
                if not math.isfinite(loss_value) or loss_value > 3 * math.log(V) + 5:
                    raise RnnkitError(f"training loss exploded to {loss_value} at step "
                                      f"{progress.step}; stopped, the last good checkpoint is kept; "
                                      "lower --lr or --grad-clip and --resume")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    if not torch.isfinite(norm):
                        raise RnnkitError(f"gradients became infinite at step {progress.step}; "
                                          "stopped, the last good checkpoint is kept; lower --lr "
                                          "and --resume")
                optimizer.step()
                state = detach_state(new_state)
                progress.step += 1
                progress.chars += x.numel()
                progress.loss_sum += loss_value
                progress.loss_count += 1
                elapsed = time.monotonic() - t0
                speed = (progress.step - start_step) * x.numel() / max(elapsed, 1e-9)
                postfix = {"loss": f"{loss_value:.3f}", "chars/s": f"{speed:,.0f}", "lr": f"{lr:.1e}"}
                if cfg.max_time:
                    postfix["left"] = f"{max(0.0, deadline - time.monotonic()):.0f}s"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
                if progress.step % cfg.eval_every == 0:
                    checkpoint()
                    if not cfg.max_steps:  # time budget only: re-estimate the plan from the speed
                        rate = (progress.step - start_step) / (time.monotonic() - t0)
                        progress.plan = progress.step + int(rate * (deadline - time.monotonic()))
                if stop.signal:
                    stopped = stop.signal
                    break
    except BaseException:
        bar.leave = False  # an error message follows: clear the bar instead of leaving half
        bar.close()
        raise
    bar.close()
    if stopped in ("SIGINT", "SIGTERM"):
        # Save exactly where the loop stands, without an extra evaluation, so that resuming
        # continues the same run (same counters, same loss log).
        save_last(run_dir, model, optimizer, state, progress)
        say(f"rnnkit: {stopped} received; stopped at step {progress.step} with a checkpoint "
            f"saved; continue with the same command plus --resume")
    elif not progress.history or progress.history[-1]["step"] != progress.step:
        checkpoint()
    seconds = time.monotonic() - t0
    train_seconds = seconds - timing["checkpoint"]
    chars = (progress.step - start_step) * B * cfg.seq_len
    return {"run_dir": str(run_dir), "steps": progress.step, "best_val": progress.best_val,
            "seconds": seconds, "stopped": stopped, "history": progress.history,
            "chars_per_second": chars / train_seconds if train_seconds > 0 else 0.0}
