"""Text as tokens: vocabularies, the memory-mapped token file, and batches for truncated BPTT.

A corpus is encoded once into a prepared data directory:

    DATA/tokens.bin    the token ids, raw little-endian uint8/uint16/uint32, one per character (or byte)
    DATA/data.json     the vocabulary, the id type, the count and the source files

Encoding streams the files in chunks, and training reads `tokens.bin` through `numpy.memmap`, so a
corpus of any size costs a few megabytes of RAM. Two tokenizers:

    char   Unicode code points of UTF-8 text (invalid UTF-8 is an error that suggests `byte`)
    byte   raw bytes; accepts any file

The vocabulary holds only the symbols that occur, sorted by value. A byte vocabulary names its
symbols by the ASCII character or, for bytes 128 to 255, as "\\xa9": a character that is several
bytes in UTF-8 ("©" is c2 a9) is read as those bytes, one symbol each.
"""

from __future__ import annotations

import codecs
import hashlib
import numbers
import os
import re
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import brief, parse_json
from .configs import MAX_SIZE, TOKENIZERS, check_val_fraction
from .errors import RnnkitError
from .runfiles import atomic_write, write_json_atomic

CHUNK_BYTES = 8 << 20  # read corpora 8 MiB at a time
UNICODE_SIZE = 0x110000


@dataclass(frozen=True)
class Vocab:
    """The symbols a model knows: Unicode code points ("char") or byte values ("byte").

    `ids` are positions in `codes`, which is sorted. `decode` of byte ids returns bytes.
    """

    kind: str
    codes: tuple[int, ...]

    def __post_init__(self):
        if self.kind not in TOKENIZERS:
            raise RnnkitError(f"unknown tokenizer {self.kind!r}; choose char or byte")
        limit = 256 if self.kind == "byte" else UNICODE_SIZE
        if not self.codes or list(self.codes) != sorted(set(self.codes)) \
                or self.codes[0] < 0 or self.codes[-1] >= limit:
            raise RnnkitError(f"a {self.kind} vocabulary needs distinct sorted codes in [0, {limit})")

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        n = len(self.codes)
        return np.dtype(np.uint8 if n <= 256 else np.uint16 if n <= 65536 else np.uint32)

    def lookup(self) -> np.ndarray:
        """A table from code (code point or byte) to id, -1 where the code is not in the vocabulary."""
        table = np.full(256 if self.kind == "byte" else UNICODE_SIZE, -1, dtype=np.int64)
        table[list(self.codes)] = np.arange(len(self.codes))
        return table

    def symbol(self, i: int) -> str:
        """The name of id i: the character; for bytes, the character if ASCII, else "\\xa9"."""
        return self.name(self.codes[i])

    def name(self, code: int) -> str:
        """The name of a code point or byte value, as `symbol` gives it."""
        return chr(code) if self.kind == "char" or code < 128 else f"\\x{code:02x}"

    def index(self, symbol: str | int) -> int:
        """The id of one symbol, given by its name (as `symbol` gives it) or its code.

        Raises KeyError when the vocabulary has no such symbol; for a byte vocabulary that includes
        a character that is several bytes in UTF-8, and the message names those bytes.
        """
        if isinstance(symbol, (bytes, bytearray)):  # one byte, or a character in UTF-8
            if self.kind == "byte" and len(symbol) == 1:
                symbol = symbol[0]
            else:
                try:
                    symbol = bytes(symbol).decode("utf-8")
                except UnicodeDecodeError:
                    raise KeyError(f"{bytes(symbol)!r} is neither one byte nor UTF-8") from None
        if not isinstance(symbol, (str, numbers.Integral)) or isinstance(symbol, bool):
            raise KeyError(f"a symbol is a character, one byte or a code, got {symbol!r}")
        code = self.code(symbol) if isinstance(symbol, str) else int(symbol)  # (104.9 was 'h')
        i = int(np.searchsorted(self.codes, code))
        if i == len(self.codes) or self.codes[i] != code:
            raise KeyError(f"{symbol!r} is not in the vocabulary of {len(self)} symbols")
        return i

    def code(self, name: str) -> int:
        """The code point or byte value that `name` stands for (the inverse of `name`)."""
        if self.kind == "char":
            if len(name) != 1:
                raise KeyError(f"expected one character, got {name!r}")
            return ord(name)
        if len(name) == 1 and ord(name) < 128:
            return ord(name)
        if re.fullmatch(r"\\x[89a-f][0-9a-f]", name):
            return int(name[2:], 16)
        if len(name) == 1 and not 0xD800 <= ord(name) < 0xE000:  # not a lone surrogate
            raw = name.encode("utf-8")
            spelled = "".join(f"\\x{b:02x}" for b in raw)
            raise KeyError(f"{name!r} is {len(raw)} bytes in UTF-8 ({spelled}), not one symbol of "
                           "a byte vocabulary; give its bytes one at a time, as byte values ("
                           + ", then ".join(str(b) for b in raw) + ") or as bytes ("
                           + ", then ".join(repr(bytes([b])) for b in raw) + ")")
        raise KeyError(f"{name!r} is not a symbol of this byte vocabulary; give an ASCII "
                       "character, a byte value (0 to 255), or one byte, b'\\xa9'")

    def encode(self, text: str | bytes, what: str = "the text") -> tuple[list[int], list[str]]:
        """Ids of the known symbols of `text`, and the names of the distinct unknown ones (in
        order of appearance). A byte vocabulary reads a str as its UTF-8 bytes. `what` names
        the text in the error raised for a lone surrogate."""
        if isinstance(text, (bytes, bytearray)) and self.kind == "char":
            try:  # a character model's text in UTF-8, as the corpus it learnt was read
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as e:
                raise RnnkitError(f"{what} is bytes that are not UTF-8 (byte {e.start}); this is "
                                  "a character model: give a str") from None
        if isinstance(text, str):
            check_unicode(text, what)
            if self.kind == "byte":
                text = text.encode("utf-8")
        codes = list(text) if isinstance(text, bytes) else [ord(ch) for ch in text]
        ids_of = {code: i for i, code in enumerate(self.codes)}
        ids = [ids_of[c] for c in codes if c in ids_of]
        unknown = list(dict.fromkeys(self.name(c) for c in codes if c not in ids_of))
        return ids, unknown

    def decode(self, ids: Iterable[int]) -> str | bytes:
        """Text for char vocabularies, bytes for byte vocabularies."""
        codes = [self.codes[i] for i in ids]
        return bytes(codes) if self.kind == "byte" else "".join(map(chr, codes))

    def grown(self, codes: Iterable[int]) -> Vocab:
        """This vocabulary with `codes` added (a fine-tuned model's: the old symbols and the new
        text's). Ids follow the sorted codes, so an old symbol's id may move: map rows by code."""
        return Vocab(self.kind, tuple(sorted(set(self.codes).union(map(int, codes)))))

    def to_json(self) -> dict:
        return {"kind": self.kind, "codes": list(self.codes)}

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        if not isinstance(data, dict) or set(data) != {"kind", "codes"} \
                or not isinstance(data["codes"], list) \
                or not all(isinstance(c, int) and not isinstance(c, bool) for c in data["codes"]):
            raise RnnkitError('a vocabulary is {"kind": "char" or "byte", "codes": [integers]}')
        return cls(data["kind"], tuple(data["codes"]))


def check_unicode(text: str, what: str = "the text") -> None:
    """Raise RnnkitError if `text` holds a lone surrogate ("\\ud800"): a Python str can (JSON's
    "\\ud800" escape, a command-line argument that is not valid UTF-8), Unicode text cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RnnkitError(f"{what} contains {text[e.start]!r} at character {e.start}, a lone "
                          "surrogate, which is not Unicode text (bytes that are not UTF-8 arrive "
                          "this way); give valid UTF-8 text") from None


# ---------------------------------------------------------------------------------------------
# Reading corpora in chunks

def shown_unknown(unknown: list[str], kind: str, limit: int = 20) -> str:
    """Symbols `Vocab.encode` skipped, quoted for a message: a byte vocabulary names its unknown
    bytes as \\xNN already, which repr would escape again."""
    if kind != "byte":
        return repr("".join(unknown[:limit]) + ("..." if len(unknown) > limit else ""))
    # bytes from 128 are named \xNN already; those below are characters, a control one escaped
    shown = "".join(u if u.isprintable() else repr(u)[1:-1] for u in unknown[:limit])
    return f"'{shown}{'...' if len(unknown) > limit else ''}'"


def skipped_words(what: str, unknown: list[str], vocab: Vocab) -> str:
    """The warning for the symbols of a text (`what`) that `vocab` lacks and that were skipped,
    as eval, sample and viz give it."""
    return (f"{what} contains {shown_unknown(unknown, vocab.kind)}, not in the vocabulary of "
            f"{len(vocab)} symbols; skipped")


def check_corpus_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The paths as Paths, after checking each is an existing, non-empty, readable file."""
    files = [Path(p) for p in paths]
    for f in files:
        if not f.exists():
            raise RnnkitError(f"text file {str(f)!r} does not exist; check the path")
        if f.is_dir() and (f / "data.json").is_file():
            raise RnnkitError(f"{str(f)!r} is prepared data (from rnnkit prepare), which only "
                              f"train reads, given alone: rnnkit train {str(f)!r} --out DIR; "
                              "here give text files")
        if f.is_dir():
            raise RnnkitError(f"{str(f)!r} is a directory; pass the text files inside it")
        if not f.is_file():  # a pipe (<(...)) or a device: read twice, it would not hold
            raise RnnkitError(f"{str(f)!r} is not a regular file (a pipe or a device), and text "
                              "is read twice, once for its vocabulary; save it to a file first")
        if f.stat().st_size == 0:
            raise RnnkitError(f"text file {str(f)!r} is empty; give a file with text in it")
        if not os.access(f, os.R_OK):
            raise RnnkitError(f"text file {str(f)!r} is not readable; check its permissions")
    return files


def chunk_codes(path: Path, kind: str) -> Iterator[np.ndarray]:
    """The file's codes (byte values or code points, uint32), CHUNK_BYTES of the file at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(CHUNK_BYTES)
            final = not raw
            if kind == "byte":
                if final:
                    return
                yield np.frombuffer(raw, dtype=np.uint8).astype(np.uint32)
            else:
                pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
                try:
                    text = decoder.decode(raw, final=final)
                except UnicodeDecodeError as e:
                    at = offset - pending + e.start
                    raise RnnkitError(
                        f"{str(path)!r} is not valid UTF-8 (byte {at}); a character model reads "
                        "text; convert the file to UTF-8, or train a byte model (--tokenizer "
                        "byte) on raw bytes") from None
                if text:
                    yield np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
                if final:
                    return
            offset += len(raw)


def build_vocab(files: Iterable[Path], kind: str) -> Vocab:
    """First pass: the sorted set of codes that occur in the files."""
    seen = np.zeros(256 if kind == "byte" else UNICODE_SIZE, dtype=bool)
    for f in files:
        for codes in chunk_codes(f, kind):
            seen[codes] = True
    if seen.sum() > MAX_SIZE:  # found before encoding: no model takes so wide a vocabulary
        raise RnnkitError(f"the text has {int(seen.sum()):,} distinct characters, more than the "
                          f"{MAX_SIZE:,} a character model takes; train a byte model on it "
                          "(--tokenizer byte), whose 256 bytes spell every character")
    return Vocab(kind, tuple(int(c) for c in np.flatnonzero(seen)))


def prepare(files: list[Path], out_dir: str | os.PathLike, kind: str = "char",
            vocab: Vocab | None = None, skip_unknown: bool = False,
            for_run: bool = False) -> PreparedData:
    """Encode text files into `out_dir/tokens.bin` (streamed, atomic) and describe it in data.json.

    With no `vocab`, it is built from the files first. Symbols outside a given vocabulary are an
    error, or with `skip_unknown` left out and listed in `skipped`. Returns the memory-mapped data.
    `for_run`: a training run prepares its own text (DIR/data), and data.json says so: a run
    killed before its config.json was written leaves data that the same command may redo.
    """
    if kind not in TOKENIZERS:
        raise RnnkitError(f"unknown tokenizer {kind!r}; choose char or byte")
    files = check_corpus_files(files)
    vocab = vocab or build_vocab(files, kind)
    table = vocab.lookup()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file of that name, or a file on the way to it
        raise RnnkitError(f"cannot make the folder {out} ({e.strerror or e}); choose another "
                          "--out") from None
    count, skipped = 0, {}
    with atomic_write(out / "tokens.bin") as w:
        for f in files:
            for codes in chunk_codes(f, vocab.kind):
                ids = table[codes]
                if (ids < 0).any() and skip_unknown:
                    skipped.update(dict.fromkeys(map(int, np.unique(codes[ids < 0]))))
                    ids = ids[ids >= 0]
                elif (ids < 0).any():
                    bad = int(codes[ids < 0][0])
                    shown = shown_unknown([vocab.name(bad)], vocab.kind)
                    raise RnnkitError(f"{str(f)!r} contains {shown} (code {bad}), which is not "
                                      "in the vocabulary; prepare with a vocabulary that has it")
                w.write(ids.astype(vocab.dtype).tobytes())
                count += len(ids)
    meta = {"vocab": vocab.to_json(), "dtype": vocab.dtype.name, "count": count,
            "sources": [source(f) for f in files],
            "skipped": [vocab.name(c) for c in skipped]}
    if for_run:
        meta["for_run"] = True
    write_json_atomic(out / "data.json", meta)
    return PreparedData.open(out)


def source(f: Path) -> dict:
    """What data.json records of a text file it was prepared from: its absolute path, its size
    and its modification time, which tell a file edited since (even to the same size)."""
    st = f.stat()
    return {"path": str(f.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class PreparedData:
    """A prepared data directory, memory-mapped: `tokens` (N,) and its `vocab`."""

    path: Path
    vocab: Vocab
    tokens: np.ndarray
    sources: list
    skipped: list  # symbols left out because the given vocabulary lacks them

    @classmethod
    def open(cls, path: str | os.PathLike) -> PreparedData:
        """Open a prepared data directory after checking it: data.json, the size of tokens.bin,
        and every id in it (read in chunks: an id outside the vocabulary would fail far later,
        as an index error inside the model)."""
        path = Path(path)
        try:
            meta = parse_json((path / "data.json").read_text(encoding="utf-8"))
            vocab = Vocab.from_json(meta["vocab"])
            count = meta["count"]
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"count must be a whole number, got {brief(repr(count))}")
            if meta["dtype"] != vocab.dtype.name:
                raise ValueError("dtype does not match the vocabulary")
            size = (path / "tokens.bin").stat().st_size
            if size != count * vocab.dtype.itemsize:
                raise ValueError(f"tokens.bin holds {size} bytes, data.json promises {count} ids")
            bad = first_bad_id(path / "tokens.bin", vocab.dtype, len(vocab))
            if bad:
                raise ValueError(f"tokens.bin holds id {bad[1]} at position {bad[0]}, outside the "
                                 f"vocabulary of {len(vocab)} symbols")
            tokens = np.memmap(path / "tokens.bin", dtype=vocab.dtype, mode="r", shape=(count,)) \
                if count else np.zeros(0, vocab.dtype)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RnnkitError(f"{str(path)!r} is not a readable prepared data directory ({e}); "
                              "prepare it again from the text") from None
        return cls(path, vocab, tokens, meta.get("sources", []), meta.get("skipped", []))

    def identity(self) -> dict:
        """What a run records of the data it trains on (config.json "data_id"): the number of
        tokens and a digest of them (read in chunks, plain reads as in `first_bad_id`), so
        that the folder prepared again from other text is told apart even with the same
        vocabulary, and the same text prepared again is not."""
        digest = hashlib.sha256()
        with open(self.path / "tokens.bin", "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
        return {"tokens": len(self.tokens), "sha256": digest.hexdigest()[:16]}

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(train, val): the first (1 - val_fraction) of the tokens, and the rest (nanoGPT's split)."""
        check_val_fraction(val_fraction)
        n_train = int(len(self.tokens) * (1 - val_fraction))
        return self.tokens[:n_train], self.tokens[n_train:]


def first_bad_id(path: Path, dtype: np.dtype, vocab_size: int) -> tuple[int, int] | None:
    """(position, id) of the first id of a token file that is vocab_size or more, or None.

    Read with plain reads CHUNK_BYTES at a time rather than through the memory map, so that the
    pages read do not stay in this process's memory: it stays flat whatever the corpus size.
    """
    per_chunk = max(1, CHUNK_BYTES // dtype.itemsize) * dtype.itemsize  # whole ids
    position = 0
    with open(path, "rb") as f:
        while chunk := f.read(per_chunk):
            ids = np.frombuffer(chunk, dtype=dtype)
            if ids.max() >= vocab_size:
                j = int(np.argmax(ids >= vocab_size))
                return position + j, int(ids[j])
            position += len(ids)
    return None


# ---------------------------------------------------------------------------------------------
# The default corpus

def default_corpus(limit_bytes: int = 4 << 20) -> list[Path]:
    """This Python's own standard-library source, the first `limit_bytes` of it in sorted order.

    Nothing to download and nothing committed: the blog trained on the Linux source; rnnkit's
    quickstart trains on the interpreter that runs it. Test suites are left out, and so are the
    third-party modules of a site-packages folder inside the library's (as a Python that is not
    a virtual environment has), each under its own licence.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files, total = [], 0
    for f in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in f.parts[-2] or f.name.startswith("test") \
                or f.parts[-2] in ("site-packages", "dist-packages"):
            continue
        try:
            size = f.stat().st_size
            f.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if size == 0:  # empty __init__.py files: nothing to learn from
            continue
        files.append(f)
        total += size
        if total >= limit_bytes:
            break
    if not files:
        raise RnnkitError(f"found no Python source under {stdlib} for the default corpus "
                          f"(Python {sys.version.split()[0]}); pass a TEXT_FILE")
    return files


# ---------------------------------------------------------------------------------------------
# Batches for truncated backpropagation through time

class Streams:
    """B contiguous streams over a token array, read T steps at a time.

    The tokens are cut into B equal streams; batch j of an epoch holds positions j*T .. j*T+T-1 of
    every stream (targets one further), so the hidden state left by batch j is the right start for
    batch j+1. Each epoch starts at a small offset drawn from (seed, epoch), so batch boundaries
    move from epoch to epoch; batch i is a pure function of i, which makes resuming exact.

    `streams` selects which of the B streams this reader serves (all by default), so that
    several processes can share one global batch.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int = 0,
                 streams: range | None = None):
        self.tokens, self.B, self.T, self.seed = tokens, batch_size, seq_len, seed
        self.L = len(tokens) // batch_size  # tokens per stream
        self.per_epoch = (self.L - 1) // seq_len  # batches per epoch
        if self.per_epoch < 1:
            raise RnnkitError(f"{len(tokens)} tokens cannot fill {batch_size} streams of "
                              f"{seq_len + 1}; lower --batch-size or --seq-len, or add text")
        self.slack = self.L - 1 - self.per_epoch * seq_len
        self.streams = streams if streams is not None else range(batch_size)

    def offset(self, epoch: int) -> int:
        if epoch == 0 or self.slack == 0:
            return 0
        return int(np.random.default_rng([self.seed, epoch]).integers(self.slack + 1))

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Batch i: inputs (b, T), targets (b, T) as int64, and whether it starts an epoch."""
        epoch, j = divmod(i, self.per_epoch)
        starts = np.asarray(self.streams) * self.L + self.offset(epoch) + j * self.T  # (b,)
        index = starts[:, None] + np.arange(self.T + 1)  # (b, T+1)
        chunk = np.asarray(self.tokens[index], dtype=np.int64)
        return chunk[:, :-1], chunk[:, 1:], j == 0


def fit_batch_size(n_tokens: int, batch_size: int, seq_len: int) -> int:
    """The largest batch size <= batch_size whose streams each hold one sequence plus its target."""
    if n_tokens < seq_len + 1:
        raise RnnkitError(f"the training text has {n_tokens} tokens, shorter than one training "
                          f"sequence of {seq_len} + 1; lower --seq-len or give more text")
    return max(1, min(batch_size, n_tokens // (seq_len + 1)))
