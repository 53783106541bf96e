"""How fast the command line answers: `rnnkit --help` against `python -c "import torch"`.

    python benchmarks/cli_startup.py [--repeats 9]

Runs each command as a fresh process, alternately, `--repeats` times, and reports the median wall
time of each. `rnnkit` parses its arguments before loading PyTorch (the command's module is
imported once the arguments are read), so help and usage errors cost a Python start and argparse,
not PyTorch's import. Target: `rnnkit --help` at least 3 times faster than importing torch.
A command that loads a model pays the import: `rnnkit sample builtin --length 20` shows what a
load and 20 characters add to it (checkpoint checks and a meta-device copy, no compiler import).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from common import ROOT, median, save

COMMANDS = {
    "rnnkit --help": [sys.executable, "-m", "rnnkit", "--help"],
    "rnnkit train --help": [sys.executable, "-m", "rnnkit", "train", "--help"],
    "rnnkit classify train --help": [sys.executable, "-m", "rnnkit", "classify", "train", "--help"],
    "rnnkit sample builtin --length 20": [sys.executable, "-m", "rnnkit", "sample", "builtin",
                                          "--length", "20", "--seed", "0"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def seconds(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9, help="runs of each command (default 9)")
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout's rnnkit
    for argv in COMMANDS.values():  # warm the file cache once
        seconds(argv, env)
    times = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            times[name].append(seconds(argv, env))
    torch_s = median(times["python -c 'import torch'"])
    result = {"repeats": args.repeats, "commands": {}}
    print(f"{'command':36} {'median s':>9} {'torch import / it':>18}")
    for name, values in times.items():
        m = median(values)
        result["commands"][name] = {"median_s": round(m, 4), "speedup_vs_torch": round(torch_s / m, 2)}
        print(f"{name:36} {m:9.3f} {torch_s / m:18.1f}")
    save("cli_startup", result)


if __name__ == "__main__":
    main()
