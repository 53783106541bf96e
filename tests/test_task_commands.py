"""`rnnkit classify` and `rnnkit forecast` as commands: repeatable seeds, options, help, and the
one-line errors for bad options and for run directories that are damaged or of another kind."""

import argparse
import json

import numpy as np
import pytest
from conftest import one_error_line
from safetensors.torch import load_file

from rnnkit.cli import build_parser

QUICK = ["--hidden", "8", "--batch-size", "16", "--epochs", "2", "--device", "cpu",
         "--warmup", "2"]


@pytest.fixture
def npz(tmp_path):
    """Two classes of variable-length sequences (the sign of their mean), as an .npz."""
    rng = np.random.default_rng(0)
    N, T = 60, 10
    lengths = rng.integers(2, T + 1, N)
    y = np.arange(N) % 2
    x = rng.normal(0, 1, (N, T, 2)).astype(np.float32) + np.where(y, 1.0, -1.0)[:, None, None]
    x *= (np.arange(T)[None, :] < lengths[:, None])[..., None]
    path = tmp_path / "d.npz"
    np.savez(path, x=x, lengths=lengths, y=y)
    return path


@pytest.fixture
def series_csv(tmp_path):
    t = np.arange(300)
    s = np.sin(2 * np.pi * t / 24) + np.random.default_rng(0).normal(0, 0.05, len(t))
    path = tmp_path / "s.csv"
    path.write_text("y,z\n" + "".join(f"{v:.5f},{-v:.5f}\n" for v in s))
    return path


def train_classifier(cli, data, out, *options):
    status, stdout, err = cli("classify", "train", data, "--out", out, *QUICK, *options)
    assert status == 0, err
    return stdout


def train_forecaster(cli, series, out, *options):
    status, stdout, err = cli("forecast", "train", series, "--out", out, "--window", "12",
                              "--horizon", "3", *QUICK, *options)
    assert status == 0, err
    return stdout


def same_weights(a, b) -> bool:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


@pytest.mark.parametrize("command", ["classify", "forecast"])
def test_the_same_seed_gives_the_same_weights_bit_for_bit(cli, tmp_path, npz, series_csv,
                                                          command):
    train = train_classifier if command == "classify" else train_forecaster
    data = npz if command == "classify" else series_csv
    for name in ("a", "b"):
        train(cli, data, tmp_path / name, "--seed", "3", "--dropout", "0.2", "--layers", "2")
    train(cli, data, tmp_path / "c", "--seed", "4", "--dropout", "0.2", "--layers", "2")
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert not same_weights(tmp_path / "a", tmp_path / "c")  # the seed is what repeats


@pytest.mark.parametrize("command", ["classify", "forecast"])
def test_a_negative_seed_is_refused_up_front(cli, tmp_path, npz, series_csv, command):
    data = npz if command == "classify" else series_csv
    status, _, err = cli(command, "train", data, "--out", tmp_path / "r", *QUICK, "--seed", "-1")
    assert status == 2 and "seed must be 0 or more, got -1" in one_error_line(err)
    assert not (tmp_path / "r").exists()


def parsers(parser):
    """Every parser of the `rnnkit` tree with its name: the top one and each sub-command."""
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from parsers(sub)


def test_no_option_parses_text_with_bool():
    # type=bool turns every non-empty string, "false" included, into True
    offenders = [f"{prog} {'/'.join(a.option_strings)}" for prog, p in parsers(build_parser())
                 for a in p._actions if a.type is bool]
    assert offenders == []


def test_bucket_is_an_on_off_pair(cli, tmp_path, series_csv):
    train_forecaster(cli, series_csv, tmp_path / "off", "--no-bucket")
    assert json.loads((tmp_path / "off" / "config.json").read_text())["fit"]["bucket"] is False
    train_forecaster(cli, series_csv, tmp_path / "on", "--bucket")
    assert json.loads((tmp_path / "on" / "config.json").read_text())["fit"]["bucket"] is True
    for text in ("false", "maybe"):
        status, _, err = cli("forecast", "train", series_csv, "--out", tmp_path / "x",
                             "--bucket", text)
        assert status == 2 and f"unrecognized arguments: {text}" in one_error_line(err)
