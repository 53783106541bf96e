"""Train rnnkit's built-in model: a small byte-level LSTM, shipped in src/rnnkit/builtin/.

    python benchmarks/builtin_model.py [--minutes 20] [--corpus-mb 1.5] [--out runs/builtin]

The shipped model was trained on one GPU (see recipe.json for the exact command and machine):

    python benchmarks/builtin_model.py --minutes 3.5 --corpus-mb 12 --batch-size 128 --dropout 0.1

Corpus (freely licensed, on every machine rnnkit runs on, nothing downloaded): this Python's
reference documentation as English prose (the standard library's `pydoc_data/topics.py`, PSF
licence) after the first --corpus-mb of its standard-library source (`text.default_corpus`), with every
file that quotes a licence text left out, so that the licence texts of benchmarks/finetune.py stay
unseen. The vocabulary is all 256 byte values, so the model can be fine-tuned on any text.

The run trains with `rnnkit.train` for a wall-clock budget (the last 3% of the corpus, the end of
the documentation, held out), then its best weights are stored as fp16 safetensors with the run's
config.json and vocab.json and a recipe.json (corpus, settings, steps, validation loss).
"""

from __future__ import annotations

import argparse
import json
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


def corpus(megabytes: float) -> list[Path]:
    """The stdlib source, then the reference documentation (its end held out)."""
    topics = Path(sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py"
    files = [f for f in default_corpus(int(megabytes * 1e6)) if f != topics] + [topics]
    return [f for f in files
            if f.stat().st_size and not any(t in f.read_text(encoding="utf-8") for t in LICENCE_TITLES)]


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
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/builtin", help="run directory to train into (new)")
    args = p.parse_args()
    files = corpus(args.corpus_mb)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    model_cfg = rnnkit.ModelConfig(**{**MODEL.__dict__, "dropout": args.dropout})
    run = Path(args.out)
    data = prepare(files, run.with_name(run.name + "-data"), "byte",
                   vocab=Vocab("byte", tuple(range(256))))
    print(f"corpus: {len(files)} files, {len(data.tokens):,} bytes", flush=True)
    settings = {**SETTINGS, "batch_size": args.batch_size, "device": args.device, "max_steps": 0,
                "max_time": args.minutes * 60}
    started = time.monotonic()
    summary = rnnkit.train([str(data.path)], str(run), model_cfg,
                           rnnkit.TrainConfig(**settings))
    seconds = time.monotonic() - started
    if summary["stopped"] in ("SIGINT", "SIGTERM"):
        sys.exit("stopped before the end; nothing stored")
    model = ckpt.load(run)
    recipe = {
        "command": f"python benchmarks/builtin_model.py --minutes {args.minutes:g} --corpus-mb "
                   f"{args.corpus_mb:g} --batch-size {args.batch_size} --dropout {args.dropout:g}",
        "model": {**model_cfg.__dict__, "vocab_size": 256},
        "train": settings,
        "corpus": {"files": [str(f.relative_to(stdlib)) for f in files],
                   "from": f"Python {sys.version.split()[0]} standard library (PSF licence)",
                   "bytes": len(data.tokens), "validation": "the last 3% (reference documentation prose)"},
        "parameters": model.num_parameters(), "steps": summary["steps"],
        "seconds": round(seconds, 1), "val_loss": round(summary["best_val"], 4),
        "sample": model.generate(length=300, temperature=0.8, seed=0),
        "machine": machine(), "torch": torch.__version__,
    }
    store(run, recipe)
    print(f"val_loss {recipe['val_loss']} nats/byte after {summary['steps']} steps, {seconds:.0f}s")


if __name__ == "__main__":
    main()
