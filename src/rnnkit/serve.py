"""The playground: a local web page to generate text and look inside trained runs.

    rnnkit serve [DIR ...] [--host 127.0.0.1] [--port 8000] [--allow-host NAME ...]
    rnnkit viz DIR TEXT_FILE --out page.html          (the same views offline, see viz.py)

Needs the `serve` extra (`pip install starlette uvicorn`). The page (one
HTML file with its script inlined; nothing from the internet) talks to a small JSON API:

    GET  /api/runs       the loaded runs
    POST /api/generate   {run, prime, length, temperature, top_k, seed} -> NDJSON lines streamed:
                         {"prime", "skipped"}, then {"text": ...} pieces, then {"done": true}
                         (a byte model's with "bytes": the hex of every byte, prime included)
    POST /api/analyze    {run, text, state[, bytes]} -> per-symbol top-5 next symbols, the
                         activations of `state` ("h0", "c1", ...; default h of the last layer)
                         and the units most correlated with text features (see
                         viz.trace_data); a byte model reads `bytes` (hex) instead of `text`

Model work runs in a pool of `--workers` threads, a generation a chunk of characters at a time,
so a long generation does not hold up the others; at most `--max-busy` generations and analyses
are in progress at once and further requests get 503 at once rather than waiting. Bad requests
get a 4xx JSON `{"error": "..."}` that names the field and the allowed values.

Other web pages the user visits must not be able to run the models: requests must name this
server by a loopback name or one given with `--allow-host` (the Host header, against DNS
rebinding), and a POST must be `application/json` (which a page elsewhere cannot send without
asking first) from no page or this server's own page (the Origin header).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from . import builtin
from .checkpoint import load
from .config import brief, parse_json
from .errors import RnnkitError
from .sample import generate
from .text import check_unicode
from .viz import page, run_info, trace, trace_data

try:  # the optional `serve` extra
    import uvicorn
    from starlette.applications import Starlette
    from starlette.datastructures import Headers
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.routing import Route
except ImportError:
    Starlette = None

MAX_BODY = 64 * 1024  # bytes of a request body
MAX_PRIME = 2000  # characters (a byte model's bytes) of a prime
MAX_LENGTH = 2000  # characters (bytes) generated per request
MAX_ANALYZE = MAX_PRIME + MAX_LENGTH  # characters (bytes) analysed: all a generation shows
MAX_TEMPERATURE = 10.0
CHUNK_SECONDS = 0.05  # a streamed generation sends what it has at least this often
CHUNK_PIECES = 64  # ... and at most this many characters per model job
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # addresses to bind that only this machine reaches
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")  # ... as a Host header names them
WILDCARDS = ("0.0.0.0", "::", "")  # bind to every address: no one name to allow


def bad(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def check_sender(request: Request) -> None:
    """Refuse what a page from another site can send: a body that is not application/json (a
    plain form or `text/plain` fetch needs no permission), or a page whose Origin is not this
    server's. Programs that send no Origin (curl, scripts) are welcome."""
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin is not None and origin.lower() != own.lower():
        raise BadRequest(f"cross-origin request from {brief(origin)} refused; the playground "
                         f"answers only its own page, {own}", 403)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise BadRequest(f"request body must be sent as Content-Type: application/json, got "
                         f"{brief(media) or 'none'}", 415)


async def read_json(request: Request, fields: dict[str, object]) -> dict:
    """The request's JSON object, at most MAX_BODY bytes, with only the keys in `fields`
    (name -> default); missing keys take their default."""
    check_sender(request)
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise BadRequest(f"request body over {MAX_BODY} bytes", 413)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(f"request body over {MAX_BODY} bytes", 413)
    try:
        data = parse_json(body or b"{}")
    except ValueError as e:
        raise BadRequest(f"request body is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BadRequest(f"unknown fields {unknown}; known fields are {sorted(fields)}")
    return {name: data.get(name, default) for name, default in fields.items()}


def number(data: dict, name: str, kind: type, lo: float, hi: float, optional: bool = False):
    """data[name] as `kind` (int or float) within [lo, hi], or None if optional and null."""
    value = data[name]
    if value is None and optional:
        return None
    is_num = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not is_num or not lo <= value <= hi:
        what = "an integer" if kind is int else "a number"
        raise BadRequest(f"{name} must be {what} from {lo} to {hi}"
                         f"{' or null' if optional else ''}, got {brief(json.dumps(value))}")
    return kind(value)


def string(data: dict, name: str, limit: int, model=None) -> str:
    """A string field of at most `limit` characters, or, for a byte model, `limit` bytes: the
    symbols the model steps through, as every limit of the server counts them."""
    value = data[name]
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, got {brief(json.dumps(value))}")
    if len(value) > limit:
        raise BadRequest(f"{name} has {len(value)} characters; the limit is {limit}")
    if model is not None and model.vocab.kind == "byte":
        steps = len(value.encode("utf-8", "replace"))
        if steps > limit:
            raise BadRequest(f"{name} has {steps} bytes in UTF-8, each a step of this byte "
                             f"model; the limit is {limit}")
    try:
        check_unicode(value, name)
    except RnnkitError as e:
        raise BadRequest(str(e)) from None
    return value


def hex_bytes(data: dict, model) -> bytes:
    """The `bytes` field: a byte model's text as hex digits, at most MAX_ANALYZE bytes."""
    if model.vocab.kind != "byte":
        raise BadRequest("bytes is for byte models; give this run text")
    value = string(data, "bytes", 2 * MAX_ANALYZE)
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise BadRequest("bytes must be hex digits, two per byte") from None


class Playground:
    """The loaded runs, the model thread pool, and the request handlers."""

    def __init__(self, runs: dict[str, object], workers: int = 2, max_busy: int = 32):
        if not runs:
            raise RnnkitError("no runs to serve; give at least one run directory")
        self.runs, self.max_busy, self.busy = runs, max_busy, 0
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rnnkit-model")

    def model(self, data: dict):
        name = data["run"] if data["run"] is not None else next(iter(self.runs))
        if not isinstance(name, str):
            raise BadRequest(f"run must be the name of a run, got {brief(json.dumps(name))}")
        if name not in self.runs:
            raise BadRequest(f"no run named {brief(json.dumps(name))}; loaded runs: "
                             f"{', '.join(self.runs)}", 404)
        return self.runs[name]

    async def work(self, fn, *args):
        """fn(*args) on a model thread; the event loop stays free for other clients."""
        return await asyncio.wrap_future(self.pool.submit(fn, *args))

    def admit(self) -> JSONResponse | None:
        """Take a busy slot, or the 503 answer when all `max_busy` are taken (called on the
        event loop's one thread, so the count needs no lock)."""
        if self.busy >= self.max_busy:
            return JSONResponse({"error": f"busy: {self.busy} requests are in progress; try "
                                 "again in a moment"}, status_code=503, headers={"Retry-After": "1"})
        self.busy += 1
        return None

    def release(self) -> None:
        self.busy -= 1

    async def index(self, request: Request) -> HTMLResponse:
        return HTMLResponse(page(), headers={"Cache-Control": "no-store"})

    async def list_runs(self, request: Request) -> JSONResponse:
        return JSONResponse({"runs": [run_info(name, m) for name, m in self.runs.items()],
                             "limits": {"prime": MAX_PRIME, "length": MAX_LENGTH,
                                        "text": MAX_ANALYZE, "temperature": MAX_TEMPERATURE}})

    async def generate(self, request: Request):
        try:
            data = await read_json(request, {"run": None, "prime": "", "length": 200,
                                             "temperature": 1.0, "top_k": None, "seed": None})
            model = self.model(data)
            prime = string(data, "prime", MAX_PRIME, model)
            length = number(data, "length", int, 1, MAX_LENGTH)
            temperature = number(data, "temperature", float, 0.01, MAX_TEMPERATURE)
            top_k = number(data, "top_k", int, 1, len(model.vocab), optional=True)
            if isinstance(data["seed"], str) and data["seed"].isascii() \
                    and data["seed"].isdigit():  # the page's digits: JavaScript's numbers
                data["seed"] = int(data["seed"])  # are exact only below 2^53
            seed = number(data, "seed", int, 0, 2**63 - 1, optional=True)
        except BadRequest as e:
            return bad(e.status, str(e))
        # Unknown prime symbols are reported to the page rather than warned about on the server.
        ids, skipped = model.vocab.encode(prime)
        known = model.vocab.decode(ids)  # bytes for a byte model
        # A byte model's pieces are its bytes (`raw`), decoded here for the page, and sent whole
        # at the end, so that the analysis reads what was generated, not its U+FFFD stand-ins.
        pieces = generate(model, known, length, temperature, top_k, seed=seed,
                          raw=model.vocab.kind == "byte")  # runs nothing yet
        refused = self.admit()
        if refused:
            return refused
        return Stream(self.stream(pieces, known, skipped), self.release)

    async def stream(self, pieces, prime: str | bytes, skipped: list[str]):
        """NDJSON lines of a generation, the model stepping a chunk at a time on the pool; a
        byte model's text decoded as it comes, and its bytes (hex) with the last line."""
        raw = isinstance(prime, bytes)
        decoder = codecs.getincrementaldecoder("utf-8")("replace") if raw else None
        written = [prime]
        yield line({"prime": decoder.decode(prime) if raw else prime, "skipped": skipped})
        while True:
            try:
                piece, done = await self.work(take, pieces)
            except RnnkitError as e:
                yield line({"error": str(e)})
                return
            piece = piece or (b"" if raw else "")  # nothing came: "" whatever the model
            written.append(piece)
            text = decoder.decode(piece, final=done) if raw else piece
            if text:
                yield line({"text": text})
            if done:
                break
        yield line({"done": True, **({"bytes": b"".join(written).hex()} if raw else {})})

    async def analyze(self, request: Request):
        try:
            data = await read_json(request, {"run": None, "text": "", "state": None,
                                             "bytes": None})
            model = self.model(data)
            # with `bytes`, `text` is their display copy (an invalid byte, 3 bytes of U+FFFD):
            # the bytes are the steps, limited by `hex_bytes`
            text = string(data, "text", MAX_ANALYZE, model if data["bytes"] is None else None)
            if data["bytes"] is not None:  # a byte model's text exactly as it was generated
                text = hex_bytes(data, model)
            keys = run_info("", model)["states"]
            state = data["state"] if data["state"] is not None else f"h{model.config.layers - 1}"
            if state not in keys:
                raise BadRequest(f"state must be one of {', '.join(keys)}, got "
                                 f"{brief(json.dumps(state))}")
            if not text:
                raise BadRequest("text is empty; give some text to analyze")
        except BadRequest as e:
            return bad(e.status, str(e))
        refused = self.admit()
        if refused:
            return refused
        try:
            result = await self.work(analyze, model, text, state)
        except RnnkitError as e:
            return bad(400, str(e))
        finally:
            self.release()
        return JSONResponse(result)


class Stream(StreamingResponse if Starlette else object):
    """A streamed NDJSON response that gives back its busy slot however it ends: finished,
    failed, or the client gone (even before the first line)."""

    def __init__(self, lines, release):
        super().__init__(lines, media_type="application/x-ndjson",
                         headers={"Cache-Control": "no-store"})
        self.release = release

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


def take(pieces) -> tuple[str | bytes, bool]:
    """Up to CHUNK_PIECES pieces of a generator (text, or a byte model's bytes), or what
    CHUNK_SECONDS gives, joined; and whether it ended."""
    out, start, done = [], time.monotonic(), False
    for _ in range(CHUNK_PIECES):
        try:
            out.append(next(pieces))
        except StopIteration:
            done = True
            break
        if time.monotonic() - start > CHUNK_SECONDS:
            break
    return (b"" if out and isinstance(out[0], bytes) else "").join(out), done


def analyze(model, text: str, state: str) -> dict:
    return trace_data(trace(model, text, keys=[state]))


def line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return bad(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")


def make_app(runs: dict[str, object], workers: int = 2, max_busy: int = 32,
             allow_hosts: list[str] = ()):
    """The Starlette app serving `runs` (name -> loaded model).

    Requests must name the server (Host header, port aside) by a loopback name or one of
    `allow_hosts` ("box.example", "*.example.org", "*" for any), so that a web page elsewhere
    cannot reach it by DNS rebinding, whatever address it is bound to.
    """
    if Starlette is None:
        raise RnnkitError("rnnkit serve needs Starlette and uvicorn: pip install starlette uvicorn")
    pg = Playground(runs, workers, max_busy)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        pg.pool.shutdown(wait=False, cancel_futures=True)

    routes = [Route("/", pg.index), Route("/api/runs", pg.list_runs),
              Route("/api/generate", pg.generate, methods=["POST"]),
              Route("/api/analyze", pg.analyze, methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error},
                    middleware=[Middleware(HostCheck, allowed=[*LOOPBACK_NAMES, *allow_hosts])])
    app.state.playground = pg
    return app


class HostCheck:
    """ASGI middleware: a request whose Host header (port aside) is not one of `allowed` (a
    name, "*.example.org" for its sub-domains, "*" for any) gets a 400 with a JSON error naming
    the way to allow it, as every other refusal of the server does."""

    def __init__(self, app, allowed: list[str]):
        self.app, self.allowed = app, [name.lower() for name in allowed]

    def allows(self, name: str) -> bool:
        return any(name == pattern or pattern == "*" or
                   (pattern.startswith("*.") and name.endswith(pattern[1:]))
                   for pattern in self.allowed)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = Headers(scope=scope).get("host", "").strip().lower()
        name = host[:host.find("]") + 1] if host.startswith("[") else host.rsplit(":", 1)[0] \
            if host.count(":") == 1 else host  # "[::1]:8000" -> "[::1]", "box:8000" -> "box"
        if name and self.allows(name):
            return await self.app(scope, receive, send)
        why = f"requests addressed to {name!r}; start it with --allow-host {name} to allow " \
            "that name" if name else "requests without a Host header"
        await JSONResponse({"error": f"this server does not answer {why}"},
                           status_code=400)(scope, receive, send)


def load_runs(dirs: list[str] | None) -> dict[str, object]:
    """Load each run directory, named by its last path component (made unique with -2, -3...);
    none: the built-in model, whatever folders are where it runs."""
    runs = {}
    for d in dirs or [builtin.location()]:
        base = Path(d).resolve().name or "run"
        name, n = base, 1
        while name in runs:
            n += 1
            name = f"{base}-{n}"
        runs[name] = load(d)
    return runs


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) as uvicorn binds one, for it to listen on.

    Bound here, a busy port or an address this machine lacks is one line naming the fix, before
    anything claims the server is running.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise RnnkitError(f"port {port} on {host} is already in use; choose another with "
                              "--port (--port 0 takes any free one)") from None
        raise RnnkitError(f"cannot listen on {host} port {port} ({e.strerror or e}); choose "
                          "another --host or --port") from None
    return sock


def cmd_serve(args) -> int:
    if Starlette is None:
        raise RnnkitError("rnnkit serve needs Starlette and uvicorn: pip install starlette uvicorn")
    if not 0 <= args.port <= 65535:
        raise RnnkitError(f"--port must be from 0 to 65535, got {args.port}")
    if not args.host.strip():  # an empty address binds every one, unannounced
        raise RnnkitError("--host is empty; give an address: 127.0.0.1 for this machine alone, "
                          "0.0.0.0 for every address")
    if args.workers < 1 or args.max_busy < 1:
        raise RnnkitError(f"--workers and --max-busy must be at least 1, got {args.workers} and "
                          f"{args.max_busy}")
    for name in args.allow_host:
        wildcard = name == "*" or (name.startswith("*.") and "*" not in name[2:])
        if not name or ("*" in name and not wildcard) or (":" in name and name[0] != "["):
            raise RnnkitError(f"--allow-host {name!r} is not a host name; give one without a "
                              "port, such as box.example, or *.example.org for its sub-domains")
    runs = load_runs(args.run_dirs)
    # The workers already run requests side by side; each operation spread over more threads
    # would have them wait on each other.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.workers))
    # every address: shown as this machine's loopback one, the address that reaches it here
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(
        args.host, f"[{args.host}]" if ":" in args.host else args.host)
    hosts = list(args.allow_host)
    if args.host not in LOOPBACK + WILDCARDS:
        hosts.append(shown)  # the address it is bound to names it too
    app = make_app(runs, args.workers, args.max_busy, hosts)
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    print(f"serving {', '.join(runs)} at http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    if args.host not in LOOPBACK:
        print(f"note: --host {args.host} lets other machines use this server; it answers "
              f"requests addressed to {', '.join([*LOOPBACK_NAMES, *hosts])} (more names: "
              "--allow-host)", flush=True)
    # uvicorn's own limit answers 503 to connections beyond what the event loop should hold.
    config = uvicorn.Config(app, log_level="warning", limit_concurrency=max(256, 4 * args.max_busy))
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
    return 0
