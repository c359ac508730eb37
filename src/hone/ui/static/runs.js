// hone ui, second half: training runs, the comparison, the chat, and the page start (after app.js).
"use strict";

// ---- train ------------------------------------------------------------------------------
$("start").addEventListener("click", () => guarded("train-error", async () => {
  if (state.values["train.output_dir"] === state.defaults["train.output_dir"]) {
    setValue("train.output_dir", (await api("/api/state")).new_run_dir);
  }
  const status = await api("/api/train/start", { values: state.values });
  selectRun(status.run);
}));
$("stop").addEventListener("click", () => guarded("train-error", async () => { if (state.run) showStatus(await api("/api/train/stop", { run: state.run })); }));
$("resume").addEventListener("click", () => guarded("train-error", async () => { if (state.run) { showStatus(await api("/api/train/resume", { run: state.run })); poll(); } }));

function selectRun(run) {
  state.run = run; state.since = 0; state.metrics = [];
  $("report-run").textContent = run;
  poll();
}

async function poll() {
  clearTimeout(state.pollTimer);
  if (!state.run) return;
  const data = await guarded("train-error", () => api(`/api/run?run=${encodeURIComponent(state.run)}&since=${state.since}`));
  if (!data) return;
  state.metrics.push(...data.metrics);
  state.since += data.metrics.length;
  showStatus(data);
  renderChart();
  show("log", data.log);
  if (data.state === "running" || data.state === "stopping") state.pollTimer = setTimeout(poll, 1000);
  else refreshRuns();
}

function showStatus(s) {
  const box = $("run-status");
  box.replaceChildren(el("span", { id: "run-state", class: `state ${s.state}`, text: s.state }),
    ` ${s.name} · step ${s.steps}${s.max_steps ? ` of ${s.max_steps}` : ""}${s.pid ? ` · pid ${s.pid}` : ""}`);
  if (s.error) show("train-error", s.error);
  $("stop").disabled = s.state !== "running";
  $("resume").disabled = !s.resumable;
}

function renderChart() {
  const rows = state.metrics, W = 520, H = 220, L = 44, B = 26;
  const loss = rows.filter((r) => r.loss != null).map((r) => [r.step, r.loss]);
  const evals = rows.filter((r) => r.eval_loss != null).map((r) => [r.step, r.eval_loss]);
  const all = loss.concat(evals);
  if (!all.length) { $("chart").innerHTML = `<p class="muted">the loss appears here as metrics.jsonl grows</p>`; return; }
  const maxStep = Math.max(...all.map((p) => p[0]), 1), minStep = Math.min(...all.map((p) => p[0]));
  const top = Math.max(...all.map((p) => p[1])), bottom = Math.min(0, ...all.map((p) => p[1]));
  const x = (s) => L + (W - L - 10) * (s - minStep) / Math.max(maxStep - minStep, 1);
  const y = (v) => 10 + (H - B - 10) * (1 - (v - bottom) / Math.max(top - bottom, 1e-9));
  const line = (pts, colour, id) => `<polyline id="${id}" fill="none" stroke="${colour}" stroke-width="1.8" points="${pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ")}"/>`;
  let svg = `<svg id="loss-chart" data-points="${loss.length}" data-eval-points="${evals.length}" width="${W}" height="${H}" xmlns="http://www.w3.org/2000/svg">`;
  svg += `<line x1="${L}" y1="${H - B}" x2="${W - 10}" y2="${H - B}" stroke="#555"/><line x1="${L}" y1="10" x2="${L}" y2="${H - B}" stroke="#555"/>`;
  svg += `<text x="${L - 4}" y="14" font-size="11" text-anchor="end">${top.toFixed(2)}</text><text x="${L - 4}" y="${H - B}" font-size="11" text-anchor="end">${bottom.toFixed(1)}</text>`;
  svg += `<text x="${L}" y="${H - 8}" font-size="11">step ${minStep}</text><text x="${W - 10}" y="${H - 8}" font-size="11" text-anchor="end">step ${maxStep}</text>`;
  svg += line(loss, "#2f6fde", "loss-line") + line(evals, "#e07b00", "eval-line");
  svg += evals.map((p) => `<circle cx="${x(p[0])}" cy="${y(p[1])}" r="3" fill="#e07b00"/>`).join("");
  svg += `<text x="${W - 12}" y="24" font-size="12" fill="#2f6fde" text-anchor="end">loss</text><text x="${W - 12}" y="40" font-size="12" fill="#e07b00" text-anchor="end">eval loss</text></svg>`;
  $("chart").innerHTML = svg;
}

async function refreshRuns() {
  const data = await guarded("train-error", () => api("/api/runs"));
  if (!data) return;
  state.runs = data.runs;
  $("runs-dir").textContent = data.runs_dir;
  const rows = data.runs.map((r) => {
    const open = el("button", { text: "open" }); open.addEventListener("click", () => selectRun(r.run));
    const s = r.summary || {};
    return [el("span", { class: `state ${r.state}`, text: r.state }), r.name, r.method, r.steps, s.train_seconds != null ? `${s.train_seconds.toFixed(1)} s` : "–",
            s.final_eval_loss, s.trained_tokens, r.has_report ? "yes" : "–", r.error || "", open];
  });
  $("runs").replaceChildren(data.runs.length ? table(["state", "run", "method", "steps", "train time", "final eval loss", "trained tokens", "report", "error", ""], rows)
                                             : el("p", { class: "muted", text: "no runs yet" }));
  renderPicks();
}

// ---- compare ----------------------------------------------------------------------------
function renderPicks() {
  const picks = (id, filter, checkedRun) => {
    const box = $(id), ticked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
    box.replaceChildren(...state.runs.filter(filter).map((r) => {
      const input = el("input", { type: "checkbox", value: r.run });
      input.checked = ticked.has(r.run) || (!ticked.size && r.run === checkedRun);
      return el("label", { class: "inline" }, input, ` ${r.name}`);
    }));
    if (!box.children.length) box.append(el("span", { class: "muted", text: "no finished runs yet" }));
  };
  picks("compare-picks", (r) => r.has_report, state.run);
  picks("chat-runs", (r) => r.summary, state.run);
}

function showReport() {
  if (!state.run) return;
  const run = state.runs.find((r) => r.run === state.run);
  if (run && run.has_report) $("report").src = `/report?run=${encodeURIComponent(state.run)}`;
}

$("compare-selected").addEventListener("click", () => guarded("compare-error", async () => {
  const runs = [...$("compare-picks").querySelectorAll("input:checked")].map((i) => i.value);
  const columns = (await api("/api/compare", { runs })).runs;
  const names = [...new Set(columns.flatMap((c) => (c.metrics || []).map((m) => m.metric)))];
  const cell = (c, name) => {
    const m = (c.metrics || []).find((x) => x.metric === name);
    if (!m) return "–";
    const ci = m.ci ? ` [${num(m.ci[0])}, ${num(m.ci[1])}]` : "";
    return el("span", { class: m.significant ? "good" : "", text: `${num(m.baseline)} → ${num(m.tuned)}${ci}` });
  };
  const rows = names.map((n) => [n, ...columns.map((c) => cell(c, n))]);
  rows.push(["forgetting (general ppl)", ...columns.map((c) => c.forgetting ? `${(100 * c.forgetting.relative_change).toFixed(1)}%${c.forgetting.flagged ? " flagged" : ""}` : "–")]);
  rows.push(["train time", ...columns.map((c) => c.summary.train_seconds != null ? `${c.summary.train_seconds.toFixed(1)} s` : "–")]);
  rows.push(["steps / method", ...columns.map((c) => `${c.summary.steps ?? "–"} / ${c.summary.method ?? "–"}`)]);
  const t = table(["metric: base → tuned [95% CI of the change]", ...columns.map((c) => c.name)], rows);
  t.id = "side-by-side-table";
  $("side-by-side").replaceChildren(t, ...columns.filter((c) => c.error).map((c) => el("p", { class: "bad", text: `${c.name}: ${c.error}` })));
}));

$("compare-run").addEventListener("click", () => guarded("compare-error", async () => {
  if (!state.run) throw new Error("open a run first (Train tab)");
  showStatus(await api("/api/compare/run", { run: state.run, limit: Number($("compare-limit").value) || null }));
  poll();
}));

// ---- chat -------------------------------------------------------------------------------
$("chat-example").addEventListener("click", async () => {
  const text = await (await fetch("/api/chat/example")).json();
  $("chat-system").value = text.system || ""; $("chat-prompt").value = text.prompt || "";
});

$("chat-send").addEventListener("click", () => guarded("chat-error", async () => {
  const runs = [...$("chat-runs").querySelectorAll("input:checked")].map((i) => i.value);
  $("chat-send").disabled = true;
  const box = $("chat-columns");
  box.replaceChildren(el("p", { class: "muted", text: "loading the models ..." }));
  try {
    const response = await fetch("/api/chat", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ runs, system: $("chat-system").value, prompt: $("chat-prompt").value,
                             max_new_tokens: Number($("chat-max").value) || 96, temperature: Number($("chat-temperature").value) || 0 }) });
    if (!response.ok) throw new Error((await response.json()).error);
    await readEvents(response, box);
  } finally { $("chat-send").disabled = false; }
}));

async function readEvents(response, box) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "", answers = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = JSON.parse(buffer.slice(0, cut).replace(/^data: /, ""));
      buffer = buffer.slice(cut + 2);
      if (event.error) throw new Error(event.error);
      if (event.columns) {
        answers = event.columns.map((label, i) => el("div", { class: "answer", id: `answer-${i}` }));
        box.replaceChildren(...event.columns.map((label, i) => el("div", { class: "column" }, el("h3", { text: label }), answers[i],
                                                                 el("div", { class: "muted", id: `answer-${i}-info` }))));
      } else if (event.text) answers[event.column].textContent += event.text;
      else if (event.done) $(`answer-${event.column}-info`).textContent = `${event.tokens} tokens in ${event.seconds} s`;
    }
  }
}

// ---- start ------------------------------------------------------------------------------
(async function init() {
  const s = await api("/api/state");
  $("where").textContent = `${s.cwd} · runs in ${s.runs_dir}`;
  state.schema = s.config;
  state.demo = s.demo;
  buildConfigForm();
  buildAdviseForm(s.answers);
  await configChanged();
  await refreshRuns();
  const latest = state.runs[0];
  if (latest) selectRun(latest.run);
})();
