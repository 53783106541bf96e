"""GPU check: rnnkit's CUDA paths, its speed against plain PyTorch, and a quality figure.

    PYTHONPATH=src python3 benchmarks/gpu_check.py [--data DIR] [--results FILE]
    PYTHONPATH=src python3 benchmarks/gpu_check.py --quick --device cpu    # smoke test, no GPU

One script, under 5 minutes on one GPU with the defaults (the quality run 180 s, the rest about
100 s). Each part runs in its own try block with a time limit, records pass or fail and the
error line, and the results file is rewritten after each part, so a failure or a kill keeps
what was done:

  cli         `rnnkit train` for a few hundred steps, then `eval` and `sample` on the GPU; the
              checkpoint written on the GPU loaded and sampled on the CPU
  precision   fp16 (with loss scaling) and bf16 autocast: a finite, decreasing loss
  tasks       `rnnkit classify train` (an .npz made here) and `rnnkit forecast train` (a CSV)
              on the GPU; the classifier then predicts on the CPU
  torchrun    one process in the real NCCL group (cpu:gloo,cuda:nccl): steps with gradient
              accumulation, a checkpoint, a resume
  too_many_processes   one process more than there are GPUs: refused in one line
  sampling    the stepper on the GPU against the CPU stepper; is `--device auto` the faster?
  throughput  `rnnkit train` against a plain cuDNN torch.nn.LSTM loop with the same model,
              batch and sequence length, 2 x 512 and 3 x 1024 (target: ratio at least 0.95)
  quality     tinyshakespeare validation loss after --quality-seconds of training with the GPU
              presets below, trained at the same time (target at most 1.40; nanoGPT's char
              transformer: 1.4697 after about 3 minutes on an A100)

Sub-commands run as `python3 -m rnnkit ...` (and torchrun as `python3 -m torch.distributed.run`)
with this checkout's src/ on PYTHONPATH. tinyshakespeare.txt is read from --data (default:
RNNKIT_DATA or ../shared/data); without it the other parts train on this Python's own source.
Without a GPU the script says so and exits 0 (unless --device cpu asks for the smoke test).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import DATA, ROOT, machine, median, plain_lstm_loop, rnnkit_train_speed

import rnnkit
from rnnkit import checkpoint
from rnnkit.runfiles import write_json_atomic
from rnnkit.text import default_corpus, prepare
from rnnkit.training import pick_device

NANOGPT_SHAKESPEARE = 1.4697  # nanoGPT's shakespeare_char validation loss, ~3 min on an A100
QUALITY_TARGET = 1.40
THROUGHPUT_TARGET = 0.95
# The GPU presets of the quality run: wide LSTMs over long sequences in bf16, with dropout and
# weight decay against tinyshakespeare's quick overfitting (3 minutes on a GPU are over 100 passes
# over its 1 MB; the best checkpoint is the one evaluated). They train at the same time on the one
# GPU, so each gets less of it than it would alone: a conservative figure for each.
# Evaluations every 200 steps: each writes about 400 MB of checkpoints, time taken from training.
QUALITY_COMMON = ["--batch-size", "128", "--seq-len", "256", "--lr", "2e-3", "--warmup", "100",
                  "--precision", "bf16", "--eval-every", "200", "--sample-length", "400"]
QUALITY_PRESETS = {
    "3x1024-dropout0.5": ["--layers", "3", "--hidden", "1024", "--dropout", "0.5",
                          "--weight-decay", "0.1", *QUALITY_COMMON],
    "2x1536-dropout0.5": ["--layers", "2", "--hidden", "1536", "--dropout", "0.5",
                          "--weight-decay", "0.1", *QUALITY_COMMON],
}
QUICK_PRESET = ["--layers", "1", "--hidden", "32", "--batch-size", "4", "--seq-len", "16",
                "--eval-every", "10", "--sample-length", "20"]


class CheckFailed(Exception):
    """A part ran but a check failed."""


@dataclass
class Sizes:
    """How big each part is: the real check, or the quick smoke test."""

    cli_steps: int = 300
    cli_model: tuple = ()  # extra train flags (none: rnnkit's defaults)
    precision_steps: int = 60
    precision_model: tuple = (2, 256)  # layers, hidden
    task_examples: int = 512
    task_epochs: int = 15
    series_steps: int = 4000
    torchrun_model: tuple = ("--hidden", "256", "--batch-size", "32", "--seq-len", "64")
    sample_length: int = 2000
    sample_model: tuple = (2, 512)  # layers, hidden
    throughput: tuple = ((2, 512), (3, 1024))  # layers, hidden
    throughput_batch: tuple = (128, 128)  # B, T
    throughput_steps: int = 120
    throughput_repeats: int = 3


QUICK = Sizes(cli_steps=20, cli_model=("--hidden", "32", "--layers", "1", "--batch-size", "4",
                                      "--seq-len", "16", "--eval-every", "10"),
              precision_steps=20, precision_model=(1, 32), task_examples=96, task_epochs=2, series_steps=400,
              torchrun_model=("--hidden", "32", "--layers", "1", "--batch-size", "4",
                              "--seq-len", "16"),
              sample_length=40, sample_model=(1, 32), throughput=((1, 32),),
              throughput_batch=(4, 16), throughput_steps=3, throughput_repeats=1)


@dataclass
class Context:
    device: str  # "cuda", or "cpu" for the smoke test
    sizes: Sizes
    tmp: Path
    corpus: Path  # tinyshakespeare, or this Python's source when it is absent
    shakespeare: Path | None
    args: argparse.Namespace


def say(text: str) -> None:
    print(text, flush=True)


class PartTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise PartTimeout in this process after `seconds` (sub-processes get their own limit)."""
    def expire(signum, frame):
        raise PartTimeout(f"ran past its limit of {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def launch(*args, timeout: float = 120) -> tuple[int, str, str]:
    """Run `python3 ARGS` with this checkout's src/ on PYTHONPATH: (exit status, stdout, stderr).

    The child gets its own process group, so that a time limit ends torchrun's workers too.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    args = [str(a) for a in args]
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


def command(*args, timeout: float = 120) -> tuple[str, str]:
    """launch(), and (stdout, stderr) when it succeeded; else CheckFailed with its last line."""
    status, out, err = launch(*args, timeout=timeout)
    if status:
        raise CheckFailed(f"`{' '.join(map(str, args[:3]))}` exited with {status}: "
                          f"{error_lines(err)}")
    return out, err


def error_lines(err: str) -> str:
    """What a failed command said: its lines naming an error (torchrun prints the workers'
    tracebacks before a summary of separator lines), else its last lines."""
    lines = [line.strip() for line in err.splitlines() if line.strip().strip("=-")]
    named = [line for line in lines if "error" in line.lower()]
    return " | ".join((named or lines)[-6:]) or "(no output)"


def rnnkit_cmd(*args, timeout: float = 120) -> tuple[str, str]:
    return command("-m", "rnnkit", *args, timeout=timeout)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    check(m is not None, f"no {pattern!r} in the output: {text[-300:]!r}")
    return float(m.group(1))


# ---------------------------------------------------------------------------------------------
# The parts


def part_cli(ctx: Context) -> dict:
    run = ctx.tmp / "cli"
    out, _ = rnnkit_cmd("train", ctx.corpus, "--out", run, "--device", ctx.device,
                        "--max-steps", ctx.sizes.cli_steps, "--sample-length", 100,
                        *ctx.sizes.cli_model, timeout=90)
    check(f"on {ctx.device}" in out, f"the run did not say it trained on {ctx.device}")
    best = number(r"best val_loss (\S+) nats", out)
    ev, _ = rnnkit_cmd("eval", run, "--device", ctx.device, timeout=30)
    val = number(r"val_loss (\S+) bpc", ev)
    check(abs(val - best) < 1e-3, f"rnnkit eval gives {val}, training reported {best}")
    prime = "ROMEO: what say you, my lord?"  # longer than 16: the fused path of the stepper
    samples = {}
    for where in dict.fromkeys((ctx.device, "cpu")):  # the GPU-written checkpoint on the CPU
        text, _ = rnnkit_cmd("sample", run, "--device", where, "--prime", prime, "--length", 200,
                             "--greedy", timeout=30)
        check(text.startswith(prime) and len(text) >= len(prime) + 200,
              f"sample on {where} gave {len(text)} characters")
        samples[where] = text
    return {"steps": ctx.sizes.cli_steps, "val_loss": val,
            "greedy_sample_same_on_cpu": samples["cpu"] == samples[ctx.device]
            if ctx.device != "cpu" else None,
            "sample": samples["cpu"][:300]}


def part_precision(ctx: Context) -> dict:
    result = {}
    steps = ctx.sizes.precision_steps
    layers, hidden = ctx.sizes.precision_model
    precisions = ("fp16", "bf16") if ctx.device == "cuda" else ("bf16",)  # fp16 LSTM: GPU only
    for precision in precisions:
        summary = rnnkit.train(
            [ctx.corpus], ctx.tmp / f"precision_{precision}",
            rnnkit.ModelConfig(layers=layers, hidden=hidden),
            rnnkit.TrainConfig(seq_len=64, batch_size=32, max_steps=steps, eval_every=steps // 4,
                               warmup=steps // 10, sample_length=0, device=ctx.device,
                               precision=precision), quiet=True)
        losses = [h["train_loss"] for h in summary["history"]]
        val = summary["best_val"]
        result[precision] = {"train_losses": losses, "best_val": val}
        check(all(map(math.isfinite, [*losses, val])), f"{precision}: a loss is not finite")
        check(losses[-1] < losses[0], f"{precision}: the loss did not decrease: {losses}")
    return result


def classifier_data(path: Path, n: int) -> None:
    """4 classes of noisy 2-feature sequences, 20 to 80 steps: sines of 4 frequencies."""
    rng = np.random.default_rng(0)
    T = 80
    x = np.zeros((n, T, 2), np.float32)
    lengths = rng.integers(20, T + 1, n)
    y = rng.integers(0, 4, n)
    for i in range(n):
        t = np.arange(lengths[i]) + rng.uniform(0, 50)
        w = 2 * np.pi * (y[i] + 1) / 24
        x[i, :lengths[i], 0] = np.sin(w * t) + rng.normal(0, 0.3, lengths[i])
        x[i, :lengths[i], 1] = np.cos(w * t) + rng.normal(0, 0.3, lengths[i])
    np.savez(path, x=x, lengths=lengths, y=y)


def part_tasks(ctx: Context) -> dict:
    s = ctx.sizes
    npz = ctx.tmp / "classes.npz"
    classifier_data(npz, s.task_examples)
    out, _ = rnnkit_cmd("classify", "train", npz, "--out", ctx.tmp / "classifier", "--device",
                        ctx.device, "--hidden", 64, "--epochs", s.task_epochs, "--max-time", "25s",
                        timeout=60)
    classifier_done = [line for line in out.splitlines() if line.startswith("done:")]
    accuracy = number(r"test_accuracy (\S+)", out)
    if ctx.device != "cpu":  # the GPU-trained classifier on the CPU
        predicted, _ = rnnkit_cmd("classify", "predict", ctx.tmp / "classifier", npz,
                                  "--device", "cpu", timeout=30)
        check(len(predicted.strip().splitlines()) >= s.task_examples,
              "classify predict on the CPU printed fewer lines than examples")
    t = np.arange(s.series_steps)
    series = (np.sin(2 * np.pi * t / 24) + 0.5 * np.sin(2 * np.pi * t / 96)
              + np.random.default_rng(1).normal(0, 0.1, len(t)))
    csv = ctx.tmp / "series.csv"
    csv.write_text("t,y\n" + "".join(f"{i},{v:.5f}\n" for i, v in zip(t, series, strict=True)))
    out, _ = rnnkit_cmd("forecast", "train", csv, "--columns", "y", "--horizon", 6, "--window", 48,
                        "--out", ctx.tmp / "forecaster", "--device", ctx.device, "--cell", "gru",
                        "--hidden", 64, "--epochs", s.task_epochs, "--max-time", "25s",
                        timeout=60)
    forecaster_done = [line for line in out.splitlines() if line.startswith("done:")]
    mae, naive = number(r"test_mae (\S+)", out), number(r"naive_mae (\S+)", out)
    if not ctx.args.quick:
        check(accuracy > 0.5, f"classifier test accuracy {accuracy} (chance 0.25)")
        check(mae < naive, f"forecaster MAE {mae} not below the naive {naive}")
    return {"classifier_test_accuracy": accuracy, "forecast_mae": mae, "naive_mae": naive,
            "classifier_done": classifier_done, "forecaster_done": forecaster_done}


def torchrun_train(ctx: Context, processes: int, run: Path) -> list:
    return ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", processes,
            "-m", "rnnkit", "train", ctx.corpus, "--out", run, "--device", ctx.device,
            "--eval-every", 10, "--accumulate", 2, "--sample-length", 0,
            *ctx.sizes.torchrun_model]


def part_torchrun(ctx: Context) -> dict:
    run = ctx.tmp / "torchrun"
    base = torchrun_train(ctx, 1, run)
    first, err1 = command(*base, "--max-steps", 20, timeout=60)
    check("done: 20 steps" in first, f"no 'done: 20 steps' in {first[-300:]!r}")
    resumed, err2 = command(*base, "--resume", "--max-steps", 30, timeout=60)
    check("done: 30 steps" in resumed, f"no 'done: 30 steps' in {resumed[-300:]!r}")
    meta = checkpoint.read_safetensors(run / "last.safetensors")[1]
    steps = [h["step"] for h in json.loads(meta["progress"])["history"]]
    check(steps == [10, 20, 30], f"evaluations at steps {steps}, not [10, 20, 30]")
    warnings = [line for line in (err1 + err2).splitlines() if "warn" in line.lower()]
    return {"history_steps": steps, "warnings": warnings[:10]}


def part_too_many_processes(ctx: Context) -> dict:
    """One process more than there are GPUs: the extra rank refuses with one line."""
    if ctx.device != "cuda":
        return {"skipped": "needs a GPU"}
    n = torch.cuda.device_count() + 1
    status, _, err = launch(*torchrun_train(ctx, n, ctx.tmp / "too_many"), "--max-steps", 2,
                            timeout=60)
    refusal = [line for line in err.splitlines() if "rnnkit: error: LOCAL_RANK" in line]
    check(status != 0 and len(refusal) == 1,
          f"torchrun with {n} processes on {n - 1} GPUs: exit {status}, {err[-300:]!r}")
    return {"processes": n, "refusal": refusal[0]}


def part_sampling(ctx: Context) -> dict:
    layers, hidden = ctx.sizes.sample_model
    vocab = rnnkit.Vocab("char", tuple(range(32, 97)))  # 65 symbols, as tinyshakespeare
    torch.manual_seed(0)
    model = rnnkit.CharLM(rnnkit.ModelConfig(vocab_size=len(vocab), layers=layers,
                                             hidden=hidden), vocab).eval()
    speed = {}
    for where in dict.fromkeys((ctx.device, "cpu")):
        m = model.to(where)
        sum(1 for _ in m.stream(prime="A", length=50, seed=0))  # warm up
        start = time.perf_counter()
        n = sum(1 for _ in m.stream(prime="A", length=ctx.sizes.sample_length, seed=0))
        speed[where] = n / (time.perf_counter() - start)
    faster = max(speed, key=speed.get)
    auto = pick_device("auto").type
    return {"model": f"{layers} x {hidden} lstm", "chars_per_s": speed, "faster": faster,
            "auto_picks": auto, "target_met": auto == faster,
            "target": "--device auto picks the faster device for sampling"}


def part_throughput(ctx: Context) -> dict:
    s = ctx.sizes
    B, T = s.throughput_batch
    data = prepare([ctx.corpus], ctx.tmp / "throughput_data")
    tokens, _ = data.split(0.1)
    device = torch.device(ctx.device)
    result = {}
    for layers, hidden in s.throughput:
        key = f"{layers}x{hidden}"
        plain_lstm_loop(tokens, len(data.vocab), layers, hidden, B, T, 3, device)  # warm up
        plain, mine = [], []
        for rep in range(s.throughput_repeats):
            plain.append(plain_lstm_loop(tokens, len(data.vocab), layers, hidden, B, T,
                                         s.throughput_steps, device))
            mine.append(rnnkit_train_speed(ctx.corpus, ctx.tmp / f"tp_{key}_{rep}", layers,
                                           hidden, B, T, s.throughput_steps, ctx.device))
            say(f"  {key} repeat {rep + 1}: plain {plain[-1]:,.0f} chars/s, rnnkit "
                f"{mine[-1]:,.0f} chars/s")
        ratio = median(mine) / median(plain)
        result[key] = {"plain_chars_per_s": plain, "rnnkit_chars_per_s": mine,
                       "ratio_of_medians": round(ratio, 4)}
    result.update(batch=B, seq_len=T, steps=s.throughput_steps, target=THROUGHPUT_TARGET,
                  target_met=all(v["ratio_of_medians"] >= THROUGHPUT_TARGET
                                 for v in result.values()))
    return result


def part_quality(ctx: Context) -> dict:
    if ctx.shakespeare is None:
        raise CheckFailed(f"tinyshakespeare.txt not found in {ctx.args.data}; give --data DIR")
    seconds = ctx.args.quality_seconds
    presets = {"quick": QUICK_PRESET} if ctx.args.quick else QUALITY_PRESETS
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    procs = {}
    for name, flags in presets.items():  # all at once, on the one GPU
        flags = [*flags, "--device", ctx.device]
        say(f"  $ rnnkit train tinyshakespeare.txt --out RUN --max-time {seconds:g}s "
            f"{' '.join(flags)}")
        args = ["-m", "rnnkit", "train", ctx.shakespeare, "--out", ctx.tmp / f"quality_{name}",
                "--max-time", f"{seconds:g}s", *flags]
        procs[name] = (flags, subprocess.Popen([sys.executable, *map(str, args)], env=env,
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True, start_new_session=True))
    results = {}
    try:
        for name, (flags, proc) in procs.items():
            out, err = proc.communicate(timeout=seconds + 90)
            if proc.returncode:
                results[name] = {"ok": False, "error": error_lines(err)}
                continue
            ev, _ = rnnkit_cmd("eval", ctx.tmp / f"quality_{name}", "--device", ctx.device,
                               timeout=60)
            val = number(r"val_loss (\S+) bpc", ev)
            sample = out.split("--- sample (temperature 0.8) ---\n", 1)[-1].rsplit("\n---", 1)[0]
            results[name] = {
                "val_loss": val, "bpc": val / math.log(2),
                "steps": int(number(r"done: (\d+) steps", out)),
                "evaluations": [line for line in out.splitlines() if line.startswith("step ")],
                "done": [line for line in out.splitlines() if line.startswith("done:")],
                "command": f"rnnkit train tinyshakespeare.txt --out RUN --max-time {seconds:g}s "
                           + " ".join(flags), "sample": sample[:400]}
    finally:
        for _, proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    best = min((r["val_loss"] for r in results.values() if "val_loss" in r), default=math.nan)
    check(math.isfinite(best), f"no preset finished: {results}")
    return {"val_loss": best, "train_seconds": seconds, "presets_at_once": len(presets),
            "presets": results, "nanogpt_reference": NANOGPT_SHAKESPEARE,
            "target": QUALITY_TARGET, "target_met": best <= QUALITY_TARGET}


# What each part reaches that only a GPU run reaches.
CUDA_PATHS = {
    "cli": "training.pick_device('cuda'), to_device's pinned non-blocking copies, cuDNN LSTM "
           "forward/backward, the GPU stepper (sample.Stepper on cuda, feed_many's fused chunk), "
           "checkpoint.write_safetensors from GPU tensors, load on the CPU",
    "precision": "torch.autocast('cuda', fp16/bf16), GradScaler('cuda') with unscale_ and clip",
    "tasks": "fitting.fit and fitting.dataset_loss on cuda, task_runs.load_task of a GPU run on the CPU",
    "torchrun": "distributed.setup's CUDA branch (set_device, cpu:gloo,cuda:nccl), DDP with "
                "device_ids, no_sync under --accumulate, gather_rows on NCCL, mean/broadcast/"
                "barrier on gloo, rows_of_saved to cuda on resume",
    "too_many_processes": "distributed.setup's refusal of a LOCAL_RANK without a GPU",
    "sampling": "CharLM.stream on cuda",
    "throughput": "rnnkit.train on cuda against torch.nn.LSTM on cuDNN",
    "quality": "a long bf16 run with evaluation and checkpoints on the GPU",
}
PARTS = {  # name: (function, time limit in seconds with the defaults)
    "cli": (part_cli, 45), "precision": (part_precision, 25), "tasks": (part_tasks, 75),
    "torchrun": (part_torchrun, 45), "too_many_processes": (part_too_many_processes, 30),
    "sampling": (part_sampling, 20),
    "throughput": (part_throughput, 90), "quality": (part_quality, None),  # --quality-seconds
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="folder holding tinyshakespeare.txt "
                   "(default: RNNKIT_DATA or ../shared/data)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a smoke test "
                   "of the script itself, with --quick")
    p.add_argument("--quick", action="store_true", help="shrink every part (a smoke test)")
    p.add_argument("--quality-seconds", type=float, default=180.0)
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        say(f"skipped: no CUDA GPU visible to torch {torch.__version__} (CUDA build: "
            f"{torch.version.cuda}); run this on a GPU machine, or try the script with "
            "--quick --device cpu")
        sys.exit(0)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    started = time.monotonic()
    results = {"script": "benchmarks/gpu_check.py", "device": args.device, "quick": args.quick,
               "quality_seconds": args.quality_seconds, "quality_presets": QUALITY_PRESETS,
               "parts": {}, "machine": machine()}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shakespeare = args.data / "tinyshakespeare.txt"
        shakespeare = shakespeare if shakespeare.is_file() else None
        corpus = shakespeare
        if corpus is None:  # this Python's own source, 1 MB of it, as one file
            corpus = tmp / "python_source.txt"
            corpus.write_text("".join(f.read_text(encoding="utf-8")
                                      for f in default_corpus(1 << 20)), encoding="utf-8")
            say(f"note: no tinyshakespeare.txt in {args.data}: training on this Python's source")
        ctx = Context(args.device, QUICK if args.quick else Sizes(), tmp, corpus, shakespeare, args)
        results["corpus"] = str(corpus.name)
        for name in args.parts.split(","):
            function, limit = PARTS[name]
            limit = (args.quality_seconds + 120) if limit is None else limit
            say(f"[{time.monotonic() - started:5.0f}s] {name} (limit {limit:.0f}s)")
            t0 = time.monotonic()
            record = {}
            try:
                with time_limit(limit):
                    record = {"ok": True, **function(ctx)}
            except Exception as e:
                record = {"ok": False, "error": f"{type(e).__name__}: {' '.join(str(e).split())}"}
            record.update(seconds=round(time.monotonic() - t0, 1), cuda_paths=CUDA_PATHS[name])
            results["parts"][name] = record
            results["total_seconds"] = round(time.monotonic() - started, 1)
            write_json_atomic(args.results, results)
            status = "ok" if record["ok"] else f"FAILED: {record['error']}"
            figures = {k: v for k, v in record.items() if k in ("val_loss", "target_met",
                                                                "classifier_test_accuracy")}
            say(f"[{time.monotonic() - started:5.0f}s] {name}: {status} {figures or ''}".rstrip())
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    failed = [n for n, r in results["parts"].items() if not r["ok"]]
    say(f"wrote {args.results} after {time.monotonic() - started:.0f}s; "
        f"{'all parts ok' if not failed else 'failed: ' + ', '.join(failed)}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
