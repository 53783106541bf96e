"""benchmarks/gpu_check.py, tried on the CPU: the skip without a GPU, the whole script in its
quick form, a missing corpus, and the time limit that ends a part's sub-processes."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PANGRAM, PYTHON

import rnnkit

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def script(*args, timeout=300):
    return subprocess.run([PYTHON, SCRIPT, *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


@pytest.mark.skipif(rnnkit.training.torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_skips_with_a_clear_message(tmp_path):
    done = script("--results", tmp_path / "gpu.json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("skipped: no CUDA GPU visible to torch")
    assert "--quick --device cpu" in done.stdout
    assert not (tmp_path / "gpu.json").exists()


def test_the_whole_script_runs_quickly_on_the_cpu(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "tinyshakespeare.txt").write_text(PANGRAM * 200)
    results = tmp_path / "out" / "gpu.json"
    done = script("--quick", "--device", "cpu", "--data", data, "--results", results,
                  "--quality-seconds", 4)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(results.read_text())
    assert list(report["parts"]) == list(gpu_check.PARTS)
    for name, part in report["parts"].items():
        assert part["ok"], (name, part)
        assert part["seconds"] >= 0 and part["cuda_paths"]
    parts = report["parts"]
    assert parts["torchrun"]["history_steps"] == [10, 20, 30]
    assert set(parts["precision"]) >= {"bf16"}
    assert math.isfinite(parts["quality"]["val_loss"])
    quick = parts["quality"]["presets"]["quick"]
    assert quick["val_loss"] == parts["quality"]["val_loss"] and quick["steps"] > 0
    assert quick["command"].startswith("rnnkit train tinyshakespeare.txt --out RUN --max-time 4s")
    assert parts["throughput"]["1x32"]["ratio_of_medians"] > 0
    assert parts["too_many_processes"] == {**parts["too_many_processes"], "skipped": "needs a GPU"}
    assert report["machine"]["cores"] and report["quality_seconds"] == 4
    assert "Traceback" not in done.stdout + done.stderr


def test_a_failing_part_is_recorded_with_its_error_line(tmp_path):
    results = tmp_path / "gpu.json"
    done = script("--quick", "--device", "cpu", "--data", tmp_path, "--results", results,
                  "--parts", "quality")
    assert done.returncode == 1
    part = json.loads(results.read_text())["parts"]["quality"]
    assert not part["ok"]
    assert part["error"] == f"CheckFailed: tinyshakespeare.txt not found in {tmp_path}; give " \
        "--data DIR"
    assert "quality: FAILED: CheckFailed: tinyshakespeare.txt not found" in done.stdout


def test_a_part_past_its_limit_ends_with_its_sub_processes():
    start = time.monotonic()
    with pytest.raises(gpu_check.PartTimeout), gpu_check.time_limit(1):
        gpu_check.launch("-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', "
                         "'import time; time.sleep(60)'])", timeout=120)
    assert time.monotonic() - start < 20
