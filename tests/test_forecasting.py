"""Many series, covariates and quantiles: the windows against hand-cut ones, the scores against
hand computations, the pinball loss against its definition, and the forecast commands."""

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import one_error_line

import rnnkit
from rnnkit.errors import RnnkitError
from rnnkit.forecast_scores import coverage, mase_scale, score, seasonal_naive, smape
from rnnkit.panel import (
    Panel,
    calendar_features,
    encode,
    future_times,
    infer_season,
    parse_times,
    read_panel,
    split_origins,
)
from rnnkit.runs import Forecasts
from rnnkit.tasks import pinball_loss

QUICK = ["--hidden", "16", "--batch-size", "16", "--lr", "0.02", "--device", "cpu",
         "--warmup", "5"]


def shops_csv(path, n_shops=3, T=80, future=0):
    """Hourly sales of a few shops: a daily cycle whose size differs by shop, plus a price effect
    (a known covariate); `future` rows at each end with the sales left empty."""
    rng = np.random.default_rng(0)
    lines = ["shop,time,sales,price"]
    for s in range(n_shops):
        for t in range(T + future):
            time = np.datetime64("2024-03-01T00:00") + np.timedelta64(t, "h")
            price = rng.normal()
            sales = 10 * (s + 1) + (s + 1) * np.sin(2 * np.pi * t / 24) - price
            lines.append(f"s{s},{time},{'' if t >= T else f'{sales:.4f}'},{price:.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_windows_against_hand_cut():
    y = np.array([[1.0], [3.0], [2.0], [6.0], [4.0], [5.0]], np.float32)
    known = np.arange(6, dtype=np.float32)[:, None] * 10
    panel = Panel(["a"], [y], [np.zeros((6, 0), np.float32)], [known])
    data = {"columns": ["y"], "window": 3, "horizon": 2, "scale": "window", "known": ["k"]}
    enc = encode(panel, [np.array([2, 4])], data)
    # origin 2: context [1, 3] (2 steps), last 3, scale |3 - 1| = 2, then 2 steps of the future
    np.testing.assert_allclose(enc["inputs"][0], [[-1, 0, 1], [0, 10, 1], [0, 20, 0],
                                                  [0, 30, 0], [0, 0, 0]])
    # origin 4: context [3, 2, 6], last 6, scale (1 + 4) / 2 = 2.5
    np.testing.assert_allclose(enc["inputs"][1], [[-1.2, 10, 1], [-1.6, 20, 1], [0, 30, 1],
                                                  [0, 40, 0], [0, 50, 0]], rtol=1e-6)
    np.testing.assert_array_equal(enc["lengths"], [4, 5])
    np.testing.assert_allclose(enc["scale"][:, 0], [2, 2.5])


def test_origins_hold_out_the_last_horizons():
    train, val, test = split_origins([20, 9], H=3, origins=2, val_origins=1)
    assert test[0].tolist() == [14, 17] and val[0].tolist() == [11] and train[0].tolist() == \
        list(range(2, 9))  # two steps read at least; the last target is 10, before validation's 11
    assert test[1].tolist() == [3, 6] and val[1].tolist() == [] and train[1].tolist() == []
    # validation windows read two steps too (a one-step window's scale is only the floor)
    _, val, test = split_origins([12], H=3, origins=2, val_origins=2)
    assert test[0].tolist() == [6, 9] and val[0].tolist() == [2]
    train, val, test = split_origins([100], H=5, test_fraction=0.2, val_fraction=0.1)
    assert test[0].tolist() == list(range(80, 96)) and val[0].tolist() == list(range(70, 76))


def test_scores_against_hand_computation():
    history = np.array([1, 2, 3, 4, 5, 6, 7, 8], np.float32)[:, None]
    np.testing.assert_array_equal(seasonal_naive(history, 5, 3)[:, 0], [6, 7, 8, 6, 7])
    np.testing.assert_array_equal(seasonal_naive(history, 2, 1)[:, 0], [8, 8])
    assert mase_scale(history, 3)[0] == 3.0  # every seasonal difference is 3
    truth = np.array([[[9.0], [12.0]]])
    pred = np.array([[[10.0], [12.0]]])
    s = score([history], truth, pred, 3)
    assert s["mase"] == pytest.approx(0.5 / 3) and s["mae"] == 0.5
    assert smape(pred, truth) == pytest.approx(200 * (1 / 19) / 2)
    q = np.stack([pred - 0.5, pred, pred + 0.5], -1)  # levels 0.1, 0.5, 0.9
    assert coverage(truth, q, [0.1, 0.5, 0.9]) == {"80%": {"levels": [0.1, 0.9],
                                                           "coverage": 0.5}}


def test_pinball_loss_against_its_definition():
    out = torch.tensor([[1.0, 2.0, 3.0]])  # one value, quantiles 0.1, 0.5, 0.9
    y = torch.tensor([[2.5]])
    expected = np.mean([0.1 * 1.5, 0.5 * 0.5, (0.9 - 1) * -0.5])
    assert float(pinball_loss(out, y, [0.1, 0.5, 0.9])) == pytest.approx(expected)


def test_calendar_and_future_times():
    t = np.array(["2024-01-01T00:00", "2024-01-01T06:00"], dtype="datetime64[s]")
    f = calendar_features(t, ["hour", "weekday"])  # 2024-01-01 was a Monday
    np.testing.assert_allclose(f, [[0, 1, 0, 1], [1, 0, 0, 1]], atol=1e-6)
    months = np.array(["2023-11-15", "2023-12-15"], dtype="datetime64[s]")
    assert [str(v)[:10] for v in future_times(months, 2, "x")] == ["2024-01-15", "2024-02-15"]
    assert infer_season(months) == 12 and infer_season(t[:1]) == 1
    assert infer_season(np.array(["2024-01-01", "2024-01-08"], dtype="datetime64[s]")) == 52
    # month ends, as pandas dates monthly and quarterly data
    ends = np.array(["2023-12-31", "2024-01-31", "2024-02-29"], dtype="datetime64[s]")
    assert infer_season(ends) == 12
    assert [str(v)[:10] for v in future_times(ends, 2, "x")] == ["2024-03-31", "2024-04-30"]
    quarters = np.array(["2023-09-30", "2023-12-31", "2024-03-31"], dtype="datetime64[s]")
    assert infer_season(quarters) == 4
    assert [str(v)[:10] for v in future_times(quarters, 2, "x")] == ["2024-06-30", "2024-09-30"]
    mixed = np.array(["2024-01-15", "2024-02-29", "2024-03-31"], dtype="datetime64[s]")
    assert infer_season(mixed) == 1  # neither one day of the month nor month ends


def test_uneven_times_are_named_in_one_warning_and_the_season_is_the_usual_steps(cli, tmp_path):
    # A missing day early on: the season is the usual step's (it was the first step's: 1)
    days = np.arange("2024-01-01", "2024-04-01", dtype="datetime64[D]")
    days = np.delete(days, 1)
    y = np.sin(2 * np.pi * np.arange(len(days)) / 7)
    path = tmp_path / "gap.csv"
    path.write_text("t,y\n" + "".join(f"{d},{v:.4f}\n" for d, v in zip(days, y, strict=True)))
    with pytest.warns(UserWarning) as caught:
        panel, _ = read_panel(path, {"time_column": "t"})
    assert [str(w.message) for w in caught] == [
        f"{path}: lines 2 and 3 are 2 days apart (2024-01-01T00:00:00 to 2024-01-03T00:00:00), "
        "most steps 1 day; each row is read as one step, so fill in any missing rows"]
    assert infer_season(panel.times[0]) == 7
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # shown, as outside the tests, not raised
        status, stdout, err = cli("forecast", "train", path, "--time-column", "t", "--horizon",
                                  "7", "--window", "14", "--out", tmp_path / "run", "--epochs",
                                  "1", *QUICK)
    assert status == 0 and "season 7" in stdout, err
    assert err.count("rnnkit: warning: ") == 1 and "lines 2 and 3 are 2 days apart" in err
    # evenly spaced times, month ends or tenths among them, warn of nothing
    tenths = tmp_path / "tenths.csv"
    tenths.write_text("t,y\n" + "".join(f"{i / 10},{i}\n" for i in range(60)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_panel(tenths, {"time_column": "t"})
    ends = tmp_path / "ends.csv"
    ends.write_text("t,y\n2023-12-31,1\n2024-01-31,2\n2024-02-29,3\n2024-03-31,4\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_panel(ends, {"time_column": "t"})


def test_many_series_with_covariates_and_quantiles(cli, tmp_path):
    data = shops_csv(tmp_path / "shops.csv")
    out = tmp_path / "run"
    status, stdout, err = cli("forecast", "train", data, "--id-column", "shop", "--time-column",
                              "time", "--known", "price", "--calendar", "hour", "--quantiles",
                              "0.1,0.9", "--horizon", "6", "--window", "24", "--out", out,
                              "--epochs", "10", *QUICK)
    assert status == 0, err
    assert "3 series x 1 columns ['sales']" in stdout and "season 24" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["series"] == 3 and metrics["test_windows"] == 3
    assert set(metrics["coverage"]) == {"80%"}
    data = json.loads((out / "config.json").read_text())["data"]
    widen = data["widen"]
    assert len(widen) == 3 and widen[1] == 0 and widen[0] == -widen[2] and not data["offsets"]
    # the daily cycle and the price are learnt: better than both naive forecasts
    assert metrics["test"]["mase"] < metrics["naive"]["mase"], stdout
    assert metrics["test"]["mase"] < metrics["seasonal_naive"]["mase"], stdout

    future = shops_csv(tmp_path / "future.csv", future=6)
    status, stdout, err = cli("forecast", "predict", out, future, "--show", "s1,s2")
    assert status == 0, err
    lines = stdout.strip().splitlines()
    assert lines[0] == "id,step,time,sales,sales_q0.1,sales_q0.9" and len(lines) == 1 + 3 * 6
    assert lines[1].startswith("s0,+1,2024-03-04T08:00:00,")
    assert (out / "forecast.png").stat().st_size > 10_000
    result = rnnkit.load(out).predict(future)
    assert isinstance(result, Forecasts) and result.ids == ["s0", "s1", "s2"]
    assert result.quantiles.shape == (3, 6, 1, 3) and result.levels == [0.1, 0.5, 0.9]
    assert (np.diff(result.quantiles, axis=-1) >= 0).all()  # quantiles never cross
    row = lines[1].split(",")
    assert float(row[3]) == pytest.approx(result.point[0, 0, 0], rel=1e-5)


def test_an_npz_of_series_of_different_lengths(cli, tmp_path):
    rng = np.random.default_rng(1)
    x = np.zeros((4, 50, 1), np.float32)
    lengths = np.array([50, 30, 20, 41])
    for i, n in enumerate(lengths):
        x[i, :n, 0] = np.cumsum(rng.normal(1, 0.1, n)) * (i + 1)  # trends of different sizes
    np.savez(tmp_path / "s.npz", x=x, lengths=lengths, ids=np.array(["a", "b", "c", "d"]))
    out = tmp_path / "run"
    status, stdout, err = cli("forecast", "train", tmp_path / "s.npz", "--horizon", "4",
                              "--out", out, "--epochs", "8", *QUICK)
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["mase"] < metrics["naive"]["mase"], stdout
    result = rnnkit.load(out).predict(tmp_path / "s.npz")
    assert result.ids == ["a", "b", "c", "d"] and result.point.shape == (4, 4, 1)
    # a CSV's options were accepted, ignored, and saved with the run
    status, _, err = cli("forecast", "train", tmp_path / "s.npz", "--horizon", "4", "--out",
                         tmp_path / "other", "--id-column", "shop", *QUICK)
    assert status == 2 and "--id-column applies to a CSV file" in one_error_line(err)


def test_one_series_as_before(cli, tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("y\n" + "".join(f"{v}\n" for v in range(60)))
    out = tmp_path / "run"
    status, stdout, err = cli("forecast", "train", path, "--horizon", "3", "--window", "8",
                              "--out", out, "--epochs", "2", *QUICK)
    assert status == 0, err
    assert json.loads((out / "config.json").read_text())["data"]["scale"] == "run"
    assert rnnkit.load(out).predict(path).shape == (3, 1)  # (H, F), as for any one-series run


def test_a_run_calibrated_by_offsets_still_predicts_and_resumes(cli, tmp_path):
    # Runs of earlier versions stored constant offsets (data.offsets) and no data.widen: they
    # load and forecast with their offsets, and --resume replaces them by the new calibration.
    data = shops_csv(tmp_path / "shops.csv")
    out = tmp_path / "run"
    args = ["forecast", "train", data, "--id-column", "shop", "--time-column", "time",
            "--known", "price", "--quantiles", "0.1,0.9", "--horizon", "6", "--window", "24",
            "--out", out, *QUICK]
    status, _, err = cli(*args, "--epochs", "2")
    assert status == 0, err
    config = json.loads((out / "config.json").read_text())
    del config["data"]["widen"]
    config["data"]["offsets"] = [-0.5, 0.0, 0.5]
    (out / "config.json").write_text(json.dumps(config))
    future = shops_csv(tmp_path / "future.csv", future=6)
    old = rnnkit.load(out).forecasts(future).quantiles  # (N, H, F, Q)
    config["data"]["offsets"] = []
    (out / "config.json").write_text(json.dumps(config))
    raw = rnnkit.load(out).forecasts(future).quantiles
    assert (old[..., 0] < raw[..., 0]).all() and (old[..., 2] > raw[..., 2]).all()
    config["data"]["offsets"] = [-0.5, 0.0, 0.5]
    (out / "config.json").write_text(json.dumps(config))
    status, _, err = cli(*args, "--epochs", "3", "--resume")
    assert status == 0, err
    resumed = json.loads((out / "config.json").read_text())["data"]
    assert resumed["offsets"] == [] and len(resumed["widen"]) == 3


BAD = [
    (["--id-column", "store"], "no column 'store' naming each row's series; give --id-column "
     "NAME with one of the columns ['shop', 'time', 'sales', 'price']"),
    (["--time-column", "time", "--quantiles", "0.1,1.5"], "--quantiles: must be different "
     "numbers between 0 and 1"),
    (["--calendar", "hour"], "--calendar needs --time-column"),
    # it said --calendar needs --time-column, which was given
    (["--time-column", "price", "--columns", "sales", "--calendar", "hour"], "the time column "
     "'price' holds numbers, not dates"),
    (["--time-column", "time", "--calendar", "minute"], "give different features among hour, "
     "weekday, month"),
    (["--time-column", "time", "--past", "cost"], "no column 'cost' (a past covariate); give "
     "--past"),
    (["--time-column", "time", "--horizon", "80"], "series 's0': the series has 80 steps, "
     "shorter than the horizon 80 plus one observed step; lower --horizon"),
    (["--time-column", "time", "--horizon", "30", "--origins", "2"], "too few to hold out the "
     "test and validation of horizon 30 and still train; lower --horizon, --origins"),
    (["--time-column", "time", "--horizon", "20", "--origins", "4"], "series 's0': the series has "
     "80 steps, shorter than the horizon 20 times --origins 4 plus one observed step; lower "
     "--horizon or --origins or drop the series"),
    (["--columns", "time"], "line 2, column 'time' is not a number ('2024-03-01T00:00'); if "
     "it names each row's series or gives its time, say so with --id-column or --time-column"),
    (["--time-column", "time", "--season", "90"], "a season of 90 steps is longer than the 79 "
     "steps before the test in the longest series"),
]


def test_bad_inputs_are_one_line(cli, tmp_path):
    data = shops_csv(tmp_path / "shops.csv")
    for options, message in BAD:
        status, _, err = cli("forecast", "train", data, "--out", tmp_path / "r", "--id-column",
                             "shop", *options, *QUICK)
        assert status == 2, (options, err)
        assert message in one_error_line(err), options
    dates = tmp_path / "dates.csv"
    dates.write_text("t,y\n2024-01-01,1\nyesterday,2\n")
    status, _, err = cli("forecast", "train", dates, "--out", tmp_path / "r", "--time-column",
                         "t", *QUICK)
    assert status == 2 and "dates.csv, line 3: the time 'yesterday' is not an ISO date" \
        in one_error_line(err)
    for name, text, message in (
            ("semi", "a;b\n1;2\n3;4\n", "the cells are separated by ';'; rnnkit reads CSV "
             "separated by commas"),
            ("sep", 'y\n"1,234"\n2\n', "write numbers without thousands separators"),
            # a decimal comma was told to drop thousands separators: 20,5 became 205
            ("comma", 'y\n"20,5"\n2\n', "write numbers with a decimal point (20.5, not 20,5)"),
            ("na", "y\n1\nNA\n2\n", "a missing value is an empty cell here: leave it empty"),
            # PostgreSQL's +02 was no offset: every date moved to 22:00 the day before
            ("pg", "t,y\n" + "".join(f"2024-03-{d:02d} 00:00:00+02,{d % 7}\n"
                                     for d in range(1, 30)) + "2024-03-30 00:00:00,1\n",
             "line 2 gives its time a UTC offset and line 31 does not"),
            # NumPy read 20240209 as a year: the row sorted first, a time of -219183
            ("compact", "t,y\n2024-02-07,1\n2024-02-08,2\n20240209,3\n",
             "line 4: the time '20240209' is not an ISO date"),
            ("big", "y\n" + "1e30\n" * 9, "holds 1e30, beyond the 1e+18 that training in float32 "
             "can hold; rescale the column")):
        (tmp_path / f"{name}.csv").write_text(text)
        times = ["--time-column", "t"] if text.startswith("t,") else []
        status, _, err = cli("forecast", "train", tmp_path / f"{name}.csv", "--out",
                             tmp_path / "r", *times, *QUICK)
        assert status == 2 and message in one_error_line(err), err
    assert not (tmp_path / "r").exists()
    rows = data.read_text().splitlines()
    cells = rows[90].split(",")
    rows[90] = ",".join(cells[:2] + [""] + cells[3:])  # a sales cell in the middle of s1
    gap = tmp_path / "gap.csv"
    gap.write_text("\n".join(rows) + "\n")
    status, _, err = cli("forecast", "train", gap, "--out", tmp_path / "r", "--id-column",
                         "shop", "--time-column", "time", *QUICK)
    assert status == 2 and "gap.csv: line 91, column 'sales' is missing; fill it in" \
        in one_error_line(err)
    # an empty time cell would sort last; two rows of one series at one time, both stop
    for name, change, message in (
            ("empty", lambda cells: cells[:1] + [""] + cells[2:], "empty.csv, line 91: the time "
             "cell is empty; give every row its time"),
            ("twice", lambda cells: cells[:1] + [rows[89].split(",")[1]] + cells[2:],
             "twice.csv, series 's1': lines 90 and 91 have the same time 2024-03-01T08:00:00; "
             "give one row per time step")):
        edited = rows[:90] + [",".join(change(rows[90].split(",")))] + rows[91:]
        (tmp_path / f"{name}.csv").write_text("\n".join(edited) + "\n")
        status, _, err = cli("forecast", "train", tmp_path / f"{name}.csv", "--out",
                             tmp_path / "r", "--id-column", "shop", "--time-column", "time",
                             *QUICK)
        assert status == 2 and message in one_error_line(err), err


def test_known_covariates_need_the_future_rows(cli, tmp_path):
    data = shops_csv(tmp_path / "shops.csv", T=60)
    out = tmp_path / "run"
    status, _, err = cli("forecast", "train", data, "--id-column", "shop", "--time-column",
                         "time", "--known", "price",
                         "--horizon", "4", "--window", "12", "--out", out, "--epochs", "1",
                         *QUICK)
    assert status == 0, err
    status, _, err = cli("forecast", "predict", out, data)
    assert status == 2 and "series 's0': the run reads known covariates ['price']; add the " \
        "next 4 rows" in one_error_line(err)
    short = shops_csv(tmp_path / "short.csv", T=60, future=2)
    status, _, err = cli("forecast", "predict", out, short)
    assert status == 2 and "2 rows to forecast (target empty); give none or all 4" \
        in one_error_line(err)


def test_read_panel_orders_rows_by_time(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("id,t,y\nb,2,20\na,1,1\nb,1,10\na,2,2\n")
    panel, columns = read_panel(path, {"id_column": "id", "time_column": "t"})
    assert columns == ["y"] and panel.ids == ["b", "a"]
    assert panel.values[0][:, 0].tolist() == [10, 20] and panel.values[1][:, 0].tolist() == [1, 2]


def test_a_model_that_writes_zeros_is_the_seasonal_naive_forecast():
    from rnnkit.panel import decode

    rng = np.random.default_rng(0)
    values = [rng.normal(size=(40, 2)).astype(np.float32), rng.normal(size=(9, 2))
              .astype(np.float32)]
    empty = [np.zeros((len(v), 0), np.float32) for v in values]
    panel = Panel(["a", "b"], values, empty, empty)
    data = {"columns": ["u", "v"], "window": 12, "horizon": 5, "scale": "window", "season": 7}
    enc = encode(panel, [np.array([30, 35]), np.array([4, 9])], data)
    forecasts = decode(np.zeros((4, 5 * 2)), enc, 5, [])[..., 0]  # (n, H, F)
    for k, (i, o) in enumerate(zip(enc["series"], enc["origin"], strict=True)):
        np.testing.assert_array_equal(forecasts[k], seasonal_naive(values[i][:o], 5, 7))


def test_the_base_is_the_last_value_where_the_window_holds_no_season():
    # an exported model reads the window alone: with a season as long as the window, the base
    # it can add is the last value, and training and predict use the same
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(40, 1)).astype(np.float32)]
    empty = [np.zeros((40, 0), np.float32)]
    panel = Panel(["a"], values, empty, empty)
    for W, m in ((12, 12), (8, 12), (13, 12)):
        data = {"columns": ["u"], "window": W, "horizon": 3, "scale": "window", "season": m}
        enc = encode(panel, [np.array([30])], data)
        expect = values[0][[18, 19, 20]] if m < W else values[0][[29, 29, 29]]
        np.testing.assert_array_equal(enc["base"][0], expect)


def test_a_feature_constant_in_training_is_centred_not_scaled():
    import torch

    from rnnkit.tasks import SequenceConfig, SequenceModel

    model = SequenceModel(SequenceConfig(input_size=2, output_size=1, head="regress"))
    model.set_standardization(torch.tensor([3.0, 0.0]), torch.tensor([2.0, 0.0]))
    assert model.input_std.tolist() == [2.0, 1.0]  # a flag never set in training: 1, not 1e-6


def test_conformal_widening_makes_intervals_cover_their_share():
    from rnnkit.intervals import conformal_widening, widened

    rng = np.random.default_rng(0)
    levels = [0.1, 0.5, 0.9]
    y = rng.normal(size=(2000, 1))  # N(0, 1) values; the head's 80% interval is far too narrow
    raw = np.tile([-0.25, 0.0, 0.25], (2000, 1))  # (n, C * Q), C = 1; width 0.5
    widen = conformal_widening(raw, y, levels)  # 0.25 + 0.5 c = 1.2816, the 0.9 quantile
    np.testing.assert_allclose(widen, [-(1.2816 - 0.25) / 0.5, 0.0, (1.2816 - 0.25) / 0.5],
                               atol=0.15)
    # scaled by the head's width: windows whose head is three times as wide, and whose values
    # spread three times as much, are covered as well by the same factor
    for spread in (1, 3):
        fresh = rng.normal(size=(20000, 1, 1)) * spread
        q = widened((raw[:1] * spread).reshape(1, 1, 1, 3), levels, widen)
        assert coverage(fresh, q, levels)["80%"]["coverage"] == pytest.approx(0.8, abs=0.02)
    # the N scores' ceil((N + 1) 0.8)-th smallest: of 9 windows, the 8th; weighted, the one
    # whose weight and the lighter ones' reach 0.8 of the total plus 1
    nine = np.arange(1.0, 10.0)[:, None]  # y = 1 ... 9 against [-0.25, 0.25]: E = (y - 0.25) / 0.5
    assert conformal_widening(raw[:9], nine, levels)[2] == pytest.approx((8 - 0.25) / 0.5)
    # weights 1 on the five small scores, 0.1 on the four large: 0.8 of 5.4 + 1 = 5.12, reached
    # by the 7th; the other way round, by the 9th alone
    light_late = [1.0] * 5 + [0.1] * 4
    assert conformal_widening(raw[:9], nine, levels, light_late)[2] == pytest.approx(
        (7 - 0.25) / 0.5)
    assert conformal_widening(raw[:9], nine, levels, light_late[::-1])[2] == pytest.approx(
        (9 - 0.25) / 0.5)
    wide = np.tile([-3.0, 0.0, 3.0], (2000, 1))  # covers more than 80% already: left as it is
    assert conformal_widening(wide, y, levels) == [0.0, 0.0, 0.0]
    # runs of earlier versions were calibrated by constant offsets, which still apply
    np.testing.assert_allclose(widened(raw[:1], levels, [], [-1.0, 0.0, 1.0]), [[-1.25, 0, 1.25]])


def test_rolling_widening_uses_the_errors_known_at_each_origin():
    from rnnkit.intervals import AGE_WEIGHT, conformal_widening, rolling_widening

    # two series of 10 and 7 steps, H = 2: validation origins (2, 4) and (1), test origins 4
    # and 2 steps before each series' end, (6, 8) and (3, 5)
    H, levels, lengths = 2, [0.1, 0.5, 0.9], [10, 7]
    origins = np.array([2, 4, 6, 8, 1, 3, 5])
    series = np.array([0, 0, 0, 0, 1, 1, 1])
    is_test = np.array([False, False, True, True, False, True, True])
    rng = np.random.default_rng(1)
    y = rng.normal(size=(7, H)) * np.array([1, 1, 3, 5, 1, 3, 5])[:, None]
    raw = np.tile([-0.1, 0.0, 0.1], (7, H))  # (n, H * Q): far too narrow everywhere
    enc = {"series": series, "origin": origins}
    per_window, after = rolling_widening(raw, y, enc, lengths, is_test, H, levels)
    # each series' first test horizon sees the validation windows only; its second, those and
    # the first test horizons of both series (their targets end 2 steps before their ends),
    # each horizon weighing half the next: ages 2, 1 (validation) and 0 (first test horizons)
    half = AGE_WEIGHT
    first = conformal_widening(raw[~is_test], y[~is_test], levels, [half, 1, 1])
    second = conformal_widening(raw[[0, 1, 2, 4, 5]], y[[0, 1, 2, 4, 5]], levels,
                                [half ** 2, half, 1, half, 1])
    np.testing.assert_allclose(per_window, [first, second, first, second])
    assert after == conformal_widening(raw, y, levels, [half ** 3, half ** 2, half, 1, half ** 2,
                                                        half, 1])
    assert after[2] > second[2] > first[2] > 0
    # no validation part: the first test horizons know no error yet and stay as made
    test = np.flatnonzero(is_test)
    per_window, _ = rolling_widening(raw[test], y[test], {k: v[test] for k, v in enc.items()},
                                     lengths, np.ones(4, bool), H, levels)
    known = conformal_widening(raw[[2, 5]], y[[2, 5]], levels)
    np.testing.assert_allclose(per_window, [[0, 0, 0], known, [0, 0, 0], known])


def test_without_validation_later_test_origins_are_calibrated(cli, tmp_path):
    # --val-origins 0: the first test horizon knows no error, the later ones know the first's
    data = shops_csv(tmp_path / "shops.csv")
    out = tmp_path / "run"
    status, _, err = cli("forecast", "train", data, "--id-column", "shop", "--time-column",
                         "time", "--quantiles", "0.1,0.9", "--horizon", "6", "--window", "24",
                         "--origins", "3", "--val-origins", "0", "--epochs", "2", "--out", out,
                         *QUICK)
    assert status == 0, err
    data = json.loads((out / "config.json").read_text())["data"]
    assert len(data.get("widen") or []) == 3  # forecasts after the data: calibrated on all three


def test_a_seed_repeats_a_run_whose_budget_is_not_reached(cli, tmp_path):
    # A set number of epochs is evaluated on its own cadence under --max-time: evaluations timed
    # by the machine's pace picked different best epochs, and different models, for one seed.
    data = shops_csv(tmp_path / "shops.csv")
    metrics = []
    for name in ("a", "b"):
        out = tmp_path / name
        status, _, err = cli("forecast", "train", data, "--id-column", "shop", "--time-column",
                             "time", "--quantiles", "0.1,0.9", "--horizon", "6", "--window",
                             "24", "--origins", "2",
                             "--epochs", "6", "--max-time", "10m", "--seed", "3", "--out", out,
                             *QUICK)
        assert status == 0, err
        m = json.loads((out / "metrics.json").read_text())
        metrics.append((m["test"], m["coverage"], len(m["history"])))
    assert metrics[0] == metrics[1]
    assert metrics[0][2] == 6  # an evaluation after every one of the 6 epochs


def test_times_with_utc_offsets_and_fractions_of_a_second():
    # the clocks going back: 02:00+02:00 and 02:00+01:00 are an hour apart, not one time twice
    times, utc = parse_times(["2024-10-27T01:00:00+02:00", "2024-10-27T02:00:00+02:00",
                              "2024-10-27T02:00:00+01:00", "2024-10-27T02:00:00Z"], "f.csv")
    assert (np.diff(times) == np.timedelta64(1, "h")).all()
    assert str(times[0]) == "2024-10-26T23:00:00" and utc  # read as UTC
    # dates with a zone's offsets (pandas' monthly index in Paris) keep their days: in UTC,
    # 1 January was 31 December 23:00, the months 28 to 31 days apart, the season 1, not 12
    months, utc = parse_times([f"2019-{m:02d}-01 00:00:00{'+02:00' if 4 <= m <= 10 else '+01:00'}"
                               for m in range(1, 13)], "f.csv")
    assert not utc and str(months[0]) == "2019-01-01T00:00:00" and infer_season(months) == 12
    assert str(future_times(months, 1, "f.csv")[0]) == "2020-01-01T00:00:00"
    half, _ = parse_times(["2024-01-01T00:00:00.0", "2024-01-01 00:00:00.5"], "f.csv")
    assert half[1] - half[0] == np.timedelta64(500, "ms")
    assert parse_times(["2024-01-01", "2024-01-02"], "f.csv")[0].dtype == "datetime64[s]"
    with pytest.raises(RnnkitError, match="line 2 gives its time a UTC offset and line 3 does"):
        parse_times(["2024-01-01T00:00Z", "2024-01-01T01:00"], "f.csv")
    # numeric steps of 0.1 are even, and the next times follow them
    tenths = np.arange(1, 61) / 10
    assert np.allclose(future_times(tenths, 3, "f.csv"), [6.1, 6.2, 6.3])


def test_forecast_times_are_the_files_or_marked_utc(cli, tmp_path):
    # Times of day with offsets are forecast in UTC and say so ("Z"); the rows to forecast that
    # the file gives (a trading-day calendar) keep their own times, which were replaced by the
    # next steps at the history's pace; an empty id cell was a series named ''.
    hours = np.datetime64("2024-10-25T00:00") + np.arange(80) * np.timedelta64(1, "h")
    y = 10 + np.sin(np.arange(80) / 4)
    lines = ["time,y"] + [f"{t}+00:00,{v:.4f}" for t, v in zip(hours, y, strict=True)]
    path = tmp_path / "h.csv"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    status, _, err = cli("forecast", "train", path, "--time-column", "time", "--horizon", "2",
                         "--out", out, "--epochs", "1", *QUICK)
    assert status == 0, err
    status, printed, err = cli("forecast", "predict", out, path)
    assert status == 0, err
    assert [row.split(",")[1] for row in printed.splitlines() if row.startswith("+")] == \
        ["2024-10-28T08:00:00Z", "2024-10-28T09:00:00Z"]
    days = [f"2024-01-{d:02d}" for d in (1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 15, 16, 17, 18, 19)]
    lines = ["id,time,y,price"] + [f"a,{d},{i % 3},{i}" for i, d in enumerate(days)] + \
        ["a,2024-01-22,,20", "a,2024-01-23,,21"]
    trading, history = tmp_path / "t.csv", tmp_path / "history.csv"
    trading.write_text("\n".join(lines) + "\n")
    history.write_text("\n".join(lines[:-2]) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "3 days apart": weekends, one step each
        status, _, err = cli("forecast", "train", history, "--id-column", "id", "--time-column",
                             "time", "--known", "price", "--horizon", "2", "--out",
                             tmp_path / "t", "--epochs", "1", *QUICK)
        assert status == 0, err
        result = rnnkit.load(tmp_path / "t").forecasts(trading)
    assert [str(t)[:10] for t in result.times[0]] == ["2024-01-22", "2024-01-23"]
    assert not result.utc
    trading.write_text("\n".join(lines[:3] + [",2024-01-03,1,2"] + lines[4:]) + "\n")
    status, _, err = cli("forecast", "predict", tmp_path / "t", trading)
    assert status == 2 and "line 4: the 'id' cell is empty" in one_error_line(err)
    with pytest.raises(RnnkitError, match="beyond the 1e[+]18 that the model's float32"):
        rnnkit.load(out).predict(y * 1e37)
    # a one-series run given a file of several series (an id column it never read) joined them
    # into one without a word
    named = tmp_path / "named.csv"
    named.write_text("shop," + path.read_text().replace("\n", "\nx,").rstrip("x,"))
    with pytest.warns(UserWarning, match="reads no id column .* 'shop' is not read"):
        rnnkit.load(out).forecasts(named)


def test_intermittent_series_train_on_a_bounded_loss(cli, tmp_path):
    # A series of zeros with two sales beside a moving one: a window of zeros has no scale, and
    # its next sale read in the window's units (3 / 1e-6) made the training loss 1e11.
    lines = ["id,y"] + [f"z,{3 if t in (20, 70) else 0}" for t in range(80)] + \
        [f"w,{50 + t % 5 + 0.2 * t:.1f}" for t in range(80)]
    data = tmp_path / "zeros.csv"
    data.write_text("\n".join(lines) + "\n")
    status, out, err = cli("forecast", "train", data, "--out", tmp_path / "r", "--id-column",
                           "id", "--horizon", "3", "--epochs", "2", "--quantiles", "0.1,0.9",
                           *QUICK)
    assert status == 0, err
    assert "left out 5 train and 0 validation windows whose series stays flat" in out
    history = json.loads((tmp_path / "r" / "metrics.json").read_text())["history"]
    assert all(h["train_loss"] < 10 for h in history), history
    assert all(abs(w) < 10 for w in json.loads((tmp_path / "r" / "config.json").read_text())
               ["data"]["widen"])


def test_predict_reads_short_series_and_checks_before_writing(cli, tmp_path):
    # a one-series run reads fewer than its window's steps, as its training windows do: its own
    # 30-step training file could not be forecast from (the window is 48)
    data = tmp_path / "y30.csv"
    data.write_text("y\n" + "".join(f"{10 + i % 7 + 0.5 * i}\n" for i in range(30)))
    run = tmp_path / "r"
    assert cli("forecast", "train", data, "--out", run, "--horizon", "3", "--epochs", "1",
               *QUICK)[0] == 0
    status, out, err = cli("forecast", "predict", run, data, "--plot", tmp_path / "p.png")
    assert status == 0 and out.splitlines()[0] == "step,y" and len(out.splitlines()) == 4, err
    forecaster = rnnkit.load(run)
    assert forecaster.forecast(np.ones((2, 10))).shape == (2, 3, 1)  # (N, W) of one column
    with pytest.raises(RnnkitError, match=r"windows must be \(N, W, 1\)"):
        forecaster.forecast(np.ones((2, 10, 2)))
    status, out, err = cli("forecast", "predict", run, data, "--show", "nowhere")
    assert status == 2 and out == "" and "--show names series ['nowhere']" in one_error_line(err)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(data.read_text().replace("y", "revenue", 1))
    status, _, err = cli("forecast", "predict", run, renamed)
    assert status == 2 and "no column 'y' (to forecast); the run reads it; add it to the " \
        "file" in one_error_line(err)
    # a task run named in invalid UTF-8 is refused before it writes (as a language model's is)
    status, _, err = cli("forecast", "train", data, "--out", str(tmp_path) + "/f\udce9", *QUICK)
    assert status == 2 and "is not a valid UTF-8 name" in one_error_line(err)


def test_undefined_scores_are_null_in_metrics_json(cli, tmp_path):
    data = tmp_path / "flat.csv"
    data.write_text("y\n" + "7\n" * 30)
    assert cli("forecast", "train", data, "--out", tmp_path / "r", "--horizon", "2", "--epochs",
               "1", *QUICK)[0] == 0
    text = (tmp_path / "r" / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["test"]["mase"] is None


def test_the_report_says_which_season_its_scores_used():
    # a history shorter than the season is scored with m = 1 (the M4 rule): the line said m = 7
    from rnnkit.forecast_cli import season_words

    assert season_words({"season": 7}) == "m = 7"
    assert season_words({"season": 7, "season_shorter": [1, 1]}) == \
        "m = 1: the history is shorter than the season of 7"
    assert season_words({"season": 7, "season_shorter": [2, 5]}) == \
        "m = 7; 1 for the 2 histories shorter than a season"


def test_offsets_written_as_hours_alone_are_offsets():
    from rnnkit.panel import parse_times
    days, utc = parse_times(["2024-03-01 00:00:00+02", "2024-03-02 00:00:00+02"], "f")
    assert not utc and days.astype("datetime64[D]").astype(str).tolist() == ["2024-03-01",
                                                                               "2024-03-02"]
    hours, utc = parse_times(["2024-03-01T10:00+01", "2024-03-01T11:00+01"], "f")
    assert utc and hours.astype(str).tolist() == ["2024-03-01T09:00:00", "2024-03-01T10:00:00"]
