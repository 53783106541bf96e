"""Series files, forecasting windows against hand-cut references, and the forecast commands."""

import json
import re

import numpy as np
import pytest
from conftest import one_error_line

from rnnkit import RnnkitError
from rnnkit.series import read_labelled_csv, read_npz, read_series

QUICK = ["--hidden", "32", "--batch-size", "32", "--lr", "0.01", "--device", "cpu",
         "--warmup", "5"]


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def seasonal(T=600, seed=0):
    t = np.arange(T)
    noise = np.random.default_rng(seed).normal(0, 0.05, T)
    return np.sin(2 * np.pi * t / 24) + 0.5 * np.sin(2 * np.pi * t / 7) + noise


def test_csv_series_and_labelled_sequences(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["id", "label", "a", "b"],
                     [["u", "yes", 1, 2], ["u", "yes", 3, 4], ["v", "no", 5, 6]])
    series, names = read_series(path, ["b"])
    np.testing.assert_array_equal(series[:, 0], [2, 4, 6]) and names == ["b"]
    seqs, labels, ids, columns = read_labelled_csv(path)
    assert ids == ["u", "v"] and labels == ["yes", "no"] and columns == ["a", "b"]
    np.testing.assert_array_equal(seqs[0], [[1, 2], [3, 4]])


@pytest.mark.parametrize("cell, problem", [("", "column 'a' is missing"),
                                           ("x1", "column 'a' is not a number ('x1')"),
                                           ("nan", "column 'a' is not a number ('nan')")])
def test_bad_csv_cells_name_line_and_column(tmp_path, cell, problem):
    path = write_csv(tmp_path / "bad.csv", ["a"], [[1], [cell], [3]])
    with pytest.raises(RnnkitError, match=f"bad.csv: line 3, {problem}".replace("(", r"\(")
                       .replace(")", r"\)")):
        read_series(path)


def test_npz_loads_without_pickle(tmp_path):
    x = np.zeros((2, 4, 3), dtype=np.float32)
    x[0, :2], x[1] = 1, 2
    np.savez(tmp_path / "ok.npz", x=x, lengths=np.array([2, 4]), y=np.array(["a", "b"]))
    seqs, labels = read_npz(tmp_path / "ok.npz")
    assert [s.shape for s in seqs] == [(2, 3), (4, 3)] and labels == ["a", "b"]
    np.savez(tmp_path / "obj.npz", x=x, lengths=np.array([2, 4]),
             y=np.array(["a", None], dtype=object))
    with pytest.raises(RnnkitError, match="never unpickled"):
        read_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "long.npz", x=x, lengths=np.array([2, 5]), y=np.array([0, 1]))
    with pytest.raises(RnnkitError, match="lengths must lie in"):
        read_npz(tmp_path / "long.npz")
    np.savez(tmp_path / "none.npz", x=x[..., :0], lengths=np.array([2, 4]), y=np.array([0, 1]))
    with pytest.raises(RnnkitError, match=r"none.npz: x has no features \(shape \(2, 4, 0\)\)"):
        read_npz(tmp_path / "none.npz")  # it was "input_size must be positive, got 0"


def test_classify_npz_and_csv_through_the_cli(cli, tmp_path):
    # class = sign of the sequence's mean; variable lengths
    rng = np.random.default_rng(0)
    N, T = 120, 12
    lengths = rng.integers(3, T + 1, N)
    y = np.arange(N) % 2
    x = rng.normal(0, 1, (N, T, 2)).astype(np.float32) + np.where(y, 1.5, -1.5)[:, None, None]
    x *= (np.arange(T)[None, :] < lengths[:, None])[..., None]
    np.savez(tmp_path / "d.npz", x=x, lengths=lengths, y=y)
    status, out, err = cli("classify", "train", tmp_path / "d.npz", "--out", tmp_path / "r",
                           "--epochs", "8", *QUICK)
    assert status == 0, err
    assert float(out.strip().splitlines()[-1].split()[1]) >= 0.95
    rows = [[f"s{i}", str(y[i]), *x[i, t]] for i in range(N) for t in range(lengths[i])]
    write_csv(tmp_path / "d.csv", ["id", "label", "a", "b"], rows)
    status, out, err = cli("classify", "train", tmp_path / "d.csv", "--out", tmp_path / "r2",
                           "--epochs", "8", "--test-pattern", "^s1", *QUICK)
    assert status == 0, err
    assert float(out.strip().splitlines()[-1].split()[1]) >= 0.95
    status, out, err = cli("classify", "predict", tmp_path / "r2", tmp_path / "d.csv")
    assert status == 0, err
    assert out.splitlines()[0].split("\t")[:2] == ["s0", "0"]
    # a table with named columns (a pandas DataFrame) is read by name: in another order its
    # columns were read by position, a as b and b as a
    import rnnkit
    sequence = x[0, :lengths[0]]

    class Table:
        def __init__(self, columns):
            self.columns = columns

        def __getitem__(self, names):
            return sequence[:, [["a", "b"].index(n) for n in names]]

        def __array__(self, dtype=None, copy=None):
            return sequence[:, [["a", "b"].index(n) for n in self.columns]]

    classifier = rnnkit.load(tmp_path / "r2")
    np.testing.assert_array_equal(classifier.predict(Table(["b", "a"])).probs,
                                  classifier.predict(sequence).probs)


def test_forecast_train_beats_naive_and_predicts(cli, tmp_path):
    s = seasonal()
    path = write_csv(tmp_path / "s.csv", ["t", "y", "z"],
                     [[i, f"{v:.5f}", f"{-v:.5f}"] for i, v in enumerate(s)])
    out = tmp_path / "run"
    status, stdout, err = cli("forecast", "train", path, "--columns", "y,z", "--horizon", "6",
                              "--window", "24", "--out", out, "--epochs", "15", *QUICK,
                              "--cell", "gru")
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["mae"] < 0.6 * metrics["naive"]["mae"], stdout
    status, stdout, err = cli("forecast", "predict", out, path)
    assert status == 0, err
    lines = stdout.strip().splitlines()
    assert "better" in err and lines[0] == "step,y,z" and len(lines) == 1 + 6  # stdout: CSV


def test_forecast_bad_inputs_are_one_line(cli, tmp_path):
    short = write_csv(tmp_path / "short.csv", ["y"], [[1], [2], [3]])
    status, _, err = cli("forecast", "train", short, "--horizon", "5", "--out", tmp_path / "r")
    assert status == 2 and "short.csv: the series has 3 steps, shorter than the horizon 5" \
        in one_error_line(err)
    gap = write_csv(tmp_path / "gap.csv", ["y"], [[1], [""], [3]])
    status, _, err = cli("forecast", "train", gap, "--out", tmp_path / "r")
    assert status == 2 and "gap.csv: line 3, column 'y' is missing" in one_error_line(err)
    status, _, err = cli("forecast", "train", gap, "--columns", "w", "--out", tmp_path / "r")
    assert status == 2 and "no column 'w'" in one_error_line(err)


def test_a_csv_saved_with_a_byte_order_mark_reads_its_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("id,label,a\nx,yes,1\nx,yes,2\nz,no,3\n".encode("utf-8-sig"))
    seqs, labels, ids, columns = read_labelled_csv(path, None, "id", "label")
    assert ids == ["x", "z"] and labels == ["yes", "no"] and columns == ["a"]


def test_a_csv_to_predict_without_the_runs_id_column_says_to_add_it(tmp_path):
    path = tmp_path / "new.csv"
    path.write_text("a\n1\n2\n")
    with pytest.raises(RnnkitError, match="no column 'id' naming each row's sequence; the run "
                                          "reads its sequences from a column 'id'; add it"):
        read_labelled_csv(path, ["a"], "id", None)  # as `predict` reads it: no label column


@pytest.mark.parametrize("text, message", [
    # pandas' to_csv writes its row numbers under an empty name: they were read as a feature
    (",id,a,label\n0,s0,0.5,dog\n1,s0,0.1,dog\n", "column 1 has no name in the header (the "
     "row numbers pandas' to_csv writes?)"),
    # the second 'a' was never read: both features came from the first
    ("id,a,a,label\ns0,0.5,100,dog\n", "the header names 'a' twice"),
    # Excel's European export: the whole header was one column name
    ("id;a;label\ns0;0,5;dog\n", "the cells are separated by ';'; rnnkit reads CSV separated "
     "by commas"),
])
def test_csv_files_that_would_be_read_wrong_are_refused(tmp_path, text, message):
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(RnnkitError, match=re.escape(message)):
        read_labelled_csv(tmp_path / "d.csv")


def test_a_spreadsheets_trailing_commas_and_cleared_rows_are_blank(tmp_path):
    (tmp_path / "d.csv").write_text("id,a,label,\ns0,0.5,dog,\ns0,0.25,dog,\n,,,\n , , ,\n")
    seqs, labels, ids, columns = read_labelled_csv(tmp_path / "d.csv")
    assert columns == ["a"] and labels == ["dog"] and seqs[0][:, 0].tolist() == [0.5, 0.25]
    # the label given as a feature: a perfect score that prediction cannot repeat
    with pytest.raises(RnnkitError, match="--columns names 'label', the label column"):
        read_labelled_csv(tmp_path / "d.csv", columns=["a", "label"])


def test_files_that_are_no_npz_archive_are_one_error(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((2, 3, 1)))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")  # an internal error (TypeError)
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((2, 3, 1)), lengths=np.array([3, 3]), y=np.array([0, 1]))
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:300])  # BadZipFile
    with pytest.raises(RnnkitError, match="not an .npz archive but one array"):
        read_npz(tmp_path / "one.npz")
    with pytest.raises(RnnkitError, match="not a readable .npz file"):
        read_npz(tmp_path / "cut.npz")
