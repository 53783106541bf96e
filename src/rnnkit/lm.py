"""The character-level language model: embedding -> recurrent stack -> logits over the vocabulary.

    logits, loss, state = model(inputs, targets, state)    # inputs, targets: (B, T) token ids

The embedding is the 1-of-k input of the notes folded into a lookup (one-hot @ W == a row of W).
`loss` is the mean softmax cross-entropy in nats per character; `state` is the recurrent state
after the last step, which training carries into the next batch (truncated BPTT).

A trained model (see `rnnkit.load`) also generates text and steps one character at a time:

    model.generate(prime="ROMEO:", length=200, temperature=0.8, seed=1)
    s = model.stepper(); probs = s.step("h"); probs["e"]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .configs import ModelConfig
from .errors import RnnkitError, require_positive, require_seed
from .recurrent import Recurrent
from .text import Vocab

__all__ = ["CharLM", "ModelConfig", "StepWeights"]


class StepWeights(NamedTuple):
    """What one step of a `CharLM` reads, detached from training (see `CharLM.step_weights`).

    For token x and layers l = 0 .. L-1, in PyTorch's layout and gate order:
        input term of layer 0   = table[x]                       (the embedding folded in)
        input term of layer l>0 = W_ih[l] @ h_{l-1} + b_ih[l]
        hidden term of layer l  = W_hh[l] @ h_l + b_hh[l]
        logits                  = W_hy @ h_{L-1} + b_y
    """

    cell: str  # "lstm", "gru" or "rnn"
    table: Tensor  # (V, G*H): embedding @ W_ih[0].T + b_ih[0]; G = 4, 3, 1 gates
    layers: list[tuple[Tensor, Tensor, Tensor, Tensor]]  # (W_ih, W_hh, b_ih, b_hh) of each layer
    W_hy: Tensor  # (V, H)
    b_y: Tensor  # (V,)


class CharLM(nn.Module):
    """Embedding (V, E) -> Recurrent(cell, E, H, L) -> dropout -> Linear (H, V)."""

    def __init__(self, config: ModelConfig, vocab: Vocab | None = None):
        super().__init__()
        if vocab is not None and len(vocab) != config.vocab_size:
            raise RnnkitError(f"the vocabulary has {len(vocab)} symbols but the model expects "
                              f"{config.vocab_size}")
        require_positive(vocab_size=config.vocab_size)
        self.config, self.vocab = config, vocab
        V, E, H = config.vocab_size, config.embed_size, config.hidden
        self.embed = nn.Embedding(V, E)
        self.rnn = Recurrent(config.cell, E, H, config.layers, config.dropout)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(H, V)

    def forward(self, inputs: Tensor, targets: Tensor | None = None, state=None):
        """inputs (B, T) -> logits (B, T, V), mean loss in nats (or None), state after step T."""
        x = self.embed(inputs)  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        logits = self.head(self.drop(out))  # (B, T, V)
        loss = None
        if targets is not None:
            V = logits.shape[-1]
            loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        return logits, loss, state

    @torch.no_grad()
    def step_weights(self) -> StepWeights:
        """The weights of one step (`StepWeights`), for steppers that hold them in their own
        layout or precision; a snapshot in effect, since the stepper lays them out once."""
        layers = [tuple(w.detach() for w in self.rnn.layer_weights(layer))
                  for layer in range(self.config.layers)]
        W_ih, _, b_ih, _ = layers[0]
        table = self.embed.weight @ W_ih.T + b_ih  # (V, E) @ (E, G*H) -> (V, G*H)
        return StepWeights(self.config.cell, table, layers, self.head.weight.detach(),
                           self.head.bias.detach())

    def stepper(self):
        """A `Stepper`: the seed's stateful API on this model, `probs = s.step("h")`."""
        from .sample import Stepper

        return Stepper(self)

    def stream(self, prime: str = "", length: int = 200, temperature: float = 1.0,
               top_k: int | None = None, greedy: bool = False, seed: int | None = None, *,
               top_p: float | None = None, repetition_penalty: float = 1.0,
               num_samples: int | None = None, beam: int | None = None,
               precision: str = "fp32") -> Iterator[str] | Iterator[list[str]]:
        """Generated text piece by piece (the prime not included); see `sample.generate`.

        With `num_samples=N`, N streams in one batch: each piece is a list of N strings.
        """
        from .sample import generate

        if seed is not None:
            require_seed(seed, "seed")

        return generate(self, prime, length, temperature, top_k, greedy, seed, top_p=top_p,
                        repetition_penalty=repetition_penalty, num_samples=num_samples,
                        beam=beam, precision=precision)

    def generate(self, prime: str = "", length: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, greedy: bool = False, seed: int | None = None, *,
                 top_p: float | None = None, repetition_penalty: float = 1.0,
                 num_samples: int | None = None, beam: int | None = None,
                 precision: str = "fp32") -> str | list[str]:
        """The prime followed by `length` generated characters (bytes for a byte model, decoded);
        with `num_samples=N`, a list of N such texts, generated in one batch.

        For very long outputs use `stream`, which yields the text piece by piece.
        """
        from .configs import MAX_STRING
        from .sample import unfinished

        # `stream` checks the options (their types first) and generates nothing until read
        pieces = self.stream(prime, length, temperature, top_k, greedy, seed, top_p=top_p,
                             repetition_penalty=repetition_penalty, num_samples=num_samples,
                             beam=beam, precision=precision)
        if length * (num_samples or 1) > MAX_STRING:
            raise RnnkitError(f"length {length:,} x {num_samples or 1} samples is more than "
                              f"generate returns as strings ({MAX_STRING:,} characters); use "
                              "model.stream(...) to iterate over the text")
        if isinstance(prime, bytes):  # a byte model's prime, given exactly: shown as text, the
            # bytes of a character it begins shown with the generated bytes that finish it
            prime = prime[:len(prime) - len(unfinished(prime))].decode("utf-8", errors="replace")
        if num_samples is None:
            return prime + "".join(pieces)
        rows = list(zip(*pieces, strict=True)) or [() for _ in range(num_samples)]  # (N, length)
        return [prime + "".join(row) for row in rows]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
