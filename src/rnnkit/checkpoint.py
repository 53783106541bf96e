"""The run directory: what a training run writes, and how it is read back safely.

    DIR/config.json         {"format": "rnnkit-run", "version": 1, "model": {...}, "train": {...}}
    DIR/vocab.json          the vocabulary (see text.Vocab)
    DIR/model.safetensors   weights with the best validation loss so far: what sample and eval load
    DIR/last.safetensors    the latest weights, optimizer moments and carried state, with the
                            trainer's counters as JSON metadata: what --resume loads
    DIR/data/               the corpus encoded as a token file (see text.prepare), unless
                            config.json names a prepared data directory elsewhere
    DIR/metrics.csv         every step's loss and learning rate, and each validation loss
    DIR/loss.png            train and validation loss against characters seen
    DIR/samples.txt         a sample at every evaluation
    DIR/train.lock          held by the training that writes to DIR (see RunLock)

A classifier's or forecaster's run directory (`task_runs`) holds the same trainer files
(last.safetensors without a carried state, metrics.csv, loss.png, train.lock): the one training
engine (`engine`) writes them for every model, with `save_trainer` and `load_trainer` below.

Checkpoints are data, not code: tensors in safetensors, everything else JSON. Nothing is ever
unpickled. Every file is written to a temporary name, flushed to disk and renamed over the old
one (see `runfiles`), so a crash at any moment leaves the previous complete file in place. Reading checks each
file against the config (names, shapes, sizes) before any tensor is built, so a corrupt, truncated
or tampered file is refused with a message rather than a crash inside torch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch.overrides import TorchFunctionMode

from . import builtin
from .config import from_dict, parse_json
from .errors import RnnkitError
from .lm import CharLM, ModelConfig
from .runfiles import is_temp_name, write_bytes_atomic, write_json_atomic
from .text import Vocab

FORMAT, VERSION = "rnnkit-run", 1
BEST, LAST = "model.safetensors", "last.safetensors"
METRICS, LOCK = "metrics.csv", "train.lock"
# Everything a run writes into its directory (and into DIR/data): anything else there is the
# user's, and a new run refuses to mix its files with it.
RUN_FILES = {"config.json", "vocab.json", BEST, LAST, METRICS, LOCK, "loss.png", "samples.txt",
             "data"}
DATA_FILES = {"tokens.bin", "data.json"}
# What runs of every kind keep in their folders (and their members'): never an output's place
OWN_FILES = RUN_FILES | DATA_FILES | {"metrics.json", "member.json", "confusion.png",
                                      "features"}
# Run directories of the other commands: what they are, and the command that uses them.
OTHER_KINDS = {"rnnkit-classifier": ("a classifier", "rnnkit classify predict {dir} FILE..."),
               "rnnkit-forecaster": ("a forecaster", "rnnkit forecast predict {dir} SERIES.csv")}


def output_file(out: str | os.PathLike, run_dir: str | os.PathLike,
                reads: tuple[str | os.PathLike, ...] = (), option: str = "--out") -> Path:
    """Where a command that reads `run_dir` (and the files `reads`) may write its --out: the
    file a link points to, written through the link; refused where it is one of the run's own
    files or a file the command reads, which writing would destroy."""
    if not str(out) or Path(out).is_dir():
        raise RnnkitError(f"{option} {str(out) or repr('')} is a folder; give the path of the "
                          "file to write")
    # a link to a file is written through; a device or a pipe (/dev/stdout) is written as named
    target = Path(out) if Path(out).exists() and not Path(out).is_file() else \
        Path(os.path.realpath(out))
    if not target.parent.is_dir():
        what = "is a file, not a folder; choose" if target.parent.exists() else \
            "does not exist; make it, or choose"
        raise RnnkitError(f"{option} {out}: {target.parent} {what} another path")
    run = Path(os.path.realpath(builtin.resolve(run_dir)))
    if target.name in OWN_FILES and (target.parent == run or run in target.parents):
        raise RnnkitError(f"{option} {out} is the run's own {target.name}, which writing would "
                          f"destroy; choose a path outside {run_dir} or another name")
    for path in reads:
        if target == Path(os.path.realpath(path)):
            raise RnnkitError(f"{option} {out} is {path}, which the command reads; choose "
                              f"another {option}")
    return target


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> None:
    """Write tensors atomically: temporary file, fsync, rename."""
    data = safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                             metadata=metadata)
    earlier = path.exists()
    try:
        write_bytes_atomic(path, data)
    except OSError as e:
        kept = "the previous checkpoint is intact" if earlier else \
            "it was the first of its kind, so none was lost"
        raise RnnkitError(f"could not write {path} ({e.strerror or e}); {kept}; free disk space "
                          "or choose another --out") from None


def read_safetensors(path: Path, expected: dict[str, tuple] | None = None,
                     prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, checked before loading.

    With `expected` ({name: shape}), the file must hold exactly those names under `prefix`, with
    those shapes; other prefixes are returned untouched.
    """
    if not path.is_file():
        for folder in list(path.parents)[:3]:  # the run's, or an ensemble's around a member's
            holder = training_holder(folder)
            if holder:
                raise RnnkitError(f"{path} is not written yet: a training (pid {holder}) is "
                                  f"writing to {folder} and saves it at its first evaluation; "
                                  "try again then")
        raise RnnkitError(f"{path} is missing: the run stopped before its first checkpoint; "
                          f"train it on with the same command plus --resume (--out "
                          f"{path.parent}), or train again")
    require_utf8(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
            if expected is not None:
                mine = {n[len(prefix):] for n in names if n.startswith(prefix)}
                if mine != set(expected):
                    missing, extra = sorted(set(expected) - mine), sorted(mine - set(expected))
                    if not mine:  # none under the prefix: name what the file holds instead
                        extra = sorted(names)
                    raise RnnkitError(f"{path} does not match config.json (missing {missing[:3]}, "
                                      f"unexpected {extra[:3]}); it belongs to another model")
                for name, shape in expected.items():
                    got = tuple(f.get_slice(prefix + name).get_shape())
                    if got != tuple(shape):
                        raise RnnkitError(f"{path}: {name} has shape {got} but config.json needs "
                                          f"{tuple(shape)}; the files belong to different models")
            tensors = {n: f.get_tensor(n) for n in names}
    except RnnkitError:
        raise  # the checks' own diagnosis (an RnnkitError is a ValueError too)
    except (SafetensorError, OSError, ValueError) as e:
        raise RnnkitError(f"{path} is corrupt or truncated ({e}); use another checkpoint "
                          "or train again") from None
    return tensors, metadata


def write_run_files(run_dir: Path, model_config: ModelConfig, train_config: dict,
                    vocab: Vocab, data_dir: Path, data_id: dict | None = None) -> None:
    """config.json and vocab.json of a new run; `data_id`: `PreparedData.identity()` of the
    data it trains on, checked whenever the run reads its data again."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = "data" if data_dir.resolve() == (run_dir / "data").resolve() else str(data_dir.resolve())
    config = {"format": FORMAT, "version": VERSION, "model": model_config.__dict__.copy(),
              "train": train_config, "data": data}
    if data_id is not None:
        config["data_id"] = data_id
    # config.json last: its presence marks a complete run directory.
    write_json_atomic(run_dir / "vocab.json", vocab.to_json())
    write_json_atomic(run_dir / "config.json", config)


def read_json(path: Path, what: str, damage: str = "the run directory is damaged"):
    """JSON from `path`; an error names the file and says what it means (`damage`)."""
    try:
        return parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RnnkitError(f"{path} is not readable {what} ({e}); {damage}") from None


def read_vocab(path: Path, damage: str = "the run directory is damaged") -> Vocab:
    """A vocab.json, read and checked; an error names the file and says what it means."""
    raw = read_json(path, "vocabulary JSON", damage)
    try:
        return Vocab.from_json(raw)
    except RnnkitError as e:
        raise RnnkitError(f"{path}: {e}; {damage}") from None


def read_run_config(run_dir: str | os.PathLike) -> tuple[dict, ModelConfig, Vocab]:
    """config.json (raw), its model section checked, and the vocabulary matched to it."""
    run_dir = builtin.resolve(run_dir)
    if not run_dir.is_dir():
        raise RnnkitError(f"{str(run_dir)!r} is not a directory; give the --out DIR of a "
                          "training run")
    if not (run_dir / "config.json").is_file():
        raise RnnkitError(f"{str(run_dir)!r} is not a run directory (no config.json); train one "
                          "with: rnnkit train TEXT_FILE --out DIR")
    config = read_json(run_dir / "config.json", "JSON")
    check_kind(run_dir, config)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise RnnkitError(f"{run_dir / 'config.json'} is not an rnnkit run config "
                          f'(expected "format": "{FORMAT}")')
    check_version(run_dir, config)
    model_config = from_dict(ModelConfig, config.get("model"),
                             f"{run_dir / 'config.json'} model", in_file=True)
    vocab = read_vocab(run_dir / "vocab.json")
    if len(vocab) != model_config.vocab_size:
        raise RnnkitError(f"vocab.json has {len(vocab)} symbols but config.json says "
                          f"vocab_size {model_config.vocab_size}; the files do not belong together")
    return config, model_config, vocab


def check_version(run_dir: Path, config: dict) -> None:
    """Every kind of run directory has one format version: refuse another."""
    if config.get("version") != VERSION:
        raise RnnkitError(f"{run_dir} was written by format version {config.get('version')!r}; "
                          f"this rnnkit reads version {VERSION}")


def check_kind(run_dir: Path, config) -> None:
    """Refuse the run directory of a classifier or forecaster, naming the command that uses it."""
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt in OTHER_KINDS:
        kind, command = OTHER_KINDS[fmt]
        raise RnnkitError(f"{run_dir} is {kind} run, not a language model; use it with: "
                          f"{command.format(dir=run_dir)}")


def require_utf8(path: Path) -> None:
    """Refuse a path whose name is not valid UTF-8: the safetensors library opens files by
    UTF-8 names only (a run there would train, then find its own checkpoints unreadable)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise RnnkitError(f"{str(path)!r} is not a valid UTF-8 name, and checkpoints are opened "
                          "by UTF-8 names only; rename the folder, or choose another") from None


def check_out_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to start a run in a directory that holds a run already, or files rnnkit did not
    write (a run being resumed may hold the user's files too)."""
    require_utf8(run_dir.absolute())
    if not run_dir.is_dir():
        return
    if (run_dir / "config.json").exists():
        try:
            config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            config = None  # a damaged run is still a run
        check_kind(run_dir, config)
        if not resume:
            raise RnnkitError(f"{run_dir} already holds a training run; add --resume to "
                              "continue it, or choose another --out")
        return
    written = sorted({BEST, LAST, METRICS, "samples.txt", "loss.png"} &
                     {e.name for e in run_dir.iterdir()})
    if written:  # a run's results without the config that says what they are
        raise RnnkitError(f"--out {run_dir} holds {', '.join(written)} but no config.json: a "
                          "damaged run directory, which a new run would overwrite; restore its "
                          "config.json to --resume it, or choose another --out")
    if (run_dir / "data" / "data.json").exists() and not prepared_for_run(run_dir / "data"):
        raise RnnkitError(f"--out {run_dir} holds prepared data ({run_dir / 'data'}) but no run: "
                          "a run would prepare its text there, over it; train on it with "
                          f"`rnnkit train {run_dir / 'data'} --out NEW`, or remove it if a run "
                          "stopped before it began left it")
    theirs = foreign(run_dir, RUN_FILES) + impostors(run_dir)
    if (run_dir / "data").is_dir():
        theirs += [f"data/{name}" for name in foreign(run_dir / "data", DATA_FILES)]
    elif (run_dir / "data").exists():
        theirs.append("data")
    refuse_theirs(run_dir, theirs)


def impostors(run_dir: Path) -> list[str]:
    """Files named as a run's that a run did not write: a vocab.json that is no vocabulary, a
    train.lock that holds more than a pid. A run stopped before its config.json leaves its own,
    which a new run may replace; these are the user's, which it must not."""
    found = []
    if (run_dir / "vocab.json").is_file():
        try:
            read_vocab(run_dir / "vocab.json")
        except RnnkitError:
            found.append("vocab.json")
    if (run_dir / LOCK).is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if not (run_dir / LOCK).read_text(encoding="utf-8").strip().isdigit() and \
                    (run_dir / LOCK).stat().st_size:
                found.append(LOCK)
    return found


def prepared_for_run(data: Path) -> bool:
    """Whether the prepared data in `data` is a run's own (`text.prepare(..., for_run=True)`),
    left by a run killed after preparing its text and before writing its config.json: the
    same command prepares it again. Data that `rnnkit prepare` wrote there is the user's."""
    try:
        return json.loads((data / "data.json").read_text(encoding="utf-8")).get("for_run") is True
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def foreign(folder: Path, ours) -> list[str]:
    """The names in `folder` that are neither `ours` nor rnnkit's temporary files."""
    return [e.name for e in folder.iterdir() if e.name not in ours and not is_temp_name(e.name)]


def refuse_theirs(run_dir: Path, theirs: list[str]) -> None:
    """Refuse to start a run in `run_dir` when it holds `theirs`: files rnnkit did not write."""
    if theirs:
        shown = ", ".join(sorted(theirs)[:3]) + (", ..." if len(theirs) > 3 else "")
        raise RnnkitError(f"--out {run_dir} holds files rnnkit did not write ({shown}); give a "
                          "new or empty directory for the run")


class _ShapesOnly(TorchFunctionMode):
    """Random initialisations skipped: a shape needs no values, and a meta tensor's `normal_`
    (an embedding's initialisation) imports torch's compiler, over a second of every load."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.normal_, torch.Tensor.uniform_) \
                or getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]  # the tensor it would have filled
        return func(*args, **(kwargs or {}))


def shapes_of(build) -> dict[str, tuple]:
    """Parameter names and shapes of the module `build()` makes, without allocating it."""
    with torch.device("meta"), _ShapesOnly():
        model = build()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def model_shapes(model_config: ModelConfig) -> dict[str, tuple]:
    """Parameter names and shapes of the language model a config describes."""
    return shapes_of(lambda: CharLM(model_config))


def load_weights(path: Path, build, prefix: str = "") -> torch.nn.Module:
    """The module `build()` makes, with weights read from `path` (under `prefix`), checked.

    Names and shapes are checked against a meta-device copy before any tensor is read, and
    weights that are not floating point (fp16 and bf16 are converted) or hold NaN or infinities
    are refused.
    """
    tensors, _ = read_safetensors(path, shapes_of(build), prefix)
    weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    for name, t in weights.items():
        if not t.is_floating_point():
            raise RnnkitError(f"{path}: {name} holds {str(t.dtype).removeprefix('torch.')} "
                              "values, not floating-point weights; use another checkpoint")
        if not torch.isfinite(t).all():
            raise RnnkitError(f"{path}: {name} holds NaN or infinite values; use another "
                              "checkpoint")
    model = build()
    model.load_state_dict(weights)
    return model


def load(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
         checkpoint: str = BEST) -> CharLM:
    """A trained language model from a run directory, in eval mode, on `device`.

    `checkpoint` is "model.safetensors" (best validation loss) or "last.safetensors".
    "builtin" is the built-in model (see `builtin`).
    """
    run_dir = builtin.resolve(run_dir)
    _, model_config, vocab = read_run_config(run_dir)
    path = run_dir / checkpoint
    if checkpoint == BEST and not path.exists() and (run_dir / LAST).exists():
        path = run_dir / LAST  # stopped before its first evaluation
    prefix = "model." if path.name == LAST else ""
    model = load_weights(path, lambda: CharLM(model_config, vocab), prefix)
    return model.to(device).eval()


class RunLock:
    """An exclusive lock on a run directory while a training writes to it.

    It is an OS file lock (flock) on DIR/train.lock: a second training into the same DIR is
    refused while the first lives, and the lock of a process that died is released by the kernel,
    so a stale lock is simply taken over. The file records the holder's pid for the message.
    A process that holds it already (a command's run, then `fitting.fit` into it) holds it
    again without waiting on itself.
    """

    held: dict[Path, int] = {}  # this process's locks: run directory -> holders

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.file = None
        self.key = Path(os.path.abspath(run_dir))
        self.again = False

    def __enter__(self) -> RunLock:
        if RunLock.held.get(self.key):
            RunLock.held[self.key] += 1
            self.again = True
            return self
        try:
            import fcntl
        except ImportError:  # no flock on this platform: run unlocked
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a+")
        except OSError as e:
            folder = self.path.parent
            if folder.exists() and not folder.is_dir():  # "File exists" said nothing of it
                raise RnnkitError(f"--out {folder} is a file, and a run is a folder; choose "
                                  "another --out") from None
            raise RnnkitError(f"cannot write to {folder} ({e.strerror or e}); choose "
                              "a writable --out") from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise RnnkitError(f"another training (pid {holder}) is writing to "
                              f"{self.path.parent}; wait for it to finish or stop it") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        RunLock.held[self.key] = 1
        return self

    def __exit__(self, *exc) -> None:
        if self.again:
            RunLock.held[self.key] -= 1
            return
        RunLock.held.pop(self.key, None)
        if self.file is not None:
            self.file.close()  # closing releases the lock


def training_holder(run_dir: Path) -> str | None:
    """The pid of the training that holds `run_dir`'s lock (`RunLock`) now, else None."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        with open(Path(run_dir) / LOCK) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released when f closes
            except OSError:
                return f.read().strip() or "unknown"
    except OSError:
        return None
    return None


def remove_unstarted_run(run_dir: Path, made: bool = True) -> None:
    """Remove what a new run wrote before it was refused, before its first checkpoint (its
    config, vocabulary, token files and lock), so that the same command with the fix starts
    afresh; `check_out_dir` let the run start only where nothing else was. The folder goes too
    when the run `made` it and this leaves it empty (a folder the user made stays)."""
    for name in sorted(RUN_FILES - {"data"}):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink(missing_ok=True)
    for name in DATA_FILES:
        with contextlib.suppress(OSError):
            (run_dir / "data" / name).unlink(missing_ok=True)
    for folder in (run_dir / "data", run_dir) if made else (run_dir / "data",):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def data_dir(run_dir: Path, config: dict) -> Path:
    """The prepared data a run trained on: DIR/data, or the directory config.json names."""
    name = config.get("data", "data")
    if not isinstance(name, str):
        raise RnnkitError(f"{run_dir / 'config.json'}: data must be a path string, got {name!r}")
    return run_dir / name


def save_trainer(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 state, progress: dict) -> None:
    """Everything --resume needs, in one atomically written file: weights, the optimizer's
    moments, the carried recurrent state, and the counters (JSON metadata)."""
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
    meta = {"progress": json.dumps(progress), "param_groups": json.dumps(opt["param_groups"]),
            "optimizer": type(optimizer).__name__}
    write_safetensors(run_dir / LAST, tensors, meta)


def trainer_shapes(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   state_shape: tuple | None) -> dict[str, tuple]:
    """The names and shapes save_trainer writes besides the weights: AdamW's two moments and
    step count per parameter (numbered in the optimizer's order) and the carried state."""
    shapes = {}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in enumerate(params):
        shapes.update({f"optim.{i}.exp_avg": tuple(p.shape),
                       f"optim.{i}.exp_avg_sq": tuple(p.shape), f"optim.{i}.step": ()})
    if state_shape is not None:
        shapes["state.h"] = tuple(state_shape)
        if model.config.cell == "lstm":
            shapes["state.c"] = tuple(state_shape)
    return shapes


def load_trainer(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 state_shape: tuple | None = None) -> tuple[dict, tuple]:
    """Restore what save_trainer wrote into `model` and `optimizer`, after checking it all.

    Every tensor's name and shape is checked (the weights against the config, the optimizer's
    moments against the parameters, the carried state against `state_shape`, (L, B, H)), every
    value must be finite, and the optimizer's settings must be the ones it was created with.
    Returns (progress as a dict, carried state on the CPU: h, or (h, c), or None).
    """
    path = run_dir / LAST

    def damaged(why: str) -> RnnkitError:
        return RnnkitError(f"{path}: {why}; this checkpoint cannot be resumed, so train again "
                           f"with a new --out ({BEST} still holds the best weights)")

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}  # built from config.json
    tensors, meta = read_safetensors(path, shapes, "model.")
    try:
        progress = parse_json(meta["progress"])
        param_groups = parse_json(meta["param_groups"])
    except (KeyError, ValueError) as e:
        raise RnnkitError(f"{path} has no readable trainer state ({e}); start a new run") from None
    if meta.get("optimizer", type(optimizer).__name__) != type(optimizer).__name__:
        raise damaged(f"the optimizer is {meta['optimizer']!r}, not {type(optimizer).__name__}")
    expected = trainer_shapes(model, optimizer, state_shape)
    rest = {n: t for n, t in tensors.items() if not n.startswith("model.")}
    optim = {n for n in rest if n.startswith("optim.")}
    wanted = {n for n in expected if n.startswith("optim.")}
    unknown = sorted(set(rest) - set(expected))
    if unknown or (optim and optim != wanted):
        odd = unknown or sorted(wanted - optim)
        raise damaged(f"its entries do not fit this model ({'unexpected' if unknown else 'missing'}"
                      f" {odd[:3]})")
    carried = {n for n in rest if n.startswith("state.")}
    if carried and carried != {n for n in expected if n.startswith("state.")}:
        raise damaged(f"its carried state {sorted(carried)} does not fit this {model.config.cell} "
                      "model")
    for name, t in rest.items():
        if tuple(t.shape) != expected[name]:
            raise damaged(f"{name} has shape {tuple(t.shape)}, this run needs {expected[name]}")
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise damaged(f"{name} holds NaN or infinite values")
    check_param_groups(param_groups, optimizer, damaged)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict] = {}
    for name in sorted(optim):
        _, i, key = name.split(".", 2)
        opt_state.setdefault(int(i), {})[key] = rest[name]
    decays = [group["weight_decay"] for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": param_groups})
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise damaged(f"the optimizer state does not fit the model ({e})") from None
    # the weight decay the optimizer was made with (the run's, or --weight-decay given with
    # --resume), not the one saved: the learning rate is set at every step, the decay never
    for group, decay in zip(optimizer.param_groups, decays, strict=True):
        group["weight_decay"] = decay
    state = None
    if "state.h" in rest:
        h = rest["state.h"]
        state = (h, rest["state.c"]) if "state.c" in rest else h
    return progress, state


def check_param_groups(groups, optimizer: torch.optim.Optimizer, damaged) -> None:
    """The optimizer settings read back must be the ones `optimizer` has, with numbers where it
    has numbers: the same groups of the same parameters, finite values, 0 or more (a pair such
    as betas: a pair of them); its switches (amsgrad, maximize: True, False or None) as this
    run has them, since the optimizer's state depends on them."""
    mine = optimizer.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(mine):
        raise damaged(f"it holds {len(groups) if isinstance(groups, list) else 'no'} optimizer "
                      f"groups, this run has {len(mine)}")
    for theirs, ours in zip(groups, mine, strict=True):
        if not isinstance(theirs, dict) or set(theirs) != set(ours) \
                or theirs["params"] != ours["params"]:
            raise damaged("its optimizer groups do not match this run's")
        for key, value in ours.items():
            v = theirs[key]
            if key == "params":
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not number_at_least_0(v):
                    raise damaged(f"the optimizer's {key} is {v!r}, not a finite number of 0 "
                                  "or more")
            elif isinstance(value, (list, tuple)):
                if not isinstance(v, (list, tuple)) or len(v) != len(value) \
                        or not all(map(number_at_least_0, v)):
                    raise damaged(f"the optimizer's {key} is {v!r}, not {len(value)} finite "
                                  "numbers of 0 or more")
            elif (value is None or isinstance(value, (bool, str))) and v != value:
                raise damaged(f"the optimizer's {key} is {v!r}, where this run's is {value!r}")


def number_at_least_0(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
        and v >= 0
