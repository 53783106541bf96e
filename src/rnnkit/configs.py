"""The config dataclasses the command line maps its flags onto, importable without torch.

    RunConfig      what every training run shares: the optimizer, the schedule, the time budget,
                   the device, precision, accumulation and what a divergence does (`engine`)
    TrainConfig    RunConfig + the language model's stream layout and evaluation cadence
    FitConfig      RunConfig + the task models' epochs and length bucketing
    ModelConfig    the character language model's shape (`lm.CharLM`)

and the choices of the task models' configs (`tasks.SequenceConfig`): cells, heads, pools.

Each dataclass checks its values when built, so a config read back from JSON (`config.from_dict`)
is as checked as one made from flags. The two training configs differ only in their defaults and
in the fields of their own kind of run; one set of checks serves them both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .config import check_fields
from .errors import RnnkitError, require_positive, require_seed

CELL_TYPES = ("lstm", "gru", "rnn")
HEADS = ("classify", "regress")
POOLS = ("last", "mean", "max")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")  # of training (autocast)
STEP_PRECISIONS = ("fp32", "bf16", "int8", "int4")  # of the weights while sampling (`sample.Stepper`)
TOKENIZERS = ("char", "byte")  # Unicode code points of UTF-8 text, or raw bytes
ON_NAN = ("stop", "rollback")
CALENDAR = ("hour", "weekday", "month")  # a forecaster's calendar features (`panel`)
MAX_SIZE = 1 << 16  # no layer wider than this, no deeper stack than MAX_LAYERS: a typo guard
MAX_LAYERS = 64
MAX_MEMBERS = 16  # models in a classifier's ensemble (`tasks.Ensemble`)
MAX_STRING = 10_000_000  # characters `generate` returns as one string; `stream` has no limit
MAX_RATE = 1e6  # no learning rate or weight decay above this: a typo guard within float32


def check_cell(cell: str) -> None:
    """Raise RnnkitError naming the choices when `cell` is not a known cell type."""
    if cell not in CELL_TYPES:
        raise RnnkitError(f"unknown cell type {cell!r}; choose one of {', '.join(CELL_TYPES)}")


def check_val_fraction(value: float) -> None:
    """The share of the data held out for validation: 0 (none) up to, not including, 1."""
    if not 0.0 <= value < 1.0:
        raise RnnkitError(f"val_fraction (--val-fraction) must be in [0, 1), got {value}")


@dataclass
class RunConfig:
    """What every training run shares, language model or task model (see `engine`)."""

    batch_size: int = 32  # B: streams (language model) or examples (tasks) per optimizer step
    lr: float = 3e-3  # peak learning rate of AdamW
    lr_min: float = 0.05  # the cosine decay ends at lr * lr_min
    warmup: int = 50  # steps of linear warm-up from 0 to lr
    weight_decay: float = 0.0  # AdamW's decoupled weight decay, on matrices but not embeddings
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 turns clipping off
    max_time: float = 0.0  # seconds this invocation may take, its last evaluation included; 0: none
    seed: int = 1337  # weights, dropout and the order of the batches
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"
    precision: str = "fp32"  # "fp32", or autocast to "bf16" / "fp16" (fp16 with loss scaling)
    accumulate: int = 1  # micro-batches per step: each process's share split this many ways
    on_nan: str = "stop"  # a NaN or exploding loss: "stop", or "rollback" to the last checkpoint
    #                       with the learning rate halved (at most engine.MAX_ROLLBACKS times)

    def __post_init__(self):
        check_fields(self)
        require_positive(batch_size=self.batch_size, lr=self.lr, accumulate=self.accumulate)
        for name in ("warmup", "max_time", "grad_clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise RnnkitError(f"{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("lr", "weight_decay"):
            if getattr(self, name) > MAX_RATE:
                raise RnnkitError(f"{name} must be at most {MAX_RATE:g}, got "
                                  f"{getattr(self, name):g} (AdamW's learning rates are about "
                                  "1e-4 to 1e-2, its weight decays 0 to 0.1)")
        if not 0 < self.lr_min <= 1:
            raise RnnkitError(f"lr_min must be in (0, 1], got {self.lr_min}")
        if self.device not in DEVICES:
            raise RnnkitError(f"unknown device {self.device!r}; choose auto, cpu or cuda")
        if self.precision not in PRECISIONS:
            raise RnnkitError(f"unknown precision {self.precision!r}; choose fp32, bf16 or fp16")
        if self.on_nan not in ON_NAN:
            raise RnnkitError(f"unknown on_nan (--on-nan) {self.on_nan!r}; choose stop or rollback")
        require_seed(self.seed)


@dataclass
class TrainConfig(RunConfig):
    """A language model's run: streams of text read side by side, truncated BPTT."""

    # Options that fix which characters land in which batch: a resumed run must keep them.
    layout: ClassVar[tuple[str, ...]] = ("seq_len", "batch_size", "val_fraction", "tokenizer",
                                         "seed")

    seq_len: int = 128  # T: time steps per batch, the horizon of backpropagation
    max_steps: int = 5000  # optimizer steps of the whole run, resumes included; 0: until max_time
    val_fraction: float = 0.1  # the end of the corpus held out for validation
    eval_every: int = 200  # steps between evaluations (each also writes a checkpoint)
    eval_tokens: int = 1 << 20  # at most this many validation tokens per evaluation
    tokenizer: str = "char"  # "char" (Unicode code points) or "byte"
    sample_length: int = 200  # characters written to samples.txt at each evaluation; 0: none
    init_from: str = ""  # a run directory (or "builtin") whose weights this run starts from,
    #                      its vocabulary grown to the new text (see finetune); "": from scratch

    def __post_init__(self):
        super().__post_init__()
        require_positive(seq_len=self.seq_len, eval_every=self.eval_every,
                         eval_tokens=self.eval_tokens)
        for name in ("max_steps", "sample_length"):
            if getattr(self, name) < 0:
                raise RnnkitError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.sample_length > MAX_STRING:
            raise RnnkitError(f"sample_length must be at most {MAX_STRING:,}, got "
                              f"{self.sample_length:,} (samples.txt holds each whole sample)")
        if self.eval_tokens < 2:  # one prediction needs two tokens
            raise RnnkitError(f"eval_tokens must be at least 2, got {self.eval_tokens}")
        if self.max_steps == 0 and self.max_time == 0:
            raise RnnkitError("give max_steps or max_time (--max-steps, --max-time), or both, so "
                              "the run can end")
        check_val_fraction(self.val_fraction)
        if self.tokenizer not in TOKENIZERS:
            raise RnnkitError(f"unknown tokenizer {self.tokenizer!r}; choose char or byte")
        if self.batch_size % self.accumulate:
            raise RnnkitError(f"accumulate (--accumulate) {self.accumulate} must divide batch_size "
                              f"(--batch-size) {self.batch_size}")


@dataclass
class FitConfig(RunConfig):
    """A task model's run: epochs of shuffled minibatches, an evaluation after each."""

    # Options that fix which examples land in which batch: a resumed run must keep them.
    layout: ClassVar[tuple[str, ...]] = ("batch_size", "seed", "bucket")

    batch_size: int = 64  # B: examples per optimizer step (all processes together)
    lr_min: float = 0.02
    warmup: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    epochs: int = 30  # passes over the training set, resumes included; 0: until max_time
    bucket: bool = True  # batch sequences of similar length together (see `fitting.batches`)

    def __post_init__(self):
        super().__post_init__()
        if self.epochs < 0 or (self.epochs == 0 and not self.max_time):
            raise RnnkitError(f"epochs must be positive, or 0 with a time budget (train until "
                              f"it ends), got {self.epochs}")


@dataclass
class ModelConfig:
    vocab_size: int = 0  # V: symbols in the vocabulary; 0 until the corpus sets it
    cell: str = "lstm"  # "lstm", "gru" or "rnn" (tanh)
    layers: int = 2  # L: stacked recurrent layers
    hidden: int = 384  # H: units per layer (2 x 384 suits 10 CPU minutes of tinyshakespeare)
    embed: int = 0  # E: size of the character embedding; 0 means the same as hidden
    dropout: float = 0.0  # between layers and before the output layer, during training only

    def __post_init__(self):
        check_fields(self)
        check_cell(self.cell)
        require_positive(layers=self.layers, hidden=self.hidden)
        if self.vocab_size < 0 or self.embed < 0:
            raise RnnkitError(f"vocab_size and embed must not be negative, got {self.vocab_size} "
                              f"and {self.embed}")
        if max(self.hidden, self.embed, self.vocab_size) > MAX_SIZE or self.layers > MAX_LAYERS:
            raise RnnkitError(f"model sizes must stay below {MAX_SIZE} units and {MAX_LAYERS} "
                              f"layers, got hidden {self.hidden}, embed {self.embed}, "
                              f"vocab_size {self.vocab_size}, layers {self.layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise RnnkitError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def embed_size(self) -> int:
        return self.embed or self.hidden


def quantile_levels(text: str) -> list[float]:
    """'0.1,0.5,0.9' -> [0.1, 0.5, 0.9]; 0.5 is added (a forecaster's point forecast is the
    median)."""
    try:
        levels = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        levels = []
    if not levels or not all(0 < q < 1 for q in levels) or len(set(levels)) != len(levels):
        raise RnnkitError(f"--quantiles must be different numbers between 0 and 1, separated by "
                          f"commas (e.g. 0.1,0.5,0.9), got {text!r}")
    return sorted(set(levels) | {0.5})
