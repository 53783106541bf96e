"""The vanilla RNN of the notes, with its one-method API: `y = rnn.step(x)`.

    rnn = rnnkit.RNN(input_size=4, hidden_size=3, output_size=4)
    y = rnn.step(x)          # x: (4,) one-hot, y: (4,) confidences for the next character

Inside, the hidden state `h` (None until the first step, which starts from zeros) is kept, and
every step computes

    h = tanh(W_hh h + W_xh x + b_h)
    y = W_hy h + b_y

with the matrices reachable as `rnn.W_xh` (H, I), `rnn.W_hh` (H, H), `rnn.W_hy` (O, H) and biases
`rnn.b_h` (H,), `rnn.b_y` (O,). `rnn(xs)` runs a whole sequence through torch's fused tanh-RNN kernel
with the very same tensors; the two paths give the same outputs (the tests check it).

Trained step by step, the state carries the graph of every step since the last `reset()`;
`rnn.detach()` keeps the state and cuts that graph (truncated backpropagation through time),
so that the next `backward()` reaches only the steps after it.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .cells import as_floats
from .errors import RnnkitError, require_size


class RNN(nn.Module):
    """Karpathy's `RNN` class in PyTorch: parameters W_xh, W_hh, W_hy, b_h, b_y; state `h`.

    Args:
        input_size: I, length of each input vector x.
        hidden_size: H, length of the hidden state h.
        output_size: O, length of each output vector y.
        bias: with False, b_h and b_y are fixed zeros (the notes' equations have none).
        nonlinearity: "tanh" (the notes' RNN) or "relu" (h = max(0, ...), as torch.nn.RNN offers;
            Serrano's roommate network keeps "only the 2" with it).

    `step` accepts one vector x (I,) or a batch (B, I); `h` then has shape (H,) or (B, H).
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, bias: bool = True,
                 nonlinearity: str = "tanh"):
        super().__init__()
        require_size(input_size=input_size, hidden_size=hidden_size, output_size=output_size)
        input_size, hidden_size, output_size = int(input_size), int(hidden_size), int(output_size)
        if nonlinearity not in ("tanh", "relu"):
            raise RnnkitError(f"unknown nonlinearity {nonlinearity!r}; choose tanh or relu")
        self.nonlinearity = nonlinearity
        self.f = torch.tanh if nonlinearity == "tanh" else torch.relu
        bound = 1 / math.sqrt(hidden_size)  # torch.nn.RNN's initialisation

        def param(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.W_xh = param(hidden_size, input_size)
        self.W_hh = param(hidden_size, hidden_size)
        self.W_hy = param(output_size, hidden_size)
        if bias:
            self.b_h, self.b_y = param(hidden_size), param(output_size)
        else:  # not in the state dict: no load can make them other than zeros
            self.register_buffer("b_h", torch.zeros(hidden_size), persistent=False)
            self.register_buffer("b_y", torch.zeros(output_size), persistent=False)
        self.bias = bias
        self.h: Tensor | None = None  # the hidden state; None until the first step, then a tensor
        # torch's fused kernel, built on the meta device: it holds no weights of its own and runs
        # with ours (functional_call), so there is one set of parameters for both paths.
        self._kernel = [nn.RNN(input_size, hidden_size, batch_first=True, device="meta",
                               nonlinearity=nonlinearity)]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Without biases, saved zeros (as models saved them before) are read and dropped;
        # biases that are not zeros belong to another model.
        if not self.bias:
            for name in ("b_h", "b_y"):
                value = state_dict.pop(prefix + name, None)
                if value is not None and bool(torch.as_tensor(value).any()):
                    raise RnnkitError(f"{prefix}{name} holds biases, and this RNN has none "
                                      "(bias=False); load it into RNN(..., bias=True)")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset(self, h: Tensor | None = None) -> None:
        """Forget the history: the next step starts from `h`, zeros by default."""
        if h is not None:
            h = as_floats(h, self.W_hh, "h")  # a list or an array reads too
            H = self.W_hh.shape[0]
            if h.dim() not in (1, 2) or h.shape[-1] != H:
                raise RnnkitError(f"the hidden state is one vector h ({H},) or a batch (B, {H}), "
                                  f"got shape {tuple(h.shape)}")
        self.h = h

    def __deepcopy__(self, memo: dict) -> RNN:
        """A copy (`copy.deepcopy`, as for keeping the best weights so far) whose state is the
        same values without the graph of the steps that made them, which torch cannot copy."""
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        for name, value in self.__dict__.items():
            if name == "h" and value is not None:
                value = value.detach()
            copied.__dict__[name] = copy.deepcopy(value, memo)
        return copied

    def detach(self) -> None:
        """Keep the hidden state, cut the graph of the steps that made it (see the module)."""
        if self.h is not None:
            self.h = self.h.detach()

    def step(self, x: Tensor) -> Tensor:
        """Feed one input vector, update the hidden state, return the output vector."""
        size = self.W_xh.shape[1]
        x = as_floats(x, self.W_xh, "x")  # a one-hot of integers, or an array, reads too
        if x.dim() not in (1, 2) or x.shape[-1] != size:
            raise RnnkitError(f"step reads one vector x ({size},) or a batch (B, {size}), got "
                              f"shape {tuple(x.shape)}")
        if self.h is not None and self.h.shape[:-1] != x.shape[:-1]:
            raise RnnkitError(f"the hidden state is of shape {tuple(self.h.shape)} from the steps "
                              f"before, and x is {tuple(x.shape)}; call rnn.reset() to start a "
                              "sequence of another batch size")
        h = self.h.to(x) if self.h is not None else x.new_zeros(*x.shape[:-1], self.W_hh.shape[0])
        # Row-vector form of the same equations (v @ W.T == W @ v), so a batch (B, I) also works.
        self.h = self.f(h @ self.W_hh.T + x @ self.W_xh.T + self.b_h)  # f is tanh unless relu
        y = self.h @ self.W_hy.T + self.b_y
        return y

    def forward(self, xs: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """A whole sequence at once on the fused kernel: xs (T, I) or (B, T, I).

        Returns (ys, h_T): outputs (T, O) or (B, T, O) and the last hidden state. Does not touch
        `self.h`; pass `h0` to start from a state other than zeros.
        """
        size = self.W_xh.shape[1]
        xs = as_floats(xs, self.W_xh, "xs")
        if xs.dim() not in (2, 3) or xs.shape[-1] != size or xs.shape[-2] < 1:
            raise RnnkitError(f"a sequence is xs (T, {size}) or a batch of them (B, T, {size}), "
                              f"T at least 1, got shape {tuple(xs.shape)}")
        batched = xs.dim() == 3
        if not batched:
            xs = xs.unsqueeze(0)  # (1, T, I)
        if h0 is not None:
            h0 = as_floats(h0, self.W_xh, "h0")  # a list, an array or float64 reads too
            B, H = xs.shape[0], self.W_hh.shape[0]
            if h0.shape[-1] != H or h0.numel() not in (H, B * H):
                raise RnnkitError(f"h0 must be ({H},), ({B}, {H}) or (1, {B}, {H}), got "
                                  f"{tuple(h0.shape)}")
            h0 = h0.reshape(1, -1, H).expand(1, B, H).contiguous()  # (layers=1, B, H)
        weights = {"weight_ih_l0": self.W_xh, "weight_hh_l0": self.W_hh,
                   "bias_ih_l0": self.b_h, "bias_hh_l0": torch.zeros_like(self.b_h)}
        hs, h_T = functional_call(self._kernel[0], weights, (xs, h0))  # (B, T, H), (1, B, H)
        ys = hs @ self.W_hy.T + self.b_y  # (B, T, O)
        if not batched:
            return ys[0], h_T[0, 0]
        return ys, h_T[0]
