"""`rnnkit.load(DIR)` opens every kind of run, and what it returns predicts exactly what the
commands print: `rnnkit sample`, `rnnkit classify predict`, `rnnkit forecast predict`."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY, one_error_line

import rnnkit
from rnnkit import Classifier, Forecaster, RnnkitError
from rnnkit.audio import AudioConfig, file_features

QUICK = ["--hidden", "8", "--batch-size", "16", "--epochs", "2", "--device", "cpu",
         "--warmup", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run of each kind, with the data they read."""
    from rnnkit.cli import main

    tmp = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    N, T = 40, 9
    lengths = rng.integers(2, T + 1, N)
    y = np.arange(N) % 2
    x = rng.normal(0, 1, (N, T, 2)).astype(np.float32) + np.where(y, 1.0, -1.0)[:, None, None]
    x *= (np.arange(T)[None, :] < lengths[:, None])[..., None]
    np.savez(tmp / "d.npz", x=x, lengths=lengths, y=y)
    s = np.sin(np.arange(200) / 4)
    (tmp / "s.csv").write_text("y,z\n" + "".join(f"{v:.5f},{v * v:.5f}\n" for v in s))
    (tmp / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    for label, freq in (("low", 300), ("high", 1500)):
        (tmp / "tones" / label).mkdir(parents=True)
        for i in range(4):
            t = np.arange(2000) / 8000
            sf.write(tmp / "tones" / label / f"{label}_{i}.wav",
                     (0.5 * np.sin(2 * np.pi * freq * (1 + 0.02 * i) * t)).astype(np.float32), 8000)
    for args in (["train", tmp / "corpus.txt", "--out", tmp / "lm", "--max-steps", "2", *TINY],
                 ["classify", "train", tmp / "d.npz", "--out", tmp / "classifier", *QUICK],
                 ["forecast", "train", tmp / "s.csv", "--out", tmp / "forecaster", "--window",
                  "12", "--horizon", "3", *QUICK],
                 ["classify", "train", tmp / "tones", "--out", tmp / "audio", "--test-pattern",
                  "_0", "--val-fraction", "0", "--sample-rate", "8000", "--n-fft", "256",
                  "--hop-length", "128", "--n-mels", "32", *QUICK]):
        assert main([str(a) for a in args]) == 0
    return tmp


def test_a_language_model_run_generates_what_sample_prints(cli, runs):
    model = rnnkit.load(runs / "lm")
    assert isinstance(model, rnnkit.CharLM)
    status, stdout, err = cli("sample", runs / "lm", "--prime", "the", "--length", "40",
                              "--seed", "3", "--temperature", "0.7")
    assert status == 0, err
    assert stdout == model.generate("the", 40, temperature=0.7, seed=3) + "\n"
    assert model.stepper().step("t").top(1)  # the step API is there too
    last = rnnkit.load(runs / "lm", checkpoint="last.safetensors")
    assert isinstance(last, rnnkit.CharLM)


def printed(result) -> list[str]:
    return [f"{n}\t{label}\t{p.max():.4f}"
            for n, label, p in zip(result.names, result.labels, result.probs, strict=True)]


@pytest.mark.parametrize("run, files", [("classifier", ["d.npz"]),
                                        ("audio", ["tones/low/low_1.wav", "tones/high/high_2.wav",
                                                   "tones/low/low_3.wav"])])
def test_a_classifier_run_predicts_what_the_command_prints(cli, runs, run, files):
    classifier = rnnkit.load(runs / run)
    assert isinstance(classifier, Classifier) and classifier.classes in (["0", "1"],
                                                                         ["high", "low"])
    paths = [runs / f for f in files]
    status, stdout, err = cli("classify", "predict", runs / run, *paths)
    assert status == 0, err
    result = classifier.predict(paths)
    assert stdout.splitlines() == printed(result)
    assert result.probs.shape == (len(result.names), 2)
    np.testing.assert_allclose(result.probs.sum(1), 1.0, rtol=1e-5)
    assert result.labels == [classifier.classes[k] for k in result.probs.argmax(1)]
    # the same examples given as arrays: the same probabilities
    if run == "audio":
        cfg = AudioConfig(**classifier.data["audio"])
        arrays = [file_features(p, cfg) for p in paths]
        np.testing.assert_allclose(classifier.predict(arrays).probs, result.probs, rtol=1e-5,
                                   atol=1e-6)
    else:
        with np.load(paths[0]) as z:
            x, lengths = z["x"], z["lengths"]
        for answer in (classifier.predict(x, lengths),
                       classifier.predict(torch.from_numpy(x), torch.from_numpy(lengths)),
                       classifier.predict([x[i, :n] for i, n in enumerate(lengths)])):
            np.testing.assert_allclose(answer.probs, result.probs, rtol=1e-5, atol=1e-6)
        one = classifier.predict(x[3, :lengths[3]])  # one sequence (T, F)
        np.testing.assert_allclose(one.probs[0], result.probs[3], rtol=1e-5, atol=1e-6)


def test_examples_to_predict_need_no_labels(runs, tmp_path):
    # an .npz without y, and a folder of recordings without one sub-folder per label
    classifier = rnnkit.load(runs / "classifier")
    with np.load(runs / "d.npz") as z:
        np.savez(tmp_path / "new.npz", x=z["x"], lengths=z["lengths"])
    np.testing.assert_array_equal(classifier.predict(tmp_path / "new.npz").probs,
                                  classifier.predict(runs / "d.npz").probs)
    audio = rnnkit.load(runs / "audio")
    (tmp_path / "flat").mkdir()
    files = [runs / "tones" / "high" / "high_2.wav", runs / "tones" / "low" / "low_1.wav"]
    for f in files:
        (tmp_path / "flat" / f.name).write_bytes(f.read_bytes())
    result = audio.predict(tmp_path / "flat")
    assert result.names == ["high_2.wav", "low_1.wav"]
    np.testing.assert_allclose(result.probs, audio.predict(files).probs, rtol=1e-6)


def test_a_one_series_forecaster_refuses_a_file_of_many(runs, tmp_path):
    s = np.sin(np.arange(60) / 4)
    np.savez(tmp_path / "two.npz", x=np.stack([np.stack([s, s * s], 1)] * 2).astype(np.float32),
             lengths=np.array([60, 60]))
    with pytest.raises(RnnkitError, match="holds 2 series, and this run forecasts one"):
        rnnkit.load(runs / "forecaster").predict(tmp_path / "two.npz")


def test_a_forecaster_run_predicts_what_the_command_prints(cli, runs):
    forecaster = rnnkit.load(runs / "forecaster")
    assert isinstance(forecaster, Forecaster)
    assert (forecaster.columns, forecaster.window, forecaster.horizon) == (["y", "z"], 12, 3)
    status, stdout, err = cli("forecast", "predict", runs / "forecaster", runs / "s.csv")
    assert status == 0, err
    future = forecaster.predict(runs / "s.csv")  # (H, F)
    assert future.shape == (3, 2)
    assert "H-step MAE" in err, err  # the report on stderr: stdout is the CSV alone
    assert stdout.splitlines() == ["step,y,z"] + [
        f"+{h}," + ",".join(f"{v:.6g}" for v in row) for h, row in enumerate(future, start=1)]
    series = forecaster.read(runs / "s.csv")  # (T, F)
    np.testing.assert_array_equal(forecaster.predict(series), future)
    np.testing.assert_array_equal(forecaster.predict(series[-12:]), future)  # the last W steps
    assert forecaster.predict(series[-11:]).shape == forecaster.predict(series).shape  # fewer
    with pytest.raises(RnnkitError, match="series: the series has no observed step"):  # than W
        forecaster.predict(series[:0])
    with pytest.raises(RnnkitError, match=r"series must be \(T, 2\), one column for each of "
                                          r"\['y', 'z'\]; got shape \(200,\)"):
        forecaster.predict(series[:, 0])

    class Table:  # a table with named columns, as a pandas DataFrame is to the forecaster
        def __init__(self, columns):
            self.columns = list(columns)

        def __getitem__(self, names):
            return series[:, [["y", "z"].index(n) for n in names]]

        def __array__(self, dtype=None, copy=None):  # read by position, in the table's order
            return series[:, [["y", "z"].index(n) for n in self.columns]]

    # its columns in another order were read by position: y forecast as z and z as y
    np.testing.assert_array_equal(forecaster.predict(Table(["z", "y"])), future)
    with pytest.raises(RnnkitError, match=r"the table has no column 'z'; the run reads"):
        forecaster.predict(Table(["y", "w"]))


def test_bad_arrays_are_one_clear_error(runs):
    classifier = rnnkit.load(runs / "classifier")
    x = np.zeros((3, 5, 2), np.float32)
    cases = [
        ((np.zeros((3, 5, 4)),), r"inputs\[0\] has 4 features per step; the model reads 2"),
        (([x[0], x[1, :0]],), r"inputs: inputs\[1\] is an empty sequence"),
        ((x, [5, 0, 2]), r"lengths must be 3 integers in \[1, 5\], got \[5, 0, 2\]"),
        ((x, [5, 2]), r"lengths must be 3 integers in \[1, 5\]"),
        ((x, [1.5, 2, 3]), "lengths must be 3 integers"),
        ((np.full((1, 2, 2), np.nan),), "inputs hold NaN or infinite values"),
        ((np.zeros(4),), r"got an array of shape \(4,\)"),
        (([x[0], np.zeros(3)],), r"inputs\[1\] must be one sequence \(T, F\)"),
        (([x[0]], [5]), "lengths go with one padded array"),
        ((runs / "nothing.npz",), "no such file or folder"),
    ]
    for args, message in cases:
        with pytest.raises(RnnkitError, match=message):
            classifier.predict(*args)


def test_a_wrong_directory_or_kind_is_one_clear_line(cli, runs, tmp_path):
    with pytest.raises(RnnkitError, match="is not a run directory \\(no config.json\\); make one "
                                          "with rnnkit train, rnnkit classify train or rnnkit "
                                          "forecast train"):
        rnnkit.load(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(RnnkitError, match="is not an rnnkit run \\(format 'something-else'\\); "
                                          "rnnkit.load opens runs made by rnnkit train"):
        rnnkit.load(tmp_path / "other")
    with pytest.raises(RnnkitError, match="is a classifier run \\(made by rnnkit classify "
                                          "train\\); use it with rnnkit classify predict; rnnkit "
                                          "forecast predict needs a run made by rnnkit forecast "
                                          "train"):
        rnnkit.load(runs / "classifier", kind="rnnkit-forecaster")
    with pytest.raises(RnnkitError, match="keeps one checkpoint, model.safetensors"):
        rnnkit.load(runs / "forecaster", checkpoint="last.safetensors")
    # the commands go through the same loader, and say the same in one line
    status, _, err = cli("forecast", "predict", runs / "lm", runs / "s.csv")
    assert status == 2 and "is a language-model run (made by rnnkit train)" in one_error_line(err)
    status, _, err = cli("classify", "predict", tmp_path / "missing", runs / "d.npz")
    assert status == 2 and "is not a task run directory (no config.json); train one with: " \
        "rnnkit classify train" in one_error_line(err)


def test_fit_and_the_task_models_are_reachable_from_the_top_level():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    data = {"inputs": x, "targets": (x[:, 0] > 0).long()}
    model = rnnkit.MLP(rnnkit.MLPConfig(2, 2, hidden=8))
    summary = rnnkit.fit(model, data, data, rnnkit.FitConfig(epochs=3, batch_size=16,
                                                             device="cpu"), quiet=True)
    assert len(summary["history"]) == 3
    for name in ("SequenceModel", "SequenceConfig", "Tagger", "TaggerConfig", "Seq2Seq",
                 "Seq2SeqConfig", "ConditionedGenerator", "GeneratorConfig", "DecoderConfig"):
        assert name in rnnkit.__all__ and hasattr(rnnkit, name), name


def test_every_public_name_is_listed_once_and_loads_from_its_module():
    # __init__ names each public object's module (WHERE) and lists them for `import *`
    # (__all__): the two must agree, and each name must load what its module defines.
    import importlib

    assert sorted(rnnkit.__all__) == sorted(rnnkit.WHERE)
    for name, module in rnnkit.WHERE.items():
        assert getattr(rnnkit, name) is getattr(importlib.import_module(f"rnnkit.{module}"), name)
    assert callable(rnnkit.fit) and rnnkit.fit.__module__ == "rnnkit.fitting"


def test_submodules_load_on_first_use_as_attributes():
    # `import rnnkit; rnnkit.text.prepare(...)` works without importing rnnkit.text first (a
    # fresh process, as other tests have imported it here); a misspelt name stays an
    # AttributeError, and a submodule's own failing import is not hidden as one.
    import subprocess
    import sys

    code = ("import rnnkit, sys; assert 'rnnkit.text' not in sys.modules; "
            "assert callable(rnnkit.text.prepare); assert not hasattr(rnnkit, 'nothing'); "
            "assert not hasattr(rnnkit, '_private'); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_loading_a_model_does_not_import_torchs_compiler():
    # The shapes are checked on a meta-device copy before any weight is read; a meta tensor's
    # normal_ (an embedding's initialisation) imported torch._dynamo, over a second of every
    # `rnnkit sample`, `eval` and `serve`. The copy's shapes are still the model's.
    import subprocess
    import sys

    code = ("import sys, rnnkit; from rnnkit import checkpoint; m = rnnkit.load('builtin'); "
            "shapes = checkpoint.shapes_of(lambda: type(m)(m.config, m.vocab)); "
            "assert shapes == {k: tuple(v.shape) for k, v in m.state_dict().items()}; "
            "print('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
