"""Quality: validation loss on tinyshakespeare after a fixed training time on this machine.

    python benchmarks/shakespeare_quality.py [--minutes 10] [extra `rnnkit train` options]

Runs `rnnkit train` on the standard corpus (first 90% train, last 10% validation, as nanoGPT)
with a wall-clock budget, then `rnnkit eval` on the held-out 10%, and records the settings and the
loss in nats and bits per character. The target is at most 1.50 nats/char in 10 minutes on 2 CPU
cores. Reference points: nanoGPT's 6-layer transformer 1.47 (A100, 3 min), its CPU config 1.88.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

from common import DATA, require, save


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--name", default="shakespeare_quality")
    args, extra = p.parse_known_args()
    corpus = require(DATA / "tinyshakespeare.txt")
    with tempfile.TemporaryDirectory() as tmp:
        run = f"{tmp}/run"
        cmd = [sys.executable, "-m", "rnnkit", "train", str(corpus), "--out", run,
               "--max-time", f"{args.minutes * 60:.0f}s", "--sample-length", "400", *extra]
        print("$", " ".join(cmd[1:]), flush=True)
        t0 = time.monotonic()
        train = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.monotonic() - t0
        print(train.stdout)
        if train.returncode:
            sys.exit(f"training failed: {train.stderr.strip().splitlines()[-1:]}")
        ev = subprocess.run([sys.executable, "-m", "rnnkit", "eval", run],
                            capture_output=True, text=True, check=True)
        m = re.search(r"val_loss (\S+) bpc (\S+)", ev.stdout)
        val, bpc = float(m.group(1)), float(m.group(2))
        steps = re.search(r"done: (\d+) steps", train.stdout).group(1)
        sample = train.stdout.split("--- sample (temperature 0.8) ---\n", 1)[-1].rsplit("\n---", 1)[0]
    print(f"val_loss {val:.4f} nats/char ({bpc:.3f} bpc) after {seconds:.0f}s, {steps} steps; "
          f"target <= 1.50: {'met' if val <= 1.50 else 'NOT met'}")
    save(args.name, {"val_loss": val, "bpc": bpc, "train_seconds": round(seconds, 1),
                     "steps": int(steps), "options": extra, "minutes": args.minutes,
                     "sample": sample})


if __name__ == "__main__":
    main()
