"""The worked examples in examples/: each runs as a learner would run it, and prints the right facts."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

FOODS = ("pie", "hamburger", "chicken")


EXAMPLE_NAMES = ("roommate", "hello", "step_api", "shapes", "five_modes", "digits_rows")


@pytest.fixture(scope="module")
def started(request, tmp_path_factory) -> dict[str, tuple[subprocess.Popen, Path, Path]]:
    """`python examples/NAME.py` for every example the selected tests use, all started at once.

    Each example runs on one thread, so on a machine with several cores the module takes about as
    long as the slowest examples rather than the sum of all of them.
    """
    wanted = sorted({name for item in request.session.items for name in item.fixturenames
                     if name in EXAMPLE_NAMES})
    folder = tmp_path_factory.mktemp("examples")
    runs = {}
    for name in wanted:
        out, err = folder / f"{name}.out", folder / f"{name}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen([sys.executable, str(EXAMPLES / f"{name}.py")], stdout=stdout,
                                       stderr=stderr, text=True)
        runs[name] = (process, out, err)
    yield runs
    for process, _, _ in runs.values():  # an example still running after a failure
        if process.poll() is None:
            process.kill()
            process.wait()


def output(started, name: str) -> str:
    """The example's stdout once it has finished, failing with its stderr if it failed."""
    process, out, err = started[name]
    returncode = process.wait(timeout=180)
    assert returncode == 0, err.read_text()
    return out.read_text()


@pytest.fixture(scope="module")
def roommate(started) -> str:
    return output(started, "roommate")


@pytest.fixture(scope="module")
def hello(started) -> str:
    return output(started, "hello")


@pytest.fixture(scope="module")
def step_api(started) -> str:
    return output(started, "step_api")


@pytest.fixture(scope="module")
def shapes(started) -> str:
    return output(started, "shapes")


@pytest.fixture(scope="module")
def five_modes(started) -> str:
    return output(started, "five_modes")


@pytest.fixture(scope="module")
def digits_rows(started) -> str:
    return output(started, "digits_rows")


def roommate_rule(yesterday: str, weathers: list[str]) -> list[str]:
    """Sunny: the same food; rainy: the next one, pie -> hamburger -> chicken -> pie."""
    foods = []
    for weather in weathers:
        if weather == "rain":
            yesterday = FOODS[(FOODS.index(yesterday) + 1) % 3]
        foods.append(yesterday)
    return foods


def test_roommate_first_day_is_the_notes_pie_and_rain(roommate):
    monday = next(line for line in roommate.splitlines() if line.strip().startswith("Mon  pie"))
    assert monday.split() == ["Mon", "pie", "rain", "[1,0,0,0,1,0]", "[0,0,0,1,1,1]", "[1,0,0,1,2,1]",
                              "[0,0,0,0,1,0]", "->", "hamburger"]


def test_roommate_week_follows_the_rule_day_by_day(roommate):
    day = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
    vector = r"(\[[0-9,]+\])"
    rows = re.findall(rf"^  {day}  (\w+) +(sun|rain) +{vector}  {vector}  {vector}  {vector}  -> (\w+)$",
                      roommate, flags=re.M)
    assert [r[0] for r in rows] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert "The day before the week, the roommate cooked pie." in roommate
    expected = roommate_rule("pie", [r[2] for r in rows])
    food_in = "pie"
    for (_, shown_in, _, food_part, weather_part, total, kept, food_out), food in zip(rows, expected,
                                                                                      strict=True):
        assert shown_in == food_in  # yesterday's output is today's input
        food_part, weather_part, total, kept = (json.loads(v) for v in (food_part, weather_part, total, kept))
        assert [a + b for a, b in zip(food_part, weather_part, strict=True)] == total
        assert total.count(2) == 1  # exactly one entry is 2 ...
        assert kept == [int(v == 2) for v in total]  # ... and it is the only one kept
        assert food_out == food
        food_in = food_out
    week = "The week's food: " + ", ".join(expected)
    assert week == "The week's food: hamburger, hamburger, chicken, pie, pie, pie, hamburger"
    # the notes' network, the same one inside rnnkit.RNN, and the trained RNN all cook this week
    assert roommate.count(week) == 3
    assert "Same as the rule: True" in roommate
    assert "Same foods as part 1: True" in roommate
    assert "Same foods as the hand-set network: True" in roommate


def test_roommate_trained_rnn_is_perfect_on_unseen_sequences(roommate):
    assert "Test accuracy: 100.0% (30000 of 30000 days right; 1000 of 1000 sequences right" in roommate
    for name, shape in [("W_xh", "(6, 2)"), ("W_hh", "(6, 6)"), ("b_h", "(6,)"), ("W_hy", "(3, 6)"),
                        ("b_y", "(3,)")]:
        assert f"  {name} {shape}: learned | hand-set" in roommate
    losses = [float(x) for x in re.findall(r"training step +\d+: loss ([0-9.]+)", roommate)]
    assert losses[-1] < 0.01 < losses[0]


def hello_tables(out: str) -> list[tuple[list[list[float]], list[list[bool]], str]]:
    """Each confidence table: values (4 rows x 4 steps), which cells are marked, the prediction."""
    tables = []
    for block in out.split("output confidences y:")[1:]:
        rows = re.findall(r"^  y\[[helo]\] +(.+)$", block, flags=re.M)[:4]
        cells = [row.split() for row in rows]
        values = [[float(c.strip("[]")) for c in row] for row in cells]
        marked = [[c.startswith("[") for c in row] for row in cells]
        predicted = re.search(r"spells '(\w{4})'", block).group(1)
        tables.append((values, marked, predicted))
    return tables


def test_hello_table_marks_the_targets_and_ends_predicting_ello(hello):
    (before, before_marks, before_pred), (after, after_marks, after_pred) = hello_tables(hello)
    targets = [[char == target for target in "ello"] for char in "helo"]  # rows h,e,l,o; steps
    assert before_marks == targets and after_marks == targets
    assert before_pred != "ello"
    assert after_pred == "ello"
    for step in range(4):  # after training the marked confidence is the largest in its column
        column = [row[step] for row in after]
        assert column.index(max(column)) == "helo".index("ello"[step])
    assert hello.rstrip().endswith("predicts 'ello'.")


def test_step_api_equals_the_fused_path(step_api):
    differences = [float(x) for x in re.findall(r"max difference[^:]*: ([0-9.e+-]+)", step_api)]
    assert len(differences) == 4
    assert all(d < 1e-5 for d in differences)
    assert "Stepping equals the fused path: True" in step_api
    hidden = re.findall(r"h = (\[[^\]]+\])  y =", step_api)
    assert len(hidden) == 6 and len(set(hidden)) == 6  # the hidden state changes at every step


def test_roommate_relu_rnn_is_the_notes_network(roommate):
    part1 = roommate.split("2. The same network")[0]
    part2 = roommate.split("2. The same network")[1].split("3. A vanilla")[0]
    assert 'inside rnnkit.RNN(2, 6, 3, nonlinearity="relu")' in part2
    kept = [json.loads(v) for v in re.findall(r"(\[[0-9,]+\])  -> \w+$", part1, flags=re.M)]
    rows = re.findall(r"^  \w{3}  (?:sun|rain) +h = ([-0-9. ]+)  y = ([-0-9. ]+)  -> (\w+)$", part2,
                      flags=re.M)
    assert len(rows) == len(kept) == 7
    for (h, y, food), kept_h in zip(rows, kept, strict=True):
        assert [float(v) for v in h.split()] == kept_h  # ReLU(a - 1): exactly the kept 0/1 vector
        y = [float(v) for v in y.split()]
        assert sorted(y) == [0.0, 0.0, 1.0] and FOODS[y.index(1.0)] == food  # the merge: one-hot food
    assert "Same kept vectors as part 1: True" in part2
    assert "Same foods as part 1: True" in part2


def test_shapes_are_velardos_with_librosas_frame_count(shapes):
    N = 22050 * 9
    assert f"at 22050 Hz: {N} samples." in shapes
    assert 'features(samples, AudioConfig(features="raw")) has shape [198450, 1]' in shapes
    assert "features(samples, AudioConfig()) has shape [388, 13]" in shapes
    assert "22050 / 512 * 9 = 387.6, so 387" in shapes  # the notes' formula ...
    assert "1 + 198450 // 512 = 388" in shapes  # ... and the count librosa gives
    assert "not centred (librosa center=False, every frame inside the signal): [384, 13]" in shapes
    assert 1 + (N - 2048) // 512 == 384
    others = re.findall(r"^  (hop_length \d+|with deltas) +shape \[(\d+), (\d+)\]", shapes, flags=re.M)
    assert len(others) == 3
    for label, frames, feats in others:
        hop = int(label.split()[1]) if label.startswith("hop") else 512
        assert int(frames) == 1 + N // hop  # centred frames: 1 + N // hop_length, every setting
        assert int(feats) == (39 if label == "with deltas" else 13)
    assert "input [1, 388, 13] (B, T, F) -> states [1, 388, 32] (B, T, H)" in shapes
    assert shapes.rstrip().endswith("Raw amplitude: [198450, 1]. MFCCs: [388, 13].")


MODE_THRESHOLDS = {"one-to-one": 95.0, "one-to-many": 90.0, "many-to-one": 95.0,
                   "encoder/decoder": 90.0, "synced": 98.0}


def test_five_modes_each_learns_its_task(five_modes):
    scores = dict(re.findall(r"^  ([a-z/-]+): test accuracy ([0-9.]+)% \(", five_modes, flags=re.M))
    assert list(scores) == list(MODE_THRESHOLDS)
    for mode, threshold in MODE_THRESHOLDS.items():
        assert float(scores[mode]) >= threshold, (mode, scores[mode])
    assert "(whole captions right for" in five_modes and "unseen images)" in five_modes
    assert "(whole strings right for" in five_modes and "unseen strings)" in five_modes


def test_five_modes_examples_are_right(five_modes):
    assert "e.g. (0.5, -0.3) -> class 1" in five_modes  # different signs
    lamps, caption = re.search(r"e\.g\. lamps ([01]{10}) -> caption ([0-9 ]+)$", five_modes,
                               flags=re.M).groups()
    assert [int(k) for k in caption.split()] == [k for k, on in enumerate(lamps) if on == "1"]
    assert "e.g. 0.9 -1.2 0.4 -0.5 0.1 0.6 (sum 0.3) -> yes" in five_modes
    string, reversed_ = re.search(r"e\.g\. ([a-h]+) -> ([a-h]*)$", five_modes, flags=re.M).groups()
    assert reversed_ == string[::-1]
    bits, tags = re.search(r"e\.g\. ([01 ]+) -> ((?:even|odd| )+)$", five_modes, flags=re.M).groups()
    ones = [int(b) for b in bits.split()]
    assert tags.split() == ["even" if sum(ones[:t + 1]) % 2 == 0 else "odd" for t in range(len(ones))]


def test_digits_read_row_by_row(digits_rows):
    assert "inputs [1797, 8, 8] (N, T, F)" in digits_rows
    assert len(re.findall(r"^  step [1-8]: \|.{16}\|$", digits_rows, flags=re.M)) == 8
    rnn = re.search(r"RNN test accuracy: ([0-9.]+)% \((\d+) of 450 unseen images\)", digits_rows)
    assert float(rnn.group(1)) >= 95.0
    assert int(rnn.group(2)) == round(float(rnn.group(1)) / 100 * 450)
    mlp = re.search(r"MLP test accuracy: ([0-9.]+)%", digits_rows)
    assert float(mlp.group(1)) >= 95.0
    label, guess = re.search(r"The first test image, a (\d), as the RNN reads it:.*?"
                             r"the first test image -> (\d)", digits_rows, flags=re.S).groups()
    assert guess == label
