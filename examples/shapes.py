"""Velardo's shapes: how 9 seconds of audio look to an RNN, as raw amplitude and as MFCCs.

    python examples/shapes.py

An RNN reads a sequence of vectors, so a piece of audio has to become a (time steps, features) array.
Velardo's two ways, for a 9-second signal at a sampling rate of 22050 Hz:

    univariate     raw amplitude, one number per sample:      [22050 * 9, 1] = [198450, 1]
    multivariate   MFCCs, one vector of 13 per frame:          [frames, 13]

The notes count the frames as sample_rate / hop_length * duration = 22050 / 512 * 9 = 387.6, so
387. librosa (and so `rnnkit.audio`) gives 388: its frames are centred, frame t is centred on sample
t * hop_length, and the signal is padded with n_fft // 2 samples on both sides so the first and last
frames fit. With N samples that makes

    frames = 1 + (N + 2 * (n_fft // 2) - n_fft) // hop_length = 1 + N // hop_length = 1 + 387 = 388

(frames are centred on samples 0, 512, ..., 387 * 512 = 198144, the last one still inside the signal).
Without centring, a frame must fit inside the signal: 1 + (N - n_fft) // hop_length = 384.

The signal is made here (a chirp from 220 Hz to 2 kHz), nothing is downloaded; the features come
from rnnkit's own `rnnkit.audio.features`, the function the audio commands use.
"""

from __future__ import annotations

import librosa
import numpy as np
import torch

import rnnkit
from rnnkit.audio import AudioConfig, features

SAMPLE_RATE = 22050  # Hz, Velardo's (and librosa's) default
DURATION = 9  # seconds


def chirp(sample_rate: int, duration: float, f0: float = 220.0, f1: float = 2000.0) -> np.ndarray:
    """A sine sweeping linearly from f0 to f1 Hz: (sample_rate * duration,) float32 samples."""
    t = np.arange(int(sample_rate * duration)) / sample_rate  # seconds
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration))
    return (0.5 * np.sin(phase)).astype(np.float32)


def shape(a) -> str:
    return "[" + ", ".join(str(n) for n in a.shape) + "]"


def main() -> None:
    torch.set_num_threads(1)
    samples = chirp(SAMPLE_RATE, DURATION)  # (N,)
    N = len(samples)
    print(f"A {DURATION}-second chirp (220 Hz -> 2 kHz) at {SAMPLE_RATE} Hz: {N} samples.")
    print()

    raw = features(samples, AudioConfig(sample_rate=SAMPLE_RATE, features="raw"))
    print("Univariate: raw amplitude, one feature per sample")
    print(f"  features(samples, AudioConfig(features=\"raw\")) has shape {shape(raw)}"
          f"  (= [{SAMPLE_RATE} * {DURATION}, 1])")
    print()

    cfg = AudioConfig(sample_rate=SAMPLE_RATE, n_mfcc=13, n_fft=2048, hop_length=512)
    mfcc = features(samples, cfg)  # (frames, 13)
    print(f"Multivariate: MFCCs, n_mfcc {cfg.n_mfcc}, n_fft {cfg.n_fft}, hop_length {cfg.hop_length}")
    print(f"  features(samples, AudioConfig()) has shape {shape(mfcc)}")
    notes = SAMPLE_RATE / cfg.hop_length * DURATION
    print(f"  the notes' count: sample_rate / hop_length * duration = {SAMPLE_RATE} / {cfg.hop_length}"
          f" * {DURATION} = {notes:.1f}, so {int(notes)}")
    print(f"  librosa's count, centred frames: 1 + N // hop_length = 1 + {N} // {cfg.hop_length}"
          f" = {1 + N // cfg.hop_length}")
    last = N // cfg.hop_length
    print(f"  why one more: librosa centres frame t on sample t * {cfg.hop_length}, padding the signal"
          f" with n_fft // 2 = {cfg.n_fft // 2}")
    print(f"  samples on both sides, so every t with t * {cfg.hop_length} inside the signal gets a"
          f" frame: t = 0, 1, ..., {last}")
    print(f"  ({last} * {cfg.hop_length} = {last * cfg.hop_length} <= {N - 1}), {last + 1} frames."
          f" The notes' formula counts the hops and drops frame 0.")
    not_centred = librosa.feature.mfcc(y=samples, sr=SAMPLE_RATE, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft,
                                       hop_length=cfg.hop_length, n_mels=cfg.n_mels, center=False).T
    print(f"  not centred (librosa center=False, every frame inside the signal): {shape(not_centred)},"
          f" 1 + (N - n_fft) // hop_length")
    print()

    print("Other settings, same signal:")
    for label, other in (("hop_length 256", AudioConfig(sample_rate=SAMPLE_RATE, hop_length=256)),
                         ("hop_length 1024", AudioConfig(sample_rate=SAMPLE_RATE, hop_length=1024)),
                         ("with deltas", AudioConfig(sample_rate=SAMPLE_RATE, deltas=True))):
        f = features(samples, other)
        print(f"  {label:16} shape {shape(f):10} (1 + N // {other.hop_length} = {1 + N // other.hop_length}"
              f" frames, {other.feature_size} features)")
    print()

    lstm = rnnkit.Recurrent("lstm", input_size=cfg.feature_size, hidden_size=32)
    x = torch.from_numpy(mfcc)[None]  # (B, T, F) = (1, 388, 13)
    with torch.no_grad():
        states, _ = lstm(x)  # (B, T, H)
    print(f"An RNN reads the MFCCs as a batch of one sequence: input {shape(x)} (B, T, F) ->"
          f" states {shape(states)} (B, T, H),")
    print(f"one step per frame: {states.shape[1]} steps, not the {N} of the raw signal.")
    print()
    print(f"Raw amplitude: {shape(raw)}. MFCCs: {shape(mfcc)}.")


if __name__ == "__main__":
    main()
