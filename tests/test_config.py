"""Checked configs and JSON: numbers too long or too large to convert are clear errors."""

import json

import pytest
from conftest import TINY, one_error_line

from rnnkit import RnnkitError, checkpoint
from rnnkit.config import from_dict, parse_json
from rnnkit.training import TrainConfig

LONG = "1" * 5000  # an integer past Python's 4,300-digit conversion limit


@pytest.mark.parametrize("text, message", [
    (LONG, "an integer has more than 4300 digits"),
    ('{"a": [' + LONG + "]}", "an integer has more than 4300 digits"),
    ("[" * 100_000, "nested too deeply"),
    (b'{"a": "\xff"}', "can't decode byte 0xff"),
    ("{nope", "Expecting property name"),
])
def test_parse_json_raises_only_value_error(text, message):
    with pytest.raises(ValueError, match=message):
        parse_json(text)


def test_a_float_option_given_an_integer_beyond_any_float():
    with pytest.raises(RnnkitError, match=r"options.lr must be a float, got 1000.*\(401 characters\)"
                       ", too large for one"):
        from_dict(TrainConfig, {"lr": 10**400}, "options")
    assert from_dict(TrainConfig, {"grad_clip": 10**300}, "options").grad_clip == 1e300


@pytest.fixture
def run(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", 3)[0] == 0
    return run


def rewrite(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("section, key, value, command", [
    ("model", "hidden", LONG, "sample"),
    ("train", "lr", str(10**400), "eval"),
    ("train", "seq_len", LONG, "eval"),
])
def test_run_config_with_unconvertible_numbers_is_one_line(run, cli, section, key, value, command):
    config = json.loads((run / "config.json").read_text())
    rewrite(run / "config.json", f'"{key}": {json.dumps(config[section][key])}', f'"{key}": {value}')
    status, _, err = cli(command, run)
    assert status == 2 and "config.json" in one_error_line(err)


def test_trainer_state_with_a_number_too_long_is_one_line(run, cli, corpus):
    tensors, meta = checkpoint.read_safetensors(run / "last.safetensors")
    meta["progress"] = meta["progress"].replace('"step": 3', f'"step": {LONG}')
    checkpoint.write_safetensors(run / "last.safetensors", tensors, meta)
    status, _, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", 6, "--resume")
    assert status == 2 and "has no readable trainer state" in one_error_line(err)
