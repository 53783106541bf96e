"""Cells against torch.nn cells, stepping against the fused path, the seed's vanilla RNN."""

import copy

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.cells import Cell
from rnnkit.recurrent import Recurrent

TORCH_CELLS = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cell_equals_torch_cell_values_and_gradients(kind):
    torch.manual_seed(0)
    mine = Cell(kind, input_size=5, hidden_size=7).double()
    ref = TORCH_CELLS[kind](5, 7).double()
    ref.load_state_dict(mine.state_dict())  # same names, same layout
    x = torch.randn(3, 5, dtype=torch.float64)
    h = torch.randn(3, 7, dtype=torch.float64)
    state = (h, torch.randn(3, 7, dtype=torch.float64)) if kind == "lstm" else h
    out_mine, out_ref = mine(x, state), ref(x, state)
    if kind == "lstm":
        loss_mine = out_mine[0].square().sum() + out_mine[1].sin().sum()
        loss_ref = out_ref[0].square().sum() + out_ref[1].sin().sum()
        torch.testing.assert_close(out_mine[1], out_ref[1], atol=1e-5, rtol=0)
        out_mine, out_ref = out_mine[0], out_ref[0]
    else:
        loss_mine, loss_ref = out_mine.square().sum(), out_ref.square().sum()
    torch.testing.assert_close(out_mine, out_ref, atol=1e-5, rtol=0)
    loss_mine.backward()
    loss_ref.backward()
    for name, p in mine.named_parameters():
        torch.testing.assert_close(p.grad, dict(ref.named_parameters())[name].grad,
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cell_float32_matches_torch_to_1e5(kind):
    torch.manual_seed(1)
    mine, ref = Cell(kind, 16, 32), TORCH_CELLS[kind](16, 32)
    ref.load_state_dict(mine.state_dict())
    x = torch.randn(4, 16)
    a, b = mine(x), ref(x)
    a, b = (a[0], b[0]) if kind == "lstm" else (a, b)
    assert (a - b).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_stepping_equals_fused_sequence_with_state_carried(kind):
    torch.manual_seed(2)
    stack = Recurrent(kind, input_size=6, hidden_size=8, num_layers=3).eval()
    x = torch.randn(2, 9, 6)
    fused_a, state = stack(x[:, :4])  # two fused calls, state carried between them
    fused_b, fused_last = stack(x[:, 4:], state)
    fused = torch.cat([fused_a, fused_b], 1)
    step_state, outs = None, []
    for t in range(9):
        y, step_state = stack.step(x[:, t], step_state)
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs, 1), fused, atol=1e-5, rtol=0)
    if kind == "lstm":
        for a, b in zip(step_state, fused_last, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(step_state, fused_last, atol=1e-5, rtol=0)


def test_stack_weights_copy_into_torch_lstm():
    stack = Recurrent("lstm", 4, 5, num_layers=2)
    ref = torch.nn.LSTM(4, 5, 2, batch_first=True)
    ref.load_state_dict({k.removeprefix("rnn."): v for k, v in stack.state_dict().items()})
    x = torch.randn(3, 6, 4)
    torch.testing.assert_close(stack(x)[0], ref(x)[0])


def test_packed_lengths_ignore_padding():
    torch.manual_seed(3)
    stack = Recurrent("gru", 3, 4).eval()
    x = torch.randn(2, 6, 3)
    lengths = torch.tensor([6, 3])
    padded = x.clone()
    padded[1, 3:] = 1e3  # garbage in the padding must not matter
    out, h = stack(padded, lengths=lengths)
    alone, h_alone = stack(x[1:, :3])
    torch.testing.assert_close(out[1, :3], alone[0])
    torch.testing.assert_close(h[:, 1], h_alone[:, 0])
    assert out[1, 3:].abs().max() == 0


def test_bad_cell_and_sizes_are_clear_errors():
    with pytest.raises(rnnkit.RnnkitError, match="unknown cell type 'lstmm'"):
        Recurrent("lstmm", 3, 4)
    with pytest.raises(rnnkit.RnnkitError, match="hidden_size must be a whole number above 0, got 0"):
        Cell("gru", 3, 0)
    with pytest.raises(rnnkit.RnnkitError, match="num_layers must be a whole number above 0, got -1"):
        Recurrent("rnn", 3, 4, num_layers=-1)


def test_vanilla_rnn_step_is_the_seed_equation():
    torch.manual_seed(4)
    rnn = rnnkit.RNN(input_size=4, hidden_size=3, output_size=4)
    assert rnn.W_xh.shape == (3, 4) and rnn.W_hh.shape == (3, 3) and rnn.W_hy.shape == (4, 3)
    assert rnn.h is None
    h = torch.zeros(3)
    for i in [0, 1, 2, 2]:
        x = torch.eye(4)[i]
        y = rnn.step(x)
        h = torch.tanh(rnn.W_hh @ h + rnn.W_xh @ x + rnn.b_h)  # the notes' equation, written out
        torch.testing.assert_close(rnn.h, h)
        torch.testing.assert_close(y, rnn.W_hy @ h + rnn.b_y)
    rnn.reset()
    assert rnn.h is None


def test_vanilla_rnn_step_loop_equals_fused_path():
    torch.manual_seed(5)
    rnn = rnnkit.RNN(5, 7, 2)
    xs = torch.randn(10, 5)
    ys, h_T = rnn(xs)
    stepped = torch.stack([rnn.step(x) for x in xs])
    torch.testing.assert_close(stepped, ys, atol=1e-6, rtol=0)
    torch.testing.assert_close(rnn.h, h_T, atol=1e-6, rtol=0)
    batch = torch.randn(3, 10, 5)
    ys_b, _ = rnn(batch)
    rnn.reset()
    stepped_b = torch.stack([rnn.step(batch[:, t]) for t in range(10)], 1)
    torch.testing.assert_close(stepped_b, ys_b, atol=1e-6, rtol=0)


def test_vanilla_rnn_without_bias_has_the_notes_exact_form():
    rnn = rnnkit.RNN(2, 2, 2, bias=False)
    with torch.no_grad():
        rnn.W_xh.copy_(torch.eye(2))
        rnn.W_hh.zero_()
        rnn.W_hy.copy_(torch.eye(2))
    y = rnn.step(torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(y, torch.tanh(torch.tensor([1.0, 0.0])))
    assert [n for n, _ in rnn.named_parameters()] == ["W_xh", "W_hh", "W_hy"]


def test_vanilla_relu_rnn_and_starting_state():
    torch.manual_seed(6)
    rnn = rnnkit.RNN(3, 4, 2, nonlinearity="relu")
    xs, h0 = torch.randn(5, 3), torch.rand(4)
    ys, h_T = rnn(xs, h0)
    rnn.reset(h0)
    h = h0
    for t, x in enumerate(xs):
        y = rnn.step(x)
        h = torch.relu(rnn.W_hh @ h + rnn.W_xh @ x + rnn.b_h)
        torch.testing.assert_close(rnn.h, h)
        torch.testing.assert_close(y, ys[t], atol=1e-6, rtol=0)
    torch.testing.assert_close(rnn.h, h_T, atol=1e-6, rtol=0)
    with pytest.raises(rnnkit.RnnkitError, match="unknown nonlinearity 'sigmoid'"):
        rnnkit.RNN(3, 4, 2, nonlinearity="sigmoid")


def test_the_step_api_checks_its_input_and_its_state():
    rnn = rnnkit.RNN(4, 3, 4)
    # the notes' one-of-k input as integers reads (it failed on the dtype)
    y = rnn.step(torch.nn.functional.one_hot(torch.tensor(2), 4))
    assert y.shape == (4,)
    for x, message in ((torch.zeros(5), r"one vector x \(4,\) or a batch \(B, 4\), got shape \(5,\)"),
                       (torch.zeros(2, 5, 4), r"got shape \(2, 5, 4\)"),
                       (torch.zeros(2, 4), r"hidden state is of shape \(3,\) from the steps before")):
        with pytest.raises(rnnkit.RnnkitError, match=message):
            rnn.step(x)
    rnn.reset()
    assert rnn.step(torch.zeros(2, 4)).shape == (2, 4)  # a batch after a reset
    # trained step by step: detach() keeps the state and cuts the graph (backward failed twice)
    rnn.reset()
    optimizer = torch.optim.SGD(rnn.parameters(), lr=0.1)
    for _ in range(2):
        loss = rnn.step(torch.randn(4)).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rnn.detach()
    # a copy taken mid-sequence (the best weights so far) failed on the state's graph
    rnn.step(torch.randn(4))
    twin = copy.deepcopy(rnn)
    assert torch.equal(twin.h, rnn.h) and twin.h.grad_fn is None and rnn.h.grad_fn is not None
    assert torch.equal(twin.step(torch.ones(4)), rnn.step(torch.ones(4)))
    assert twin.W_hh is not rnn.W_hh and torch.equal(twin.W_hh, rnn.W_hh)
    # h0 of the wrong size is refused, not reshaped into other rows
    with pytest.raises(rnnkit.RnnkitError, match=r"h0 must be \(3,\), \(2, 3\) or \(1, 2, 3\)"):
        rnn(torch.randn(2, 5, 4), torch.arange(6.0).reshape(3, 2))
    ys, _ = rnn(torch.randn(2, 5, 4), torch.ones(3))  # one state for every row, as step takes it
    assert ys.shape == (2, 5, 4)
    with pytest.raises(rnnkit.RnnkitError, match=r"a sequence is xs \(T, 4\) or a batch"):
        rnn(torch.randn(4))  # it returned a scalar state
    # a state given as a list, an array or float64 reads as the weights' floats (they failed in
    # a product or on a missing .shape); one of the wrong size is refused when given
    for h in ([0.5, 0.0, -0.5], np.array([0.5, 0.0, -0.5]), torch.tensor([0.5, 0.0, -0.5]).double()):
        rnn.reset(h)
        assert rnn.step(torch.ones(4)).dtype == torch.float32
        assert torch.equal(rnn(torch.ones(1, 4), h)[1], rnn.h)
    with pytest.raises(rnnkit.RnnkitError, match=r"one vector h \(3,\) or a batch \(B, 3\), got "
                       r"shape \(5,\)"):
        rnn.reset(torch.zeros(5))
    # a model without biases keeps them at zero whatever it loads (a load gave it biases)
    plain = rnnkit.RNN(4, 3, 4, bias=False)
    with pytest.raises(rnnkit.RnnkitError, match="b_h holds biases, and this RNN has none"):
        plain.load_state_dict(rnnkit.RNN(4, 3, 4).state_dict())
    assert not plain.b_h.any() and "b_h" not in plain.state_dict()
    saved = {**plain.state_dict(), "b_h": torch.zeros(3), "b_y": torch.zeros(4)}  # as saved before
    plain.load_state_dict(saved)
    assert Recurrent("lstm", 2, 3, 2, dropout=np.float32(0.25)).dropout == np.float32(0.25)


def test_stacks_and_cells_check_their_state_and_lengths():
    # one tensor given as an LSTM's state was split along its first axis (h, c = state)
    with pytest.raises(rnnkit.RnnkitError, match=r"an LSTM's state is the pair \(h, c\)"):
        Cell("lstm", 4, 3)(torch.randn(2, 4), torch.randn(2, 3))
    with pytest.raises(rnnkit.RnnkitError, match=r"an LSTM's state is the pair \(h, c\)"):
        Recurrent("lstm", 4, 3, num_layers=2).step(torch.randn(2, 4), torch.zeros(2, 2, 3))
    with pytest.raises(rnnkit.RnnkitError, match=r"a step reads x of shape \(B, 4\), got \(4,\)"):
        Recurrent("gru", 4, 3).step(torch.randn(4))
    with pytest.raises(rnnkit.RnnkitError, match=r"a cell's state is \(batch, hidden\) = \(2, 3\)"
                       r", got \(2, 5\)"):
        Cell("gru", 4, 3)(torch.zeros(2, 4), torch.zeros(2, 5))
    # integer (one-hot) and float64 inputs read as the weights' floats, as RNN.step reads them
    one_hot = torch.nn.functional.one_hot(torch.tensor([1, 2]), 4)
    assert Cell("lstm", 4, 3)(one_hot)[0].dtype == torch.float32
    assert Recurrent("gru", 4, 3).step(one_hot.double())[0].dtype == torch.float32
    # a state without its layer axis was indexed by batch row: every row stepped from row 0's
    for cell, state in (("gru", torch.randn(3, 3)),
                        ("lstm", (torch.randn(2, 3, 3), torch.randn(1, 3, 3)))):
        with pytest.raises(rnnkit.RnnkitError, match=r"a stack's state is \(layers, batch, "
                           r"hidden\) = \(2, 3, 3\)"):
            Recurrent(cell, 4, 3, num_layers=2).step(torch.randn(3, 4), state)
    stack, xs = Recurrent("gru", 4, 3), torch.randn(2, 5, 4)
    assert stack(xs, lengths=[5, 3])[0].shape == (2, 5, 3)  # a list, as torch's packing takes
    for lengths in ([5, 0], [6, 3], [5, 3, 2]):
        with pytest.raises(rnnkit.RnnkitError, match="lengths must be one per row of x"):
            stack(xs, lengths=torch.tensor(lengths))


def test_sizes_are_whole_numbers():
    # 3.0 failed deep in torch; True built a one-unit layer
    for build in (lambda: rnnkit.RNN(4, 3.0, 2), lambda: rnnkit.RNN(True, 3, 2),
                  lambda: Cell("gru", 4, 3.0), lambda: Recurrent("gru", 4, 3.0)):
        with pytest.raises(rnnkit.RnnkitError, match="must be a whole number above 0"):
            build()
    with pytest.raises(rnnkit.RnnkitError, match="dropout must be in"):
        Recurrent("gru", 4, 3, 2, dropout="0.1")


def test_a_stacks_whole_sequence_input_is_checked_as_its_step_input_is():
    stack = Recurrent("lstm", 4, 5, 2)
    # a (B, I) batch of vectors was read as one unbatched sequence of B steps
    for x, shape in ((torch.randn(2, 4), r"\(2, 4\)"), (torch.zeros(2, 0, 4), r"\(2, 0, 4\)"),
                     (torch.randn(2, 3, 6), r"\(2, 3, 6\)")):
        with pytest.raises(rnnkit.RnnkitError, match=r"a stack reads x of shape \(B, T, 4\), T "
                           r"at least 1, got " + shape):
            stack(x)
    with pytest.raises(rnnkit.RnnkitError, match=r"\(layers x directions, batch, hidden\) = "
                       r"\(2, 3, 5\) for h and for c, got \(1, 3, 5\)"):
        stack(torch.randn(3, 6, 4), (torch.zeros(1, 3, 5), torch.zeros(1, 3, 5)))
    # arrays, integers and float64 read as the weights' floats, a float64 state too
    xs = np.random.default_rng(0).standard_normal((3, 6, 4))
    y, (h, c) = stack(xs, (torch.zeros(2, 3, 5, dtype=torch.float64),) * 2)
    assert y.dtype == torch.float32 and torch.allclose(y, stack(torch.tensor(xs).float())[0])
    assert stack(torch.ones(3, 6, 4, dtype=torch.long))[0].shape == (3, 6, 5)
    with pytest.raises(rnnkit.RnnkitError, match="x must be numbers"):
        stack("hello")
    with pytest.raises(rnnkit.RnnkitError, match="lengths must be whole numbers of steps"):
        stack(torch.randn(2, 6, 4), lengths=[6, 2.5])  # was cut to 2 steps
    for lengths in ([3.0, float("inf")], torch.tensor([True, True])):  # OverflowError; ones
        with pytest.raises(rnnkit.RnnkitError, match="lengths must be whole numbers of steps"):
            stack(torch.randn(2, 6, 4), lengths=lengths)


def test_building_blocks_refuse_what_torch_would_fail_on_deep_inside():
    with pytest.raises(rnnkit.RnnkitError, match="bidirectional must be True or False"):
        Recurrent("gru", 4, 5, 1, bidirectional="false")  # a true value: built two directions
    # NumPy integers are whole numbers: torch's modules refused them with a TypeError
    assert Recurrent("gru", np.int64(4), np.int64(5))(torch.randn(1, 2, 4))[0].shape == (1, 2, 5)
    assert rnnkit.RNN(np.int64(4), 3, 2).step(torch.zeros(4)).shape == (2,)
    rnn = rnnkit.RNN(4, 3, 2)
    with pytest.raises(rnnkit.RnnkitError, match="x must be numbers .* got str 'h'"):
        rnn.step("h")
    with pytest.raises(rnnkit.RnnkitError, match=r"T at least 1, got shape \(0, 4\)"):
        rnn(torch.zeros(0, 4))
    assert Recurrent("gru", 4, 3).step(np.ones((2, 4)))[0].shape == (2, 3)  # an array steps
