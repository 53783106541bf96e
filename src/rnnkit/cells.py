"""One time step of the three recurrent cells, written as their equations.

Convention: PyTorch's. Each cell has `weight_ih` (G*H, I), `weight_hh` (G*H, H), `bias_ih` (G*H,)
and `bias_hh` (G*H,), with the G gate blocks stacked along the first axis in torch's order:

    tanh RNN  G = 1
    LSTM      G = 4, gates i, f, g, o
    GRU       G = 3, gates r, z, n   (h_next = (1 - z) * n + z * h, as torch.nn.GRUCell)

so weights copy one-to-one into `torch.nn.RNNCell`, `LSTMCell` and `GRUCell` (the tests do that) and
into the fused `torch.nn.RNN`, `LSTM` and `GRU` layers that `rnnkit.recurrent` runs over sequences.

The functions take the weights as arguments, so the recurrent stack can step with the very tensors
its fused kernel trains; the `Cell` modules own their weights and are what a reader instantiates.

Shapes: x (B, I), h and c (B, H).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import Tensor, nn

from .configs import CELL_TYPES, check_cell  # noqa: F401 (the choices live without torch)
from .errors import RnnkitError, require_size

# Number of stacked gate blocks in each cell's weight matrices.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def rnn_step(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor,
             bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """The vanilla (Elman) step:  h_next = tanh(W_xh x + b_ih + W_hh h + b_hh)."""
    W_xh, W_hh = weight_ih, weight_hh
    return torch.tanh(x @ W_xh.T + bias_ih + h @ W_hh.T + bias_hh)


def lstm_step(x: Tensor, h: Tensor, c: Tensor, weight_ih: Tensor, weight_hh: Tensor,
              bias_ih: Tensor, bias_hh: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTM step (Hochreiter & Schmidhuber, with forget gate):

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate
        f = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate
        g = tanh   (W_ig x + b_ig + W_hg h + b_hg)      candidate cell
        o = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate
        c_next = f * c + i * g
        h_next = o * tanh(c_next)
    """
    gates = x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh  # (B, 4H)
    return lstm_gates(gates, c)


def lstm_gates(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """The element-wise half of the LSTM step, from the summed pre-activations (B, 4H)."""
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_next = f * c + i * g
    h_next = o * torch.tanh(c_next)
    return h_next, c_next


def gru_step(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor,
             bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """The GRU step (Cho et al. 2014, in torch's form):

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)          reset gate
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)          update gate
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))       candidate state
        h_next = (1 - z) * n + z * h
    """
    return gru_gates(x @ weight_ih.T + bias_ih, h @ weight_hh.T + bias_hh, h)


def gru_gates(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """The element-wise half of the GRU step, from the input and hidden projections (B, 3H).

    They stay separate because the reset gate multiplies only the hidden part of `n`.
    """
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


class Cell(nn.Module):
    """One recurrent cell that owns its weights: `state = cell(x, state)`.

    `state` is `h` (B, H) for "rnn" and "gru", and the pair `(h, c)` for "lstm"; `None` means zeros.
    Weights are initialised as torch's cells are, uniform in (-1/sqrt(H), 1/sqrt(H)).

    >>> cell = Cell("lstm", input_size=4, hidden_size=3)
    >>> h, c = cell(torch.zeros(2, 4))
    >>> h.shape
    torch.Size([2, 3])
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int):
        super().__init__()
        check_cell(cell)
        require_size(input_size=input_size, hidden_size=hidden_size)
        self.cell, self.input_size, self.hidden_size = cell, input_size, hidden_size
        G = GATES[cell]
        self.weight_ih = nn.Parameter(torch.empty(G * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(G * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(G * hidden_size))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, state=None):
        check_step_input(x, self.input_size)
        x = x.to(self.weight_ih)  # integers (a one-hot) or float64 read as the weights' floats
        B = x.shape[0]
        if state is None:
            zeros = x.new_zeros(B, self.hidden_size)
            state = (zeros, zeros) if self.cell == "lstm" else zeros
        state = state_like(self.cell, state, x, (B, self.hidden_size),
                           "a cell's state is (batch, hidden)")
        return step(self.cell, x, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


def as_floats(x, like: Tensor, what: str) -> Tensor:
    """x (a tensor, an array or a list of numbers; integers too, such as a one-hot) as `like`'s
    floats on its device; anything else is one RnnkitError naming `what`."""
    try:
        return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(like)
    except (TypeError, ValueError, RuntimeError):
        raise RnnkitError(f"{what} must be numbers (a tensor, an array or a list), got "
                          f"{type(x).__name__} {str(x)[:40]!r}") from None


def check_sequence_input(x: Tensor, input_size: int) -> None:
    """A stack reads a batch of sequences x (B, T, I), T at least 1: a (B, I) batch of vectors
    would be read as one sequence of B steps."""
    if x.dim() != 3 or x.shape[2] != input_size or x.shape[1] < 1:
        raise RnnkitError(f"a stack reads x of shape (B, T, {input_size}), T at least 1, got "
                          f"{tuple(x.shape)}; one sequence is x[None], one step is `step`")


def check_step_input(x: Tensor, input_size: int) -> None:
    """A step reads a batch x (B, I): one vector (I,) would be read as I rows of one feature."""
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != input_size:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise RnnkitError(f"a step reads x of shape (B, {input_size}), got {shape}; one vector "
                          "is x[None], a batch of one")


def check_state(cell: str, state) -> None:
    """An LSTM's state is the pair (h, c); one tensor would be split along its first axis."""
    pair = isinstance(state, (tuple, list)) and len(state) == 2
    if (cell == "lstm") != pair:
        raise RnnkitError(f"an LSTM's state is the pair (h, c), got {type(state).__name__}"
                          if cell == "lstm" else
                          f"a {cell.upper()}'s state is one tensor h, got a pair")


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """The model in eval mode (no dropout) inside the block, its own mode back after it,
    whatever ends the block."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def state_like(cell: str, state, x: Tensor, shape: tuple[int, ...], what: str, fix: str = ""):
    """`state` checked (`check_state`, then each of h and c of `shape`) and read as x's floats
    on x's device; `what` names the shape in the error, `fix` ends it."""
    check_state(cell, state)
    parts = state if cell == "lstm" else (state,)
    for part in parts:
        if not isinstance(part, Tensor) or tuple(part.shape) != shape:
            got = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
            raise RnnkitError(f"{what} = {shape}{' for h and for c' if cell == 'lstm' else ''}, "
                              f"got {got}{fix}")
    return tuple(p.to(x) for p in parts) if cell == "lstm" else state.to(x)


def step(cell: str, x: Tensor, state, weight_ih: Tensor, weight_hh: Tensor,
         bias_ih: Tensor, bias_hh: Tensor):
    """Dispatch one step of `cell` ("rnn", "lstm" or "gru") with the given weights."""
    check_state(cell, state)
    if cell == "lstm":
        h, c = state
        return lstm_step(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
    if cell == "gru":
        return gru_step(x, state, weight_ih, weight_hh, bias_ih, bias_hh)
    return rnn_step(x, state, weight_ih, weight_hh, bias_ih, bias_hh)

