"""The worked examples in examples/: each runs as a learner would run it, and prints the right facts."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

FOODS = ("pie", "hamburger", "chicken")


def run_example(name: str) -> str:
    """`python examples/NAME.py`; returns its stdout, failing with its stderr if it failed."""
    done = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def roommate() -> str:
    return run_example("roommate")


@pytest.fixture(scope="module")
def hello() -> str:
    return run_example("hello")


@pytest.fixture(scope="module")
def step_api() -> str:
    return run_example("step_api")


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
