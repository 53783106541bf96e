"""Scale: prepared token files, gradient accumulation, autocast, and two processes under torchrun."""

import json
import shutil
import subprocess

import pytest
import torch
from conftest import PYTHON, TINY, one_error_line, torchrun
from kinds import CLASSIFIER, write_npz
from safetensors.torch import load_file

import rnnkit
from rnnkit import checkpoint


def weights(run):
    return checkpoint.read_safetensors(run / "last.safetensors")[0]


def assert_same_run(a, b, atol):
    wa, wb = weights(a), weights(b)
    for name in wa:
        if name.startswith("model."):
            torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=0)


def test_prepare_then_train_on_the_token_file(cli, corpus, tmp_path):
    status, out, _ = cli("prepare", corpus, "--out", tmp_path / "data")
    assert status == 0 and "prepared 2,700 tokens (char vocabulary of 29)" in out
    run = tmp_path / "run"
    assert cli("train", tmp_path / "data", "--out", run, "--max-steps", 10, *TINY)[0] == 0
    assert not (run / "data").exists()  # read in place, not copied
    status, out, _ = cli("eval", run)
    assert status == 0 and out.strip().splitlines()[-1].startswith("val_loss")
    # A second corpus encoded with the first one's vocabulary
    other = tmp_path / "other.txt"
    other.write_text("the lazy dog\n" * 30)
    status, out, _ = cli("prepare", other, "--out", tmp_path / "data2", "--vocab", run)
    assert status == 0 and "vocabulary of 29" in out
    other.write_text("ZZZ" * 30)
    status, _, err = cli("prepare", other, "--out", tmp_path / "data3", "--vocab", run)
    assert status == 2 and "'Z'" in err and "not in the vocabulary" in err
    # the vocabulary decides the tokenizer: a contradicting --tokenizer is refused, not ignored
    status, _, err = cli("prepare", other, "--out", tmp_path / "d5", "--vocab", run,
                         "--tokenizer", "byte")
    assert status == 2 and "--tokenizer byte differs from the char vocabulary" in one_error_line(err)
    status, _, err = cli("train", tmp_path / "data", "--out", tmp_path / "r2", *TINY,
                         "--tokenizer", "byte")
    assert status == 2 and "--tokenizer byte differs from the char vocabulary" in one_error_line(err)
    status, _, err = cli("eval", run, "--batch-size", "-1")
    assert status == 2 and "--batch-size must be at least 1, got -1" in one_error_line(err)
    assert cli("prepare", corpus, "--out", tmp_path / "bytes", "--tokenizer", "byte")[0] == 0
    assert cli("train", tmp_path / "bytes", "--out", tmp_path / "r3", *TINY, "--max-steps",
               "2")[0] == 0  # no --tokenizer: the data's, recorded as such
    assert json.loads((tmp_path / "r3" / "config.json").read_text())["train"]["tokenizer"] == \
        "byte"
    # the built-in model's 256 bytes, for a corpus to fine-tune it on
    status, out, err = cli("prepare", other, "--out", tmp_path / "data4", "--vocab", "builtin")
    assert status == 0 and "byte vocabulary of 256" in out, err


def test_accumulation_equals_the_whole_batch(cli, corpus, tmp_path):
    base = [corpus, "--max-steps", 12, *TINY, "--batch-size", 8]
    assert cli("train", *base, "--out", tmp_path / "whole")[0] == 0
    assert cli("train", *base, "--out", tmp_path / "micro", "--accumulate", 4)[0] == 0
    assert_same_run(tmp_path / "whole", tmp_path / "micro", atol=1e-5)
    status, _, err = cli("train", *base, "--out", tmp_path / "bad", "--accumulate", 3)
    assert status == 2 and "accumulate (--accumulate) 3 must divide batch_size (--batch-size) 8" \
        in err


def test_bf16_autocast_trains_on_cpu(corpus, tmp_path):
    summary = rnnkit.train([corpus], tmp_path / "run", rnnkit.ModelConfig(hidden=32, layers=1),
                           rnnkit.TrainConfig(seq_len=16, batch_size=4, max_steps=40, eval_every=20,
                                              precision="bf16", sample_length=0), quiet=True)
    first, last = summary["history"][0]["train_loss"], summary["history"][-1]["train_loss"]
    assert last < first < 3.5


def test_two_processes_match_one_with_the_same_global_batch(corpus, tmp_path):
    args = ["train", str(corpus), "--max-steps", "20", *map(str, TINY), "--batch-size", "8",
            "--layers", "2"]
    one = subprocess.run([PYTHON, "-m", "rnnkit", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    def two_processes(*more):
        return torchrun("-m", "rnnkit", *args, "--out", tmp_path / "two", *more,
                        out=tmp_path / "two")

    two = two_processes()
    assert two.returncode == 0, two.stderr[-8000:]
    assert "batch 8 x 16 (2 processes x 4 streams)" in two.stdout
    assert two.stdout.count("done: 20 steps") == 1  # rank 0 alone reports
    # Same global batch, same data, same seed: gradients averaged over ranks equal the
    # single-process gradient up to float rounding.
    assert_same_run(tmp_path / "one", tmp_path / "two", atol=1e-4)
    hist = [checkpoint.read_safetensors(tmp_path / r / "last.safetensors")[1]["progress"]
            for r in ("one", "two")]
    a, b = (json.loads(h)["history"] for h in hist)
    assert [h["step"] for h in a] == [h["step"] for h in b]
    for x, y in zip(a, b, strict=True):
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-4)

    # Resuming under torchrun continues the run (each rank takes its rows of the saved state).
    resumed = two_processes("--resume", "--max-steps", "30")
    assert resumed.returncode == 0, resumed.stderr[-8000:]
    assert "done: 30 steps" in resumed.stdout
    progress = json.loads(checkpoint.read_safetensors(tmp_path / "two" / "last.safetensors")[1]
                          ["progress"])
    assert [h["step"] for h in progress["history"]] == [10, 20, 30]


def test_a_classifier_under_torchrun_matches_one_process_with_the_same_global_batch(tmp_path):
    data = write_npz(tmp_path / "d.npz", n=80)
    # No dropout: the ranks agree; no convolutional branch: its batch norm would take each
    # rank's half-batch statistics, by definition not the whole batch's.
    options = ["--epochs", "3", "--layers", "1", "--batch-size", "8", "--conv", "0"]
    one = subprocess.run(CLASSIFIER.argv(data, tmp_path / "one", *options), capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr

    def two_processes(*more, out="two"):
        return torchrun(*CLASSIFIER.argv(data, tmp_path / out, *options, *more)[1:],
                        out=tmp_path / out)

    two = two_processes()
    assert two.returncode == 0, two.stderr[-8000:]
    assert two.stdout.count("test_accuracy") == 1  # rank 0 alone tests and reports
    # Each process trains on its half of every batch of 8; the gradients, weighted by the rows
    # each half holds, average to the single process's.
    assert_same_run(tmp_path / "one", tmp_path / "two", atol=1e-4)
    a, b = (json.loads(checkpoint.read_safetensors(tmp_path / r / "last.safetensors")[1]
                       ["progress"])["history"] for r in ("one", "two"))
    assert [h["step"] for h in a] == [h["step"] for h in b]
    for x, y in zip(a, b, strict=True):
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-4)

    # Training until the time is up, rank 0's pace decides when to evaluate, for every rank
    # (the others never evaluate, and went on to evaluate after every epoch, out of step with
    # it); a set number of epochs keeps its cadence, budget or not.
    timed = two_processes("--max-time", "8", "--epochs", "0", out="timed")
    assert timed.returncode == 0 and "test_accuracy" in timed.stdout, timed.stderr[-8000:]

    resumed = two_processes("--resume", "--epochs", "4")
    assert resumed.returncode == 0, resumed.stderr[-8000:]
    history = json.loads(checkpoint.read_safetensors(tmp_path / "two" / "last.safetensors")[1]
                         ["progress"])["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]

    # An ensemble's members train one after the other in the one process group.
    ensemble = two_processes("--ensemble", "2", out="ensemble-two")
    assert ensemble.returncode == 0, ensemble.stderr[-8000:]
    one = subprocess.run(CLASSIFIER.argv(data, tmp_path / "ensemble-one", *options, "--ensemble",
                                         "2"), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    a, b = (load_file(tmp_path / r / "model.safetensors") for r in ("ensemble-one",
                                                                   "ensemble-two"))
    assert a.keys() == b.keys() and any(k.startswith("members.1.") for k in a)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=0)


def test_prepared_data_is_never_rewritten_under_a_run(cli, corpus, tmp_path):
    # prepare wrote over any folder, and a run trained on the old data then read the new one:
    # eval gave another loss without a word, or an internal error (ids beyond its vocabulary)
    data, run = tmp_path / "data", tmp_path / "run"
    assert cli("prepare", corpus, "--out", data)[0] == 0
    assert cli("train", data, "--out", run, *TINY, "--max-steps", 3)[0] == 0
    other = tmp_path / "other.txt"
    other.write_text("0123456789 ABCDEFGHIJ " * 50)
    status, _, err = cli("prepare", other, "--out", data)
    assert status == 2 and f"{data} is not empty; prepare into a new or empty folder" in \
        one_error_line(err)
    shutil.rmtree(data)  # prepared again all the same, by hand
    assert cli("prepare", other, "--out", data)[0] == 0
    for args in (("eval", run), ("train", data, "--out", run, *TINY, "--max-steps", 6,
                                 "--resume")):
        status, _, err = cli(*args)
        assert status == 2 and "was prepared again since" in one_error_line(err)
    # prepared again from other text with the same vocabulary: the run read the new text
    same_symbols = tmp_path / "reversed.txt"
    same_symbols.write_text(corpus.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    shutil.rmtree(data)
    assert cli("prepare", same_symbols, "--out", data, "--vocab", run)[0] == 0
    for args in (("eval", run), ("train", data, "--out", run, *TINY, "--max-steps", 6,
                                 "--resume")):
        status, _, err = cli(*args)
        assert status == 2 and "prepared again since" in one_error_line(err) and \
            "holds other text now" in err
    # the run's own text prepared again, touched since: the same tokens, so the same data
    shutil.rmtree(data)
    corpus.touch()
    assert cli("prepare", corpus, "--out", data, "--vocab", run)[0] == 0
    assert cli("eval", run)[0] == 0
