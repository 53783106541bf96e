"""Training runs: overfitting, checkpoints, exact resume, and every bad input's one-line error."""

import hashlib
import json
import re
import shutil
import signal
import subprocess
import warnings

import pytest
import torch
from conftest import PANGRAM, PYTHON, TINY, one_error_line
from kinds import KINDS, LM

import rnnkit
from rnnkit import checkpoint, engine
from rnnkit.training import lr_at


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_corpus_is_overfit(corpus, tmp_path):
    summary = rnnkit.train([corpus], tmp_path / "run", rnnkit.ModelConfig(hidden=64, layers=1),
                           rnnkit.TrainConfig(seq_len=32, batch_size=8, max_steps=120,
                                              eval_every=40, warmup=10), quiet=True)
    # A 45-character sentence repeated: uniform guessing costs ln(29) = 3.37 nats/char.
    assert summary["history"][-1]["train_loss"] < 0.15
    assert summary["best_val"] < 0.15
    model = rnnkit.load(tmp_path / "run")
    assert model.generate(prime="the quick ", length=35, greedy=True) == PANGRAM[:45]


def test_train_sample_eval_through_the_cli(cli, corpus, tmp_path):
    run = tmp_path / "run"
    status, out, _ = cli("train", corpus, "--out", run, "--max-steps", 20, *TINY)
    assert status == 0
    assert "step 10: train" in out and "val" in out and "bpc" in out
    for name in ["config.json", "vocab.json", "model.safetensors", "last.safetensors",
                 "data/tokens.bin"]:
        assert (run / name).is_file(), name
    status, out, _ = cli("sample", run, "--prime", "the", "--length", 50, "--seed", 3)
    assert status == 0 and out.startswith("the") and len(out) == len("the") + 50 + 1
    assert cli("sample", run, "--prime", "the", "--length", 50, "--seed", 3)[1] == out
    status, out, _ = cli("eval", run)
    last = out.strip().splitlines()[-1].split()
    assert status == 0 and last[0] == "val_loss" and last[2] == "bpc"
    assert abs(float(last[3]) - float(last[1]) / 0.6931471805599453) < 1e-3
    status, out_file, _ = cli("eval", run, corpus)
    assert status == 0 and out_file.strip().splitlines()[-1].startswith("val_loss ")


def test_a_byte_model_reports_its_loss_per_byte(cli, corpus, tmp_path):
    run = tmp_path / "run"
    status, out, _ = cli("train", corpus, "--out", run, "--max-steps", 10, "--tokenizer", "byte",
                         *TINY)
    assert status == 0
    step = next(line for line in out.splitlines() if line.startswith("step 10: train"))
    assert "nats/byte" in step and "bits/byte" in step and "nats/char" not in out
    done = out.strip().splitlines()[-1]
    assert done.startswith("done:") and "nats/byte" in done and "bits/byte" in done
    assert (run / "loss.png").stat().st_size > 0


def test_checkpoint_round_trip(corpus, tmp_path):
    rnnkit.train([corpus], tmp_path / "run", rnnkit.ModelConfig(hidden=24, layers=2, cell="gru"),
                 rnnkit.TrainConfig(seq_len=16, batch_size=4, max_steps=10, eval_every=10),
                 quiet=True)
    model = rnnkit.load(tmp_path / "run")
    saved = checkpoint.read_safetensors(tmp_path / "run" / "model.safetensors")[0]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name])
    assert model.config.cell == "gru" and not model.training
    last = rnnkit.load(tmp_path / "run", checkpoint="last.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 last.state_dict().values(), strict=True))


def run_args(corpus, out, *extra):
    return [corpus, "--out", out, "--max-steps", 40, *TINY, "--dropout", "0.1", "--layers", 2,
            *extra]


@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS)
def test_interrupted_and_resumed_run_equals_uninterrupted(cli, kind, tmp_path, monkeypatch):
    data = kind.write_data(tmp_path)
    steps = 40 if kind is LM else 6  # a classifier's epoch is 6 steps
    options = [kind.length, steps, "--dropout", "0.1", "--layers", 2]
    assert cli(*kind.args(data, tmp_path / "straight", *options))[0] == 0

    interrupted = tmp_path / "interrupted"
    stops = [13, 27]  # steps at which a Ctrl-C arrives

    def lr_with_interrupt(step, plan, cfg):
        if stops and step == stops[0]:
            stops.pop(0)
            signal.raise_signal(signal.SIGINT)
        return lr_at(step, plan, cfg)

    monkeypatch.setattr(engine, "lr_at", lr_with_interrupt)
    status, out, _ = cli(*kind.args(data, interrupted, *options))
    assert status == 130 and "SIGINT received; stopped at step 14" in out
    status, out, _ = cli(*kind.args(data, interrupted, *options, "--resume"))
    assert status == 130 and "stopped at step 28" in out
    assert cli(*kind.args(data, interrupted, *options, "--resume"))[0] == 0

    a, meta_a = checkpoint.read_safetensors(tmp_path / "straight" / "last.safetensors")
    b, meta_b = checkpoint.read_safetensors(interrupted / "last.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bit for bit
    history_a, history_b = (json.loads(m["progress"])["history"] for m in (meta_a, meta_b))
    for h in (*history_a, *history_b):
        h.pop("seconds", None)  # a task's epoch line says how long it took
    assert history_a == history_b
    metrics = (tmp_path / "straight" / "metrics.csv").read_text()
    assert metrics.count("\n") == (41 if kind is LM else 37)
    assert (interrupted / "metrics.csv").read_text() == metrics


def test_resume_refuses_a_different_model(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", *run_args(corpus, run))[0] == 0
    status, _, err = cli("train", *run_args(corpus, run), "--hidden", 64, "--resume")
    assert status == 2 and "--hidden 64 differs from the run's 32" in one_error_line(err)
    status, _, err = cli("train", *run_args(corpus, run))
    assert status == 2 and "already holds a training run; add --resume" in one_error_line(err)


def test_lr_schedule_warms_up_then_decays():
    cfg = rnnkit.TrainConfig(lr=1.0, warmup=10, lr_min=0.1, max_steps=110)
    assert lr_at(0, 110, cfg) == pytest.approx(0.1)
    assert lr_at(9, 110, cfg) == pytest.approx(1.0)
    assert lr_at(60, 110, cfg) == pytest.approx(0.55)
    assert lr_at(110, 110, cfg) == pytest.approx(0.1)
    assert lr_at(500, 110, cfg) == pytest.approx(0.1)


# --- bad input: one line on stderr, exit status 2, no traceback, checkpoints untouched ----------

def bad_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    return path


@pytest.mark.parametrize("case, args, message", [
    ("missing", ["nope.txt"], "text file 'nope.txt' does not exist"),
    ("empty", ["EMPTY"], "is empty"),
    ("directory", ["DIR"], "is a directory"),
    ("short", ["SHORT"], "shorter than one training sequence"),
    ("utf8", ["LATIN1"], "is not valid UTF-8 (byte 3); a character model reads text; convert "
     "the file to UTF-8, or train a byte model (--tokenizer byte)"),
    ("cell", ["CORPUS", "--cell", "transformer"], "argument --cell: invalid choice"),
    ("zero", ["CORPUS", "--hidden", "0"], "hidden must be positive, got 0"),
    ("negative", ["CORPUS", "--layers", "-2"], "layers must be positive, got -2"),
    ("batch", ["CORPUS", "--batch-size", "0"], "batch_size must be positive, got 0"),
    ("time", ["CORPUS", "--max-time", "soon"], "invalid duration 'soon'"),
    # 0 was "invalid duration '0'"; NaN was named TrainConfig.lr
    ("no time", ["CORPUS", "--max-time", "0s"], "'0s' is not a usable time limit; give a "
                                                "duration above 0"),
    ("nan", ["CORPUS", "--lr", "nan"], "argument --lr: invalid number 'nan': give a finite"),
    ("lr", ["CORPUS", "--lr", "1e308"], "lr must be at most 1e+06, got 1e+308"),
    ("sample", ["CORPUS", "--sample-length", "10000001"], "sample_length must be at most "
     "10,000,000"),
    ("eval", ["CORPUS", "--eval-tokens", "1"], "eval_tokens must be at least 2, got 1"),
])
def test_bad_training_input(cli, corpus, tmp_path, case, args, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("abc")
    (tmp_path / "dir").mkdir()
    paths = {"EMPTY": tmp_path / "empty.txt", "DIR": tmp_path / "dir", "SHORT":
             tmp_path / "short.txt", "LATIN1": bad_utf8(tmp_path), "CORPUS": corpus}
    args = [paths.get(a, a) for a in args]
    status, _, err = cli("train", *args, "--out", tmp_path / "run", "--max-steps", 5, "--seq-len", 16)
    assert status == 2
    assert message in one_error_line(err)
    assert not (tmp_path / "run").exists()  # nothing half-made left to refuse the fixed command


def test_a_run_killed_between_preparing_its_text_and_its_config_starts_again(cli, corpus, tmp_path):
    # A SIGKILL in that window left OUT/data complete and nothing else; the same command (with
    # or without --resume) was refused as if the user had prepared data there.
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, "--max-steps", 2, *TINY)[0] == 0
    for entry in run.iterdir():
        if entry.is_file():
            entry.unlink()
    assert sorted(e.name for e in run.iterdir()) == ["data"]
    for extra in (["--resume"], []):
        status, _, err = cli("train", corpus, "--out", run, "--max-steps", 2, *TINY, *extra)
        assert status == 0, err
        assert (run / "config.json").exists() and (run / "last.safetensors").exists()
        for entry in run.iterdir():
            if entry.is_file():
                entry.unlink()


def test_what_a_new_run_would_overwrite_is_refused(cli, corpus, trained, tmp_path):
    # data prepared by the user at OUT/data: a new run re-encoded its text over it
    assert cli("prepare", corpus, "--out", tmp_path / "w" / "data")[0] == 0
    tokens = (tmp_path / "w" / "data" / "tokens.bin").read_bytes()
    status, _, err = cli("train", corpus, "--out", tmp_path / "w", "--max-steps", 2, *TINY)
    assert status == 2 and "holds prepared data" in one_error_line(err)
    assert (tmp_path / "w" / "data" / "tokens.bin").read_bytes() == tokens
    # checkpoints without their config.json: --resume started again and wrote over them
    before = digest(trained / "last.safetensors")
    (trained / "config.json").unlink()
    status, _, err = cli("train", corpus, "--out", trained, "--resume", "--max-steps", 20, *TINY)
    assert status == 2 and "but no config.json: a damaged run directory" in one_error_line(err)
    assert digest(trained / "last.safetensors") == before
    # a refused run leaves the user's own empty folder where it was
    (tmp_path / "mine").mkdir()
    assert cli("train", tmp_path / "nope.txt", "--out", tmp_path / "mine")[0] == 2
    assert (tmp_path / "mine").is_dir()
    # a run folder whose name is not UTF-8 trained, then called its own checkpoints corrupt
    status, _, err = cli("train", corpus, "--out", str(tmp_path) + "/r\udce9s", "--max-steps", 2,
                         *TINY)
    assert status == 2 and "is not a valid UTF-8 name" in one_error_line(err)


def test_a_budget_is_each_invocations_own(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, "--max-time", "2s", *TINY)[0] == 0
    status, _, err = cli("train", corpus, "--out", run, "--resume")
    assert status == 2 and "planned by its --max-time" in one_error_line(err)
    steps = int(re.search(r"^(\d+),", (run / "metrics.csv").read_text().splitlines()[-1])[1])
    status, out, err = cli("train", corpus, "--out", run, "--resume", "--max-steps", steps + 3,
                           "--sample-length", 0)  # no budget now: it ends at its last step
    assert status == 0 and f"done: {steps + 3} steps (3 in this invocation" in out, err


def test_byte_tokenizer_accepts_any_file(cli, tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 20)
    status, _, _ = cli("train", path, "--out", tmp_path / "run", "--tokenizer", "byte",
                       "--max-steps", 5, *TINY)
    assert status == 0
    assert len(rnnkit.load(tmp_path / "run").vocab) == 256


@pytest.fixture
def trained(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, "--max-steps", 10, *TINY)[0] == 0
    return run


@pytest.mark.parametrize("damage, message", [
    ("no_config", "is not a run directory (no config.json)"),
    ("truncated", "model.safetensors is corrupt or truncated"),
    ("pickle", "model.safetensors is corrupt or truncated"),
    ("bad_json", "config.json is not readable JSON"),
    ("vocab", "vocab.json has 3 symbols but config.json says vocab_size"),
    ("shape", "config.json model.hidden must be int"),
    ("missing_weights", "model.safetensors is missing"),
    # the shape check's own diagnosis, not relabelled "corrupt or truncated" around it
    ("other_model", "has shape (3, 3) but config.json needs"),
])
def test_damaged_run_directory(cli, trained, damage, message):
    if damage == "no_config":
        (trained / "config.json").unlink()
    elif damage == "truncated":
        data = (trained / "model.safetensors").read_bytes()
        (trained / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "pickle":
        import pickle
        (trained / "model.safetensors").write_bytes(pickle.dumps({"a": 1}))
    elif damage == "bad_json":
        (trained / "config.json").write_text("{not json")
    elif damage == "vocab":
        (trained / "vocab.json").write_text('{"kind": "char", "codes": [97, 98, 99]}')
    elif damage == "shape":
        config = json.loads((trained / "config.json").read_text())
        config["model"]["hidden"] = "32"
        (trained / "config.json").write_text(json.dumps(config))
    elif damage == "missing_weights":
        (trained / "model.safetensors").unlink()
        (trained / "last.safetensors").unlink()
    elif damage == "other_model":
        from safetensors.torch import load_file, save_file
        tensors = load_file(trained / "model.safetensors")
        tensors[sorted(tensors)[0]] = torch.zeros(3, 3)
        save_file(tensors, trained / "model.safetensors")
    for command in (["sample", trained], ["eval", trained]):
        status, _, err = cli(*command)
        assert status == 2 and message in one_error_line(err)
        assert "corrupt" not in err or damage in ("truncated", "pickle")


def test_weights_of_another_model_are_refused(cli, trained):
    config = json.loads((trained / "config.json").read_text())
    config["model"]["hidden"] = 48
    (trained / "config.json").write_text(json.dumps(config))
    status, _, err = cli("sample", trained)
    assert status == 2
    assert re.search(r"has shape \(\d+, 32\) but config.json needs \(\d+, 48\)", one_error_line(err))


def test_not_a_directory(cli, tmp_path):
    status, _, err = cli("sample", tmp_path / "nothing")
    assert status == 2 and "is not a directory" in one_error_line(err)


def test_exploding_loss_stops_and_keeps_the_last_good_checkpoint(cli, trained, corpus):
    before = {name: digest(trained / name) for name in ["model.safetensors", "last.safetensors"]}
    status, _, err = cli("train", corpus, "--out", trained, "--resume", "--max-steps", 60,
                         *TINY, "--lr", "1e4")
    assert status == 2
    line = one_error_line(err)
    assert "exploded" in line or "infinite" in line or "NaN" in line
    assert "last good checkpoint is kept" in line
    after = {name: digest(trained / name) for name in before}
    assert after == before
    assert rnnkit.load(trained).generate("the", 10, seed=0)


def test_python_dash_m_and_no_traceback(tmp_path):
    result = subprocess.run([PYTHON, "-m", "rnnkit", "sample", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("rnnkit: error: ") and result.stderr.count("\n") == 1
    result = subprocess.run([PYTHON, "-m", "rnnkit", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout and "sample" in result.stdout


def test_fp16_on_the_cpu_is_refused_before_anything_is_written(cli, corpus, tmp_path):
    run = tmp_path / "run"
    status, _, err = cli("train", corpus, "--out", run, "--max-steps", 2, "--device", "cpu",
                         "--precision", "fp16", *TINY)
    assert status == 2 and err.count("\n") == 1 and "--precision bf16" in err, err
    assert not run.exists()


def test_training_writes_loss_plot_and_samples(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, "--max-steps", 20, *TINY, "--sample-length", 30)[0] == 0
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    samples = (run / "samples.txt").read_text(encoding="utf-8")
    headers = [line for line in samples.splitlines() if line.startswith("=== step ")]
    assert [h.split(",")[0] for h in headers] == ["=== step 10", "=== step 20"]
    assert "characters seen, val_loss" in headers[0]


def test_a_damaged_metrics_log_does_not_stop_a_resume(cli, corpus, trained):
    with open(trained / "metrics.csv", "ab") as f:
        f.write(b"caf\xe9\n")  # a half-written, undecodable last line: dropped
    status, _, err = cli("train", corpus, "--out", trained, "--resume", "--max-steps", 12,
                         "--sample-length", 0)
    assert status == 0, err
    assert (trained / "metrics.csv").read_text().splitlines()[-1].startswith("12,")
    (trained / "metrics.csv").unlink()
    (trained / "metrics.csv").mkdir()
    status, _, err = cli("train", corpus, "--out", trained, "--resume", "--max-steps", 14,
                         "--sample-length", 0)
    assert status == 2 and "metrics.csv (Is a directory); the last checkpoint is intact; move " \
        "away what is in its place" in one_error_line(err)


def test_a_full_disk_is_one_line_and_leaves_no_folder(cli, corpus, tmp_path, monkeypatch):
    import errno

    from rnnkit import lm_cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lm_cli, "prepare", full)
    status, _, err = cli("prepare", corpus, "--out", tmp_path / "data")
    assert status == 2 and one_error_line(err) == "rnnkit: error: No space left on device; " \
        "free some disk space, or write elsewhere"
    assert not (tmp_path / "data").exists()


def test_a_resume_from_python_takes_the_options_set_there(corpus, tmp_path):
    # given=None: the fields set to other than their defaults are the options given, as on the
    # command line (a resume took none of them, and now needs its own budget)
    model = rnnkit.ModelConfig(hidden=16, layers=1)

    def cfg(**kw):
        return rnnkit.TrainConfig(seq_len=16, batch_size=4, sample_length=0, warmup=2, **kw)

    first = rnnkit.train([corpus], tmp_path / "run", model, cfg(max_time=2.0, max_steps=0),
                         quiet=True)
    with pytest.raises(rnnkit.RnnkitError, match="planned by its --max-time"):
        rnnkit.train([corpus], tmp_path / "run", model, cfg(), resume=True, quiet=True)
    summary = rnnkit.train([corpus], tmp_path / "run", model,
                           cfg(max_steps=first["steps"] + 2), resume=True, quiet=True)
    assert summary["steps_now"] == 2 and summary["steps"] == first["steps"] + 2


def test_a_weight_decay_given_with_resume_applies(cli, corpus, tmp_path):
    # The optimizer's saved settings replaced the ones it was made with: --weight-decay given
    # with --resume was accepted, recorded nowhere and without effect (the learning rate is set
    # at every step, so it did change).
    import shutil

    first = tmp_path / "a"
    assert cli("train", corpus, "--out", first, *TINY, "--max-steps", 4, "--eval-every", 4)[0] == 0
    shutil.copytree(first, tmp_path / "b")
    assert cli("train", corpus, "--out", first, "--resume", "--max-steps", 8)[0] == 0
    assert cli("train", corpus, "--out", tmp_path / "b", "--resume", "--max-steps", 8,
               "--weight-decay", "0.9")[0] == 0
    groups = [json.loads(checkpoint.read_safetensors(run / "last.safetensors")[1]["param_groups"])
              for run in (first, tmp_path / "b")]
    assert [g["weight_decay"] for g in groups[0]] == [rnnkit.TrainConfig().weight_decay, 0.0]
    assert [g["weight_decay"] for g in groups[1]] == [0.9, 0.0]
    a, b = (checkpoint.read_safetensors(run / "last.safetensors")[0]
            for run in (first, tmp_path / "b"))
    assert not torch.equal(a["model.rnn.rnn.weight_hh_l0"], b["model.rnn.rnn.weight_hh_l0"])


def test_prepared_data_where_text_files_go_says_train_reads_it_alone(cli, corpus, tmp_path):
    # "is a directory; pass the text files inside it": it holds tokens.bin, not text
    data = tmp_path / "data"
    assert cli("prepare", corpus, "--out", data)[0] == 0
    for argv in (["train", data, corpus, "--out", tmp_path / "run"], ["prepare", data, "--out",
                                                                      tmp_path / "again"]):
        status, _, err = cli(*argv)
        assert status == 2 and "is prepared data (from rnnkit prepare), which only train " \
            "reads, given alone" in one_error_line(err)


def test_bytes_outside_a_byte_vocabulary_are_escaped_once(cli, tmp_path):
    text = tmp_path / "ascii.txt"
    text.write_text("plain ascii text, a cafe, over and over. " * 60)
    run = tmp_path / "run"
    assert cli("train", text, "--out", run, "--tokenizer", "byte", "--max-steps", 2, *TINY)[0] == 0
    accented = tmp_path / "accented.txt"
    accented.write_text("café " * 40, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        status, _, err = cli("eval", run, accented)
    assert status == 0 and r"contains '\xa9\xc3'" in err, err  # was '\\xa9\\xc3'
    status, _, err = cli("prepare", accented, "--out", tmp_path / "data", "--vocab", run)
    assert status == 2 and r"contains '\xc3' (code 195)" in one_error_line(err)


def test_a_second_prepare_into_the_same_folder_leaves_the_first_alone(cli, corpus, tmp_path):
    # the second deleted the first's token file as it was written: the first failed with an
    # internal error (FileNotFoundError renaming it into place)
    out = tmp_path / "data"
    out.mkdir()
    writing = subprocess.Popen([PYTHON, "-c", "import time; print(flush=True); time.sleep(30)",
                                "rnnkit prepare"], stdout=subprocess.PIPE)
    writing.stdout.readline()  # started: its command line is its own, not the forking test's
    writing.stdout.close()
    try:
        busy = out / f".tokens.bin.{writing.pid}.rnnkit.tmp"
        busy.write_bytes(b"\0" * 8)
        status, _, err = cli("prepare", corpus, "--out", out)
        assert status == 2 and f"another rnnkit process (pid {writing.pid}) is preparing data " \
            "into" in one_error_line(err)
        assert busy.exists()
    finally:
        writing.kill()
        writing.wait()
    assert cli("prepare", corpus, "--out", out)[0] == 0  # its writer gone, the file is stale
    assert not busy.exists()
    # a pid now another program's (1, init), or no pid a process can have: a stale file
    for pid in (1, 0, 10**20):
        (out / f".vocab.json.{pid}.rnnkit.tmp").write_text("{}")
    shutil.rmtree(out / "data", ignore_errors=True)
    for entry in out.iterdir():
        if not entry.name.endswith(".rnnkit.tmp"):
            entry.unlink()
    assert cli("prepare", corpus, "--out", out)[0] == 0
    assert not list(out.glob(".*.rnnkit.tmp"))


def test_no_held_out_text_is_not_reported_as_a_validation_loss(cli, corpus, tmp_path):
    # --val-fraction 0 printed the training loss as "val" and as "best val_loss"
    status, out, err = cli("train", corpus, "--out", tmp_path / "run", "--val-fraction", 0,
                           "--max-steps", 4, "--eval-every", 2, *TINY)
    assert status == 0, err
    assert "no text held out (--val-fraction 0)" in out and " val " not in out
    assert "best train_loss (no text held out)" in out
