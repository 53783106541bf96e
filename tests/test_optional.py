"""Optional packages: a missing one is one line naming the package and the extra that installs it."""

import sys

import numpy as np
import pytest
from conftest import one_error_line

from rnnkit import RnnkitError
from rnnkit.optional import need


def test_need_imports_or_names_the_extra():
    assert need("json", "audio") is sys.modules["json"]
    with pytest.raises(RnnkitError, match=r"this needs the optional package nowhere_pkg \(No "
                       r"module named 'nowhere_pkg'\); install it with: pip install "
                       r"nowhere_pkg \(rnnkit's 'audio' extra installs it with the rest\)"):
        need("nowhere_pkg.sub", "audio")


def test_a_missing_package_is_one_line_from_the_commands(cli, tmp_path, monkeypatch):
    # None in sys.modules makes `import` fail as if the package were not installed
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(20, 3, 1)).astype(np.float32),
             lengths=np.full(20, 3), y=np.arange(20) % 2)
    monkeypatch.setitem(sys.modules, "sklearn.model_selection", None)
    status, _, err = cli("classify", "train", tmp_path / "d.npz", "--out", tmp_path / "r",
                         "--epochs", "1", "--hidden", "4", "--device", "cpu")
    line = one_error_line(err)
    assert status == 2 and "optional package scikit-learn" in line and \
        "pip install scikit-learn (rnnkit's 'tasks' extra" in line
    (tmp_path / "audio" / "yes").mkdir(parents=True)
    (tmp_path / "audio" / "yes" / "a.wav").write_bytes(b"RIFF")
    monkeypatch.setitem(sys.modules, "soundfile", None)
    status, _, err = cli("classify", "train", tmp_path / "audio", "--out", tmp_path / "r")
    line = one_error_line(err)
    assert status == 2 and "optional package soundfile" in line and \
        "pip install soundfile (rnnkit's 'audio' extra" in line
