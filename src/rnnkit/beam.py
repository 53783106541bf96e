"""Beam search: the most likely continuations, for any model that steps one token at a time.

    found = beam_search(advance, logits, width=5, length=50, end=None)
    tokens, log_prob = found[0]                          # the best sequence and its log-probability

`logits` (V,) are the model's next-token logits after its prime (or, for a decoder, after the
start symbol). `advance(tokens (K,), rows (K,)) -> logits (K, V)` keeps rows `rows` of the
model's state, in that order, feeds each row its token and returns the next logits: the language
model's `Stepper` (`select`, then `feed`) and the encoder/decoder's `Decoder` both provide it.

The search keeps the `width` prefixes with the highest log-probability (the sum of the log-softmax
of each token), as Hugging Face's `generate(num_beams=K)` does. The score is the plain
log-probability, not divided by the length (HF's `length_penalty=0`), so what is returned is
the most likely sequence found, comparable with greedy decoding's. A sequence that emits `end`
is finished (the end symbol included in its score); the search stops when no live beam can
beat the best finished one (log-probabilities only fall), or after `length` tokens. What it
returns are finished sequences and, if it ran to `length`, the prefixes alive there: after an
early stop, the live prefixes are left out (they are neither finished nor of full length).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .errors import RnnkitError


def beam_search(advance: Callable[[Tensor, Tensor], Tensor], logits: Tensor, width: int,
                length: int, end: int | None = None) -> list[tuple[list[int], float]]:
    """Up to `width` sequences with their log-probabilities, most likely first (see the module)."""
    if length == 0:
        return [([], 0.0)]
    # Each step's tokens and the rows of the prefixes they extend (backpointers): a prefix is
    # read back once, at the end, so the search's time grows with length, not its square.
    steps: list[tuple[list[int], list[int]]] = []
    scores = torch.zeros(1, dtype=torch.float64)  # (K,) log-probability of each live prefix
    logits = logits.reshape(1, -1)  # (K, V)
    finished: list[tuple[float, int, int, int]] = []  # (score, step, row, end): the best `width`
    for t in range(length):
        logp = torch.log_softmax(logits.double().cpu(), -1) + scores[:, None]  # (K, V)
        V = logp.shape[1]
        top, flat = logp.flatten().topk(min(2 * width, logp.numel()))  # enough to refill K beams
        live = []  # (row, token, score) of the prefixes that go on
        for score, i in zip(top.tolist(), flat.tolist(), strict=True):
            row, token = divmod(i, V)
            if token == end:
                finished.append((score, t, row, token))
            elif len(live) < width:
                live.append((row, token, score))
        finished = sorted(finished, reverse=True)[:width]
        steps.append(([token for _, token, _ in live], [row for row, _, _ in live]))
        scores = torch.tensor([score for _, _, score in live], dtype=torch.float64)
        best_finished = finished[0][0] if finished else -float("inf")
        if not live or best_finished >= float(scores.max()) or t + 1 == length:
            break
        rows = torch.tensor([row for row, _, _ in live])
        tokens = torch.tensor([token for _, token, _ in live])
        logits = advance(tokens, rows)

    def prefix(t: int, row: int) -> list[int]:
        """The tokens of live row `row` after step t, read back along the backpointers."""
        seq = []
        for tokens, rows in reversed(steps[:t + 1]):
            seq.append(tokens[row])
            row = rows[row]
        return seq[::-1]

    last = len(steps) - 1
    found = [((prefix(t - 1, row) if t else []) + [token], score)
             for score, t, row, token in finished]
    if len(steps) == length:  # live prefixes that reached the length are results too; after
        # an early stop they are prefixes of sequences the search did not finish
        found += [(prefix(last, k), score) for k, score in enumerate(scores.tolist())]
    return sorted(found, key=lambda f: -f[1])[:width]


def decode_beam(decoder, state, b: int, max_length: int,
                width: int) -> list[tuple[list[int], float]]:
    """Beam search for row `b` of an encoder/decoder's initial `state` ((L, B, H), or its (h, c)):
    sequences without the end symbol, with their log-probabilities (end symbol included)."""
    if width < 1:
        raise RnnkitError(f"the beam width must be at least 1, got {width}")
    c = decoder.config
    device = decoder.out.weight.device
    state = tuple(s[:, b:b + 1] for s in state) if isinstance(state, tuple) else state[:, b:b + 1]

    def advance(tokens: Tensor, rows: Tensor) -> Tensor:
        nonlocal state
        rows = rows.to(device)
        state = tuple(s[:, rows] for s in state) if isinstance(state, tuple) else state[:, rows]
        h, state = decoder.rnn.step(decoder.embed(tokens.to(device)), state)  # (K, H)
        return decoder.out(h)  # (K, V)

    first = advance(torch.tensor([c.start]), torch.tensor([0]))[0]
    found = beam_search(advance, first, width, max_length, end=c.end)
    return [(seq[:-1] if seq and seq[-1] == c.end else seq, score) for seq, score in found]
