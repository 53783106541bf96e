"""The analysis behind the playground (features, correlations, traces) and `rnnkit viz`'s page."""

import base64
import json
import re
import subprocess
import warnings

import numpy as np
import pytest
import torch
from conftest import PYTHON, one_error_line
from playground import (
    TEXT,
    check_hover,
    check_unit_colours,
    chromium,
    needs_chromium,
    trained_run,
    wait_for_phase,
)

from rnnkit import CharLM, ModelConfig, load
from rnnkit.text import Vocab
from rnnkit.viz import correlations, page, quantize, state_keys, text_features, top_units, trace, trace_data


def test_text_features_by_hand():
    f = text_features(list('a "b(c)"\n\t x[\n'))
    #                       a   _   "   b   (   c   )   "   \n  \t  _   x   [   \n
    assert f["inside quotes"].tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert f["position in line"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4]
    assert f["indentation"].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 5, 5, 5, 5]
    assert f["inside brackets"].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1]


def test_correlations_against_numpy_on_a_hand_made_activation():
    rng = np.random.default_rng(0)
    feature = np.array([0, 0, 1, 1, 1, 0, 1, 0, 0, 1], dtype=float)
    noise = rng.normal(size=10)
    acts = np.stack([2 * feature + 1,  # follows the feature exactly: r = 1
                     -feature,  # against it: r = -1
                     np.full(10, 0.3),  # constant: no correlation, reported as 0
                     noise,
                     feature + 0.5 * noise], axis=1)  # (T, H) = (10, 5)
    r = correlations(acts, feature)
    assert r[:3] == pytest.approx([1, -1, 0])
    for unit in (3, 4):
        assert r[unit] == pytest.approx(np.corrcoef(acts[:, unit], feature)[0, 1])
    ranked = top_units(acts, {"f": feature, "flat": np.zeros(10)}, n=3)
    assert [u for u, _ in ranked["f"]] == [0, 1, 4]
    assert ranked["f"][1][1] == pytest.approx(-1)
    assert ranked["flat"] == []  # a feature that does not vary explains nothing


def test_quantize_keeps_each_unit_within_half_a_step():
    acts = np.random.default_rng(1).normal(size=(50, 6)) * np.array([1, 10, 0.01, 1, 1, 0])
    data = quantize(acts)
    q = np.frombuffer(base64.b64decode(data["q"]), dtype=np.int8).reshape(50, 6)
    scale = np.array(data["scale"])
    assert (np.abs(q / 127 * scale - acts) <= scale / 254 * (1 + 1e-4)).all()  # scale has 6 digits
    assert scale[5] == 1 and (q[:, 5] == 0).all()  # a silent unit stays silent


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_trace_matches_stepping_the_model(cell):
    torch.manual_seed(0)
    text = 'if (x):\n    y = "a"\n'
    vocab = Vocab("char", tuple(sorted({ord(c) for c in text})))
    model = CharLM(ModelConfig(vocab_size=len(vocab), cell=cell, layers=2, hidden=8), vocab).eval()
    tr = trace(model, text + "é", k=3)
    assert tr.symbols == list(text) and tr.skipped == ["é"]
    assert list(tr.states) == state_keys(model.config)
    stepper = model.stepper()
    for t, ch in enumerate(text):
        probs = stepper.step(ch)
        expected = probs.top(3)
        assert [s for s, _ in tr.top[t]] == [s for s, _ in expected]
        assert [p for _, p in tr.top[t]] == pytest.approx([p for _, p in expected])
        if t + 1 < len(text):
            assert tr.p_next[t] == pytest.approx(probs[text[t + 1]])
        for layer in range(2):
            assert tr.states[f"h{layer}"][t] == pytest.approx(stepper.h[layer][0].numpy(), abs=1e-6)
            if cell == "lstm":
                assert tr.states[f"c{layer}"][t] == pytest.approx(stepper.c[layer][0].numpy(),
                                                                  abs=1e-6)


def inlined(html: str) -> dict:
    """The data a page carries, read back."""
    blob = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(blob.group(1))


def test_page_text_cannot_break_out_of_its_script():
    nasty = '</script><script>alert(1)</script> /*SCRIPT*/ /*STYLE*/ /*DATA*/null <!--'
    data = {"source": nasty}
    html = page(data)
    assert inlined(html) == data
    assert html.count("</script>") == 2 and "alert(1)" not in html.replace("alert(1)\\u003c", "")
    assert "http://" not in html and "https://" not in html


@pytest.fixture(scope="module")
def viz_page(tmp_path_factory):
    """`rnnkit viz` of the trained run over text with symbols it does not know."""
    run = trained_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("viz")
    source = out / "input.txt"
    source.write_text("Ж" + TEXT[:300], encoding="utf-8")
    return run, source, out / "page.html"


def test_viz_writes_one_self_contained_page(viz_page, cli):
    run, source, html = viz_page
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # shown, as rnnkit does
        status, out, err = cli("viz", run, source, "--out", html, "--max-chars", "250")
    # notes on stderr, as every command's; stdout holds what was made
    assert status == 0 and "read the first 250 characters" in err
    assert "'Ж', not in the vocabulary" in err and "skipped" in err
    assert len(out.splitlines()) == 1 and out.startswith(f"wrote {html} (")
    text = html.read_text(encoding="utf-8")
    assert "src=" not in text and "href=" not in text and "http" not in text.replace(
        "application/json", "")
    data = inlined(text)
    assert data["run"]["name"] == "trained-run" and data["source"] == "input.txt"
    model = load(run)
    expected = trace_data(trace(model, ("Ж" + TEXT)[:250]))
    assert data["trace"] == json.loads(json.dumps(expected))
    assert list(data["trace"]["states"]) == ["h0", "c0"]


@pytest.mark.parametrize("args, message", [
    (["missing-run", "{source}"], "is not a directory"),
    (["{run}", "missing.txt"], "cannot read text file 'missing.txt'"),
    (["{run}", "{source}", "--max-chars", "0"], "max_chars must be positive"),
    # it was an internal OverflowError, or "out of memory" naming options viz has not
    (["{run}", "{source}", "--max-chars", str(10**19)], "--max-chars must be at most 10,000,000"),
])
def test_viz_errors_are_one_line(viz_page, cli, args, message):
    run, source, html = viz_page
    args = [a.format(run=run, source=source) for a in args]
    status, _, err = cli("viz", *args, "--out", html.with_name("bad.html"))
    assert status == 2 and message in one_error_line(err)


def test_viz_reads_a_byte_models_file_as_its_bytes(cli, tmp_path):
    # Latin-1 "café": the built-in byte model read U+FFFD's bytes (EF BF BD) for the é
    text = tmp_path / "latin1.txt"
    text.write_bytes(b"caf\xe9 au lait\n")
    status, out, err = cli("viz", "builtin", text, "--out", tmp_path / "page.html")
    assert status == 0, err
    data = inlined((tmp_path / "page.html").read_text(encoding="utf-8"))
    assert data["trace"]["symbols"][:5] == ["c", "a", "f", "\\xe9", " "]


def test_viz_refuses_text_that_is_not_utf8_for_a_character_model(cli, viz_page, tmp_path):
    # it was read with U+FFFD in place of the byte, which train and eval refuse
    text = tmp_path / "latin1.txt"
    text.write_bytes(b"caf\xe9 au lait\n")
    status, _, err = cli("viz", viz_page[0], text, "--out", tmp_path / "page.html")
    assert status == 2 and "is not valid UTF-8" in one_error_line(err)
    assert not (tmp_path / "page.html").exists()


def test_viz_reads_the_file_as_training_did(cli, viz_page, tmp_path):
    # "\r\n" stays two symbols (universal newlines made it one "\n", unlike training)
    text = tmp_path / "crlf.txt"
    text.write_bytes(b"ab\r\ncd\r\n")
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        status, out, err = cli("viz", viz_page[0], text, "--out", tmp_path / "page.html")
    assert status == 0, err
    symbols = inlined((tmp_path / "page.html").read_text(encoding="utf-8"))["trace"]["symbols"]
    assert symbols.count("\n") == 2  # and each "\r" read too: a symbol, or named as skipped
    assert symbols.count("\r") == 2 or "'\\r" in err, (symbols, err)


def test_viz_writes_a_page_into_a_pipe(tmp_path):
    # /dev/stdout into a pipe: the temporary file was made beside the pipe's /proc name
    text = tmp_path / "t.txt"
    text.write_text("def f(x):\n    return x\n")
    done = subprocess.run([PYTHON, "-m", "rnnkit", "viz", "builtin", str(text), "--out",
                           "/dev/stdout"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"<!DOCTYPE html>") or b"<html" in done.stdout[:200]


def test_viz_never_writes_over_what_it_reads(viz_page, cli):
    run, source, _ = viz_page
    for out, message in ((source, f"--out {source} is {source}, which the command reads"),
                         (run / "model.safetensors", "is the run's own model.safetensors")):
        before = out.read_bytes()
        status, _, err = cli("viz", run, source, "--out", out)
        assert status == 2 and message in one_error_line(err) and out.read_bytes() == before


@needs_chromium
@pytest.mark.filterwarnings("default::rnnkit.RnnkitWarning")  # the skipped 'Ж', shown
def test_viz_page_in_chromium(viz_page, cli, tmp_path):
    run, source, html = viz_page
    assert cli("viz", run, source, "--out", html)[0] == 0
    model = load(run)
    text = TEXT[:300]  # what the model read: the unknown first symbol is skipped
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(html.as_uri())
        wait_for_phase(driver, "ready")  # the status reports the skipped symbol
        assert "Left out, not in the vocabulary: Ж" in driver.find_element("id", "status").text
        assert driver.find_element("id", "controls").get_attribute("hidden") is not None
        check_hover(driver, model, text, 12)
        check_unit_colours(driver, model, text, "h0", 0)
        # Another neuron, in the cell state: offline, everything is in the page already.
        driver.execute_script("const s = document.getElementById('state'); s.value = 'c0'; "
                              "s.dispatchEvent(new Event('change'));")
        driver.find_element("id", "unit").clear()
        driver.find_element("id", "unit").send_keys("17\n")
        check_unit_colours(driver, model, text, "c0", 17)
        assert "c0 unit 17 of 32" in driver.find_element("id", "unitlabel").text
        driver.save_screenshot(str(tmp_path / "viz.png"))
        print(f"screenshot: {tmp_path / 'viz.png'}")
    finally:
        driver.quit()


@pytest.mark.filterwarnings("default::rnnkit.RnnkitWarning")  # the skipped 'Ж', shown
def test_a_large_max_chars_reads_a_small_file_whole(viz_page, cli, tmp_path):
    # the read reserved --max-chars up front: 10^7 of them for a file of a few characters
    run, source, _ = viz_page
    status, out, err = cli("viz", run, source, "--out", tmp_path / "p.html", "--max-chars",
                           "10000000")
    assert status == 0 and "read the first" not in out + err, err


def test_viz_reads_no_more_than_max_chars(viz_page, cli, tmp_path):
    # an endless file: only --max-chars of it are read (here none is in the vocabulary)
    run, _, _ = viz_page
    status, out, err = cli("viz", run, "/dev/zero", "--out", tmp_path / "p.html",
                           "--max-chars", "100")
    assert status == 2 and "no symbol of this model's vocabulary" in one_error_line(err)
