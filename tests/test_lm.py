"""The language model: stepper against the fused path, sampling, and the notes' "hello"."""

import pytest
import torch

import rnnkit
from rnnkit import CharLM, ModelConfig, Vocab

VOCAB = Vocab("char", tuple(sorted(map(ord, "abcdefgh \n"))))


def model_for(cell, layers=2, seed=0):
    torch.manual_seed(seed)
    return CharLM(ModelConfig(vocab_size=len(VOCAB), cell=cell, layers=layers, hidden=16,
                              embed=8), VOCAB).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 3])
def test_stepper_equals_fused_forward(cell, layers):
    model = model_for(cell, layers)
    ids = torch.randint(0, len(VOCAB), (1, 30))
    logits, _, _ = model(ids)
    s = model.stepper()
    stepped = torch.stack([s.feed(int(t)).clone() for t in ids[0]])
    torch.testing.assert_close(stepped, logits[0], atol=1e-5, rtol=0)
    s.reset()
    torch.testing.assert_close(s.feed_many(ids[0].tolist()), logits[0, -1], atol=1e-5, rtol=0)
    s.feed(3)  # feed_many left the state where stepping continues
    torch.testing.assert_close(s.logits, model(torch.cat([ids, torch.tensor([[3]])], 1))[0][0, -1],
                               atol=1e-5, rtol=0)


def test_step_returns_probabilities_indexable_by_character():
    s = model_for("lstm").stepper()
    probs = s.step("a")
    assert abs(sum(probs.values()) - 1) < 1e-5
    assert 0 < probs["b"] < 1 and len(probs) == len(VOCAB)
    top = probs.top(3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]
    second = s.step("b")  # the state moved on: same input, different history, different answer
    s.reset()
    s.step("b")
    assert s.logits is not None and not torch.allclose(
        torch.tensor(list(second.values())), torch.softmax(s.logits, -1))
    with pytest.raises(rnnkit.RnnkitError, match="not in the vocabulary"):
        s.step("z")


def test_seeded_sampling_repeats_and_seeds_differ():
    model = model_for("gru")
    a = model.generate(prime="abc", length=60, seed=7)
    b = model.generate(prime="abc", length=60, seed=7)
    c = model.generate(prime="abc", length=60, seed=8)
    assert a == b and a != c and a.startswith("abc") and len(a) == 63


def test_greedy_top_k_and_temperature():
    model = model_for("lstm")
    assert model.generate("ab", 30, greedy=True) == model.generate("ab", 30, greedy=True)
    # a seed changes nothing there: it was accepted and ignored, and is refused
    with pytest.raises(rnnkit.RnnkitError, match="greedy decoding draws nothing, so a seed"):
        model.generate("ab", 30, greedy=True, seed=1)
    with pytest.raises(rnnkit.RnnkitError, match="beam search draws nothing, so a seed"):
        model.generate("ab", 3, beam=2, seed=1)
    s = model.stepper()
    s.feed_many(VOCAB.encode("ab")[0])
    best = VOCAB.symbol(int(s.logits.argmax()))
    assert model.generate("ab", 1, greedy=True) == "ab" + best
    for seed in range(20):  # top-1 sampling is greedy whatever the seed
        assert model.generate("ab", 1, top_k=1, seed=seed) == "ab" + best
    with pytest.raises(rnnkit.RnnkitError, match="temperature must be positive"):
        model.generate("ab", 5, temperature=0)
    with pytest.raises(rnnkit.RnnkitError, match="top-k must be at least 1"):
        model.generate("ab", 5, top_k=0)


def test_unknown_prime_characters_are_skipped_with_a_warning():
    model = model_for("lstm")
    with pytest.warns(rnnkit.RnnkitWarning, match="'zé'.*not in the vocabulary of 10"):
        text = model.generate(prime="azébz", length=5, seed=0)
    same = model.generate(prime="ab", length=5, seed=0)  # no warning: nothing to skip
    assert text[-5:] == same[-5:]


def test_hello_vanilla_rnn_learns_to_predict_ello():
    """The blog's example: vocabulary h,e,l,o, hidden size 3, trained on "hello"."""
    torch.manual_seed(0)
    chars = "helo"
    rnn = rnnkit.RNN(input_size=4, hidden_size=3, output_size=4)
    xs = torch.eye(4)[[chars.index(c) for c in "hell"]]  # 1-of-k inputs (4, 4)
    targets = torch.tensor([chars.index(c) for c in "ello"])
    optimizer = torch.optim.Adam(rnn.parameters(), lr=0.05)
    for _ in range(500):
        ys, _ = rnn(xs)
        loss = torch.nn.functional.cross_entropy(ys, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rnn.reset()
    predicted = "".join(chars[int(rnn.step(x).argmax())] for x in xs)  # the step API
    assert predicted == "ello"
    assert loss.item() < 0.1


def test_a_negative_seed_is_refused_before_sampling():
    model = model_for("gru")
    for seed in (-1, 1 << 63, 1.5):
        with pytest.raises(rnnkit.RnnkitError, match="^seed must be a whole number from 0"):
            model.generate("ab", 5, seed=seed)
    assert model.generate("ab", 5, seed=(1 << 63) - 1) == model.generate("ab", 5, seed=(1 << 63) - 1)
