"""Train rnnkit's built-in model: a small byte-level LSTM, shipped in src/rnnkit/builtin/.

    python benchmarks/builtin_model.py [--minutes 20] [--corpus-mb 1.5] [--man-mb 0]
                                       [--init-from RUN|builtin] [--out runs/builtin]

The shipped model was trained in two stages (recipe.json holds the second's command and machine,
its `continued_from` the first's): on one GPU from scratch,

    python benchmarks/builtin_model.py --minutes 3.5 --corpus-mb 12 --batch-size 128 --dropout 0.1

then on 2 CPU cores from those weights, with the manual pages added,

    python benchmarks/builtin_model.py --init-from builtin --minutes 85 --corpus-mb 12 \
        --man-mb 1000 --batch-size 64 --lr 2e-3 --dropout 0.1

Corpus (freely licensed, nothing downloaded): the first --corpus-mb of this Python's standard-library
source (`text.default_corpus`, PSF licence); with --man-mb, up to that many megabytes of this
machine's English manual pages as plain text (`manual_pages`: the roff markup stripped, each page
under its own package's free licence); then the reference documentation as English prose (the
standard library's `pydoc_data/topics.py`). Every file or page that quotes a licence text is left
out, so that the licence texts of benchmarks/finetune.py stay unseen. The vocabulary is all 256
byte values, so the model can be fine-tuned on any text.

The run trains with `rnnkit.train` for a wall-clock budget (the last 3% of the corpus held out),
then its best weights are stored as fp16 safetensors with the run's config.json and vocab.json
and a recipe.json (corpus, settings, steps, validation loss).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import torch
from common import ROOT, machine

import rnnkit
from rnnkit import checkpoint as ckpt
from rnnkit.text import Vocab, default_corpus, prepare

TARGET = ROOT / "src" / "rnnkit" / "builtin"
LICENCE_TITLES = ("Apache License", "GNU General Public", "GNU Lesser General", "Mozilla Public",
                  "GNU Free Documentation", "Artistic License", "Creative Commons")
MODEL = rnnkit.ModelConfig(cell="lstm", layers=2, hidden=384)
SETTINGS = {"seq_len": 128, "lr": 3e-3, "val_fraction": 0.03, "eval_every": 200,
            "eval_tokens": 250_000, "tokenizer": "byte", "seed": 1337, "sample_length": 200}


MAN = Path("/usr/share/man")
MAN_SECTIONS = ("man1", "man3", "man5", "man7", "man8")
MAN_SKIPPED = ("gcloud",)  # over half of this machine's pages, generated from one template
# roff requests whose arguments are text (headings, fonts, list items); the rest are dropped
ROFF_TEXT = {"SH", "SS", "B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SB", "SM", "TP", "IP", "TQ"}
ROFF_ESCAPES = [(r"\\f(\[[^\]]*\]|\(..|.)", ""), (r"\\s[-+]?\d", ""), (r"\\\((em|en|hy|mi)", "-"),
                (r"\\\((lq|rq|dq)", '"'), (r"\\\((aq|oq|cq)", "'"), (r"\\\(bu", "*"),
                (r"\\\*(\(..|\[[^\]]*\]|.)", ""), (r"\\\(..|\\\[[^\]]*\]", ""), (r"\\-", "-"),
                (r"\\e", r"\\"), (r"\\[&|^%c:]", ""), (r"\\ ", " "),
                (r"\\[hvwo]'[^']*'", "")]


def licence_free(text: str) -> bool:
    return not any(t in text for t in LICENCE_TITLES)


def corpus(megabytes: float) -> list[Path]:
    """The stdlib source, then the reference documentation (its end held out)."""
    topics = Path(sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py"
    files = [f for f in default_corpus(int(megabytes * 1e6)) if f != topics] + [topics]
    return [f for f in files if f.stat().st_size and licence_free(f.read_text(encoding="utf-8"))]


def roff_text(source: str) -> str:
    """A manual page's roff source as plain text: requests dropped, except those whose arguments
    are text (headings, bold, list items), and font and character escapes removed."""
    lines, in_macro = [], False
    for line in source.splitlines():
        if in_macro:  # a macro definition runs to a line starting ".."
            in_macro = not line.startswith("..")
            continue
        if line.startswith((".", "'")):
            request, _, rest = line[1:].lstrip().partition(" ")
            if request in ("de", "de1", "am", "ig"):
                in_macro = True
            elif request in ("PP", "LP", "P", "sp"):
                lines.append("")
            if request not in ROFF_TEXT or not rest.strip():
                continue
            line = rest.replace('"', "")
        for pattern, replacement in ROFF_ESCAPES:
            line = re.sub(pattern, replacement, line)
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def manual_pages(megabytes: float, out: Path) -> tuple[Path, int]:
    """Up to `megabytes` of this machine's English manual pages (sections 1, 3, 5, 7, 8, sorted
    by name, every page quoting a licence text left out) as plain text in one file `out`;
    returns it and the number of pages."""
    pages, size = [], 0
    for f in sorted(f for s in MAN_SECTIONS for f in (MAN / s).glob("*.gz")):
        if f.name.startswith(MAN_SKIPPED):
            continue
        try:
            source = gzip.decompress(f.read_bytes()).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if source.lstrip().startswith(".so ") or not licence_free(source):
            continue  # a page that only points to another, or one quoting a licence
        text = roff_text(source)
        if len(text) < 200 or not licence_free(text):
            continue
        pages.append(text)
        size += len(text.encode("utf-8"))
        if size >= megabytes * 1e6:
            break
    out.write_text("".join(pages), encoding="utf-8")
    return out, len(pages)


def store(run: Path, recipe: dict) -> None:
    """The run's best weights as fp16, with its config, vocabulary and recipe, into TARGET."""
    _, _, vocab = ckpt.read_run_config(run)
    model = ckpt.load(run)
    TARGET.mkdir(exist_ok=True)
    ckpt.write_safetensors(TARGET / ckpt.BEST, {k: v.half() for k, v in model.state_dict().items()},
                           {"step": str(recipe["steps"]), "val_loss": repr(recipe["val_loss"])})
    shutil.copyfile(run / "vocab.json", TARGET / "vocab.json")
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    config.pop("data", None)  # the corpus is not shipped: evaluate the built-in model on a file
    (TARGET / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (TARGET / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    size = (TARGET / ckpt.BEST).stat().st_size
    print(f"stored {TARGET.relative_to(ROOT)}: {model.num_parameters():,} parameters, "
          f"{size / 2**20:.1f} MiB fp16, vocabulary {len(vocab)} bytes")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--corpus-mb", type=float, default=1.5, help="megabytes of stdlib source")
    p.add_argument("--man-mb", type=float, default=0.0,
                   help="megabytes of manual-page text between the source and the documentation")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=SETTINGS["lr"])
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--init-from", default="", help="continue training this run (or builtin)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/builtin", help="run directory to train into (new)")
    args = p.parse_args()
    before = json.loads((TARGET / "recipe.json").read_text(encoding="utf-8")) \
        if args.init_from == "builtin" else None
    files = corpus(args.corpus_mb)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    model_cfg = rnnkit.ModelConfig(**{**MODEL.__dict__, "dropout": args.dropout})
    run = Path(args.out)
    data_dir = run.with_name(run.name + "-data")
    pages = 0
    if args.man_mb:
        data_dir.mkdir(parents=True, exist_ok=True)
        man, pages = manual_pages(args.man_mb, data_dir / "manual-pages.txt")
        files = files[:-1] + [man, files[-1]]  # the documentation stays last, so held out
    data = prepare(files, data_dir, "byte", vocab=Vocab("byte", tuple(range(256))))
    print(f"corpus: {len(files)} files ({pages} manual pages), {len(data.tokens):,} bytes",
          flush=True)
    settings = {**SETTINGS, "batch_size": args.batch_size, "lr": args.lr, "device": args.device,
                "max_steps": 0, "max_time": args.minutes * 60, "init_from": args.init_from}
    started = time.monotonic()
    summary = rnnkit.train([str(data.path)], str(run), model_cfg,
                           rnnkit.TrainConfig(**settings), given={"dropout"})
    seconds = time.monotonic() - started
    if summary["stopped"] in ("SIGINT", "SIGTERM"):
        sys.exit("stopped before the end; nothing stored")
    model = ckpt.load(run)
    command = (f"python benchmarks/builtin_model.py --minutes {args.minutes:g} --corpus-mb "
               f"{args.corpus_mb:g} --batch-size {args.batch_size} --dropout {args.dropout:g}")
    if args.man_mb:
        command += f" --man-mb {args.man_mb:g}"
    if args.lr != SETTINGS["lr"]:
        command += f" --lr {args.lr:g}"
    if args.init_from:
        command += f" --init-from {args.init_from}"
    source = [str(f.relative_to(stdlib)) for f in files if f.is_relative_to(stdlib)]
    recipe = {
        "command": command,
        "model": {**model_cfg.__dict__, "vocab_size": 256},
        "train": settings,
        "corpus": {"files": source,
                   "from": f"Python {sys.version.split()[0]} standard library (PSF licence)",
                   "bytes": len(data.tokens),
                   "validation": "the last 3% (" + ("the last manual pages, then " if pages else "")
                                 + "reference documentation prose)"},
        "parameters": model.num_parameters(), "steps": summary["steps"],
        "seconds": round(seconds, 1), "val_loss": round(summary["best_val"], 4),
        "sample": model.generate(length=300, temperature=0.8, seed=0),
        "machine": machine(), "torch": torch.__version__,
    }
    if args.man_mb:
        recipe["corpus"]["manual_pages"] = {
            "pages": pages, "sections": list(MAN_SECTIONS), "skipped": list(MAN_SKIPPED),
            "from": f"{MAN}, as plain text, placed after the source (free software licences; "
                    "each page's own)"}
    if before:
        recipe["continued_from"] = before  # the stage whose weights this run started from
    store(run, recipe)
    print(f"val_loss {recipe['val_loss']} nats/byte after {summary['steps']} steps, {seconds:.0f}s")

if __name__ == "__main__":
    main()
