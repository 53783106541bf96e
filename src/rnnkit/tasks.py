"""The five ways a network maps inputs to outputs (Karpathy), on the shared `Recurrent` core.

    one-to-one     MLP(MLPConfig)                         a fixed vector in, a class or value out:
                                                          the control for every RNN result
    one-to-many    ConditionedGenerator(GeneratorConfig)  a label or vector sets h_0, the model
                                                          writes a sequence
    many-to-one    SequenceModel(SequenceConfig)          a sequence in, one class or value out
                                                          (last or pooled)
    many-to-many   Seq2Seq(Seq2SeqConfig)                 encoder reads, decoder writes (teacher
                                                          forcing to train)
    synced         Tagger(TaggerConfig)                   one output per input step (tags,
                                                          next-step forecasts)

Every model is built from its one config dataclass (the two decoding models' configs hold a
`DecoderConfig`), saved as JSON with `dataclasses.asdict` and read back, checked, with
`rnnkit.config.from_dict(GeneratorConfig, data)`. Every model answers
`forward(inputs, targets=None, ...) -> (outputs, loss)`, `loss` None without targets, so one
training loop (`rnnkit.fit`) serves them all. Variable-length batches are padded
and passed with `lengths` (B,); `Recurrent` packs them, so padding never changes a result.

A head is "classify" (logits, cross-entropy) or "regress" (values, mean squared error).
Letters: B batch, T time, F features, H hidden, D directions, C classes or outputs, V vocabulary.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .beam import decode_beam
from .cells import evaluating
from .config import check_fields
from .configs import HEADS, MAX_LAYERS, MAX_MEMBERS, MAX_SIZE, POOLS, check_cell
from .errors import RnnkitError, require_positive, require_seed
from .recurrent import Recurrent
from .sample import pick

STD_FLOOR = 1e-6  # a feature whose training std is at most this is centred, not scaled


def check_head(head: str) -> None:
    if head not in HEADS:
        raise RnnkitError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")


def check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise RnnkitError(f"dropout must be in [0, 1), got {dropout}")


def check_sizes(hidden: int, layers: int) -> None:
    """The language model's guard against a typo's size (hidden 10**6 would ask for terabytes)."""
    if hidden > MAX_SIZE or layers > MAX_LAYERS:
        raise RnnkitError(f"model sizes must stay below {MAX_SIZE} units and {MAX_LAYERS} layers, "
                          f"got hidden {hidden}, layers {layers}")


def token_ids(values, size: int, name: str, what: str, dims: int) -> Tensor:
    """`values` (a tensor, array or list) as int64 ids in [0, size) of `dims` dimensions, at
    least one row; else one line naming the problem."""
    t = values if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))
    if t.is_floating_point() and not bool((t == t.round()).all()):
        raise RnnkitError(f"{name} must be {what}, whole numbers, got fractions")
    if t.dim() != dims or not len(t):
        shape = "(B,)" if dims == 1 else "(B, S)"
        raise RnnkitError(f"{name} must be {what} of shape {shape}, got shape {tuple(t.shape)}")
    t = t.long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= size):
        raise RnnkitError(f"{name} must be {what} from 0 to {size - 1}, got {int(t.min())} to "
                          f"{int(t.max())}")
    return t


def check_decoding(max_length: int, beam: int | None, greedy: bool = True,
                   temperature: float = 1.0, seed: int | None = None) -> None:
    for name, value in (("max_length", max_length), ("beam", beam)):
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, numbers.Integral) or value < 1):
            raise RnnkitError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise RnnkitError(f"temperature must be a number, got {temperature!r}")
    if seed is not None:
        require_seed(seed, "seed")
    if beam is not None and (not greedy or temperature != 1.0 or seed is not None):
        raise RnnkitError("beam search keeps the most likely sequences and draws nothing; drop "
                          "greedy=False, temperature and seed, or drop the beam")
    if greedy and (temperature != 1.0 or seed is not None):  # greedy is the default
        raise RnnkitError("greedy decoding (the default) takes the most likely token and draws "
                          "nothing; pass greedy=False to sample with a temperature or a seed")


def check_config(config, cls: type, model: str) -> None:
    """Every model is `Model(config)`: say so when it is given something else."""
    if type(config) is not cls:  # a SequenceConfig's pool would mean nothing to a Tagger
        raise RnnkitError(f"{model} takes one {cls.__name__}, got {type(config).__name__}; "
                          f"build it as {model}({cls.__name__}(...))")


@dataclass
class MLPConfig:
    """The shape of a one-to-one MLP; saved as JSON next to its weights."""

    input_size: int  # F: features of the input vector (inputs (B, ...) are flattened to it)
    output_size: int  # C: classes (classify) or values (regress)
    hidden: int = 128  # units per hidden layer
    layers: int = 2  # hidden layers, each Linear -> ReLU -> dropout
    dropout: float = 0.0  # after each hidden layer
    head: str = "classify"  # "classify" (cross-entropy on logits) or "regress" (mean squared error)

    def __post_init__(self):
        check_fields(self)
        require_positive(input_size=self.input_size, output_size=self.output_size,
                         hidden=self.hidden, layers=self.layers)
        check_sizes(self.hidden, self.layers)
        check_head(self.head)
        check_dropout(self.dropout)


@dataclass
class TaggerConfig:
    """The shape of a synced model (one output per step); saved as JSON next to its weights.

    `SequenceConfig` is the same with a pool: a many-to-one model summarises the states.
    """

    input_size: int  # F: features per time step
    output_size: int  # C: classes (classify) or values (regress) per output
    head: str = "classify"  # "classify" (cross-entropy on logits) or "regress" (mean squared error)
    cell: str = "lstm"  # "lstm", "gru" or "rnn" (tanh)
    hidden: int = 128  # H: units per layer and direction
    layers: int = 1  # L: stacked recurrent layers
    dropout: float = 0.0  # between recurrent layers, and before the output layer
    bidirectional: bool = False  # also read the sequence backwards (D = 2)

    def __post_init__(self):
        check_fields(self)
        require_positive(input_size=self.input_size, output_size=self.output_size,
                         hidden=self.hidden, layers=self.layers)
        check_sizes(self.hidden, self.layers)
        check_cell(self.cell)
        check_head(self.head)
        check_dropout(self.dropout)


@dataclass
class SequenceConfig(TaggerConfig):
    """The shape of a many-to-one model; saved as JSON next to its weights."""

    pool: str = "last"  # many-to-one summary of the states: "last", "mean" or "max"
    # A regression head that writes these quantiles of each value (C = values x Q), trained
    # with the pinball loss; empty: one value each, mean squared error.
    quantiles: list[float] = field(default_factory=list)
    # > 0: instead of one summary, each of the last `tail` real steps writes output_size / tail
    # values (a forecaster whose window runs on over the steps it forecasts); 0: the pool.
    tail: int = 0
    conv: int = 0  # 0: none; C: a convolutional branch beside the recurrent one (LSTM-FCN):
    #                Conv1d blocks C, 2C, C wide, kernels 8, 5, 3, averaged over time
    members: int = 1  # > 1: an ensemble of that many models of this shape, trained apart,
    #                   their class probabilities averaged (`Ensemble`)
    downsample: int = 1  # > 1: the layers read the mean of each block of this many steps
    #                      (`block_means`), a sequence 1/downsample as long
    scales: list[int] = field(default_factory=list)  # an ensemble's: each member's downsample
    #                                                  (empty: `downsample` for every member)
    pad_to: int = 0  # > 0: a sequence shorter than this many steps is read as this long, the
    #                  steps past its end at the training mean (`padded_to`); 0: not read

    def __post_init__(self):
        super().__post_init__()
        if self.pool not in POOLS:
            raise RnnkitError(f"unknown pool {self.pool!r}; choose one of {', '.join(POOLS)}")
        if self.tail < 0 or (self.tail and (self.output_size % self.tail or self.bidirectional)):
            raise RnnkitError(f"tail ({self.tail}) must be 0, or divide output_size "
                              f"({self.output_size}) in a one-directional model")
        if self.quantiles:
            Q = len(self.quantiles)
            if self.head != "regress" or self.output_size % Q or \
                    not all(0 < q < 1 for q in self.quantiles):
                raise RnnkitError(f"quantiles {self.quantiles} need a regress head whose "
                                  f"output_size ({self.output_size}) is a multiple of {Q}, "
                                  "levels between 0 and 1")
        if self.conv < 0:
            raise RnnkitError(f"conv must be 0 (no convolutional branch) or its width, got "
                              f"{self.conv}")
        if self.downsample < 1 or (self.downsample > 1 and self.tail):
            raise RnnkitError(f"downsample must be at least 1, and 1 with tail; got "
                              f"{self.downsample}")
        if self.scales and (len(self.scales) != self.members or min(self.scales) < 1):
            raise RnnkitError(f"scales {self.scales} must give each of the {self.members} "
                              "members a downsample of at least 1")
        if self.pad_to < 0 or (self.pad_to and self.tail):
            raise RnnkitError(f"pad_to must be 0 (the padding is not read) or a length, and 0 "
                              f"with tail; got {self.pad_to}")
        if self.conv and self.tail:
            raise RnnkitError("a convolutional branch (conv) reads a whole sequence for one "
                              "summary; it does not go with tail")
        if not 1 <= self.members <= MAX_MEMBERS or (self.members > 1 and self.head != "classify"):
            raise RnnkitError(f"members must be 1 to {MAX_MEMBERS} (more than 1: an ensemble of "
                              f"classifiers), got {self.members} with a {self.head} head")

    def member(self, k: int) -> SequenceConfig:
        """Member k's own config: one model, at its scale."""
        return replace(self, members=1, scales=[],
                       downsample=self.scales[k] if self.scales else self.downsample)


def head_loss(head: str, outputs: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy of logits (..., C) against class ids (...), or MSE of values against values.

    `mask` (...) marks the positions that count (1) and the padding (0), whose targets may be
    anything (-1, NaN): they are read as 0, so that no value there reaches the loss.
    """
    if mask is not None:
        real = mask.bool().reshape(*mask.shape, *[1] * (targets.dim() - mask.dim()))
        targets = torch.where(real, targets, torch.zeros((), dtype=targets.dtype,
                                                         device=targets.device))
    if head == "classify":
        per = F.cross_entropy(outputs.flatten(0, -2), targets.flatten().long(),
                              reduction="none")  # (N,)
    else:
        err = (outputs - targets.to(outputs.dtype).reshape(outputs.shape)) ** 2
        per = err.flatten() if mask is None else err.reshape(mask.numel(), -1).mean(-1)
    if mask is None:
        return per.mean()
    mask = mask.flatten().to(per.dtype)
    return (per * mask).sum() / mask.sum()


def pinball_loss(outputs: Tensor, targets: Tensor, quantiles: list[float]) -> Tensor:
    """The quantile (pinball) loss: outputs (B, C * Q), the Q quantiles of each of C values,
    against targets (B, C). For level q and error e = y - y^_q: max(q e, (q - 1) e), whose
    minimiser is the q-quantile of y."""
    q = torch.tensor(quantiles, dtype=outputs.dtype, device=outputs.device)  # (Q,)
    e = targets.to(outputs.dtype)[..., None] - outputs.reshape(*targets.shape, len(quantiles))
    return torch.maximum(q * e, (q - 1) * e).mean()  # over B, C and Q


def time_mask(lengths: Tensor | None, B: int, T: int, device) -> Tensor:
    """(B, T) booleans: True at the real steps of each row."""
    if lengths is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    return torch.arange(T, device=device)[None, :] < lengths.to(device)[:, None]


def padded_to(x: Tensor, lengths: Tensor | None, n: int, value: Tensor,
              ) -> tuple[Tensor, Tensor | None]:
    """Rows shorter than n steps read as n steps long, every step past a row's end set to
    `value` (F,): x (B, T, F), lengths (B,) or None (every row T steps) -> (B, max(T, n), F),
    max(lengths, n) or None. A row's result does not depend on its batch. Rows of n steps or
    more are left as they are, so an exported model that reads rows of at least n steps has no
    branch on T."""
    B, T, _ = x.shape
    if lengths is not None:
        x = torch.where(time_mask(lengths, B, T, x.device)[..., None], x, value)
        lengths = lengths.to(x.device).clamp_min(n)
    if n > T:
        x = torch.cat([x, value.expand(B, n - T, -1)], dim=1)
    return x, lengths


def block_means(x: Tensor, lengths: Tensor | None, k: int) -> tuple[Tensor, Tensor | None]:
    """Each block of k steps replaced by the mean of its real steps (a row's last block may be
    shorter): x (B, T, F), lengths (B,) or None -> (B, ceil(T / k), F), ceil(lengths / k).
    A ratio of two average pools, so that its divisor cancels out and it exports to ONNX."""
    keep = time_mask(lengths, *x.shape[:2], x.device)[:, None, :].to(x.dtype)  # (B, 1, T)
    sums = F.avg_pool1d(x.transpose(1, 2) * keep, k, ceil_mode=True)  # (B, F, T')
    counts = F.avg_pool1d(keep, k, ceil_mode=True)  # (B, 1, T'): 0 past a row's end
    means = (sums / counts.clamp_min(torch.finfo(x.dtype).tiny)).transpose(1, 2)
    return means, None if lengths is None else (lengths + k - 1) // k


def last_hidden(state, directions: int) -> Tensor:
    """The top layer's final h, both directions concatenated: (B, D*H).

    With packed input the forward direction's final h is each row's state at its own last step,
    and the backward direction's is its state after reading back to step 0.
    """
    h = state[0] if isinstance(state, tuple) else state  # (L*D, B, H)
    return torch.cat(list(h[-directions:]), dim=-1)


class MLP(nn.Module):
    """One-to-one: a feed-forward network on a fixed vector, the control for every RNN result.

        h_1 = relu(W_1 x + b_1), ..., y = W_out h_L + b_out

    Shapes: inputs (B, F) -> outputs (B, C).
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        check_config(config, MLPConfig, "MLP")
        self.config = c = config
        sizes = [c.input_size] + [c.hidden] * c.layers
        blocks: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            blocks += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(c.dropout)]
        self.body = nn.Sequential(*blocks)
        self.out = nn.Linear(sizes[-1], c.output_size)

    def forward(self, inputs: Tensor, targets: Tensor | None = None):
        outputs = self.out(self.body(inputs.flatten(1)))  # (B, C)
        loss = None if targets is None else head_loss(self.config.head, outputs, targets)
        return outputs, loss


class BatchNorm(nn.Module):
    """Batch normalisation of (B, C, T) over B and T, per channel:

        y = gamma (u - mean) / sqrt(var + eps) + beta

    with the batch's mean and variance in training, and in eval their running averages
    (updated by `momentum` at each training batch). torch's BatchNorm1d computes it; this holds
    only floating-point tensors (no step counter), as every run's weights do."""

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(channels))  # gamma
        self.bias = nn.Parameter(torch.zeros(channels))  # beta
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, u: Tensor) -> Tensor:
        return F.batch_norm(u, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)


class ConvBranch(nn.Module):
    """The fully convolutional branch of LSTM-FCN (Karim et al., 2017): three blocks of

        u = relu(batchnorm(conv1d(u)))      widths C, 2C, C; kernels 8, 5, 3; 'same' length

    then the mean over the real steps. Padding is zeroed before each convolution, so a
    sequence's result does not depend on the padding its batch adds (in eval mode: batch norm
    then uses its running statistics).
    Shapes: x (B, T, F), mask (B, T, 1) -> (B, C).
    """

    def __init__(self, input_size: int, width: int):
        super().__init__()
        sizes = [input_size, width, 2 * width, width]
        # k // 2 zeros on both sides, the output cut back to T steps (an even kernel makes one
        # more): 'same' length without torch's copy for even kernels
        self.convs = nn.ModuleList(nn.Conv1d(a, b, k, padding=k // 2)
                                   for a, b, k in zip(sizes[:-1], sizes[1:], (8, 5, 3),
                                                      strict=True))
        self.norms = nn.ModuleList(BatchNorm(b) for b in sizes[1:])

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        keep = mask.transpose(1, 2).to(x.dtype)  # (B, 1, T)
        u = x.transpose(1, 2)  # (B, F, T): channels first, as Conv1d reads them
        for conv, norm in zip(self.convs, self.norms, strict=True):
            u = torch.relu(norm(conv(u * keep)[..., :keep.shape[-1]]))  # (B, C_k, T)
        return (u * keep).sum(-1) / keep.sum(-1)  # (B, C)


class SequenceModel(nn.Module):
    """Many-to-one: read a sequence, classify it or regress a value from one summary vector.

        states = Recurrent(x_1..x_T)            (B, T, D*H)
        s = states at the last step | mean over real steps | max over real steps
        s = [s, ConvBranch(x)]                  with `conv` (LSTM-FCN): (B, D*H + C)
        y = W_out dropout(s) + b_out            (B, C_out)

    or, with `tail` K, one output per each of the last K real steps (a forecaster reading the
    steps it forecasts): y_k = W_out dropout(states_T-K+k) + b_out, (B, K, C / K) -> (B, C).

    Inputs are standardised first, `(x - input_mean) / input_std`; those buffers are set from the
    training data (`set_standardization`) and saved with the weights. With `downsample` k the
    layers then read the mean of each block of k steps (`block_means`); with `pad_to` n, a
    sequence shorter than n steps is first padded to n steps with the training mean
    (`pad_value`), and the padding is read.
    """

    def __init__(self, config: SequenceConfig):
        super().__init__()
        check_config(config, SequenceConfig, "SequenceModel")
        self.config = c = config
        self.rnn = Recurrent(c.cell, c.input_size, c.hidden, c.layers, c.dropout, c.bidirectional)
        self.drop = nn.Dropout(c.dropout)
        self.fcn = ConvBranch(c.input_size, c.conv) if c.conv else None
        self.out = nn.Linear(self.rnn.directions * c.hidden + c.conv,
                             c.output_size // max(1, c.tail))
        self.register_buffer("input_mean", torch.zeros(c.input_size))
        self.register_buffer("input_std", torch.ones(c.input_size))
        if c.pad_to:  # what a short sequence is padded with, in the input's units
            self.register_buffer("pad_value", torch.zeros(c.input_size))

    def set_standardization(self, mean: Tensor, std: Tensor, pad: Tensor | None = None) -> None:
        """Standardise inputs with the training data's mean and std; pad short sequences
        (`pad_to`) with `pad` (default: the mean; an ensemble's members share one). A feature
        that does not vary in training (std at most STD_FLOOR) is only centred, as scikit-learn's
        StandardScaler does: divided by its tiny std, a value it takes later (a promotion flag
        first set in the forecast's future) would reach the model a million times too large."""
        self.input_mean.copy_(mean)
        self.input_std.copy_(torch.where(std > STD_FLOOR, std, torch.ones_like(std)))
        if self.config.pad_to:
            self.pad_value.copy_(mean if pad is None else pad)

    def forward(self, inputs: Tensor, targets: Tensor | None = None,
                lengths: Tensor | None = None, state=None):
        """inputs (B, T, F), lengths (B,) -> (outputs (B, C), loss)."""
        if self.config.pad_to:  # (B, max(T, pad_to), F)
            inputs, lengths = padded_to(inputs, lengths, self.config.pad_to, self.pad_value)
        x = (inputs - self.input_mean) / self.input_std  # (B, T, F)
        if self.config.downsample > 1:
            x, lengths = block_means(x, lengths, self.config.downsample)  # (B, T / k, F)
        states, final = self.rnn(x, state, lengths)  # (B, T, D*H)
        pool, K = self.config.pool, self.config.tail
        if K:  # the states of each row's last K real steps, one output each: (B, K * C / K)
            end = lengths.to(states.device) if lengths is not None else \
                torch.full((len(states),), states.shape[1], device=states.device)
            steps = end[:, None] - K + torch.arange(K, device=states.device)  # (B, K)
            tail = states.gather(1, steps[..., None].expand(-1, -1, states.shape[2]))
            outputs = self.out(self.drop(tail)).flatten(1)  # (B, K, C / K) -> (B, C)
        else:
            if pool != "last" or self.fcn is not None:  # real steps, for a pool over time
                mask = time_mask(lengths, *states.shape[:2], states.device)[..., None]  # (B, T, 1)
            if pool == "last":
                summary = last_hidden(final, self.rnn.directions)  # (B, D*H)
            elif pool == "mean":
                summary = (states * mask).sum(1) / mask.sum(1)
            else:
                summary = states.masked_fill(~mask, float("-inf")).amax(1)
            if self.fcn is not None:
                summary = torch.cat([summary, self.fcn(x, mask)], dim=-1)  # (B, D*H + C)
            outputs = self.out(self.drop(summary))  # (B, C)
        if targets is None:
            return outputs, None
        if self.config.quantiles:
            return outputs, pinball_loss(outputs, targets, self.config.quantiles)
        return outputs, head_loss(self.config.head, outputs, targets)


class Ensemble(nn.Module):
    """Classifiers of one shape trained apart (each from its own seed and validation part,
    each reading the sequences at its own time scale: `SequenceConfig.scales`), read as one:
    the mean of their class probabilities,

        p = mean_k softmax(SequenceModel_k(x))        outputs log p (B, C)

    so that softmax(outputs) = p, and `outputs` go wherever one model's logits go (prediction,
    export). The loss, given targets, is the cross-entropy of p; members are trained one by one
    as SequenceModels, not through it.
    """

    def __init__(self, config: SequenceConfig):
        super().__init__()
        check_config(config, SequenceConfig, "Ensemble")
        self.config = config
        self.members = nn.ModuleList(SequenceModel(config.member(k))
                                     for k in range(config.members))

    def forward(self, inputs: Tensor, targets: Tensor | None = None,
                lengths: Tensor | None = None):
        """inputs (B, T, F), lengths (B,) -> (log of the mean probabilities (B, C), loss)."""
        logp = torch.stack([torch.log_softmax(m(inputs, lengths=lengths)[0], -1)
                            for m in self.members])  # (K, B, C)
        outputs = torch.logsumexp(logp, 0) - math.log(len(self.members))  # (B, C)
        loss = None if targets is None else F.nll_loss(outputs, targets.long())
        return outputs, loss


def sequence_model(config: SequenceConfig) -> SequenceModel | Ensemble:
    """The many-to-one model `config` describes: one SequenceModel, or an Ensemble of them."""
    return Ensemble(config) if config.members > 1 else SequenceModel(config)


class Tagger(nn.Module):
    """Synced many-to-many: one output per input step (tags, or the next value of a series).

        states = Recurrent(x_1..x_T); y_t = W_out states_t + b_out      (B, T, C)

    A forward-only tagger (not bidirectional) is causal, so it is also a next-step forecaster:
    train it with targets x_{t+1}, then `stream` pieces of a series, carrying the state.
    """

    synced = True  # one target per input step: `fitting.rows` cuts them with the inputs

    def __init__(self, config: TaggerConfig):
        super().__init__()
        check_config(config, TaggerConfig, "Tagger")
        self.config = c = config
        self.rnn = Recurrent(c.cell, c.input_size, c.hidden, c.layers, c.dropout, c.bidirectional)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(self.rnn.directions * c.hidden, c.output_size)

    def forward(self, inputs: Tensor, targets: Tensor | None = None,
                lengths: Tensor | None = None):
        """inputs (B, T, F), targets (B, T) ids or (B, T, C) values -> (outputs (B, T, C), loss)."""
        states, _ = self.rnn(inputs, None, lengths)  # (B, T, D*H)
        outputs = self.out(self.drop(states))  # (B, T, C)
        loss = None
        if targets is not None:
            mask = time_mask(lengths, *inputs.shape[:2], inputs.device)
            loss = head_loss(self.config.head, outputs, targets, mask)
        return outputs, loss

    def stream(self, inputs: Tensor, state=None):
        """Streaming: inputs (B, T, F) and the state a previous call returned (None: zeros) ->
        (outputs (B, T, C), state). Calls on consecutive pieces equal one call on the whole."""
        if self.rnn.bidirectional:  # its backward half reads each piece from its own end
            raise RnnkitError("a bidirectional tagger reads the whole sequence; it cannot "
                              "stream pieces (call it on the whole, or train it one-way)")
        states, final = self.rnn(inputs, state)  # (B, T, D*H)
        return self.out(self.drop(states)), final


@dataclass
class DecoderConfig:
    """A token decoder: what `ConditionedGenerator` and `Seq2Seq` write with."""

    vocab_size: int  # V: output symbols, including the start and end symbols
    cell: str = "lstm"  # "lstm", "gru" or "rnn"
    hidden: int = 128  # H of the decoder (and of each encoder direction)
    layers: int = 1  # L, the same for encoder and decoder
    embed: int = 32  # size of the token embedding
    dropout: float = 0.0  # between layers
    start: int = 0  # id fed at the first decoding step
    end: int = 1  # id that ends a generated sequence

    def __post_init__(self):
        check_fields(self)
        require_positive(vocab_size=self.vocab_size, hidden=self.hidden, layers=self.layers,
                         embed=self.embed)
        check_sizes(max(self.hidden, self.embed), self.layers)
        check_cell(self.cell)
        check_dropout(self.dropout)
        for name in ("start", "end"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise RnnkitError(f"{name} must be a symbol id in [0, {self.vocab_size}), got "
                                  f"{getattr(self, name)}")


class Decoder(nn.Module):
    """Embedding -> Recurrent -> logits over V, teacher-forced or stepped one token at a time."""

    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.config = c
        self.embed = nn.Embedding(c.vocab_size, c.embed)
        self.rnn = Recurrent(c.cell, c.embed, c.hidden, c.layers, c.dropout)
        self.out = nn.Linear(c.hidden, c.vocab_size)

    def forward(self, inputs: Tensor, state, targets: Tensor | None = None,
                lengths: Tensor | None = None):
        """Teacher forcing: inputs (B, T) are the targets shifted right (start symbol first)."""
        states, _ = self.rnn(self.embed(inputs), state, lengths)  # (B, T, H)
        logits = self.out(states)  # (B, T, V)
        loss = None
        if targets is not None:
            mask = time_mask(lengths, *inputs.shape, inputs.device)
            loss = head_loss("classify", logits, targets, mask)
        return logits, loss

    @torch.no_grad()
    def decode(self, state, B: int, max_length: int, greedy: bool = True,
               temperature: float = 1.0, seed: int | None = None,
               beam: int | None = None) -> list[list[int]]:
        """Write up to `max_length` tokens per row from `state`, stopping each row at `end`;
        with `beam=K`, each row's most likely sequence found by beam search (rnnkit.beam)."""
        c = self.config
        device = self.out.weight.device
        if beam is not None:
            return [decode_beam(self, state, b, max_length, beam)[0][0] for b in range(B)]
        if not (greedy or temperature > 0):
            raise RnnkitError(f"temperature must be positive, got {temperature}; use greedy=True")
        # The language model's choice of the next token (`sample.pick`), drawn on the CPU.
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        token = torch.full((B,), c.start, dtype=torch.long, device=device)
        rows, done = [[] for _ in range(B)], torch.zeros(B, dtype=torch.bool, device=device)
        for _ in range(max_length):
            h, state = self.rnn.step(self.embed(token), state)  # (B, H)
            token = pick(self.out(h), temperature, greedy=greedy,
                         generator=generator).to(device)  # (B,)
            for b in torch.nonzero(~done).flatten().tolist():
                if token[b] != c.end:
                    rows[b].append(int(token[b]))
            done |= token == c.end
            if bool(done.all()):
                break
        return rows


def teacher_inputs(targets: Tensor, start: int) -> Tensor:
    """(B, T) targets -> (B, T) decoder inputs: the start symbol, then the targets shifted right."""
    return torch.cat([torch.full_like(targets[:, :1], start), targets[:, :-1]], dim=1)


def check_decoder(decoder) -> None:
    if not isinstance(decoder, DecoderConfig):
        raise RnnkitError(f"decoder must be a DecoderConfig, got {type(decoder).__name__}")


@dataclass
class GeneratorConfig:
    """The shape of a one-to-many model: its condition and the decoder it starts."""

    condition_size: int  # K: classes, or the size of a condition vector
    decoder: DecoderConfig  # what writes the sequence
    classes: bool = True  # conditions are class ids (B,), one-hot inside; False: vectors (B, K)

    def __post_init__(self):
        check_fields(self)
        require_positive(condition_size=self.condition_size)
        check_decoder(self.decoder)


class ConditionedGenerator(nn.Module):
    """One-to-many: a class id or a vector sets the initial state, the decoder writes a sequence.

        h_0 = tanh(W_c c + b_c)   (c one-hot for a class, or the given vector; one h_0 per layer)
        y_t = decoder(token_{t-1}, h_{t-1})
    """

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        check_config(config, GeneratorConfig, "ConditionedGenerator")
        self.config = config
        self.decoder = Decoder(config.decoder)
        c = config.decoder
        n_state = c.layers * (2 if c.cell == "lstm" else 1)  # h (and c) for each layer
        self.to_state = nn.Linear(config.condition_size, n_state * c.hidden)

    @property
    def token_inputs(self) -> bool:
        """Whether its inputs are ids (class ids), not vectors: `fitting.as_dataset` asks."""
        return self.config.classes

    def id_sizes(self) -> dict[str, tuple[int, str, int]]:
        """The ids `fit` checks (`token_ids`): key -> (how many, what they are, dimensions)."""
        sizes = {"targets": (self.decoder.config.vocab_size, "token ids", 2)}
        if self.config.classes:
            sizes["inputs"] = (self.config.condition_size, "class ids", 1)
        return sizes

    def initial_state(self, condition: Tensor):
        """condition (B,) class ids or (B, condition_size) -> the decoder's state."""
        if self.config.classes:
            condition = F.one_hot(condition.long(), self.config.condition_size).float()
        c = self.decoder.config
        B = condition.shape[0]
        s = torch.tanh(self.to_state(condition)).view(B, -1, c.layers, c.hidden)  # (B, 1|2, L, H)
        s = s.permute(1, 2, 0, 3).contiguous()  # (1|2, L, B, H)
        return (s[0], s[1]) if c.cell == "lstm" else s[0]

    def forward(self, inputs: Tensor, targets: Tensor | None = None,
                lengths: Tensor | None = None):
        """inputs: the conditions (B,) or (B, K); targets (B, T) token ids, end symbol included."""
        if targets is None:
            raise RnnkitError("ConditionedGenerator.forward needs targets; use generate() to write")
        K = self.config.condition_size
        if not self.config.classes and (inputs.dim() != 2 or inputs.shape[1] != K):
            raise RnnkitError(f"the conditions must be vectors (B, {K}), got shape "
                              f"{tuple(inputs.shape)}; class ids need GeneratorConfig(classes=True)")
        state = self.initial_state(inputs)
        dec_in = teacher_inputs(targets, self.decoder.config.start)
        return self.decoder(dec_in, state, targets, lengths)

    def generate(self, condition: Tensor, max_length: int = 50, greedy: bool = True,
                 temperature: float = 1.0, seed: int | None = None,
                 beam: int | None = None) -> list[list[int]]:
        K = self.config.condition_size
        if self.config.classes:
            condition = token_ids(condition, K, "condition", "class ids", dims=1)
        else:
            condition = torch.as_tensor(np.asarray(condition), dtype=torch.float32) \
                if not isinstance(condition, Tensor) else condition.float()
            if condition.dim() != 2 or condition.shape[1] != K or not len(condition):
                raise RnnkitError(f"condition must be vectors (B, {K}), got shape "
                                  f"{tuple(condition.shape)}")
        check_decoding(max_length, beam, greedy, temperature, seed)
        with evaluating(self):  # a training-mode model would decode with dropout
            return self.decoder.decode(self.initial_state(condition), condition.shape[0],
                                       max_length, greedy, temperature, seed, beam)


@dataclass
class Seq2SeqConfig:
    """The shape of an encoder/decoder; the encoder takes the decoder's cell, sizes and layers."""

    input_vocab: int  # S: symbols the encoder reads (padding included)
    decoder: DecoderConfig  # what writes the output sequence
    bidirectional: bool = False  # the encoder also reads backwards; both final states are joined

    def __post_init__(self):
        check_fields(self)
        require_positive(input_vocab=self.input_vocab)
        check_decoder(self.decoder)


class Seq2Seq(nn.Module):
    """Encoder/decoder: an encoder reads the input tokens, its final state starts the decoder.

        enc_states, h_enc = Encoder(x_1..x_S)        (bidirectional: both final states joined)
        h_0 = tanh(W_b h_enc + b_b)                  per layer (and for an LSTM's c, per layer)
        y_t = decoder(y_{t-1}, h_{t-1})              teacher forcing in training, greedy or sampled
    """

    token_inputs = True  # token ids: `fitting.as_dataset` keeps them integers

    def id_sizes(self) -> dict[str, tuple[int, str, int]]:
        """The ids `fit` checks (`token_ids`): key -> (how many, what they are, dimensions)."""
        return {"inputs": (self.config.input_vocab, "token ids", 2),
                "targets": (self.decoder.config.vocab_size, "token ids", 2)}

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        check_config(config, Seq2SeqConfig, "Seq2Seq")
        self.config = config
        c = config.decoder
        self.embed = nn.Embedding(config.input_vocab, c.embed)
        self.encoder = Recurrent(c.cell, c.embed, c.hidden, c.layers, c.dropout,
                                 config.bidirectional)
        self.decoder = Decoder(c)
        D = self.encoder.directions
        self.bridge = nn.Linear(D * c.hidden, c.hidden)

    def encode(self, inputs: Tensor, lengths: Tensor | None = None):
        """inputs (B, S) token ids -> the decoder's initial state, (L, B, H) or its (h, c)."""
        _, state = self.encoder(self.embed(inputs), None, lengths)
        D, L = self.encoder.directions, self.decoder.config.layers

        def join(s: Tensor) -> Tensor:  # (L*D, B, H) -> (L, B, H)
            s = s.view(L, D, *s.shape[1:])  # torch's layout: layer-major, then direction
            return torch.tanh(self.bridge(torch.cat(list(s.unbind(1)), dim=-1)))

        return tuple(join(s) for s in state) if isinstance(state, tuple) else join(state)

    def forward(self, inputs: Tensor, targets: Tensor | None = None,
                lengths: Tensor | None = None, target_lengths: Tensor | None = None):
        """inputs (B, S), targets (B, T) with the end symbol -> (logits (B, T, V), loss)."""
        if targets is None:
            raise RnnkitError("Seq2Seq.forward needs targets (teacher forcing); use generate()")
        state = self.encode(inputs, lengths)
        dec_in = teacher_inputs(targets, self.decoder.config.start)
        return self.decoder(dec_in, state, targets, target_lengths)

    def generate(self, inputs: Tensor, lengths: Tensor | None = None, max_length: int = 50,
                 greedy: bool = True, temperature: float = 1.0,
                 seed: int | None = None, beam: int | None = None) -> list[list[int]]:
        inputs = token_ids(inputs, self.config.input_vocab, "inputs", "token ids", dims=2)
        check_decoding(max_length, beam, greedy, temperature, seed)
        with evaluating(self):  # a training-mode model would encode and decode with dropout
            state = self.encode(inputs, lengths)  # the encoder's stack checks the lengths
            return self.decoder.decode(state, inputs.shape[0], max_length, greedy, temperature,
                                       seed, beam)
