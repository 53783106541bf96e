"""The run directory and the train command's behaviour: whose files are deleted, what a resume
accepts and says, the metrics log, the time budget, logs without a terminal, --help, and the
README's Python API block run as pasted."""

import argparse
import json
import re
import subprocess
import time
import warnings

import pytest
from conftest import PANGRAM, PYTHON, TINY, one_error_line

from rnnkit import checkpoint, engine, runfiles
from rnnkit.cli import build_parser


def test_temporary_names_are_recognised_and_only_they_are_removed(tmp_path):
    target = tmp_path / "last.safetensors"
    tmp = runfiles.temp_name(target)
    assert tmp.parent == tmp_path and runfiles.is_temp_name(tmp.name)
    for theirs in ["notes.tmp", ".draft.tmp", "last.safetensors.tmp", ".x.tmp.png",
                   ".last.safetensors.12.tmp", "a.12.rnnkit.tmp"]:
        assert not runfiles.is_temp_name(theirs), theirs
        (tmp_path / theirs).write_text("mine")
    tmp.write_bytes(b"half")
    assert runfiles.remove_temp_files(tmp_path) == [tmp]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["notes.tmp", ".draft.tmp", "last.safetensors.tmp", ".x.tmp.png",
         ".last.safetensors.12.tmp", "a.12.rnnkit.tmp"])


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    runfiles.write_json_atomic(path, {"a": 1})
    with pytest.raises(RuntimeError), runfiles.atomic_write(path) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_train_never_deletes_the_users_temporary_files(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, "--max-steps", 10, *TINY)[0] == 0
    theirs = [run / "notes.tmp", run / ".draft.tmp", run / "data" / "mine.tmp"]
    for path in theirs:
        path.write_text("the user's")
    ours = runfiles.temp_name(run / "last.safetensors")
    ours.write_bytes(b"left by a killed training")
    # Refused (no --resume): nothing is deleted, not even rnnkit's own leftover.
    status, _, err = cli("train", corpus, "--out", run, "--max-steps", 20, *TINY)
    assert status == 2 and "already holds a training run" in one_error_line(err)
    assert ours.exists() and all(p.read_text() == "the user's" for p in theirs)
    # Resumed: rnnkit's leftover goes, the user's files stay.
    assert cli("train", corpus, "--out", run, "--max-steps", 20, *TINY, "--resume")[0] == 0
    assert not ours.exists() and all(p.read_text() == "the user's" for p in theirs)


def test_out_folder_with_other_files_is_refused_and_left_alone(cli, corpus, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("mine")
    (folder / "draft.tmp").write_text("mine too")
    status, _, err = cli("train", corpus, "--out", folder, "--max-steps", 5, *TINY)
    line = one_error_line(err)
    assert status == 2 and "holds files rnnkit did not write (draft.tmp, todo.txt)" in line
    assert "new or empty directory" in line
    assert sorted(p.name for p in folder.iterdir()) == ["draft.tmp", "todo.txt"]
    # A run killed before its config.json existed holds only rnnkit's files: it starts again.
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "train.lock").write_text("123")
    (run / "data" / "tokens.bin").write_bytes(b"\0")
    runfiles.temp_name(run / "data" / "data.json").write_text("{")
    assert cli("train", corpus, "--out", run, "--max-steps", 5, *TINY, "--resume")[0] == 0


@pytest.mark.parametrize("given", ["OTHER", "EMPTY", "MISSING", "CHANGED", "SAME_SIZE"])
def test_resume_refuses_text_other_than_the_runs_own(cli, corpus, tmp_path, given):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, "--max-steps", 10, *TINY)[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    other = tmp_path / "other.txt"
    if given == "OTHER":
        other.write_text("a different text entirely\n" * 50)
    elif given == "EMPTY":
        other.write_text("")
    elif given == "CHANGED":
        other = corpus
        corpus.write_text(PANGRAM * 90)
    elif given == "SAME_SIZE":  # an edit that keeps the size was trained past without a word
        other = corpus
        text = corpus.read_text(encoding="utf-8")
        corpus.write_text(text.replace("e", "E"), encoding="utf-8")
        assert len(corpus.read_bytes()) == len(text.encode("utf-8")) and "e" in text
    status, _, err = cli("train", other, "--out", run, "--max-steps", 20, *TINY, "--resume")
    line = one_error_line(err)
    assert status == 2 and "--resume continues" in line and "on its own data" in line
    if given in ("CHANGED", "SAME_SIZE"):
        assert "has changed since the run encoded it" in line
    assert "start a new --out" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resume_with_the_same_files_or_none_continues(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, "--max-steps", 10, *TINY)[0] == 0
    status, out, _ = cli("train", corpus, "--out", run, "--max-steps", 20, *TINY, "--resume")
    assert status == 0 and "resuming " in out and "at step 10 of 20" in out
    assert "done: 20 steps (10 in this invocation" in out
    status, out, _ = cli("train", "--out", run, "--max-steps", 30, *TINY, "--resume")
    assert status == 0 and "at step 20 of 30" in out
    status, out, _ = cli("train", "--out", run, "--max-steps", 30, *TINY, "--resume")
    assert status == 0 and "has finished its 30 steps; nothing left to do" in out
    assert "done: 30 steps (0 in this invocation" in out and "step 30: train" not in out


@pytest.mark.parametrize("command", [
    ["train", "CORPUS", "--out", "RUN", "--max-steps", "5", "--seed", "-1"],
    ["sample", "TRAINED", "--seed", "-3"],
    ["sample", "TRAINED", "--seed", str(1 << 63)],
])
def test_a_negative_or_huge_seed_is_refused_up_front(cli, corpus, tmp_path, command):
    trained = tmp_path / "trained"
    if "TRAINED" in command:
        assert cli("train", corpus, "--out", trained, "--max-steps", 3, *TINY)[0] == 0
    paths = {"CORPUS": corpus, "RUN": tmp_path / "run", "TRAINED": trained}
    status, out, err = cli(*[paths.get(a, a) for a in command])
    assert status == 2 and "--seed must be a whole number from 0" in one_error_line(err)
    assert not (tmp_path / "run").exists() and out == ""


@pytest.mark.parametrize("fmt, kind, use", [
    ("rnnkit-classifier", "a classifier", "rnnkit classify predict {dir} FILE..."),
    ("rnnkit-forecaster", "a forecaster", "rnnkit forecast predict {dir} SERIES.csv"),
])
def test_another_kind_of_run_names_the_command_that_uses_it(cli, corpus, tmp_path, fmt, kind,
                                                            use):
    run = tmp_path / "task"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": fmt, "version": 1}))
    before = (run / "config.json").read_bytes()
    expected = f"{run} is {kind} run, not a language model; use it with: {use.format(dir=run)}"
    for command in (["sample", run], ["eval", run],
                    ["train", corpus, "--out", run, "--max-steps", 5, "--resume"],
                    ["train", corpus, "--out", run, "--max-steps", 5]):
        status, _, err = cli(*command)
        assert status == 2 and one_error_line(err) == f"rnnkit: error: {expected}", command
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
    assert (run / "config.json").read_bytes() == before


def test_one_distinct_character_warns_in_one_line(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("a" * 400)
    result = subprocess.run([PYTHON, "-m", "rnnkit", "train", str(text), "--out",
                             str(tmp_path / "run"), "--max-steps", "2", *map(str, TINY)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning == ["rnnkit: warning: the text has 1 distinct symbol ('a'); the model can "
                       "only learn to repeat it; train on text with at least 2 distinct "
                       "characters"]


def read_metrics(run):
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,chars,lr,train_loss,val_loss"
    return [dict(zip(lines[0].split(","), line.split(","), strict=True)) for line in lines[1:]]


def test_metrics_log_has_every_step_once(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, "--max-steps", 20, *TINY)[0] == 0
    rows = read_metrics(run)
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    assert [int(r["step"]) for r in rows if r["val_loss"]] == [10, 20]
    history = json.loads(checkpoint.read_safetensors(run / "last.safetensors")[1]["progress"])
    assert [float(r["val_loss"]) for r in rows if r["val_loss"]] == \
        [h["val_loss"] for h in history["history"]]
    assert all(float(r["train_loss"]) > 0 and float(r["lr"]) > 0 for r in rows)
    # Rows a killed process appended past its last checkpoint are dropped on resume, with a
    # half-written line; the re-done steps appear once.
    with open(run / "metrics.csv", "a") as f:
        f.write("21,1344,0.001,9.9,\n22,1408,0.0")
    assert cli("train", corpus, "--out", run, "--max-steps", 30, *TINY, "--resume")[0] == 0
    rows = read_metrics(run)
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert "9.9" not in [r["train_loss"] for r in rows]


def test_progress_lines_in_a_log(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "LOG_SECONDS", 0.0)  # a line at every step
    status, out, _ = cli("train", corpus, "--out", tmp_path / "run", "--max-steps", 12, *TINY)
    assert status == 0
    lines = [line for line in out.splitlines() if re.match(r"step \d+ of 12: loss", line)]
    assert [int(line.split()[1]) for line in lines] == list(range(1, 13))
    assert re.fullmatch(r"step 5 of 12: loss \d+\.\d{4}, [\d,]+ chars/s, (\d+m)?\d+s left",
                        lines[4]), lines[4]
    monkeypatch.setattr(engine, "LOG_SECONDS", 3600.0)
    status, out, _ = cli("train", corpus, "--out", tmp_path / "run2", "--max-steps", 12, *TINY)
    assert status == 0 and not re.search(r"step \d+ of 12: loss", out)


def test_time_budget_holds_the_final_evaluation(cli, tmp_path):
    # A validation split large enough that one evaluation takes a good part of the budget: the
    # old loop trained for the whole budget and evaluated after it.
    text = tmp_path / "big.txt"
    text.write_text(PANGRAM * 4000)
    args = ["train", text, "--out", tmp_path / "run", "--hidden", 96, "--layers", 1,
            "--seq-len", 32, "--batch-size", 4, "--val-fraction", 0.5, "--eval-every", 5,
            "--sample-length", 50, "--max-time", "6s"]
    started = time.monotonic()
    status, out, _ = cli(*args)
    wall = time.monotonic() - started
    assert status == 0
    assert wall < 6 + 2.0, (wall, out)
    done = re.search(r"done: \d+ steps \(\d+ in this invocation: ([\d.]+)s training, "
                     r"([\d.]+)s evaluation, ([\d.]+)s in all\)", out)
    assert done, out
    training_s, evaluation_s, total_s = map(float, done.groups())
    # Each figure is rounded to 0.1 s on its own: the two parts may each read up to 0.05 s high
    # and the total 0.05 s low, so their printed sum may pass the printed total by up to 0.15 s
    # (0.26 + 5.66 <= 5.92 prints as 0.3 + 5.7 against 5.9).
    assert evaluation_s > 0.5
    assert training_s + evaluation_s <= total_s + 0.15 + 1e-9 and total_s <= wall + 0.1
    # A budget that cannot hold the final evaluation (the files written with it take a second)
    # is refused before training, and the new run leaves nothing (it ran to 2.5 times a 10 s
    # budget on the default corpus)
    status, _, err = cli(*args[:-1], "1s", "--out", tmp_path / "short")
    assert status == 2 and "the time budget of 1s cannot hold the final evaluation" in \
        one_error_line(err)
    assert not (tmp_path / "short").exists()


def walk(parser: argparse.ArgumentParser, path: str = "rnnkit"):
    """Every parser of the command line, with its path: rnnkit, rnnkit train, ..."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")


def test_every_command_and_option_has_a_help_text_with_its_default():
    missing = []
    parsers = list(walk(build_parser()))
    assert {"rnnkit train", "rnnkit sample", "rnnkit eval", "rnnkit prepare"} <= dict(parsers).keys()
    for path, parser in parsers:
        if not (parser.description or "").strip():
            missing.append(f"{path}: no description")
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                                   argparse._SubParsersAction)):
                continue
            name = f"{path} {'/'.join(action.option_strings) or action.metavar or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name}: no help")
            elif action.option_strings and action.nargs != 0 and not action.required \
                    and "default" not in action.help:
                missing.append(f"{name}: help does not give the default")
    assert not missing, "\n".join(missing)


def test_every_command_names_a_function_that_exists():
    import importlib

    commands = [(path, p.get_default("run")) for path, p in walk(build_parser())
                if p.get_default("run")]
    assert len(commands) >= 11, commands
    for path, run in commands:
        module, function = run.split(".")
        assert callable(getattr(importlib.import_module(f"rnnkit.{module}"), function)), path


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["classify", "train", "--help"],
                                  ["train"], ["sample", "--length", "x"]])
def test_help_and_usage_errors_do_not_load_torch(argv):
    # `rnnkit --help` answers in a Python start and argparse, not in PyTorch's import.
    code = ("import sys\nfrom rnnkit.cli import main\ntry:\n    status = main(sys.argv[1:])\n"
            "except SystemExit as e:  # --help\n    status = e.code\n"
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'loaded'\n"
            "sys.exit(status)")
    done = subprocess.run([PYTHON, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 2), done.stderr
    assert "loaded" not in done.stderr and ("usage:" in done.stdout or "rnnkit: error:"
                                             in done.stderr)


def test_readme_python_api_block_runs_as_pasted(cli, tmp_path, monkeypatch):
    readme = (checkpoint.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # A tiny run stands in for runs/shakespeare, a short text for input.txt.
    text = tmp_path / "input.txt"
    text.write_text("ROMEO: here comes the sun.\nJULIET: and the light.\n" * 40)
    shakespeare = tmp_path / "shakespeare"
    assert cli("train", text, "--out", shakespeare, "--max-steps", 5, *TINY)[0] == 0
    monkeypatch.chdir(tmp_path)
    block = block.replace("runs/shakespeare", str(shakespeare)).replace("runs/x", "x")
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "x" / "model.safetensors").is_file()


def test_a_warning_made_an_error_is_one_error_line(cli, tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("a" * 400)
    with warnings.catch_warnings():  # as under python -W error
        warnings.simplefilter("error")
        status, _, err = cli("train", text, "--out", tmp_path / "run", "--max-steps", 2, *TINY)
    assert status == 2 and "the text has 1 distinct symbol" in one_error_line(err)


def test_a_metrics_log_that_cannot_be_written_is_one_error(tmp_path):
    # the engine writes the log beside each checkpoint: a failure is the user's to fix, not a bug
    log = tmp_path / "metrics.csv"
    log.mkdir()  # not writable as a file
    row = {"step": 1, "chars": 10, "lr": 0.1, "train_loss": 2.0, "val_loss": ""}
    with pytest.raises(runfiles.RnnkitError, match=r"could not write .*metrics\.csv .*--resume"):
        runfiles.append_metrics(log, [row])


def test_a_refused_new_run_leaves_nothing_so_the_fix_starts_afresh(cli, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(PANGRAM * 20)
    run = tmp_path / "run"
    status, _, err = cli("train", text, "--out", run, *TINY, "--seq-len", "100000")
    assert status == 2 and "--seq-len" in one_error_line(err)
    assert not run.exists()  # config, vocabulary and tokens were written, then removed
    assert cli("train", text, "--out", run, *TINY, "--max-steps", "2")[0] == 0


def test_resuming_keeps_the_sample_length_and_a_damaged_vocabulary_names_its_file(cli, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(PANGRAM * 20)
    run = tmp_path / "run"
    assert cli("train", text, "--out", run, *TINY, "--max-steps", "2", "--sample-length",
               "0")[0] == 0
    # resumed without --sample-length: the run's 0, so no sample at the end
    status, out, _ = cli("train", text, "--out", run, *TINY, "--max-steps", "4", "--resume")
    assert status == 0 and "--- sample" not in out
    (run / "vocab.json").write_text('{"kind": "word", "codes": [97, 98]}')
    status, _, err = cli("sample", run)
    line = one_error_line(err)
    assert status == 2 and str(run / "vocab.json") in line and "damaged" in line


def test_training_whose_output_reader_stops_says_so_and_resumes(corpus, tmp_path):
    # `rnnkit train ... | head -1` stopped the training at the next line written, exit status 0
    # and nothing on stderr: it looked like a run that had finished
    argv = [PYTHON, "-m", "rnnkit", "train", str(corpus), "--out", str(tmp_path / "run"),
            "--max-steps", "60", "--eval-every", "2", *map(str, TINY)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    proc.wait(timeout=120)
    assert proc.returncode == 2, err
    line = one_error_line(err)
    assert "the output's reader stopped" in line and "with --resume once a checkpoint exists" in line
    checkpoint.read_safetensors(tmp_path / "run" / "last.safetensors")  # what --resume reads


def test_a_closed_standard_output_is_one_line():
    # `rnnkit sample RUN >&-` was an internal error ('NoneType' object has no attribute 'write')
    done = subprocess.run(["bash", "-c", f"'{PYTHON}' -m rnnkit sample --length 5 >&-"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert one_error_line(done.stderr) == ("rnnkit: error: standard output is closed; send it "
                                           "to a file, or to /dev/null to discard it")


@pytest.mark.parametrize("argv, name", [
    (["sample", ""], "DIR"),  # sampled the built-in model
    (["train", "CORPUS", "--out", ""], "--out"),  # trained into the current folder
    (["classify", "train", "CORPUS", "--out", "run", "--test-pattern", ""], "--test-pattern"),
    (["train", "CORPUS", "--init-from=", "--out", "run"], "--init-from"),
])
def test_an_empty_argument_is_refused_by_name(cli, corpus, tmp_path, monkeypatch, argv, name):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    status, _, err = cli(*[str(corpus) if a == "CORPUS" else a for a in argv])
    assert status == 2
    assert one_error_line(err) == f"rnnkit: error: {name} is empty (an unset shell variable?); "\
                                  "give it a value"
    assert list(here.iterdir()) == []  # nothing written into the current folder
    assert cli("sample", "--prime", "", "--length", 3)[0] == 0  # an empty prime is a prime


def test_durations_are_written_as_people_write_them():
    from rnnkit.cli import duration
    for text, seconds in (("90", 90), ("90s", 90), ("10m", 600), ("10min", 600), ("1.5h", 5400),
                          ("1h30m", 5400), ("1h 30m", 5400), (" 10 m", 600)):
        assert duration(text) == seconds, text
    for text in ("", "-5", "nan", "1e3", "10M", "h", "soon", "1 30", "1h1h", "30m1h", "5m 5"):
        with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
            duration(text)


def test_ctrl_c_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    # an interrupt in the imports before main() printed a Python traceback
    import sys
    import types

    from rnnkit.__main__ import run

    class Loading(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "rnnkit.cli", Loading("rnnkit.cli"))
    assert run() == 130
    assert capsys.readouterr().err == "rnnkit: interrupted\n"


def test_a_misspelt_option_gets_the_closest_one(cli):
    status, _, err = cli("sample", "--temprature", "0.5")
    assert status == 2 and "unrecognized arguments: --temprature; did you mean " \
        "--temperature? (see: rnnkit sample --help)" in one_error_line(err)
    status, _, err = cli("train", "x.txt", "--out", "r", "--zzz")
    assert status == 2 and "did you mean" not in err  # nothing close: no guess


def test_an_out_that_is_a_file_says_so(cli, corpus, tmp_path):
    # "cannot write to F (File exists); choose a writable --out"
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    for argv in (["train", corpus], ["classify", "train", tmp_path / "x.csv"]):
        status, _, err = cli(*argv, "--out", taken)
        assert status == 2 and one_error_line(err) == f"rnnkit: error: --out {taken} is a file, " \
            "and a run is a folder; choose another --out"
    assert taken.read_text() == "mine"


def test_a_users_files_named_as_a_runs_are_kept(cli, corpus, tmp_path):
    # a folder holding the user's vocab.json (or a train.lock of theirs) was taken for a run
    # stopped early: a run overwrote the file, a refused one deleted it
    for name, mine in (("vocab.json", '{"mine": 1}'), ("train.lock", "do not delete\n")):
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        (out / name).write_text(mine)
        status, _, err = cli("train", corpus, "--out", out, "--max-steps", 2, *TINY)
        assert status == 2 and f"holds files rnnkit did not write ({name})" in one_error_line(err)
        assert (out / name).read_text() == mine


def test_given_names_only_config_fields(corpus, tmp_path):
    # a typo in given= was ignored: the value it meant to set kept the base run's
    import rnnkit
    with pytest.raises(rnnkit.RnnkitError, match=r"given names fields of ModelConfig and "
                       r"TrainConfig; \['dropuot'\] are not among them"):
        rnnkit.train([str(corpus)], str(tmp_path / "run"), given={"dropuot"})
    assert not (tmp_path / "run").exists()


def test_sigterm_while_a_training_sets_up_is_one_line_and_leaves_nothing(cli, corpus, tmp_path,
                                                                          monkeypatch):
    # before the training loop handled it, SIGTERM (what timeout and job schedulers send)
    # ended the process with 143, nothing said, and a half-made run that refused the command
    import os
    import signal

    from rnnkit import training

    prepare = training.prepare

    def prepare_then_terminate(*args, **kwargs):
        data = prepare(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return data

    monkeypatch.setattr(training, "prepare", prepare_then_terminate)
    before = signal.getsignal(signal.SIGTERM)
    status, _, err = cli("train", corpus, "--out", tmp_path / "run", "--max-steps", 5, *TINY)
    assert status == 143 and err.strip().splitlines()[-1] == "rnnkit: terminated", err
    assert not (tmp_path / "run").exists()  # the same command starts afresh
    assert signal.getsignal(signal.SIGTERM) is before  # the handler was the command's alone
