"""Sampling choices: temperature, top-k, top-p, repetition penalty, many samples in one batch."""

import pytest
import torch

from rnnkit import CharLM, ModelConfig, Vocab
from rnnkit.sample import pick

VOCAB = Vocab("char", tuple(sorted(map(ord, "abcdefgh \n"))))


def model_for(cell="lstm", layers=2, seed=0):
    torch.manual_seed(seed)
    return CharLM(ModelConfig(vocab_size=len(VOCAB), cell=cell, layers=layers, hidden=16,
                              embed=8), VOCAB).eval()


@pytest.mark.parametrize("temperature", [1e-45, 1e-30, 5e-324])
def test_tiny_temperature_takes_the_most_likely_token(temperature):
    logits = torch.tensor([1.0, 3.0, -2.0, 2.5])
    for seed in range(5):
        generator = torch.Generator().manual_seed(seed)
        assert pick(logits, temperature, None, False, generator) == 1
    text = model_for().generate("ab", 20, temperature=temperature, seed=0)
    assert text == model_for().generate("ab", 20, greedy=True)
