"""Faults injected for real: SIGKILL at random moments and during checkpoint writes, SIGTERM,
a second training into the same directory, a file-size limit that makes writes fail, NaN."""

import importlib
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY, one_error_line
from kinds import CLASSIFIER, KINDS, LM

import rnnkit
from rnnkit import checkpoint

# A run per kind long enough to be killed many times: (options, kills, of them during a write)
LONG = {"lm": (["--max-steps", "150", "--eval-every", "3", "--layers", "2", "--dropout", "0.1",
                "--sample-length", "20"], 7, 3),
        "classifier": (["--epochs", "30", "--layers", "2", "--dropout", "0.1"], 6, 3)}
both = pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS)


@pytest.fixture
def data(kind, tmp_path):
    return kind.write_data(tmp_path)


def final_weights(run):
    tensors, meta = checkpoint.read_safetensors(run / "last.safetensors")
    return tensors, json.loads(meta["progress"])


def without_times(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def assert_loadable(run):
    """Whatever moment the process died at, the directory holds a complete checkpoint."""
    if not (run / "config.json").exists():
        return False  # killed before the run started writing: nothing to lose
    if (run / "last.safetensors").exists():
        checkpoint.read_safetensors(run / "last.safetensors")
    if (run / "model.safetensors").exists():
        rnnkit.load(run)
    return (run / "last.safetensors").exists()


@both
def test_sigkill_at_random_moments_loses_nothing_and_resume_is_exact(kind, data, tmp_path):
    options, want_kills, want_during_write = LONG[kind.name]
    straight = tmp_path / "straight"
    subprocess.run(kind.argv(data, straight, *options), check=True, capture_output=True,
                   timeout=300)

    run, rng = tmp_path / "killed", random.Random(0)
    kills = during_write = 0
    while kills < want_kills:
        proc = subprocess.Popen(kind.argv(data, run, *options, "--resume"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    done = subprocess.run(kind.argv(data, run, *options, "--resume"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]
    assert kills >= want_kills - 4 and during_write >= want_during_write, (kills, during_write)
    a, progress_a = final_weights(straight)
    b, progress_b = final_weights(run)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert without_times(progress_a["history"]) == without_times(progress_b["history"])
    # The metrics log holds every step once, as in the run that was never killed.
    assert (run / "metrics.csv").read_text() == (straight / "metrics.csv").read_text()
    assert not list(run.glob(".*.tmp")) and not list(run.glob("*.tmp"))


@both
def test_sigterm_saves_and_says_how_to_resume(kind, data, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(kind.argv(data, run, *kind.endless),
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


@both
def test_second_training_into_the_same_directory_is_refused_until_the_first_dies(kind, data,
                                                                                 tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(kind.argv(data, run, *kind.endless),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.safetensors").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = subprocess.run(kind.argv(data, run, "--resume"), capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2
        line = one_error_line(second.stderr)
        assert f"another training (pid {first.pid}) is writing to" in line
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The lock of a dead process is stale: the next training takes it over.
    third = subprocess.run(kind.argv(data, run, "--resume", kind.length, "2"),
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-1000:]


def limit_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@both
@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX resource limits")
def test_disk_full_is_a_clear_error_and_the_previous_checkpoint_survives(kind, data, tmp_path):
    run = tmp_path / "run"
    short, longer = ("6", "12") if kind is LM else ("1", "3")
    subprocess.run(kind.argv(data, run, kind.length, short), check=True, capture_output=True,
                   timeout=300)
    before = {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()}
    size = (run / "last.safetensors").stat().st_size
    full = subprocess.run(kind.argv(data, run, "--resume", kind.length, longer),
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size(size // 2))
    assert full.returncode == 2
    line = one_error_line(full.stderr)
    assert "could not write" in line and "free disk space" in line
    # The write that failed left its file as it was; the smaller best-model file may have been
    # replaced by a newer complete one before the limit hit, and must load either way.
    for name in ("last.safetensors", "config.json", "vocab.json"):
        if name in before:
            assert (run / name).read_bytes() == before[name], name
    assert not list(run.glob(".*.tmp"))
    rnnkit.load(run)
    assert "the previous checkpoint is intact" in line
    # a new run's first checkpoint has no previous one to keep: it said "intact" all the same
    new = subprocess.run(kind.argv(data, tmp_path / "new", kind.length, short),
                         capture_output=True, text=True, timeout=300,
                         preexec_fn=limit_file_size(size // 2))
    line = one_error_line(new.stderr)
    assert new.returncode == 2 and "it was the first of its kind, so none was lost" in line


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


def test_weights_that_explode_before_an_evaluation_are_never_kept(cli, corpus, tmp_path):
    # The step before an evaluation is checked by its loss, which its own update comes after:
    # weights it blew up (validation 16.3, above the explosion limit) were kept as the best and
    # last checkpoint, and every rollback came back to them and exploded again.
    run = tmp_path / "run"
    status, out, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", 12,
                           "--eval-every", 1, "--lr", "50", "--warmup", "12", "--grad-clip", "0",
                           "--on-nan", "rollback")
    assert status == 2 and "*best" not in out, out
    assert "validation loss exploded to" in one_error_line(err), err
    assert not (run / "model.safetensors").exists() and not (run / "last.safetensors").exists()


def test_a_bf16_run_resumes_in_fp32(cli, corpus, tmp_path):
    # the state carried between batches was saved as bf16, and an fp32 LSTM could not read it
    # ("internal error: could not create a primitive descriptor")
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", 4, "--eval-every", 2,
               "--precision", "bf16")[0] == 0
    status, out, err = cli("train", corpus, "--out", run, "--resume", "--max-steps", 6,
                           "--precision", "fp32")
    assert status == 0, err
    assert final_weights(run)[1]["step"] == 6


def pickle_bomb(marker):
    class Bomb:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    import pickle
    return pickle.dumps(Bomb())


PICKLE_TARGETS = [(LM, t) for t in ("model.safetensors", "last.safetensors", "config.json",
                                      "vocab.json", "data/data.json", "data/tokens.bin")] + [
    (CLASSIFIER, t) for t in ("model.safetensors", "last.safetensors", "config.json")]


@pytest.mark.parametrize("kind, target", PICKLE_TARGETS,
                         ids=[f"{k.name}-{t}" for k, t in PICKLE_TARGETS])
def test_pickle_payload_is_refused_without_running(cli, data, tmp_path, kind, target):
    run = tmp_path / "run"
    assert cli(*kind.args(data, run, kind.length, 3 if kind is LM else 1))[0] == 0
    marker = tmp_path / "PWNED"
    (run / target).write_bytes(pickle_bomb(marker))
    using = [["sample", run], ["eval", run]] if kind is LM else [["classify", "predict", run,
                                                                   data]]
    for command in (*using, kind.args(data, run, kind.length, 6 if kind is LM else 2,
                                      "--resume")):
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


DAMAGE = [
    ("moment_shape", "optim.0.exp_avg has shape (3,), this run needs"),
    ("state_shape", "state.h has shape (1, 2, 32), this run needs (1, 4, 32)"),
    ("odd_name", "unexpected ['optim.x.exp_avg']"),
    ("missing_moment", "missing ['optim.1.exp_avg_sq']"),
    ("gru_state", "its carried state ['state.h'] does not fit this lstm model"),
    ("nan_weights", "holds NaN or infinite values"),
    ("nan_moment", "optim.2.exp_avg_sq holds NaN or infinite values"),
    ("optimizer", "the optimizer is 'SGD', not AdamW"),
    ("lr", "the optimizer's lr is 'fast', not a finite number"),
    # these two were internal errors (a ValueError unpacking betas, a KeyError for amsgrad)
    ("betas", "the optimizer's betas is [0.9], not 2 finite numbers"),
    ("amsgrad", "the optimizer's amsgrad is True, where this run's is False"),
    ("groups", "its optimizer groups do not match this run's"),
    ("progress", "progress.step is -5, below 0"),
]
# A classifier carries no state between batches: the rest of the damage applies to it alike.
DAMAGED = [(LM, *d) for d in DAMAGE] + [(CLASSIFIER, *d) for d in DAMAGE
                                        if d[0] not in ("state_shape", "gru_state")]


def first_matrix(tensors):
    return next(k for k, t in tensors.items() if k.startswith("model.") and t.dim() == 2)


@pytest.mark.parametrize("kind, damage, message", DAMAGED,
                         ids=[f"{k.name}-{d}" for k, d, _ in DAMAGED])
def test_damaged_trainer_state_is_refused_before_anything_changes(cli, data, tmp_path, kind,
                                                                  damage, message):
    run = tmp_path / "run"
    assert cli(*kind.args(data, run, kind.length, 10 if kind is LM else 2))[0] == 0
    changes = {
        "moment_shape": lambda t, m: set_item(t, "optim.0.exp_avg", torch.zeros(3)),
        "state_shape": lambda t, m: set_item(t, "state.h", t["state.h"][:, :2].clone()),
        "odd_name": lambda t, m: set_item(t, "optim.x.exp_avg", t.pop("optim.0.exp_avg")),
        "missing_moment": lambda t, m: t.pop("optim.1.exp_avg_sq"),
        "gru_state": lambda t, m: t.pop("state.c"),
        "nan_weights": lambda t, m: t[first_matrix(t)].fill_(float("nan")),
        "nan_moment": lambda t, m: t["optim.2.exp_avg_sq"].fill_(float("nan")),
        "optimizer": lambda t, m: set_item(m, "optimizer", "SGD"),
        "lr": lambda t, m: set_item(m, "param_groups", json.dumps(
            [{**g, "lr": "fast"} for g in json.loads(m["param_groups"])])),
        "betas": lambda t, m: set_item(m, "param_groups", json.dumps(
            [{**g, "betas": [0.9]} for g in json.loads(m["param_groups"])])),
        "amsgrad": lambda t, m: set_item(m, "param_groups", json.dumps(
            [{**g, "amsgrad": True} for g in json.loads(m["param_groups"])])),
        "groups": lambda t, m: set_item(m, "param_groups", json.dumps(
            json.loads(m["param_groups"])[:1] * 2)),
        "progress": lambda t, m: set_item(m, "progress", re.sub(
            r'"step": \d+', '"step": -5', m["progress"], count=1)),
    }
    rewrite_last(run, changes[damage])
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    status, _, err = cli(*kind.args(data, run, kind.length, 20 if kind is LM else 4, "--resume"))
    line = one_error_line(err)
    assert status == 2 and "last.safetensors" in line and message in line, line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


# Each kind trained to its first checkpoint, then resumed: (length, resumed length, the step of
# the first evaluation after resuming, the checkpoint's step, the evaluations in the end)
NAN_RUNS = {"lm": (10, 30, 20, 10, [10, 20, 30]), "classifier": (2, 4, 18, 12, [6, 12, 18, 24])}


@both
@pytest.mark.parametrize("on_nan", ["stop", "rollback"])
def test_nan_validation_loss_is_handled_like_a_nan_training_loss(cli, data, tmp_path,
                                                                 monkeypatch, kind, on_nan):
    fitting, training = (importlib.import_module(f"rnnkit.{m}") for m in ("fitting", "training"))

    length, longer, nan_step, saved_step, evaluations = NAN_RUNS[kind.name]
    run = tmp_path / "run"
    assert cli(*kind.args(data, run, kind.length, length))[0] == 0
    before = {name: (run / name).read_bytes() for name in ["model.safetensors",
                                                           "last.safetensors"]}
    module, name = (training, "text_loss") if kind is LM else (fitting, "dataset_loss")
    evaluate, calls = getattr(module, name), []

    def nan_once(*args, **kwargs):  # the first evaluation of the resumed run is NaN
        calls.append(1)
        if len(calls) > 1:
            return evaluate(*args, **kwargs)
        return float("nan") if kind is LM else (float("nan"), None)

    monkeypatch.setattr(module, name, nan_once)
    status, out, err = cli(*kind.args(data, run, "--resume", kind.length, longer,
                                      "--on-nan", on_nan))
    if on_nan == "stop":
        assert status == 2
        line = one_error_line(err)
        assert f"validation loss became nan at step {nan_step}" in line
        assert "last good checkpoint is kept" in line
        assert {name: (run / name).read_bytes() for name in before} == before
    else:
        assert status == 0, err
        assert (f"validation loss became nan at step {nan_step}; rolled back to step "
                f"{saved_step}") in out
        _, progress = final_weights(run)
        assert progress["step"] == evaluations[-1] and progress["rollbacks"] == 1
        assert [h["step"] for h in progress["history"]] == evaluations
        # the schedule of the resumed run's length, not of the checkpoint rolled back to
        assert progress["plan"] == evaluations[-1]


@both
@pytest.mark.parametrize("on_nan", ["stop", "rollback"])
def test_nan_training_loss_stops_or_rolls_back(cli, data, tmp_path, monkeypatch, kind, on_nan):
    fitting, training = (importlib.import_module(f"rnnkit.{m}") for m in ("fitting", "training"))

    length, longer, _, saved_step, evaluations = NAN_RUNS[kind.name]
    run = tmp_path / "run"
    assert cli(*kind.args(data, run, kind.length, length))[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    feeder = training.StreamFeeder if kind is LM else fitting.EpochFeeder
    forward, calls = feeder.forward, []

    def nan_once(self, net, micro):  # the first step of the resumed run
        loss, terms = forward(self, net, micro)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 1 else loss), terms

    monkeypatch.setattr(feeder, "forward", nan_once)
    status, out, err = cli(*kind.args(data, run, "--resume", kind.length, longer,
                                      "--on-nan", on_nan))
    if on_nan == "stop":
        assert status == 2
        line = one_error_line(err)
        # the first step after the checkpoint, numbered as metrics.csv numbers it (it said
        # the checkpoint's own step)
        assert f"training loss exploded to nan at step {saved_step + 1}; stopped" in line
        before.pop("train.lock", None)
        after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        after.pop("train.lock", None)
        assert after == before  # nothing written after the step that diverged
    else:
        assert status == 0, err
        assert f"rolled back to step {saved_step}" in out
        _, progress = final_weights(run)
        assert progress["step"] == evaluations[-1] and progress["rollbacks"] == 1


def test_a_run_without_its_first_checkpoint_yet_says_a_training_is_writing_it(tmp_path):
    run = tmp_path / "run"
    status = subprocess.run(LM.argv(LM.write_data(tmp_path), run, "--max-steps", "2"),
                            capture_output=True, timeout=300).returncode
    assert status == 0
    for name in ("model.safetensors", "last.safetensors"):  # as before a first evaluation
        (run / name).unlink()
    held = r"model.safetensors is not written yet: a training \(pid " + str(os.getpid())
    with checkpoint.RunLock(run), pytest.raises(rnnkit.RnnkitError, match=held):  # as by it
        rnnkit.load(run)
    with pytest.raises(rnnkit.RnnkitError, match="is missing: the run stopped before its first "
                       "checkpoint; train it on with the same command plus --resume"):
        rnnkit.load(run)
