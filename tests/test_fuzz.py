"""Hostile input: arbitrary corpora and primes either work or fail with the one-line error;
huge requests are refused or streamed in bounded memory."""

import json
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import PYTHON, TINY, one_error_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit.cli import main

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_cli(capsys, *args):
    status = main([str(a) for a in args])
    return status, *capsys.readouterr()


def check_outcome(status, err):
    """Success, or exit 2 with exactly one error line: never a traceback, never status 1."""
    assert status in (0, 2), err
    if status == 2:
        one_error_line(err)


@FUZZ
@given(data=st.binary(min_size=0, max_size=400), tokenizer=st.sampled_from(["char", "byte"]))
def test_arbitrary_bytes_as_corpus(capsys, data, tokenizer):
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.write_bytes(data)
        status, _, err = run_cli(capsys, "train", corpus, "--out", Path(tmp) / "run",
                                 "--tokenizer", tokenizer, "--max-steps", 2, *TINY,
                                 "--seq-len", 4, "--val-fraction", 0.2)
        check_outcome(status, err)
        if tokenizer == "byte" and len(data) >= 30:
            assert status == 0, err  # any long enough file trains as bytes


@FUZZ
@given(text=st.text(min_size=0, max_size=300))
def test_arbitrary_unicode_as_corpus(capsys, text):
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(text, encoding="utf-8", errors="surrogatepass")
        status, _, err = run_cli(capsys, "train", corpus, "--out", Path(tmp) / "run",
                                 "--max-steps", 2, *TINY, "--seq-len", 4, "--val-fraction", 0.2)
        check_outcome(status, err)


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    corpus = tmp / "c.txt"
    corpus.write_text("hello world, the fuzz is here.\n" * 20)
    rnnkit.train([corpus], tmp / "run", rnnkit.ModelConfig(hidden=16, layers=1),
                 rnnkit.TrainConfig(seq_len=8, batch_size=2, max_steps=2, eval_every=2,
                                    sample_length=0), quiet=True)
    return rnnkit.load(tmp / "run")


@FUZZ
@given(prime=st.text(max_size=200), temperature=st.floats(0.05, 5), top_k=st.none() | st.integers(1, 100))
def test_arbitrary_prime_text(trained_model, prime, temperature, top_k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rnnkit.RnnkitWarning)  # unknown characters: skipped
        text = trained_model.generate(prime=prime, length=10, temperature=temperature,
                                      top_k=top_k, seed=0)
    assert text.startswith(prime) and len(text) == len(prime) + 10


def test_huge_length_streams_in_bounded_memory(tmp_path, corpus):
    assert main(["train", str(corpus), "--out", str(tmp_path / "run"), "--max-steps", "2",
                 *map(str, TINY)]) == 0
    proc = subprocess.Popen([PYTHON, "-m", "rnnkit", "sample", str(tmp_path / "run"),
                             "--length", str(10**9)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    received = len(proc.stdout.read(4096))  # blocks until the model is loaded and streaming
    rss, start = [], time.monotonic()
    while time.monotonic() - start < 4:
        received += len(proc.stdout.read(4096))
        status = Path(f"/proc/{proc.pid}/status")
        if status.exists() and time.monotonic() - start > 1:  # steady state
            rss += [int(line.split()[1]) for line in status.read_text().splitlines()
                    if line.startswith("VmRSS")]
    proc.kill()
    proc.wait()
    proc.stdout.close()
    assert received > 4096  # it streams: text arrives long before the end
    assert rss and max(rss) - min(rss) < 50_000  # kB: memory flat while streaming


def test_huge_prime_and_generate_length_are_refused(cli, tmp_path, corpus, trained_model):
    with pytest.raises(rnnkit.RnnkitError, match="the prime text has 10,485,760 characters"):
        trained_model.generate(prime="a" * (10 << 20), length=1)
    with pytest.raises(rnnkit.RnnkitError, match="use model.stream"):
        trained_model.generate(length=10**9)


@pytest.mark.parametrize("args, message", [
    (["--seq-len", str(10**9)], "shorter than one training sequence"),
    (["--hidden", "60000", "--layers", "60"], "GiB"),
    (["--hidden", str(10**6)], "model sizes must stay below"),
])
def test_absurd_sizes_are_refused_before_allocating(cli, tmp_path, corpus, args, message):
    status, _, err = cli("train", corpus, "--out", tmp_path / "run", "--max-steps", 1, *args)
    assert status == 2 and message in one_error_line(err)


TASK = ["--hidden", "8", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]


@FUZZ
@given(text=st.text(max_size=400))
def test_arbitrary_csv_for_classify_and_forecast(capsys, text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        status, _, err = run_cli(capsys, "classify", "train", path, "--out", Path(tmp) / "c",
                                 *TASK)
        check_outcome(status, err)
        status, _, err = run_cli(capsys, "forecast", "train", path, "--out", Path(tmp) / "f",
                                 "--horizon", 2, "--window", 4, *TASK)
        check_outcome(status, err)


@FUZZ
@given(blobs=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_arbitrary_bytes_as_audio_files(capsys, blobs):
    with tempfile.TemporaryDirectory() as tmp:
        for i, blob in enumerate(blobs):
            folder = Path(tmp) / "audio" / ("yes" if i % 2 else "no")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.wav").write_bytes(blob)
        status, _, err = run_cli(capsys, "classify", "train", Path(tmp) / "audio", "--out",
                                 Path(tmp) / "run", *TASK)
        check_outcome(status, err)
        assert status == 2  # no blob of random bytes is a readable recording of two classes


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory):
    """A trained classifier (.npz data) and forecaster (CSV series), with their inputs."""
    tmp = tmp_path_factory.mktemp("task-runs")
    x = np.random.default_rng(0).normal(size=(20, 6, 2)).astype(np.float32)
    np.savez(tmp / "d.npz", x=x, lengths=np.full(20, 6), y=np.arange(20) % 2)
    (tmp / "s.csv").write_text("y,z\n" + "".join(f"{np.sin(i / 4):.4f},{i % 7}\n"
                                                 for i in range(120)))
    assert main(["classify", "train", str(tmp / "d.npz"), "--out", str(tmp / "classifier"),
                 *map(str, TASK)]) == 0
    assert main(["forecast", "train", str(tmp / "s.csv"), "--out", str(tmp / "forecaster"),
                 "--window", "8", "--horizon", "2", *map(str, TASK)]) == 0
    return tmp


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8)
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
DATA_FIELDS = {"classify": ["source", "labels", "label_pattern", "columns", "id_column",
                            "label_column", "audio"],
               "forecast": ["source", "columns", "window", "horizon", "std"]}


@FUZZ
@given(command=st.sampled_from(["classify", "forecast"]), pick=st.integers(0, 6), value=JSON)
def test_arbitrary_values_in_a_task_runs_data_section(capsys, task_runs, command, pick, value):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(task_runs / ("classifier" if command == "classify" else "forecaster"),
                        run)
        config = json.loads((run / "config.json").read_text())
        fields = DATA_FIELDS[command]
        config["data"][fields[pick % len(fields)]] = value
        (run / "config.json").write_text(json.dumps(config))
        data = task_runs / ("d.npz" if command == "classify" else "s.csv")
        status, _, err = run_cli(capsys, command, "predict", run, data)
        check_outcome(status, err)


NUMBERS = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.integers(-3, 3)
SHAPES = st.lists(st.sampled_from([0, 1, 2, 3, 8, 12]), max_size=4)  # windows are 8 steps
LENGTHS = st.none() | st.lists(st.integers(-1, 5) | st.floats(0, 5), max_size=4)


@FUZZ
@given(shape=SHAPES, fill=NUMBERS, lengths=LENGTHS, as_list=st.booleans())
def test_arbitrary_arrays_given_to_a_loaded_runs_predict(task_runs, shape, fill, lengths,
                                                         as_list):
    """A Classifier or Forecaster answers, or raises the one RnnkitError; never another error."""
    array = np.full(shape, fill, dtype=np.float32)
    inputs = list(array) if as_list and array.ndim else array
    classifier = rnnkit.load(task_runs / "classifier")
    try:
        result = classifier.predict(inputs, lengths)
    except rnnkit.RnnkitError:
        pass
    else:
        assert result.probs.shape == (len(result.names), 2) and len(result.names) >= 1
        np.testing.assert_allclose(result.probs.sum(1), 1.0, rtol=1e-5)
    forecaster = rnnkit.load(task_runs / "forecaster")
    try:
        future = forecaster.predict(array)
    except rnnkit.RnnkitError:
        pass
    else:
        assert future.shape == (2, 2) and np.isfinite(future).all()
