"""Big corpora: preparation speed, and peak memory of training that does not grow with the corpus.

    python benchmarks/big_corpus.py [--sizes 10,100,1000] (MB)

For each size a corpus of that many bytes is generated (lines of random words over a 65-character
alphabet, as tinyshakespeare has), encoded with `rnnkit prepare` and trained on for a few steps
with `rnnkit train DATA`. Each command runs in its own process, and the peak resident memory
(ru_maxrss) of that process is recorded. The claim under test: peak memory of training is the
same for 10 MB and 1 GB, because the token file is memory-mapped and only the batches touch it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import save

ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'-&$3\n",
                         dtype=np.uint8)


def make_corpus(path: Path, megabytes: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(ALPHABET[rng.integers(0, len(ALPHABET), 1 << 20)].tobytes())


def run(cmd: list[str]) -> tuple[str, float, float]:
    """(stdout, seconds, peak RSS in MiB) of a child process."""
    script = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], "
              "capture_output=True, text=True); sys.stdout.write(r.stdout); "
              "sys.stderr.write(r.stderr); "
              "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
              "sys.exit(r.returncode)")
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script, *cmd], capture_output=True, text=True)
    seconds = time.monotonic() - start
    if result.returncode:
        sys.exit(f"failed: {' '.join(cmd)}: {result.stderr.strip().splitlines()[-1:]}")
    rss_kib = int(re.search(r"MAXRSS (\d+)", result.stdout).group(1))
    return result.stdout, seconds, rss_kib / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100,1000", help="corpus sizes in MB, comma-separated")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for mb in (int(s) for s in args.sizes.split(",")):
            corpus, data, out = tmp / f"c{mb}.txt", tmp / f"d{mb}", tmp / f"r{mb}"
            make_corpus(corpus, mb)
            _, prep_s, prep_rss = run([sys.executable, "-m", "rnnkit", "prepare", str(corpus),
                                       "--out", str(data)])
            _, train_s, train_rss = run([sys.executable, "-m", "rnnkit", "train", str(data),
                                         "--out", str(out), "--max-steps", str(args.steps),
                                         "--eval-every", str(args.steps), "--hidden", "256",
                                         "--sample-length", "0", "--eval-tokens", "100000"])
            row = {"megabytes": mb, "prepare_seconds": round(prep_s, 1),
                   "prepare_mb_per_s": round(mb / prep_s, 1), "prepare_peak_rss_mib":
                   round(prep_rss), "train_seconds": round(train_s, 1),
                   "train_peak_rss_mib": round(train_rss)}
            rows.append(row)
            print(row, flush=True)
            corpus.unlink()
    spread = max(r["train_peak_rss_mib"] for r in rows) - min(r["train_peak_rss_mib"] for r in rows)
    print(f"training peak RSS spread across sizes: {spread} MiB")
    save("big_corpus", {"rows": rows, "train_rss_spread_mib": spread, "steps": args.steps})


if __name__ == "__main__":
    main()
