"""rnnkit: recurrent neural networks on PyTorch.

    import rnnkit
    model = rnnkit.load("runs/shakespeare")                 # a trained character language model
    print(model.generate(prime="ROMEO:", length=200, temperature=0.8, seed=1))
    s = model.stepper(); probs = s.step("h"); probs["e"]   # the stateful step API
    rnnkit.load("runs/digits").predict(["a.wav"])           # a classifier: labels, probabilities
    rnnkit.load("runs/load").predict("series.csv")          # a forecaster: the next H steps

    model = rnnkit.SequenceModel(rnnkit.SequenceConfig(input_size=8, output_size=10))
    rnnkit.fit(model, train, val, rnnkit.FitConfig(epochs=10))   # every task model's loop

    rnn = rnnkit.RNN(input_size=4, hidden_size=3, output_size=4)
    y = rnn.step(x)                                         # h = tanh(W_hh h + W_xh x + b_h)
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

# Each public name and the module it lives in. The modules load on first use (PEP 562), so that
# `import rnnkit.cli` and `rnnkit --help` do not load PyTorch.
WHERE = {
    "Cell": "cells", "RnnkitError": "errors", "FitConfig": "configs", "fit": "fitting",
    "CharLM": "lm", "ModelConfig": "configs", "Recurrent": "recurrent", "Classifier": "runs",
    "Forecaster": "runs", "Predictions": "runs", "load": "runs", "Probs": "sample",
    "RnnkitWarning": "errors", "Stepper": "sample", "MLP": "tasks",
    "ConditionedGenerator": "tasks", "DecoderConfig": "tasks", "GeneratorConfig": "tasks",
    "MLPConfig": "tasks", "Seq2Seq": "tasks", "Seq2SeqConfig": "tasks", "SequenceConfig": "tasks",
    "SequenceModel": "tasks", "Tagger": "tasks", "TaggerConfig": "tasks", "Vocab": "text",
    "TrainConfig": "configs", "train": "training", "RNN": "vanilla",
}
__all__ = ["MLP", "RNN", "Cell", "CharLM", "Classifier", "ConditionedGenerator", "DecoderConfig",
           "FitConfig", "Forecaster", "GeneratorConfig", "MLPConfig", "ModelConfig", "Predictions",
           "Probs", "Recurrent", "RnnkitError", "RnnkitWarning", "Seq2Seq", "Seq2SeqConfig",
           "SequenceConfig", "SequenceModel", "Stepper", "Tagger", "TaggerConfig", "TrainConfig",
           "Vocab", "fit", "load", "train"]


def __getattr__(name: str):
    import importlib

    if name not in WHERE:  # a submodule (`rnnkit.text.prepare`), as if imported, or nothing
        if not name.startswith("_"):
            try:
                return importlib.import_module(f".{name}", __name__)
            except ModuleNotFoundError as e:
                if e.name != f"{__name__}.{name}":
                    raise
        raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{WHERE[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(WHERE))


if TYPE_CHECKING:  # what type checkers and editors see
    from .cells import Cell
    from .configs import FitConfig, ModelConfig, TrainConfig
    from .errors import RnnkitError, RnnkitWarning
    from .fitting import fit
    from .lm import CharLM
    from .recurrent import Recurrent
    from .runs import Classifier, Forecaster, Predictions, load
    from .sample import Probs, Stepper
    from .tasks import (
        MLP,
        ConditionedGenerator,
        DecoderConfig,
        GeneratorConfig,
        MLPConfig,
        Seq2Seq,
        Seq2SeqConfig,
        SequenceConfig,
        SequenceModel,
        Tagger,
        TaggerConfig,
    )
    from .text import Vocab
    from .training import train
    from .vanilla import RNN
