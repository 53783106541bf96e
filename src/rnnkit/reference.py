"""NumPy reference for the vanilla character RNN, with backpropagation through time by hand.

This is the algorithm of Andrej Karpathy's min-char-rnn, rewritten to be read: one file, NumPy only
(no torch), float64 throughout, and every gradient written out so that a learner can check the
maths line by line. It is meant as ground truth, so it is itself checked against finite
differences (`numerical_grads`) and torch autograd. Departures from min-char-rnn, none of which
changes the maths: vectors are 1-D, the vocabulary is sorted (so ids repeat between runs), and
the last full chunk of the text is used before the sweep wraps around.

The model, for a vocabulary of V characters and H hidden units, at each step t:

    x_t = one_hot(inputs[t])                      # (V,)
    h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)     # (H,)
    y_t = W_hy h_t + b_y                          # (V,)  unnormalised log-probabilities
    p_t = softmax(y_t)                            # (V,)  next-character distribution

    loss = sum_t -log p_t[targets[t]]             # nats, summed over the sequence

Train on any UTF-8 text file; it prints the loss and a sample every so often:

    python -m rnnkit.reference input.txt --hidden 100 --seq-len 25 --lr 0.1 --steps 10000
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

Tokens = Sequence[int] | np.ndarray
Grads = dict[str, np.ndarray]


@dataclass
class VanillaRNN:
    """Parameters of the vanilla RNN, named as in the equations of the module docstring.

    Shapes: W_xh (H, V), W_hh (H, H), W_hy (V, H), b_h (H,), b_y (V,).
    """

    W_xh: np.ndarray  # (H, V) input to hidden
    W_hh: np.ndarray  # (H, H) hidden to hidden
    W_hy: np.ndarray  # (V, H) hidden to output
    b_h: np.ndarray  # (H,)
    b_y: np.ndarray  # (V,)

    @classmethod
    def init(
        cls, vocab_size: int, hidden_size: int, seed: int | np.random.Generator = 0
    ) -> VanillaRNN:
        """min-char-rnn's initialisation: weights ~ N(0, 0.01^2), biases zero."""
        if vocab_size < 1 or hidden_size < 1:
            raise ValueError(
                f"vocab_size and hidden_size must be positive, got {vocab_size} and {hidden_size}"
            )
        rng = np.random.default_rng(seed)
        V, H = vocab_size, hidden_size
        return cls(
            W_xh=rng.standard_normal((H, V)) * 0.01,
            W_hh=rng.standard_normal((H, H)) * 0.01,
            W_hy=rng.standard_normal((V, H)) * 0.01,
            b_h=np.zeros(H),
            b_y=np.zeros(V),
        )

    @property
    def vocab_size(self) -> int:
        return self.W_xh.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.W_hh.shape[0]

    def named(self) -> dict[str, np.ndarray]:
        """The parameter arrays by name; the arrays themselves, not copies, so updates stick."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def softmax(y: np.ndarray) -> np.ndarray:
    """softmax(y)_i = exp(y_i) / sum_j exp(y_j); shifting y by max(y) keeps exp from overflowing."""
    e = np.exp(y - y.max())
    return e / e.sum()


def check_ids(ids: Tokens, vocab_size: int, name: str) -> None:
    """Token ids must be whole numbers in [0, V): NumPy would read -1 (what `str.find` returns
    for a character it lacks) as the last character."""
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < vocab_size:
            raise ValueError(f"{name} must be token ids from 0 to {vocab_size - 1}, got {i!r}")


def loss_and_grads(
    params: VanillaRNN,
    inputs: Tokens,
    targets: Tokens,
    h_prev: np.ndarray,
    mean: bool = False,
) -> tuple[float, Grads, np.ndarray]:
    """Cross-entropy of `targets` given `inputs`, its gradients by hand, and the last hidden state.

    inputs, targets: T token ids each; targets[t] is the character that follows inputs[t].
    h_prev: (H,) hidden state before the first step (zeros at the start of a text).
    The loss is in nats, summed over the T steps; with `mean=True` it (and every gradient) is
    divided by T, giving nats per character.
    Returns (loss, grads, h_last): grads has the keys of `params.named()` and the same shapes;
    h_last (H,) is the state to carry into the next chunk. The gradient with respect to h_prev
    is not returned: as in min-char-rnn, backpropagation stops at the chunk boundary.
    """
    T = len(inputs)
    if T == 0 or len(targets) != T:
        raise ValueError(
            f"need as many targets as inputs (at least one), got {T} inputs, {len(targets)} targets"
        )
    V = params.vocab_size
    check_ids(inputs, V, "inputs")
    check_ids(targets, V, "targets")
    W_xh, W_hh, W_hy, b_h, b_y = params.W_xh, params.W_hh, params.W_hy, params.b_h, params.b_y
    scale = 1.0 / T if mean else 1.0

    # Forward, keeping every x_t, h_t and p_t for the backward pass; hs[-1] is h_prev.
    xs, hs, ps = {}, {-1: np.asarray(h_prev, dtype=np.float64)}, {}
    loss = 0.0
    for t in range(T):
        xs[t] = np.zeros(V)  # (V,)
        xs[t][inputs[t]] = 1.0
        hs[t] = np.tanh(W_xh @ xs[t] + W_hh @ hs[t - 1] + b_h)  # (H,)
        y_t = W_hy @ hs[t] + b_y  # (V,)
        ps[t] = softmax(y_t)  # (V,)
        loss += -math.log(ps[t][targets[t]])

    # Backward through time. dh_next is dloss/dh_t arriving from step t + 1.
    grads = {name: np.zeros_like(p) for name, p in params.named().items()}
    dh_next = np.zeros_like(hs[-1])  # (H,)
    for t in reversed(range(T)):
        dy = ps[t].copy()  # (V,) dloss/dy_t = p_t - one_hot(target_t)
        dy[targets[t]] -= 1.0
        dy *= scale
        grads["W_hy"] += np.outer(dy, hs[t])  # (V, H)
        grads["b_y"] += dy
        dh = W_hy.T @ dy + dh_next  # (H,) from the output at t and from step t + 1
        da = (1.0 - hs[t] ** 2) * dh  # (H,) back through tanh: tanh' = 1 - tanh^2
        grads["b_h"] += da
        grads["W_xh"] += np.outer(da, xs[t])  # (H, V)
        grads["W_hh"] += np.outer(da, hs[t - 1])  # (H, H)
        dh_next = W_hh.T @ da
    return loss * scale, grads, hs[T - 1]


def numerical_grads(
    params: VanillaRNN,
    inputs: Tokens,
    targets: Tokens,
    h_prev: np.ndarray,
    eps: float = 1e-5,
) -> Grads:
    """Gradients of the summed loss by central differences, (L(w + eps) - L(w - eps)) / (2 eps).

    Every entry of every parameter is nudged in turn (and restored), so this costs two forward
    passes per entry: use it on small models, to check `loss_and_grads`.
    """
    grads = {}
    for name, p in params.named().items():
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            loss_plus = loss_and_grads(params, inputs, targets, h_prev)[0]
            p[i] = old - eps
            loss_minus = loss_and_grads(params, inputs, targets, h_prev)[0]
            p[i] = old
            g[i] = (loss_plus - loss_minus) / (2 * eps)
        grads[name] = g
    return grads


def clip(grads: Grads, limit: float = 5.0) -> None:
    """Clip every gradient entry to [-limit, limit], in place, to tame exploding gradients."""
    for g in grads.values():
        np.clip(g, -limit, limit, out=g)


class Adagrad:
    """Adagrad as in min-char-rnn: per entry, m += g^2 and then w -= lr * g / sqrt(m + eps).

    The memory m starts at zero for each parameter, on its first step.
    """

    def __init__(self, lr: float = 0.1, eps: float = 1e-8) -> None:
        self.lr = lr
        self.eps = eps
        self.memory: dict[str, np.ndarray] = {}

    def step(self, params: VanillaRNN, grads: Grads) -> None:
        """Update `params` in place from `grads` (keyed like `params.named()`)."""
        for name, p in params.named().items():
            g = grads[name]
            m = self.memory.setdefault(name, np.zeros_like(p))
            m += g * g
            p -= self.lr * g / np.sqrt(m + self.eps)


def sample(
    params: VanillaRNN,
    h: np.ndarray,
    seed_ix: int,
    n: int,
    rng: np.random.Generator,
    temperature: float = 1.0,
) -> list[int]:
    """Draw n token ids, one at a time, each fed back as the next input.

    h: (H,) starting hidden state (not modified); seed_ix: the first input token.
    The distribution is softmax(y_t / temperature): below 1 it sharpens towards the most likely
    character (0.01 is close to greedy), above 1 it flattens.
    """
    if temperature <= 0:
        raise ValueError(
            f"temperature must be positive, got {temperature}; use e.g. 0.01 for near-greedy"
        )
    V = params.vocab_size
    check_ids([seed_ix], V, "seed_ix")
    ix = seed_ix
    out = []
    for _ in range(n):
        x = np.zeros(V)  # (V,)
        x[ix] = 1.0
        h = np.tanh(params.W_xh @ x + params.W_hh @ h + params.b_h)  # (H,)
        y = params.W_hy @ h + params.b_y  # (V,)
        p = softmax(y / temperature)
        ix = int(rng.choice(V, p=p))
        out.append(ix)
    return out


def vocabulary(text: str) -> list[str]:
    """The distinct characters of `text`, sorted so that ids do not change between runs."""
    return sorted(set(text))


def train(
    text: str,
    hidden: int = 100,
    seq_len: int = 25,
    lr: float = 0.1,
    steps: int = 10_000,
    seed: int = 0,
    log_every: int = 1000,
    callback: Callable[[int, float, VanillaRNN], None] | None = None,
) -> tuple[VanillaRNN, list[str], list[float]]:
    """min-char-rnn's training loop: sweep `text` in chunks of seq_len, carrying h between chunks.

    At the start, and whenever the next chunk would run past the end of the text, h is reset to
    zeros and the sweep starts again from the beginning. Each step: loss_and_grads -> clip ->
    Adagrad step. Every `log_every` steps (and at step 0) `callback(step, smooth_loss, params)`
    is called, if given, with smooth_loss in nats per character (an exponential moving average).

    Returns (params, chars, losses): chars[i] is the character of token id i; losses holds the
    unsmoothed loss of every step, in nats per character.
    """
    chars = vocabulary(text)
    if len(text) < 2:
        raise ValueError(
            f"need a text of at least 2 characters to predict one from another, got {len(text)}"
        )
    for name, value in (("hidden", hidden), ("seq_len", seq_len), ("log_every", log_every),
                        ("steps", steps)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if not 0 < lr < math.inf:
        raise ValueError(f"lr must be a positive finite number, got {lr}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed}")
    seq_len = min(seq_len, len(text) - 1)  # a short text is one chunk
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text])  # (N,) token ids

    params = VanillaRNN.init(len(chars), hidden, seed)
    optimizer = Adagrad(lr)
    smooth_loss = math.log(len(chars))  # the loss of a uniform guess, per character
    losses = []
    pos = 0  # where the current chunk starts in the text
    h = np.zeros(hidden)  # (H,)
    for step in range(steps):
        if pos + seq_len + 1 > len(data):
            h = np.zeros(hidden)
            pos = 0
        inputs = data[pos : pos + seq_len]
        targets = data[pos + 1 : pos + seq_len + 1]
        # The summed loss, as min-char-rnn: its gradients are what the clip limit of 5 is sized for.
        loss, grads, h = loss_and_grads(params, inputs, targets, h)
        clip(grads)
        optimizer.step(params, grads)
        losses.append(loss / seq_len)
        smooth_loss = 0.999 * smooth_loss + 0.001 * losses[-1]
        if callback is not None and step % log_every == 0:
            callback(step, smooth_loss, params)
        pos += seq_len
    return params, chars, losses


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rnnkit.reference",
        description="Train the NumPy reference character RNN on a UTF-8 text file.",
    )
    parser.add_argument("file", help="UTF-8 text file to train on")
    parser.add_argument("--hidden", type=int, default=100, help="hidden units H (default 100)")
    parser.add_argument("--seq-len", type=int, default=25, help="characters per chunk (default 25)")
    parser.add_argument("--lr", type=float, default=0.1, help="Adagrad learning rate (default 0.1)")
    parser.add_argument("--steps", type=int, default=10_000, help="training steps (default 10000)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for the weights and samples (default 0)"
    )
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2

    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return fail(f"no such file '{args.file}'")
    except UnicodeDecodeError as e:
        return fail(f"'{args.file}' is not UTF-8 text ({e.reason} at byte {e.start})")
    except OSError as e:
        return fail(f"cannot read '{args.file}': {e.strerror}")
    if not text:
        return fail(f"'{args.file}' is empty; give it some text to learn from")

    if not 0 <= args.seed < 2**63:  # before the sampler's generator is made from it
        return fail(f"--seed must be a whole number from 0 to 2**63 - 1, got {args.seed}")
    chars = vocabulary(text)
    rng = np.random.default_rng(args.seed)
    if hasattr(sys.stdout, "reconfigure"):
        # A console that cannot show some characters of the text gets '?', not a crash mid-run.
        sys.stdout.reconfigure(errors="replace")

    def report(step: int, smooth_loss: float, params: VanillaRNN) -> None:
        ids = sample(params, np.zeros(params.hidden_size), chars.index(text[0]), 200, rng)
        print(f"step {step}: loss {smooth_loss:.4f} nats/char")
        print("----\n" + text[0] + "".join(chars[i] for i in ids) + "\n----", flush=True)

    try:
        train(
            text,
            hidden=args.hidden,
            seq_len=args.seq_len,
            lr=args.lr,
            steps=args.steps,
            seed=args.seed,
            log_every=max(1, min(1000, args.steps // 10)),
            callback=report,
        )
    except ValueError as e:
        return fail(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
