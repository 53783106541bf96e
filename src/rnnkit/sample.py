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
(the model's `step_weights`) laid out for one-row products: layer 0's input term for every
character is precomputed (the embedding folded through W_ih, one table lookup per step), and
deeper layers multiply [x, h] by [W_ih | W_hh] in one matrix product. Long primes go through the
fused kernel in chunks. One stream at a reduced precision runs the arithmetic between its
matrix products in C (native.c), compiled on first use.
"""

from __future__ import annotations

import codecs
import copy
import math
import numbers
import os
import warnings
import weakref
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from . import native
from .beam import beam_search
from .cells import evaluating, gru_gates
from .configs import MAX_STRING, STEP_PRECISIONS
from .errors import RnnkitError, RnnkitWarning, require_size
from .text import skipped_words

PRIME_CHUNK = 4096  # prime text fed through the fused kernel this many characters at a time
MAX_PRIME = 1_000_000  # characters; a longer prime is refused rather than fed for minutes
MAX_SAMPLES = 10_000  # streams (or beams) in one batch; more is a typo, refused before allocating


class Probs(Mapping):
    """A next-symbol distribution, indexable by character: `probs["e"]`. `tensor` is (V,).

    The keys are the vocabulary's symbol names (`Vocab.symbol`), and only those: a byte model's
    bytes 128 to 255 are named by four characters, r"\\x80" ... r"\\xff" (in Python source, a
    raw string; "\\x80" is the one character U+0080), and "©" (two bytes in UTF-8) is not a key.
    """

    def __init__(self, tensor: Tensor, vocab):
        self.tensor, self.vocab = tensor, vocab

    def __getitem__(self, symbol: str) -> float:
        if not isinstance(symbol, str):
            raise KeyError(f"{symbol!r}: the keys are symbols such as {self.vocab.symbol(0)!r}")
        return float(self.tensor[self.vocab.index(symbol)])

    def __iter__(self):
        return (self.vocab.symbol(i) for i in range(len(self.vocab)))

    def __len__(self) -> int:
        return len(self.vocab)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k most likely symbols with their probabilities, most likely first."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise RnnkitError(f"top(k): k must be a whole number, 0 or more, got {k!r}")
        p, i = self.tensor.topk(min(int(k), len(self.vocab)))
        return [(self.vocab.symbol(int(j)), float(q)) for q, j in zip(p, i, strict=True)]

    def __repr__(self) -> str:
        return "Probs(" + ", ".join(f"{s!r}: {p:.3f}" for s, p in self.top(5)) + ", ...)"


WEIGHT_ONLY_ROWS = 4  # up to this many rows, int8 products take the weight-only kernel
# int4: each run of this many inputs of a row shares one scale and offset; the first that
# divides the row is used (64 made one 2 x 512 stream 5% faster than 32, whose scales and offsets
# are twice the bytes, for twice the rounding's loss, 0.0012 nats/char against 0.0005)
INT4_GROUPS = (64, 32)
# precisions that step on the CPU alone: the torch kernel each needs, and the first torch with it
CPU_KERNELS = {"int8": ("_int_mm", "2.3"), "int4": ("_weight_int4pack_mm_for_cpu", "2.6")}


class Weights:
    """One weight matrix W (N, K) of the stepper, stored for `b + x @ W.T` in a chosen precision.

    fp32: as trained, the exact reference. One row goes through `addmm`; a batch of rows through
    oneDNN's product on a copy of W packed into its blocked layout (made for the first batch), at
    1.5 to 2 times addmm's speed for 32 rows on a CPU.
    bf16: 16-bit weights, products summed in fp32; packed for oneDNN where its bf16 kernels run
    (three to four times faster than a plain bf16 product there).
    int8: one int8 row per output unit, scaled by that row's largest |w| / 127, and the input
    rounded to 8 bits as round(127 x); exact for the scaling, because every input the stepper
    multiplies is a hidden state, and h lies in (-1, 1) for all three cells (tanh, and the
    LSTM's o * tanh(c), and the GRU's mix of tanh(n) and h). The product is integer (torch's
    `_int_mm`), rescaled once: reading a quarter of fp32's bytes is what makes it faster, as one
    step of a small batch is bound by reading the weights. A batch multiplies a row-major copy
    of W (made for the first batch), 10 to 20% faster for 32 rows than W's rows as they lie.
    Up to WEIGHT_ONLY_ROWS rows go through torch's weight-only kernel instead
    (`_weight_int8pack_mm`: the input copied into a bf16 buffer made once, W's int8 rows as
    they lie, scaled in the kernel): two calls where `_int_mm` takes five, and its product alone
    took 67 against 104 us for one row of a 1,024 x 2,048 matrix on 2 threads of an Intel
    Xeon (134 against 202 us for 4 rows; 298 against 220 for 8). That kernel reads past its
    input unless K is a multiple of 16 (K = 40 gave numbers of 1e9, 100 crashed the process),
    so other widths, such as min-char-rnn's hidden size of 100, keep `_int_mm`.

    int4: each row's inputs in groups (`int4_group`), each group's weights rounded to 16 evenly
    spaced levels between its smallest and largest (a scale and an offset per group, in bf16):
    half of int8's bytes. One row goes through torch's weight-only int4 kernel
    (`_weight_int4pack_mm_for_cpu`, the input copied into a bf16 buffer). That kernel runs row by
    row, so a batch multiplies the kernel's own weights, read back once through it (an identity
    in, bf16 weights out; made for the first batch), as bf16 does: packed for oneDNN's bf16
    products where they run, else in fp32. Needs N a multiple of 16 and K of the smallest group
    (`int4_fits`).

    `lay_out(rows)` picks the layout for products of `rows` rows; the stepper calls it whenever
    its batch changes, so that a step does no checks.
    """

    def __init__(self, W: Tensor, precision: str):
        self.precision, self.onednn = precision, onednn(W.device)
        self.in_features, self.device = W.shape[1], W.device  # K
        self.base = self  # where the layouts for batches are made (`lay_out`)
        self.W: Tensor | None = None  # (K, N) as products read it (int4: unpacked, for batches)
        self.packed: Tensor | None = None  # W in oneDNN's layout, if used
        self.rows: Tensor | None = None  # int8: W (K, N) row-major, for batches
        if precision == "int8":
            row_max = W.abs().amax(1).clamp_min(1e-12)  # (N,)
            self.W = (W * (127 / row_max[:, None])).round().to(torch.int8).T  # (K, N) view
            self.scale = row_max / (127 * 127)  # undoes both roundings' scales
            self.row_scale = (row_max / 127).to(torch.bfloat16)  # the weight-only kernel's
        elif precision == "int4":
            self.W4, self.scales = int4_weights(W)
            self.group = int4_group(W.shape[1])
        elif precision == "bf16" and self.onednn and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(W.to(torch.bfloat16), 1)
        else:
            self.W = W.T.contiguous().to(torch.bfloat16 if precision == "bf16" else W.dtype)
        # the inputs' type where the products are packed for oneDNN (int4's batches are bf16)
        self.dtype = torch.float32 if precision in ("fp32", "int8") else torch.bfloat16
        self.lay_out(1)

    def lay_out(self, rows: int) -> None:
        """Use the layout that multiplies `rows` rows fastest. The layouts made for batches are
        made once, on `base`: the Weights this one was copied from (a kept one, see
        `kept_layers`), or itself; every copy of it reads them."""
        base, batch = self.base, rows > 1
        self.int4 = self.precision == "int4" and not batch
        self.weight_only = self.precision == "int8" and rows <= WEIGHT_ONLY_ROWS \
            and self.W.shape[0] % 16 == 0 and hasattr(torch, "_weight_int8pack_mm")
        if self.precision == "int4" and batch and base.W is None and base.packed is None:
            base.unpack_int4()
        if self.precision == "fp32" and batch and self.onednn and base.packed is None:
            base.packed = torch.ops.mkldnn._reorder_linear_weight(base.W.T.contiguous(), 32)
        if self.precision == "int8" and batch and not self.weight_only and base.rows is None:
            base.rows = base.W.contiguous()
        self.W, self.packed, self.rows = base.W, base.packed, base.rows
        self.addmm = self.precision == "fp32" and (not batch or not self.onednn) \
            or self.precision == "int4" and batch and self.packed is None
        if self.weight_only:
            self.W_mm = self.W.T.contiguous()  # (N, K): W's rows as they lie, not copied
        elif self.precision == "int8":
            self.W_mm = self.W if rows == 1 else self.rows  # (K, N)
        # the input rounded to bf16 in place, where the product reads bf16 (`product`)
        self.x16: Tensor | None = None
        if self.int4 or self.weight_only or self.precision == "bf16":
            self.x16 = torch.empty(rows, self.in_features, dtype=torch.bfloat16, device=self.device)

    def unpack_int4(self) -> None:
        """int4's weights for batches: the kernel's own values, read back through an identity,
        so that a batch multiplies what one row does (rounded to bf16, as the kernel's output)."""
        K = self.scales.shape[0] * self.group
        eye = torch.eye(K, dtype=torch.bfloat16, device=self.W4.device)  # (K, K)
        W = torch._weight_int4pack_mm_for_cpu(eye, self.W4, self.group, self.scales)  # (K, N)
        if self.onednn and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(W.T.contiguous(), 1)
        else:
            self.W = W.float()

    def __call__(self, b: Tensor, x: Tensor, out: Tensor | None = None) -> Tensor:
        """b + x @ W.T: x (B, K), b (N,) or (B, N) -> (B, N) in fp32, into `out` if given."""
        if self.addmm:
            return torch.addmm(b, x, self.W, out=out)
        if self.x16 is not None:
            if x is not self.x16:  # the stepper may hand x16 over, written
                self.x16.copy_(x)
            y = self.product()
        elif self.packed is not None:  # fp32's and int4's batches
            y = torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed, None,
                                                   "none", [], "")  # (B, N)
        else:
            x8 = (x * 127).round_().to(torch.int8)
            return torch.addcmul(b, torch._int_mm(x8, self.W_mm), self.scale, out=out)
        if out is None or self.precision == "fp32":  # fp32: oneDNN's packed product
            return torch.add(b, y, out=out)
        # y (B, N) in bf16 is added in fp32: copied into `out` first, as torch.add of a bf16
        # and an fp32 tensor would copy y into a new fp32 tensor (an allocation, a call more)
        return out.copy_(y).add_(b)

    def product(self) -> Tensor:
        """x16 @ W.T (B, N) in bf16, for the precisions whose products read the input in bf16
        from `x16` (int4, int8's weight-only kernel, bf16)."""
        if self.int4:
            return torch._weight_int4pack_mm_for_cpu(self.x16, self.W4, self.group, self.scales)
        if self.weight_only:
            return torch._weight_int8pack_mm(self.x16, self.W_mm, self.row_scale)
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(self.x16, self.packed, None, "none", [], "")
        return self.x16 @ self.W


def int4_levels(W: Tensor) -> tuple[Tensor, Tensor]:
    """W (N, K) rounded to 4 bits in groups of `int4_group(K)` inputs: each group's 16 levels evenly
    spaced from its smallest weight to its largest. Returns the levels q (N, K) in 0 ... 15 and
    each group's scale and offset (N, K / group, 2) in bf16, w = (q - 8) scale + offset."""
    N, K = W.shape
    group = int4_group(K)
    groups = W.float().reshape(N, K // group, group)
    low, high = groups.aminmax(dim=-1)  # (N, K / g)
    scale = ((high - low) / 15).clamp_min(1e-12)
    q = (groups - low[..., None]).div_(scale[..., None]).round_().clamp_(0, 15)  # 0 ... 15
    return q.reshape(N, K), torch.stack([scale, low + 8 * scale], -1).to(torch.bfloat16)


def int4_weights(W: Tensor) -> tuple[Tensor, Tensor]:
    """W (N, K) in 4 bits (`int4_levels`) as `_weight_int4pack_mm_for_cpu` reads it: the levels
    packed, and the scales and offsets (K / group, N, 2)."""
    q, scales = int4_levels(W)
    packed = torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
    return packed, scales.transpose(0, 1).contiguous()


def int4_rounded(W: Tensor) -> Tensor:
    """The values (N, K) in fp32 that W's 4-bit weights stand for, from the same bf16 scales and
    offsets as the kernel's: the reference both of int4's paths are checked against."""
    q, scales = int4_levels(W)
    scale, offset = scales.float().unbind(-1)  # (N, K / g) each
    groups = q.reshape(*scale.shape, -1)
    return ((groups - 8) * scale[..., None] + offset[..., None]).reshape(q.shape)


def int4_fits(hidden: int) -> bool:
    """Whether a model of this hidden size can step in int4: every product of the stepper has
    a multiple of `hidden` rows (N, a multiple of 16 needed) and columns (K, of a group)."""
    return hidden % INT4_GROUPS[-1] == 0


def int4_group(K: int) -> int:
    """The inputs of a row of K that share a scale and an offset in int4: the largest of
    INT4_GROUPS that divides K."""
    return next(group for group in INT4_GROUPS if K % group == 0)


def onednn(device: torch.device) -> bool:
    """Whether oneDNN's packed products run here (a CPU build of torch with oneDNN)."""
    return device.type == "cpu" and torch.backends.mkldnn.is_available() \
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in STEP_PRECISIONS:
        raise RnnkitError(f"unknown precision {precision!r}; choose one of {', '.join(STEP_PRECISIONS)}")
    if precision in CPU_KERNELS:
        kernel, since = CPU_KERNELS[precision]
        if device.type != "cpu" or not hasattr(torch, kernel):
            raise RnnkitError(f"{precision} stepping runs on the CPU with torch >= {since}; on a "
                              "GPU use bf16")


class Stepper:
    """The seed's `y = rnn.step(x)` on a trained language model; holds the hidden state.

    `precision` chooses how the weights are held while stepping ("fp32", the default and the
    exact reference; "bf16"; "int8"; "int4", see `Weights`) in the recurrent layers; the
    embedding table and the output layer stay fp32. `batch` rows step side by side: `feed` then
    takes a (B,) tensor of ids and returns (B, V) logits.

    The state lives in buffers allocated once and overwritten in place by every step (one step
    is a few dozen small operations, so each allocation and each extra call shows): `h[l]` and
    `c[l]` (B, H) are views of them, to be copied by whoever keeps them across steps. The layers'
    `h` sit side by side in one (B, L*H) buffer, so that layer l's input [h_{l-1}, h_l] is a
    slice of it, not a concatenation.

    One stream at bf16, int8 or int4 on the CPU steps through native.c where it could be built
    (`native.library()`): its products stay torch's, and each layer's gates, the output layer
    and a plain draw are one call each, where torch's operations take a dozen (1.6 times the
    characters per second on a 2 x 512 LSTM in int4). Without it, torch's operations alone do
    the same arithmetic; both are tested against each other.

    The weights are a snapshot taken at construction: make a new stepper after more training.
    """

    @torch.inference_mode()
    def __init__(self, model, precision: str = "fp32", batch: int = 1):
        self.model, self.vocab = model, model.vocab
        weights = model.step_weights()  # lm.StepWeights: table, layers, W_hy, b_y
        cfg = model.config
        self.cell, self.L, self.H, self.precision = weights.cell, cfg.layers, cfg.hidden, precision
        _, W_hh, _, b_hh = weights.layers[0]
        check_precision(precision, W_hh.device)
        if precision == "int4" and not int4_fits(self.H):
            raise RnnkitError(f"int4 stepping needs a hidden size that is a multiple of "
                              f"{INT4_GROUPS[-1]}, and this model's is {self.H}; use int8")
        # An LSTM's g rows are kept doubled (exactly, in every precision): g = tanh(x) =
        # 2 sigmoid(2x) - 1, so that one sigmoid covers all four gates (see `lstm_update`).
        d = torch.ones(W_hh.shape[0], device=W_hh.device)  # (G*H,)
        if self.cell == "lstm":
            d[2 * self.H:3 * self.H] = 2
        # Layer 0's input term for every symbol (V, G*H) is the model's table.
        self.table = weights.table if self.cell == "gru" else (weights.table + b_hh) * d
        # V views (1, G*H) of its rows: indexing a list costs 3 us a step less than slicing
        self.table_rows = self.table.split(1)
        self.layers = kept_layers(model, precision, lambda: self.make_layers(weights, d))
        # The output layer (V, H) is a few rows: fp32 at every precision, as rounding its input
        # would cost more calls than reading its bytes does; and a plain product at every batch,
        # as oneDNN's packing gains nothing on V rows (it was slower for 32 rows of a 65 x 512).
        self.W_hy, self.b_y = weights.W_hy.clone(), weights.b_y.clone()  # (V, H), (V,)
        # Every step enters inference mode through this one object: the decorator makes a new
        # one per call, which cost 8 us of a one-row step's 250 on 2 threads of an Intel Xeon.
        self.mode = torch.inference_mode()
        self.reset(batch)

    def make_layers(self, weights, d: Tensor) -> list[tuple]:
        """The recurrent layers' weights in the stepper's layout and precision: per layer
        (W, b) for an LSTM or a tanh RNN, (W_ih, W_hh, b_ih, b_hh) for a GRU, W a `Weights`."""
        precision = self.precision
        _, W_hh, _, b_hh = weights.layers[0]
        if self.cell == "gru":  # the reset gate needs the hidden projection on its own
            layers = [(None, Weights(W_hh, precision), None, b_hh.clone())]
        else:  # b_hh is in the table
            layers = [(Weights(W_hh * d[:, None], precision), None)]
        for W_ih, W_hh, b_ih, b_hh in weights.layers[1:]:
            if self.cell == "gru":
                layers.append((Weights(W_ih, precision), Weights(W_hh, precision),
                               b_ih.clone(), b_hh.clone()))
            else:  # [h_{l-1}, h_l] @ [W_ih | W_hh].T in one product
                W = torch.cat([W_ih, W_hh], 1).mul_(d[:, None])
                layers.append((Weights(W, precision), (b_ih + b_hh) * d))
        return layers

    @torch.inference_mode()
    def reset(self, batch: int | None = None) -> None:
        """Back to the zero state (of `batch` rows, or as many as before); a new text starts."""
        if batch is not None:
            require_size(batch=batch)
        self.batch = batch or self.batch
        self.use(self.table.new_zeros(self.batch, self.L * self.H),
                 self.table.new_zeros(self.L, self.batch, self.H) if self.cell == "lstm" else None)
        self.logits: Tensor | None = None

    def use(self, hs: Tensor, cs: Tensor | None) -> None:
        """Take hs (B, L*H) and cs (L, B, H) as the state buffers, and make the step's buffers."""
        B, H = hs.shape[0], self.H
        self.hs, self.cs = hs, cs
        self.many = B >= SIGMOID_ROWS
        self.constants = (hs.new_tensor(2.0), hs.new_tensor(1.0))  # 0-dim, for lstm_update
        for weights in self.layers:
            for W in weights:
                if isinstance(W, Weights):
                    W.lay_out(B)
        self.h = [hs[:, layer * H:(layer + 1) * H] for layer in range(self.L)]  # L views (B, H)
        self.h_row = self.h[-1][0]  # (H,) the last layer's first row, for one stream's logits
        self.c = list(cs.unbind(0)) if cs is not None else None  # L views (B, H)
        # What each layer multiplies: h_0 (layer 0's input term is in the table), [h_{l-1}, h_l].
        self.inputs = [self.h[0]] + [hs[:, (layer - 1) * H:(layer + 1) * H]
                                     for layer in range(1, self.L)]  # (B, H), (B, 2H)...
        if self.cell == "lstm":  # the pre-activations, and views of their gate blocks
            self.gates = [hs.new_empty(B, 4 * H) for _ in range(self.L)]  # (B, 4H) i, f, g, o
            self.blocks = [z.split(H, 1) for z in self.gates]
        products = [W for weights in self.layers for W in weights if isinstance(W, Weights)]
        self.native = None
        if B == 1 and all(W.x16 is not None for W in products):
            # Products that read bf16 inputs read them from one copy of hs, where native.c's
            # layers write their h as well. Without native.c, an LSTM's or RNN's layer l > 0
            # copies [h_{l-1}, h_l] into its place there, which brings layer 0's input, h_0,
            # up to date for the next step: one copy a step fewer (about 3 us of 200).
            if self.table.dtype == torch.float32 and hs.device.type == "cpu":
                self.native = native.library()
            if self.native is not None or self.L > 1 and self.cell != "gru":
                hs16 = hs.to(torch.bfloat16)  # (1, L*H)
                for layer, weights in enumerate(self.layers):
                    if self.cell == "gru":  # W_ih reads h_{l-1}, W_hh h_l
                        for W, start in zip(weights[:2], (layer - 1, layer), strict=True):
                            if W is not None:
                                W.x16 = hs16[:, start * H:(start + 1) * H]
                    else:  # [h_{l-1}, h_l], or h_0
                        weights[0].x16 = hs16[:, max(layer - 1, 0) * H:(layer + 1) * H]
                if self.cell != "gru":
                    self.inputs[0] = self.layers[0][0].x16
            if self.native is not None:
                self.point_native(hs16)

    def point_native(self, hs16: Tensor) -> None:
        """The addresses native.c's functions read and write in this state (one stream's): per
        layer, its biases (layer 0's input term is the token's row of the table, added by
        `advance_native`) and its buffers."""
        H, table = self.H, self.table
        self.row_bytes, self.table_address = table.stride(0) * table.element_size(), table.data_ptr()
        h16 = [hs16[:, layer * H:(layer + 1) * H].data_ptr() for layer in range(self.L)]
        h = [self.h[layer].data_ptr() for layer in range(self.L)]
        if self.cell == "gru":  # (b_ih, b_hh), b_ih None for layer 0
            self.biases = [tuple(b.data_ptr() if b is not None else None for b in weights[2:])
                           for weights in self.layers]
            self.buffers = [(h[layer], h16[layer], H) for layer in range(self.L)]
        else:
            self.biases = [None] + [b.data_ptr() for _, b in self.layers[1:]]
            self.buffers = [(self.c[layer].data_ptr(), h[layer], h16[layer],
                             self.gates[layer].data_ptr(), H) if self.cell == "lstm"
                            else (h[layer], h16[layer], H) for layer in range(self.L)]
        self.native_logits = torch.empty(len(table))  # (V,) fp32, written by every step
        self.output = (self.W_hy.data_ptr(), self.b_y.data_ptr(), self.h_row.data_ptr(),
                       self.native_logits.data_ptr(), len(table), H)

    def feed(self, token: int | Tensor) -> Tensor:
        """Advance by one token id, logits (V,) back; or by a (B,) tensor of ids, logits (B, V)."""
        if isinstance(token, int):
            self.check_id(token)
        with self.mode:
            logits = self.advance(token)
        return logits.clone() if self.native is not None else logits  # not the buffer

    def check_id(self, token: int) -> int:
        if not 0 <= token < len(self.table_rows):
            raise RnnkitError(f"token id {token} is outside the vocabulary's 0 ... "
                              f"{len(self.table_rows) - 1}")
        return token

    def advance(self, token: int | Tensor) -> Tensor:
        """`feed`, for a caller already inside `with stepper.mode:` (as `produce`, which enters
        it once a step, around the draw too). Not for two threads at once, as the state is not."""
        if self.native is not None:  # every step of its stream: only native.c writes h in bf16
            if isinstance(token, int):
                return self.advance_native(token)
            return self.advance_native(self.check_id(int(token))).view(1, -1)  # (1,) -> (1, V)
        h = self.h
        x_term = self.table_rows[token] if isinstance(token, int) \
            else self.table.index_select(0, token.to(self.table.device))  # (B, G*H)
        for layer in range(self.L):
            if self.cell == "gru":
                W_ih, W_hh, b_ih, b_hh = self.layers[layer]
                gi = x_term if layer == 0 else W_ih(b_ih, h[layer - 1])  # (B, 3H)
                h[layer].copy_(gru_gates(gi, W_hh(b_hh, h[layer]), h[layer]))
                continue
            W, b = self.layers[layer]
            b = x_term if layer == 0 else b  # (B, G*H) or (G*H,)
            if self.cell == "lstm":
                W(b, self.inputs[layer], out=self.gates[layer])
                lstm_update(self.gates[layer], self.blocks[layer], self.c[layer], h[layer],
                            self.many, *self.constants)
            else:  # h = tanh(W_xh x + W_hh h + b)
                torch.tanh(W(b, self.inputs[layer]), out=h[layer])
        if isinstance(token, int):  # one row: a matrix-vector product, 2 to 3 us less
            self.logits = torch.addmv(self.b_y, self.W_hy, self.h_row)  # (V,)
        else:
            self.logits = torch.addmm(self.b_y, h[-1], self.W_hy.T)  # (B, V)
        return self.logits

    def advance_native(self, token: int) -> Tensor:
        """`advance` for one stream through native.c: per layer, its products in torch, then its
        gates in one call; then the output layer in one. The logits (V,) are the stepper's
        buffer, which the next step overwrites."""
        row = self.table_address + token * self.row_bytes  # layer 0's input term
        if self.cell == "gru":
            for layer, (W_ih, W_hh, _, _) in enumerate(self.layers):
                b_ih, b_hh = self.biases[layer]
                yh = W_hh.product()  # (1, 3H) bf16, each held while the call reads it
                yi = W_ih.product() if layer else None
                self.native.gru_layer(yi.data_ptr() if layer else None, b_ih if layer else row,
                                      yh.data_ptr(), b_hh, *self.buffers[layer])
        else:
            layer_step = self.native.lstm_layer if self.cell == "lstm" else self.native.rnn_layer
            for layer, (W, _) in enumerate(self.layers):
                y = W.product()  # (1, G*H) bf16, held while the call reads it
                layer_step(y.data_ptr(), self.biases[layer] if layer else row, *self.buffers[layer])
        self.native.logits_row(*self.output)
        self.logits = self.native_logits
        return self.logits

    @torch.inference_mode()
    def feed_many(self, tokens: list[int]) -> Tensor:
        """Advance one stream by many tokens; long runs go through the fused kernel (fp32)."""
        if self.batch != 1:
            raise RnnkitError(f"feed_many primes one stream; this stepper has {self.batch} rows")
        if len(tokens) <= 16:
            logits = self.logits
            for t in tokens:
                logits = self.feed(t)
            return logits
        model = self.model
        h = torch.stack(self.h)  # (L, 1, H)
        state = (h, self.cs.clone()) if self.cell == "lstm" else h
        device = self.table.device
        with evaluating(model):  # a model left in training mode would prime with dropout
            for start in range(0, len(tokens), PRIME_CHUNK):
                x = torch.tensor([tokens[start:start + PRIME_CHUNK]], device=device)  # (1, T)
                logits, _, state = model(x, state=state)
                self.logits = logits[0, -1]
        h, c = state if self.cell == "lstm" else (state, None)
        self.use(h.transpose(0, 1).reshape(1, -1), c)  # (L, 1, H) -> (1, L*H)
        return self.logits

    @torch.inference_mode()
    def select(self, rows: Tensor) -> None:
        """Keep these rows of the state, in this order (B',): copies a primed stream into many
        rows, or follows the beams that survive a step of beam search."""
        rows = rows.to(self.table.device)
        self.use(self.hs[rows], self.cs[:, rows] if self.cs is not None else None)
        if self.logits is not None:
            self.logits = self.logits.reshape(self.batch, -1)[rows]  # (B', V)
        self.batch = len(rows)

    def step(self, symbol: str | int) -> Probs:
        """Feed one character (or, for a byte model, a byte value); get the next one's distribution."""
        try:
            token = self.vocab.index(symbol)
        except KeyError as e:
            raise RnnkitError(str(e.args[0])) from None
        return Probs(torch.softmax(self.feed(token).float(), -1), self.vocab)


# The layers of the precisions whose weights cost more to round than to read, kept with each
# model until one of its parameters changes (at most a quarter and an eighth of its fp32 bytes):
# a stepper on a 2 x 512 LSTM in int4 took 15 to 40 ms to make, 2,000 characters 400 ms
KEEP = ("int8", "int4")
KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {precision: (key, layers)}


def kept_layers(model, precision: str, make) -> list[tuple]:
    """The layers `make()` returns, made once for `model` at a precision in KEEP and kept until
    a parameter is replaced or changed in place (which counts its versions; a change through
    `.data` goes uncounted: make a new model, or load it again, after one). Each caller gets its
    own copy of each `Weights`, as a stepper lays out its own buffers."""
    if precision not in KEEP:
        return make()
    key = tuple((p.data_ptr(), p._version) for p in model.parameters())
    kept = KEPT.setdefault(model, {})
    if precision not in kept or kept[precision][0] != key:
        kept[precision] = (key, make())
    return [tuple(copy.copy(w) if isinstance(w, Weights) else w for w in layer)
            for layer in kept[precision][1]]


AHEAD = 256  # a stream's random numbers are drawn this many steps at a time (`Exponentials`)
SIGMOID_ROWS = 8  # from this many rows, tanh(c) is computed as 2 sigmoid(2 c) - 1


def lstm_update(gates: Tensor, blocks: tuple[Tensor, ...], c: Tensor, h: Tensor,
                many: bool = False, two: Tensor | float = 2.0, one: Tensor | float = 1.0) -> None:
    """`cells.lstm_gates` in place: c and h (B, H) become c_next and h_next. `gates` (B, 4H) are
    the pre-activations in torch's order i, f, g, o, with g's doubled; `blocks` their views.
    `many`: B is at least SIGMOID_ROWS, where tanh(c) is cheaper as 2 sigmoid(2 c) - 1.
    `two` and `one` may be 0-dim tensors: a Python number is made into a tensor at every call
    (4 us a layer of a one-row step), a tensor is not; the results are the same bits."""
    i, f, g, o = blocks
    gates.sigmoid_()  # i, f, o = sigmoid(.); s = sigmoid(2 g) in g's block
    # c_next = f * c + i * tanh(g), where tanh(g) = 2 s - 1 (a sigmoid costs a fifth of a tanh):
    # f * c + 2 i s - i, a call fewer than making tanh(g) first
    c.mul_(f).addcmul_(i, g, value=2).sub_(i)
    if many:  # h_next = o * tanh(c_next) in three more calls, which cost less than tanh's one
        torch.mul(c, two, out=h).sigmoid_()  # (32 x 512: 115 against 200 us on one thread)
        h.mul_(two).sub_(one).mul_(o)
    else:
        torch.tanh(c, out=h).mul_(o)


def pick(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, greedy: bool = False,
         generator: torch.Generator | None = None, top_p: float | None = None,
         repetition_penalty: float = 1.0, seen: Tensor | None = None) -> Tensor:
    """Choose the next token of each row from logits (B, V) -> ids (B,), as Hugging Face's
    `generate` does, in its order: the repetition penalty, then greedy's argmax, or temperature,
    top-k, top-p (nucleus) and a draw from the softmax.

    `seen` (B, V) marks the tokens already in each row's text (prime included); the penalty
    divides their positive logits by `repetition_penalty` and multiplies their negative ones
    (CTRL's rule), so that a penalty above 1 makes any repetition less likely.
    """
    if logits.dtype != torch.float32 or logits.device.type != "cpu":  # two calls saved a step
        logits = logits.float().cpu()
    if repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
        # an extreme penalty overflows float32 (and 0 x inf is NaN): kept finite, its order kept
        big = torch.finfo(torch.float32).max
        logits = torch.where(seen, penalised.nan_to_num(0.0, big, -big), logits)
    if greedy:
        return logits.argmax(-1)
    # Shift the largest logit to 0 before dividing: a tiny temperature then sends the others to
    # -inf, not the largest to +inf (inf - inf is NaN in softmax). At temperature 1 there is
    # nothing to divide, and softmax shifts by the largest logit itself.
    if temperature != 1.0:
        logits = (logits - logits.amax(-1, keepdim=True)) / divisor(temperature)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # Keep the smallest set of most likely tokens whose probabilities add up to top_p: a token
        # goes when the ones more likely than it already reach top_p (the first always stays).
        p, order = torch.softmax(logits, -1).sort(-1, descending=True)  # (B, V)
        drop_sorted = p.cumsum(-1) - p >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return draw(torch.softmax(logits, -1), generator)


def divisor(temperature: float) -> float:
    """What the logits are divided by: the temperature, or float32's smallest normal number
    where it is below that (it would round to 0 and make 0 / 0)."""
    return max(temperature, torch.finfo(torch.float32).tiny)


def draw(probs: Tensor, generator: torch.Generator | Exponentials | None) -> Tensor:
    """One id per row of probs (B, V) -> (B,): the draw `torch.multinomial(probs, 1)` makes, whose
    one-sample path is this race (argmax of p / q, q ~ Exp(1), the Gumbel-max trick), with the
    same random numbers, but without its validity checks, which cost more than the draw.
    `generator` may be an `Exponentials`, which has drawn the numbers of many steps at once."""
    if isinstance(generator, Exponentials):
        q = generator.next()
    else:
        q = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / q).argmax(-1)


class Exponentials:
    """The Exp(1) numbers of the next `steps` draws of (rows, width) probabilities, drawn from
    `generator` up to AHEAD steps at a time: a stream's draw then costs no allocation and no call
    of the generator (15 us of a 220 us character on 2 threads of an Intel Xeon). torch fills a
    block in the order that one draw after another would, so the draws, and the text, are the
    same (a test checks it)."""

    def __init__(self, generator: torch.Generator, rows: int, width: int, steps: int):
        self.generator, self.rows, self.width, self.left = generator, rows, width, steps
        self.block: list[Tensor] = []  # the steps drawn and not used yet, last first

    def next(self) -> Tensor:
        """The numbers of the next draw (rows, width)."""
        if not self.block:
            size = max(1, min(AHEAD, self.left))
            self.left -= size
            drawn = torch.empty(size, self.rows, self.width).exponential_(
                1, generator=self.generator)
            self.block = list(drawn.unbind(0))[::-1]  # views made at once: indexing costs more
        return self.block.pop()


def check_options(length: int, temperature: float, top_k: int | None, top_p: float | None = None,
                  repetition_penalty: float = 1.0, num_samples: int | None = None,
                  beam: int | None = None, greedy: bool = False) -> None:
    for name, value, kind in (("length", length, int), ("temperature", temperature, float),
                              ("top_k", top_k, int), ("top_p", top_p, float),
                              ("repetition_penalty", repetition_penalty, float),
                              ("num_samples", num_samples, int), ("beam", beam, int)):
        number = numbers.Integral if kind is int else numbers.Real
        if value is not None and (isinstance(value, bool) or not isinstance(value, number)):
            raise RnnkitError(f"{name} must be {'an integer' if kind is int else 'a number'}, "
                              f"got {value!r}")
    if length < 0:
        raise RnnkitError(f"length must be 0 or more, got {length}")
    if not temperature > 0:
        raise RnnkitError(f"temperature must be positive, got {temperature}; "
                          "for the most likely character every time use greedy")
    if top_k is not None and top_k < 1:
        raise RnnkitError(f"top-k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise RnnkitError(f"top-p must be in (0, 1], got {top_p}; 0.9 keeps the most likely "
                          "characters that make up 90% of the probability")
    if not 0 < repetition_penalty < math.inf:
        raise RnnkitError(f"repetition penalty must be a positive finite number, got "
                          f"{repetition_penalty}; 1 is none, 1.2 a usual choice")
    if num_samples is not None and not 1 <= num_samples <= MAX_SAMPLES:
        raise RnnkitError(f"the number of samples must be in [1, {MAX_SAMPLES:,}], got {num_samples}")
    if greedy and (temperature != 1.0 or top_k is not None or top_p is not None):
        raise RnnkitError("greedy decoding takes the most likely symbol and draws nothing; drop "
                          "temperature, top-k and top-p, or drop greedy")
    if greedy and (num_samples or 1) > 1:
        raise RnnkitError(f"greedy decoding writes the same text every time, so {num_samples} "
                          "samples would be copies; drop the number of samples, or drop greedy")
    if beam is not None:
        if not 1 <= beam <= MAX_SAMPLES:
            raise RnnkitError(f"the beam width must be in [1, {MAX_SAMPLES:,}], got {beam}")
        if temperature != 1.0 or top_k is not None or top_p is not None or greedy:
            raise RnnkitError("beam search keeps the most likely continuations and draws nothing; "
                              "drop greedy, temperature, top-k and top-p, or drop the beam")
        if (num_samples or 1) > beam:
            raise RnnkitError(f"{num_samples} samples asked from a beam of {beam}; a beam returns "
                              "at most its width, so widen the beam")
        if repetition_penalty != 1.0:
            raise RnnkitError("the repetition penalty reshapes the draws of sampling, and beam "
                              "search draws nothing; drop the penalty, or drop the beam")
        if length * beam > MAX_STRING:  # every beam's every step is kept until the end
            raise RnnkitError(f"a beam of {beam} over {length:,} symbols holds more than "
                              f"{MAX_STRING:,} of them until the search ends; shorten the "
                              "length or narrow the beam")


def check_prime(prime: str | bytes) -> None:
    if not isinstance(prime, (str, bytes)):  # bytes: a byte model's prime, exactly
        raise RnnkitError(f"the prime must be text (a str), got {type(prime).__name__}")
    if len(prime) > MAX_PRIME:
        raise RnnkitError(f"the prime text has {len(prime):,} characters; the limit is "
                          f"{MAX_PRIME:,}; give a shorter prime (its end matters most)")


def unfinished(prime: str | bytes) -> bytes:
    """The bytes at the end of a byte prime that begin a UTF-8 character without ending it
    (b"caf\\xc3" -> b"\\xc3"); b"" for text, or a prime that ends where a character does."""
    if not isinstance(prime, bytes):
        return b""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(prime)
    return decoder.getstate()[0]


def generate(model, prime: str = "", length: int = 200, temperature: float = 1.0,
             top_k: int | None = None, greedy: bool = False, seed: int | None = None, *,
             top_p: float | None = None, repetition_penalty: float = 1.0,
             num_samples: int | None = None, beam: int | None = None,
             precision: str = "fp32", raw: bool = False) -> Iterator[str] | Iterator[list[str]]:
    """Yield `length` generated symbols as text, one piece per symbol, after priming with `prime`.

    Sampling follows Hugging Face's `generate`: `repetition_penalty`, then `temperature`,
    `top_k` and `top_p` (nucleus), or `greedy`. `num_samples=N` runs N streams in one batch
    and yields a list of N pieces per symbol. `beam=K` runs beam search of width K instead of
    sampling: the continuation of `length` symbols with the highest log-probability found (with
    `num_samples`, the best N of the K beams); it yields once the search is done.
    `precision` is the stepper's ("fp32", the exact reference; "bf16"; "int8"; "int4"; see
    `Weights`).

    Prime characters outside the vocabulary are skipped with an RnnkitWarning naming them. With
    no usable prime the model starts as after a newline (or its first symbol, if it has no
    newline). A byte model's output is decoded as UTF-8, invalid sequences shown as U+FFFD;
    with `raw`, its pieces are the bytes generated, undecoded.
    """
    check_options(length, temperature, top_k, top_p, repetition_penalty, num_samples, beam, greedy)
    if seed is not None and (greedy or beam is not None):  # it was accepted and changed nothing
        raise RnnkitError(f"{'greedy decoding' if greedy else 'beam search'} draws nothing, so a "
                          "seed changes nothing; drop the seed, or sample")
    check_precision(precision, next(model.parameters()).device)
    check_prime(prime)
    vocab = model.vocab
    if vocab is None:
        raise RnnkitError("this model has no vocabulary; load a trained one with rnnkit.load(DIR)")
    ids, unknown = vocab.encode(prime, "the prime text")
    if unknown:
        warnings.warn(skipped_words("prime text", unknown, vocab), RnnkitWarning, stacklevel=2)
    in_text = tuple(ids)  # what the repetition penalty counts as already written
    if not ids:
        try:
            ids = [vocab.index("\n")]
        except KeyError:
            ids = [0]
    seed = int(seed) if seed is not None else int.from_bytes(os.urandom(8), "little")
    rows = produce(model, ids, length, temperature, top_k, greedy, seed, top_p, repetition_penalty,
                   num_samples or 1, beam, precision, in_text, raw, unfinished(prime))
    return rows if num_samples is not None else (pieces[0] for pieces in rows)


def produce(model, ids: list[int], length: int, temperature: float, top_k: int | None,
            greedy: bool, seed: int, top_p: float | None = None, repetition_penalty: float = 1.0,
            num_samples: int = 1, beam: int | None = None,
            precision: str = "fp32", in_text: tuple[int, ...] = (),
            raw: bool = False, pending: bytes = b"") -> Iterator[list[str]]:
    """The generator behind `generate`, which has already checked the options: the text of
    `num_samples` streams, one list of pieces per symbol, after the prime `ids`; `in_text`, the
    ids the repetition penalty counts as written before (the prime's; none when the model
    starts as after a newline that is not in the text); `raw`: a byte model's bytes; `pending`:
    the bytes of a character that a byte prime began (`unfinished`), which the first generated
    bytes may finish."""
    vocab = model.vocab
    N = num_samples
    generator = Exponentials(torch.Generator().manual_seed(seed), N, len(vocab), length)
    with evaluating(model):
        stepper = Stepper(model, precision)
        logits = stepper.feed_many(ids)
        if beam is not None:
            tokens = iter(best_beams(stepper, logits, beam, length, num_samples))
        elif num_samples > 1:
            stepper.select(torch.zeros(num_samples, dtype=torch.long))  # N copies of the primed state
            logits = stepper.logits
        seen = None
        if repetition_penalty != 1.0:
            seen = torch.zeros(N, len(vocab), dtype=torch.bool)  # (N, V) tokens in each text
            seen[:, list(in_text)] = True
        decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(N)] \
            if vocab.kind == "byte" and not raw else None
        for d in decoders or []:
            d.decode(pending)  # nothing to show yet: the character goes on in the first bytes
        symbols = [vocab.decode([t]) for t in range(len(vocab))]  # id -> text (bytes)
        # one stream's plain draw from softmax(logits / temperature), in native.c with the
        # stepper's layers: the race `draw` runs, on the same numbers, in one call
        race = stepper.native.race if stepper.native is not None and N == 1 and beam is None \
            and not greedy and top_k is None and top_p is None and seen is None else None
        if race is not None:
            logits = logits.float().contiguous()  # (V,) as the race reads it
            race_temperature = divisor(temperature)  # as `pick` divides
        for i in range(length):
            with stepper.mode:  # the draw and the next step; left before yielding to the caller
                if race is not None:
                    q = generator.next()  # (1, V), held while the race reads it
                    chosen = [race(logits.data_ptr(), q.data_ptr(), len(vocab), race_temperature)]
                else:
                    if beam is not None:
                        token = next(tokens)  # (N,)
                    else:
                        token = pick(logits.reshape(N, -1), temperature, top_k, greedy,
                                     generator, top_p, repetition_penalty, seen)  # (N,)
                    if seen is not None:
                        seen[torch.arange(N), token] = True
                    chosen = token.tolist()  # (N,) ids
                if beam is None and i + 1 < length:
                    logits = stepper.advance(chosen[0] if N == 1 else token)
            pieces = [symbols[t] for t in chosen]
            yield [d.decode(p) for d, p in zip(decoders, pieces, strict=True)] if decoders else pieces
        if decoders:
            tails = [d.decode(b"", final=True) for d in decoders]
            if any(tails):
                yield tails


def best_beams(stepper: Stepper, logits: Tensor, width: int, length: int,
               n: int) -> Iterator[Tensor]:
    """The n best of a width-`width` beam search from a primed stepper, one (n,) id tensor per
    step; the whole search runs before the first is yielded."""
    def advance(tokens: Tensor, rows: Tensor) -> Tensor:
        stepper.select(rows)
        return stepper.feed(tokens)

    found = beam_search(advance, logits, width, length)[:n]
    if len(found) < n:  # fewer texts of this length exist than were asked for
        raise RnnkitError(f"{n} samples asked, but only {len(found)} different texts of "
                          f"{length} symbols exist; ask for fewer samples or longer ones")
    return iter(torch.tensor([seq for seq, _ in found]).T.reshape(length, n))
