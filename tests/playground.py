"""Shared by test_serve and test_viz: a small trained run, and the playground page in Chromium.

The browser is Debian's chromium driven through its chromium-driver with Selenium, headless, with
a fresh profile and no background traffic; tests that need it are skipped where it is missing.
"""

import shutil

import pytest
import torch

from rnnkit.cli import main
from rnnkit.viz import trace

# Code-like text, so that quotes, brackets, indentation and line position all vary.
TEXT = 'def add(a, b):\n    return (a + b)\n\nprint("a + b", add(1, [2]))\n' * 30


def trained_run(tmp_path_factory):
    """A tiny trained run directory, trained once per test session."""
    run = tmp_path_factory.getbasetemp() / "trained-run"
    if not (run / "config.json").exists():
        corpus = tmp_path_factory.getbasetemp() / "trained-run.txt"
        corpus.write_text(TEXT, encoding="utf-8")
        # One thread: a model this small gains nothing from more, and on a busy machine
        # threads that wait for each other make it many times slower.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert main(["train", str(corpus), "--out", str(run), "--hidden", "32", "--layers",
                         "1", "--seq-len", "16", "--batch-size", "4", "--max-steps", "30",
                         "--eval-every", "10", "--sample-length", "0"]) == 0
        finally:
            torch.set_num_threads(threads)
    return run


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                    reason="needs Debian's chromium and chromium-driver "
                                    "(apt-get install chromium chromium-driver)")


def chromium(profile):
    """Headless Chromium through Selenium, with a fresh profile and no background traffic."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=1200,800"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def wait_for_phase(driver, phase: str, timeout: float = 30) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element("tag name", "body").get_attribute("data-phase") in (phase, "error"))
    body = driver.find_element("tag name", "body")
    assert body.get_attribute("data-phase") == phase, driver.find_element("id", "status").text


# What the page shows: the text as read (newline spans show "↵\n"), the hover table, the colours.
SHOWN_TEXT = "return [...document.querySelectorAll('#text .ch')].map(s => s.textContent.replace('↵', ''))"
PROB_ROWS = ("return [...document.querySelectorAll('#probtable tr')].map(r => "
             "[r.cells[0].textContent, Number(r.cells[2].dataset.p)])")
ALPHAS = ("return [...document.querySelectorAll('#text .ch')].map(s => { "
          "const m = s.style.backgroundColor.match(/rgba?\\((\\d+), \\d+, \\d+(?:, ([\\d.]+))?/); "
          "return m ? (m[1] === '220' ? 1 : -1) * (m[2] === undefined ? 1 : Number(m[2])) : 0; })")


def check_hover(driver, model, text: str, t: int) -> None:
    """Hover symbol t; the table must hold the model's top-5 after reading text[:t + 1]."""
    from selenium.webdriver.common.action_chains import ActionChains

    span = driver.find_elements("css selector", "#text .ch")[t]
    ActionChains(driver).move_to_element(span).perform()
    stepper = model.stepper()
    for ch in text[:t + 1]:
        probs = stepper.step(ch)
    shown = {" ": "␣", "\n": "↵"}
    rows = driver.execute_script(PROB_ROWS)
    assert [s for s, _ in rows] == [shown.get(s, s) for s, _ in probs.top(5)]
    assert [p for _, p in rows] == pytest.approx([p for _, p in probs.top(5)], abs=1e-4)
    assert f"(symbol {t})" in driver.find_element("id", "probhead").text


def check_unit_colours(driver, model, text: str, state: str, unit: int) -> None:
    """Each symbol's colour: red for positive, blue for negative, alpha |a| / max |a| of the unit."""
    acts = torch.tensor(trace(model, text, keys=[state]).states[state][:, unit])
    expected = acts / acts.abs().max()
    got = torch.tensor(driver.execute_script(ALPHAS))
    assert (got - expected).abs().max() < 0.01
