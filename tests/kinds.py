"""The kinds of training run that the fault and resume tests put through the same trials: a
character language model (`rnnkit train`) and a sequence classifier (`rnnkit classify train`).
One engine trains both, so each trial must end the same way for each."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from conftest import PANGRAM, PYTHON, TINY


@dataclass(frozen=True)
class Kind:
    name: str
    command: tuple  # the words before DATA
    options: tuple  # a tiny model and schedule
    length: str  # the option that says how long the run is: --max-steps, --epochs
    endless: tuple  # a run that goes on for many seconds, but checkpoints within the first

    def args(self, data, run, *extra) -> list[str]:
        """The command line after `rnnkit`, as strings."""
        return [*self.command, str(data), "--out", str(run), *map(str, self.options),
                *map(str, extra)]

    def argv(self, data, run, *extra) -> list[str]:
        """The same as a process: python -m rnnkit ..."""
        return [PYTHON, "-m", "rnnkit", *self.args(data, run, *extra)]

    def write_data(self, folder: Path) -> Path:
        if self.name == "lm":
            path = folder / "corpus.txt"
            path.write_text(PANGRAM * 60, encoding="utf-8")
            return path
        return write_npz(folder / "d.npz")


def write_npz(path: Path, n: int = 60, seed: int = 0) -> Path:
    """Two classes of variable-length sequences (the sign of their mean), as an .npz."""
    rng = np.random.default_rng(seed)
    T = 10
    lengths = rng.integers(2, T + 1, n)
    y = np.arange(n) % 2
    x = rng.normal(0, 1, (n, T, 2)).astype(np.float32) + np.where(y, 1.0, -1.0)[:, None, None]
    x *= (np.arange(T)[None, :] < lengths[:, None])[..., None]
    np.savez(path, x=x, lengths=lengths, y=y)
    return path


LM = Kind("lm", ("train",), tuple(TINY), "--max-steps", ("--max-steps", "100000"))
# 60 examples: 12 held out for the test, 5 for validation, 43 to train on: 6 steps an epoch,
# each epoch ending in an evaluation and a checkpoint.
CLASSIFIER = Kind("classifier", ("classify", "train"),
                  ("--hidden", "16", "--batch-size", "8", "--device", "cpu", "--warmup", "5",
                   "--val-fraction", "0.1"), "--epochs",
                  # 1000 epochs evaluate every 10 (`fitting.MAX_EVALS`): 60 steps to the first
                  # checkpoint; 100000 would take 6000
                  ("--epochs", "1000"))
KINDS = {"lm": LM, "classifier": CLASSIFIER}
