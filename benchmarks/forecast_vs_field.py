"""Forecasting against the statistical field: rnnkit beside statsforecast's SeasonalNaive,
AutoETS and AutoARIMA, on data that ships inside Python packages (nothing is downloaded).

    data set (package)                            series  horizon  season
    M1 yearly (aeon, m1_yearly_dataset.tsf)          181        6       1
    Airline passengers, monthly (aeon)                 1       12      12
    Mauna Loa CO2, weekly (statsmodels.datasets)       1       52      52
    UK solar generation, half-hourly (aeon, 6 days)    1       48      48

Every model forecasts the last horizon of every series from what comes before it (the M-competition
protocol); everyone is scored by the same code (`rnnkit.forecast_scores`): MASE with the season
length and sMAPE, averaged over series. CO2's 59 missing weeks are filled by linear interpolation
first. No package here ships a long half-hourly electricity demand series (pmdarima's `taylor`
is not installed); the solar series is the half-hourly one that does ship, and it is short.

rnnkit runs `rnnkit forecast train` with its defaults and the same flags on every data set:
the horizon, the season, `--quantiles 0.1,0.9` (its 80% interval) and a CPU budget of
`--max-time` (default 300 s). Timings are wall-clock seconds on one CPU thread for everyone
(rnnkit: the whole command; anchors: fit and forecast).

Needs the `bench` extra (statsforecast, aeon, statsmodels). Writes
benchmarks/results/forecast_vs_field.json and prints the table as Markdown.

    python benchmarks/forecast_vs_field.py [--max-time 300] [--only m1,airline]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread for every model, set before imports

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from rnnkit.cli import main  # noqa: E402
from rnnkit.forecast_scores import score  # noqa: E402

DATA_SETS = {  # name -> (label, horizon, season)
    "m1": ("M1 yearly (181 series)", 6, 1),
    "airline": ("Airline, monthly", 12, 12),
    "co2": ("CO2, weekly", 52, 52),
    "solar": ("UK solar, half-hourly (6 days)", 48, 48),
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
    from aeon.datasets import load_solar

    return [np.asarray(load_solar(), dtype=np.float64)]


def run_rnnkit(series: list[np.ndarray], H: int, m: int, max_time: float, tmp: Path) -> dict:
    csv = tmp / "series.csv"
    lines = ["id,y"] + [f"s{i},{v:.10g}" for i, s in enumerate(series) for v in s]
    csv.write_text("\n".join(lines) + "\n")
    out = tmp / "run"
    args = ["forecast", "train", str(csv), "--id-column", "id", "--horizon", str(H), "--season",
            str(m), "--quantiles", "0.1,0.9", "--max-time", f"{max_time:g}s", "--device", "cpu",
            "--out", str(out)]
    started = time.perf_counter()
    status = main(args)
    seconds = time.perf_counter() - started
    if status != 0:
        sys.exit(status)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"mase": metrics["test"]["mase"], "smape": metrics["test"]["smape"],
            "coverage_80": metrics["coverage"]["80%"]["coverage"], "seconds": seconds,
            "epochs": len(metrics["history"]),
            "command": "rnnkit forecast train SERIES.csv " + " ".join(args[3:-2])}


def run_anchors(series: list[np.ndarray], H: int, m: int) -> dict:
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import AutoARIMA, AutoETS, SeasonalNaive

    train = pd.DataFrame({"unique_id": np.concatenate([[f"s{i}"] * (len(s) - H)
                                                       for i, s in enumerate(series)]),
                          "ds": np.concatenate([np.arange(len(s) - H) for s in series]),
                          "y": np.concatenate([s[:-H] for s in series])})
    histories = [s[:-H, None] for s in series]
    truths = np.stack([s[-H:, None] for s in series])  # (N, H, 1)
    out = {}
    for name, model in (("SeasonalNaive", SeasonalNaive(season_length=m)),
                         ("AutoETS", AutoETS(season_length=m)),
                         ("AutoARIMA", AutoARIMA(season_length=m))):
        started = time.perf_counter()
        forecast = StatsForecast(models=[model], freq=1, n_jobs=1).forecast(df=train, h=H)
        seconds = time.perf_counter() - started
        forecast = forecast.set_index("unique_id")
        pred = np.stack([forecast.loc[f"s{i}", forecast.columns[-1]].to_numpy()[:, None]
                         for i in range(len(series))])  # (N, H, 1)
        s = score(histories, truths, pred, m)
        out[name] = {"mase": s["mase"], "smape": s["smape"], "seconds": seconds}
    return out


def row(name: str, r: dict) -> str:
    label, H, m = DATA_SETS[name]
    k, a = r["rnnkit"], r["anchors"]
    beats = [n for n in ("SeasonalNaive", "AutoETS", "AutoARIMA") if k["mase"] < a[n]["mase"]]
    loses = [n for n in ("SeasonalNaive", "AutoETS", "AutoARIMA") if n not in beats]
    verdict = "beats all three" if not loses else \
        f"loses to {', '.join(loses)}" + (f"; beats {', '.join(beats)}" if beats else "")
    cells = [label, str(H), f"{k['mase']:.3f} / {k['smape']:.2f}", f"{k['coverage_80']:.0%}",
             f"{k['seconds']:.0f}"]
    cells += [f"{a[n]['mase']:.3f} / {a[n]['smape']:.2f} ({a[n]['seconds']:.1f} s)"
              for n in ("SeasonalNaive", "AutoETS", "AutoARIMA")]
    return "| " + " | ".join(cells + [verdict]) + " |"


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=float, default=300, help="rnnkit's CPU budget per "
                        "data set, seconds (default 300)")
    parser.add_argument("--only", default=",".join(DATA_SETS), help="comma-separated data sets "
                        f"(default all: {','.join(DATA_SETS)})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name in args.only.split(","):
        label, H, m = DATA_SETS[name]
        series = load(name)
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = {"rnnkit": run_rnnkit(series, H, m, args.max_time, Path(tmp)),
                             "anchors": run_anchors(series, H, m), "horizon": H, "season": m,
                             "series": len(series)}
        print(json.dumps(results[name]), flush=True)
    table = ["| data set | horizon | rnnkit MASE / sMAPE % | rnnkit 80% coverage | rnnkit "
             "seconds | SeasonalNaive | AutoETS | AutoARIMA | rnnkit against the field |",
             "|---|---|---|---|---|---|---|---|---|"] + [row(n, r) for n, r in results.items()]
    print("\n".join(table))
    import statsforecast

    save("forecast_vs_field", {"results": results, "table": table,
                               "load_average": os.getloadavg(),
                               "statsforecast": statsforecast.__version__,
                               "max_time": args.max_time})


if __name__ == "__main__":
    main_bench()
