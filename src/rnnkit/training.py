"""Training a character language model: one loop, written out.

    batch -> forward -> zero_grad -> backward -> clip -> step -> log

with the hidden state carried from batch to batch (truncated backpropagation through time), an
evaluation and a checkpoint every `eval_every` steps, and a learning rate that is a pure function
of the step (linear warm-up, then cosine decay to `lr * lr_min` at the end of the plan).

The plan is `max_steps` when given. With only a time budget (`max_time`) the plan is estimated
from the measured speed at each evaluation, so the decay still ends when the time does. The budget
is the whole call's: training stops early enough for the last evaluation, its checkpoint and the
final sample to fit, their cost measured before training and again at every evaluation.

Logging: a tqdm bar on terminals, a progress line every LOG_SECONDS otherwise, a line per
evaluation, and DIR/metrics.csv with a row per step, written with each checkpoint (a resumed or
rolled-back run truncates the rows of the steps it does again).

Exact resume: a checkpoint holds the weights, the optimizer's moments, the carried state and the
counters; batch i is a pure function of i (see `text.Streams`), and so is step i's dropout seed.
On CPU a run that is stopped and resumed ends with the same weights as one that was not.

Under torchrun each process reads its own share of the B streams, DistributedDataParallel averages
the gradients, and rank 0 alone evaluates and writes (see `distributed`). `accumulate` splits each
rank's streams into that many micro-batches, backpropagated one after the other, to save memory:
the update equals the one of the whole batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from . import distributed, finetune
from .config import from_dict
from .errors import RnnkitError, require_positive, require_seed
from .lm import CharLM, ModelConfig
from .plots import plot_losses
from .recurrent import detach_state
from .runfiles import append_metrics, remove_temp_files, truncate_metrics
from .sample import RnnkitWarning
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
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MAX_ROLLBACKS = 3
LOG_SECONDS = 10.0  # without a terminal (a log file, CI), a progress line this often



class Diverged(RnnkitError):
    """The loss or the gradients became NaN or exploded."""


@dataclass
class TrainConfig:
    seq_len: int = 128  # T: time steps per batch, the horizon of backpropagation
    batch_size: int = 32  # B: contiguous streams read side by side
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
    precision: str = "fp32"  # "fp32", or autocast to "bf16" / "fp16" (fp16 with loss scaling)
    accumulate: int = 1  # micro-batches per step: the streams split this many ways
    sample_length: int = 200  # characters written to samples.txt at each evaluation; 0: none
    on_nan: str = "stop"  # a NaN or exploding loss: "stop", or "rollback" to the last checkpoint
    #                       with the learning rate halved (at most MAX_ROLLBACKS times)
    init_from: str = ""  # a run directory (or "builtin") whose weights this run starts from,
    #                      its vocabulary grown to the new text (see finetune); "": from scratch

    def __post_init__(self):
        require_positive(seq_len=self.seq_len, batch_size=self.batch_size, lr=self.lr,
                         eval_every=self.eval_every, eval_tokens=self.eval_tokens,
                         accumulate=self.accumulate)
        for name in ("warmup", "max_steps", "max_time", "grad_clip", "weight_decay",
                     "sample_length"):
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
        if self.precision not in PRECISIONS:
            raise RnnkitError(f"unknown precision {self.precision!r}; choose fp32, bf16 or fp16")
        if self.on_nan not in ("stop", "rollback"):
            raise RnnkitError(f"unknown --on-nan {self.on_nan!r}; choose stop or rollback")
        require_seed(self.seed)
        if self.batch_size % self.accumulate:
            raise RnnkitError(f"--accumulate {self.accumulate} must divide --batch-size "
                              f"{self.batch_size}")


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
    lr_scale: float = 1.0  # halved by each rollback after a divergence
    rollbacks: int = 0

    def __post_init__(self):
        # Read back from a checkpoint: the counters must make sense before the loop trusts them.
        counts = {"step": self.step, "plan": self.plan, "loss_count": self.loss_count,
                  "chars": self.chars, "rollbacks": self.rollbacks}
        for name, value in counts.items():
            if value < 0:
                raise RnnkitError(f"progress.{name} is {value}, below 0")
        if not math.isfinite(self.loss_sum) or not (math.isfinite(self.lr_scale)
                                                    and self.lr_scale > 0):
            raise RnnkitError(f"progress.loss_sum {self.loss_sum} and lr_scale "
                              f"{self.lr_scale} must be finite (lr_scale above 0)")
        keys = {"step", "chars", "train_loss", "val_loss"}
        for entry in self.history:
            if not (isinstance(entry, dict) and set(entry) == keys and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool)
                    for v in entry.values())):
                raise RnnkitError(f"progress.history entry {entry!r} is not "
                                  f"{{{', '.join(sorted(keys))}: numbers}}")


def step_seed(seed: int, rank: int, step: int) -> int:
    """The dropout seed of one step on one rank: a pure function, so resuming repeats it."""
    return ((seed * 1_000_003 + rank) * 1_000_003 + step) % (1 << 63)


def lr_at(step: int, plan: int, cfg) -> float:
    """Linear warm-up over `warmup` steps, then cosine from lr down to lr * lr_min at `plan`.

    `cfg` is any config with `lr`, `lr_min` and `warmup` (TrainConfig, fit.FitConfig).
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if plan <= cfg.warmup:
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup) / (plan - cfg.warmup))
    return cfg.lr * (cfg.lr_min + (1 - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * progress)))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
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


def open_data(run_dir: Path, texts: list[str], tokenizer: str) -> PreparedData:
    """Prepared data for a new run: a directory made by `rnnkit prepare`, used in place, or the
    text files (default corpus if none) encoded now into DIR/data."""
    if len(texts) == 1 and Path(texts[0]).is_dir() and (Path(texts[0]) / "data.json").exists():
        return PreparedData.open(texts[0])
    files = check_corpus_files(texts) if texts else default_corpus()
    return prepare(files, run_dir / "data", tokenizer)


def check_resume(run_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 given: set[str]) -> tuple[dict, ModelConfig, TrainConfig]:
    """The configs to continue with: the run's own, with the options given now where allowed."""
    saved, saved_model, _ = ckpt.read_run_config(run_dir)
    saved_train = from_dict(TrainConfig, saved.get("train"), "config.json train")
    for name in sorted(given):
        if name in asdict(saved_model) and getattr(model_cfg, name) != getattr(saved_model, name):
            raise RnnkitError(f"--{name} {getattr(model_cfg, name)} differs from the run's "
                              f"{getattr(saved_model, name)}; drop it to resume, or train a new "
                              "--out")
        if name in DATA_LAYOUT and getattr(train_cfg, name) != getattr(saved_train, name):
            raise RnnkitError(f"--{name.replace('_', '-')} {getattr(train_cfg, name)} differs "
                              f"from the run's {getattr(saved_train, name)}; resuming needs the "
                              "same data layout")
    changes = {k: getattr(train_cfg, k) for k in given if k in asdict(saved_train)}
    return saved, saved_model, TrainConfig(**{**asdict(saved_train), **changes})


def check_resume_data(run_dir: Path, data: PreparedData, texts: list[str]) -> None:
    """--resume continues a run on the data it started with: text files given with it must be
    exactly that data (the same command plus --resume), never new text, silently ignored."""
    if not texts:
        return
    given = [Path(t) for t in texts]
    if len(given) == 1 and given[0].is_dir() and given[0].resolve() == data.path.resolve():
        return
    then = [(s.get("path"), s.get("bytes")) if isinstance(s, dict) else s for s in data.sources]
    now = [(str(f.resolve()), f.stat().st_size if f.is_file() else None) for f in given]
    if now == then:
        return
    names = ", ".join(map(str, texts[:3])) + (", ..." if len(texts) > 3 else "")
    changed = [str(f) for f, (path, size) in zip(given, now, strict=False)
               if any(path == p and size != b for p, b in then)]
    why = f"{changed[0]} has changed since the run encoded it" if changed \
        else f"{names} {'is' if len(texts) == 1 else 'are'} not the text it was started on"
    raise RnnkitError(f"--resume continues {run_dir} on its own data, and {why}; drop the "
                      "text files to resume, or to train on new text, start a new --out with "
                      f"--init-from {run_dir} to begin from this run's weights")


def train(texts: list[str], out: str, model_cfg: ModelConfig | None = None,
          train_cfg: TrainConfig | None = None, resume: bool = False,
          given: set[str] = frozenset(), quiet: bool = False,
          init_from: str | None = None) -> dict:
    """Train (or resume) a run in directory `out` on text files `texts` (default corpus if empty),
    or on one prepared data directory; with `init_from` (a run directory or "builtin"), starting
    from that run's weights (see `finetune`).

    `given` names the options the user set explicitly; on resume they are checked against the
    run. `max_time` bounds the whole call, the final evaluation included. Returns a summary:
    steps (of the run, and of this call), best validation loss, seconds, speed, history.
    """
    started = time.monotonic()  # the time budget counts from here
    run_dir = Path(out)
    model_cfg, train_cfg = model_cfg or ModelConfig(), train_cfg or TrainConfig()
    if init_from is not None:
        train_cfg, given = replace(train_cfg, init_from=str(init_from)), {*given, "init_from"}
    if resume and not (run_dir / "config.json").exists():
        resume = False  # nothing to resume yet (e.g. stopped before its first write): start
    world, device_name = distributed.setup(train_cfg.device)
    try:
        device = pick_device(device_name)
        if world.main:
            ckpt.check_out_dir(run_dir, resume)  # before the lock writes train.lock there
        lock = ckpt.RunLock(run_dir) if world.main else contextlib.nullcontext()
        with lock:
            if resume:
                saved, model_cfg, train_cfg = check_resume(run_dir, model_cfg, train_cfg, given)
                base = finetune.base_for_resume(run_dir, saved, train_cfg, given)
                data = PreparedData.open(ckpt.data_dir(run_dir, saved))
                check_resume_data(run_dir, data, texts)
                if world.main:
                    remove_partial_files(run_dir)
            elif world.main:
                ckpt.check_out_dir(run_dir, resume)  # again, now that no one else can write
                remove_partial_files(run_dir)
                base = None
                if train_cfg.init_from:
                    data, model_cfg, train_cfg, base = finetune.start(
                        run_dir, texts, model_cfg, train_cfg, given,
                        (lambda *a: None) if quiet else tqdm.write)
                else:
                    data = open_data(run_dir, texts, train_cfg.tokenizer)
                warn_small_vocabulary(data.vocab)
                model_cfg = ModelConfig(**{**asdict(model_cfg), "vocab_size": len(data.vocab)})
                ckpt.write_run_files(run_dir, model_cfg, asdict(train_cfg), data.vocab, data.path)
            distributed.barrier(world)  # the other ranks wait for rank 0's files
            if not world.main and not resume:
                saved, model_cfg, _ = ckpt.read_run_config(run_dir)
                data = PreparedData.open(ckpt.data_dir(run_dir, saved))
            if not world.main:
                base = None  # DistributedDataParallel copies rank 0's weights to every rank
            return run(run_dir, data, model_cfg, train_cfg, device, world, resume, quiet, started,
                       base)
    finally:
        distributed.teardown(world)


def warn_small_vocabulary(vocab) -> None:
    """A text of one distinct symbol trains to loss 0 and samples it forever: say so."""
    if len(vocab) < 2:
        shown = ", ".join(repr(vocab.symbol(i)) for i in range(len(vocab)))
        warnings.warn(f"the text has {len(vocab)} distinct symbol ({shown}); the model can only "
                      "learn to repeat it; train on text with at least 2 distinct characters",
                      RnnkitWarning, stacklevel=3)


def run(run_dir: Path, data: PreparedData, model_cfg: ModelConfig, cfg: TrainConfig,
        device: torch.device, world: distributed.World, resume: bool, quiet: bool,
        started: float, base: CharLM | None = None) -> dict:
    """The training loop proper; see `train`. `started` is when the call began (time budget);
    `base` is the model a fine-tuned run starts from (see `finetune`)."""
    train_tokens, val_tokens = data.split(cfg.val_fraction)
    B = fit_batch_size(len(train_tokens), cfg.batch_size, cfg.seq_len)
    if cfg.val_fraction > 0 and len(val_tokens) < 2:
        raise RnnkitError(f"the validation split has {len(val_tokens)} tokens; raise "
                          "--val-fraction, add text, or use --val-fraction 0")
    my_streams = distributed.streams_of(world, B)
    if len(my_streams) % cfg.accumulate:
        raise RnnkitError(f"{len(my_streams)} streams per process do not split into "
                          f"--accumulate {cfg.accumulate} micro-batches; change either")
    micro = len(my_streams) // cfg.accumulate  # streams per micro-batch
    check_memory(model_cfg, micro, cfg.seq_len)

    torch.manual_seed(cfg.seed)
    model = CharLM(model_cfg, data.vocab).to(device)
    if base is not None:
        finetune.transplant(model, base)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    state_shape = (model_cfg.layers, B, model_cfg.hidden)  # (L, B, H) of the carried state
    progress, state = Progress(plan=cfg.max_steps), None
    if resume and (run_dir / ckpt.LAST).exists():
        progress, state = load_checkpoint(run_dir, model, optimizer, state_shape, my_streams,
                                          device)
        if cfg.max_steps:
            progress.plan = cfg.max_steps
    if world.main:
        # Rows past the checkpoint are of steps this run does again.
        truncate_metrics(run_dir / ckpt.METRICS, progress.step)
    net = model
    if world.joined:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast_dtype = PRECISIONS[cfg.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    streams = Streams(train_tokens, B, cfg.seq_len, cfg.seed, streams=my_streams)
    V = model_cfg.vocab_size
    say = tqdm.write if world.main and not quiet else (lambda *a: None)
    end = cfg.max_steps or sys.maxsize
    of_plan = f" of {cfg.max_steps:,}" if cfg.max_steps else ""
    if resume:
        if progress.step >= end and progress.history \
                and progress.history[-1]["step"] == progress.step:
            say(f"rnnkit: {run_dir} has finished its {progress.step:,} steps; nothing left to "
                "do (raise --max-steps to train it further)")
            return summary_of(run_dir, progress, progress.step, B, world, None,
                              time.monotonic() - started, 0.0, 0.0)
        say(f"rnnkit: resuming {run_dir} at step {progress.step:,}{of_plan}")
    else:
        split = f" ({world.size} processes x {B // world.size} streams)" if world.size > 1 else ""
        say(f"rnnkit: {model_cfg.layers} x {model_cfg.hidden} {model_cfg.cell}, "
            f"{model.num_parameters():,} parameters, vocabulary {V} ({cfg.tokenizer}), "
            f"{len(train_tokens):,} training / {len(val_tokens):,} validation tokens, "
            f"batch {B} x {cfg.seq_len}{split}"
            f"{f', {cfg.accumulate} micro-batches' if cfg.accumulate > 1 else ''}, "
            f"on {device.type}{'' if cfg.precision == 'fp32' else ' ' + cfg.precision}")
    start_step, t0 = progress.step, time.monotonic()
    deadline = started + cfg.max_time if cfg.max_time else math.inf
    # The bar is for terminals (None: off when stderr is not one); a log gets a progress line
    # every LOG_SECONDS instead, besides the evaluation lines.
    bar = tqdm(total=cfg.max_steps or None, initial=progress.step, dynamic_ncols=True,
               disable=True if quiet or not world.main else None, unit="step", file=sys.stderr)
    log_lines = world.main and not quiet and bar.disable
    last_line = time.monotonic()
    model.train()
    stopped = None
    eval_seconds = 0.0  # evaluating, writing checkpoints and samples: not training
    # The time budget holds the last evaluation, its checkpoint and the final sample: their cost
    # is measured on a slice before training and in full at each evaluation, and training stops
    # when one more step and that reserve would not fit before the deadline.
    reserve, step_seconds = 0.0, 0.0
    if cfg.max_time and world.main:
        reserve = measure_reserve(model, val_tokens, B, cfg, device)
    rows: list[dict] = []  # metrics.csv rows since the last checkpoint, written with it
    try:
        with StopRequest() as stop:
            while True:
                try:
                    if progress.step < end and stopped is None:
                        # ---- one step: batch -> forward -> backward -> clip -> step
                        step_start = time.monotonic()
                        x, y, fresh = streams.batch(progress.step)
                        if fresh:
                            state = None  # a new epoch starts the streams at new offsets
                        x, y = to_device(x, device), to_device(y, device)
                        lr = lr_at(progress.step, progress.plan, cfg) * progress.lr_scale
                        for group in optimizer.param_groups:
                            group["lr"] = lr
                        torch.manual_seed(step_seed(cfg.seed, world.rank, progress.step))
                        optimizer.zero_grad(set_to_none=True)
                        loss_value, new_states = 0.0, []
                        for k in range(cfg.accumulate):
                            part = slice(k * micro, (k + 1) * micro)
                            sync = k == cfg.accumulate - 1 or not world.joined
                            with (contextlib.nullcontext() if sync else net.no_sync()), \
                                    torch.autocast(device.type, autocast_dtype,
                                                   enabled=autocast_dtype is not None):
                                _, loss, s = net(x[part], y[part], rows_of(state, part))
                            scaler.scale(loss / cfg.accumulate).backward()
                            loss_value += loss.detach().item() / cfg.accumulate
                            new_states.append(s)
                        state = detach_state(cat_rows(new_states))
                        # Room for one more step and the last evaluation, after this step's
                        # own evaluation when one is due.
                        evals = 2 if (progress.step + 1) % cfg.eval_every == 0 else 1
                        time_up = time.monotonic() + step_seconds + evals * reserve >= deadline
                        loss_value, flag = distributed.mean(
                            world, [loss_value, float(stop.signal is not None or time_up)])
                        if not math.isfinite(loss_value) or loss_value > 3 * math.log(V) + 5:
                            raise Diverged(f"training loss exploded to {loss_value:.4g} at step "
                                           f"{progress.step}")
                        if cfg.grad_clip:
                            scaler.unscale_(optimizer)
                            norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                                  cfg.grad_clip)
                            if not torch.isfinite(norm) and cfg.precision != "fp16":
                                raise Diverged(f"gradients became infinite at step "
                                               f"{progress.step}")
                        scaler.step(optimizer)
                        scaler.update()
                        progress.step += 1
                        progress.chars += B * cfg.seq_len
                        progress.loss_sum += loss_value
                        progress.loss_count += 1
                        rows.append({"step": progress.step, "chars": progress.chars, "lr": lr,
                                     "train_loss": loss_value, "val_loss": ""})
                        # ---- log: the bar on a terminal, a line at intervals in a log
                        now = time.monotonic()
                        step_seconds = now - step_start
                        speed = (progress.step - start_step) * B * cfg.seq_len \
                            / max(now - t0 - eval_seconds, 1e-9)
                        left = deadline - now if cfg.max_time else (end - progress.step) * (
                            now - t0) / (progress.step - start_step)
                        postfix = {"loss": f"{loss_value:.3f}", "chars/s": f"{speed:,.0f}",
                                   "lr": f"{lr:.1e}"}
                        if cfg.max_time:
                            postfix["left"] = f"{max(0.0, left):.0f}s"
                        bar.set_postfix(postfix, refresh=False)
                        bar.update(1)
                        if log_lines and now - last_line >= LOG_SECONDS:
                            last_line = now
                            say(f"step {progress.step:,}{of_plan}: loss {loss_value:.4f}, "
                                f"{speed:,.0f} chars/s, {format_seconds(max(0.0, left))} left")
                        if flag > 0:
                            stopped = stop.signal or "time"
                        due = progress.step % cfg.eval_every == 0
                    elif stopped in ("SIGINT", "SIGTERM") or (
                            progress.history and progress.history[-1]["step"] == progress.step):
                        break
                    else:
                        due = True  # at the end without an evaluation there: the last one
                    # ---- evaluate and checkpoint at intervals and at the end (a signal saves
                    # below, without an extra evaluation)
                    final = progress.step >= end or stopped == "time"
                    if due or final:
                        before = time.monotonic()
                        sample_seconds = checkpoint(run_dir, model, optimizer, progress, rows,
                                                    global_state(world, state), val_tokens, B,
                                                    cfg, device, world, say)
                        rows = []
                        cost = time.monotonic() - before
                        eval_seconds += cost
                        reserve = cost + sample_seconds
                        if not cfg.max_steps:  # time budget only: re-estimate the plan
                            # (steps per second with evaluations: they will recur)
                            now = time.monotonic()
                            rate = (progress.step - start_step) / max(now - t0, 1e-9)
                            plan = progress.step + int(rate * (deadline - reserve - now))
                            progress.plan = int(distributed.broadcast(world, plan))
                    if final or stopped is not None:
                        break
                except Diverged as e:
                    progress, state = roll_back(e, run_dir, model, optimizer, progress, cfg,
                                                state_shape, my_streams, device, say)
                    rows = []
    except BaseException:
        bar.leave = False  # an error message follows: clear the bar instead of leaving half
        bar.close()
        raise
    bar.close()
    if stopped in ("SIGINT", "SIGTERM"):
        # Save exactly where the loop stands, without an extra evaluation, so that resuming
        # continues the same run (same counters, same loss log).
        full_state = global_state(world, state)
        if world.main:
            append_metrics(run_dir / ckpt.METRICS, rows)
            ckpt.save_trainer(run_dir, model, optimizer, full_state, asdict(progress))
        say(f"rnnkit: {stopped} received; stopped at step {progress.step} with a checkpoint "
            f"saved; continue with the same command plus --resume")
    seconds = time.monotonic() - started
    train_seconds = time.monotonic() - t0 - eval_seconds
    return summary_of(run_dir, progress, start_step, B, world, stopped, seconds, train_seconds,
                      eval_seconds, chars=(progress.step - start_step) * B * cfg.seq_len)


def summary_of(run_dir: Path, progress: Progress, start_step: int, B: int,
               world: distributed.World, stopped: str | None, seconds: float,
               train_seconds: float, eval_seconds: float, chars: int = 0) -> dict:
    """What `train` returns: the run's counters and how this call spent its time."""
    return {"run_dir": str(run_dir), "steps": progress.step,
            "steps_now": progress.step - start_step, "best_val": progress.best_val,
            "seconds": seconds, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
            "stopped": stopped, "history": progress.history, "batch_size": B,
            "processes": world.size, "rank": world.rank,
            "chars_per_second": chars / train_seconds if train_seconds > 0 else 0.0}


def measure_reserve(model: CharLM, val_tokens: np.ndarray, B: int, cfg: TrainConfig,
                    device: torch.device) -> float:
    """Seconds the last evaluation, its checkpoint and the final sample will take, measured on a
    slice of each before training (a few evaluation batches, a few sampled characters), scaled
    up, with a second for writing the files. Evaluations measure the real cost later."""
    n_eval = min(len(val_tokens), cfg.eval_tokens)
    part = min(n_eval, 8 * B * cfg.seq_len)
    started = time.monotonic()
    if part >= 2:
        evaluate(model, val_tokens, B, cfg.seq_len, device, part)
    eval_seconds = (time.monotonic() - started) * n_eval / max(part, 1)
    started = time.monotonic()
    chars = min(20, cfg.sample_length)
    if chars:
        model.generate(length=chars, seed=0)
    sample_seconds = (time.monotonic() - started) * cfg.sample_length / max(chars, 1)
    return eval_seconds + 2 * sample_seconds + 1.0


def format_seconds(seconds: float) -> str:
    """'42s', '3m05s', '2h07m': time left in a progress line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def load_checkpoint(run_dir: Path, model: CharLM, optimizer: torch.optim.Optimizer,
                    state_shape: tuple, streams: range, device: torch.device):
    """The progress and this rank's carried state of last.safetensors, loaded into the model
    and the optimizer, everything in it checked first."""
    saved, state = ckpt.load_trainer(run_dir, model, optimizer, state_shape)
    try:
        progress = from_dict(Progress, saved, "progress")
    except RnnkitError as e:
        raise RnnkitError(f"{run_dir / ckpt.LAST}: {e}; this checkpoint cannot be resumed, so "
                          "train again with a new --out") from None
    return progress, rows_of_saved(state, streams, device)


def roll_back(error: Diverged, run_dir: Path, model: CharLM, optimizer: torch.optim.Optimizer,
              now: Progress, cfg: TrainConfig, state_shape: tuple, streams: range,
              device: torch.device, say) -> tuple[Progress, object]:
    """Back to the last checkpoint with half the learning rate, or stop (--on-nan)."""
    can = cfg.on_nan == "rollback" and now.rollbacks < MAX_ROLLBACKS \
        and (run_dir / ckpt.LAST).exists()
    if not can:
        why = f" after {now.rollbacks} rollbacks" if cfg.on_nan == "rollback" else ""
        raise RnnkitError(f"{error}; stopped{why}, the last good checkpoint is kept; lower "
                          "--lr or --grad-clip and --resume, or train with --on-nan rollback")
    back, state = load_checkpoint(run_dir, model, optimizer, state_shape, streams, device)
    back.lr_scale, back.rollbacks = now.lr_scale / 2, now.rollbacks + 1
    say(f"rnnkit: {error}; rolled back to step {back.step} (the last checkpoint) with the "
        f"learning rate scaled by {back.lr_scale:g} (--on-nan rollback)")
    return back, state


def global_state(world: distributed.World, state):
    """The carried state of all streams, gathered from every rank (a collective call)."""
    if state is None or not world.joined:
        return state
    if isinstance(state, tuple):
        return tuple(distributed.gather_rows(world, s, 1) for s in state)
    return distributed.gather_rows(world, state, 1)


def checkpoint(run_dir: Path, model: CharLM, optimizer: torch.optim.Optimizer,
               progress: Progress, rows: list[dict], full_state, val_tokens: np.ndarray,
               B: int, cfg: TrainConfig, device: torch.device, world: distributed.World,
               say) -> float:
    """Evaluate, log, and write last (and best) checkpoints: rank 0's work. A NaN validation
    loss raises Diverged before anything is written. Returns the seconds spent sampling."""
    train_loss = progress.loss_sum / max(1, progress.loss_count)
    val = math.nan
    if world.main:
        val = evaluate(model, val_tokens, B, cfg.seq_len, device, cfg.eval_tokens) \
            if len(val_tokens) >= 2 else train_loss
    val = distributed.broadcast(world, val)
    if not math.isfinite(val):
        raise Diverged(f"validation loss became {val} at step {progress.step}")
    progress.history.append({"step": progress.step, "chars": progress.chars,
                             "train_loss": train_loss, "val_loss": val})
    progress.loss_sum, progress.loss_count = 0.0, 0
    improved = val < progress.best_val
    progress.best_val = min(val, progress.best_val)
    sample_seconds = 0.0
    if world.main:
        if rows and rows[-1]["step"] == progress.step:
            rows[-1]["val_loss"] = val
        else:  # resumed exactly here without a step: the evaluation gets a row of its own
            rows.append({"step": progress.step, "chars": progress.chars, "lr": "",
                         "train_loss": "", "val_loss": val})
        if improved:
            ckpt.write_safetensors(run_dir / ckpt.BEST, model.state_dict(),
                                   {"step": str(progress.step), "val_loss": repr(val)})
        # The rows before the checkpoint that covers them: a crash between the two leaves rows
        # past the checkpoint, which resuming truncates (see truncate_metrics).
        append_metrics(run_dir / ckpt.METRICS, rows)
        ckpt.save_trainer(run_dir, model, optimizer, full_state, asdict(progress))
        sample_seconds = write_progress_files(run_dir, model, progress, cfg)
        say(f"step {progress.step}: train {train_loss:.4f} nats/char "
            f"({train_loss / math.log(2):.3f} bpc), val {val:.4f} nats/char "
            f"({val / math.log(2):.3f} bpc){' *best' if improved else ''}")
    distributed.barrier(world)
    return sample_seconds


def remove_partial_files(run_dir: Path) -> None:
    """rnnkit's own temporary files that a killed process left behind (never a user's: see
    runfiles.is_temp_name); they are never read as checkpoints. Call it under the run lock."""
    for folder in (run_dir, run_dir / "data"):
        remove_temp_files(folder)


def check_memory(model_cfg: ModelConfig, B: int, T: int) -> None:
    """Refuse a model or batch that cannot fit in this machine's memory, before allocating it."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    params = sum(math.prod(shape) for shape in ckpt.model_shapes(model_cfg).values())
    weights = 16 * params  # fp32 weights, gradients and AdamW's two moments
    E, H, L, V = model_cfg.embed_size, model_cfg.hidden, model_cfg.layers, model_cfg.vocab_size
    activations = 4 * B * T * (E + 8 * L * H + 3 * V)  # kept for backpropagation, roughly
    if weights + activations > ram:
        raise RnnkitError(f"this model and batch need about {(weights + activations) / 2**30:,.1f} "
                          f"GiB ({params:,} parameters, batch {B} x {T}) but the machine has "
                          f"{ram / 2**30:,.1f} GiB; lower --hidden, --layers, --batch-size or "
                          "--seq-len")


def to_device(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """A batch of ids onto the device; through pinned memory, without waiting, to a GPU."""
    t = torch.from_numpy(batch)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def rows_of_saved(state, streams: range, device: torch.device):
    """This rank's rows of a carried state loaded from a checkpoint, on its device."""
    if state is None:
        return None
    rows = slice(streams.start, streams.stop)
    if isinstance(state, tuple):
        return tuple(s[:, rows].to(device) for s in state)
    return state[:, rows].to(device)


def rows_of(state, rows: slice):
    """Rows (streams) of a carried state, h (L, B, H) or (h, c); None stays None."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)
    return state[:, rows]


def cat_rows(states: list):
    """The inverse of rows_of over consecutive micro-batches."""
    if len(states) == 1:
        return states[0]
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts, 1) for parts in zip(*states, strict=True))
    return torch.cat(states, 1)


def write_progress_files(run_dir: Path, model: CharLM, progress: Progress,
                         cfg: TrainConfig) -> float:
    """loss.png and a sample appended to samples.txt, so a user can watch the model learn.

    Returns the seconds the sample took (what the final sample will cost, for the time budget).
    """
    sample_seconds = 0.0
    try:
        plot_losses(progress.history, run_dir / "loss.png")
        if cfg.sample_length:
            started = time.monotonic()
            text = model.generate(length=cfg.sample_length, temperature=0.8, seed=progress.step)
            sample_seconds = time.monotonic() - started
            val = progress.history[-1]["val_loss"]
            with open(run_dir / "samples.txt", "a", encoding="utf-8") as f:
                f.write(f"=== step {progress.step}, {progress.chars:,} characters seen, val_loss "
                        f"{val:.4f} ===\n{text}\n\n")
    except OSError as e:
        raise RnnkitError(f"could not write to {run_dir} ({e.strerror or e}); the checkpoint "
                          "is saved; free disk space and --resume") from None
    return sample_seconds
