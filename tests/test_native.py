"""native.c: one stream's gates, output layer and draw in C, against torch's operations."""

import ctypes
import os
import subprocess
import sys

import pytest
import torch
from test_sample import VOCAB, model_for

from rnnkit import RnnkitError, native
from rnnkit.cells import gru_gates
from rnnkit.sample import Exponentials, Stepper, draw

LIB = native.library()
HIDDEN = 32  # int4 rounds its weights in groups of 32 inputs at least
pytestmark = pytest.mark.skipif(LIB is None, reason="no C compiler here: the stepper steps "
                                                   "with torch's operations alone")


def address(t: torch.Tensor) -> int:
    assert t.is_contiguous()
    return t.data_ptr()


def bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16)


def test_layers_are_the_cell_equations():
    """Each layer function against the torch formula it replaces, over pre-activations from
    tiny to past the exponential's clamp (|x| up to 200): within 1e-6, and h rounded to bf16
    exactly as torch rounds it."""
    torch.manual_seed(0)
    H = 61  # not a multiple of the vector width: the loops' ends run too
    for scale in (0.01, 1.0, 8.0, 200.0):
        y, b = bf16(torch.randn(4 * H) * scale), torch.randn(4 * H) * scale
        c, h, h16, gates = torch.randn(H), torch.empty(H), bf16(torch.empty(H)), torch.empty(4 * H)
        i, f, g, o = torch.sigmoid(y.float() + b).split(H)  # g's rows doubled: tanh = 2 s - 1
        c_next = f * c + i * (2 * g - 1)
        LIB.lstm_layer(address(y), address(b), address(c), address(h), address(h16),
                       address(gates), H)
        torch.testing.assert_close(c, c_next, atol=1e-6, rtol=0)
        torch.testing.assert_close(h, o * torch.tanh(c_next), atol=1e-6, rtol=0)
        assert torch.equal(h16, bf16(h))

        y, b = bf16(torch.randn(H) * scale), torch.randn(H) * scale
        LIB.rnn_layer(address(y), address(b), address(h), address(h16), H)
        torch.testing.assert_close(h, torch.tanh(y.float() + b), atol=1e-6, rtol=0)
        assert torch.equal(h16, bf16(h))

        yi, yh = bf16(torch.randn(3 * H) * scale), bf16(torch.randn(3 * H) * scale)
        bi, bh, h = torch.randn(3 * H) * scale, torch.randn(3 * H) * scale, torch.rand(H) * 2 - 1
        for given in (yi, None):  # layer 0's input term is bi alone, its row of the table
            gi = bi + (given.float() if given is not None else 0)
            expected = gru_gates(gi[None], (yh.float() + bh)[None], h[None])[0]
            LIB.gru_layer(address(given) if given is not None else None, address(bi),
                          address(yh), address(bh), address(h), address(h16), H)
            torch.testing.assert_close(h, expected, atol=1e-6, rtol=0)
            assert torch.equal(h16, bf16(h))


def test_output_layer_is_addmv():
    torch.manual_seed(0)
    for V, H in ((65, 512), (10, 13), (256, 8)):
        W, b, h, out = torch.randn(V, H), torch.randn(V), torch.randn(H), torch.empty(V)
        LIB.logits_row(address(W), address(b), address(h), address(out), V, H)
        torch.testing.assert_close(out, torch.addmv(b, W, h), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0, 1e-30])
def test_race_is_torch_s_draw_on_the_same_numbers(temperature):
    """The race picks what `draw` picks from softmax(logits / temperature) with the same
    Exp(1) numbers, but for near ties that rounding decides: every pick is the best within
    1e-5 of its score, computed in float64, and at most one in a thousand differs."""
    torch.manual_seed(0)
    numbers = Exponentials(torch.Generator().manual_seed(1), 1, 65, 4000)
    differ = 0
    for _ in range(4000):
        logits, q = torch.randn(65) * 3, numbers.next()[0]
        chosen = LIB.race(address(logits), address(q), 65, temperature)
        probs = torch.softmax(logits / temperature, -1)
        differ += chosen != int(draw(probs[None], _Given(q))[0])
        scores = torch.exp((logits.double() - logits.max()) / temperature) / q.double()
        assert scores[chosen] >= scores.max() * (1 - 1e-5)
    assert differ <= 4, differ


class _Given(Exponentials):
    """The Exp(1) numbers of one draw, given."""

    def __init__(self, q):
        self.q = q

    def next(self):
        return self.q[None]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("precision", ["bf16", "int8", "int4"])
@pytest.mark.parametrize("layers", [1, 3])
def test_a_native_stream_steps_as_torch_s_operations_do(cell, precision, layers, monkeypatch):
    """One stream at a reduced precision steps through native.c: the same logits and state as
    the stepper's torch operations, to the rounding of h to bf16 (a different last bit of a
    sigmoid can round a value of h the other way), step after step."""
    model = model_for(cell, layers, hidden=HIDDEN)
    fast = Stepper(model, precision)
    monkeypatch.setattr(native, "library", lambda: None)
    slow = Stepper(model, precision)
    assert fast.native is not None and slow.native is None
    for t in [1, 5, 2, 2, 7, 0, 3, 9, 4, 4, 6, 8] * 3:
        got, expected = fast.feed(t), slow.feed(t)
        torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)
    for t in [3, 1, 4, 1, 5]:  # a (1,) tensor of ids, as a beam of one feeds it: (1, V) back
        got, expected = fast.feed(torch.tensor([t])), slow.feed(torch.tensor([t]))
        assert got.shape == expected.shape == (1, len(VOCAB))
        torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)
    torch.testing.assert_close(fast.hs, slow.hs, atol=2e-3, rtol=0)
    # and the same after a prime long enough for the fused kernel, which replaces the state
    prime = [1, 2, 3, 4, 5, 6, 7, 8] * 3
    torch.testing.assert_close(fast.feed_many(prime), slow.feed_many(prime), atol=2e-3, rtol=0)
    torch.testing.assert_close(fast.feed(3), slow.feed(3), atol=2e-3, rtol=0)


def test_fp32_and_batches_keep_torch_s_operations():
    model = model_for("lstm", 2, hidden=HIDDEN)
    assert Stepper(model, "fp32").native is None  # the exact reference
    assert Stepper(model, "int4", batch=3).native is None
    assert Stepper(model, "int4").native is not None


def test_a_native_stream_refuses_an_id_outside_the_vocabulary():
    s = Stepper(model_for("lstm", 1, hidden=HIDDEN), "int4")
    for token in (len(VOCAB), torch.tensor([len(VOCAB)]), torch.tensor([-1])):
        with pytest.raises(RnnkitError, match="is outside the vocabulary"):
            s.feed(token)


def test_feed_returns_logits_of_its_own():
    """The native step writes its logits into one buffer; `feed` hands out copies, so that
    logits kept from one step are not those of the next."""
    s = Stepper(model_for("lstm", 2, hidden=HIDDEN), "int4")
    first = s.feed(1)
    kept = first.clone()
    second = s.feed(2)
    assert torch.equal(first, kept) and not torch.equal(first, second)


@pytest.mark.parametrize("precision", ["int4", "bf16"])
def test_a_native_stream_is_seeded_and_draws_from_the_model(precision, monkeypatch):
    """The same seed gives the same text; a stream with torch's operations alone gives the
    same text too, but for a draw that a near tie, rounded otherwise, can change."""
    model = model_for("lstm", 2, hidden=64)
    text = model.generate("ab", 300, seed=3, precision=precision)
    assert text == model.generate("ab", 300, seed=3, precision=precision)
    assert text != model.generate("ab", 300, seed=4, precision=precision)
    monkeypatch.setattr(native, "library", lambda: None)
    alone = model.generate("ab", 300, seed=3, precision=precision)
    same = next((i for i, (a, b) in enumerate(zip(text, alone, strict=True)) if a != b), 302)
    assert same > 100, (text, alone)


def test_the_library_is_built_once_and_refused_cleanly(tmp_path, monkeypatch):
    """Built into RNNKIT_CACHE on first use and loaded from there afterwards, with no compiler
    needed; None (the stepper then uses torch's operations) where no compiler is found, the
    build fails, the folder cannot be written, or RNNKIT_NATIVE=0."""
    def fresh():
        native.library.cache_clear()
        return native.library()

    try:
        monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
        assert isinstance(fresh(), ctypes.CDLL)
        built = list((tmp_path / "cache").glob("native-*.so"))
        assert len(built) == 1 and not list((tmp_path / "cache").glob("*.so.*"))
        def no_build(*_):
            raise AssertionError("built again")

        with monkeypatch.context() as m:
            m.setattr(native, "build", no_build)
            assert isinstance(fresh(), ctypes.CDLL)  # loaded as it was built
        (tmp_path / "cache").rename(tmp_path / "moved")
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
        assert fresh() is None
        monkeypatch.setenv("CC", "false")  # a compiler that fails: nothing left behind
        assert fresh() is None and list((tmp_path / "cache").glob("*")) == []
        monkeypatch.delenv("CC")
        (tmp_path / "file").write_text("not a folder")
        monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "file"))
        assert fresh() is None
        monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "moved"))
        assert isinstance(fresh(), ctypes.CDLL)
        monkeypatch.setenv("RNNKIT_NATIVE", "0")
        assert fresh() is None
        monkeypatch.delenv("RNNKIT_NATIVE")
        assert "RNNKIT_NATIVE" not in os.environ
    finally:
        native.library.cache_clear()


def test_a_damaged_library_is_built_again(tmp_path):
    """A file in the cache that does not load is built again (in a new process: one that has
    loaded the library once would be handed that one again by its name)."""
    path = tmp_path / native.library_path(native.compiler()).name
    path.write_bytes(b"damaged")
    code = "from rnnkit import native; print(native.library() is not None)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "RNNKIT_CACHE": str(tmp_path)}, timeout=120)
    assert done.stdout == "True\n", done.stderr
    assert path.read_bytes() != b"damaged"  # the new build, in its place
