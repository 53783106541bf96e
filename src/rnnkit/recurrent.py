"""A stack of recurrent layers: fused over whole sequences, or one step at a time.

`Recurrent` owns one `torch.nn.LSTM` / `GRU` / `RNN` module. Over a sequence it calls that module,
so training runs on torch's fused kernels (oneDNN on CPU, cuDNN on GPU). `step()` runs the same
weights through the cell equations in `rnnkit.cells`, one time step at a time, which is what
streaming generation needs; the tests check that both paths agree, state carried.

State follows torch: `h` is (L*D, B, H) for L layers and D directions; an LSTM's state is the pair
`(h, c)`. `None` means zeros, as the seed's `h` starts at zeros.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import cells
from .errors import RnnkitError, require_size

FUSED = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class Recurrent(nn.Module):
    """L stacked layers of one cell type, dropout between layers.

    Args:
        cell: "lstm", "gru" or "rnn" (tanh).
        input_size: I, features per time step.
        hidden_size: H, units per layer.
        num_layers: L.
        dropout: applied to each layer's output except the last's (torch's convention).
        bidirectional: run a second stack backwards in time (D = 2); such a stack has no `step`.

    Shapes: `forward(x (B, T, I)) -> (outputs (B, T, D*H), state)`; `step(x (B, I)) -> ((B, H), state)`.

    >>> stack = Recurrent("gru", input_size=8, hidden_size=16, num_layers=2)
    >>> y, h = stack(torch.randn(3, 5, 8))
    >>> y.shape, h.shape
    (torch.Size([3, 5, 16]), torch.Size([2, 3, 16]))
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, bidirectional: bool = False):
        super().__init__()
        cells.check_cell(cell)
        require_size(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers)
        if not isinstance(bidirectional, bool):  # "false" is a true value
            raise RnnkitError(f"bidirectional must be True or False, got {bidirectional!r}")
        input_size, hidden_size, num_layers = int(input_size), int(hidden_size), int(num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) \
                or not 0.0 <= dropout < 1.0:
            raise RnnkitError(f"dropout must be in [0, 1), got {dropout}")
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout if num_layers > 1 else 0.0  # torch warns on dropout with one layer
        self.rnn = FUSED[cell](input_size, hidden_size, num_layers, batch_first=True,
                               dropout=self.dropout, bidirectional=bidirectional)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def forward(self, x: Tensor, state=None, lengths: Tensor | None = None):
        """Run the fused kernel over x (B, T, I).

        `lengths` (B,) marks how many steps of each padded row are real; the batch is then packed,
        so padding never reaches the recurrence, the returned state is each row's state at its own
        last step, and outputs past a row's length are zeros.
        """
        weight = self.rnn.weight_ih_l0
        half = isinstance(x, Tensor) and x.dtype in (torch.float16, torch.bfloat16)  # autocast's
        if not half and (not isinstance(x, Tensor) or x.dtype != weight.dtype):
            x = cells.as_floats(x, weight, "x")  # an array, integers or float64
        cells.check_sequence_input(x, self.rnn.input_size)
        if state is not None:
            state = cells.state_like(self.cell, state, weight if half else x,
                                     (self.num_layers * self.directions, x.shape[0],
                                      self.hidden_size),
                                     "a stack's state is (layers x directions, batch, hidden)")
        if lengths is None:
            return self.rnn(x, state)
        T = x.shape[1]
        lengths = torch.as_tensor(lengths).cpu()  # a list too, as torch's packing takes
        if lengths.dtype == torch.bool or lengths.is_floating_point() and not bool(
                (lengths == lengths.round()).all() and torch.isfinite(lengths).all()):
            raise RnnkitError(f"lengths must be whole numbers of steps, got {lengths.tolist()[:8]}")
        if lengths.shape != x.shape[:1] or len(lengths) and (int(lengths.min()) < 1
                                                           or int(lengths.max()) > T):
            raise RnnkitError(f"lengths must be one per row of x, each from 1 to the inputs' {T} "
                              f"steps; got {lengths.tolist()[:8]} for {x.shape[0]} rows")
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, D*H)
        return out, state

    def layer_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of one layer, forward direction."""
        r = self.rnn
        return (getattr(r, f"weight_ih_l{layer}"), getattr(r, f"weight_hh_l{layer}"),
                getattr(r, f"bias_ih_l{layer}"), getattr(r, f"bias_hh_l{layer}"))

    def zero_state(self, batch_size: int, device=None, dtype=None):
        """Zeros in the state layout of `forward` and `step`."""
        p = self.rnn.weight_hh_l0
        h = torch.zeros(self.num_layers * self.directions, batch_size, self.hidden_size,
                        device=device or p.device, dtype=dtype or p.dtype)
        return (h, h.clone()) if self.cell == "lstm" else h

    def step(self, x: Tensor, state=None):
        """Advance every layer by one time step through the cell equations.

        x (B, I) -> (output (B, H), state). Uses the fused module's own tensors, so it equals
        `forward` on a sequence of length one, and a loop of steps equals `forward` on the sequence.
        """
        if self.bidirectional:
            raise RnnkitError("a bidirectional stack reads the whole sequence; it cannot step")
        x = cells.as_floats(x, self.rnn.weight_ih_l0, "x")  # integers, float64 or an array
        cells.check_step_input(x, self.rnn.input_size)
        if state is None:
            state = self.zero_state(x.shape[0], x.device, x.dtype)
        state = cells.state_like(self.cell, state, x,
                                 (self.num_layers, x.shape[0], self.rnn.hidden_size),
                                 "a stack's state is (layers, batch, hidden)",
                                 "; one layer's (B, H) is h[None]")
        lstm = self.cell == "lstm"
        h_all, c_all = state if lstm else (state, None)
        h_next, c_next = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout and self.training:
                x = nn.functional.dropout(x, self.dropout, training=True)
            weights = self.layer_weights(layer)
            if lstm:
                h, c = cells.lstm_step(x, h_all[layer], c_all[layer], *weights)
                c_next.append(c)
            else:
                h = cells.step(self.cell, x, h_all[layer], *weights)
            h_next.append(h)
            x = h
        h_next = torch.stack(h_next)  # (L, B, H)
        return x, ((h_next, torch.stack(c_next)) if lstm else h_next)


def detach_state(state):
    """Cut the graph behind a carried state (truncated BPTT); works for h and for (h, c)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
