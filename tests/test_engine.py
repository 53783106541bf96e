"""The training engine's own pieces: configs without torch, one weight-decay grouping, the step
checked one step late (the GPU is never waited for at each step), and minibatches that share out
over processes."""

import subprocess
from pathlib import Path

import pytest
import torch
from conftest import PYTHON

import rnnkit
from rnnkit import engine
from rnnkit.configs import FitConfig, RunConfig, TrainConfig
from rnnkit.devices import flushing
from rnnkit.fitting import batches, fit, step_seconds
from rnnkit.tasks import SequenceConfig, SequenceModel

SRC = Path(rnnkit.__file__).parent


def test_configs_import_without_torch():
    # torch made unimportable, and the package's own __init__ (which imports the models)
    # skipped: configs.py and what it imports must not need torch.
    code = ("import sys, types; sys.modules['torch'] = None; "
            f"pkg = types.ModuleType('rnnkit'); pkg.__path__ = [{str(SRC)!r}]; "
            "sys.modules['rnnkit'] = pkg; "
            "from rnnkit.configs import ModelConfig, TrainConfig, FitConfig, POOLS, CELL_TYPES; "
            "print(TrainConfig().lr, FitConfig().epochs, ModelConfig().hidden, POOLS, CELL_TYPES)")
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:3] == ["0.003", "30", "384"]


def test_both_training_configs_share_one_set_of_fields_and_checks():
    shared = set(RunConfig.__dataclass_fields__)
    assert shared < set(TrainConfig.__dataclass_fields__)
    assert shared < set(FitConfig.__dataclass_fields__)
    for cls in (TrainConfig, FitConfig):
        for bad, message in (({"lr_min": 0}, "lr_min must be in (0, 1]"),
                             ({"precision": "fp8"}, "unknown precision 'fp8'"),
                             ({"on_nan": "retry"}, "unknown on_nan (--on-nan) 'retry'"),
                             ({"seed": -1}, "--seed must be a whole number from 0")):
            try:
                cls(**bad)
            except rnnkit.RnnkitError as e:
                assert message in str(e)
            else:
                raise AssertionError(f"{cls.__name__}({bad}) was accepted")


def test_weight_decay_on_matrices_only_for_every_model():
    lm = rnnkit.CharLM(rnnkit.ModelConfig(vocab_size=7, hidden=8, layers=1))
    task = SequenceModel(SequenceConfig(3, 2, hidden=8))
    for model in (lm, task):
        decay, rest = engine.make_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
        names = {id(p): n for n, p in model.named_parameters()}
        assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
        assert all(p.dim() == 2 and "embed" not in names[id(p)] for p in decay["params"])
        assert all(p.dim() < 2 or "embed" in names[id(p)] for p in rest["params"])
    assert any("embed" in n for n, p in lm.named_parameters())


def test_each_step_is_checked_after_the_next_one_is_queued(corpus, tmp_path, monkeypatch):
    """Reading a loss waits for the device: the loop reads step i's only once step i+1 is
    queued, except before an evaluation or at the end, where nothing may wait."""
    checked, check = [], engine.check

    def spy(pending, feeder, progress, *args):
        checked.append((pending.step, progress.step))
        return check(pending, feeder, progress, *args)

    monkeypatch.setattr(engine, "check", spy)
    # one file given as itself, not in a list (it was read as its characters: "'/' is a folder")
    rnnkit.train(str(corpus), tmp_path / "run", rnnkit.ModelConfig(hidden=16, layers=1),
                 rnnkit.TrainConfig(seq_len=16, batch_size=4, max_steps=12, eval_every=5,
                                    sample_length=0, device="cpu"), quiet=True)
    assert [step for step, _ in checked] == list(range(12))  # each step once, in order
    queued = {step: done - step for step, done in checked}  # steps queued when it was read
    assert all(queued[i] == 2 for i in range(12) if i + 1 not in (5, 10, 12)), queued
    assert all(queued[i] == 1 for i in (4, 9, 11)), queued


def test_a_last_batch_too_small_to_share_joins_the_one_before():
    data = {"inputs": torch.zeros(17, 3, 1), "lengths": torch.full((17,), 3)}
    for bucket in (False, True):
        one = batches(data, 8, torch.Generator().manual_seed(0), bucket)
        two = batches(data, 8, torch.Generator().manual_seed(0), bucket, processes=2)
        assert sorted(map(len, one)) == [1, 8, 8] and sorted(map(len, two)) == [8, 9]
        assert sorted(torch.cat(two).tolist()) == list(range(17))


def test_a_task_batch_smaller_than_the_processes_is_refused():
    # under torchrun, a process left without rows would never join DDP's gradient reduction
    from rnnkit.distributed import World
    from rnnkit.fitting import EpochFeeder

    with pytest.raises(rnnkit.RnnkitError, match="--batch-size 2 is smaller than the 4 processes"):
        EpochFeeder(None, {}, None, FitConfig(batch_size=2), None, World(rank=1, size=4),
                    torch.device("cpu"), 0)


def test_the_progress_bar_shows_the_log_lines_figures():
    # the bar on a terminal: loss, lr, characters/s and, with a budget, the budget's time left
    # (its own estimate counts toward the plan's last step, not the budget)
    import io
    import time

    from tqdm import tqdm

    log = engine.Log(True, 100, "chars", print)
    log.bar = tqdm(total=100, file=io.StringIO(), disable=False, unit="step", mininterval=0)
    clock = engine.Clock(time.monotonic(), 0, 100, max_time=60.0)
    time.sleep(0.01)
    log.step({"step": 5, "train_loss": 2.5, "lr": 1e-3}, clock, 4096)
    shown = log.bar.fp.getvalue().split("\r")[-1]
    assert "loss=2.500" in shown and "lr=1.0e-03" in shown and "chars/s=" in shown
    assert "left=59s" in shown or "left=1m00s" in shown, shown


class Recording(SequenceModel):
    """A model that notes, at every forward pass, whether denormals are read as 0."""

    seen: list

    def forward(self, *args, **kwargs):
        self.seen.append(flushing())
        return super().forward(*args, **kwargs)


def test_training_flushes_denormals_and_leaves_them_as_they_were():
    # Gradients fading over long sequences into denormals made an LSTM's backward pass 8 times
    # slower on an Intel Xeon; training reads them as 0, and then gives them their meaning back
    # (a temperature of 5e-324 is not 0 to the caller's code).
    x, y = torch.randn(12, 5, 3), torch.randint(0, 2, (12,))
    for before in (False, True):
        torch.set_flush_denormal(before)
        model = Recording(SequenceConfig(3, 2, hidden=8))
        model.seen = []
        fit(model, {"inputs": x, "targets": y}, None, FitConfig(epochs=2, batch_size=4))
        assert model.seen and all(model.seen) and flushing() == before
        assert (5e-324 > 0) != before
        model.seen = []
        step_seconds(model, {"inputs": x, "targets": y}, FitConfig(batch_size=4), 2)
        assert model.seen and all(model.seen) and flushing() == before
    torch.set_flush_denormal(False)


def test_flushed_denormals_leave_numpy_without_a_warning(corpus, tmp_path):
    # numpy measures its float limits once; measured with denormals read as 0 it warns that the
    # smallest denormal is 0, as matplotlib imported numpy.ma to draw loss.png.
    done = subprocess.run([PYTHON, "-W", "error::UserWarning", "-m", "rnnkit", "train", corpus,
                           "--out", tmp_path / "run", "--hidden", "8", "--max-steps", "2",
                           "--sample-length", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
