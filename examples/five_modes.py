"""Karpathy's five modes, each on a tiny task that makes its point, with rnnkit's task models.

    python examples/five_modes.py

    one-to-one     MLP(MLPConfig)                         a fixed vector in, a class out (no RNN at all)
    one-to-many    ConditionedGenerator(GeneratorConfig)  a vector sets the first state, a sequence comes out
    many-to-one    SequenceModel(SequenceConfig)          a sequence in, one class out
    many-to-many   Seq2Seq(Seq2SeqConfig)                 an encoder reads a sequence, a decoder writes one
    synced         Tagger(TaggerConfig)                   one output for every input step

Karpathy's examples of each: image classification, image captioning, sentiment analysis, machine
translation, labelling every frame of a video. Here each gets a task small enough to learn in a second
or two. Every model (from `rnnkit.tasks`) is built from its config and trained with the same loop,
`rnnkit.fit`, on data made here with a fixed seed, and tested on examples it never saw in training.
Each mode prints one example and its test accuracy.
The whole script takes about ten seconds on one CPU core.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rnnkit.fitting import FitConfig, accuracy, dataset_loss, fit
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

CPU = torch.device("cpu")
START, END = 0, 1  # the decoders' start and end symbols; the other symbols come after them


def config(**kw) -> FitConfig:
    return FitConfig(device="cpu", seed=0, warmup=10, weight_decay=0.0, **kw)


def report(mode: str, acc: float, what: str) -> None:
    print(f"  {mode}: test accuracy {100 * acc:.1f}% ({what})")
    print()


def one_to_one() -> float:
    """XOR of signs: a point (x1, x2) is class 1 when exactly one coordinate is negative."""
    g = torch.Generator().manual_seed(1)  # this mode's data
    print("1. One-to-one (MLP): a point (x1, x2) in, its class out; class 1 when x1 and x2 have")
    print("   different signs (XOR), which no straight line separates.")

    def data(n: int) -> dict[str, torch.Tensor]:
        x = torch.rand(n, 2, generator=g) * 2 - 1  # (N, 2) in [-1, 1]
        return {"inputs": x, "targets": ((x[:, 0] > 0) != (x[:, 1] > 0)).long()}

    train, test = data(1000), data(1000)
    torch.manual_seed(0)  # the initial weights
    model = MLP(MLPConfig(2, 2, hidden=32, layers=2))
    fit(model, train, None, config(epochs=10, batch_size=64, lr=1e-2), quiet=True)
    point = torch.tensor([[0.5, -0.3]])
    print(f"   e.g. (0.5, -0.3) -> class {int(model(point)[0].argmax())}")
    _, acc = dataset_loss(model, test, 500, CPU, accuracy)
    report("one-to-one", acc, "1000 unseen points")
    return acc


def one_to_many() -> float:
    """A caption for an 'image': 10 lamps, 1 to 4 of them on -> the numbers of the lamps that are on."""
    g = torch.Generator().manual_seed(2)  # this mode's data
    print("2. One-to-many (ConditionedGenerator): an 'image' of 10 lamps, 1 to 4 of them on, sets the")
    print("   first state; the decoder writes its caption, the numbers of the lamps that are on.")
    lamps, most = 10, 4
    # every image with 1 to 4 lamps on (385 of them), shuffled; 300 to train, 85 never seen
    images = [torch.tensor(on) for on in _subsets(lamps, most)]
    order = torch.randperm(len(images), generator=g).tolist()
    images = [images[i] for i in order]

    def data(subset: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = torch.zeros(len(subset), lamps)  # (N, 10): 1 where a lamp is on
        y = torch.full((len(subset), most + 1), END)  # (N, T): lamp numbers, then END (as padding too)
        for i, on in enumerate(subset):
            x[i, on] = 1.0
            y[i, :len(on)] = on + 2  # lamp k is symbol k + 2
        return {"inputs": x, "targets": y}

    train, test = data(images[:300]), data(images[300:])
    torch.manual_seed(0)
    decoder = DecoderConfig(lamps + 2, cell="gru", hidden=64, embed=16, start=START, end=END)
    model = ConditionedGenerator(GeneratorConfig(lamps, decoder, classes=False))
    fit(model, train, None, config(epochs=40, batch_size=32, lr=1e-2), quiet=True)
    written = model.generate(test["inputs"], max_length=most + 2)  # greedy
    right = [w == [int(k) + 2 for k in on] for w, on in zip(written, images[300:], strict=True)]
    lamps_on = "".join("1" if v else "0" for v in test["inputs"][0].tolist())
    print(f"   e.g. lamps {lamps_on} -> caption {' '.join(str(s - 2) for s in written[0])}")
    acc = sum(right) / len(right)
    report("one-to-many", acc, f"whole captions right for {sum(right)} of {len(right)} unseen images")
    return acc


def _subsets(n: int, most: int) -> list[list[int]]:
    """All increasing lists of 1 to `most` numbers from range(n)."""
    out: list[list[int]] = [[]]
    for k in range(n):
        out += [s + [k] for s in out if len(s) < most]
    return [s for s in out if s]


def many_to_one() -> float:
    """Sequences of 5 to 20 numbers: does the whole sequence add up to more than zero?"""
    g = torch.Generator().manual_seed(3)  # this mode's data
    print("3. Many-to-one (SequenceModel): a sequence of 5 to 20 numbers in, one answer out: does")
    print("   it add up to more than zero? The model must read every step; lengths vary in a batch.")
    T = 20

    def data(n: int) -> dict[str, torch.Tensor]:
        lengths = torch.randint(5, T + 1, (n,), generator=g)
        x = torch.randn(n, T, generator=g) * (torch.arange(T)[None] < lengths[:, None])  # (N, T), 0 padded
        return {"inputs": x[..., None], "lengths": lengths, "targets": (x.sum(1) > 0).long()}

    train, test = data(1000), data(1000)
    torch.manual_seed(0)
    model = SequenceModel(SequenceConfig(1, 2, cell="gru", hidden=32))
    fit(model, train, None, config(epochs=8, batch_size=32, lr=1e-2), quiet=True)
    x = torch.tensor([[0.9, -1.2, 0.4, -0.5, 0.1, 0.6]])[..., None]  # sum 0.3
    print(f"   e.g. 0.9 -1.2 0.4 -0.5 0.1 0.6 (sum 0.3) -> {'yes' if model(x)[0].argmax() else 'no'}")
    _, acc = dataset_loss(model, test, 500, CPU, accuracy)
    report("many-to-one", acc, "1000 unseen sequences")
    return acc


def encoder_decoder() -> float:
    """Reverse a string of 2 to 5 letters from a-h: the encoder reads it all before the decoder writes."""
    g = torch.Generator().manual_seed(4)  # this mode's data
    print("4. Many-to-many, encoder/decoder (Seq2Seq): a string of 2 to 5 letters a-h in, the same")
    print("   string reversed out; the decoder starts writing only after the encoder has read it all.")
    letters, S = "abcdefgh", 5

    def data(n: int) -> dict[str, torch.Tensor]:
        lengths = torch.randint(2, S + 1, (n,), generator=g)
        x = torch.randint(2, 2 + len(letters), (n, S), generator=g)
        x = x * (torch.arange(S)[None] < lengths[:, None])  # (N, S), 0 padded
        y = torch.full((n, S + 1), END)  # (N, S + 1): the reversed string, then END
        for i, k in enumerate(lengths.tolist()):
            y[i, :k] = x[i, :k].flip(0)
        return {"inputs": x, "lengths": lengths, "targets": y, "target_lengths": lengths + 1}

    def text(ids) -> str:
        return "".join(letters[int(i) - 2] for i in ids)

    train, test = data(4000), data(1000)
    seen = {text(x[:k]) for x, k in zip(train["inputs"], train["lengths"].tolist(), strict=True)}
    keep = torch.tensor([text(x[:k]) not in seen
                         for x, k in zip(test["inputs"], test["lengths"].tolist(), strict=True)])
    test = {name: v[keep] for name, v in test.items()}  # only strings never seen in training
    torch.manual_seed(0)
    decoder = DecoderConfig(2 + len(letters), cell="gru", hidden=128, embed=16, start=START, end=END)
    model = Seq2Seq(Seq2SeqConfig(2 + len(letters), decoder))  # input symbols: 0 padding, letters from 2
    fit(model, train, None, config(epochs=4, batch_size=32, lr=5e-3), quiet=True)
    written = model.generate(test["inputs"], test["lengths"], max_length=S + 2)
    strings = [text(x[:k]) for x, k in zip(test["inputs"], test["lengths"].tolist(), strict=True)]
    right = [text(w) == s[::-1] for w, s in zip(written, strings, strict=True)]
    print(f"   e.g. {strings[0]} -> {text(written[0])}")
    acc = sum(right) / len(right)
    report("encoder/decoder", acc, f"whole strings right for {sum(right)} of {len(right)} unseen strings")
    return acc


def synced() -> float:
    """Tag each bit of a string with whether the count of 1s so far is even."""
    g = torch.Generator().manual_seed(5)  # this mode's data
    print("5. Synced many-to-many (Tagger): a string of 10 to 30 bits in, one tag per bit out: is the")
    print("   count of 1s so far even? Each tag depends on everything before it.")
    T = 30

    def data(n: int) -> dict[str, torch.Tensor]:
        lengths = torch.randint(10, T + 1, (n,), generator=g)
        bits = torch.randint(0, 2, (n, T), generator=g) * (torch.arange(T)[None] < lengths[:, None])
        even = (bits.cumsum(1) % 2 == 0).long()  # (N, T): 1 where the count so far is even
        return {"inputs": F.one_hot(bits, 2).float(), "lengths": lengths, "targets": even}

    train, test = data(1000), data(1000)
    torch.manual_seed(0)
    model = Tagger(TaggerConfig(2, 2, cell="gru", hidden=16))
    fit(model, train, None, config(epochs=10, batch_size=32, lr=1e-2), quiet=True)
    bits = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0])
    tags, _ = model(F.one_hot(bits, 2).float()[None])  # (1, T, 2)
    shown = " ".join("even" if t else "odd" for t in tags[0].argmax(-1).tolist())
    print(f"   e.g. {' '.join(map(str, bits.tolist()))} -> {shown}")
    _, acc = dataset_loss(model, test, 500, CPU, accuracy)
    report("synced", acc, "every step of 1000 unseen strings")
    return acc


def main() -> None:
    torch.set_num_threads(1)  # models this small run fastest on one thread
    results = {}
    for mode, run in (("one-to-one", one_to_one), ("one-to-many", one_to_many),
                      ("many-to-one", many_to_one), ("encoder/decoder", encoder_decoder),
                      ("synced", synced)):
        results[mode] = run()
    print("Test accuracy: "
          + ", ".join(f"{mode} {100 * acc:.1f}%" for mode, acc in results.items()))


if __name__ == "__main__":
    main()
