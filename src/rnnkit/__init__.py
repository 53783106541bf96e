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

from .cells import Cell  # noqa: E402
from .errors import RnnkitError  # noqa: E402
from .fit import FitConfig, fit  # noqa: E402
from .lm import CharLM, ModelConfig  # noqa: E402
from .recurrent import Recurrent  # noqa: E402
from .runs import Classifier, Forecaster, Predictions, load  # noqa: E402
from .sample import Probs, RnnkitWarning, Stepper  # noqa: E402
from .tasks import (  # noqa: E402
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
from .text import Vocab  # noqa: E402
from .training import TrainConfig, train  # noqa: E402
from .vanilla import RNN  # noqa: E402

__all__ = ["MLP", "RNN", "Cell", "CharLM", "Classifier", "ConditionedGenerator", "DecoderConfig",
           "FitConfig", "Forecaster", "GeneratorConfig", "MLPConfig", "ModelConfig", "Predictions",
           "Probs", "Recurrent", "RnnkitError", "RnnkitWarning", "Seq2Seq", "Seq2SeqConfig",
           "SequenceConfig", "SequenceModel", "Stepper", "Tagger", "TaggerConfig", "TrainConfig",
           "Vocab", "fit", "load", "train"]
