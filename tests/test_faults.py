"""Faults injected for real: SIGKILL at random moments and during checkpoint writes, SIGTERM,
a second training into the same directory, a file-size limit that makes writes fail, NaN."""

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import PYTHON, TINY, one_error_line

import rnnkit
from rnnkit import checkpoint

ARGS = ["--max-steps", "60", *map(str, TINY), "--eval-every", "3", "--layers", "2",
        "--dropout", "0.1", "--sample-length", "20"]


def train_cmd(corpus, run, *extra):
    return [PYTHON, "-m", "rnnkit", "train", str(corpus), "--out", str(run), *ARGS, *extra]


def final_weights(run):
    tensors, meta = checkpoint.read_safetensors(run / "last.safetensors")
    return tensors, json.loads(meta["progress"])


def assert_loadable(run):
    """Whatever moment the process died at, the directory holds a complete checkpoint."""
    if not (run / "config.json").exists():
        return False  # killed before the run started writing: nothing to lose
    if (run / "last.safetensors").exists():
        checkpoint.read_safetensors(run / "last.safetensors")
    if (run / "model.safetensors").exists():
        rnnkit.load(run)
    return (run / "last.safetensors").exists()


def test_sigkill_at_random_moments_loses_nothing_and_resume_is_exact(corpus, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(train_cmd(corpus, straight), check=True, capture_output=True, timeout=300)

    run, rng = tmp_path / "killed", random.Random(0)
    kills = during_write = 0
    while kills < 24:
        proc = subprocess.Popen(train_cmd(corpus, run, "--resume"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if kills % 2:  # every other kill lands while a checkpoint is being written
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if any(run.glob(".*.tmp")):
                    during_write += 1
                    break
        else:
            time.sleep(rng.uniform(0.5, 4.0))
        if proc.poll() is not None:  # it finished before the kill: start over to kill again
            assert proc.returncode == 0
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert_loadable(run)
    done = subprocess.run(train_cmd(corpus, run, "--resume"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]
    assert kills >= 20 and during_write >= 5, (kills, during_write)
    a, progress_a = final_weights(straight)
    b, progress_b = final_weights(run)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert progress_a["history"] == progress_b["history"]
    # The metrics log holds every step once, as in the run that was never killed.
    assert (run / "metrics.csv").read_text() == (straight / "metrics.csv").read_text()
    assert not list(run.glob(".*.tmp")) and not list(run.glob("*.tmp"))


def test_sigterm_saves_and_says_how_to_resume(corpus, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(corpus, run, "--max-steps", "100000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "last.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "SIGTERM received; stopped at step" in out and "--resume" in out
    step = int(out.split("stopped at step ")[1].split()[0])
    _, progress = final_weights(run)
    assert progress["step"] == step  # the checkpoint is exactly where it stopped


def test_second_training_into_the_same_directory_is_refused_until_the_first_dies(corpus,
                                                                                 tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(train_cmd(corpus, run, "--max-steps", "100000"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.safetensors").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = subprocess.run(train_cmd(corpus, run, "--resume"), capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2
        line = one_error_line(second.stderr)
        assert f"another training (pid {first.pid}) is writing to" in line
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The lock of a dead process is stale: the next training takes it over.
    third = subprocess.run(train_cmd(corpus, run, "--resume", "--max-steps", "12"),
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-1000:]


def limit_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX resource limits")
def test_disk_full_is_a_clear_error_and_the_previous_checkpoint_survives(corpus, tmp_path):
    run = tmp_path / "run"
    subprocess.run(train_cmd(corpus, run, "--max-steps", "6"), check=True, capture_output=True,
                   timeout=300)
    before = {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()}
    size = (run / "last.safetensors").stat().st_size
    full = subprocess.run(train_cmd(corpus, run, "--resume", "--max-steps", "12"),
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size(size // 2))
    assert full.returncode == 2
    line = one_error_line(full.stderr)
    assert "could not write" in line and "free disk space" in line
    # The write that failed left its file as it was; the smaller best-model file may have been
    # replaced by a newer complete one before the limit hit, and must load either way.
    for name in ("last.safetensors", "config.json", "vocab.json"):
        assert (run / name).read_bytes() == before[name], name
    assert not list(run.glob(".*.tmp"))
    rnnkit.load(run)


def test_unwritable_output_directory(cli, corpus, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    status, _, err = cli("train", corpus, "--out", blocker / "run", *TINY, "--max-steps", 3)
    assert status == 2 and "cannot write to" in one_error_line(err)


def test_nan_rollback_lowers_the_learning_rate_and_continues(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", 10)[0] == 0
    status, out, err = cli("train", corpus, "--out", run, *TINY, "--resume", "--max-steps", 40,
                           "--lr", "1e4", "--on-nan", "rollback")
    # 1e4 diverges at every scale it can reach with three halvings: the run stops, says so,
    # and keeps its last good checkpoint.
    assert status == 2
    assert out.count("rolled back to step 10") == 3
    assert "after 3 rollbacks" in one_error_line(err)
    rnnkit.load(run).generate("the", 5, seed=0)
    # A spike that one halving cures: the run goes on to the end.
    status, out, _ = cli("train", corpus, "--out", run, *TINY, "--resume", "--max-steps", 30,
                         "--lr", "0.05", "--on-nan", "rollback")
    assert status == 0
    _, progress = final_weights(run)
    assert progress["step"] == 30


def pickle_bomb(marker):
    class Bomb:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    import pickle
    return pickle.dumps(Bomb())


@pytest.mark.parametrize("target", ["model.safetensors", "last.safetensors", "config.json",
                                    "vocab.json", "data/data.json", "data/tokens.bin"])
def test_pickle_payload_is_refused_without_running(cli, corpus, tmp_path, target):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", 3)[0] == 0
    marker = tmp_path / "PWNED"
    (run / target).write_bytes(pickle_bomb(marker))
    for command in (["sample", run], ["eval", run],
                    ["train", corpus, "--out", run, *TINY, "--max-steps", 6, "--resume"]):
        status, _, err = cli(*command)
        if status != 0:
            assert status == 2
            one_error_line(err)
    assert not marker.exists()


def rewrite_last(run, change):
    """last.safetensors with `change(tensors, metadata)` applied, written back whole."""
    from safetensors.torch import save_file

    tensors, meta = checkpoint.read_safetensors(run / "last.safetensors")
    change(tensors, meta)
    save_file(tensors, str(run / "last.safetensors"), metadata=meta)


def set_item(mapping, key, value):
    mapping[key] = value


@pytest.mark.parametrize("damage, message", [
    ("moment_shape", "optim.0.exp_avg has shape (3,), this run needs"),
    ("state_shape", "state.h has shape (1, 2, 32), this run needs (1, 4, 32)"),
    ("odd_name", "unexpected ['optim.x.exp_avg']"),
    ("missing_moment", "missing ['optim.1.exp_avg_sq']"),
    ("gru_state", "its carried state ['state.h'] does not fit this lstm model"),
    ("nan_weights", "holds NaN or infinite values"),
    ("nan_moment", "optim.2.exp_avg_sq holds NaN or infinite values"),
    ("optimizer", "the optimizer is 'SGD', not AdamW"),
    ("lr", "the optimizer's lr is 'fast', not a finite number"),
    ("groups", "its optimizer groups do not match this run's"),
    ("progress", "progress.step is -5, below 0"),
])
def test_damaged_trainer_state_is_refused_before_anything_changes(cli, corpus, tmp_path, damage,
                                                                  message):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", 10)[0] == 0
    changes = {
        "moment_shape": lambda t, m: set_item(t, "optim.0.exp_avg", torch.zeros(3)),
        "state_shape": lambda t, m: set_item(t, "state.h", t["state.h"][:, :2].clone()),
        "odd_name": lambda t, m: set_item(t, "optim.x.exp_avg", t.pop("optim.0.exp_avg")),
        "missing_moment": lambda t, m: t.pop("optim.1.exp_avg_sq"),
        "gru_state": lambda t, m: t.pop("state.c"),
        "nan_weights": lambda t, m: t["model.head.weight"].fill_(float("nan")),
        "nan_moment": lambda t, m: t["optim.2.exp_avg_sq"].fill_(float("nan")),
        "optimizer": lambda t, m: set_item(m, "optimizer", "SGD"),
        "lr": lambda t, m: set_item(m, "param_groups", json.dumps(
            [{**g, "lr": "fast"} for g in json.loads(m["param_groups"])])),
        "groups": lambda t, m: set_item(m, "param_groups", json.dumps(
            json.loads(m["param_groups"])[:1] * 2)),
        "progress": lambda t, m: set_item(m, "progress", m["progress"].replace(
            '"step": 10', '"step": -5')),
    }
    rewrite_last(run, changes[damage])
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    status, _, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", 20, "--resume")
    line = one_error_line(err)
    assert status == 2 and "last.safetensors" in line and message in line, line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("on_nan", ["stop", "rollback"])
def test_nan_validation_loss_is_handled_like_a_nan_training_loss(cli, corpus, tmp_path,
                                                                 monkeypatch, on_nan):
    from rnnkit import training

    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", 10)[0] == 0
    before = {name: (run / name).read_bytes() for name in ["model.safetensors",
                                                           "last.safetensors"]}
    evaluate, calls = training.evaluate, []

    def nan_once(*args, **kwargs):  # the first evaluation of the resumed run (step 20) is NaN
        calls.append(1)
        return float("nan") if len(calls) == 1 else evaluate(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", nan_once)
    status, out, err = cli("train", corpus, "--out", run, *TINY, "--resume", "--max-steps", 30,
                           "--on-nan", on_nan)
    if on_nan == "stop":
        assert status == 2
        line = one_error_line(err)
        assert "validation loss became nan at step 20" in line
        assert "last good checkpoint is kept" in line
        assert {name: (run / name).read_bytes() for name in before} == before
    else:
        assert status == 0, err
        assert "validation loss became nan at step 20; rolled back to step 10" in out
        _, progress = final_weights(run)
        assert progress["step"] == 30 and progress["rollbacks"] == 1
        assert [h["step"] for h in progress["history"]] == [10, 20, 30]
