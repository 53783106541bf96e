"""Sampling choices: temperature, top-k, top-p, repetition penalty, many samples in one batch."""

import re

import pytest
import torch
from torch.overrides import TorchFunctionMode

import rnnkit
from rnnkit import CharLM, ModelConfig, Vocab, native
from rnnkit.sample import AHEAD, SIGMOID_ROWS, Stepper, draw, pick

VOCAB = Vocab("char", tuple(sorted(map(ord, "abcdefgh \n"))))


def model_for(cell="lstm", layers=2, seed=0, hidden=16):
    torch.manual_seed(seed)
    return CharLM(ModelConfig(vocab_size=len(VOCAB), cell=cell, layers=layers, hidden=hidden,
                              embed=8), VOCAB).eval()


def drawn(logits, n=300, **options) -> set[int]:
    """The ids that `pick` draws from one row of logits over n seeds."""
    return {int(pick(torch.tensor([logits]), generator=torch.Generator().manual_seed(s),
                     **options)[0]) for s in range(n)}


@pytest.mark.parametrize("temperature", [1e-45, 1e-30, 5e-324])
def test_tiny_temperature_takes_the_most_likely_token(temperature):
    assert drawn([1.0, 3.0, -2.0, 2.5], 5, temperature=temperature) == {1}
    text = model_for().generate("ab", 20, temperature=temperature, seed=0)
    assert text == model_for().generate("ab", 20, greedy=True)


def test_draw_is_torch_multinomial_without_the_checks():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(7, 50) * 3, -1)
    for seed in range(50):
        expected = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))[:, 0]
        assert torch.equal(draw(probs, torch.Generator().manual_seed(seed)), expected)


@pytest.mark.parametrize("num_samples", [1, 3])
def test_numbers_drawn_ahead_give_the_text_of_one_draw_a_step(num_samples):
    """A stream draws its random numbers a block of steps at a time; its text is the one that a
    draw from the seeded generator at every step gives, past the first block too."""
    model, length = model_for(), AHEAD + 20
    texts = model.generate("ab", length, seed=5, num_samples=num_samples, top_k=5)
    stepper, generator = Stepper(model), torch.Generator().manual_seed(5)
    logits = stepper.feed_many(VOCAB.encode("ab")[0])
    stepper.select(torch.zeros(num_samples, dtype=torch.long))
    logits, rows = stepper.logits, []
    for _ in range(length):
        rows.append(pick(logits.reshape(num_samples, -1), top_k=5, generator=generator))
        logits = stepper.feed(rows[-1])
    expected = ["ab" + VOCAB.decode(ids) for ids in torch.stack(rows, 1).tolist()]
    assert texts == expected


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().tolist()
    assert drawn(logits, top_p=0.5) == {0}  # 0.5 alone reaches 0.5
    assert drawn(logits, top_p=0.7) == {0, 1}
    assert drawn(logits, top_p=0.81) == {0, 1, 2}
    assert drawn(logits, top_p=1.0) == {0, 1, 2, 3}
    assert drawn(logits, top_p=0.81, top_k=1) == {0}  # top-k first, then top-p (HF's order)


def test_repetition_penalty_follows_ctrl():
    seen = torch.tensor([[True, False]])
    greedy = {"greedy": True, "seen": seen, "repetition_penalty": 2.0}
    # positive logits are divided: 2.0 -> 1.0 falls below 1.5
    assert int(pick(torch.tensor([[2.0, 1.5]]), **greedy)[0]) == 1
    # negative logits are multiplied: -1.0 -> -2.0 falls below -1.5
    assert int(pick(torch.tensor([[-1.0, -1.5]]), **greedy)[0]) == 1
    assert int(pick(torch.tensor([[-1.0, -1.5]]), greedy=True, seen=seen)[0]) == 0  # penalty 1
    model = model_for()
    plain = model.generate("ab", 30, greedy=True)
    penalised = model.generate("ab", 30, greedy=True, repetition_penalty=5.0)
    assert len(set(penalised[2:])) > len(set(plain[2:]))


def test_step_weights_are_the_forward_pass_written_out():
    """`CharLM.step_weights` is what steppers read: the tanh RNN's equations on them, one step
    at a time, give the fused forward pass's logits."""
    model = model_for("rnn", layers=3)
    w = model.step_weights()
    ids = torch.randint(0, len(VOCAB), (2, 9), generator=torch.Generator().manual_seed(0))
    h = [torch.zeros(2, 16) for _ in w.layers]  # L x (B, H)
    stepped = []
    for t in range(ids.shape[1]):
        x_term = w.table[ids[:, t]]  # (B, H): W_ih[0] @ embed(x) + b_ih[0]
        for layer, (W_ih, W_hh, b_ih, b_hh) in enumerate(w.layers):
            if layer > 0:
                x_term = h[layer - 1] @ W_ih.T + b_ih
            h[layer] = torch.tanh(x_term + h[layer] @ W_hh.T + b_hh)
        stepped.append(h[-1] @ w.W_hy.T + w.b_y)  # (B, V)
    with torch.no_grad():
        logits, _, _ = model(ids)  # (B, T, V)
    torch.testing.assert_close(torch.stack(stepped, 1), logits, atol=1e-5, rtol=0)
    assert not w.table.requires_grad and w.cell == "rnn" and len(w.layers) == 3


@pytest.mark.parametrize("cell, precision", [("lstm", "fp32"), ("gru", "fp32"), ("lstm", "int8"),
                                             ("gru", "int8")])
def test_a_stepper_keeps_the_weights_it_was_made_with(cell, precision):
    """A stepper's weights are a snapshot: training the model afterwards changes new steppers'
    logits, not its own (the output layer and the biases included); int8's rounded weights,
    kept with the model for the next stepper, are made again after the change."""
    model = model_for(cell)
    stepper = Stepper(model, precision)
    before = stepper.feed(1).clone()
    assert torch.equal(Stepper(model, precision).feed(1), before)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    stepper.reset()
    assert torch.equal(stepper.feed(1), before)
    assert not torch.allclose(Stepper(model, precision).feed(1), before)


def test_steppers_share_kept_weights_but_not_their_buffers():
    """Two int4 steppers of one model read the same rounded weights (made once, as is a batch's
    layout of them), and each steps on its own buffers: one stream and a batch, interleaved,
    each give what it gives alone."""
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=len(VOCAB), layers=2, hidden=32, embed=8), VOCAB).eval()
    one, many = Stepper(model, "int4"), Stepper(model, "int4", batch=3)
    assert one.layers[1][0].W4 is many.layers[1][0].W4 and one.layers[1][0] is not many.layers[1][0]
    ids = torch.randint(0, len(VOCAB), (3, 6))
    both = [(one.feed(int(ids[0, t])).clone(), many.feed(ids[:, t]).clone()) for t in range(6)]
    alone, batch = Stepper(model, "int4"), Stepper(model, "int4", batch=3)
    made, again = many.layers[1][0], batch.layers[1][0]  # the batch layout, made once
    assert made.packed is not None or made.W is not None
    assert again.packed is made.packed and again.W is made.W
    for t in range(6):
        assert torch.equal(both[t][0], alone.feed(int(ids[0, t])))
        assert torch.equal(both[t][1], batch.feed(ids[:, t]))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_batched_stepper_rows_equal_single_streams(cell):
    model = model_for(cell, layers=3)
    torch.manual_seed(1)
    B = SIGMOID_ROWS  # where the batch's LSTM computes tanh(c) through a sigmoid
    ids = torch.randint(0, len(VOCAB), (B, 12))  # (B, T): a different text in each row
    batch = Stepper(model, batch=B)
    singles = [Stepper(model) for _ in range(B)]
    for t in range(ids.shape[1]):
        logits = batch.feed(ids[:, t])  # (B, V)
        for b, s in enumerate(singles):
            torch.testing.assert_close(logits[b], s.feed(int(ids[b, t])), atol=1e-6, rtol=0)


class TorchCalls(TorchFunctionMode):
    """Counts the torch functions and tensor methods called inside it."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("precision, most, most_native", [
    ("fp32", 16, 16), ("bf16", 22, 5), ("int8", 21, 5), ("int4", 21, 5)])
def test_one_lstm_step_makes_few_torch_calls(precision, most, most_native, monkeypatch):
    """One step of a single stream is bound by per-call overhead as much as by the weights: a
    2-layer LSTM step stays within this many calls (fp32 and int8 took 26 and 38 before the fused
    gates, 22 and 28 before the layouts were chosen outside the step, 19 and 27 before the
    LSTM update lost a call and the layers' bf16 inputs shared one copy). With native.c, a
    reduced precision's step is its products, their addresses, and the copy `feed` returns."""
    if native.library() is not None:
        torch.manual_seed(0)
        s = Stepper(CharLM(ModelConfig(vocab_size=len(VOCAB), layers=2, hidden=32, embed=8),
                           VOCAB).eval(), precision)
        s.feed(1)
        with TorchCalls() as calls:
            s.feed(2)
        assert len(calls.names) <= most_native, calls.names
    monkeypatch.setattr(native, "library", lambda: None)
    torch.manual_seed(0)
    s = Stepper(CharLM(ModelConfig(vocab_size=len(VOCAB), layers=2, hidden=32, embed=8),
                       VOCAB).eval(), precision)  # int4 needs the hidden size in groups of 32
    s.feed(1)
    with TorchCalls() as calls:
        s.feed(2)
    assert len(calls.names) <= most, calls.names


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_one_stream_s_bf16_inputs_are_up_to_date_at_every_step(precision, monkeypatch):
    """One stream's layers read their bf16 inputs from one shared copy of the state, which each
    layer above the first brings up to date: the same logits as rounding the whole state again
    before every step (as `use` does)."""
    torch.manual_seed(0)
    monkeypatch.setattr(native, "library", lambda: None)  # native.c writes h16 itself
    model = CharLM(ModelConfig(vocab_size=len(VOCAB), layers=3, hidden=32, embed=8), VOCAB).eval()
    shared, again = Stepper(model, precision), Stepper(model, precision)
    assert shared.inputs[0] is shared.layers[0][0].x16
    for t in [1, 5, 2, 2, 7, 0, 3]:
        again.use(again.hs, again.cs)
        assert torch.equal(shared.feed(t), again.feed(t))


@pytest.mark.parametrize("token", [-1, len(VOCAB)])
def test_a_token_id_outside_the_vocabulary_is_refused(token):
    with pytest.raises(rnnkit.RnnkitError, match=f"token id {token} is outside the vocabulary"):
        Stepper(model_for()).feed(token)


def test_num_samples_runs_streams_in_one_batch():
    model = model_for()
    texts = model.generate("ab", 40, seed=3, num_samples=5)
    assert texts == model.generate("ab", 40, seed=3, num_samples=5)  # seeded: repeats
    assert len(texts) == 5 and len(set(texts)) == 5 and all(t.startswith("ab") for t in texts)
    assert all(len(t) == 42 for t in texts)
    pieces = list(model.stream("ab", 4, seed=0, num_samples=2))
    assert len(pieces) == 4 and all(len(p) == 2 for p in pieces)


def test_a_stream_leaves_inference_mode_to_its_caller():
    """The stream steps in inference mode, entered once a step; between characters the caller's
    own code runs as it would without it (tensors made there can be trained)."""
    model = model_for()
    texts = []
    for pieces in model.stream("ab", 20, seed=3, num_samples=2):
        assert not torch.is_inference_mode_enabled()
        texts.append(pieces)
    assert ["ab" + "".join(t) for t in zip(*texts, strict=True)] == \
        model.generate("ab", 20, seed=3, num_samples=2)
    with torch.inference_mode():  # and a caller's own inference mode stays on
        for _ in model.stream("ab", 3, seed=3):
            assert torch.is_inference_mode_enabled()


@pytest.mark.parametrize("options, message", [
    ({"top_p": 0.0}, "top-p must be in"),
    ({"top_p": 1.5}, "top-p must be in"),
    ({"repetition_penalty": 0.0}, "repetition penalty must be a positive finite number"),
    ({"repetition_penalty": float("inf")}, "repetition penalty must be a positive finite number"),
    ({"num_samples": 0}, "number of samples must be in"),
    ({"num_samples": 10**5}, "number of samples must be in"),
    ({"beam": 0}, "beam width must be in"),
    ({"beam": 2, "top_k": 3}, "beam search keeps the most likely"),
    ({"beam": 2, "num_samples": 3}, "widen the beam"),
    ({"beam": 2, "repetition_penalty": 1.2}, "drop the penalty, or drop the beam"),
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
    # options greedy decoding has no use for: ignored before (the same text whatever they were)
    ({"greedy": True, "temperature": 5.0}, "drop temperature, top-k and top-p, or drop greedy"),
    ({"greedy": True, "top_p": 0.1}, "drop temperature, top-k and top-p, or drop greedy"),
    ({"greedy": True, "num_samples": 3}, "3 samples would be copies"),
    ({"beam": 64, "length": 200_000}, "a beam of 64 over 200,000 symbols holds more than"),
    # types, named before they are used (a str length failed in a multiplication)
    ({"length": "10"}, "length must be an integer, got '10'"),
    ({"temperature": "0.8"}, "temperature must be a number, got '0.8'"),
    ({"top_k": 2.5}, "top_k must be an integer, got 2.5"),
    ({"num_samples": True}, "num_samples must be an integer, got True"),
])
def test_bad_sampling_options_are_refused(options, message):
    with pytest.raises(rnnkit.RnnkitError, match=message):
        model_for().generate("ab", **{"length": 5, **options})


def test_a_prime_must_be_text():
    with pytest.raises(rnnkit.RnnkitError, match="the prime must be text"):
        model_for().generate(None, 5)


def biased(logits: dict[str, float]):
    """A model whose next-symbol logits are these, whatever it has read (0 for the others)."""
    model = model_for()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        for symbol, value in logits.items():
            model.head.bias[model.vocab.index(symbol)] = value
    return model


def test_an_extreme_repetition_penalty_still_draws_the_likeliest_unseen_symbol():
    # 1e-300 is 0 in float32: seen logits became inf (and 0 x inf NaN), and every draw symbol 0
    model = biased({"b": 2.0, "a": 1.0})
    for seed in range(3):  # drawn: the seen 'a', boosted past float32, wins every draw
        assert model.generate("a", 1, seed=seed, repetition_penalty=1e-300) == "aa"
    with torch.no_grad():
        model.head.bias[model.vocab.index("a")] = 0.0  # 0 x inf: NaN, which argmax took
    assert model.generate("a", 1, greedy=True, repetition_penalty=1e300) == "ab"


def test_without_a_prime_the_penalty_counts_nothing_as_written():
    # the model starts as after a newline, which is not in the text: the penalty leaves it be
    model = biased({"\n": 5.0, "a": 4.0})
    assert model.generate("", 2, greedy=True, repetition_penalty=2.0) == "\na"
    assert model.generate("\n", 1, greedy=True, repetition_penalty=2.0) == "\na"  # primed


def test_a_beam_cannot_return_more_texts_than_exist():
    model = model_for()
    V = len(model.vocab)
    assert len(set(model.generate("ab", 1, beam=V, num_samples=V))) == V  # every next symbol
    with pytest.raises(rnnkit.RnnkitError, match=f"only {V} different texts of 1 symbols exist"):
        model.generate("ab", 1, beam=V + 1, num_samples=V + 1)


def test_sample_cli_flags(cli, corpus, tmp_path, monkeypatch):
    from conftest import TINY, one_error_line

    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", "20")[0] == 0
    status, out, err = cli("sample", run, "--prime", "the", "--length", "30", "--seed", "1",
                           "--num-samples", "3", "--top-p", "0.9", "--repetition-penalty", "1.2",
                           "--precision", "int8", "--verbose")
    assert status == 0, err
    assert [line for line in out.splitlines() if line.startswith("--- sample")] == \
        [f"--- sample {i} of 3 ---" for i in (1, 2, 3)]
    assert re.fullmatch(r"rnnkit: 90 characters in [\d.]+s \([\d,]+ characters/s, int8\)\n", err)
    # one stream would step through native.c: the line says when it does not
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    native.library.cache_clear()
    try:
        status, _, err = cli("sample", run, "--length", "30", "--precision", "int8", "--verbose")
    finally:
        monkeypatch.delenv("RNNKIT_NATIVE")
        native.library.cache_clear()
    assert status == 0 and err.endswith("int8; torch operations alone: RNNKIT_NATIVE=0)\n"), err
    status, beam, err = cli("sample", run, "--prime", "the", "--length", "30", "--beam", "4")
    assert status == 0 and beam == rnnkit.load(run).generate("the", 30, beam=4) + "\n", err
    status, plain, _ = cli("sample", run, "--length", "30", "--seed", "1")
    assert plain == rnnkit.load(run).generate("", 30, seed=1) + "\n"
    status, _, err = cli("sample", run, "--beam", "2", "--temperature", "0.5")
    assert status == 2 and "beam search keeps the most likely" in one_error_line(err)
    status, _, err = cli("sample", run, "--top-p", "2")
    assert status == 2 and "top-p must be in (0, 1], got 2.0" in one_error_line(err)
    # N samples are printed whole, so held in memory: bounded as generate's strings are
    status, _, err = cli("sample", run, "--num-samples", "2", "--length", "6000000")
    assert status == 2 and "held to print them" in one_error_line(err)
    # one sample is the default: it streams, with no header (it printed one, and was held)
    one = cli("sample", run, "--num-samples", "1", "--length", "20", "--seed", "3")
    assert one == cli("sample", run, "--length", "20", "--seed", "3") and "---" not in one[1]


def test_bytes_are_read_as_utf8_and_a_negative_top_is_refused():
    # A character model read a bytes prime as Latin-1 ("caf\u00c3\u00a9"), and a stepper's step
    # refused bytes with a raw ValueError; top(-1) was torch's bare RuntimeError.
    vocab = Vocab("char", tuple(sorted(map(ord, "abcé "))))
    model = CharLM(ModelConfig(vocab_size=len(vocab), hidden=16, embed=8), vocab).eval()
    symbols = ["é", "a"]
    assert model.generate("abé".encode(), 5, seed=1) == model.generate("abé", 5, seed=1)
    with pytest.raises(rnnkit.RnnkitError, match="bytes that are not UTF-8"):
        model.generate(b"\xff", 5, seed=1)
    stepper, again = model.stepper(), model.stepper()
    assert stepper.step(symbols[0].encode()).top(3) == again.step(symbols[0]).top(3)
    with pytest.raises(rnnkit.RnnkitError, match="k must be a whole number, 0 or more"):
        stepper.step(symbols[1]).top(-1)
    byte_model = rnnkit.load("builtin")
    assert byte_model.stepper().step(b"t").top(2) == byte_model.stepper().step("t").top(2)


def test_priming_a_stepper_of_a_model_in_training_mode_uses_no_dropout():
    # a prime over 16 symbols goes through the fused forward pass, which applied dropout when
    # the model was left in training mode: other logits on every call
    torch.manual_seed(0)
    vocab = Vocab("char", tuple(range(97, 107)))
    model = CharLM(ModelConfig(vocab_size=10, hidden=16, layers=2, dropout=0.5), vocab)
    ids = [i % 10 for i in range(40)]
    model.eval()
    want = Stepper(model).feed_many(ids)
    model.train()
    for _ in range(2):
        assert torch.equal(Stepper(model).feed_many(ids), want)
    assert model.training


def test_numpy_integers_are_whole_numbers_for_a_seed_and_a_top():
    import numpy as np
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=10, hidden=8, layers=1),
                   Vocab("char", tuple(range(97, 107)))).eval()
    # "seed must be a whole number ..., got np.int64(3)"; "k must be a whole number"
    assert model.generate(length=5, seed=np.int64(3)) == model.generate(length=5, seed=3)
    assert len(model.stepper().step("a").top(np.int64(2))) == 2


def test_python_api_arguments_of_the_wrong_kind_are_one_error():
    # each reached Python's or PyTorch's own errors (AttributeError, TypeError, RuntimeError)
    from rnnkit import DecoderConfig, RnnkitError, Seq2Seq, Seq2SeqConfig
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=10, hidden=8, layers=1),
                   Vocab("char", tuple(range(97, 107)))).eval()
    s2s = Seq2Seq(Seq2SeqConfig(5, DecoderConfig(vocab_size=6, hidden=8)))
    for call, message in (
            (lambda: Stepper(model, batch=0), "batch must be a whole number above 0"),
            (lambda: rnnkit.load(None), "a run directory is a path"),
            (lambda: s2s.generate(torch.tensor([[2, 3]]), greedy=False, seed=1.5),
             "seed must be a whole number"),
            (lambda: s2s.generate(torch.tensor([[2, 3]]), greedy=False, temperature="1"),
             "temperature must be a number")):
        with pytest.raises(RnnkitError, match=message):
            call()
