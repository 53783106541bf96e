"""Audio as sequences, the way Velardo puts it in front of an RNN.

    raw amplitude    [sr * duration, 1]                  one feature per sample (univariate)
    MFCCs            [sr * duration / hop_length, F]     one vector per frame (multivariate)

with F = n_mfcc, or 3 * n_mfcc with the first and second deltas. Files are read with soundfile
(libsndfile), mixed to mono and resampled to `sample_rate` (22050 by default);
a resampling is reported once per source rate. MFCCs come from `librosa.feature.mfcc` with
`center=True`, so a signal of N samples gives 1 + N // hop_length frames.

A folder of files is a labelled data set: labels come from sub-folder names (`digits/7/a.wav`) or
from the first group of a regular expression on the file name (`^(\\d)_` for the Free Spoken Digit
Dataset's `7_jackson_32.wav`). Features are computed once and cached as a pickle-free `.npz`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .config import check_fields
from .errors import RnnkitError, RnnkitWarning, require_positive
from .optional import need
from .runfiles import atomic_write

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")
OTHER_AUDIO = (".m4a", ".opus", ".aac", ".wma", ".webm", ".mp4", ".amr", ".3gp", ".caf")  # not read
FEATURES = ("mfcc", "raw")


@dataclass
class AudioConfig:
    """How audio becomes a sequence; saved with a run so prediction computes the same features."""

    sample_rate: int = 22050  # every file is resampled to this rate (Hz)
    features: str = "mfcc"  # "mfcc": [frames, n_mfcc] or "raw": [samples, 1]
    n_mfcc: int = 13  # MFCC coefficients per frame
    n_fft: int = 2048  # FFT window in samples
    hop_length: int = 512  # samples between frames
    n_mels: int = 128  # mel bands the MFCCs are taken from
    deltas: bool = False  # append first and second time derivatives (F = 3 * n_mfcc)

    def __post_init__(self):
        check_fields(self)
        require_positive(sample_rate=self.sample_rate, n_mfcc=self.n_mfcc, n_fft=self.n_fft,
                         hop_length=self.hop_length, n_mels=self.n_mels)
        if self.features not in FEATURES:
            raise RnnkitError(f"unknown features {self.features!r}; choose mfcc or raw")
        if self.features == "mfcc" and self.n_mfcc > self.n_mels:  # librosa gives n_mels then
            raise RnnkitError(f"--n-mfcc {self.n_mfcc} is more than the --n-mels {self.n_mels} "
                              "bands they are taken from; lower --n-mfcc or raise --n-mels")

    @property
    def feature_size(self) -> int:
        if self.features == "raw":
            return 1
        return self.n_mfcc * (3 if self.deltas else 1)


def load_audio(path: str | os.PathLike, sample_rate: int = 22050) -> np.ndarray:
    """Mono float32 samples of an audio file at `sample_rate`: (N,). Says when it resamples."""
    sf = need("soundfile", "audio")
    path = Path(path)
    if not path.is_file():
        raise RnnkitError(f"{path}: no such audio file")
    try:  # libsndfile reads every format in AUDIO_SUFFIXES, mp3 included (1.1 and newer)
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, channels)
        samples = samples.mean(axis=1)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        reason = str(e).rsplit(": ", 1)[-1].strip(" .")  # without the path again
        raise RnnkitError(f"{path}: not a readable audio file ({reason})") from None
    if samples.size == 0:
        raise RnnkitError(f"{path}: the audio file holds no samples (zero length)")
    if not np.isfinite(samples).all():
        raise RnnkitError(f"{path}: the audio holds NaN or infinite samples")
    if rate != sample_rate:
        librosa = need("librosa", "audio")

        warnings.warn(ResampleWarning(f"resampling audio from {rate} Hz to {sample_rate} Hz",
                                      rate), stacklevel=2)
        samples = librosa.resample(samples, orig_sr=rate, target_sr=sample_rate)
    return samples.astype(np.float32, copy=False)


class ResampleWarning(UserWarning):
    """Audio was resampled to the configured rate (a report, not a fault); `rate` is the file's."""

    def __init__(self, message: str, rate: int = 0):
        super().__init__(message)
        self.rate = rate


def features(samples: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """(N,) samples at cfg.sample_rate -> raw (N, 1) or MFCCs (1 + N // hop_length, F)."""
    if cfg.features == "raw":
        return samples[:, None]  # (N, 1)
    librosa = need("librosa", "audio")

    mfcc = librosa.feature.mfcc(y=samples, sr=cfg.sample_rate, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft,
                                hop_length=cfg.hop_length, n_mels=cfg.n_mels, center=True)
    if cfg.deltas:  # (n_mfcc, frames) -> (3 * n_mfcc, frames)
        width = min(9, mfcc.shape[1] if mfcc.shape[1] % 2 else mfcc.shape[1] - 1)
        if width >= 3:
            d1 = librosa.feature.delta(mfcc, width=width, order=1, mode="nearest")
            d2 = librosa.feature.delta(mfcc, width=width, order=2, mode="nearest")
        else:  # one or two frames: no change to measure
            d1 = d2 = np.zeros_like(mfcc)
        mfcc = np.concatenate([mfcc, d1, d2])
    return np.ascontiguousarray(mfcc.T, dtype=np.float32)  # (frames, F)


def file_features(path: str | os.PathLike, cfg: AudioConfig) -> np.ndarray:
    """One file's feature sequence (T, F)."""
    return features(load_audio(path, cfg.sample_rate), cfg)


def find_audio(folder: str | os.PathLike, label_pattern: str | None = None,
               labelled: bool = True) -> tuple[list[Path], list[str]]:
    """Audio files under `folder` (sorted) and their labels.

    Labels are the first group of `label_pattern` searched in the file name, or else the name of
    the file's sub-folder relative to `folder`; not `labelled` (files to predict), empty ones.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RnnkitError(f"{folder}: no such folder")
    found = [p for p in walk(folder) if p.is_file()]
    files = sorted(p for p in found if p.suffix.lower() in AUDIO_SUFFIXES)
    other = sorted({p.suffix.lower() for p in found if p.suffix.lower() in OTHER_AUDIO})
    if not files:
        raise RnnkitError(f"{folder}: the folder holds no audio files rnnkit reads "
                          f"({', '.join(AUDIO_SUFFIXES)})"
                          + (f"; convert its {', '.join(other)} files to .wav or .flac"
                             if other else ""))
    if other:  # a class of .m4a recordings vanished without a word
        skipped = sum(p.suffix.lower() in OTHER_AUDIO for p in found)
        warnings.warn(f"{folder}: {skipped} audio files of formats rnnkit does not read "
                      f"({', '.join(other)}) are left out; convert them to .wav or .flac to "
                      "use them", RnnkitWarning, stacklevel=2)
    labels = []
    if not labelled:
        return files, [""] * len(files)
    if label_pattern is not None:
        regex = compile_pattern(label_pattern, "--label-pattern")
        for p in files:
            m = regex.search(p.name)
            if not m:
                raise RnnkitError(f"{p}: the file name does not match --label-pattern "
                                  f"{label_pattern!r}")
            label = m.group(1) if regex.groups else m.group(0)
            if not label:
                raise RnnkitError(f"{p}: --label-pattern {label_pattern!r} matches the file name "
                                  "but its first group is empty; make the group match the label")
            labels.append(label)
    else:
        for p in files:
            parent = p.parent.relative_to(folder)
            if parent == Path("."):
                raise RnnkitError(f"{p}: no label; put files in one sub-folder per label or "
                                  "give --label-pattern REGEX (its first group is the label)")
            labels.append(parent.as_posix())
    return files, labels


def walk(folder: Path) -> list[Path]:
    """Every file under `folder`, through linked sub-folders too (each real folder once)."""
    seen, found = set(), []
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree: walked already
            dirs[:] = []
            continue
        seen.add(real)
        found += [Path(root) / n for n in names]
    return found


def compile_pattern(pattern: str, option: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise RnnkitError(f"{option} {pattern!r} is not a valid regular expression ({e})") from None


def cache_key(files: list[Path], cfg: AudioConfig) -> str:
    """Changes when a file is added, removed or modified, when a feature option changes, or when
    another librosa computes the features (its defaults have changed between versions)."""
    try:
        computed_by = importlib.metadata.version("librosa")
    except importlib.metadata.PackageNotFoundError:
        computed_by = ""
    h = hashlib.sha256(json.dumps({**asdict(cfg), "librosa": computed_by}, sort_keys=True).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_features(files: list[Path], cfg: AudioConfig, cache_dir: str | os.PathLike | None = None,
                  progress: bool = False, rate_option: bool = True) -> list[np.ndarray]:
    """Feature sequences of `files`, read from (or written to) `cache_dir/audio-KEY.npz`.

    The cache holds one concatenated array plus offsets, so it loads with allow_pickle=False.
    Warnings are shown once each, after the progress bar; a resampling says how many files it
    touched, and with `rate_option` (the user chose cfg.sample_rate: training) how to keep the
    files' rate, else (a trained run's rate: prediction) only that it is the run's.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"audio-{cache_key(files, cfg)}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    frames, offsets = z["frames"], z["offsets"]
                if len(offsets) == len(files) + 1:
                    return [frames[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is recomputed
    from tqdm import tqdm

    # shown on a terminal only (None: tqdm's own test), so logs and error lines stay clean
    bar = tqdm(files, disable=None if progress else True, unit="file", leave=False,
               desc="features")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # every one is recorded, then shown once below
            out = [file_features(p, cfg) for p in bar]
    finally:
        bar.close()  # clears the bar, also before an error message
    for message in dict.fromkeys(str(w.message) for w in caught):  # after the bar, once each
        first = next(w.message for w in caught if str(w.message) == message)
        if isinstance(first, ResampleWarning):
            n = sum(str(w.message) == message for w in caught)
            message += f" ({n} of {len(files)} files)" + (
                f"; give --sample-rate {first.rate} to keep the original rate" if rate_option
                else ", the rate the run was trained at")
        warnings.warn(message, type(first), stacklevel=2)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.concatenate([[0], np.cumsum([len(f) for f in out])])
        with atomic_write(path) as f:
            np.savez(f, frames=np.concatenate(out), offsets=offsets)
    return out
