"""Forecasting against the statistical field: rnnkit beside statsforecast's SeasonalNaive,
AutoETS and AutoARIMA, on data that ships inside Python packages (nothing is downloaded).

    data set (package)                            series  horizon  season  origins
    M1 yearly (aeon, m1_yearly_dataset.tsf)          181        6       1        1
    Airline passengers, monthly (aeon)                 1       12      12        3
    Mauna Loa CO2, weekly (statsmodels.datasets)       1       52      52        4
    UK solar generation, half-hourly (aeon, 6 days)    1       48      48        1
    Electricity demand, half-hourly (pmdarima, taylor) 1       48      48        7
    checks, not used to choose rnnkit's defaults (statsmodels.datasets):
    Sunspots, yearly                                   1       11       1        4
    Nile river flow, yearly                            1       10       1        3
    US real GDP, quarterly (macrodata)                 1        8       4        4
    El Nino sea surface temperature, monthly           1       12      12        4

Every model forecasts the last horizon of every series from what comes before it (the M-competition
protocol); where a data set is one long series, the last K horizons (rolling origins H apart, K
in the table), so that its scores and coverage rest on K x H held-out points, not H. Each model
is fitted once, before the first test origin, and forecasts each later origin from the data up to
it (statsforecast's `cross_validation(refit=False)`; rnnkit's `--origins K`). Everyone is scored
by the same code (`rnnkit.forecast_scores`): MASE with the season length and sMAPE, averaged over
forecasts; the 80% intervals' coverage (rnnkit's 0.1 and 0.9 quantiles, the anchors' `level=[80]`)
over every held-out point; rnnkit calibrates its intervals at each test origin on the forecast
errors known there (`rnnkit.intervals`), the anchors' come from their fitted models. CO2's 59
missing weeks are filled by linear interpolation first. Taylor's series is the electricity
demand of England and Wales, June to August 2000, 12 weeks of half-hours (Taylor 2003), as
pmdarima's wheel ships it.

rnnkit runs `rnnkit forecast train` with its defaults and the same flags on every data set:
the horizon, the season, the test origins, `--quantiles 0.1,0.9` (its 80% interval) and a CPU
budget of `--max-time` (default 300 s), once for each of `--seeds` seeds (mean, standard
deviation and range over them; its weights and batch order change with the seed). Timings are
wall-clock seconds on one CPU thread for everyone (rnnkit: the whole command; anchors: fit and
forecasts).

Needs the `bench` extra (statsforecast, aeon, statsmodels, pmdarima). Writes
benchmarks/results/forecast_vs_field.json and prints the table as Markdown.

    python benchmarks/forecast_vs_field.py [--max-time 300] [--only m1,airline] [--seeds 3]
        [--merge] [--reuse-anchors]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread for every model, set before imports

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, save, spread  # noqa: E402

from rnnkit.cli import main  # noqa: E402
from rnnkit.forecast_scores import score  # noqa: E402

DATA_SETS = {  # name -> (label, horizon, season, test origins)
    "m1": ("M1 yearly (181 series)", 6, 1, 1),
    "airline": ("Airline, monthly", 12, 12, 3),
    "co2": ("CO2, weekly", 52, 52, 4),
    "solar": ("UK solar, half-hourly (6 days)", 48, 48, 1),
    "taylor": ("Electricity demand, half-hourly (12 weeks)", 48, 48, 7),
    "sunspots": ("Sunspots, yearly (check)", 11, 1, 4),
    "nile": ("Nile flow, yearly (check)", 10, 1, 3),
    "realgdp": ("US real GDP, quarterly (check)", 8, 4, 4),
    "elnino": ("El Nino sea temperature, monthly (check)", 12, 12, 4),
}


def load(name: str) -> list[np.ndarray]:
    """The series of a data set, each (T,) float64, from the packages' own files."""
    if name == "m1":
        import aeon.datasets

        path = Path(aeon.datasets.__file__).parent / "data" / "m1_yearly_dataset" / \
            "m1_yearly_dataset.tsf"
        series = []
        for line in path.read_text().splitlines():
            if line and not line.startswith(("#", "@")):
                series.append(np.array(line.split(":")[-1].split(","), dtype=np.float64))
        return series
    if name == "airline":
        from aeon.datasets import load_airline

        return [np.asarray(load_airline(), dtype=np.float64)]
    if name == "co2":
        from statsmodels.datasets import co2

        frame = co2.load_pandas().data["co2"]
        return [frame.interpolate().to_numpy(dtype=np.float64)]
    if name in ("sunspots", "nile", "realgdp", "elnino"):
        from statsmodels import datasets

        frame = getattr(datasets, "macrodata" if name == "realgdp" else name).load_pandas().data
        if name == "elnino":  # one row a year, a column a month
            return [frame.iloc[:, 1:].to_numpy(dtype=np.float64).ravel()]
        column = {"sunspots": "SUNACTIVITY", "nile": "volume", "realgdp": "realgdp"}[name]
        return [frame[column].to_numpy(dtype=np.float64)]
    if name == "taylor":
        from pmdarima.datasets import load_taylor

        return [np.asarray(load_taylor(), dtype=np.float64)]
    from aeon.datasets import load_solar

    return [np.asarray(load_solar(), dtype=np.float64)]


def write_csv(series: list[np.ndarray], path: Path) -> Path:
    """The series as one long CSV (id, y), what `rnnkit forecast train --id-column id` reads."""
    lines = ["id,y"] + [f"s{i},{v:.10g}" for i, s in enumerate(series) for v in s]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_rnnkit(csv: Path, H: int, m: int, K: int, max_time: float, seed: int) -> dict:
    out = csv.parent / f"run{seed}"
    args = ["forecast", "train", str(csv), "--id-column", "id", "--horizon", str(H), "--season",
            str(m), "--origins", str(K), "--quantiles", "0.1,0.9", "--max-time", f"{max_time:g}s",
            "--device", "cpu", "--seed", str(seed), "--out", str(out)]
    started = time.perf_counter()
    status = main(args)
    seconds = time.perf_counter() - started
    if status != 0:
        sys.exit(status)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"mase": metrics["test"]["mase"], "smape": metrics["test"]["smape"],
            "coverage_80": metrics["coverage"]["80%"]["coverage"], "seconds": seconds,
            "epochs": metrics["epochs"],
            "seed": seed, "command": "rnnkit forecast train SERIES.csv " + " ".join(args[3:-4])}


def summary(runs: list[dict]) -> dict:
    """rnnkit's runs over seeds: the mean of each figure, and the spread of MASE and coverage."""
    out = {k: statistics.fmean(r[k] for r in runs) for k in ("smape", "seconds")}
    for k in ("mase", "coverage_80"):
        out[k], out[f"{k}_std"], out[f"{k}_min"], out[f"{k}_max"] = spread([r[k] for r in runs])
    return {**out, "seeds": len(runs), "command": runs[0]["command"]}


def run_anchors(series: list[np.ndarray], H: int, m: int, K: int) -> dict:
    """Each anchor fitted once before the first of the last K horizons of every series, then
    forecasting each of them (with its 80% interval) from the data up to its origin."""
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import AutoARIMA, AutoETS, SeasonalNaive

    frame = pd.DataFrame({"unique_id": np.concatenate([[f"s{i}"] * len(s)
                                                       for i, s in enumerate(series)]),
                          "ds": np.concatenate([np.arange(len(s)) for s in series]),
                          "y": np.concatenate(series)})
    out = {}
    for name, model in (("SeasonalNaive", SeasonalNaive(season_length=m)),
                         ("AutoETS", AutoETS(season_length=m)),
                         ("AutoARIMA", AutoARIMA(season_length=m))):
        started = time.perf_counter()
        cv = StatsForecast(models=[model], freq=1, n_jobs=1).cross_validation(
            df=frame, h=H, n_windows=K, step_size=H, refit=False, level=[80])
        seconds = time.perf_counter() - started
        cv = cv.sort_values(["unique_id", "cutoff", "ds"])
        windows = [(int(uid[1:]), int(cutoff), part)
                   for (uid, cutoff), part in cv.groupby(["unique_id", "cutoff"], sort=False)]
        windows.sort(key=lambda w: w[:2])
        histories = [series[i][:c + 1, None] for i, c, _ in windows]
        truths = np.stack([part["y"].to_numpy()[:, None] for *_, part in windows])  # (n, H, 1)
        pred, lo, hi = (np.stack([part[col].to_numpy()[:, None] for *_, part in windows])
                        for col in (name, f"{name}-lo-80", f"{name}-hi-80"))
        got = score(histories, truths, pred, m)
        out[name] = {"mase": got["mase"], "smape": got["smape"], "seconds": seconds,
                     "coverage_80": float(((truths >= lo) & (truths <= hi)).mean())}
    return out


def row(name: str, r: dict) -> str:
    label, H, m, K = DATA_SETS[name]
    k, a = r["rnnkit"]["summary"], r["anchors"]
    beats = [n for n in ("SeasonalNaive", "AutoETS", "AutoARIMA") if k["mase"] < a[n]["mase"]]
    loses = [n for n in ("SeasonalNaive", "AutoETS", "AutoARIMA") if n not in beats]
    verdict = "beats all three" if not loses else \
        f"loses to {', '.join(loses)}" + (f"; beats {', '.join(beats)}" if beats else "")
    cells = [label, f"{H} x {K}", f"{k['mase']:.3f} ± {k['mase_std']:.3f} / {k['smape']:.2f}",
             f"{k['coverage_80']:.0%} ({k['coverage_80_min']:.0%} to {k['coverage_80_max']:.0%})",
             f"{k['seconds']:.0f}"]
    cells += [f"{a[n]['mase']:.3f} / {a[n]['smape']:.2f} / {a[n]['coverage_80']:.0%} "
              f"({a[n]['seconds']:.1f} s)" for n in ("SeasonalNaive", "AutoETS", "AutoARIMA")]
    return "| " + " | ".join(cells + [verdict]) + " |"


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=float, default=300, help="rnnkit's CPU budget per "
                        "data set, seconds (default 300)")
    parser.add_argument("--only", default=",".join(DATA_SETS), help="comma-separated data sets "
                        f"(default all: {','.join(DATA_SETS)})")
    parser.add_argument("--seeds", type=int, default=3, help="rnnkit runs per data set, seeds 0 "
                        "to N-1 (default 3); the anchors are deterministic")
    parser.add_argument("--merge", action="store_true", help="keep the other data sets' results "
                        "from the results file as it is when this run ends (to re-run some data "
                        "sets, or to run them as processes side by side)")
    parser.add_argument("--reuse-anchors", action="store_true", help="take a data set's anchors "
                        "from the last run's results file when its horizon, season, origins, "
                        "series and statsforecast version are the same (the anchors are "
                        "deterministic, and Taylor's AutoARIMA takes over half an hour)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import statsforecast

    path = RESULTS / "forecast_vs_field.json"
    last = json.loads(path.read_text()) if path.exists() else {}
    results = {}
    for name in args.only.split(","):
        label, H, m, K = DATA_SETS[name]
        series = load(name)
        setting = {"horizon": H, "season": m, "origins": K, "series": len(series)}
        before = last.get("results", {}).get(name) or {}
        reuse = args.reuse_anchors and last.get("statsforecast") == statsforecast.__version__ \
            and all(before.get(k) == v for k, v in setting.items())
        with tempfile.TemporaryDirectory() as tmp:
            csv = write_csv(series, Path(tmp) / "series.csv")
            runs = [run_rnnkit(csv, H, m, K, args.max_time, seed) for seed in range(args.seeds)]
            here = machine()  # each row its own: --merge keeps rows that other machines ran
            results[name] = {"rnnkit": {"summary": summary(runs), "runs": runs},
                             "anchors": before["anchors"] if reuse else
                             run_anchors(series, H, m, K), "anchors_reused": reuse, **setting,
                             "machine": here, "anchors_machine":
                             before.get("anchors_machine", before.get("machine", last.get(
                                 "machine"))) if reuse else here}
        print(json.dumps(results[name]), flush=True)
    if args.merge:  # read again now: a process run beside this one may have written since
        kept = json.loads(path.read_text()).get("results", {}) if path.exists() else {}
        results = {n: results.get(n, kept.get(n)) for n in DATA_SETS if n in results or n in kept}
    table = ["| data set | horizon x origins | rnnkit MASE (mean ± sd) / sMAPE % | rnnkit 80% "
             "coverage (mean, seeds' range) | "
             "rnnkit seconds | SeasonalNaive MASE / sMAPE % / 80% coverage | AutoETS | AutoARIMA "
             "| rnnkit against the field |",
             "|---|---|---|---|---|---|---|---|---|"] + [row(n, r) for n, r in results.items()]
    print("\n".join(table))
    save("forecast_vs_field", {"results": results, "table": table,
                               "load_average": os.getloadavg(),
                               "statsforecast": statsforecast.__version__,
                               "max_time": args.max_time, "seeds": args.seeds})


if __name__ == "__main__":
    main_bench()
