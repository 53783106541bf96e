"""rnnkit: recurrent neural networks on PyTorch.

    import rnnkit
    model = rnnkit.load("runs/shakespeare")                 # a trained character language model
    print(model.generate(prime="ROMEO:", length=200, temperature=0.8, seed=1))
    s = model.stepper(); probs = s.step("h"); probs["e"]   # the stateful step API

    rnn = rnnkit.RNN(input_size=4, hidden_size=3, output_size=4)
    y = rnn.step(x)                                         # h = tanh(W_hh h + W_xh x + b_h)
"""

__version__ = "0.1.0"

from .cells import Cell  # noqa: E402
from .checkpoint import load  # noqa: E402
from .errors import RnnkitError  # noqa: E402
from .lm import CharLM, ModelConfig  # noqa: E402
from .recurrent import Recurrent  # noqa: E402
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

__all__ = ["MLP", "RNN", "Cell", "CharLM", "ConditionedGenerator", "DecoderConfig",
           "GeneratorConfig", "MLPConfig", "ModelConfig", "Probs", "Recurrent", "RnnkitError",
           "RnnkitWarning", "Seq2Seq", "Seq2SeqConfig", "SequenceConfig", "SequenceModel", "Stepper",
           "Tagger", "TaggerConfig", "TrainConfig", "Vocab", "load", "train"]
