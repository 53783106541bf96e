"""Fine-tuning: a new run that starts from the weights of another run, or of the built-in model.

    rnnkit train my.txt --init-from RUN --out NEW        # RUN: a run directory, or "builtin"
    rnnkit.train(["my.txt"], "NEW", init_from="builtin")

The new run keeps RUN's model (cell, layers, sizes; only --dropout may change) and tokenizer, and
trains on the new text with its own settings and learning-rate schedule, from RUN's best weights
(model.safetensors), as Hugging Face's `from_pretrained` followed by a new `Trainer` does.

The vocabulary grows to cover the new text: it becomes RUN's symbols plus the new text's, sorted
(`Vocab.grown`). The symbols RUN knew keep their embedding and output rows (moved to their new ids,
matched by code point or byte); the new ones keep the fresh rows of a new model made with the new
run's seed. The run says how many symbols were added. The built-in model knows all 256 bytes, so
no text adds any.

A fine-tuned run is a run like any other: sample, eval, serve and --resume read it as they read
every run, and config.json's train section records `init_from`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from . import builtin
from . import checkpoint as ckpt
from .errors import RnnkitError
from .lm import CharLM, ModelConfig
from .text import PreparedData, Vocab, build_vocab, check_corpus_files, default_corpus, prepare

SHAPE = ("cell", "layers", "hidden", "embed")  # the options RUN's weights fix
ROWS = ("embed.weight", "head.weight", "head.bias")  # one row per symbol of the vocabulary


def open_base(init_from: str) -> CharLM:
    """RUN's best weights (the built-in model's for "builtin"), on the CPU."""
    try:
        return ckpt.load(init_from)
    except RnnkitError as e:
        raise RnnkitError(f"--init-from {init_from}: {e}") from None


def configs(base: CharLM, init_from: str, model_cfg: ModelConfig, train_cfg,
            given: set[str]) -> tuple[ModelConfig, object]:
    """The new run's model config (RUN's, with --dropout if given) and train config (its own,
    with RUN's tokenizer); options that contradict RUN's weights are refused by name."""
    # embed 0 is the hidden size (RUN's, unless --hidden is given): compare the weights' sizes
    mine = model_cfg if "hidden" in given else replace(model_cfg, hidden=base.config.hidden)
    for name in SHAPE:
        size = "embed_size" if name == "embed" else name
        if name in given and getattr(mine, size) != getattr(base.config, size):
            raise RnnkitError(f"--{name} {getattr(model_cfg, name)} differs from "
                              f"{init_from}'s {getattr(base.config, size)}, and --init-from "
                              f"starts from its weights; drop --{name}, or train from scratch")
    kind = base.vocab.kind
    if "tokenizer" in given and train_cfg.tokenizer != kind:
        raise RnnkitError(f"--tokenizer {train_cfg.tokenizer} differs from {init_from}'s "
                          f"{kind}, and --init-from starts from its weights; drop --tokenizer")
    dropout = model_cfg.dropout if "dropout" in given else base.config.dropout
    return replace(base.config, dropout=dropout), replace(train_cfg, tokenizer=kind)


def open_data(run_dir: Path, texts: list[str], vocab: Vocab, init_from: str) -> PreparedData:
    """The new text encoded with `vocab` grown to cover it, into DIR/data; or a directory made
    by `rnnkit prepare`, used in place, when its vocabulary holds all of `vocab`'s symbols."""
    if len(texts) == 1 and Path(texts[0]).is_dir() and (Path(texts[0]) / "data.json").exists():
        data = PreparedData.open(texts[0])
        missing = sorted(set(vocab.codes) - set(data.vocab.codes)) \
            if data.vocab.kind == vocab.kind else list(vocab.codes)
        # `prepare --vocab RUN` refuses text with symbols RUN lacks: offered only without them
        new = data.vocab.kind == vocab.kind and bool(set(data.vocab.codes) - set(vocab.codes))
        if missing:
            raise RnnkitError(f"{texts[0]} was prepared with a {data.vocab.kind} vocabulary "
                              f"that lacks {len(missing)} of {init_from}'s {len(vocab)} "
                              f"{vocab.kind} symbols; give the text files instead, and the "
                              "vocabulary grows to cover them" + (
                                  "" if new else f", or prepare them again with --vocab "
                                  f"{init_from}"))
        return data
    files = check_corpus_files(texts) if texts else default_corpus()
    try:
        grown = vocab.grown(build_vocab(files, vocab.kind).codes)
    except RnnkitError as e:  # text that is not UTF-8: --tokenizer byte cannot apply here
        raise RnnkitError(f"{str(e).split(';')[0]}; {init_from} is a character model, so "
                          "fine-tune a byte model on it instead (--init-from builtin)") from None
    return prepare(files, run_dir / "data", vocab.kind, vocab=grown, for_run=True)


def start(run_dir: Path, texts: list[str], model_cfg: ModelConfig, train_cfg, given: set[str],
          say: Callable[[str], object]) -> tuple[PreparedData, ModelConfig, object, CharLM]:
    """Set up a new run that starts from `train_cfg.init_from`: its data, model config (the
    vocabulary grown), train config, and the model whose weights `transplant` copies."""
    init_from = train_cfg.init_from
    base = open_base(init_from)
    model_cfg, train_cfg = configs(base, init_from, model_cfg, train_cfg, given)
    data = open_data(run_dir, texts, base.vocab, init_from)
    old = set(base.vocab.codes)
    added = [c for c in data.vocab.codes if c not in old]
    shown = ", ".join(repr(data.vocab.name(c)) for c in added[:10]) + \
        (", ..." if len(added) > 10 else "")
    grew = (f"the vocabulary grew by {len(added)} symbols ({shown}) to {len(data.vocab)}, with "
            "fresh rows" if added else f"the text adds no symbols to its {len(old)}")
    say(f"rnnkit: starting from the weights of {init_from} ({base.config.layers} x "
        f"{base.config.hidden} {base.config.cell}, {base.vocab.kind}); {grew}")
    return data, replace(model_cfg, vocab_size=len(data.vocab)), train_cfg, base


def base_for_resume(run_dir: Path, saved: dict, train_cfg, given: set[str]) -> CharLM | None:
    """The model to start from when a fine-tuned run is resumed before its first checkpoint was
    written (None when there is a checkpoint, or the run trains from scratch). An --init-from
    other than the run's own is refused: resuming never changes where the run started."""
    then = (saved.get("train") or {}).get("init_from", "")
    if "init_from" in given and not same_source(train_cfg.init_from, then):
        raise RnnkitError(f"--init-from {train_cfg.init_from} differs from the run's "
                          f"{then or '(none: trained from scratch)'}; drop it to resume, or "
                          "start a new --out")
    if not then or (run_dir / ckpt.LAST).exists():
        return None
    return open_base(then)


def same_source(a: str, b: str) -> bool:
    """Whether two --init-from values name the same run: "src", "src/" and its absolute path."""
    if not a or not b:
        return a == b
    return a == b or Path(builtin.resolve(a)).resolve() == Path(builtin.resolve(b)).resolve()


@torch.no_grad()
def transplant(model: CharLM, base: CharLM) -> None:
    """Copy `base`'s weights into `model`, whose vocabulary holds all of base's symbols: the
    embedding and output rows by symbol, every other tensor whole. The rows of symbols new to
    `model` keep their values."""
    same = all(getattr(model.config, k) == getattr(base.config, k) for k in SHAPE)
    if not same or model.vocab.kind != base.vocab.kind \
            or not set(base.vocab.codes) <= set(model.vocab.codes):
        raise RnnkitError("the model of --init-from has changed since this run started from it "
                          "(its shape or vocabulary no longer fit); train a new --out")
    rows = torch.tensor([model.vocab.index(c) for c in base.vocab.codes])  # base id -> new id
    own = model.state_dict()  # tensors that share the parameters' storage
    for name, value in base.state_dict().items():
        if name in ROWS:
            own[name][rows] = value.to(own[name])  # (V_base, ...) into (V, ...)
        else:
            own[name].copy_(value)
