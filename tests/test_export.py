"""ONNX export: each exported file, run in onnxruntime, against rnnkit's own outputs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PYTHON, TINY, one_error_line

import rnnkit
from rnnkit.panel import Panel
from rnnkit.task_runs import load_task

ort = pytest.importorskip("onnxruntime")
README = Path(__file__).resolve().parents[1] / "README.md"
QUICK = ["--hidden", "16", "--batch-size", "32", "--epochs", "2", "--device", "cpu"]


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_language_model_steps_in_onnxruntime_as_in_rnnkit(cli, corpus, tmp_path, cell):
    run = tmp_path / "run"
    status, _, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", "10", "--cell", cell,
                         "--layers", "2")
    assert status == 0, err
    status, out, err = cli("export", run, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert status == 0 and "wrote" in out and "logits (B, " in out, err
    model = rnnkit.load(run)
    s = session(tmp_path / "m.onnx")
    cfg = model.config
    torch.manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (3, 20))  # (B, T): three streams at once
    with torch.no_grad():
        expected, _, _ = model(ids)  # (B, T, V) from the fused kernel
    state = {i.name: np.zeros((cfg.layers, 3, cfg.hidden), np.float32)
             for i in s.get_inputs() if i.name != "token"}
    assert list(state) == (["h", "c"] if cell == "lstm" else ["h"])
    for t in range(ids.shape[1]):
        logits, *new = s.run(None, {"token": ids[:, t].numpy(), **state})
        state = dict(zip(state, new, strict=True))
        np.testing.assert_allclose(logits, expected[:, t].numpy(), atol=1e-5, rtol=0)
    meta = s.get_modelmeta().custom_metadata_map
    assert rnnkit.Vocab.from_json(json.loads(meta["rnnkit.vocab"])) == model.vocab


# Two members on sequences of one length both read every step (the ragged test below has two
# time scales).
@pytest.mark.parametrize("members, T", [("1", 10), ("2", 40)])
def test_classifier_runs_in_onnxruntime_as_in_rnnkit(cli, tmp_path, members, T):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = rng.normal(0, 1, (60, T, 2)).astype(np.float32) + y[:, None, None]
    np.savez(tmp_path / "d.npz", x=x, lengths=np.full(60, T), y=y)
    run = tmp_path / "run"
    status, _, err = cli("classify", "train", tmp_path / "d.npz", "--out", run, *QUICK,
                         "--bidirectional", "--layers", "2", "--ensemble", members)
    assert status == 0, err
    status, out, err = cli("export", run, "--out", tmp_path / "c.onnx")
    assert status == 0 and "logits (B, 3)" in out, err
    model, _ = load_task(run)
    assert model.config.scales == [] and model.config.members == int(members)
    inputs = torch.randn(4, 17, 2)  # another batch size and length than in training
    with torch.no_grad():
        expected = model(inputs)[0].numpy()
    s = session(tmp_path / "c.onnx")
    np.testing.assert_allclose(s.run(None, {"inputs": inputs.numpy()})[0], expected, atol=1e-5,
                               rtol=0)
    labels = json.loads(s.get_modelmeta().custom_metadata_map["rnnkit.labels"])
    assert labels == ["0", "1", "2"]


def test_a_classifier_that_pads_short_sequences_runs_in_onnxruntime_as_in_rnnkit(cli, tmp_path):
    # Sequences of 12 to 40 steps: the model reads the shorter ones padded to 40 steps (both
    # members, at two time scales); the file reads rows of at least 40, padded by the user.
    rng = np.random.default_rng(0)
    y, lengths = np.arange(60) % 3, rng.integers(12, 41, 60)
    lengths[0] = 40
    x = rng.normal(0, 1, (60, 40, 2)).astype(np.float32) + y[:, None, None]
    np.savez(tmp_path / "d.npz", x=x, lengths=lengths, y=y)
    run = tmp_path / "run"
    status, _, err = cli("classify", "train", tmp_path / "d.npz", "--out", run, *QUICK,
                         "--ensemble", "2")
    assert status == 0, err
    status, out, err = cli("export", run, "--out", tmp_path / "c.onnx")
    assert status == 0 and "T at least 40 (pad shorter rows with rnnkit.pad_value)" in out, err
    model, _ = load_task(run)
    assert model.config.pad_to == 40 and model.config.scales == [1, 2]
    s = session(tmp_path / "c.onnx")
    meta = s.get_modelmeta().custom_metadata_map
    assert meta["rnnkit.pad_to"] == "40"
    pad = np.asarray(json.loads(meta["rnnkit.pad_value"]), np.float32)  # (F,)
    long = torch.randn(3, 45, 2)
    short = torch.randn(3, 12, 2)
    with torch.no_grad():
        want_long, want_short = model(long)[0].numpy(), model(short)[0].numpy()
    np.testing.assert_allclose(s.run(None, {"inputs": long.numpy()})[0], want_long, atol=1e-5,
                               rtol=0)
    padded = np.concatenate([short.numpy(), np.broadcast_to(pad, (3, 28, 2))], axis=1)
    np.testing.assert_allclose(s.run(None, {"inputs": padded})[0], want_short, atol=1e-5, rtol=0)


def test_forecaster_runs_in_onnxruntime_as_in_rnnkit(cli, tmp_path):
    t = np.arange(300)
    rows = [f"{i},{np.sin(i / 5):.5f},{np.cos(i / 7) + i / 100:.5f}" for i in t]
    (tmp_path / "s.csv").write_text("t,y,z\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    status, _, err = cli("forecast", "train", tmp_path / "s.csv", "--columns", "y,z",
                         "--horizon", "4", "--window", "12", "--out", run, *QUICK)
    assert status == 0, err
    status, out, err = cli("export", run, "--out", tmp_path / "f.onnx")
    assert status == 0 and "forecast (B, 4, 2)" in out, err
    windows = np.random.default_rng(1).normal(0, 1, (5, 12, 2)).astype(np.float32) + 3
    expected = rnnkit.load(run).forecast(windows)  # (B, H, F), what forecast predict prints
    got = session(tmp_path / "f.onnx").run(None, {"inputs": windows})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_many_series_forecaster_with_quantiles_runs_in_onnxruntime_as_in_rnnkit(cli, tmp_path):
    # Window-scaled series, a season of 7 and three quantiles: what panel.encode and panel.decode
    # do in NumPy, the file does in its graph.
    rng = np.random.default_rng(0)
    lines = ["shop,sales"]
    for s in range(3):
        lines += [f"s{s},{10 * (s + 1) + 3 * np.sin(2 * np.pi * t / 7) + rng.normal():.4f}"
                  for t in range(90)]
    (tmp_path / "shops.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    status, _, err = cli("forecast", "train", tmp_path / "shops.csv", "--id-column", "shop",
                         "--season", "7", "--quantiles", "0.1,0.5,0.9", "--horizon", "5",
                         "--window", "14", "--out", run, *QUICK)
    assert status == 0, err
    status, out, err = cli("export", run, "--out", tmp_path / "f.onnx")
    assert status == 0 and "forecast (B, 5, 1, 3)" in out, err
    fc = rnnkit.load(run)
    assert fc.data["scale"] == "window" and fc.data["season"] == 7
    assert fc.data["widen"][2] > 0  # the calibration widens the head's interval, in the file too
    windows = (rng.normal(0, 2, (4, 14, 1)) + [[[5.0]], [[20.0]], [[-3.0]], [[0.5]]])
    windows = windows.astype(np.float32)
    empty = [np.zeros((14, 0), np.float32)] * 4
    panel = Panel([str(i) for i in range(4)], list(windows), empty, empty)
    expected = fc.run(panel, [np.array([14])] * 4)[0]  # (B, H, F, Q)
    got = session(tmp_path / "f.onnx").run(None, {"inputs": windows})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)


def test_a_forecaster_with_covariates_is_refused_in_one_line(cli, tmp_path):
    lines = ["t,y,x"] + [f"{i},{np.sin(i / 4):.4f},{np.cos(i / 3):.4f}" for i in range(120)]
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    status, _, err = cli("forecast", "train", tmp_path / "s.csv", "--columns", "y", "--past", "x",
                         "--horizon", "3", "--window", "12", "--out", run, *QUICK)
    assert status == 0, err
    status, _, err = cli("export", run, "--out", tmp_path / "f.onnx")
    assert status == 2 and "covariates" in one_error_line(err)
    assert not (tmp_path / "f.onnx").exists()


@pytest.mark.parametrize("tokenizer", ["char", "byte"])
def test_readme_onnxruntime_snippet_runs(cli, corpus, tmp_path, tokenizer):
    status, _, err = cli("train", corpus, "--out", tmp_path / "run", *TINY, "--max-steps", "40",
                         "--tokenizer", tokenizer)
    assert status == 0, err
    assert cli("export", tmp_path / "run", "--out", tmp_path / "model.onnx")[0] == 0
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Run an exported language model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "rnnkit" not in code.replace('"rnnkit.vocab"', "")  # onnxruntime and NumPy only
    assert len(code.strip().splitlines()) <= 12
    result = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) >= 200 and set(result.stdout) <= set(corpus.read_text()) | {"\ufffd"}


def test_export_errors_are_one_line(cli, corpus, tmp_path, monkeypatch):
    status, _, err = cli("export", tmp_path / "missing", "--out", tmp_path / "m.onnx")
    assert status == 2 and "missing" in one_error_line(err)
    status, _, err = cli("train", corpus, "--out", tmp_path / "run", *TINY, "--max-steps", "5")
    status, _, err = cli("export", tmp_path / "run", "--out", tmp_path / "no" / "dir" / "m.onnx")
    assert status == 2 and "dir does not exist; make it, or choose another" in one_error_line(err)
    assert not (tmp_path / "no").exists()
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    status, _, err = cli("export", tmp_path / "run", "--out", tmp_path / "m.onnx")
    assert status == 2 and "pip install onnx (rnnkit's 'export' extra" in one_error_line(err)
    assert not (tmp_path / "m.onnx").exists()


def test_an_out_path_through_a_file_is_one_line(cli, corpus, tmp_path):
    assert cli("train", corpus, "--out", tmp_path / "run", *TINY, "--max-steps", "2")[0] == 0
    (tmp_path / "a.txt").write_text("not a folder")
    status, _, err = cli("export", tmp_path / "run", "--out", tmp_path / "a.txt" / "m.onnx")
    assert status == 2 and "a.txt is a file, not a folder; choose another" in one_error_line(err)
    for folder in (tmp_path, "", tmp_path / "run"):  # a folder ran the whole export, then failed
        status, _, err = cli("export", tmp_path / "run", "--out", folder)
        assert status == 2 and ("is a folder; give the path of the file to write" if folder
                                else "--out is empty") in one_error_line(err), err
    status, _, err = cli("prepare", corpus, "--out", tmp_path / "a.txt")
    assert status == 2 and "cannot make the folder" in one_error_line(err)


def test_export_writes_through_links_and_pipes_and_never_over_the_run(cli, corpus, tmp_path):
    import os
    import threading

    run = tmp_path / "run"
    status, _, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", "4")
    assert status == 0, err
    # --out naming the run's own weights: refused, the run intact (it was replaced by the export)
    weights = (run / "model.safetensors").read_bytes()
    status, _, err = cli("export", run, "--out", run / "model.safetensors")
    assert status == 2 and "is the run's own model.safetensors, which writing would destroy" \
        in one_error_line(err)
    assert (run / "model.safetensors").read_bytes() == weights
    # a link is written through, not replaced by a file
    target, link = tmp_path / "target.onnx", tmp_path / "link.onnx"
    target.write_bytes(b"")
    link.symlink_to(target)
    status, _, err = cli("export", run, "--out", link)
    assert status == 0, err
    assert link.is_symlink() and session(target).get_inputs()[0].name == "token"
    # a pipe gets the file's bytes (a rename would have put a file in its place)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    got = []
    reader = threading.Thread(target=lambda: got.append(pipe.read_bytes()), daemon=True)
    reader.start()
    status, _, err = cli("export", run, "--out", pipe)
    reader.join(timeout=30)
    assert status == 0 and got and got[0] == target.read_bytes(), err
    assert pipe.is_fifo()
