"""The NumPy reference RNN against finite differences, torch autograd and hand-computed updates."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.reference import (
    Adagrad,
    VanillaRNN,
    clip,
    loss_and_grads,
    numerical_grads,
    sample,
    train,
)

SRC = Path(__file__).resolve().parents[1] / "src"
V, H, T = 5, 4, 6


def small_problem(seed: int = 0) -> tuple[VanillaRNN, np.ndarray, np.ndarray, np.ndarray]:
    """A V=5, H=4, T=6 model with weights large enough (std 0.5) that every gradient matters."""
    rng = np.random.default_rng(seed)
    params = VanillaRNN.init(V, H, rng)
    for p in params.named().values():
        p[...] = rng.standard_normal(p.shape) * 0.5
    inputs = rng.integers(0, V, size=T)
    targets = rng.integers(0, V, size=T)
    h_prev = rng.standard_normal(H) * 0.5  # (H,) non-zero, so W_hh h_{-1} is exercised
    return params, inputs, targets, h_prev


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


def test_init_is_min_char_rnn_and_seeded() -> None:
    params = VanillaRNN.init(7, 3, seed=1)
    shapes = {name: p.shape for name, p in params.named().items()}
    assert shapes == {"W_xh": (3, 7), "W_hh": (3, 3), "W_hy": (7, 3), "b_h": (3,), "b_y": (7,)}
    assert all(p.dtype == np.float64 for p in params.named().values())
    assert not params.b_h.any()
    assert not params.b_y.any()
    assert 0.002 < params.W_xh.std() < 0.03  # randn * 0.01
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(params.W_xh, rng.standard_normal((3, 7)) * 0.01)


def test_gradients_match_finite_differences() -> None:
    params, inputs, targets, h_prev = small_problem()
    _, grads, _ = loss_and_grads(params, inputs, targets, h_prev)
    numerical = numerical_grads(params, inputs, targets, h_prev)
    assert grads.keys() == numerical.keys() == {"W_xh", "W_hh", "W_hy", "b_h", "b_y"}
    for name in grads:
        assert np.abs(grads[name]).max() > 1e-3, name  # the check is not vacuous
        assert relative_error(grads[name], numerical[name]) < 1e-6, name


def torch_loss(params: VanillaRNN, inputs, targets, h_prev, mean: bool):
    """The same equations in torch, for autograd to differentiate."""
    w = {
        name: torch.tensor(p, dtype=torch.float64, requires_grad=True)
        for name, p in params.named().items()
    }
    h = torch.tensor(h_prev, dtype=torch.float64)
    loss = torch.zeros((), dtype=torch.float64)
    for x_ix, target in zip(inputs, targets, strict=True):
        x = torch.nn.functional.one_hot(torch.tensor(int(x_ix)), V).to(torch.float64)
        h = torch.tanh(w["W_xh"] @ x + w["W_hh"] @ h + w["b_h"])
        y = w["W_hy"] @ h + w["b_y"]
        loss = loss - torch.log_softmax(y, dim=0)[int(target)]
    if mean:
        loss = loss / len(inputs)
    loss.backward()
    return loss, w, h


@pytest.mark.parametrize("mean", [False, True])
def test_loss_gradients_and_state_match_torch_autograd(mean: bool) -> None:
    params, inputs, targets, h_prev = small_problem(seed=1)
    loss, grads, h_last = loss_and_grads(params, inputs, targets, h_prev, mean=mean)
    t_loss, t_weights, t_h = torch_loss(params, inputs, targets, h_prev, mean)
    assert abs(loss - t_loss.item()) < 1e-10
    np.testing.assert_allclose(h_last, t_h.detach().numpy(), rtol=0, atol=1e-10)
    for name, w in t_weights.items():
        np.testing.assert_allclose(grads[name], w.grad.numpy(), rtol=0, atol=1e-10, err_msg=name)


def test_mean_loss_is_sum_over_steps() -> None:
    params, inputs, targets, h_prev = small_problem(seed=2)
    total, grads_sum, _ = loss_and_grads(params, inputs, targets, h_prev)
    mean, grads_mean, _ = loss_and_grads(params, inputs, targets, h_prev, mean=True)
    assert mean == pytest.approx(total / T, rel=1e-12)
    np.testing.assert_allclose(grads_mean["W_hh"], grads_sum["W_hh"] / T, rtol=1e-12)


def test_untrained_model_predicts_uniformly() -> None:
    # Zero weights give p_t = 1/V everywhere, so the loss is exactly T log V nats.
    params = VanillaRNN.init(V, H)
    for p in params.named().values():
        p[...] = 0.0
    loss, _, _ = loss_and_grads(params, [0, 1, 2], [1, 2, 3], np.zeros(H))
    assert loss == pytest.approx(3 * math.log(V), rel=1e-12)


def test_adagrad_step_matches_hand_computation() -> None:
    params = VanillaRNN(
        W_xh=np.array([[1.0, -2.0]]),
        W_hh=np.zeros((1, 1)),
        W_hy=np.zeros((2, 1)),
        b_h=np.zeros(1),
        b_y=np.zeros(2),
    )
    grads = {name: np.zeros_like(p) for name, p in params.named().items()}
    grads["W_xh"][...] = [[0.5, -1.0]]
    optimizer = Adagrad(lr=0.1)
    # Step 1: m = g^2 = [0.25, 1]; w -= 0.1 * g / sqrt(m + 1e-8) = 0.1 * sign(g), nearly.
    optimizer.step(params, grads)
    expected = np.array(
        [1.0 - 0.1 * 0.5 / math.sqrt(0.25 + 1e-8), -2.0 + 0.1 * 1.0 / math.sqrt(1.0 + 1e-8)]
    )
    np.testing.assert_allclose(params.W_xh[0], expected, rtol=1e-14)
    # Step 2, same gradient: m = [0.5, 2], so the step shrinks by 1/sqrt(2).
    optimizer.step(params, grads)
    expected -= np.array([0.1 * 0.5 / math.sqrt(0.5 + 1e-8), -0.1 * 1.0 / math.sqrt(2.0 + 1e-8)])
    np.testing.assert_allclose(params.W_xh[0], expected, rtol=1e-14)
    np.testing.assert_allclose(optimizer.memory["W_xh"], [[0.5, 2.0]])
    assert not params.W_hh.any()  # zero gradient, no move


def test_clip_is_elementwise_and_in_place() -> None:
    g = np.array([[-7.0, -5.0, 0.3], [4.9, 5.0, 12.0]])
    grads = {"W_hh": g}
    clip(grads, limit=5.0)
    assert grads["W_hh"] is g
    np.testing.assert_array_equal(g, [[-5.0, -5.0, 0.3], [4.9, 5.0, 5.0]])


def test_training_learns_a_repetitive_text() -> None:
    text = "hello world " * 20  # V = 8, so an untrained model scores log 8 = 2.08 nats/char
    params, chars, losses = train(text, hidden=32, seq_len=25, steps=500, seed=0)
    assert chars == sorted(set(text))
    assert losses[0] == pytest.approx(math.log(8), abs=0.01)
    # Measured: about 0.0016 nats/char over the last 50 steps (0.0013 to 0.0020 for seeds 0-5).
    assert np.mean(losses[-50:]) < 0.05
    ids = sample(
        params, np.zeros(32), chars.index("h"), 35, np.random.default_rng(0), temperature=0.01
    )
    assert "h" + "".join(chars[i] for i in ids) == "hello world " * 3


def test_seeded_sampling_repeats() -> None:
    params, *_ = small_problem(seed=3)
    draws = [sample(params, np.zeros(H), 0, 50, np.random.default_rng(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    assert len(set(draws[0])) > 1  # temperature 1 on a random model really samples


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "rnnkit.reference", *args],
        env=env,
        capture_output=True,
        encoding="utf-8",
        timeout=60,
    )


def test_cli_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    result = run_cli(str(missing))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert str(missing) in result.stderr
    assert result.stdout == ""


def test_cli_empty_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run_cli(str(empty))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "is empty" in result.stderr


def test_cli_trains_on_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "poem.txt"
    path.write_text("héllo wörld, ça va? 你好 " * 5, encoding="utf-8")
    result = run_cli(str(path), "--hidden", "8", "--seq-len", "10", "--steps", "20")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("step 0: loss ")
    assert "step 18: loss " in result.stdout  # logged every steps // 10 = 2 steps


def test_cli_steps_below_1_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("hello world " * 5)
    result = run_cli(str(path), "--steps", "0")  # it printed nothing and exited 0
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "steps must be at least 1, got 0" in result.stderr


def test_cli_bad_seed_or_rate_is_one_line_naming_it(tmp_path: Path) -> None:
    # --seed -1 was a NumPy traceback; --lr nan slipped past "lr <= 0" and failed at sampling
    path = tmp_path / "t.txt"
    path.write_text("hello hello hello")
    for args, message in ((["--seed", "-1"], "--seed must be a whole number"),
                          (["--lr", "nan"], "lr must be a positive finite number")):
        result = run_cli(str(path), "--steps", "10", *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_negative_or_outside_ids_are_refused() -> None:
    # NumPy read -1 (str.find's answer for a missing character) as the last character
    params, inputs, targets, h_prev = small_problem()
    for bad_targets in ([1, 2, -1, 0, 0, 0], [1, 2, V, 0, 0, 0]):
        with pytest.raises(ValueError, match=r"targets must be token ids from 0 to 4"):
            loss_and_grads(params, inputs, bad_targets, h_prev)
    with pytest.raises(ValueError, match=r"seed_ix must be token ids from 0 to 4, got -1"):
        sample(params, h_prev, -1, 3, np.random.default_rng(0))
