"""`rnnkit forecast train` and `rnnkit forecast predict`: one global forecaster for many series.

    rnnkit forecast train SERIES --horizon H --out DIR [--id-column ID] [--time-column T]
        [--past A,B] [--known C] [--calendar hour,weekday] [--quantiles 0.1,0.5,0.9] [options]
    rnnkit forecast predict DIR SERIES [--plot PATH] [--show ID,ID]

Training holds out the last horizon of every series (`--origins K`: the last K), picks the best
epoch on the horizon before it, and scores the test forecasts as forecasters do
(`rnnkit.forecast_scores`): MASE and sMAPE against the naive and seasonal naive forecasts, and
each interval's coverage; DIR/metrics.json holds them. Intervals are calibrated at each test
origin on the held-out errors known there (`intervals.rolling_widening`): the validation horizon's,
then also the earlier test horizons'; forecasts after the data use all of them. Prediction
prints every series' next H steps as CSV (what `rnnkit.load(DIR).forecasts(SERIES)` returns) and
draws DIR/forecast.png.
The commands' options are defined in `cli`, with every other command's.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .checkpoint import output_file
from .configs import FitConfig
from .devices import pick_device
from .errors import RnnkitError
from .fitting import fit
from .forecast_scores import coverage, score, season_for, seasonal_naive
from .intervals import rolling_widening
from .optional import need
from .panel import (
    Panel,
    decode,
    encode,
    has_future,
    infer_season,
    read_panel,
    scaleless,
    split_origins,
    targets,
    truth,
)
from .plots import FORMATS, plot_forecast
from .runfiles import write_json_atomic
from .runs import Forecaster, load
from .task_cli import FORECASTER, check_model_options, done, fit_config, model_config
from .task_runs import examples_digest, read_format, resumed_config, training_run, write_config
from .tasks import SequenceModel


def train(args) -> int:
    started = time.monotonic()  # --max-time is this command's budget, reading data included
    fit_cfg, given = fit_config(args)
    for option, value in (("--horizon", args.horizon), ("--window", args.window)):
        if value is not None and value < 1:
            raise RnnkitError(f"{option} must be 1 step or more, got {value}")
    if args.season is not None and args.season < 1:
        raise RnnkitError(f"--season must be 1 or more, got {args.season}")
    if args.origins < 1 or args.val_origins < 0:
        raise RnnkitError(f"--origins must be 1 or more and --val-origins 0 or more, got "
                          f"{args.origins} and {args.val_origins}")
    if args.test_fraction is not None and not (
            0 < args.test_fraction < 1 and 0 <= args.val_fraction < 1
            and args.test_fraction + args.val_fraction < 1):
        raise RnnkitError("--test-fraction must be in (0, 1) and --val-fraction in [0, 1), "
                          "together below 1")
    if args.calendar and not args.time_column:
        raise RnnkitError("--calendar needs --time-column naming the column of dates")
    check_model_options(args, "regress")
    main = distributed.launched_rank() == 0  # under torchrun, rank 0 alone writes and reports
    with training_run(Path(args.out), FORECASTER, args.resume, main) as resuming:
        return train_in(args, fit_cfg, given, resuming, main, started)


def described(panel: Panel, i: int, path: str) -> str:
    return path if len(panel) == 1 else f"{path}, series {panel.ids[i]!r}"


def dataset(panel: Panel, origins: list[np.ndarray], data: dict,
            ) -> tuple[dict[str, torch.Tensor], int]:
    """The windows at `origins` as tensors for `fit`, and how many were left out as
    `panel.scaleless`."""
    enc = encode(panel, origins, data)
    y = targets(panel, enc, data["horizon"])
    keep = ~scaleless(enc, y, data)
    out = {"inputs": torch.from_numpy(enc["inputs"][keep]), "targets": torch.from_numpy(y[keep])}
    if (enc["lengths"][keep] != enc["inputs"].shape[1]).any():
        out["lengths"] = torch.from_numpy(enc["lengths"][keep])
    return out, int((~keep).sum())


def train_in(args, fit_cfg: FitConfig, given: set[str], resuming: bool, main: bool,
             started: float) -> int:
    """`rnnkit forecast train`, in its run directory held by `training_run`."""
    out = Path(args.out)
    say = print if main else (lambda *a, **k: None)
    H = args.horizon
    data: dict = {"source": "npz" if Path(args.series).suffix.lower() == ".npz" else "csv",
                  "columns": args.columns, "window": 1, "horizon": H, "std": [],
                  "id_column": args.id_column, "time_column": args.time_column,
                  "past": args.past or [], "known": args.known or [],
                  "calendar": args.calendar or [], "quantiles": args.quantiles or []}
    if data["source"] == "npz":  # saved with the run, then applied to the CSVs it predicts from
        for option, value in (("--id-column", args.id_column),
                              ("--time-column", args.time_column)):
            if value:
                raise RnnkitError(f"{option} applies to a CSV file, and {args.series} is an "
                                  ".npz file (its series are its rows, in order); leave it out")
    panel, data["columns"] = read_panel(args.series, data)
    data["digest"] = examples_digest(panel.ids, panel.values, panel.past, panel.known,
                                     panel.times)
    # the test's first origin needs a step before it (with --origins K, the last K horizons)
    held_steps = H * (args.origins if args.test_fraction is None else 1)
    for i, values in enumerate(panel.values):
        if len(values) < held_steps + 1:
            raise RnnkitError(f"{described(panel, i, args.series)}: the series has "
                              f"{len(values)} steps, shorter than the horizon {H}"
                              f"{f' times --origins {args.origins}' if held_steps > H else ''} "
                              "plus one observed step; lower --horizon"
                              f"{' or --origins' if held_steps > H else ''} or drop the series")
    m = args.season or infer_season(panel.times[0])
    history = max(len(v) for v in panel.values) - held_steps  # before the test, at the longest
    if args.season and m > 1 and history <= m:  # (a season from the times falls back to 1)
        raise RnnkitError(f"{args.series}: a season of {m} steps is longer than the {history} "
                          "steps before the test in the longest series, so no forecast could "
                          "repeat a season; give a shorter --season (1: none), or longer series")
    W = args.window or max(48, 2 * m)
    data.update(window=W, season=m, scale="run" if len(panel) == 1 else "window")
    train_o, val_o, test_o = split_origins([len(v) for v in panel.values], H, args.origins,
                                           args.val_origins, args.test_fraction,
                                           args.val_fraction)
    n_train, n_val, n_test = (sum(map(len, o)) for o in (train_o, val_o, test_o))
    if not n_train or not n_test:
        longest = max(len(v) for v in panel.values)
        raise RnnkitError(f"{args.series}: the longest series has {longest} steps, too few to "
                          f"hold out {'a test set' if not n_test else 'the test and validation'}"
                          f" of horizon {H} and still train; lower --horizon, --origins or "
                          "--val-origins")
    if data["scale"] == "run":  # one series: the std of H-step changes where it trains
        seen = panel.values[0][:int(train_o[0][-1]) + H]
        std = np.diff(seen, axis=0).std(0) * np.sqrt(H) if len(seen) > 1 else np.ones(1)
        data["std"] = (np.broadcast_to(std, (seen.shape[1],)) + 1e-6).tolist()
    F = len(data["columns"])
    train, left_out = dataset(panel, train_o, data)
    val, val_left_out = dataset(panel, val_o, data) if n_val else (None, 0)
    val = val if val is not None and len(val["targets"]) else None
    if not len(train["targets"]):
        raise RnnkitError(f"{args.series}: every training window's series stays flat through "
                          "the window and then changes, which no window's scale can read; give "
                          "series that move before their changes, or a longer --window")
    torch.manual_seed(fit_cfg.seed)  # the initial weights, so that --seed repeats the run
    cfg = replace(model_config(args, train["inputs"].shape[2],
                               H * F * max(1, len(data["quantiles"])), "regress"),
                  quantiles=data["quantiles"], tail=H if has_future(data) else 0)
    model = SequenceModel(cfg)
    covariates = train["inputs"][..., F:F + len(data["past"]) + len(data["known"])
                                 + 2 * len(data["calendar"])]  # (N, L, covariates)
    if covariates.shape[-1]:  # standardise them; the targets are already scaled
        mean, std = torch.zeros(cfg.input_size), torch.ones(cfg.input_size)
        flat = covariates.reshape(-1, covariates.shape[-1])
        mean[F:F + flat.shape[1]], std[F:F + flat.shape[1]] = flat.mean(0), flat.std(0)
        model.set_standardization(mean, std)
    if resuming:  # the calibration is the run's, until the resumed training makes its own
        stored = read_format(out, FORECASTER)[1].get("data") or {}
        data["widen"], data["offsets"] = stored.get("widen", []), stored.get("offsets", [])
        fit_cfg = resumed_config(out, FORECASTER, model.config, fit_cfg, given, data)
    elif main:
        write_config(out, FORECASTER, model.config, fit_cfg, data)
    how = (f"the last {args.origins} horizon(s) of every series" if args.test_fraction is None
           else f"the last {args.test_fraction:.0%} of every series, every step an origin")
    say(f"data: {args.series}, {len(panel)} series x {F} columns {data['columns']}, "
        f"{sum(len(v) for v in panel.values)} steps; {n_train} train / {n_val} validation / "
        f"{n_test} test windows (test: {how}); window {W}, horizon {H}, season {m}")
    if left_out or val_left_out:
        say(f"left out {left_out} train and {val_left_out} validation windows whose series "
            "stays flat through the window and then changes: no scale reads them, and they "
            "forecast the seasonal naive values")
    fitted = time.monotonic()
    summary = fit(model, train, val, fit_cfg, out, started=started, test_rows=n_test,
                  resume=resuming)
    stopped = 130 if summary["stopped"] in ("SIGINT", "SIGTERM") else 0
    if not main:
        return stopped
    tested = time.monotonic()
    forecaster = Forecaster(model, data)
    # each test origin calibrated on the errors known there: the validation horizons' and the
    # earlier test horizons' (with --val-origins 0, the first origin's intervals stay as made)
    if forecaster.levels and (n_val or n_test > len(panel)):
        held = [np.concatenate([v, t]) for v, t in zip(val_o, test_o, strict=True)]
        raw, enc = forecaster.outputs(panel, held)
        is_test = np.concatenate([np.arange(len(v) + len(t)) >= len(v)
                                 for v, t in zip(val_o, test_o, strict=True)])
        data["offsets"] = []  # an earlier version's calibration, if resumed: replaced
        y = targets(panel, enc, H)
        widen, data["widen"] = rolling_widening(
            raw, y, enc, [len(v) for v in panel.values], is_test, H, forecaster.levels,
            ~scaleless(enc, y, data))
        write_config(out, FORECASTER, model.config, fit_cfg, data)
        enc = {k: v[is_test] for k, v in enc.items()}
        forecasts = decode(raw[is_test], enc, H, forecaster.levels, widen)
    else:
        forecasts, enc = forecaster.run(panel, test_o)  # (n, H, F, Q)
    metrics = scores(panel, enc, forecaster.point(forecasts), m)
    if forecaster.levels:
        metrics["coverage"] = coverage(metrics.pop("truth"), forecasts, forecaster.levels)
    metrics.pop("truth", None)
    metrics.update(series=len(panel), test_windows=n_test, season=m,
                   seconds=summary["seconds"], train_seconds=summary["train_seconds"],
                   eval_seconds=summary["eval_seconds"], epochs=summary["epochs"],
                   history=summary["history"])
    write_json_atomic(out / "metrics.json", metrics)
    print(report(metrics, f"test ({n_test} windows of {len(panel)} series)"))
    print(done([summary], fit_cfg, fitted - started, time.monotonic() - tested, out))
    print(f"test_mae {metrics['test']['mae']:.4f} naive_mae {metrics['naive']['mae']:.4f} "
          f"test_mase {metrics['test']['mase']:.4f} seasonal_naive_mase "
          f"{metrics['seasonal_naive']['mase']:.4f}")
    return stopped


def scores(panel: Panel, enc: dict, point: np.ndarray, m: int) -> dict:
    """The model's, the naive and the seasonal naive forecasts' scores at the windows `enc`."""
    H = point.shape[1]
    histories = [panel.values[i][:o] for i, o in zip(enc["series"], enc["origin"], strict=True)]
    y = truth(panel, enc, H)  # (n, H, F)
    naive = np.stack([h[-1:].repeat(H, 0) for h in histories])
    snaive = np.stack([seasonal_naive(h, H, m) for h in histories])
    return {"test": score(histories, y, point, m), "naive": score(histories, y, naive, m),
            "seasonal_naive": score(histories, y, snaive, m), "truth": y,
            "season_shorter": [sum(season_for(len(h), m) != m for h in histories),
                               len(histories)]}  # histories shorter than a season, of all


def season_words(metrics: dict) -> str:
    """'m = 12', or what was used where a history is shorter than a season (MASE and seasonal
    naive then take m = 1 for it, as the M4 competition's rules do)."""
    m, (shorter, windows) = metrics["season"], metrics.get("season_shorter", (0, 0))
    if not shorter or m == 1:
        return f"m = {m}"
    if shorter == windows:
        return f"m = 1: the history is shorter than the season of {m}"
    return f"m = {m}; 1 for the {shorter} histories shorter than a season"


def report(metrics: dict, where: str) -> str:
    """The line that says how the forecasts did against the naive ones."""
    model, naive, snaive = metrics["test"], metrics["naive"], metrics["seasonal_naive"]
    gain = 1 - model["mae"] / naive["mae"] if naive["mae"] else 0.0
    line = (f"{where}: H-step MAE {model['mae']:.4f} (naive {naive['mae']:.4f}, {gain:+.1%} "
            f"better), RMSE {model['rmse']:.4f} (naive {naive['rmse']:.4f}), next-step MAE "
            f"{model['next_step_mae']:.4f} (naive {naive['next_step_mae']:.4f}); MASE "
            f"{model['mase']:.3f} (seasonal naive {snaive['mase']:.3f}, {season_words(metrics)})"
            f", sMAPE {model['smape']:.2f}% (seasonal naive {snaive['smape']:.2f}%)")
    for name, c in metrics.get("coverage", {}).items():
        line += (f"; the {name} interval [{c['levels'][0]:g}, {c['levels'][1]:g}] covers "
                 f"{c['coverage']:.1%}")
    return line


def predict(args) -> int:
    forecaster = load(args.run_dir, pick_device(args.device), kind=FORECASTER)
    path = output_file(args.plot, args.run_dir, (args.series,), "--plot") if args.plot else \
        Path(args.run_dir) / "forecast.png"
    if path.suffix and path.suffix.lower() not in FORMATS:  # before any output
        raise RnnkitError(f"--plot {args.plot} ends in {path.suffix}; the picture is written as "
                          f"{', '.join(FORMATS)} (a PNG where the name has no ending)")
    panel = forecaster.series(args.series)
    shown = args.show or panel.ids[:4]
    unknown = [s for s in shown if s not in panel.ids]
    if unknown:  # before any output
        raise RnnkitError(f"--show names series {unknown[:3]} that {args.series} lacks; it has "
                          f"{panel.ids[:5]}{'...' if len(panel.ids) > 5 else ''}")
    H, m = forecaster.horizon, forecaster.data.get("season", 1)
    long = [np.array([len(v) - H]) if len(v) > H else np.zeros(0, np.int64)
            for v in panel.values]
    if not forecaster.data.get("known") and any(len(o) for o in long):
        # The file's own last H steps, forecast from before them (known inputs would need the
        # rows after the end, which a file to forecast from holds instead).
        forecasts, enc = forecaster.run(panel, long)
        metrics = scores(panel, enc, forecaster.point(forecasts), m)
        if forecaster.levels:
            metrics["coverage"] = coverage(metrics["truth"], forecasts, forecaster.levels)
        metrics["season"] = m
        print(report(metrics, f"{args.series} (its last {H} steps, {len(enc['origin'])} series)"),
              file=sys.stderr)  # stdout is the forecasts' CSV alone, for `> forecast.csv`
    result = forecaster.forecasts(panel, where=args.series)
    print_forecasts(result, forecaster.many)
    need("matplotlib", "tasks")
    plot_forecast(panel, result, shown, 4 * H, path)
    print(f"wrote {args.plot or path}", file=sys.stderr)  # stdout stays the report and the CSV
    return 0


def print_forecasts(result, many: bool) -> None:
    """CSV on stdout: one row per series and step; quantiles as COLUMN_qLEVEL columns."""
    extra = [f"{c}_q{q:g}" for c in result.columns for q in result.levels if q != 0.5]
    timed = any(t is not None for t in result.times)
    print(",".join((["id"] if many else []) + ["step"] + (["time"] if timed else [])
                   + result.columns + extra))
    for i, name in enumerate(result.ids):
        for h in range(result.point.shape[1]):
            cells = ([name] if many else []) + [f"+{h + 1}"]
            if timed:
                cells.append(str(result.times[i][h]) + "Z" * result.utc
                             if result.times[i] is not None else "")
            cells += [f"{v:.6g}" for v in result.point[i, h]]
            if result.quantiles is not None:
                cells += [f"{result.quantiles[i, h, f, k]:.6g}"
                          for f in range(len(result.columns))
                          for k, q in enumerate(result.levels) if q != 0.5]
            print(",".join(cells))
