"""benchmarks/classify_vs_field.py's data plumbing: the data sets inside the aeon wheel become
rnnkit `.npz` files that rnnkit reads back to the same values, without touching the network."""

import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnkit.series import read_npz

pytest.importorskip("aeon", reason="aeon is the benchmark extra (pip install '.[bench]'), not "
                    "part of the test extra")
from aeon.datasets import load_from_ts_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import classify_vs_field  # noqa: E402


@pytest.fixture
def offline(monkeypatch):
    """Any connection attempt fails the test: the shipped files must be enough."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"the benchmark tried to connect to {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", ["BasicMotions", "PickupGestureWiimoteZ"])
def test_a_shipped_split_becomes_an_npz_that_rnnkit_reads_back(name, tmp_path, offline):
    # BasicMotions: 6 channels, equal lengths; PickupGestureWiimoteZ: one channel, lengths 29-361.
    path = tmp_path / f"{name}_TRAIN.npz"
    classify_vs_field.write_npz(path, *classify_vs_field.load_aeon(name, "TRAIN"))

    X, y = load_from_ts_file(str(classify_vs_field.aeon_files(name, "TRAIN")))  # (C, T_i) each
    sequences, labels = read_npz(path)  # rnnkit's own reader and its checks
    assert labels == [str(v) for v in y]
    assert len(sequences) == len(X) == {"BasicMotions": 40, "PickupGestureWiimoteZ": 50}[name]
    for seq, ref in zip(sequences, X, strict=True):
        assert seq.shape == (ref.shape[1], ref.shape[0])  # (T_i, F) from aeon's (C, T_i)
        np.testing.assert_array_equal(seq, ref.T.astype(np.float32))

    with np.load(path, allow_pickle=False) as z:  # the layout the README documents
        x, lengths = z["x"], z["lengths"]
        assert x.dtype == np.float32 and x.shape == (len(X), max(r.shape[1] for r in X),
                                                     X[0].shape[0])
        assert lengths.tolist() == [r.shape[1] for r in X]
        for row, n in zip(x, lengths, strict=True):
            assert not row[n:].any()  # zero padding after each sequence's end


def test_variable_lengths_also_have_the_archives_equal_length_release(offline):
    # MiniRocket reads `_eq`: the same series, padded by the archive to the longest one.
    original, y = classify_vs_field.load_aeon("PickupGestureWiimoteZ", "TEST")
    padded, y_eq = classify_vs_field.load_aeon("PickupGestureWiimoteZ", "TEST", equal_length=True)
    assert y == y_eq and len({len(s) for s in padded}) == 1 and len({len(s) for s in original}) > 1
    for short, long in zip(original, padded, strict=True):
        np.testing.assert_array_equal(long[:len(short)], short)


def test_minirocket_reads_train_and_test_zero_padded_to_one_length():
    # FSDD's longest training recording is longer than its longest test one: both sides must
    # reach the same length, or MiniRocket refuses the test set.
    train = [np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((5, 2), np.float32)]
    test = [np.full((4, 2), 7, np.float32)]
    longest = max(len(s) for s in train + test)
    a, b = (classify_vs_field.to_aeon(s, True, longest) for s in (train, test))
    assert a.shape == (2, 2, 5) and b.shape == (1, 2, 5)  # (N, F, T)
    np.testing.assert_array_equal(a[0], [[0, 2, 4, 0, 0], [1, 3, 5, 0, 0]])
    np.testing.assert_array_equal(b[0], [[7, 7, 7, 7, 0]] * 2)
    ragged = classify_vs_field.to_aeon(train, False)  # DTW: a list of (F, T_i)
    assert [r.shape for r in ragged] == [(2, 3), (2, 5)]


def row(name, rnnkit, minirocket):
    """A result row with the mean accuracies given (None: every run failed)."""
    return {"dataset": name, "summary": {"rnnkit": {"accuracy_mean": rnnkit},
                                         "minirocket": {"accuracy_mean": minirocket}}}


def test_the_issues_targets_are_checked_against_the_means():
    sets = classify_vs_field.AEON_SETS
    rows = [row(sets[0], 0.95, 0.90), row(sets[1], 0.90, 0.90), row(sets[2], 0.91, 0.90),
            row(sets[3], 0.89, 0.90), row(sets[4], 0.885, 0.90), row("FSDD", 0.995, 0.99)]
    check = classify_vs_field.targets(rows)
    assert check["at_least_minirocket"] == sorted(sets[:3])
    assert check["within_2_points_below"] == sorted(sets[3:])
    assert check["aeon_target_met"] and check["fsdd_at_least_99"]

    rows[4] = row(sets[4], 0.87, 0.90)  # 3 points below
    rows[5] = row("FSDD", None, 0.99)  # rnnkit failed on FSDD: not met, rather than unknown
    check = classify_vs_field.targets(rows)
    assert check["more_than_2_points_below"] == [sets[4]]
    assert check["aeon_target_met"] is False and check["fsdd_at_least_99"] is False
    assert classify_vs_field.targets(rows[:5])["fsdd_at_least_99"] is None  # FSDD not run


def test_the_table_says_where_rnnkit_loses():
    def summary(mean, std=0.0):
        return {"accuracy_mean": mean, "accuracy_std": std, "runs": 3, "failed": 0,
                "seconds_mean": 1.0}

    rows = [{"dataset": name, "train": 50, "test": 1029, "features": 1, "length_min": 29,
             "length_max": 361, "classes": 2,
             "summary": {"rnnkit": summary(a, 0.0123), "minirocket": summary(b),
                         "dtw_1nn": {**summary(0.5), "runs": 1}}}
            for name, a, b in (("GunPoint", 0.9, 0.95), ("OSULeaf", 0.97, 0.95))]
    lines = classify_vs_field.table(rows).splitlines()
    assert lines[2].startswith("| GunPoint (50 / 1,029, 1, 29-361, 2) | 90.00 ± 1.23 |")
    assert lines[2].endswith("| 50.00 | 1.0 | -5.00 points: loses |")
    assert lines[3].endswith("| +2.00 points: wins |")
