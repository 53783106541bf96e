// The rnnkit playground page. Two modes:
//   live     (no inlined data): talks to the `rnnkit serve` API on the server it came from;
//   offline  (`rnnkit viz`): the trace of one text is inlined in the <script id="data"> element.
// A trace (see viz.trace_data) holds per symbol t: symbols[t], top[t] = [[symbol, p], ...] after
// reading it, p_next[t]; and per state key ("h0", "c1", ...) the activations as int8 per unit
// (a = q / 127 * scale[unit], time-major, base64) and the units most correlated with text features.
"use strict";

const DATA = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
const view = { runs: [], run: null, trace: null, state: null, unit: 0, spans: [] };

// Whitespace made visible where a symbol is shown on its own.
function show(symbol) {
  return { " ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍" }[symbol] ?? symbol;
}

function setStatus(text, phase, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
  document.body.dataset.phase = phase;
}

// int8 activations of one state key, decoded once.
function activations(key) {
  const st = view.trace.states[key];
  if (!st.values) {
    const bin = atob(st.q);
    st.values = new Int8Array(bin.length);
    for (let i = 0; i < bin.length; i++) st.values[i] = (bin.charCodeAt(i) << 24) >> 24;
  }
  return st;
}

function renderText() {
  const box = $("text");
  box.textContent = "";
  view.spans = view.trace.symbols.map((s, t) => {
    const span = document.createElement("span");
    span.className = s === "\n" ? "ch nl" : "ch";
    span.dataset.t = t;
    span.textContent = s === "\n" ? "↵\n" : s;
    box.appendChild(span);
    return span;
  });
  const skipped = view.trace.skipped;
  if (skipped.length) {
    setStatus(`Left out, not in the vocabulary: ${skipped.slice(0, 20).join(" ")}`, "ready");
  }
}

// Colour every symbol by the chosen unit: blue negative, red positive, alpha = |a| / max |a|.
function paint() {
  if (!view.trace || !view.trace.states[view.state]) return;
  const st = activations(view.state);
  const H = view.trace.hidden;
  view.spans.forEach((span, t) => {
    const v = st.values[t * H + view.unit] / 127;
    const alpha = Math.abs(v).toFixed(3);
    span.style.backgroundColor = v >= 0 ? `rgba(220, 60, 40, ${alpha})` : `rgba(38, 110, 210, ${alpha})`;
  });
  $("unitlabel").textContent = `${view.state} unit ${view.unit} of ${H}; largest |activation| `
    + `in this text ${st.scale[view.unit].toFixed(3)}`;
  renderFeatures();
}

function renderFeatures() {
  const box = $("features");
  box.textContent = "";
  const ranked = view.trace.units[view.state] || {};
  for (const [feature, units] of Object.entries(ranked)) {
    const row = document.createElement("div");
    const name = document.createElement("div");
    name.textContent = feature;
    row.appendChild(name);
    for (const [unit, r] of units.slice(0, 5)) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.unit = unit;
      b.textContent = `${unit} (r ${r >= 0 ? "+" : ""}${r.toFixed(2)})`;
      b.classList.toggle("chosen", unit === view.unit);
      b.addEventListener("click", () => chooseUnit(unit));
      row.appendChild(b);
    }
    if (!units.length) row.appendChild(document.createTextNode(" (does not vary in this text)"));
    box.appendChild(row);
  }
}

function chooseUnit(unit) {
  const H = view.trace ? view.trace.hidden : 1;
  view.unit = Math.max(0, Math.min(H - 1, Number.isFinite(unit) ? unit : 0));
  $("unit").value = view.unit;
  paint();
}

function showProbs(t) {
  const tr = view.trace;
  view.spans.forEach((s) => s.classList.remove("hover"));
  view.spans[t].classList.add("hover");
  const actual = t + 1 < tr.symbols.length ? tr.symbols[t + 1] : null;
  let head = `After “${show(tr.symbols[t])}” (symbol ${t})`;
  if (actual !== null) head += `; actually next: “${show(actual)}” at ${(100 * tr.p_next[t]).toFixed(1)}%`;
  const st = tr.states[view.state] && activations(view.state);
  if (st) {
    const a = st.values[t * tr.hidden + view.unit] / 127 * st.scale[view.unit];
    head += `; ${view.state} unit ${view.unit} = ${a.toFixed(3)}`;
  }
  $("probhead").textContent = head;
  const table = $("probtable");
  table.textContent = "";
  for (const [symbol, p] of tr.top[t]) {
    const row = table.insertRow();
    row.classList.toggle("actual", symbol === actual);
    row.insertCell().textContent = show(symbol);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    const barCell = row.insertCell();
    barCell.className = "barcell";
    barCell.appendChild(bar);
    const cell = row.insertCell();
    cell.className = "p";
    cell.textContent = `${(100 * p).toFixed(1)}%`;
    cell.dataset.p = p;
  }
}

function fillStates(run) {
  const select = $("state");
  select.textContent = "";
  for (const key of run.states) {
    const kind = key[0] === "h" ? "h (hidden)" : "c (cell)";
    select.add(new Option(`${kind}, layer ${Number(key.slice(1)) + 1}`, key));
  }
  view.state = `h${run.layers - 1}`;
  select.value = view.state;
  $("unit").max = run.hidden - 1;
  $("runinfo").textContent = `${run.name}: ${run.cell}, ${run.layers} × ${run.hidden} units, `
    + `${run.vocab_size} symbols (${run.tokenizer})`;
}

function showTrace(trace) {
  view.trace = trace;
  renderText();
  chooseUnit(Math.min(view.unit, trace.hidden - 1));
}

// ---------------------------------------------------------------------------------------------
// Live mode: the server's API

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function numberOrNull(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

// A seed's digits as they were typed: a JavaScript number rounds integers above 2^53, and the
// same seed must give the same text as `rnnkit sample --seed S`.
function seedOrNull() {
  const text = $("seed").value.trim();
  return text === "" ? null : /^[0-9]+$/.test(text) ? text : Number(text);
}

// bytes: a byte model's generated text exactly (hex), which `text` shows decoded
async function analyze(text, bytes = null) {
  setStatus("Analyzing…", "analyzing");
  view.text = text;
  view.bytes = bytes;
  const body = { run: view.run.name, text, state: view.state };
  if (bytes !== null) body.bytes = bytes;
  const response = await post("api/analyze", body);
  showTrace(await response.json());
  if (!view.trace.skipped.length) {
    setStatus(`${view.trace.symbols.length} symbols. Hover a character; pick a unit.`, "ready");
  }
}

async function generate() {
  $("generate").disabled = true;
  const box = $("text");
  box.textContent = "";
  view.trace = null;
  view.spans = [];
  setStatus("Generating…", "generating");
  try {
    const response = await post("api/generate", {
      run: view.run.name, prime: $("prime").value, length: numberOrNull("length"),
      temperature: numberOrNull("temperature"), top_k: numberOrNull("topk"), seed: seedOrNull(),
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let text = "", pending = "", done = false, bytes = null;
    while (!done) {
      const chunk = await reader.read();
      if (chunk.done) break;
      pending += chunk.value;
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const l of lines) {
        const msg = JSON.parse(l);
        if (msg.error) throw new Error(msg.error);
        if (msg.prime !== undefined) {
          text = msg.prime;
          box.textContent = text;
          if (msg.skipped.length) setStatus(`Prime symbols not in the vocabulary were left out: ${msg.skipped.join(" ")}`, "generating");
        }
        if (msg.text) { text += msg.text; box.textContent = text; box.scrollTop = box.scrollHeight; }
        if (msg.done) { done = true; bytes = msg.bytes ?? null; }
      }
    }
    if (!done) throw new Error("the generation stopped before its end");
    await analyze(text, bytes);
  } catch (e) {
    setStatus(e.message, "error", true);
  } finally {
    $("generate").disabled = false;
  }
}

async function startLive() {
  $("controls").hidden = false;
  try {
    const response = await fetch("api/runs");
    const info = await response.json();
    view.runs = info.runs;
    for (const run of view.runs) $("run").add(new Option(run.name, run.name));
    $("length").max = info.limits.length;
    view.run = view.runs[0];
    fillStates(view.run);
    setStatus("Type a prime (or none) and press Generate.", "idle");
  } catch (e) {
    setStatus(`Cannot reach the server: ${e.message}`, "error", true);
  }
  $("run").addEventListener("change", () => {
    view.run = view.runs.find((r) => r.name === $("run").value);
    fillStates(view.run);
    view.trace = null;
    $("text").textContent = "";
    $("features").textContent = "";
    setStatus(`Switched to ${view.run.name}.`, "idle");
  });
  $("generate").addEventListener("click", generate);
  $("analyze").addEventListener("click", () => analyze($("prime").value)
    .catch((e) => setStatus(e.message, "error", true)));
  // Another state needs the server to run the model again over the text.
  $("state").addEventListener("change", () => {
    view.state = $("state").value;
    if (view.trace) analyze(view.text, view.bytes).catch((e) => setStatus(e.message, "error", true));
  });
}

function startOffline() {
  fillStates(DATA.run);
  $("runinfo").textContent += ` — ${DATA.source}`;
  showTrace(DATA.trace);
  $("state").addEventListener("change", () => { view.state = $("state").value; paint(); });
  if (!DATA.trace.skipped.length) setStatus("Hover a character; pick a unit.", "ready");
}

$("text").addEventListener("mouseover", (event) => {
  const span = event.target.closest(".ch");
  if (span && view.trace) showProbs(Number(span.dataset.t));
});
$("unit").addEventListener("change", () => chooseUnit(parseInt($("unit").value, 10)));

if (DATA) startOffline(); else startLive();
