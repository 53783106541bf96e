"""Training a character language model: the corpus as B streams read side by side.

    rnnkit.train(["input.txt"], "runs/x", ModelConfig(hidden=256), TrainConfig(max_steps=2000))

The loop itself is the engine's (`rnnkit.engine`), the same for every model: warm-up and cosine
schedule, clipping, accumulation, autocast, DDP, checkpoints, exact resume, --on-nan. What this
module adds is what is particular to text: the run directory's data (`open_data`, the checks of
--resume), and `Streams`, the feeder. Batch i holds, for each of the B streams, the next T
characters of that stream (`text.Streams`, a pure function of i), and the recurrent state after
batch i is carried into batch i + 1 (truncated backpropagation through time); under torchrun
each process reads its own share of the B streams, and `accumulate` splits that share into
micro-batches, backpropagated one after the other: the update equals the one of the whole batch.

The plan is `max_steps`. With a time budget (`max_time`) it is fitted to the measured speed (at
most `max_steps`, when given), so the decay still ends when the time does. An evaluation and a checkpoint
come every `eval_every` steps, with a sample appended to DIR/samples.txt.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from . import distributed, engine, finetune
from .cells import evaluating
from .config import from_dict
from .configs import TrainConfig
from .devices import pick_device, to_device
from .errors import RnnkitError
from .lm import CharLM, ModelConfig
from .recurrent import detach_state
from .runfiles import remove_temp_files
from .sample import RnnkitWarning
from .schedule import lr_at
from .text import (
    PreparedData,
    Streams,
    check_corpus_files,
    default_corpus,
    fit_batch_size,
    prepare,
    source,
)

# The public names, lr_at and pick_device among them as before the engine took them over.
__all__ = ["StreamFeeder", "TrainConfig", "text_loss", "lr_at", "pick_device", "train"]


@torch.no_grad()
def text_loss(model: CharLM, tokens: np.ndarray, batch_size: int, seq_len: int,
             device: torch.device, max_tokens: int | None = None) -> float:
    """Mean loss in nats per token over `tokens` (its first max_tokens), state carried."""
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    if len(tokens) < 2:
        raise RnnkitError(f"{len(tokens)} tokens are too few to evaluate on; give more text")
    seq_len = min(seq_len, len(tokens) - 1)
    streams = Streams(tokens, fit_batch_size(len(tokens), batch_size, seq_len), seq_len)
    total, count, state = 0.0, 0, None
    with evaluating(model):
        for i in range(streams.per_epoch):
            x, y, _ = streams.batch(i)
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            _, loss, state = model(x, y, state)
            total += float(loss) * y.numel()
            count += y.numel()
    return total / count


def loss_words(loss: float, unit: str = "chars") -> str:
    """A language model's loss as the logs give it: '1.4512 nats/char (2.094 bpc)', or for a
    byte model (`unit` "bytes") nats and bits per byte."""
    if unit == "bytes":
        return f"{loss:.4f} nats/byte ({loss / math.log(2):.3f} bits/byte)"
    return f"{loss:.4f} nats/char ({loss / math.log(2):.3f} bpc)"


def open_data(run_dir: Path, texts: list[str], tokenizer: str) -> PreparedData:
    """Prepared data for a new run: a directory made by `rnnkit prepare`, used in place, or the
    text files (default corpus if none) encoded now into DIR/data."""
    if len(texts) == 1 and Path(texts[0]).is_dir() and (Path(texts[0]) / "data.json").exists():
        return PreparedData.open(texts[0])
    files = check_corpus_files(texts) if texts else default_corpus()
    return prepare(files, run_dir / "data", tokenizer, for_run=True)


def check_resume(run_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 given: set[str]) -> tuple[dict, ModelConfig, TrainConfig]:
    """The configs to continue with: the run's own, with the options given now where allowed."""
    saved, saved_model, _ = ckpt.read_run_config(run_dir)
    saved_train = from_dict(TrainConfig, saved.get("train"), f"{run_dir / 'config.json'} train",
                            in_file=True)
    for name in sorted(given):
        if name in asdict(saved_model) and getattr(model_cfg, name) != getattr(saved_model, name):
            raise RnnkitError(f"--{name} {getattr(model_cfg, name)} differs from the run's "
                              f"{getattr(saved_model, name)}; drop it to resume, or train a new "
                              "--out")
        if name in TrainConfig.layout and getattr(train_cfg, name) != getattr(saved_train, name):
            raise RnnkitError(f"--{name.replace('_', '-')} {getattr(train_cfg, name)} differs "
                              f"from the run's {getattr(saved_train, name)}; resuming needs the "
                              "same data layout")
    changes = {k: getattr(train_cfg, k) for k in given if k in asdict(saved_train)}
    changes.setdefault("max_time", 0.0)  # a budget is this invocation's, not the run's
    if not changes["max_time"] and not changes.get("max_steps", saved_train.max_steps):
        raise RnnkitError(f"{run_dir} was planned by its --max-time, and --max-time is each "
                          "invocation's own budget; give --max-time for this one, or --max-steps "
                          "N to end at step N")
    return saved, saved_model, TrainConfig(**{**asdict(saved_train), **changes})


def open_run_data(run_dir: Path, config: dict) -> PreparedData:
    """The prepared data a run trained on (its own DIR/data, or the DATA folder it was given),
    which must still hold the run's vocabulary: prepared again with another, its ids would
    mean other symbols (or none), so it is refused."""
    path = ckpt.data_dir(run_dir, config)
    data = PreparedData.open(path)
    recorded = config.get("data_id")  # absent in runs of earlier versions
    if data.vocab != ckpt.read_vocab(run_dir / "vocab.json"):
        why = "its vocabulary is no longer the run's"
    elif isinstance(recorded, dict) and "sha256" in recorded and recorded != data.identity():
        why = (f"it holds other text now: {len(data.tokens):,} tokens, the run trained on "
               f"{recorded.get('tokens', '?')}")
    else:
        return data
    raise RnnkitError(f"{path} was prepared again since {run_dir} trained on it ({why}); "
                      "prepare text into a new folder, and train a new run on it")


def check_resume_data(run_dir: Path, data: PreparedData, texts: list[str]) -> None:
    """--resume continues a run on the data it started with: text files given with it must be
    exactly that data (the same command plus --resume), never new text, silently ignored."""
    if not texts:
        return
    given = [Path(t) for t in texts]
    if len(given) == 1 and given[0].is_dir() and given[0].resolve() == data.path.resolve():
        return
    then = [s if isinstance(s, dict) else {} for s in data.sources]
    now = [source(f) if f.is_file() else {"path": str(f.resolve())} for f in given]

    def same(a: dict, b: dict) -> bool:  # data.json of earlier versions has no mtime_ns
        return all(a.get(k) == b.get(k) for k in ("path", "bytes", "mtime_ns") if k in b)

    if len(now) == len(then) and all(same(n, t) for n, t in zip(now, then, strict=True)):
        return
    names = ", ".join(map(str, texts[:3])) + (", ..." if len(texts) > 3 else "")
    changed = [str(f) for f, n in zip(given, now, strict=True)
               if any(n["path"] == t.get("path") and not same(n, t) for t in then)]
    why = f"{changed[0]} has changed since the run encoded it" if changed \
        else f"{names} {'is' if len(texts) == 1 else 'are'} not the text it was started on"
    raise RnnkitError(f"--resume continues {run_dir} on its own data, and {why}; drop the "
                      "text files to resume, or to train on new text, start a new --out with "
                      f"--init-from {run_dir} to begin from this run's weights")


def train(texts: list[str] | str, out: str, model_cfg: ModelConfig | None = None,
          train_cfg: TrainConfig | None = None, resume: bool = False,
          given: set[str] | None = None, quiet: bool = False,
          init_from: str | None = None) -> dict:
    """Train (or resume) a run in directory `out` on text files `texts` (default corpus if empty),
    or on one prepared data directory; with `init_from` (a run directory or "builtin"), starting
    from that run's weights (see `finetune`).

    `given` names the options the user set explicitly (the command line's); on resume they are
    checked against the run and replace its own, and with `init_from` against the base run.
    None (a call from Python): the fields of the configs passed that differ from their defaults
    (name a field here to set it to its default value: `given={"dropout"}`). `max_time`
    bounds the whole call, the final evaluation included, and is this call's own: a resume
    does not inherit it. Returns a summary: steps (of the run, and of this call), best
    validation loss, seconds, speed, history.
    """
    started = time.monotonic()  # the time budget counts from here
    if given is None:
        pairs = ((model_cfg, ModelConfig()), (train_cfg, TrainConfig()))
        given = {f.name for config, default in pairs if config is not None for f in fields(config)
                 if f.name != "vocab_size" and getattr(config, f.name) != getattr(default, f.name)}
    if not isinstance(given, (set, frozenset, list, tuple)):
        raise RnnkitError(f"given is a set of field names of ModelConfig and TrainConfig, got "
                          f"{type(given).__name__}")
    known = {f.name for config in (ModelConfig, TrainConfig) for f in fields(config)}
    unknown = sorted(map(str, set(given) - known))
    if unknown:
        raise RnnkitError(f"given names fields of ModelConfig and TrainConfig; {unknown[:3]} "
                          "are not among them")
    if isinstance(texts, (str, os.PathLike)):  # one file given as itself, not in a list
        texts = [texts]
    run_dir = Path(out)
    model_cfg, train_cfg = model_cfg or ModelConfig(), train_cfg or TrainConfig()
    if init_from is not None:
        train_cfg, given = replace(train_cfg, init_from=str(init_from)), {*given, "init_from"}
    if resume and not (run_dir / "config.json").exists():
        resume = False  # nothing to resume yet (e.g. stopped before its first write): start
    world, device_name = distributed.setup(train_cfg.device)
    unstarted, made = False, not run_dir.exists()  # a folder the user made is theirs to keep
    try:
        device = pick_device(device_name, train_cfg.precision)
        if world.main:
            ckpt.check_out_dir(run_dir, resume)  # before the lock writes train.lock there
        lock = ckpt.RunLock(run_dir) if world.main else contextlib.nullcontext()
        fresh = False  # a new run's folder, checked empty under the lock: ours to clear
        try:
            with lock:
                if resume:
                    saved, model_cfg, train_cfg = check_resume(run_dir, model_cfg, train_cfg, given)
                    base = finetune.base_for_resume(run_dir, saved, train_cfg, given)
                    data = open_run_data(run_dir, saved)
                    check_resume_data(run_dir, data, texts)
                    if world.main:
                        remove_partial_files(run_dir)
                elif world.main:
                    ckpt.check_out_dir(run_dir, resume)  # again, now that no one else can write
                    fresh = True
                    remove_partial_files(run_dir)
                    base = None
                    if train_cfg.init_from:
                        data, model_cfg, train_cfg, base = finetune.start(
                            run_dir, texts, model_cfg, train_cfg, given,
                            (lambda *a: None) if quiet else tqdm.write)
                    else:
                        data = open_data(run_dir, texts, train_cfg.tokenizer)
                        if data.vocab.kind != train_cfg.tokenizer:  # a prepared DATA decides
                            if "tokenizer" in given:
                                raise RnnkitError(f"--tokenizer {train_cfg.tokenizer} differs from "
                                                  f"the {data.vocab.kind} vocabulary {texts[0]} was "
                                                  "prepared with; drop --tokenizer, or prepare it "
                                                  "again")
                            train_cfg = replace(train_cfg, tokenizer=data.vocab.kind)
                    warn_small_vocabulary(data.vocab)
                    model_cfg = ModelConfig(**{**asdict(model_cfg), "vocab_size": len(data.vocab)})
                    ckpt.write_run_files(run_dir, model_cfg, asdict(train_cfg), data.vocab,
                                         data.path, data.identity())
                distributed.barrier(world)  # the other ranks wait for rank 0's files
                if not world.main and not (run_dir / "config.json").exists():
                    raise RnnkitError(f"--out {run_dir} is not visible to this process (rank "
                                      f"{world.rank}) after rank 0 wrote it: with several "
                                      "machines, give --out and the text on storage every "
                                      "machine sees")
                if not world.main and not resume:
                    saved, model_cfg, _ = ckpt.read_run_config(run_dir)
                    data = open_run_data(run_dir, saved)
                if not world.main:
                    base = None  # DistributedDataParallel copies rank 0's weights to every rank
                return run(run_dir, data, model_cfg, train_cfg, device, world, resume, quiet,
                           started, base)
        except BaseException:  # refused, failed or stopped before its first checkpoint: no
            unstarted = fresh and not (run_dir / ckpt.LAST).exists()  # half-made run left
            raise
    finally:
        distributed.teardown(world)
        if unstarted:  # the lock released first
            ckpt.remove_unstarted_run(run_dir, made)


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
    """A language model's run set up, then trained by the engine; see `train`. `started` is
    when the call began (the time budget's start); `base` is the model a fine-tuned run starts
    from (see `finetune`)."""
    train_tokens, val_tokens = data.split(cfg.val_fraction)
    B = fit_batch_size(len(train_tokens), cfg.batch_size, cfg.seq_len)
    if cfg.val_fraction > 0 and len(val_tokens) < 2:
        raise RnnkitError(f"the validation split has {len(val_tokens)} tokens; raise "
                          "--val-fraction, add text, or use --val-fraction 0")
    if B % world.size:  # say why, when the text or the run fixed B: --batch-size may not help
        counts = ", ".join(str(n) for n in range(1, B + 1) if B % n == 0)
        if resume:
            raise RnnkitError(f"this run's batch of {B} streams does not split over {world.size} "
                              f"processes; resume it with {counts} processes")
        if cfg.batch_size > B:
            raise RnnkitError(f"the training text holds {B} streams of --seq-len {cfg.seq_len} + "
                              f"1 tokens, fewer than --batch-size {cfg.batch_size}, and {B} does "
                              f"not split over {world.size} processes; give --batch-size "
                              f"{max(world.size, B - B % world.size)}, or more text")
    my_streams = distributed.streams_of(world, B)
    if len(my_streams) % cfg.accumulate:
        raise RnnkitError(f"{len(my_streams)} streams per process do not split into "
                          f"--accumulate {cfg.accumulate} micro-batches; change either")
    check_memory(model_cfg, len(my_streams) // cfg.accumulate, cfg.seq_len)
    torch.manual_seed(cfg.seed)
    model = CharLM(model_cfg, data.vocab).to(device)
    if base is not None:
        finetune.transplant(model, base)
    feeder = StreamFeeder(model, train_tokens, val_tokens, B, my_streams, cfg, device)
    say = tqdm.write if world.main and not quiet else (lambda *a: None)
    if not resume:
        split = f" ({world.size} processes x {B // world.size} streams)" if world.size > 1 else ""
        say(f"rnnkit: {model_cfg.layers} x {model_cfg.hidden} {model_cfg.cell}, "
            f"{model.num_parameters():,} parameters, vocabulary {model_cfg.vocab_size} "
            f"({cfg.tokenizer}), {len(train_tokens):,} training / {len(val_tokens):,} "
            f"validation tokens, batch {B} x {cfg.seq_len}{split}"
            f"{f', {cfg.accumulate} micro-batches' if cfg.accumulate > 1 else ''}, "
            f"on {device.type}{'' if cfg.precision == 'fp32' else ' ' + cfg.precision}")
    summary = engine.run(feeder, cfg, run_dir, world, device, resume, say, started, quiet)
    summary["batch_size"] = B
    summary["held_out"] = len(val_tokens) >= 2  # best_val is the training loss where not
    summary["unit"] = feeder.unit
    return summary


class StreamFeeder:
    """The language model's feeder of the engine (see `engine.Feeder`): step i reads batch i of
    `text.Streams`, this process's streams split into `accumulate` micro-batches, and carries
    each stream's recurrent state into step i + 1."""

    equal_parts = True  # every micro-batch holds the same number of streams and characters
    layout: dict = {}  # none to check here: `train` checks a resumed run's options itself
    short_budget_refused = True  # one run, one budget: refused if it cannot hold the last evaluation
    unit = "chars"
    more = "raise --max-steps to train it further"

    def __init__(self, model: CharLM, train_tokens: np.ndarray, val_tokens: np.ndarray, B: int,
                 streams: range, cfg: TrainConfig, device: torch.device):
        self.model, self.val_tokens, self.B, self.cfg, self.device = (model, val_tokens, B, cfg,
                                                                      device)
        self.my_streams = streams
        self.unit = "bytes" if cfg.tokenizer == "byte" else "chars"  # what a token is
        self.streams = Streams(train_tokens, B, cfg.seq_len, cfg.seed, streams=streams)
        self.micro = len(streams) // cfg.accumulate  # streams per micro-batch
        self.end = cfg.max_steps or sys.maxsize
        self.plan = cfg.max_steps  # 0: fitted to the time budget
        self.state_shape = (model.config.layers, B, model.config.hidden)  # (L, B, H)
        self.loss_limit = 3 * math.log(model.config.vocab_size) + 5  # far above chance
        self.extra = 0.0  # seconds of the final sample
        self.state, self.new_states = None, []  # carried (this rank's streams), and the step's

    def batch(self, step: int) -> list:
        x, y, fresh = self.streams.batch(step)  # (b, T) ids of this rank's b streams
        if fresh:
            self.state = None  # a new epoch starts the streams at new offsets
        x = to_device(torch.from_numpy(x), self.device)
        y = to_device(torch.from_numpy(y), self.device)
        parts = [slice(k * self.micro, (k + 1) * self.micro) for k in range(self.cfg.accumulate)]
        return [(x[part], y[part], part) for part in parts]

    def forward(self, net: torch.nn.Module, micro) -> tuple[torch.Tensor, int]:
        x, y, part = micro
        _, loss, state = net(x, y, rows_of(self.state, part))
        self.new_states.append(state)
        return loss, 1

    def carry(self) -> None:
        self.state = detach_state(cat_rows(self.new_states))
        self.new_states = []

    def items(self, step: int) -> int:
        return self.B * self.cfg.seq_len

    def eval_due(self, step: int) -> bool:
        return step % self.cfg.eval_every == 0

    def evaluate(self, train_loss: float) -> tuple[float, None]:
        if len(self.val_tokens) < 2:
            return train_loss, None  # --val-fraction 0: the training loss stands in
        return text_loss(self.model, self.val_tokens, self.B, self.cfg.seq_len, self.device,
                        self.cfg.eval_tokens), None

    def record(self, progress: engine.Progress, train_loss: float, val: float,
               metric: None) -> dict:
        return {"step": progress.step, "chars": progress.chars, "train_loss": train_loss,
                "val_loss": val}

    def report(self, record: dict, improved: bool, seconds: float, left: float) -> str:
        train, val = record["train_loss"], record["val_loss"]
        held = (f"val {loss_words(val, self.unit)}"
                if len(self.val_tokens) >= 2 else  # the training loss stands in for it
                "no text held out (--val-fraction 0): the best is the lowest training loss")
        return (f"step {record['step']}: train {loss_words(train, self.unit)}, {held}"
                f"{' *best' if improved else ''}")

    def after_checkpoint(self, run_dir: Path, progress: engine.Progress) -> None:
        """A sample appended to samples.txt, so a user can watch the model learn; its seconds
        are what the final sample will cost (for the time budget)."""
        if not self.cfg.sample_length:
            return
        started = time.monotonic()
        text = self.model.generate(length=self.cfg.sample_length, temperature=0.8,
                                   seed=progress.step)
        self.extra = time.monotonic() - started
        val = progress.history[-1]["val_loss"]
        with open(run_dir / "samples.txt", "a", encoding="utf-8") as f:
            f.write(f"=== step {progress.step}, {progress.chars:,} characters seen, val_loss "
                    f"{val:.4f} ===\n{text}\n\n")

    def measure_reserve(self) -> float:
        """Seconds the last evaluation and its checkpoint will take, measured on a slice before
        training (a few evaluation batches, scaled up, and a second for writing the files);
        the final sample's, measured on a few characters, becomes `extra`."""
        cfg, B = self.cfg, self.B
        n_eval = min(len(self.val_tokens), cfg.eval_tokens)
        part = min(n_eval, 8 * B * cfg.seq_len)
        started = time.monotonic()
        if part >= 2:
            text_loss(self.model, self.val_tokens, B, cfg.seq_len, self.device, part)
        eval_seconds = (time.monotonic() - started) * n_eval / max(part, 1)
        started = time.monotonic()
        chars = min(20, cfg.sample_length)
        if chars:
            self.model.generate(length=chars, seed=0)
        self.extra = (time.monotonic() - started) * cfg.sample_length / max(chars, 1)
        return eval_seconds + self.extra + 1.0

    def full_state(self, world: distributed.World):
        """The carried state of all streams, gathered from every rank (a collective call)."""
        state = self.state
        if state is None or not world.joined:
            return state
        if isinstance(state, tuple):
            return tuple(distributed.gather_rows(world, s, 1) for s in state)
        return distributed.gather_rows(world, state, 1)

    def load_state(self, state) -> None:
        """This rank's rows of a carried state read from a checkpoint, on its device."""
        self.state = None
        if state is not None:
            rows = slice(self.my_streams.start, self.my_streams.stop)
            # a state carried under bf16 or fp16 autocast is of that type, which an fp32 run
            # (--resume --precision fp32) cannot read: its values as the weights' floats
            dtype = None if self.cfg.precision != "fp32" else next(
                self.model.parameters()).dtype
            self.state = tuple(s[:, rows].to(self.device, dtype) for s in state) \
                if isinstance(state, tuple) else state[:, rows].to(self.device, dtype)


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
