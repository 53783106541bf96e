"""The run directory and the train command's behaviour: whose files are deleted, what a resume
accepts and says, the metrics log, the time budget, logs without a terminal, --help, and the
README's Python API block run as pasted."""

import json

import pytest
from conftest import TINY, one_error_line

from rnnkit import runfiles


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
