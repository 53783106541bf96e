"""Beam search on the language model and the encoder/decoder, scored against the fused forward."""

import math

import pytest
import torch
from torch.nn import functional as F

from rnnkit import CharLM, DecoderConfig, ModelConfig, RnnkitError, Seq2Seq, Seq2SeqConfig, Vocab
from rnnkit.beam import decode_beam
from rnnkit.tasks import teacher_inputs

VOCAB = Vocab("char", tuple(sorted(map(ord, "abcdefgh \n"))))


@torch.no_grad()
def lm_log_prob(model: CharLM, prime: str, text: str) -> float:
    """log P(text | prime) from the fused forward pass, summed over text's characters."""
    ids = torch.tensor([VOCAB.encode(prime + text)[0]])  # (1, T)
    logits, _, _ = model(ids[:, :-1])
    logp = F.log_softmax(logits[0].double(), -1)  # (T - 1, V)
    targets = ids[0, 1:]
    return float(logp[torch.arange(len(targets)), targets][len(prime) - 1:].sum())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("prime", ["ab", "ceded", "fade\n"])
def test_lm_beam_is_at_least_as_likely_as_greedy(cell, prime):
    torch.manual_seed(3)
    model = CharLM(ModelConfig(vocab_size=len(VOCAB), cell=cell, hidden=32, embed=8),
                   VOCAB).eval()
    with torch.no_grad():  # sharpen the random model, so that greedy choices matter
        model.head.weight.mul_(8)
    n = 25
    greedy = model.generate(prime, n, greedy=True)[len(prime):]
    assert model.generate(prime, n, beam=1)[len(prime):] == greedy  # a beam of one is greedy
    beams = model.generate(prime, n, beam=6, num_samples=6)
    scores = [lm_log_prob(model, prime, b[len(prime):]) for b in beams]
    assert scores == sorted(scores, reverse=True)  # best first
    assert scores[0] >= lm_log_prob(model, prime, greedy) - 1e-9
    assert len(set(beams)) == 6 and all(len(b) == len(prime) + n for b in beams)


@torch.no_grad()
def seq2seq_log_prob(model: Seq2Seq, inputs, seq: list[int]) -> float:
    """log P(seq + end | inputs) by teacher forcing through the fused decoder."""
    c = model.decoder.config
    targets = torch.tensor([seq + [c.end]])
    logits, _ = model.decoder(teacher_inputs(targets, c.start), model.encode(inputs))
    logp = F.log_softmax(logits[0].double(), -1)
    return float(logp[torch.arange(targets.shape[1]), targets[0]].sum())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_seq2seq_beam_is_at_least_as_likely_as_greedy(cell):
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(12, DecoderConfig(vocab_size=12, cell=cell, hidden=32,
                                                    layers=2, embed=8))).eval()
    with torch.no_grad():
        model.decoder.out.weight.mul_(4)
        model.decoder.out.bias[1] += 2.0  # make the end symbol likely enough to be emitted
    inputs = torch.randint(2, 12, (5, 7))  # (B, S)
    greedy = model.generate(inputs, max_length=12)
    beam = model.generate(inputs, max_length=12, beam=5)
    assert model.generate(inputs, max_length=12, beam=1) == greedy
    for b in range(len(inputs)):
        row = inputs[b:b + 1]
        found = decode_beam(model.decoder, model.encode(row), 0, 12, 5)
        assert found[0][0] == beam[b]
        best = seq2seq_log_prob(model, row, beam[b])
        if len(beam[b]) < 12:  # an ended sequence: its score is its log-probability, end included
            assert found[0][1] == pytest.approx(best, abs=1e-5)
        if len(greedy[b]) < 12 and len(beam[b]) < 12:
            assert best >= seq2seq_log_prob(model, row, greedy[b]) - 1e-5


def test_an_early_stop_returns_finished_sequences_not_prefixes():
    from rnnkit.beam import beam_search
    logits = torch.log(torch.tensor([0.05, 0.05, 0.9]))
    found = beam_search(lambda tokens, rows: logits.repeat(len(tokens), 1), logits, width=3,
                        length=5, end=2)
    # the search stops once [2] beats every live prefix; [0] and [1] were listed as results
    assert all(seq[-1] == 2 or len(seq) == 5 for seq, _ in found), found
    assert found[0] == ([2], pytest.approx(math.log(0.9)))


def test_decoding_models_decode_in_eval_mode_and_refuse_draws_with_a_beam():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(5, DecoderConfig(vocab_size=6, cell="gru", hidden=16, layers=2,
                                                   dropout=0.5)))
    assert model.training
    inputs = torch.tensor([[2, 3, 4]])
    outputs = {str(model.generate(inputs, max_length=6)) for _ in range(5)}
    assert len(outputs) == 1 and model.training  # greedy was different each time (dropout)
    for options in ({"greedy": False}, {"temperature": 0.7}, {"seed": 1}):
        with pytest.raises(RnnkitError, match="beam search keeps the most likely sequences"):
            model.generate(inputs, max_length=6, beam=3, **options)
