"""Generation: the stateful one-character-at-a-time API, and sampling with prime and temperature.

    s = model.stepper()
    probs = s.step("h")        # feed one character; the hidden state stays inside `s`
    probs["e"]                 # confidence that "e" comes next
    probs.top(5)               # [(char, probability), ...]

`generate` primes a stepper with text, then repeatedly samples the next character from
softmax(logits / temperature), optionally restricted to the `top_k` most likely, or takes the most
likely one (`greedy`). A seed fixes the sampling, so the same seed gives the same text.

Speed: a plain loop that calls a fused `torch.nn.LSTM` once per character spends most of its time
setting the kernel up. The stepper instead runs the cell equations on a snapshot of the weights
laid out for one-row products: layer 0's input term for every character is precomputed (the
embedding folded through W_ih, one table lookup per step), and deeper layers multiply [x, h] by
[W_ih | W_hh] in one matrix product. Long primes go through the fused kernel in chunks.
"""

from __future__ import annotations

import codecs
import os
import warnings
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from .cells import gru_gates, lstm_gates
from .errors import RnnkitError

PRIME_CHUNK = 4096  # prime text fed through the fused kernel this many characters at a time
MAX_PRIME = 1_000_000  # characters; a longer prime is refused rather than fed for minutes
MAX_STRING = 10_000_000  # characters `generate` returns as one string; `stream` has no limit


class RnnkitWarning(UserWarning):
    """Something was skipped or adjusted; the message says what."""


class Probs(Mapping):
    """A next-symbol distribution, indexable by character: `probs["e"]`. `tensor` is (V,)."""

    def __init__(self, tensor: Tensor, vocab):
        self.tensor, self.vocab = tensor, vocab

    def __getitem__(self, symbol) -> float:
        return float(self.tensor[self.vocab.index(symbol)])

    def __iter__(self):
        return (self.vocab.symbol(i) for i in range(len(self.vocab)))

    def __len__(self) -> int:
        return len(self.vocab)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k most likely symbols with their probabilities, most likely first."""
        p, i = self.tensor.topk(min(k, len(self.vocab)))
        return [(self.vocab.symbol(int(j)), float(q)) for q, j in zip(p, i, strict=True)]

    def __repr__(self) -> str:
        return "Probs(" + ", ".join(f"{s!r}: {p:.3f}" for s, p in self.top(5)) + ", ...)"


class Stepper:
    """The seed's `y = rnn.step(x)` on a trained language model; holds the hidden state.

    The weights are a snapshot taken at construction: make a new stepper after more training.
    """

    @torch.inference_mode()
    def __init__(self, model):
        self.model, self.vocab = model, model.vocab
        rnn, cfg = model.rnn, model.config
        self.cell, self.L = cfg.cell, cfg.layers
        W_ih, W_hh, b_ih, b_hh = rnn.layer_weights(0)
        # Layer 0's input term for every symbol: embedding (V, E) through W_ih -> (V, G*H).
        table = model.embed.weight @ W_ih.T + b_ih
        self.table = table if self.cell == "gru" else table + b_hh
        self.layers = [(W_hh.T.contiguous(), b_hh)]
        for layer in range(1, self.L):
            W_ih, W_hh, b_ih, b_hh = rnn.layer_weights(layer)
            if self.cell == "gru":  # the reset gate needs the hidden projection on its own
                self.layers.append((W_ih.T.contiguous(), W_hh.T.contiguous(), b_ih, b_hh))
            else:  # [x, h] @ [W_ih | W_hh].T in one product
                self.layers.append((torch.cat([W_ih, W_hh], 1).T.contiguous(), b_ih + b_hh))
        self.W_hy, self.b_y = model.head.weight.T.contiguous(), model.head.bias
        self.reset()

    def reset(self) -> None:
        """Back to the zero state; the next step starts a new text."""
        p = self.table
        self.h = [p.new_zeros(1, self.model.config.hidden) for _ in range(self.L)]  # (1, H) each
        self.c = [torch.zeros_like(h) for h in self.h] if self.cell == "lstm" else None
        self.logits: Tensor | None = None

    @torch.inference_mode()
    def feed(self, token: int) -> Tensor:
        """Advance by one token id; returns the next-token logits (V,)."""
        h, c = self.h, self.c
        for layer in range(self.L):
            if layer == 0:
                x_term = self.table[token:token + 1]  # (1, G*H)
                W_hh, b_hh = self.layers[0]
                if self.cell == "gru":
                    h[0] = gru_gates(x_term, torch.addmm(b_hh, h[0], W_hh), h[0])
                    continue
                gates = torch.addmm(x_term, h[0], W_hh)
            elif self.cell == "gru":
                W_ih, W_hh, b_ih, b_hh = self.layers[layer]
                gi, gh = torch.addmm(b_ih, h[layer - 1], W_ih), torch.addmm(b_hh, h[layer], W_hh)
                h[layer] = gru_gates(gi, gh, h[layer])
                continue
            else:
                W, b = self.layers[layer]
                gates = torch.addmm(b, torch.cat([h[layer - 1], h[layer]], 1), W)  # (1, G*H)
            if self.cell == "lstm":
                h[layer], c[layer] = lstm_gates(gates, c[layer])
            else:
                h[layer] = torch.tanh(gates)
        self.logits = torch.addmm(self.b_y, h[-1], self.W_hy)[0]  # (V,)
        return self.logits

    @torch.inference_mode()
    def feed_many(self, tokens: list[int]) -> Tensor:
        """Advance by many tokens at once; long runs go through the fused kernel in chunks."""
        if len(tokens) <= 16:
            for t in tokens:
                self.feed(t)
            return self.logits
        model = self.model
        h = torch.stack(self.h)  # (L, 1, H)
        state = (h, torch.stack(self.c)) if self.cell == "lstm" else h
        device = self.table.device
        for start in range(0, len(tokens), PRIME_CHUNK):
            x = torch.tensor([tokens[start:start + PRIME_CHUNK]], device=device)  # (1, T)
            logits, _, state = model(x, state=state)
            self.logits = logits[0, -1]
        h, c = state if self.cell == "lstm" else (state, None)
        self.h = list(h.unbind(0))  # L tensors (1, H)
        self.c = list(c.unbind(0)) if c is not None else None
        return self.logits

    def step(self, symbol: str | int) -> Probs:
        """Feed one character (or, for a byte model, a byte value); get the next one's distribution."""
        try:
            token = self.vocab.index(symbol)
        except KeyError as e:
            raise RnnkitError(str(e.args[0])) from None
        return Probs(torch.softmax(self.feed(token).float(), -1), self.vocab)


def pick(logits: Tensor, temperature: float, top_k: int | None, greedy: bool,
         generator: torch.Generator) -> int:
    """Choose the next token from logits (V,)."""
    if greedy:
        return int(logits.argmax())
    logits = logits.float().cpu()
    # Shift the largest logit to 0 before dividing: a tiny temperature then sends the others to
    # -inf, not the largest to +inf (inf - inf is NaN in softmax). A temperature below float32's
    # smallest normal number would round to 0 and make 0 / 0.
    logits = (logits - logits.max()) / max(temperature, torch.finfo(torch.float32).tiny)
    if top_k is not None and top_k < logits.shape[0]:
        kth = logits.topk(top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))


def check_options(length: int, temperature: float, top_k: int | None) -> None:
    if length < 0:
        raise RnnkitError(f"length must be 0 or more, got {length}")
    if not temperature > 0:
        raise RnnkitError(f"temperature must be positive, got {temperature}; "
                          "for the most likely character every time use greedy")
    if top_k is not None and top_k < 1:
        raise RnnkitError(f"top-k must be at least 1, got {top_k}")


def check_prime(prime: str) -> None:
    if len(prime) > MAX_PRIME:
        raise RnnkitError(f"the prime text has {len(prime):,} characters; the limit is "
                          f"{MAX_PRIME:,}; give a shorter prime (its end matters most)")


def generate(model, prime: str = "", length: int = 200, temperature: float = 1.0,
             top_k: int | None = None, greedy: bool = False,
             seed: int | None = None) -> Iterator[str]:
    """Yield `length` generated symbols as text, one piece per symbol, after priming with `prime`.

    Prime characters outside the vocabulary are skipped with an RnnkitWarning naming them. With
    no usable prime the model starts as after a newline (or its first symbol, if it has no
    newline). A byte model's output is decoded as UTF-8, invalid sequences shown as U+FFFD.
    """
    check_options(length, temperature, top_k)
    check_prime(prime)
    vocab = model.vocab
    if vocab is None:
        raise RnnkitError("this model has no vocabulary; load a trained one with rnnkit.load(DIR)")
    ids, unknown = vocab.encode(prime)
    if unknown:
        shown = "".join(unknown[:20]) + ("..." if len(unknown) > 20 else "")
        warnings.warn(f"prime text contains {shown!r}, not in the vocabulary of {len(vocab)} "
                      "symbols; skipped", RnnkitWarning, stacklevel=2)
    if not ids:
        try:
            ids = [vocab.index("\n")]
        except KeyError:
            ids = [0]
    seed = seed if seed is not None else int.from_bytes(os.urandom(8), "little")
    return produce(model, ids, length, temperature, top_k, greedy, seed)


def produce(model, ids: list[int], length: int, temperature: float, top_k: int | None,
            greedy: bool, seed: int) -> Iterator[str]:
    """The generator behind `generate`, which has already checked the options."""
    vocab = model.vocab
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        stepper = Stepper(model)
        logits = stepper.feed_many(ids)
        decoder = codecs.getincrementaldecoder("utf-8")("replace") if vocab.kind == "byte" else None
        for _ in range(length):
            token = pick(logits, temperature, top_k, greedy, generator)
            piece = vocab.decode([token])
            yield decoder.decode(piece) if decoder else piece
            logits = stepper.feed(token)
        if decoder:
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
    finally:
        model.train(was_training)
