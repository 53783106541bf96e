"""The playground server: its JSON API against the model itself, overload, and the page in Chromium.

A real uvicorn server runs on 127.0.0.1 (a free port) in a thread; requests go through the standard
library's HTTP client. The browser test needs Debian's chromium and chromium-driver.
"""

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import torch
from conftest import PYTHON, one_error_line
from playground import (
    SHOWN_TEXT,
    check_hover,
    check_unit_colours,
    chromium,
    needs_chromium,
    trained_run,
    wait_for_phase,
)

from rnnkit import CharLM, ModelConfig, Vocab, load
from rnnkit.sample import generate
from rnnkit.serve import MAX_BODY, load_runs, make_app

uvicorn = pytest.importorskip("uvicorn", reason="needs the serve extra: pip install starlette uvicorn")

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs to switch between: the trained LSTM, an untrained two-layer GRU, and an untrained
    byte model."""
    torch.manual_seed(0)
    lstm = load(trained_run(tmp_path_factory))
    gru = CharLM(ModelConfig(vocab_size=len(lstm.vocab), cell="gru", layers=2, hidden=16),
                 lstm.vocab).eval()
    byte = CharLM(ModelConfig(vocab_size=256, layers=1, hidden=8),
                  Vocab("byte", tuple(range(256)))).eval()
    return {"lstm": lstm, "gru": gru, "bytes": byte}


@contextmanager
def serving(runs, **options):
    """The playground app on 127.0.0.1 at a free port, in a thread; yields (base URL, app)."""
    app = make_app(runs, **options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           limit_concurrency=1000))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture(scope="module")
def server(runs):
    with serving(runs, workers=2, max_busy=32) as (url, app):
        yield url, app


def call(url: str, path: str, body=None, method: str | None = None, raw: bytes | None = None,
         headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, bytes]:
    """One HTTP request; returns (status, headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    try:
        conn.request(method or ("POST" if data is not None else "GET"), path, body=data,
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def lines(body: bytes) -> list[dict]:
    return [json.loads(x) for x in body.decode("utf-8").splitlines()]


# ---------------------------------------------------------------------------------------------
# The API

def test_runs_are_listed_with_their_states(server):
    status, _, body = call(server[0], "/api/runs")
    assert status == 200
    runs = {r["name"]: r for r in json.loads(body)["runs"]}
    assert runs["lstm"]["states"] == ["h0", "c0"]
    assert runs["gru"]["states"] == ["h0", "h1"] and runs["gru"]["hidden"] == 16


def test_page_is_self_contained(server):
    status, headers, body = call(server[0], "/")
    page = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "http://" not in page and "https://" not in page and "src=" not in page
    assert 'id="generate"' in page


@pytest.mark.parametrize("run", ["lstm", "gru"])
def test_generation_streams_the_same_text_as_the_model(server, runs, run):
    request = {"run": run, "prime": "def ", "length": 300, "temperature": 0.7, "top_k": 5,
               "seed": 7}
    status, headers, body = call(server[0], "/api/generate", request)
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    msgs = lines(body)
    assert msgs[0] == {"prime": "def ", "skipped": []} and msgs[-1] == {"done": True}
    pieces = [m["text"] for m in msgs[1:-1]]
    assert len(pieces) >= 300 // 64  # sent in chunks as it is generated, not at the end
    expected = runs[run].generate("def ", 300, temperature=0.7, top_k=5, seed=7)
    assert "def " + "".join(pieces) == expected


def test_a_byte_models_generation_is_analysed_as_the_bytes_it_wrote(server, runs):
    # An untrained byte model writes invalid UTF-8, shown as U+FFFD: the analysis read the
    # shown text's bytes (EF BF BD for each), not the model's
    request = {"run": "bytes", "prime": "café", "length": 200, "temperature": 3.0, "seed": 2}
    status, _, body = call(server[0], "/api/generate", request)
    msgs = lines(body)
    written = bytes.fromhex(msgs[-1]["bytes"])
    assert status == 200 and msgs[-1]["done"] and len(written) == len("café".encode()) + 200
    assert written == "café".encode() + b"".join(generate(runs["bytes"], "café", 200, 3.0,
                                                          seed=2, raw=True))
    text = msgs[0]["prime"] + "".join(m.get("text", "") for m in msgs[1:-1])
    assert text == written.decode("utf-8", errors="replace") and "\ufffd" in text
    status, _, body = call(server[0], "/api/analyze", {"run": "bytes", "text": text,
                                                        "bytes": msgs[-1]["bytes"]})
    assert status == 200 and len(json.loads(body)["symbols"]) == len(written)
    # at the limit, the shown copy is longer in UTF-8 than the bytes (3 for each invalid one):
    # the limit was checked on it, and the page's analysis of a generation within it refused
    at_limit = (b"\xff" * 2000 + b"a" * 2000).hex()
    status, _, body = call(server[0], "/api/analyze", {"run": "bytes", "bytes": at_limit,
                                                        "text": "\ufffd" * 2000 + "a" * 2000})
    assert status == 200, body
    for bad, message in ((("bytes", "zz"), "bytes must be hex digits"),
                         (("run", "lstm"), "bytes is for byte models")):
        status, _, body = call(server[0], "/api/analyze", {"run": "bytes", "text": "a",
                                                            "bytes": "61", bad[0]: bad[1]})
        assert status == 400 and message in json.loads(body)["error"]


def test_unknown_prime_symbols_are_reported_not_fatal(server, runs):
    status, _, body = call(server[0], "/api/generate", {"prime": "dé€f", "length": 5, "seed": 1})
    msgs = lines(body)
    assert status == 200 and msgs[0] == {"prime": "df", "skipped": ["é", "€"]}
    assert len("".join(m.get("text", "") for m in msgs)) == 5


@pytest.mark.parametrize("body, status, message", [
    ({"length": 0}, 400, "length must be an integer from 1 to 2000, got 0"),
    ({"length": 2001}, 400, "length must be an integer from 1 to 2000"),
    ({"length": 2.5}, 400, "length must be an integer"),
    ({"length": True}, 400, "length must be an integer"),
    ({"temperature": 0}, 400, "temperature must be a number from 0.01 to 10.0, got 0"),
    ({"temperature": "hot"}, 400, 'got "hot"'),
    ({"top_k": 0}, 400, "top_k must be an integer from 1 to"),
    ({"seed": -1}, 400, "seed must be an integer from 0"),
    ({"seed": 2**63}, 400, "seed must be an integer from 0 to 9223372036854775807"),
    ({"seed": str(2**63)}, 400, "seed must be an integer from 0 to 9223372036854775807"),
    ({"seed": "12a"}, 400, "seed must be an integer from 0"),
    ({"seed": 10**400}, 400, "got 1000000000000000000000000000000000000000000000000000000000"
     "00... (401 characters)"),
    ({"prime": 5}, 400, "prime must be a string, got 5"),
    ({"prime": "a" * 2001}, 400, "prime has 2001 characters; the limit is 2000"),
    ({"run": "nope"}, 404, 'no run named "nope"; loaded runs: lstm, gru, bytes'),
    ({"run": ["lstm"]}, 400, 'run must be the name of a run, got ["lstm"]'),
    ({"temp": 1}, 400, "unknown fields ['temp']"),
    ([1, 2], 400, "request body must be a JSON object"),
])
def test_bad_generation_requests_get_a_clear_json_error(server, body, status, message):
    got, headers, raw = call(server[0], "/api/generate", body)
    assert got == status and headers["content-type"] == "application/json"
    assert message in json.loads(raw)["error"]


@pytest.mark.parametrize("path, kwargs, status, message", [
    ("/api/generate", {"raw": b"{nope"}, 400, "request body is not JSON"),
    ("/api/generate", {"raw": b'{"seed": ' + b"1" * 5000 + b"}"}, 400,
     "request body is not JSON (an integer has more than 4300 digits)"),
    ("/api/generate", {"raw": b"[" * 60000}, 400, "request body is not JSON (nested too deeply)"),
    ("/api/generate", {"raw": b'{"prime": "a\\ud800b"}'}, 400,
     "prime contains '\\ud800' at character 1, a lone surrogate"),
    ("/api/generate", {"raw": b'{"run": "bytes", "prime": "a\\udcffb"}'}, 400,
     "prime contains '\\udcff' at character 1, a lone surrogate"),
    ("/api/analyze", {"raw": b'{"text": "ab\\ud800"}'}, 400,
     "text contains '\\ud800' at character 2, a lone surrogate"),
    ("/api/analyze", {"raw": b'{"run": "bytes", "text": "\\udfff"}'}, 400,
     "text contains '\\udfff' at character 0, a lone surrogate"),
    ("/api/generate", {"raw": b"{}" + b" " * MAX_BODY}, 413, f"request body over {MAX_BODY} bytes"),
    ("/api/generate", {"method": "GET"}, 405, "Method Not Allowed: GET /api/generate"),
    ("/nothing", {}, 404, "Not Found: GET /nothing"),
    ("/api/analyze", {"body": {"text": ""}}, 400, "text is empty"),
    ("/api/analyze", {"body": {"text": "a" * 4001}}, 400, "text has 4001 characters; the limit"),
    ("/api/analyze", {"body": {"text": "ab", "state": "c0", "run": "gru"}}, 400,
     'state must be one of h0, h1, got "c0"'),
    ("/api/analyze", {"body": {"text": "ЖЖ"}}, 400, "the text has no symbol of this model's"),
])
def test_other_bad_requests(server, path, kwargs, status, message):
    got, headers, raw = call(server[0], path, **kwargs)
    assert got == status and headers["content-type"] == "application/json"
    assert message in json.loads(raw)["error"]


def test_analysis_matches_stepping_the_model(server, runs):
    text = 'print("a + b")\n'
    status, _, body = call(server[0], "/api/analyze", {"run": "lstm", "text": text, "state": "c0"})
    got = json.loads(body)
    assert status == 200 and got["symbols"] == list(text) and list(got["states"]) == ["c0"]
    stepper = runs["lstm"].stepper()
    scale = torch.tensor(got["states"]["c0"]["scale"])
    q = torch.frombuffer(bytearray(base64.b64decode(got["states"]["c0"]["q"])),
                         dtype=torch.int8).reshape(len(text), -1)
    for t, ch in enumerate(text):
        probs = stepper.step(ch)
        assert [s for s, _ in got["top"][t]] == [s for s, _ in probs.top(5)]
        assert [p for _, p in got["top"][t]] == pytest.approx([p for _, p in probs.top(5)], abs=1e-4)
        if t + 1 < len(text):
            assert got["p_next"][t] == pytest.approx(probs[text[t + 1]], abs=1e-4)
        # int8 per unit: within half a step of the true cell state
        assert (q[t] / 127 * scale - stepper.c[0][0]).abs().max() <= scale.max() / 254 + 1e-5
    assert set(got["units"]["c0"]) == {"inside quotes", "position in line", "indentation",
                                       "inside brackets"}


def test_loopback_names_and_the_names_allowed_are_the_only_hosts(runs):
    with serving(runs, allow_hosts=["box.example"]) as (url, _):
        port = urlsplit(url).port
        for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", "[::1]",
                     f"box.example:{port}"):
            assert call(url, "/api/runs", headers={"Host": host})[0] == 200, host
        for host in ("attacker.example", f"attacker.example:{port}", "box.example.evil"):
            assert call(url, "/api/runs", headers={"Host": host})[0] == 400, host
            status, _, body = call(url, "/api/generate", {"length": 5}, headers={"Host": host})
            name = host.split(":")[0]
            assert status == 400 and json.loads(body)["error"] == (  # JSON, as every refusal
                f"this server does not answer requests addressed to {name!r}; start it with "
                f"--allow-host {name} to allow that name")


def test_a_byte_models_limits_count_its_steps(runs):
    # 4,000 emoji passed a 4,000-character limit as 16,000 steps; a generation's own text, sent
    # back for analysis by the page, must always fit
    with serving(runs) as (url, _):
        status, _, body = call(url, "/api/analyze", {"run": "bytes", "text": "\U0001F600" * 1001})
        assert status == 400 and json.loads(body)["error"] == (
            "text has 4004 bytes in UTF-8, each a step of this byte model; the limit is 4000")
        status, _, body = call(url, "/api/generate", {"run": "bytes", "prime": "é" * 1001})
        assert status == 400 and "prime has 2002 bytes in UTF-8" in json.loads(body)["error"]
        status, _, body = call(url, "/api/generate", {"run": "bytes", "prime": "é" * 1000,
                                                      "length": 2000, "seed": 1})
        lines = [json.loads(line) for line in body.decode().splitlines()]
        assert status == 200 and len(bytes.fromhex(lines[-1]["bytes"])) == 4000
        status, _, body = call(url, "/api/analyze", {"run": "bytes", "text": "x",
                                                     "bytes": lines[-1]["bytes"]})
        assert status == 200, body


@pytest.mark.parametrize("headers, status, message", [
    # Any page can send these without asking first: a form, or fetch() with text/plain.
    ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, 403,
     "cross-origin request from http://evil.example refused"),
    ({"Content-Type": "text/plain"}, 415, "Content-Type: application/json, got text/plain"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),
    ({"Content-Type": ""}, 415, "got none"),
    # JSON from a page elsewhere (the browser would ask first; the server says no anyway).
    ({"Origin": "http://evil.example"}, 403, "the playground answers only its own page"),
    ({"Origin": "http://localhost:1"}, 403, "cross-origin request"),
    ({"Origin": "null"}, 403, "cross-origin request from null refused"),
])
@pytest.mark.parametrize("path", ["/api/generate", "/api/analyze"])
def test_requests_other_pages_could_send_are_refused(server, path, headers, status, message):
    got, _, body = call(server[0], path, {"text": "ab", "length": 5}
                        if path.endswith("analyze") else {"length": 5}, headers=headers)
    assert got == status and message in json.loads(body)["error"]


def test_the_pages_own_origin_is_welcome(server):
    url = server[0]
    for path, body in (("/api/generate", {"length": 5}), ("/api/analyze", {"text": "ab"})):
        status, _, _ = call(url, path, body, headers={"Origin": url,
                                                      "Content-Type": "application/json; charset=utf-8"})
        assert status == 200


def test_overload_is_refused_with_503_and_the_slot_comes_back(runs):
    with serving(runs, workers=1, max_busy=1) as (url, app):
        parts = urlsplit(url)
        held = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        held.request("POST", "/api/generate", body=json.dumps({"length": 2000, "run": "gru"}),
                     headers={"Content-Type": "application/json"})
        response = held.getresponse()
        assert response.status == 200 and "prime" in json.loads(response.readline())
        status, headers, body = call(url, "/api/generate", {"length": 5})
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"].startswith("busy: 1 requests are in progress")
        held.close()  # the client leaves mid-stream: its slot must be given back
        deadline = time.monotonic() + 10
        while app.state.playground.busy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.playground.busy == 0
        assert call(url, "/api/generate", {"length": 5})[0] == 200


def test_a_long_generation_does_not_hold_up_a_short_one(runs):
    """One model thread: the short generation's chunks go between the long one's."""
    torch.manual_seed(0)
    vocab = runs["lstm"].vocab
    big = CharLM(ModelConfig(vocab_size=len(vocab), hidden=256, layers=2), vocab).eval()
    with serving({**runs, "big": big}, workers=1) as (url, _):
        parts = urlsplit(url)
        long = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        long.request("POST", "/api/generate", body=json.dumps({"run": "big", "length": 1000}),
                     headers={"Content-Type": "application/json"})
        response = long.getresponse()
        response.readline()
        start = time.monotonic()
        status, _, body = call(url, "/api/generate", {"run": "gru", "length": 5})
        short = time.monotonic() - start
        assert status == 200 and lines(body)[-1] == {"done": True}
        assert lines(response.read())[-1] == {"done": True}
        whole = time.monotonic() - start
        long.close()
        assert short < whole / 2, (short, whole)


def test_two_hundred_concurrent_generations(runs):
    """Load: 200 generations at once, each answered in full or refused with 503; then the
    server still answers and holds no slot."""
    n, length = 200, 30
    with serving(runs, workers=2, max_busy=32) as (url, app):
        start = time.monotonic()
        barrier = threading.Barrier(n, timeout=30)

        def one(i):
            barrier.wait()
            return call(url, "/api/generate", {"length": length, "seed": i, "run": "gru"})

        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(one, range(n), timeout=60))
        seconds = time.monotonic() - start
        answered = refused = 0
        for status, _, body in results:
            assert status in (200, 503), (status, body)
            if status == 200:
                msgs = lines(body)
                assert msgs[-1] == {"done": True}
                assert len("".join(m.get("text", "") for m in msgs)) == length
                answered += 1
            else:
                assert json.loads(body)["error"].startswith("busy:")
                refused += 1
        print(f"load: {n} concurrent generations of {length} characters: {answered} answered, "
              f"{refused} refused with 503, in {seconds:.1f}s")
        assert answered >= 32 and answered + refused == n
        assert call(url, "/api/runs")[0] == 200 and app.state.playground.busy == 0


def test_load_runs_names_them_uniquely(tmp_path_factory):
    run = trained_run(tmp_path_factory)
    assert list(load_runs([run, run, str(run) + "/"])) == ["trained-run", "trained-run-2",
                                                          "trained-run-3"]


def test_serve_command_errors_are_one_line(cli, tmp_path):
    status, _, err = cli("serve", tmp_path / "missing")
    assert status == 2 and "is not a directory" in one_error_line(err)
    status, _, err = cli("serve", tmp_path, "--port", "70000")
    assert status == 2 and "--port must be from 0 to 65535" in one_error_line(err)
    status, _, err = cli("serve", tmp_path, "--host", "")  # it bound every address
    assert status == 2 and "--host is empty; give an address" in one_error_line(err)
    for name in ("a*b.example", "*example.org", "box.example:8000", ""):
        status, _, err = cli("serve", tmp_path, "--allow-host", name)
        assert status == 2 and f"--allow-host {name!r} is not a host name" in one_error_line(err)


def test_a_busy_port_is_one_line_naming_the_fix(cli, tmp_path_factory):
    run = trained_run(tmp_path_factory)
    with socket.socket() as other:  # another server on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        status, out, err = cli("serve", run, "--port", port)
    assert status == 2 and out == ""  # nothing claims to be serving
    assert f"port {port} on 127.0.0.1 is already in use; choose another with --port" in \
        one_error_line(err)


def test_serving_on_every_address_still_checks_host_names(tmp_path_factory):
    """--host 0.0.0.0: loopback names and the --allow-host names are served, no other name."""
    run = trained_run(tmp_path_factory)
    proc = subprocess.Popen([PYTHON, "-m", "rnnkit", "serve", str(run), "--host", "0.0.0.0",
                             "--port", "0", "--workers", "1", "--allow-host", "box.example",
                             "--allow-host", "*.lab.example"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        first = proc.stdout.readline()
        # every address: shown as the loopback one, which the host check answers
        assert first.startswith("serving trained-run at http://127.0.0.1:"), proc.stderr.read()
        port = int(first.split(":")[2].split("/")[0])
        note = proc.stdout.readline()
        assert "127.0.0.1, localhost, [::1], box.example, *.lab.example" in note
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                call(url, "/api/runs", timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        for host, status in (("localhost", 200), ("box.example", 200), ("a.lab.example", 200),
                             ("evil.example", 400), ("lab.example.evil", 400)):
            assert call(url, "/api/runs", headers={"Host": f"{host}:{port}"})[0] == status, host
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


# ---------------------------------------------------------------------------------------------
# The page in a real headless Chromium

@needs_chromium
def test_playground_in_chromium(server, runs, tmp_path, record_property):
    url, _ = server
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(url + "/")
        wait_for_phase(driver, "idle")
        find = lambda id_: driver.find_element("id", id_)  # noqa: E731
        find("prime").send_keys("def ")
        # a seed above 2^53, which a JavaScript number rounds (2^53 + 1 was 2^53's text)
        seed = 2**53 + 1
        for field, value in (("length", "120"), ("seed", str(seed)), ("topk", "10")):
            find(field).clear()
            find(field).send_keys(value)
        find("generate").click()
        wait_for_phase(driver, "ready")
        model = runs["lstm"]
        text = "".join(driver.execute_script(SHOWN_TEXT))
        assert text == model.generate("def ", 120, temperature=0.8, top_k=10, seed=seed)

        check_hover(driver, model, text, 7)
        check_unit_colours(driver, model, text, "h0", 0)
        # Switch the neuron: by number, then by the list of units that follow a feature.
        find("unit").clear()
        find("unit").send_keys("5\n")
        assert "h0 unit 5 of 32" in find("unitlabel").text
        check_unit_colours(driver, model, text, "h0", 5)
        button = driver.find_element("css selector", "#features button")
        unit = int(button.get_attribute("data-unit"))
        button.click()
        assert f"h0 unit {unit} of 32" in find("unitlabel").text
        check_unit_colours(driver, model, text, "h0", unit)
        # The cell state instead of h: the server runs the model again.
        driver.execute_script("const s = document.getElementById('state'); s.value = 'c0'; "
                              "s.dispatchEvent(new Event('change'));")
        wait_for_phase(driver, "ready")
        check_unit_colours(driver, model, text, "c0", unit)
        check_hover(driver, model, text, 30)
        shot = tmp_path / "playground.png"
        assert driver.save_screenshot(str(shot))
        record_property("screenshot", str(shot))
        print(f"screenshot: {shot}")

        # The other run, and an error shown on the page, not thrown.
        driver.execute_script("const s = document.getElementById('run'); s.value = 'gru'; "
                              "s.dispatchEvent(new Event('change'));")
        assert "gru: gru, 2 × 16 units" in find("runinfo").text
        find("temperature").clear()
        find("temperature").send_keys("0")
        find("generate").click()
        wait_for_phase(driver, "error")
        assert "temperature must be a number from 0.01" in find("status").text
    finally:
        driver.quit()
