"""The next-symbol distribution as a Mapping, and what a byte model is fed, symbol by symbol."""

import subprocess

import pytest
import torch
from conftest import PYTHON, TINY, one_error_line

from rnnkit import CharLM, ModelConfig, RnnkitError, Vocab

BYTES = Vocab("byte", tuple(range(256)))
CHARS = Vocab("char", tuple(sorted(map(ord, "ab ©\n"))))


def model_of(vocab):
    torch.manual_seed(0)
    return CharLM(ModelConfig(vocab_size=len(vocab), layers=1, hidden=8), vocab).eval()


@pytest.mark.parametrize("vocab", [BYTES, CHARS], ids=["byte", "char"])
def test_probs_keys_are_exactly_what_its_getter_accepts(vocab):
    probs = model_of(vocab).stepper().step("a")
    as_dict = dict(probs)  # iterates the keys, then looks each one up
    assert len(as_dict) == len(vocab) == len(probs)
    assert sum(as_dict.values()) == pytest.approx(1, abs=1e-5)
    assert list(as_dict.values()) == pytest.approx(probs.tensor.tolist())
    assert all(symbol in probs for symbol, _ in probs.top(10))
    assert 0xA9 not in probs and probs.get(0xA9) is None  # codes are not keys; names are
    if vocab is BYTES:
        assert probs["\\xa9"] == probs.tensor[0xA9] and probs["a"] == probs.tensor[ord("a")]
        assert "©" not in probs and probs.get("©") is None  # two bytes, not one symbol
        with pytest.raises(KeyError) as e:
            probs["©"]
        assert "is 2 bytes in UTF-8" in e.value.args[0]


def test_a_byte_model_is_not_fed_the_code_point_of_a_character():
    model = model_of(BYTES)
    s = model.stepper()
    # "©" is U+00A9 but c2 a9 in UTF-8: feeding byte 0xa9 for it would be a different text.
    # the advice named them '\xc2' and '\xa9', which typed in Python are other characters
    with pytest.raises(RnnkitError, match=r"'©' is 2 bytes in UTF-8 \(\\xc2\\xa9\).*one at a "
                       r"time, as byte values \(194, then 169\) or as bytes \(b'\\xc2', then "
                       r"b'\\xa9'\)"):
        s.step("©")
    s.step(b"\xc2")
    stepped = s.step(169).tensor
    fused = torch.softmax(model(torch.tensor([list("©".encode())]))[0][0, -1], -1)
    torch.testing.assert_close(stepped, fused, atol=1e-5, rtol=0)
    assert s.step(0xA9).tensor.shape == (256,)  # a byte value is a symbol too


@pytest.mark.parametrize("vocab", [BYTES, CHARS], ids=["byte", "char"])
def test_a_prime_with_a_lone_surrogate_is_refused_by_name(vocab):
    with pytest.raises(RnnkitError, match=r"the prime text contains '\\ud800' at character 1"):
        model_of(vocab).generate("a\ud800b", 5, seed=0)


def test_sample_command_with_a_prime_that_is_not_utf8_is_one_line(cli, corpus, tmp_path):
    """Bytes of a command line that are not UTF-8 reach Python as lone surrogates."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", 3)[0] == 0
    done = subprocess.run([PYTHON, "-m", "rnnkit", "sample", str(run), "--prime", b"a\xffb",
                           "--length", "5"], capture_output=True, timeout=120)
    err = done.stderr.decode("utf-8", errors="replace")
    assert done.returncode == 2 and done.stdout == b"", err
    assert "the prime text contains '\\udcff' at character 1, a lone surrogate" in \
        one_error_line(err)


def test_output_the_terminal_cannot_encode_is_replaced_and_debug_0_is_off(cli, tmp_path):
    import os

    corpus = tmp_path / "accents.txt"
    corpus.write_text("café crème brûlée à la carte. " * 40, encoding="utf-8")
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", 3)[0] == 0
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}  # a console without those letters
    done = subprocess.run([PYTHON, "-m", "rnnkit", "sample", str(run), "--prime", "café",
                           "--length", "200", "--seed", "1"], capture_output=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr  # was an internal error part-way through
    assert done.stdout.startswith(b"caf?")
    for value, traceback in (("0", False), ("1", True)):
        done = subprocess.run([PYTHON, "-m", "rnnkit", "sample", str(tmp_path / "none")],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "RNNKIT_DEBUG": value})
        assert ("Traceback" in done.stderr) is traceback, done.stderr


def test_a_byte_prime_that_ends_inside_a_character_is_finished_by_the_generated_bytes():
    model = model_of(BYTES)
    with torch.no_grad():  # whatever it reads, it writes 0xa9: "caf\xc3" + it is "café"
        model.head.weight.zero_()
        model.head.bias.fill_(-50.0)
        model.head.bias[0xA9] = 50.0
    assert model.generate(b"caf\xc3", length=1, greedy=True) == "café"
    assert model.generate(b"caf\xc3", length=1, num_samples=2, seed=0) == ["café"] * 2
    assert "".join(model.stream(b"caf\xc3", length=2, greedy=True)) == "é\ufffd"
    assert model.generate(b"caf", length=1, greedy=True) == "caf\ufffd"  # a lone 0xa9
