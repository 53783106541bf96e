"""Audio features against librosa, folders as labelled data, and `rnnkit classify` end to end."""

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
from conftest import DATA, one_error_line

from rnnkit import RnnkitError, RnnkitWarning
from rnnkit.audio import AudioConfig, ResampleWarning, features, find_audio, load_audio, load_features

FSDD = DATA / "fsdd" / "recordings"
SMALL = ["--sample-rate", "8000", "--n-fft", "256", "--hop-length", "128", "--n-mels", "32",
         "--hidden", "16", "--epochs", "12", "--batch-size", "8", "--lr", "0.02",
         "--device", "cpu", "--warmup", "2"]


def tone(freq: float, seconds: float = 0.25, rate: int = 8000, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


@pytest.fixture
def tones(tmp_path):
    """A folder with one sub-folder per label: low (300 Hz) and high (1500 Hz) tones."""
    root = tmp_path / "tones"
    for label, freq in (("low", 300), ("high", 1500)):
        (root / label).mkdir(parents=True)
        for i in range(8):
            sf.write(root / label / f"{label}_{i}.wav", tone(freq * (1 + 0.02 * i), seed=i), 8000)
    return root


def test_velardo_shapes_and_librosa_values():
    # 9 s at 22050 Hz: raw [198450, 1]; MFCCs [1 + 198450 // 512, 13] = [388, 13]
    y = np.random.default_rng(0).normal(size=9 * 22050).astype(np.float32)
    assert features(y, AudioConfig(features="raw")).shape == (198450, 1)
    mfcc = features(y, AudioConfig())
    assert mfcc.shape == (388, 13)
    reference = librosa.feature.mfcc(y=y, sr=22050, n_mfcc=13, n_fft=2048, hop_length=512)
    np.testing.assert_allclose(mfcc, reference.T, rtol=1e-4, atol=1e-3)
    with_deltas = features(y, AudioConfig(deltas=True, n_mfcc=20))
    assert with_deltas.shape == (388, 60)
    np.testing.assert_allclose(with_deltas[:, 20:40],
                               librosa.feature.delta(with_deltas[:, :20].T, mode="nearest").T,
                               rtol=1e-4, atol=1e-3)


def test_resampling_is_reported(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(440, seconds=1.0), 8000)
    with pytest.warns(ResampleWarning, match="8000 Hz to 22050 Hz"):
        y = load_audio(path)  # default rate 22050
    assert len(y) == 22050
    assert len(load_audio(path, 8000)) == 8000  # no resampling, no warning


def test_labels_from_folders_and_pattern_and_cache(tones, tmp_path):
    files, labels = find_audio(tones)
    assert sorted(set(labels)) == ["high", "low"] and len(files) == 16
    _, by_name = find_audio(tones, r"^(\w+?)_")
    assert by_name == labels
    cfg = AudioConfig(sample_rate=8000, n_fft=256, hop_length=128)
    first = load_features(files, cfg, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = load_features(files, cfg, tmp_path / "cache")
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first[0].shape == (1 + 2000 // 128, 13)


def test_bad_audio_names_file_and_problem(tmp_path):
    (tmp_path / "x").mkdir()
    bad = tmp_path / "x" / "noise.wav"
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(RnnkitError, match="noise.wav: not a readable audio file"):
        load_audio(bad)
    empty = tmp_path / "x" / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(RnnkitError, match="empty.wav: the audio file holds no samples"):
        load_audio(empty)
    (tmp_path / "none").mkdir()
    with pytest.raises(RnnkitError, match="holds no audio files"):
        find_audio(tmp_path / "none")
    (tmp_path / "none" / "a.m4a").write_bytes(b"")
    with pytest.raises(RnnkitError, match="holds no audio files rnnkit reads .*; convert its "
                       ".m4a files to .wav or .flac"):
        find_audio(tmp_path / "none")


def test_a_class_of_recordings_rnnkit_cannot_read_is_named(tones):
    # a whole class of .m4a recordings vanished without a word: 2 classes trained, not 3
    (tones / "maybe").mkdir()
    for i in range(3):
        (tones / "maybe" / f"m{i}.m4a").write_bytes(b"\0")
    with pytest.warns(RnnkitWarning, match=r"3 audio files of formats rnnkit does not "
                      r"read \(.m4a\) are left out"):
        files, labels = find_audio(tones)
    assert set(labels) == {"low", "high"}


def test_classify_train_and_predict(cli, tones, tmp_path):
    out = tmp_path / "run"
    status, stdout, err = cli("classify", "train", tones, "--out", out, "--test-pattern",
                              "_[01]\\.wav$", "--val-fraction", "0", "--cell", "gru", *SMALL)
    assert status == 0, err
    lines = stdout.strip().splitlines()
    assert lines[-1] == "test_accuracy 1.0000"
    assert "4 test" in stdout and "confusion matrix" in stdout
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "rnnkit-classifier" and config["data"]["labels"] == ["high", "low"]
    status, stdout, err = cli("classify", "predict", out, tones / "low" / "low_0.wav",
                              tones / "high" / "high_1.wav")
    assert status == 0, err
    rows = [line.split("\t") for line in stdout.strip().splitlines()]
    assert [r[1] for r in rows] == ["low", "high"] and all(float(r[2]) > 0.5 for r in rows)


def test_classify_stratified_split_is_reported(cli, tones, tmp_path):
    status, stdout, err = cli("classify", "train", tones, "--out", tmp_path / "run",
                              "--test-fraction", "0.25", "--val-fraction", "0.2", *SMALL,
                              "--epochs", "2")
    assert status == 0, err
    assert "stratified 25% split" in stdout and "4 test" in stdout
    assert stdout.strip().splitlines()[-1].startswith("test_accuracy ")


@pytest.mark.filterwarnings("error")
def test_bad_inputs_are_one_line(cli, tones, tmp_path):
    def error(*args):
        status, _, err = cli("classify", "train", *args, "--out", tmp_path / "r", *SMALL)
        assert status == 2
        return one_error_line(err)

    (tmp_path / "empty").mkdir()
    assert "holds no audio files" in error(tmp_path / "empty")
    assert "needs at least two classes" in error(tones, "--label-pattern", r"(\.wav)$")
    assert "high_0.wav: --label-pattern '^(x?)' matches the file name but its first group is " \
        "empty" in error(tones, "--label-pattern", "^(x?)")
    assert "high_0.wav: --label-pattern '^(l)|^(h)' matches the file name but its first group " \
        "is empty" in error(tones, "--label-pattern", "^(l)|^(h)")  # was an internal error
    # the test pattern took every 'low' example: said so, not that the data has one label
    assert "every example left for training by --test-pattern '^low' has the label 'high'" \
        in error(tones, "--test-pattern", "^low")
    assert "the rarest class has 1; give --val-fraction 0 (no validation part)" in error(
        tones, "--test-pattern", "^low_[1-7]", "--val-fraction", "0.1")
    # refused after its config was written: no run is left to refuse the fixed command
    assert not (tmp_path / "r" / "config.json").exists()
    assert "--test-fraction must be above 0 and below 1" in error(tones, "--test-fraction", "0")
    assert "--columns applies to a CSV file, and " in error(tones, "--columns", "a")
    assert "--deltas applies to MFCC features, not to --features raw" in error(
        tones, "--features", "raw", "--deltas")
    (tones / "low" / "low_3.wav").write_bytes(b"RIFF....garbage")
    assert "low_3.wav: not a readable audio file" in error(tones)
    sf.write(tones / "low" / "low_3.wav", np.zeros(0, dtype=np.float32), 8000)
    assert "low_3.wav: the audio file holds no samples" in error(tones)
    status, _, err = cli("classify", "predict", tmp_path / "missing", tones / "low" / "low_0.wav")
    assert status == 2 and "not a task run directory" in one_error_line(err)


def test_fsdd_files_read_in_place(cli, tmp_path):
    if not FSDD.is_dir():
        pytest.skip(f"{FSDD} not found: the Free Spoken Digit Dataset is not available")
    folder = tmp_path / "fsdd"
    folder.mkdir()
    for digit in (0, 1):
        for speaker in ("jackson", "theo"):
            for i in range(6):
                (folder / f"{digit}_{speaker}_{i}.wav").symlink_to(FSDD /
                                                                   f"{digit}_{speaker}_{i}.wav")
    status, stdout, err = cli("classify", "train", folder, "--out", tmp_path / "run",
                              "--label-pattern", r"^(\d)_", "--test-pattern", r"_[0-1]\.wav$",
                              "--val-fraction", "0", *SMALL, "--n-mfcc", "20", "--deltas",
                              "--bidirectional", "--pool", "mean")
    assert status == 0, err
    assert "16 train / 0 validation / 8 test" in stdout
    assert float(stdout.strip().splitlines()[-1].split()[1]) >= 0.75


@pytest.mark.filterwarnings("default::rnnkit.audio.ResampleWarning")  # shown, as rnnkit does
def test_prediction_reports_resampling_once_without_a_flag_it_rejects(cli, tones, tmp_path):
    # trained at the default 22050 Hz on 8000 Hz files: training may suggest --sample-rate,
    # prediction uses the run's rate and has no such option
    out = tmp_path / "run"
    small = [a for a in SMALL if a not in ("--sample-rate", "8000")]
    status, _, err = cli("classify", "train", tones, "--out", out, "--test-pattern",
                         "_[01]\\.wav$", "--val-fraction", "0", *small, "--epochs", "1")
    assert status == 0, err
    resampling = [line for line in err.splitlines() if "resampling" in line]
    assert resampling == ["rnnkit: warning: resampling audio from 8000 Hz to 22050 Hz (16 of 16 "
                          "files); give --sample-rate 8000 to keep the original rate"]
    files = sorted(tones.rglob("*.wav"))[:3]
    status, stdout, err = cli("classify", "predict", out, *files)
    assert status == 0, err
    assert len(stdout.splitlines()) == 3
    resampling = [line for line in err.splitlines() if "resampling" in line]
    assert resampling == ["rnnkit: warning: resampling audio from 8000 Hz to 22050 Hz (3 of 3 "
                          "files), the rate the run was trained at"]
    # a folder beside loose files: still one warning (it was one for each), the same labels
    folder = files[0].parent
    status, both, err = cli("classify", "predict", out, folder, *files)
    in_folder = sorted(folder.rglob("*.wav"))
    assert status == 0 and len(both.splitlines()) == len(in_folder) + 3, err
    resampling = [line for line in err.splitlines() if "resampling" in line]
    assert resampling == [f"rnnkit: warning: resampling audio from 8000 Hz to 22050 Hz "
                          f"({len(in_folder) + 3} of {len(in_folder) + 3} files), the rate the "
                          "run was trained at"]
    assert both.splitlines()[len(in_folder):] == stdout.splitlines()
    status, _, err = cli("classify", "predict", out, files[0], "--sample-rate", "8000")
    assert status == 2
    assert one_error_line(err) == ("rnnkit: error: unrecognized arguments: --sample-rate 8000 "
                                   "(see: rnnkit classify predict --help)")


def test_more_mfccs_than_mel_bands_is_refused():
    with pytest.raises(RnnkitError, match="--n-mfcc 40 is more than the --n-mels 20 bands"):
        AudioConfig(n_mfcc=40, n_mels=20)


def test_the_feature_cache_is_keyed_by_the_librosa_that_computed_it(tones, monkeypatch):
    import importlib.metadata

    from rnnkit.audio import cache_key

    files, _ = find_audio(tones)
    key = cache_key(files, AudioConfig())
    assert cache_key(files, AudioConfig()) == key
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "0.0" if name == "librosa" else real(name))
    assert cache_key(files, AudioConfig()) != key


def test_linked_folders_are_read_and_nested_files_are_named_by_their_path(cli, tones, tmp_path):
    # A class whose folder is a link: it was left out without a word (Path.rglob skips links)
    root = tmp_path / "linked"
    root.mkdir()
    (root / "low").symlink_to(tones / "low", target_is_directory=True)
    (root / "high").symlink_to(tones / "high", target_is_directory=True)
    (root / "again").symlink_to(root, target_is_directory=True)  # a cycle: walked once
    files, labels = find_audio(root)
    assert len(files) == 16 and sorted(set(labels)) == ["high", "low"]
    out = tmp_path / "run"
    status, _, err = cli("classify", "train", root, "--out", out, *SMALL, "--epochs", "1")
    assert status == 0, err
    assert "features" not in err  # no progress bar where stderr is not a terminal
    # Two files of one name in two sub-folders are told apart by their paths in the folder
    status, stdout, err = cli("classify", "predict", out, tones)
    assert status == 0, err
    names = [line.split("\t")[0] for line in stdout.strip().splitlines()]
    assert "low/low_0.wav" in names and len(set(names)) == 16
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.wav").write_text("not audio")
    status, _, err = cli("classify", "predict", out, bad)
    assert status == 2 and "notes.wav: not a readable audio file" in one_error_line(err)
    assert "features" not in err
