"""The built-in model: shipped as data (fp16 safetensors, checked on load), opened by the name
"builtin" everywhere a run is, sampled and served with no run directory, and fine-tuned."""

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import one_error_line
from safetensors.torch import load_file, save_file

import rnnkit
from rnnkit import CharLM, RnnkitError, builtin, checkpoint
from rnnkit.cli import build_parser
from rnnkit.serve import load_runs

LICENCE = Path("/usr/share/common-licenses/Apache-2.0")


def test_the_builtin_files_are_small_fp16_safetensors_with_their_recipe():
    path = builtin.DIR / checkpoint.BEST
    assert path.stat().st_size <= 10 * 2**20
    assert {t.dtype for t in load_file(path).values()} == {torch.float16}
    recipe = json.loads((builtin.DIR / "recipe.json").read_text())
    config, model_cfg, vocab = checkpoint.read_run_config(builtin.DIR)
    assert recipe["model"] == config["model"] and vocab.kind == "byte" and len(vocab) == 256
    assert recipe["corpus"]["files"][-1] == "pydoc_data/topics.py"
    # held out: the end of the manual pages and the documentation, far below ln(256) = 5.5
    assert 0 < recipe["val_loss"] < 1.5 and recipe["steps"] > 0
    assert recipe["continued_from"]["command"].startswith("python benchmarks/builtin_model.py")
    assert "data" not in config  # no corpus path of the machine that trained it


def test_load_builtin_gives_fp32_weights_equal_to_the_stored_fp16():
    model = rnnkit.load("builtin")
    assert isinstance(model, CharLM) and not model.training
    stored = load_file(builtin.DIR / checkpoint.BEST)
    for name, value in model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, stored[name].float()), name


def test_the_builtin_model_knows_python_it_never_saw():
    """rnnkit's own source is not in its corpus: a model that learned Python predicts it far
    better than the ln(256) = 5.5 nats/byte of a model that knows nothing."""
    model = rnnkit.load("builtin")
    text = Path(rnnkit.lm.__file__).read_bytes()[:6000]
    ids = torch.tensor([model.vocab.encode(text)[0]])  # (1, T)
    with torch.no_grad():
        _, loss, _ = model(ids[:, :-1], ids[:, 1:])
    assert float(loss) < 2.0 < math.log(256)


def test_sample_with_no_run_directory_samples_the_builtin_model(cli):
    status, out, err = cli("sample", "--prime", "def ", "--length", 40, "--seed", 3)
    assert status == 0, err
    again = cli("sample", "builtin", "--prime", "def ", "--length", 40, "--seed", 3)[1]
    assert out == again and out.startswith("def ") and len(out.encode()) >= 44
    model = rnnkit.load("builtin")
    assert out == model.generate(prime="def ", length=40, seed=3) + "\n"


def test_serve_with_no_run_directory_offers_the_builtin_model():
    args = build_parser().parse_args(["serve"])
    runs = load_runs(args.run_dirs)
    assert list(runs) == ["builtin"] and isinstance(runs["builtin"], CharLM)


def test_eval_of_the_builtin_model_needs_a_text_file(cli, tmp_path):
    status, _, err = cli("eval", "builtin")
    assert status == 2 and "give a TEXT_FILE" in one_error_line(err)
    text = tmp_path / "a.py"
    text.write_text("def f(x):\n    return x + 1\n" * 40)
    status, out, _ = cli("eval", "builtin", text)
    assert status == 0 and float(re.search(r"val_loss (\S+)", out).group(1)) < 2.0


def test_a_directory_named_builtin_comes_first(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("train", corpus, "--out", "builtin", "--max-steps", 2, "--hidden", 16,
               "--layers", 1, "--seq-len", 8, "--batch-size", 2, "--sample-length", 0)[0] == 0
    assert rnnkit.load("builtin").config.hidden == 16
    # given no run directory, the commands use the built-in model all the same (they read the
    # folder, and an empty one named builtin was "not a run directory")
    (tmp_path / "builtin" / "config.json").unlink()
    status, out, err = cli("sample", "--prime", "def ", "--length", 10, "--seed", 3)
    assert status == 0 and out.startswith("def "), err
    assert list(load_runs([])) == ["builtin"]


@pytest.fixture
def copy(tmp_path, monkeypatch):
    """A copy of the built-in model's files that a test may damage, standing in for them."""
    folder = tmp_path / "builtin-copy"
    shutil.copytree(builtin.DIR, folder)
    monkeypatch.setattr(builtin, "DIR", folder)
    return folder


def test_damaged_builtin_files_are_refused_before_use(copy):
    path = copy / checkpoint.BEST
    tensors = load_file(path)
    tensors["head.bias"][3] = float("nan")
    save_file(tensors, str(path))
    with pytest.raises(RnnkitError, match="head.bias holds NaN"):
        rnnkit.load("builtin")
    tensors["head.bias"] = torch.zeros(256, dtype=torch.int16)
    save_file(tensors, str(path))
    with pytest.raises(RnnkitError, match="head.bias holds int16 values"):
        rnnkit.load("builtin")
    tensors["head.bias"] = torch.zeros(255, dtype=torch.float16)
    save_file(tensors, str(path))
    with pytest.raises(RnnkitError, match=r"head.bias has shape \(255,\)"):
        rnnkit.load("builtin")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(RnnkitError, match="corrupt or truncated"):
        rnnkit.load("builtin")


def test_a_missing_builtin_model_is_one_clear_line(cli, copy):
    shutil.rmtree(copy)
    status, _, err = cli("sample", "--length", 5)
    assert status == 2 and "the built-in model is not installed" in one_error_line(err)


@pytest.mark.skipif(not LICENCE.exists(), reason=f"{LICENCE} is not on this system")
def test_finetuning_the_builtin_model_adds_no_symbols_and_learns(cli, tmp_path):
    run = tmp_path / "tuned"
    status, out, err = cli("train", LICENCE, "--init-from", "builtin", "--out", run,
                           "--max-steps", 6, "--eval-every", 6, "--seq-len", 32,
                           "--batch-size", 4, "--sample-length", 0, "--warmup", 1,
                           "--lr", 1e-3)
    assert status == 0, err
    assert "the text adds no symbols to its 256" in out
    config, cfg, vocab = checkpoint.read_run_config(run)
    assert len(vocab) == 256 and config["train"]["init_from"] == "builtin"
    assert config["train"]["tokenizer"] == "byte" and cfg.hidden == 384
    before = float(re.search(r"val_loss (\S+)", cli("eval", "builtin", LICENCE)[1]).group(1))
    after = float(re.search(r"val_loss (\S+)", cli("eval", run, LICENCE)[1]).group(1))
    assert after < before
