"""Fine-tuning (--init-from): the weights carried over row by row, the vocabulary grown, a
fine-tuned run used like any other (eval, sample, resume, the playground), and the options that
contradict the base refused."""

import json
import re

import pytest
import torch
from conftest import PANGRAM, TINY, one_error_line, torchrun
from test_scale import assert_same_run

import rnnkit
from rnnkit import CharLM, ModelConfig, Vocab, checkpoint, finetune
from rnnkit.serve import load_runs
from rnnkit.viz import run_info, trace, trace_data

NEW_TEXT = "the quick brown fox jumps over the lazy dog. é! ¿Qué?\n" * 40


@pytest.fixture
def base_run(cli, corpus, tmp_path):
    run = tmp_path / "base"
    assert cli("train", corpus, "--out", run, "--max-steps", 30, *TINY)[0] == 0
    return run


def test_a_grown_vocabulary_is_the_sorted_union_and_keeps_its_kind():
    old = Vocab("char", tuple(map(ord, "abz")))
    grown = old.grown(map(ord, "zqa!"))
    assert grown == Vocab("char", tuple(map(ord, "!abqz")))
    assert old.grown([]) == old
    assert Vocab("byte", (1, 7)).grown([3]).kind == "byte"
    assert grown.index("b") == 2 != old.index("b")  # ids follow the codes: map rows by code


def test_transplant_keeps_every_old_row_and_the_fresh_rows_of_new_symbols():
    torch.manual_seed(0)
    old = Vocab("char", tuple(map(ord, " abc")))
    base = CharLM(ModelConfig(vocab_size=4, hidden=8, layers=2), old)
    new = old.grown(map(ord, "!é"))
    torch.manual_seed(1)
    model = CharLM(ModelConfig(vocab_size=6, hidden=8, layers=2), new)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    finetune.transplant(model, base)
    rows = [new.index(c) for c in old.codes]
    added = [new.index(c) for c in map(ord, "!é")]
    for name, value in base.state_dict().items():
        got = model.state_dict()[name]
        if name in finetune.ROWS:
            assert torch.equal(got[rows], value) and torch.equal(got[added], fresh[name][added])
        else:
            assert torch.equal(got, value)
    # The same text gives the old symbols the same logits as the base model (state carried).
    x = torch.tensor([[old.index(ch) for ch in "abc cab"]])
    x_new = torch.tensor([[new.index(ch) for ch in "abc cab"]])
    base.eval(), model.eval()
    want, _, _ = base(x)
    got, _, _ = model(x_new)
    torch.testing.assert_close(got[..., rows], want)


def test_finetuning_starts_from_the_base_weights_and_grows_the_vocabulary(cli, base_run,
                                                                          tmp_path):
    text = tmp_path / "new.txt"
    text.write_text(NEW_TEXT, encoding="utf-8")
    run = tmp_path / "tuned"
    status, out, err = cli("train", text, "--init-from", base_run, "--out", run,
                           "--max-steps", 20, *TINY)
    assert status == 0, err
    assert re.search(r"vocabulary grew by 5 symbols \('!', '\?', 'Q', '¿', 'é'\) to \d+", out)
    _, base_cfg, base_vocab = checkpoint.read_run_config(base_run)
    config, cfg, vocab = checkpoint.read_run_config(run)
    assert set(vocab.codes) == set(base_vocab.codes) | set(map(ord, "é!¿Q?"))
    assert (cfg.hidden, cfg.layers, cfg.vocab_size) == (base_cfg.hidden, 1, len(vocab))
    assert config["train"]["init_from"] == str(base_run)
    # A fine-tuned run is a run: eval, sample and --resume read it.
    status, out, _ = cli("eval", run)
    assert status == 0 and "val_loss" in out
    assert cli("sample", run, "--prime", "é", "--length", 20, "--seed", 1)[0] == 0
    assert cli("train", text, "--init-from", base_run, "--out", run, "--max-steps", 30, *TINY,
               "--resume")[0] == 0


def test_finetuning_begins_where_the_base_model_ends(cli, corpus, base_run, tmp_path):
    """On the base's own text with a learning rate too small to move the weights, the new run's
    validation loss is the base's; from scratch it would be about ln(V), 3.3."""
    run = tmp_path / "tuned"
    status, out, err = cli("train", corpus, "--init-from", base_run, "--out", run,
                           "--max-steps", 1, "--lr", 1e-12, *TINY)
    assert status == 0, err
    assert "the text adds no symbols" in out
    base_loss = float(re.search(r"val_loss (\S+)", cli("eval", base_run)[1]).group(1))
    tuned_loss = float(re.search(r"val_loss (\S+)", cli("eval", run)[1]).group(1))
    assert base_loss < 3.0 and tuned_loss == pytest.approx(base_loss, abs=1e-3)


def test_the_python_api_takes_init_from(corpus, base_run, tmp_path):
    summary = rnnkit.train([str(corpus)], str(tmp_path / "tuned"),
                           ModelConfig(hidden=32, layers=1),
                           rnnkit.TrainConfig(max_steps=5, seq_len=16, batch_size=4, eval_every=5,
                                              sample_length=0, warmup=2),
                           quiet=True, init_from=str(base_run))
    assert summary["steps"] == 5
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["train"]["init_from"] == str(base_run)
    # a field at its default value is the base's, unless `given` names it (as the README says)
    cfg = rnnkit.TrainConfig(max_steps=1, seq_len=16, batch_size=4, eval_every=1,
                             sample_length=0)
    for given, dropout in ((None, rnnkit.load("builtin").config.dropout), ({"dropout"}, 0.0)):
        out = tmp_path / f"builtin-{dropout}"
        rnnkit.train([str(corpus)], str(out), ModelConfig(dropout=0.0), cfg, quiet=True,
                     init_from="builtin", given=given)
        assert json.loads((out / "config.json").read_text())["model"]["dropout"] == dropout
    with pytest.raises(rnnkit.RnnkitError, match="--layers 2 differs from"):
        rnnkit.train([str(corpus)], str(tmp_path / "shape"), ModelConfig(), cfg, quiet=True,
                     init_from=str(base_run), given={"hidden", "layers"})


@pytest.mark.parametrize("options, words", [
    (["--hidden", "64"], "--hidden 64 differs from"),
    (["--layers", "2"], "--layers 2 differs from"),
    (["--cell", "gru"], "--cell gru differs from"),
    (["--tokenizer", "byte"], "--tokenizer byte differs from"),
    (["--embed", "16"], "--embed 16 differs from"),
])
def test_options_that_contradict_the_base_are_refused(cli, corpus, base_run, tmp_path, options,
                                                      words):
    run = tmp_path / "tuned"
    status, _, err = cli("train", corpus, "--init-from", base_run, "--out", run,
                         "--max-steps", 5, "--seq-len", 16, "--batch-size", 4, *options)
    line = one_error_line(err)
    assert status == 2 and words in line and "--init-from" in line
    assert not (run / "config.json").exists()


@pytest.mark.parametrize("embed", ["32", "0"])
def test_an_embedding_size_that_is_the_bases_is_accepted(cli, corpus, base_run, tmp_path, embed):
    # the base's 32 (its hidden size, as embed 0 says), given either way, without --hidden
    assert cli("train", corpus, "--init-from", base_run, "--out", tmp_path / "tuned",
               "--max-steps", 2, "--seq-len", 16, "--batch-size", 4, "--embed", embed)[0] == 0


def test_dropout_may_change_and_is_recorded(cli, corpus, base_run, tmp_path):
    run = tmp_path / "tuned"
    assert cli("train", corpus, "--init-from", base_run, "--out", run, "--max-steps", 5,
               *TINY, "--dropout", "0.2")[0] == 0
    assert checkpoint.read_run_config(run)[1].dropout == 0.2


def test_a_missing_or_wrong_base_is_one_line_naming_init_from(cli, corpus, tmp_path):
    status, _, err = cli("train", corpus, "--init-from", tmp_path / "nope", "--out",
                         tmp_path / "run", "--max-steps", 5, *TINY)
    line = one_error_line(err)
    assert status == 2 and line.startswith(f"rnnkit: error: --init-from {tmp_path / 'nope'}: ")
    assert "not a directory" in line


def test_a_prepared_directory_lacking_base_symbols_is_refused(cli, base_run, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("abc abc cab bac\n" * 100)
    data = tmp_path / "data"
    assert cli("prepare", small, "--out", data)[0] == 0
    status, _, err = cli("train", data, "--init-from", base_run, "--out", tmp_path / "run",
                         "--max-steps", 5, *TINY)
    line = one_error_line(err)
    assert status == 2 and "lacks" in line and "give the text files instead" in line
    assert f"--vocab {base_run}" in line  # the text holds none but the base's symbols
    # a text with a symbol the base lacks cannot be prepared with --vocab: not suggested
    (tmp_path / "new.txt").write_text("abc ABC\u00e9\n" * 100)
    assert cli("prepare", tmp_path / "new.txt", "--out", tmp_path / "new")[0] == 0
    status, _, err = cli("train", tmp_path / "new", "--init-from", base_run, "--out",
                         tmp_path / "run", "--max-steps", 5, *TINY)
    assert status == 2 and "--vocab" not in one_error_line(err)
    # Prepared with the base's vocabulary, it is used in place.
    full = tmp_path / "full"
    assert cli("prepare", small, "--vocab", base_run, "--out", full)[0] == 0
    assert cli("train", full, "--init-from", base_run, "--out", tmp_path / "ok",
               "--max-steps", 5, *TINY)[0] == 0


def test_resume_with_new_text_points_at_init_from(cli, base_run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(PANGRAM.upper() * 60)
    status, _, err = cli("train", other, "--out", base_run, "--max-steps", 40, *TINY, "--resume")
    line = one_error_line(err)
    assert status == 2 and f"--init-from {base_run}" in line


def test_resuming_keeps_where_the_run_started(cli, corpus, base_run, tmp_path):
    run = tmp_path / "tuned"
    assert cli("train", corpus, "--init-from", base_run, "--out", run, "--max-steps", 10,
               *TINY)[0] == 0
    status, _, err = cli("train", corpus, "--init-from", "builtin", "--out", run,
                         "--max-steps", 20, *TINY, "--resume")
    line = one_error_line(err)
    assert status == 2 and f"differs from the run's {base_run}" in line
    # the same run spelt otherwise (a trailing slash, its absolute path) is the run's own
    for same in (f"{base_run}/", base_run.resolve()):
        assert cli("train", corpus, "--init-from", same, "--out", run, "--max-steps", 11,
                   *TINY, "--resume")[0] == 0
    status, _, err = cli("train", corpus, "--init-from=", "--out", tmp_path / "empty",
                         "--max-steps", 2, *TINY)
    assert status == 2 and "--init-from is empty" in one_error_line(err)
    assert not (tmp_path / "empty").exists()
    # Stopped before its first checkpoint, a fine-tuned run resumes from the base's weights.
    for name in (checkpoint.LAST, checkpoint.BEST):
        (run / name).unlink()
    assert cli("train", corpus, "--out", run, "--max-steps", 1, "--lr", 1e-12, *TINY,
               "--resume")[0] == 0
    base_loss = float(re.search(r"val_loss (\S+)", cli("eval", base_run)[1]).group(1))
    tuned_loss = float(re.search(r"val_loss (\S+)", cli("eval", run)[1]).group(1))
    assert tuned_loss == pytest.approx(base_loss, abs=1e-3)


def test_the_playground_offers_a_finetuned_run_with_its_new_symbols(cli, base_run, tmp_path):
    text = tmp_path / "new.txt"
    text.write_text(NEW_TEXT, encoding="utf-8")
    run = tmp_path / "tuned"
    assert cli("train", text, "--init-from", base_run, "--out", run, "--max-steps", 10,
               *TINY)[0] == 0
    runs = load_runs([str(run), "builtin"])
    assert list(runs) == ["tuned", "builtin"]
    assert run_info("tuned", runs["tuned"])["vocab_size"] == len(runs["tuned"].vocab)
    tr = trace(runs["tuned"], "¿Qué?")
    assert tr.skipped == [] and "".join(tr.symbols) == "¿Qué?"
    assert trace_data(tr)["symbols"] == tr.symbols


def test_text_that_is_not_utf8_points_a_char_base_at_a_byte_model(cli, base_run, tmp_path):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"the lazy dog \xff\xfe\n" * 50)
    status, _, err = cli("train", raw, "--init-from", base_run, "--out", tmp_path / "run",
                         "--max-steps", 5, *TINY)
    line = one_error_line(err)
    assert status == 2 and "is not valid UTF-8" in line and "--init-from builtin" in line
    assert "--tokenizer byte" not in line  # which --init-from a char model would refuse


def test_finetuning_under_torchrun_matches_one_process(cli, base_run, tmp_path):
    """Rank 0 alone reads the base; DistributedDataParallel gives its weights to every rank, so
    two processes end where one does with the same global batch."""
    text = tmp_path / "new.txt"
    text.write_text(NEW_TEXT, encoding="utf-8")
    args = ["train", str(text), "--init-from", str(base_run), "--max-steps", "10",
            *map(str, TINY), "--batch-size", "8"]
    assert cli(*args, "--out", tmp_path / "one")[0] == 0
    two = torchrun("-m", "rnnkit", *args, "--out", tmp_path / "two", out=tmp_path / "two")
    assert two.returncode == 0, two.stderr[-8000:]
    assert two.stdout.count("vocabulary grew by 5 symbols") == 1  # rank 0 alone sets up
    assert_same_run(tmp_path / "one", tmp_path / "two", atol=1e-4)
