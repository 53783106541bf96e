"""The five modes against references: packed batches equal rows run alone, and each model learns
a small synthetic task that it can only solve by doing its job."""

import json
import time
import types

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit import RnnkitError
from rnnkit.config import from_dict, to_dict
from rnnkit.fitting import FitConfig, accuracy, dataset_loss, fit, lr_at, predict
from rnnkit.tasks import (
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

QUICK = dict(device="cpu", warmup=5, weight_decay=0.0)


def ragged(n=6, T=9, F=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    lengths[0] = T
    x = torch.randn(n, T, F, generator=g)
    x = x * (torch.arange(T)[None, :, None] < lengths[:, None, None])  # zero padding
    return x, lengths


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pool", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_batch_equals_each_row_alone(cell, pool, bidirectional):
    torch.manual_seed(0)
    model = SequenceModel(SequenceConfig(3, 4, cell=cell, hidden=8, layers=2, pool=pool,
                                         bidirectional=bidirectional)).eval()
    x, lengths = ragged()
    batch, _ = model(x, lengths=lengths)
    garbage = x + 100 * (torch.arange(x.shape[1])[None, :, None] >= lengths[:, None, None])
    noisy, _ = model(garbage, lengths=lengths)  # padding holds garbage: same result
    for i, n in enumerate(lengths.tolist()):
        alone, _ = model(x[i:i + 1, :n])
        torch.testing.assert_close(batch[i], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(noisy, batch)


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_convolutional_branch_ignores_padding(pool):
    torch.manual_seed(0)
    model = SequenceModel(SequenceConfig(3, 4, hidden=8, pool=pool, conv=6))
    x, lengths = ragged(n=8, T=12)
    model(x, lengths=lengths)[0].sum().backward()  # a training batch moves the running stats
    model.eval()
    assert model.fcn.norms[0].running_mean.abs().sum() > 0
    batch, _ = model(x, lengths=lengths)
    garbage = x + 100 * (torch.arange(x.shape[1])[None, :, None] >= lengths[:, None, None])
    torch.testing.assert_close(model(garbage, lengths=lengths)[0], batch)
    for i, n in enumerate(lengths.tolist()):
        alone, _ = model(x[i:i + 1, :n])
        torch.testing.assert_close(batch[i], alone[0], atol=1e-5, rtol=1e-5)


def test_block_means_average_the_real_steps_of_each_block():
    from rnnkit.tasks import block_means

    x, lengths = ragged(n=5, T=11)
    garbage = x + 100 * (torch.arange(x.shape[1])[None, :, None] >= lengths[:, None, None])
    means, shorter = block_means(garbage, lengths, 3)
    assert means.shape == (5, 4, 3) and shorter.tolist() == [-(-n // 3) for n in lengths.tolist()]
    for i, n in enumerate(lengths.tolist()):
        for b in range(-(-n // 3)):
            real = x[i, 3 * b:min(3 * b + 3, n)]  # the last block may be shorter
            torch.testing.assert_close(means[i, b], real.mean(0))
    whole, none = block_means(x[:1, :10], None, 4)  # every step real: blocks of 4, 4, 2
    assert none is None
    torch.testing.assert_close(whole[0], torch.stack([x[0, :4].mean(0), x[0, 4:8].mean(0),
                                                      x[0, 8:10].mean(0)]))


def test_a_downsampled_model_is_the_model_reading_block_means():
    from rnnkit.tasks import block_means

    torch.manual_seed(0)
    every = SequenceModel(SequenceConfig(3, 4, hidden=8, conv=6)).eval()
    blocks = SequenceModel(SequenceConfig(3, 4, hidden=8, conv=6, downsample=3)).eval()
    blocks.load_state_dict(every.state_dict())
    x, lengths = ragged(n=8, T=12)
    means, shorter = block_means(x, lengths, 3)
    torch.testing.assert_close(blocks(x, lengths=lengths)[0], every(means, lengths=shorter)[0])
    for i, n in enumerate(lengths.tolist()):  # and padding changes nothing
        alone, _ = blocks(x[i:i + 1, :n])
        torch.testing.assert_close(blocks(x, lengths=lengths)[0][i], alone[0], atol=1e-5,
                                   rtol=1e-5)
    with pytest.raises(RnnkitError, match="downsample must be at least 1, and 1 with tail"):
        SequenceConfig(3, 4, head="regress", tail=2, downsample=2)
    with pytest.raises(RnnkitError, match="must give each of the 2 members"):
        SequenceConfig(3, 4, members=2, scales=[1])


def test_a_padded_model_reads_short_sequences_padded_at_its_pad_value():
    torch.manual_seed(0)
    n = 10
    plain = SequenceModel(SequenceConfig(3, 4, hidden=8, conv=6)).eval()
    padded = SequenceModel(SequenceConfig(3, 4, hidden=8, conv=6, pad_to=n)).eval()
    plain.set_standardization(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 1.0, 3.0]))
    padded.load_state_dict({**plain.state_dict(), "pad_value": torch.zeros(3)})
    padded.set_standardization(plain.input_mean, plain.input_std, torch.tensor([3.0, 0.0, -1.0]))
    x, lengths = ragged(n=8, T=14)  # rows of 1 to 14 steps, garbage past their ends:
    x = torch.where(torch.arange(14)[None, :, None] < lengths[:, None, None], x, 7.0)
    assert min(lengths) < n < max(lengths)
    out, _ = padded(x, lengths=lengths)
    for i, steps in enumerate(lengths.tolist()):
        row = x[i, :steps]
        if steps < n:  # what the model reads: the row, then the pad value up to n steps
            row = torch.cat([row, padded.pad_value.expand(n - steps, -1)])
        torch.testing.assert_close(out[i], plain(row[None])[0][0], atol=1e-5, rtol=1e-5)
        # alone, in a batch of its own length: the same (a batch shorter than n is padded too)
        alone, _ = padded(x[i:i + 1, :steps])
        torch.testing.assert_close(alone[0], out[i], atol=1e-5, rtol=1e-5)
    with pytest.raises(RnnkitError, match="pad_to must be 0"):
        SequenceConfig(3, 4, pad_to=-1)
    with pytest.raises(RnnkitError, match="and 0 with tail"):
        SequenceConfig(3, 4, head="regress", tail=2, pad_to=5)


def test_batch_norm_equals_torch_in_training_and_eval():
    from rnnkit.tasks import BatchNorm

    g = torch.Generator().manual_seed(3)
    ours, ref = BatchNorm(5), torch.nn.BatchNorm1d(5)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.copy_(torch.randn(5, generator=g))
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    for _ in range(3):
        u = torch.randn(4, 5, 7, generator=g) * 3 + 1  # (B, C, T)
        torch.testing.assert_close(ours(u), ref(u))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(u), ref(u))
    assert all(t.is_floating_point() for t in ours.state_dict().values())


def test_convolutional_branch_learns_a_shape_anywhere_in_the_sequence():
    # a bump or a dip of 5 steps at a random place in noise: local shape, not position, decides
    g = torch.Generator().manual_seed(4)
    N, T = 256, 40
    y = torch.randint(0, 2, (N,), generator=g)
    x = 0.3 * torch.randn(N, T, 1, generator=g)
    start = torch.randint(0, T - 5, (N,), generator=g)
    for i in range(N):
        x[i, start[i]:start[i] + 5, 0] += torch.tensor([1.0, 2, 3, 2, 1]) * (2 * y[i] - 1)
    data = {"inputs": x, "targets": y}
    torch.manual_seed(0)
    model = SequenceModel(SequenceConfig(1, 2, hidden=4, conv=8))
    fit(model, data, None, FitConfig(epochs=8, batch_size=32, lr=1e-2, **QUICK), quiet=True)
    _, acc = dataset_loss(model, data, 256, torch.device("cpu"), accuracy)
    assert acc > 0.95


def test_tagger_packed_rows_and_streaming_state():
    torch.manual_seed(0)
    tagger = Tagger(TaggerConfig(3, 5, hidden=8, layers=2, cell="gru")).eval()
    x, lengths = ragged()
    out, _ = tagger(x, lengths=lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, _ = tagger(x[i:i + 1, :n])
        torch.testing.assert_close(out[i, :n], alone[0], atol=1e-5, rtol=1e-5)
    # streaming in two halves with the carried state equals one pass
    whole, _ = tagger(x)
    a, state = tagger.stream(x[:, :4])
    b, _ = tagger.stream(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([a, b], 1), whole, atol=1e-5, rtol=1e-5)
    # a bidirectional tagger's pieces differed from the whole by 0.14, silently
    both_ways = Tagger(TaggerConfig(3, 5, hidden=8, bidirectional=True)).eval()
    with pytest.raises(RnnkitError, match="a bidirectional tagger reads the whole sequence"):
        both_ways.stream(x[:, :4])


def test_every_model_answers_outputs_and_loss():
    # the one interface fit, evaluate and predict rely on: exactly (outputs, loss), loss None
    # without targets, whatever optional arguments are given
    x, lengths = ragged()
    tags = torch.zeros(x.shape[:2], dtype=torch.long)
    tagger = Tagger(TaggerConfig(3, 5, hidden=8))
    for answer in (tagger(x), tagger(x, lengths=lengths), tagger(x, tags, lengths)):
        outputs, loss = answer
        assert outputs.shape == (6, 9, 5)
    assert tagger(x)[1] is None and tagger(x, tags)[1].dim() == 0
    model = SequenceModel(SequenceConfig(3, 4, hidden=8))
    outputs, loss = model(x, torch.zeros(6, dtype=torch.long), lengths)
    assert outputs.shape == (6, 4) and loss.dim() == 0
    assert model(x, lengths=lengths)[1] is None


def tokens(B, T, V):
    return torch.randint(2, V, (B, T), generator=torch.Generator().manual_seed(7))


# Each model, its config, and inputs and targets for one forward pass.
MODELS = [
    (MLP, MLPConfig(4, 3, hidden=8, layers=1, head="regress"),
     lambda: (torch.randn(5, 4), torch.randn(5, 3))),
    (SequenceModel, SequenceConfig(4, 3, cell="rnn", hidden=8, pool="mean", bidirectional=True),
     lambda: (torch.randn(5, 6, 4), torch.randint(0, 3, (5,)))),
    (Tagger, TaggerConfig(4, 3, cell="gru", hidden=8, layers=2),
     lambda: (torch.randn(5, 6, 4), torch.randint(0, 3, (5, 6)))),
    (ConditionedGenerator, GeneratorConfig(4, DecoderConfig(9, hidden=8, embed=4), classes=False),
     lambda: (torch.randn(5, 4), tokens(5, 6, 9))),
    (Seq2Seq, Seq2SeqConfig(7, DecoderConfig(9, cell="gru", hidden=8, embed=4),
                            bidirectional=True),
     lambda: (tokens(5, 4, 7), tokens(5, 6, 9))),
]


@pytest.mark.parametrize("cls, config, batch", MODELS, ids=[m[0].__name__ for m in MODELS])
def test_every_model_is_built_from_one_config_that_round_trips_through_json(cls, config, batch):
    torch.manual_seed(0)
    model = cls(config)
    saved = json.loads(json.dumps(to_dict(config)))  # what a run directory would hold
    back = from_dict(type(config), saved)
    assert back == config
    torch.manual_seed(0)
    rebuilt = cls(back)  # the JSON holds everything that shapes the model: the same weights
    assert model.config == rebuilt.config
    for (name, a), (other, b) in zip(model.state_dict().items(), rebuilt.state_dict().items(),
                                     strict=True):
        assert name == other and torch.equal(a, b), name
    inputs, targets = batch()
    outputs, loss = model(inputs, targets)  # the one contract: (outputs, loss)
    assert outputs.shape[0] == 5 and loss.dim() == 0 and torch.isfinite(loss)
    with pytest.raises(RnnkitError, match=f"{cls.__name__} takes one {type(config).__name__}, "
                                          "got dict"):
        cls(saved)


def test_config_errors_name_the_nested_field():
    good = {"input_vocab": 7, "decoder": {"vocab_size": 9, "hidden": 8}}
    assert from_dict(Seq2SeqConfig, good).decoder == DecoderConfig(9, hidden=8)
    cases = [
        ({**good, "decoder": {"vocab_size": "9"}}, "config.decoder.vocab_size must be int"),
        ({**good, "decoder": 9}, "config.decoder must be a JSON object, got int"),
        ({**good, "decoder": {"vocab_size": 9, "depth": 2}}, "config.decoder has unknown keys"),
        ({**good, "decoder": {"vocab_size": 9, "end": 9}}, r"end must be a symbol id in \[0, 9\)"),
        ({**good, "decoder": {"vocab_size": 9, "dropout": 1.5}}, "dropout must be in"),
        ({"decoder": good["decoder"]}, "config is incomplete"),
    ]
    for data, message in cases:
        with pytest.raises(RnnkitError, match=message):
            from_dict(Seq2SeqConfig, data)
    with pytest.raises(RnnkitError, match="decoder must be a DecoderConfig, got dict"):
        GeneratorConfig(3, {"vocab_size": 9})
    with pytest.raises(RnnkitError, match=r"Tagger takes one TaggerConfig, got SequenceConfig"):
        Tagger(SequenceConfig(3, 2, pool="max"))  # its pool would mean nothing to a tagger
    with pytest.raises(RnnkitError, match="head"):
        MLPConfig(3, 2, head="rank")


@pytest.mark.parametrize("head", ["classify", "regress"])
def test_validation_loss_is_the_per_step_mean_at_any_batch_size(head):
    # lengths [1, 9, 1, 9]: a mean of batch means weights the short rows' single steps as much
    # as the long rows' nine; the true per-step mean is computed here from one padded pass
    torch.manual_seed(0)
    tagger = Tagger(TaggerConfig(3, 4, head=head, hidden=8)).eval()
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([1, 9, 1, 9])
    x = torch.randn(4, 9, 3, generator=g)
    targets = (torch.randint(0, 4, (4, 9), generator=g) if head == "classify"
               else torch.randn(4, 9, 4, generator=g))
    data = {"inputs": x, "targets": targets, "lengths": lengths}
    with torch.no_grad():
        outputs, _ = tagger(x, lengths=lengths)
    mask = torch.arange(9)[None, :] < lengths[:, None]  # (B, T)
    if head == "classify":
        per_step = torch.nn.functional.cross_entropy(outputs[mask], targets[mask],
                                                     reduction="none")
    else:
        per_step = ((outputs[mask] - targets[mask]) ** 2).mean(-1)
    reference = float(per_step.mean())
    for batch_size in (1, 2, 3, 4):
        loss, _ = dataset_loss(tagger, data, batch_size, torch.device("cpu"))
        assert loss == pytest.approx(reference, rel=1e-5), batch_size
    # one output per row: each row counts once, whatever the batch size
    model = SequenceModel(SequenceConfig(3, 2, hidden=8)).eval()
    y = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        whole = float(torch.nn.functional.cross_entropy(model(x, lengths=lengths)[0], y))
    for batch_size in (1, 3):
        loss, _ = dataset_loss(model, {"inputs": x, "targets": y, "lengths": lengths}, batch_size,
                           torch.device("cpu"))
        assert loss == pytest.approx(whole, rel=1e-5)


def test_many_to_one_learns_parity_of_variable_length_bits():
    # parity needs the whole sequence: a model that ignores steps or padding cannot learn it
    g = torch.Generator().manual_seed(1)
    N, T = 512, 8
    lengths = torch.randint(2, T + 1, (N,), generator=g)
    bits = torch.randint(0, 2, (N, T), generator=g) * (torch.arange(T)[None] < lengths[:, None])
    data = {"inputs": bits[..., None].float(), "lengths": lengths, "targets": bits.sum(1) % 2}
    model = SequenceModel(SequenceConfig(1, 2, cell="gru", hidden=24))
    fit(model, data, None, FitConfig(epochs=40, batch_size=32, lr=2e-2, seed=0, **QUICK),
        quiet=True)
    _, acc = dataset_loss(model, data, 256, torch.device("cpu"), accuracy)
    assert acc > 0.97


def test_many_to_one_regression_learns_the_sum():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(256, 6, 1, generator=g)
    data = {"inputs": x, "targets": x.sum(1)}  # (N, 1)
    model = SequenceModel(SequenceConfig(1, 1, head="regress", hidden=32, bidirectional=True))
    fit(model, data, None, FitConfig(epochs=30, batch_size=32, lr=1e-2, **QUICK), quiet=True)
    loss, _ = dataset_loss(model, data, 256, torch.device("cpu"))
    assert loss < 0.05 * float(x.sum(1).var())


def test_synced_tagger_learns_previous_input():
    # the tag at step t is the input symbol at t-1: only a model with memory can tag it
    g = torch.Generator().manual_seed(3)
    sym = torch.randint(0, 4, (256, 10), generator=g)
    targets = torch.cat([torch.zeros_like(sym[:, :1]), sym[:, :-1]], 1)
    data = {"inputs": torch.nn.functional.one_hot(sym, 4).float(), "targets": targets,
            "lengths": torch.randint(3, 11, (256,), generator=g)}
    model = Tagger(TaggerConfig(4, 4, cell="lstm", hidden=24))
    fit(model, data, None, FitConfig(epochs=20, batch_size=32, lr=1e-2, **QUICK), quiet=True)
    _, acc = dataset_loss(model, data, 256, torch.device("cpu"), accuracy)
    assert acc > 0.98


def test_seq2seq_learns_to_reverse():
    # 0 start, 1 end, symbols 2..7; targets are the reversed input then the end symbol
    g = torch.Generator().manual_seed(4)
    N, S = 1024, 5
    lengths = torch.randint(2, S + 1, (N,), generator=g)
    x = torch.randint(2, 8, (N, S), generator=g) * (torch.arange(S)[None] < lengths[:, None])
    y = torch.ones(N, S + 1, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        y[i, :n] = x[i, :n].flip(0)
    data = {"inputs": x, "lengths": lengths, "targets": y, "target_lengths": lengths + 1}
    model = Seq2Seq(Seq2SeqConfig(8, DecoderConfig(8, cell="gru", hidden=64, embed=16),
                                  bidirectional=True))
    fit(model, data, None, FitConfig(epochs=20, batch_size=32, lr=1e-2, **QUICK), quiet=True)
    test = x[:200], lengths[:200]
    out = model.generate(*test, max_length=S + 2)
    exact = sum(o == x[i, :n].flip(0).tolist() for i, (o, n) in enumerate(zip(out, test[1].tolist(),
                                                                              strict=True)))
    assert exact / 200 > 0.9


def test_conditioned_generator_writes_its_class_sequence():
    # class k -> the sequence k+2, k+3, ..., (length 3 + k), end; generation must follow the class
    K = 4
    seqs = [[k + 2 + i for i in range(3 + k)] + [1] for k in range(K)]
    T = max(map(len, seqs))
    targets = torch.ones(K, T, dtype=torch.long)
    for k, s in enumerate(seqs):
        targets[k, :len(s)] = torch.tensor(s)
    lengths = torch.tensor([len(s) for s in seqs])
    data = {"inputs": torch.arange(K).repeat(16), "targets": targets.repeat(16, 1),
            "lengths": lengths.repeat(16)}
    model = ConditionedGenerator(GeneratorConfig(K, DecoderConfig(12, cell="lstm", hidden=32,
                                                             embed=8)))
    fit(model, data, None, FitConfig(epochs=60, batch_size=16, lr=1e-2, **QUICK), quiet=True)
    assert model.generate(torch.arange(K), max_length=10) == [s[:-1] for s in seqs]
    sampled = model.generate(torch.arange(K), max_length=10, greedy=False, temperature=0.5, seed=0)
    assert sampled == model.generate(torch.arange(K), max_length=10, greedy=False,
                                     temperature=0.5, seed=0)


def test_mlp_baseline_learns_xor_and_cannot_read_order():
    x = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]]).repeat(64, 1)
    data = {"inputs": x, "targets": (x[:, 0] != x[:, 1]).long()}
    model = MLP(MLPConfig(2, 2, hidden=16))
    fit(model, data, None, FitConfig(epochs=40, batch_size=32, lr=1e-2, **QUICK), quiet=True)
    _, acc = dataset_loss(model, data, 256, torch.device("cpu"), accuracy)
    assert acc == 1.0


def test_best_weights_are_kept_and_time_budget_stops():
    g = torch.Generator().manual_seed(5)
    data = {"inputs": torch.randn(64, 4, 2, generator=g), "targets": torch.randint(0, 2, (64,))}
    model = SequenceModel(SequenceConfig(2, 2, hidden=8))
    summary = fit(model, data, data, FitConfig(epochs=5, batch_size=16, **QUICK), quiet=True,
                  metric=accuracy)
    best = max(r["val_metric"] for r in summary["history"])
    assert dataset_loss(model, data, 64, torch.device("cpu"), accuracy)[1] == pytest.approx(best)
    summary = fit(model, data, None, FitConfig(epochs=10**6, batch_size=16, max_time=0.3,
                                               **QUICK), quiet=True)
    assert summary["stopped"] == "time"


class CostlyCalls(SequenceModel):
    """Every evaluation call costs 0.05 s whatever its size, the first one 1 s more (set-up):
    a reserve measured on the first call, or per row of a 5-row validation set, would keep
    seconds for a test that takes a tenth of one."""

    calls = 0

    def forward(self, *args, **kwargs):
        if not self.training:
            CostlyCalls.calls += 1
            time.sleep(1.05 if CostlyCalls.calls == 1 else 0.05)
        return super().forward(*args, **kwargs)


def test_time_budget_is_used_when_the_validation_set_is_tiny():
    g = torch.Generator().manual_seed(7)
    data = {"inputs": torch.randn(64, 4, 2, generator=g), "targets": torch.randint(0, 2, (64,))}
    val = {k: v[:5] for k, v in data.items()}
    model = CostlyCalls(SequenceConfig(2, 2, hidden=8))
    started = time.monotonic()
    summary = fit(model, data, val, FitConfig(epochs=0, batch_size=16, max_time=3.0, **QUICK),
                  quiet=True, started=started, test_rows=300)
    predict(model, data, 256)  # the caller's test: 2 calls, 0.1 s
    elapsed = time.monotonic() - started
    assert summary["stopped"] == "time" and 2.0 < elapsed <= 3.0 + 0.15, summary
    assert summary["train_seconds"] > 0.8, summary  # was 0: the reserve alone filled the budget


class SlowToEvaluate(SequenceModel):
    """Evaluation takes 0.1 s a batch, training steps stay fast: a budget must plan for it."""

    def forward(self, *args, **kwargs):
        if not self.training:
            time.sleep(0.1)
        return super().forward(*args, **kwargs)


def test_time_budget_leaves_room_for_the_last_evaluation_and_the_test():
    g = torch.Generator().manual_seed(6)
    data = {"inputs": torch.randn(64, 4, 2, generator=g), "targets": torch.randint(0, 2, (64,))}
    val = {"inputs": torch.randn(320, 4, 2, generator=g), "targets": torch.randint(0, 2, (320,))}
    model = SlowToEvaluate(SequenceConfig(2, 2, hidden=8))
    started = time.monotonic()  # the budget is the caller's, from its start
    time.sleep(0.3)  # reading data
    summary = fit(model, data, val, FitConfig(epochs=10**6, batch_size=16, max_time=2.0,
                                              **QUICK), quiet=True, started=started,
                  test_rows=320)
    predict(model, val, 64)  # the caller's test: 5 batches, 0.5 s
    elapsed = time.monotonic() - started
    assert summary["stopped"] == "time" and len(summary["history"]) >= 1
    assert elapsed <= 2.0 + 0.15, summary  # each validation alone takes 0.5 s
    assert summary["eval_seconds"] >= 0.5 * len(summary["history"])
    with pytest.raises(RnnkitError, match="budget of 2s was spent before training began"):
        fit(model, data, val, FitConfig(max_time=2.0, **QUICK), started=time.monotonic() - 2.5,
            quiet=True)


def test_schedule_and_config_errors():
    cfg = FitConfig(lr=1.0, warmup=10, lr_min=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(100, 100, cfg) == pytest.approx(0.1)
    with pytest.raises(RnnkitError, match="pool"):
        SequenceConfig(3, 2, pool="median")
    with pytest.raises(RnnkitError, match="head"):
        SequenceConfig(3, 2, head="rank")
    with pytest.raises(RnnkitError, match="epochs"):
        FitConfig(epochs=0)  # until the time is up, with no time budget
    assert FitConfig(epochs=0, max_time=5).epochs == 0
    with pytest.raises(RnnkitError, match="conv"):
        SequenceConfig(3, 2, conv=-1)



class Priced(SequenceModel):
    """Each call costs what `costs` says (a training step, an evaluation batch) on a clock of
    its own, and nothing else costs anything: the budget's arithmetic, free of the machine's."""

    clock = [0.0]
    costs = (0.3, 0.3)

    def forward(self, *args, **kwargs):
        Priced.clock[0] += self.costs[0] if self.training else self.costs[1]
        return super().forward(*args, **kwargs)


@pytest.mark.parametrize("costs", [(0.3, 0.3), (0.3, 0.1), (0.2, 0.05), (0.1, 0.3)])
def test_time_budget_holds_after_each_evaluation(monkeypatch, costs):
    # After an evaluation two steps are taken before the next check: they and the last
    # evaluation must fit (with steps as slow as evaluations, 2.5 s became 3.0 s).
    from rnnkit import engine, fitting

    clock = types.SimpleNamespace(monotonic=lambda: Priced.clock[0])
    monkeypatch.setattr(engine, "time", clock)
    monkeypatch.setattr(fitting, "time", clock)
    monkeypatch.setattr(Priced, "costs", costs)
    g = torch.Generator().manual_seed(6)
    data = {"inputs": torch.randn(64, 4, 2, generator=g), "targets": torch.randint(0, 2, (64,))}
    val = {k: v[:16] for k, v in data.items()}
    for budget in (2.0, 2.5, 3.0, 4.0, 7.0):
        Priced.clock[0] = 0.0
        summary = fit(Priced(SequenceConfig(2, 2, hidden=8)), data, val,
                      FitConfig(epochs=10**6, batch_size=16, max_time=budget, **QUICK),
                      quiet=True, started=0.0)
        assert summary["stopped"] == "time" and Priced.clock[0] <= budget, (budget, summary)


def test_fit_reads_arrays_and_refuses_bad_ones_in_one_line(tmp_path):
    # NumPy arrays, as the README's example passes them (they ended in an AttributeError)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 6, 3))  # float64
    y = (x[:, :, 0].mean(1) > 0).astype(np.int64)
    lengths = np.full(24, 6)
    model = SequenceModel(SequenceConfig(3, 2, hidden=8))
    run = tmp_path / "absent" / "run"  # made by fit (the first checkpoint's write failed)
    summary = fit(model, {"inputs": x, "lengths": lengths, "targets": y.astype(float)}, None,
                  FitConfig(epochs=1, batch_size=8, **QUICK), run_dir=run, quiet=True)
    assert summary["epochs"] == 1 and (run / "model.safetensors").is_file()
    cfg = FitConfig(epochs=1, batch_size=8, **QUICK)
    pixels = rng.integers(0, 256, (24, 6, 3)).astype(np.uint8)  # features as integers: floats
    for reader in (Tagger(TaggerConfig(3, 2, hidden=8)), MLP(MLPConfig(18, 2, hidden=8))):
        targets = np.tile(y[:, None], (1, 6)) if isinstance(reader, Tagger) else y
        fit(reader, {"inputs": pixels, "targets": targets}, None, cfg, quiet=True)
    for data, message in (
            ({"inputs": x, "labels": y}, r"train has \['labels'\], which SequenceModel does not "
             r"take; its keys are \['inputs', 'targets', 'lengths', 'state'\]"),
            ({"inputs": x}, "train has no 'targets'"),
            ({"inputs": x, "targets": y, "lengths": lengths + 1},
             r"train\['lengths'\] must be from 1 to the inputs' 6 steps, got 7 to 7"),
            ({"inputs": np.where(x > 2, np.nan, x), "targets": y}, "holds NaN or infinite"),
            ({"inputs": x, "targets": y + 1}, "must be class ids from 0 to 1, got 2"),
            ({"inputs": x, "targets": y * 0.5}, "must be class ids from 0 to 1, got a fraction"),
            ({"inputs": x, "targets": ["a"] * 24}, r"train\['targets'\] is not an array of "
             "numbers"),
            ((x, y), "train must be a dict of arrays"),
            # checked before training, not broadcast or failing inside torch
            ({"inputs": x[:, :, :1], "targets": y}, r"train\['inputs'\] has 1 features per "
             r"step, and the model reads 3 \(its input_size\)"),
            ({"inputs": x[:, :0], "targets": y}, "has no time steps"),
            ({"inputs": x, "targets": y, "lengths": lengths - 0.5}, "must be whole numbers"),
            ({"inputs": x, "targets": y, "lengths": lengths[:, None]}, r"shape \(N,\)"),
            ({"inputs": x[..., 0], "targets": y}, r"must be sequences \(N, T, 3\), got shape "
             r"\(24, 6\)")):
        with pytest.raises(RnnkitError, match=message):
            fit(model, data, None, cfg, quiet=True)


def test_fit_checks_ids_and_shapes_before_training():
    # ids out of range ended in torch's IndexError or "Class values must be smaller than
    # num_classes"; float token ids in "Expected tensor ... Long"; class ids given to a
    # generator of condition vectors in a matrix product's shape error
    rng = np.random.default_rng(0)
    decoder, cfg, N = DecoderConfig(6, hidden=8, embed=4), FitConfig(epochs=1, **QUICK), 12
    tokens = rng.integers(2, 6, (N, 5))
    generator, seq2seq = (ConditionedGenerator(GeneratorConfig(3, decoder)),
                          Seq2Seq(Seq2SeqConfig(5, decoder)))
    for model, data, message in (
            (generator, {"inputs": rng.integers(3, 5, N), "targets": tokens},
             r"train\['inputs'\] must be class ids from 0 to 2, got 3 to 4"),
            (generator, {"inputs": rng.integers(0, 3, N), "targets": tokens + 3},
             r"train\['targets'\] must be token ids from 0 to 5, got 5 to 8"),
            (seq2seq, {"inputs": rng.integers(5, 7, (N, 4)), "targets": tokens},
             r"train\['inputs'\] must be token ids from 0 to 4, got 5 to 6"),
            (ConditionedGenerator(GeneratorConfig(3, decoder, classes=False)),
             {"inputs": rng.integers(0, 3, N), "targets": tokens},
             r"the conditions must be vectors \(B, 3\), got shape \(12,\)")):
        with pytest.raises(RnnkitError, match=message):
            fit(model, data, None, cfg, quiet=True)
    for model, data, message in (
            (MLP(MLPConfig(4, 2, hidden=8)), {"inputs": np.zeros((N, 5)), "targets": tokens[:, 0] % 2},
             r"hold 5 values a row \(shape \(12, 5\)\), and the MLP reads 4"),
            (Tagger(TaggerConfig(3, 2, hidden=8)), {"inputs": np.zeros((N, 6, 3)),
                                                     "targets": np.zeros((N, 8))},
             r"must be one per step, \(N, T\) = \(12, 6\) as the inputs, got shape \(12, 8\)")):
        with pytest.raises(RnnkitError, match=message):  # torch's shape errors before
            fit(model, data, None, cfg, quiet=True)
    floats = {"inputs": rng.integers(0, 5, (N, 4)).astype(float), "targets": tokens}
    assert fit(seq2seq, floats, None, cfg, quiet=True)["epochs"] == 1  # whole floats are ids


def test_fit_cuts_only_per_step_targets_and_gives_back_the_random_generator():
    # A regression of 6 values from sequences of 6 steps: its targets were cut to the longest
    # sequence of the batch, as if they were one per step
    g = torch.Generator().manual_seed(1)
    x, lengths = ragged(n=16, T=6, F=2)
    data = {"inputs": x, "lengths": lengths, "targets": torch.randn(16, 6, generator=g)}
    model = SequenceModel(SequenceConfig(2, 6, hidden=8, head="regress"))
    torch.manual_seed(123)
    fit(model, data, None, FitConfig(epochs=2, batch_size=4, **QUICK), quiet=True)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)  # fit left it where it was, not reseeded
    # A tagger's padding may hold any target (-1 here): only the real steps count
    tags = torch.randint(0, 3, (16, 6), generator=g)
    tags[torch.arange(6)[None, :] >= lengths[:, None]] = -1
    tagger = Tagger(TaggerConfig(2, 3, hidden=8))
    fit(tagger, {"inputs": x, "lengths": lengths, "targets": tags}, None,
        FitConfig(epochs=1, batch_size=4, **QUICK), quiet=True)


def test_load_names_an_unknown_device_or_kind(tmp_path):
    for device, message in (("gpu", "unknown device 'gpu'; give cpu, cuda, cuda:N or auto"),
                            ("meta", "rnnkit runs on a device that holds data, not 'meta'")):
        with pytest.raises(RnnkitError, match=message):
            rnnkit.load(tmp_path, device=device)
    with pytest.raises(RnnkitError, match="kind must be one of 'rnnkit-run'"):
        rnnkit.load(tmp_path, kind="classifier")


def test_configs_built_in_python_check_their_types():
    # "false" made a bidirectional model; 2.5 epochs and 16.0 units failed deep in torch
    for build, message in (
            (lambda: SequenceConfig(3, 2, bidirectional="false"),
             "SequenceConfig.bidirectional must be bool, got 'false'"),
            (lambda: FitConfig(bucket="no"), "FitConfig.bucket must be bool"),
            (lambda: FitConfig(epochs=2.5), "FitConfig.epochs must be int, got 2.5"),
            (lambda: FitConfig(max_time=float("nan")), "max_time must be a finite number"),
            (lambda: rnnkit.ModelConfig(hidden=16.0), "ModelConfig.hidden must be int"),
            (lambda: SequenceConfig(3, 2, hidden=10**6), "model sizes must stay below 65536")):
        with pytest.raises(RnnkitError, match=message):
            build()
    # NumPy's numbers (a length read from an array) are numbers, stored as Python's
    config = SequenceConfig(np.int64(3), 2, pad_to=np.int64(5), dropout=np.float32(0.25))
    assert type(config.pad_to) is int and config.dropout == 0.25 and type(config.dropout) is float


def test_a_fit_in_memory_that_diverges_leaves_the_model_as_it_was():
    x, lengths = ragged(n=16, T=6, F=2)
    data = {"inputs": x, "lengths": lengths, "targets": torch.randn(16, 2) * 1e30}  # inf loss
    model = SequenceModel(SequenceConfig(2, 2, hidden=8, head="regress"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RnnkitError, match="stopped, and the model keeps the weights it had"):
        fit(model, data, None, FitConfig(epochs=3, batch_size=4, **QUICK), quiet=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # not NaN
    with pytest.raises(RnnkitError, match="on_nan='rollback' goes back to the last checkpoint"):
        fit(model, data, None, FitConfig(on_nan="rollback", **QUICK), quiet=True)


def test_generate_checks_its_inputs_in_one_line():
    # each was accepted with a wrong result (1.7 read as 1; one 1-D sequence as three) or
    # failed deep in torch
    generator = ConditionedGenerator(GeneratorConfig(3, DecoderConfig(6, hidden=8)))
    s2s = Seq2Seq(Seq2SeqConfig(5, DecoderConfig(6, hidden=8)))
    assert len(generator.generate([0, 2], max_length=3)) == 2  # a list of class ids reads
    for call, message in (
            (lambda: generator.generate(torch.tensor([5])), "class ids from 0 to 2, got 5 to 5"),
            (lambda: generator.generate(torch.tensor([1.7])), "whole numbers, got fractions"),
            (lambda: generator.generate(torch.zeros(2, 3)), r"of shape \(B,\), got shape"),
            (lambda: s2s.generate(torch.tensor([1, 2, 3])), r"of shape \(B, S\), got shape \(3,\)"),
            (lambda: s2s.generate([[1, 2, 9]]), "token ids from 0 to 4, got 1 to 9"),
            (lambda: s2s.generate([[1, 2, 3]], lengths=[5]), "from 1 to the inputs' 3 steps"),
            (lambda: s2s.generate([[1, 2, 3]], max_length="5"), "max_length must be a positive")):
        with pytest.raises(RnnkitError, match=message):
            call()


def test_fit_resumes_only_the_run_it_continues(tmp_path):
    # Other batch settings or other data continued the run silently, with other batches
    x, lengths = ragged(n=16, T=6, F=2)
    data = {"inputs": x, "lengths": lengths, "targets": torch.randint(0, 2, (16,))}
    model = SequenceModel(SequenceConfig(2, 2, hidden=8))
    fit(model, data, None, FitConfig(epochs=2, batch_size=8, **QUICK), run_dir=tmp_path,
        quiet=True)
    for changed, message in (({"batch_size": 4}, "batch_size 8 \\(4 now\\)"),
                             ({"seed": 9}, "seed 0 \\(9 now\\)")):
        with pytest.raises(RnnkitError, match=f"was trained with {message}; resume with the"):
            fit(model, data, None, FitConfig(**{"epochs": 4, "batch_size": 8, **changed},
                                             **QUICK), run_dir=tmp_path, resume=True, quiet=True)
    fewer = {k: v[:12] for k, v in data.items()}
    with pytest.raises(RnnkitError, match="rows 16 \\(12 now\\)"):
        fit(model, fewer, None, FitConfig(epochs=4, batch_size=8, **QUICK), run_dir=tmp_path,
            resume=True, quiet=True)
    summary = fit(model, data, None, FitConfig(epochs=4, batch_size=8, **QUICK), run_dir=tmp_path,
                  resume=True, quiet=True)
    assert summary["epochs"] == 4
    # without resume=True the run was written over: its checkpoints and log replaced
    before = (tmp_path / "last.safetensors").read_bytes()
    with pytest.raises(RnnkitError, match="already holds a run; pass resume=True to continue it"):
        fit(model, fewer, None, FitConfig(epochs=1, batch_size=8, **QUICK), run_dir=tmp_path,
            quiet=True)
    assert (tmp_path / "last.safetensors").read_bytes() == before


def test_what_the_input_checks_must_still_take():
    # a vector-conditioned generator's lengths are its targets', not its condition's (2 here)
    g = torch.Generator().manual_seed(2)
    generator = ConditionedGenerator(GeneratorConfig(2, DecoderConfig(6, hidden=8), classes=False))
    fit(generator, {"inputs": torch.randn(8, 2, generator=g),
                    "targets": torch.randint(2, 6, (8, 5), generator=g),
                    "lengths": torch.tensor([5, 4, 3, 5, 5, 2, 5, 5])}, None,
        FitConfig(epochs=1, batch_size=4, **QUICK), quiet=True)
    # NaN in a per-step model's padding: only the real steps count
    x, lengths = ragged(n=8, T=6, F=2)
    values = torch.randn(8, 6, 1, generator=g)
    values[torch.arange(6)[None, :] >= lengths[:, None]] = float("nan")
    fit(Tagger(TaggerConfig(2, 1, hidden=8, head="regress")),
        {"inputs": x, "lengths": lengths, "targets": values}, None,
        FitConfig(epochs=1, batch_size=4, **QUICK), quiet=True)
    # NumPy's bool and float are a bool and a float
    assert TaggerConfig(2, 2, bidirectional=np.True_).bidirectional is True


def test_fit_into_a_run_dir_another_training_writes_is_refused(tmp_path):
    # fit took no lock: two fits into one run_dir interleaved their metrics and checkpoints
    import subprocess
    import sys

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rnnkit.checkpoint import RunLock\n"
         f"with RunLock({str(run)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        x, lengths = ragged(n=16, T=6, F=2)
        model = SequenceModel(SequenceConfig(2, 2, hidden=8))
        data = {"inputs": x, "lengths": lengths, "targets": torch.arange(16) % 2}
        with pytest.raises(RnnkitError, match=f"another training \\(pid {holder.pid}\\) is "
                           "writing to"):
            fit(model, data, None, FitConfig(epochs=1, batch_size=8, **QUICK), run_dir=run,
                quiet=True)
    finally:
        holder.kill()
        holder.communicate()
    # its lock released, the same call trains (and a command's own lock is taken again inside)
    summary = fit(model, data, None, FitConfig(epochs=1, batch_size=8, **QUICK), run_dir=run,
                  quiet=True)
    assert summary["epochs"] == 1


def test_greedy_decoding_refuses_what_only_sampling_uses():
    # temperature and seed were ignored with greedy left at its default: the same text for all
    model = Seq2Seq(Seq2SeqConfig(5, DecoderConfig(vocab_size=6, hidden=8)))
    for options in ({"temperature": 5.0}, {"seed": 1}):
        with pytest.raises(RnnkitError, match="greedy decoding \\(the default\\) takes the most "
                           "likely token"):
            model.generate(torch.tensor([[2, 3, 4]]), **options)
    assert len(model.generate(torch.tensor([[2, 3, 4]]), greedy=False, temperature=5.0,
                              seed=1)) == 1


def test_fit_refuses_one_hot_targets_and_a_set_without_inputs():
    # both reached PyTorch's errors (a batch-size mismatch; forward() missing 'inputs')
    model = SequenceModel(SequenceConfig(2, 2, hidden=8))
    x, y = torch.randn(8, 5, 2), torch.randint(0, 2, (8,))
    cfg = FitConfig(epochs=1, batch_size=4, **QUICK)
    with pytest.raises(RnnkitError, match=r"of a classifier are one class id per row, shape "
                       r"\(N,\), got shape \(8, 2\); one-hot rows are y.argmax\(1\)"):
        fit(model, {"inputs": x, "targets": np.eye(2)[y]}, None, cfg, quiet=True)
    with pytest.raises(RnnkitError, match="val has no 'inputs', which SequenceModel reads"):
        fit(model, {"inputs": x, "targets": y}, {"targets": y}, cfg, quiet=True)
