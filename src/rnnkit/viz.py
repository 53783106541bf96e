"""What a trained network does on a text: next-character confidences and hidden-unit activations.

    rnnkit viz DIR TEXT_FILE --out page.html

`trace(model, text)` steps the model through `text` one symbol at a time (the `Stepper`) and keeps,
after each symbol t:

    top[t]       the k most likely next symbols with their probabilities
    p_next[t]    the probability the model gave to the symbol that actually follows t
    states[key]  (T, H) activations, key "h0", "h1", ... per layer, and "c0", ... for LSTM cells

`text_features` describes each position by simple properties of the text (inside quotes, position
in line, indentation depth, inside brackets) and `top_units` ranks units by their Pearson
correlation with each feature: the blog's quote and line-length neurons are the ones that come out
on top. `page` writes all of it into the playground page (the same page `rnnkit serve` shows),
here as one self-contained HTML file with the data inlined.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load, output_file
from .configs import MAX_STRING
from .errors import RnnkitError, RnnkitWarning, require_positive
from .runfiles import write_bytes_atomic
from .sample import Stepper
from .text import skipped_words

TOP_K = 5  # next-symbol candidates shown on hover
TOP_UNITS = 8  # units listed per text feature
OPEN_BRACKETS, CLOSE_BRACKETS = "([{", ")]}"
TAB_WIDTH = 4  # a tab counts as this many spaces of indentation


@dataclass
class Trace:
    """The model's view of a text, one entry per symbol (T symbols)."""

    symbols: list[str]  # the text as the model read it: one printable symbol per step
    top: list[list[tuple[str, float]]]  # (T, k): likely next symbols after reading symbol t
    p_next: list[float]  # (T - 1,): probability given to symbol t + 1 after reading symbol t
    states: dict[str, np.ndarray]  # "h0", "c0", ...: (T, H) activations after reading symbol t
    skipped: list[str]  # symbols of the text outside the vocabulary, left out


def state_keys(config) -> list[str]:
    """The activations a model has: h of every layer, then c of every layer for LSTM cells."""
    keys = [f"h{layer}" for layer in range(config.layers)]
    if config.cell == "lstm":
        keys += [f"c{layer}" for layer in range(config.layers)]
    return keys


@torch.inference_mode()
def trace(model, text: str, k: int = TOP_K, keys: list[str] | None = None) -> Trace:
    """Step `model` through `text`; keep the next-symbol top-k and the activations named in `keys`
    (default all of `state_keys`). Symbols outside the vocabulary are skipped and listed."""
    vocab = model.vocab
    ids, skipped = vocab.encode(text)
    if not ids:
        raise RnnkitError(f"the text has no symbol of this model's vocabulary of {len(vocab)} "
                          "symbols; give text like the training text")
    keys = state_keys(model.config) if keys is None else keys
    T, H = len(ids), model.config.hidden
    stepper = Stepper(model)
    logits = torch.empty(T, len(vocab))  # (T, V)
    states = {key: torch.empty(T, H) for key in keys}  # (T, H) each
    for t, token in enumerate(ids):
        logits[t] = stepper.feed(token).float().cpu()
        for key in keys:
            layers = stepper.h if key[0] == "h" else stepper.c
            states[key][t] = layers[int(key[1:])][0].float().cpu()
    probs = torch.softmax(logits, -1)  # (T, V)
    p, idx = probs.topk(min(k, len(vocab)), -1)  # (T, k)
    symbols = [vocab.symbol(i) for i in range(len(vocab))]
    top = [[(symbols[j], q) for q, j in zip(row_p, row_i, strict=True)]
           for row_p, row_i in zip(p.tolist(), idx.tolist(), strict=True)]
    p_next = probs[torch.arange(T - 1), torch.tensor(ids[1:], dtype=torch.long)].tolist()
    return Trace([symbols[i] for i in ids], top, p_next,
                 {key: a.numpy().copy() for key, a in states.items()}, skipped)


# ---------------------------------------------------------------------------------------------
# Simple features of the text, and the units that follow them

def text_features(symbols: list[str]) -> dict[str, np.ndarray]:
    """Per position t, properties of the text up to and including symbol t (what the model has
    read), each a float array (T,):

        inside quotes     1 after an odd number of '"' (the opening quote is inside, the closing not)
        position in line  symbols before t on its line (0 for the first; a newline ends its line)
        indentation       leading spaces read so far on t's line (a tab counts as TAB_WIDTH)
        inside brackets   1 while more of ( [ { than of ) ] } have been read
    """
    T = len(symbols)
    quotes, column, indent, brackets = (np.zeros(T) for _ in range(4))
    inside, col, ind, depth, leading = False, 0, 0, 0, True
    for t, s in enumerate(symbols):
        inside ^= s == '"'
        if s in OPEN_BRACKETS:
            depth += 1
        elif s in CLOSE_BRACKETS:
            depth = max(depth - 1, 0)
        leading = leading and s in " \t"
        if leading:
            ind += TAB_WIDTH if s == "\t" else 1
        quotes[t], column[t], indent[t], brackets[t] = inside, col, ind, depth > 0
        col += 1
        if s == "\n":
            col, ind, leading = 0, 0, True
    return {"inside quotes": quotes, "position in line": column, "indentation": indent,
            "inside brackets": brackets}


def correlations(acts: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each unit of `acts` (T, H) with `feature` (T,) -> (H,).

    A unit or feature that does not vary has no correlation; it is reported as 0.
    """
    a = acts.astype(np.float64) - acts.mean(0)  # (T, H)
    f = feature.astype(np.float64) - feature.mean()  # (T,)
    denom = np.sqrt((a * a).sum(0) * (f * f).sum())  # (H,)
    cov = f @ a  # (H,)
    return np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 1e-12)


def top_units(acts: np.ndarray, features: dict[str, np.ndarray],
              n: int = TOP_UNITS) -> dict[str, list[tuple[int, float]]]:
    """For each feature, the n units most correlated with it (by |r|), as (unit, r) pairs."""
    ranked = {}
    for name, feature in features.items():
        r = correlations(acts, feature)
        order = np.argsort(-np.abs(r), kind="stable")[:n]
        ranked[name] = [(int(u), round(float(r[u]), 4)) for u in order if r[u] != 0]
    return ranked


# ---------------------------------------------------------------------------------------------
# The data the page shows, and the page

def quantize(acts: np.ndarray) -> dict:
    """(T, H) activations as int8 per unit: a = q / 127 * scale[unit]; q base64, time-major.

    A heat map needs two digits at most, and this keeps a page of 2000 symbols x 512 units at 1 MB.
    """
    scale = np.abs(acts).max(0)  # (H,)
    scale = np.where(scale > 0, scale, 1.0)
    q = np.round(acts / scale * 127).astype(np.int8)  # (T, H)
    return {"scale": [float(f"{s:.6g}") for s in scale],
            "q": base64.b64encode(q.tobytes()).decode("ascii")}


def trace_data(tr: Trace, keys: list[str] | None = None) -> dict:
    """A trace as JSON for the page: symbols, top-k, activations and correlated units per key."""
    keys = list(tr.states) if keys is None else keys
    features = text_features(tr.symbols)
    return {
        "symbols": tr.symbols,
        "top": [[[s, round(p, 4)] for s, p in row] for row in tr.top],
        "p_next": [round(p, 4) for p in tr.p_next],
        "skipped": tr.skipped,
        "hidden": int(next(iter(tr.states.values())).shape[1]) if tr.states else 0,
        "states": {key: quantize(tr.states[key]) for key in keys},
        "units": {key: top_units(tr.states[key], features) for key in keys},
    }


def run_info(name: str, model) -> dict:
    """What the page shows about a run and offers to pick from."""
    cfg = model.config
    return {"name": name, "cell": cfg.cell, "layers": cfg.layers, "hidden": cfg.hidden,
            "vocab_size": cfg.vocab_size, "tokenizer": model.vocab.kind,
            "states": state_keys(cfg)}


def page(data: dict | None = None) -> str:
    """The playground page as one HTML string: styles and script inlined, no external resources.

    With `data` (an offline trace, see `cmd_viz`) the page shows it; without, it talks to the
    `rnnkit serve` API of the server it came from.
    """
    web = resources.files("rnnkit") / "web"
    html = (web / "page.html").read_text(encoding="utf-8")
    css = (web / "page.css").read_text(encoding="utf-8")
    js = (web / "page.js").read_text(encoding="utf-8")
    # "<" escaped inside the JSON so that no text can close the <script> element early; the data
    # goes in last so that no placeholder inside it is replaced.
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    html = html.replace("/*STYLE*/", css, 1).replace("/*SCRIPT*/", js, 1)
    return html.replace("/*DATA*/null", blob, 1)


def cmd_viz(args) -> int:
    require_positive(max_chars=args.max_chars)
    if args.max_chars > MAX_STRING:
        raise RnnkitError(f"--max-chars must be at most {MAX_STRING:,}, got {args.max_chars:,}; "
                          "a page shows a few thousand symbols")
    model = load(args.run_dir)
    path = Path(args.text)
    out = output_file(args.out, args.run_dir, reads=(path,))
    # At most --max-chars symbols are read (one more, to know whether there are more): a byte
    # model's are the file's bytes as they are, not U+FFFD's where they are not UTF-8.
    byte = model.vocab.kind == "byte"
    try:
        # newline="": a file's \r\n stays two characters, as training read them
        with open(path, "rb") if byte else open(path, encoding="utf-8", newline="") as f:
            # a file's size bounds its characters: read no more (read(n) reserves n first)
            size = os.fstat(f.fileno())
            fits = size.st_size if stat.S_ISREG(size.st_mode) else args.max_chars
            text = f.read(min(args.max_chars, fits) + 1)
    except OSError as e:
        raise RnnkitError(f"cannot read text file {str(path)!r} ({e.strerror or e}); check the "
                          "path") from None
    except UnicodeDecodeError as e:  # read with U+FFFD in its place, as train and eval refuse
        raise RnnkitError(f"{str(path)!r} is not valid UTF-8 (byte {e.start} of what was read); "
                          "a character model reads text: convert the file to UTF-8") from None
    cut = len(text) > args.max_chars
    text = text[:args.max_chars]
    tr = trace(model, text)  # an error first, alone on stderr
    if cut:
        print(f"read the first {args.max_chars} {'bytes' if byte else 'characters'} (see "
              "--max-chars)", file=sys.stderr)
    if tr.skipped:
        warnings.warn(skipped_words(str(path), tr.skipped, model.vocab), RnnkitWarning,
                      stacklevel=1)
    data = {"run": run_info(Path(args.run_dir).resolve().name, model), "source": path.name,
            "trace": trace_data(tr)}
    try:
        write_bytes_atomic(out, page(data).encode("utf-8"))  # a failed write leaves no half page
    except OSError as e:
        raise RnnkitError(f"cannot write {str(out)!r} ({e.strerror or e}); choose another "
                          "--out") from None
    print(f"wrote {args.out} ({out.stat().st_size / 1e6:.1f} MB, {len(tr.symbols)} symbols); open it "
          "in a browser")
    return 0
