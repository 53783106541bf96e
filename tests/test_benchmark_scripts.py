"""The benchmark scripts' own code on tiny data. Each script reads what a run leaves behind (its
metrics.json, the lines it prints); a benchmark runs a few times a year, so a change of those
formats must fail here, not in the next benchmark run."""

import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from kinds import write_npz

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import builtin_model  # noqa: E402
import classify_vs_field  # noqa: E402
import finetune  # noqa: E402
import forecast  # noqa: E402
import forecast_vs_field  # noqa: E402
import fsdd_digits  # noqa: E402


def test_classify_vs_field_reads_a_classifier_run(tmp_path):
    train, test = write_npz(tmp_path / "train.npz"), write_npz(tmp_path / "test.npz", 20, seed=1)
    # 15 s: on cores shared with other jobs, reading the data alone took 11.6 s of a 5 s budget
    run = classify_vs_field.run_rnnkit(train, ["--test", str(test)], tmp_path / "run", 15, 0)
    assert "error" not in run, run
    assert 0 <= run["accuracy"] <= 1 and run["members"] >= 1
    assert len(run["epochs"]) == run["members"] and all(e >= 1 for e in run["epochs"])
    assert "until the --max-time budget of 15s" in run["done"]


def test_forecast_vs_field_reads_a_many_series_run(tmp_path):
    rng = np.random.default_rng(0)
    series = [10 + np.sin(np.arange(48 + 4 * k) * np.pi / 2) + rng.normal(0, 0.1, 48 + 4 * k)
              for k in range(3)]
    csv = forecast_vs_field.write_csv(series, tmp_path / "series.csv")
    run = forecast_vs_field.run_rnnkit(csv, H=4, m=4, K=1, max_time=4, seed=0)
    assert run["mase"] > 0 and run["smape"] > 0 and 0 <= run["coverage_80"] <= 1
    assert run["epochs"] >= 1


def test_forecast_reads_its_run():
    result = forecast.run(length=600, epochs=1)
    assert result["rnn_mae"] > 0 and result["naive_mae"] > 0 and result["test_windows"] > 0


def test_fsdd_digits_reads_its_run(tmp_path):
    # FSDD's layout: DIGIT_SPEAKER_INDEX.wav, indices 0-4 the test set
    rate, t = 8000, np.arange(2400) / 8000
    for digit, freq in ((0, 300), (1, 1500)):
        for i in range(8):
            wave = 0.5 * np.sin(2 * np.pi * freq * (1 + 0.02 * i) * t)
            sf.write(tmp_path / f"{digit}_tone_{i}.wav", wave.astype(np.float32), rate)
    result = fsdd_digits.run(tmp_path)
    assert result["test_files"] == 10 and 0 <= result["test_accuracy"] <= 1
    assert result["epochs"] == [12] * len(result["epochs"]) and result["seconds_training"] > 0


def test_builtin_model_reads_a_manual_page_as_plain_text():
    page = "\n".join([
        '.\\" a comment',
        ".de XX", ".ft B", "..",  # a macro definition
        '.TH LS 1 "2024" "GNU coreutils"',
        ".SH NAME", "ls \\- list directory contents",
        ".SH DESCRIPTION",
        "List information about the \\fIFILE\\fPs (the current directory by default).",
        ".PP", ".TP", ".BR \\-a \\(em\\(lqall\\(rq", "do not ignore entries starting with .",
        ".sp", "\\h'-04'\\(bu\\h'+03'Sort entries\\ alphabetically\\&."])
    assert builtin_model.roff_text(page) == "\n".join([
        "NAME", "ls - list directory contents", "DESCRIPTION",
        "List information about the FILEs (the current directory by default).", "",
        "-a -\"all\"", "do not ignore entries starting with .", "",
        "*Sort entries alphabetically."]) + "\n"
    assert not builtin_model.licence_free("under the GNU General Public License, version 3")


def test_finetune_reads_both_runs(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("You may copy and distribute verbatim copies of this document. " * 40)
    result = finetune.compare([str(text)], 1, ["--max-steps", "2"])
    for way in ("scratch", "finetune"):
        assert result[way]["steps"] == 2 and result[way]["val_loss"] > 0
        assert result[way]["sample"].startswith(finetune.PRIME)
    assert result["gain"] == round(result["scratch"]["val_loss"] - result["finetune"]["val_loss"], 4)


def test_every_script_answers_help_without_running():
    # `--help` prints a script's usage and exits; a script without options once ran its whole
    # benchmark (and wrote its results file) instead. One process for all, torch imported once.
    import subprocess

    scripts = sorted(p for p in Path(forecast.__file__).parent.glob("*.py") if p.name != "common.py")
    code = ("import runpy, sys\n"
            "for path in sys.argv[1:]:\n"
            "    sys.argv = [path, '--help']\n"
            "    try:\n"
            "        runpy.run_path(path, run_name='__main__')\n"
            "    except SystemExit as e:\n"
            "        print('exit', e.code, path)\n"
            "    else:\n"
            "        print('ran', path)\n")
    done = subprocess.run([sys.executable, "-c", code, *map(str, scripts)], capture_output=True,
                          text=True, timeout=120, cwd=scripts[0].parent)
    exits = [line for line in done.stdout.splitlines() if line.startswith(("exit", "ran"))]
    assert exits == [f"exit 0 {p}" for p in scripts], done.stderr[-2000:]
