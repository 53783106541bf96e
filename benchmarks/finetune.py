"""Fine-tuning the built-in model against training from scratch, on text the built-in model never saw.

    python benchmarks/finetune.py [--minutes 2] [extra `rnnkit train` options, given to both]

Corpus: software licence texts that ship with Debian and Ubuntu in /usr/share/common-licenses
(GPL-3, Apache-2.0, MPL-2.0, GFDL-1.3: about 86 KB of English prose, each text free to copy
verbatim). The built-in model's corpus, Python's standard library, was trained with every file that
quotes a licence text left out (see builtin_model.py). rnnkit holds out the last 10% for validation.

Two runs with the same settings and the same wall-clock budget, one after the other:

    scratch    rnnkit train FILES --tokenizer byte --dropout 0.1 --max-time 2m   (a 2 x 384 LSTM,
               the built-in model's shape)
    finetune   rnnkit train FILES --init-from builtin --max-time 2m

then `rnnkit eval` of each on the held-out text and a sample of each. Target: fine-tuning at least
0.3 nats/byte lower. Without the licence texts it skips, saying so.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common import require, save

LICENCES = Path("/usr/share/common-licenses")
FILES = ("GPL-3", "Apache-2.0", "MPL-2.0", "GFDL-1.3")
PRIME = "You may "


def rnnkit(*args: str) -> str:
    cmd = [sys.executable, "-m", "rnnkit", *args]
    print("$ rnnkit", " ".join(args), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"rnnkit {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def compare(files: list[str], minutes: float, extra: list[str]) -> dict:
    """The two runs on `files`, each given `minutes` and the `rnnkit train` options `extra`:
    their validation losses, steps and samples, and the gain."""
    budget = ["--max-time", f"{minutes * 60:.0f}s", "--sample-length", "0", *extra]
    ways = {"scratch": ["--tokenizer", "byte", "--layers", "2", "--hidden", "384",
                        "--dropout", "0.1"],
            "finetune": ["--init-from", "builtin"]}
    result = {"corpus": [str(f) for f in files],
              "bytes": sum(Path(f).stat().st_size for f in files), "minutes": minutes,
              "options": extra}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in ways.items():
            run = f"{tmp}/{name}"
            out = rnnkit("train", *files, "--out", run, *options, *budget)
            steps = int(re.search(r"done: (\d+) steps", out).group(1))
            val = float(re.search(r"val_loss (\S+) bpc", rnnkit("eval", run)).group(1))
            sample = rnnkit("sample", run, "--prime", PRIME, "--length", "300",
                            "--temperature", "0.8", "--seed", "0").rstrip("\n")
            result[name] = {"val_loss": round(val, 4), "steps": steps, "sample": sample}
            print(f"{name}: val_loss {val:.4f} nats/byte after {steps} steps\n{sample}\n",
                  flush=True)
    result["gain"] = round(result["scratch"]["val_loss"] - result["finetune"]["val_loss"], 4)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=2.0)
    args, extra = p.parse_known_args()
    result = compare([str(require(LICENCES / name)) for name in FILES], args.minutes, extra)
    gain = result["gain"]
    print(f"fine-tuning is {gain:.3f} nats/byte lower than training from scratch; target >= 0.3: "
          f"{'met' if gain >= 0.3 else 'NOT met'}")
    save("finetune", result)


if __name__ == "__main__":
    main()
