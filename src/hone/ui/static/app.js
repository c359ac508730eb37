// hone ui: one plain page over hone's HTTP API. No framework, nothing fetched from outside.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { values: {}, schema: [], defaults: {}, run: null, since: 0, metrics: [], runs: [], planTimer: null,
                planBusy: false, planAgain: false, demo: null };

// ---- plumbing ---------------------------------------------------------------------------
async function api(path, body, method) {
  const init = body === undefined ? { method: method || "GET" } :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok || (data && data.error)) throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  return data;
}

function show(id, text) { $(id).textContent = text || ""; }

async function guarded(errorId, work) {
  show(errorId, "");
  try { return await work(); } catch (e) { show(errorId, e.message); return null; }
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function num(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return v.toLocaleString();
  return v.toFixed(digits === undefined ? 3 : digits);
}

function table(headers, rows) {
  const t = el("table", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h }))));
  for (const row of rows) t.append(el("tr", {}, ...row.map((c) => c instanceof Node ? el("td", {}, c) :
    el("td", { class: typeof c === "number" ? "num" : "", text: typeof c === "number" ? num(c) : (c ?? "–") }))));
  return t;
}

// ---- tabs -------------------------------------------------------------------------------
function openTab(name) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((s) => s.classList.toggle("active", s.id === `tab-${name}`));
  if (name === "compare" || name === "chat" || name === "train") refreshRuns();
  if (name === "plan") schedulePlan();
  if (name === "compare") showReport();
}
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => openTab(b.dataset.tab)));

// ---- config form (generated from hone.config's dataclasses) -----------------------------
function fieldInput(field) {
  let input;
  if (field.kind === "bool") {
    input = el("input", { type: "checkbox" });
  } else if (field.kind === "choice") {
    input = el("select", {}, ...field.choices.map((c) => el("option", { value: c, text: c })));
  } else {
    input = el("input", { type: field.kind === "int" || field.kind === "float" ? "number" : "text" });
    if (field.kind === "float") input.step = "any";
    if (field.suggestions) input.setAttribute("list", `list-${field.key}`);
  }
  input.dataset.key = field.key;
  input.dataset.kind = field.kind;
  input.title = field.doc || "";
  return input;
}

function setInput(input, value) {
  if (input.type === "checkbox") input.checked = !!value;
  else if (value === null || value === undefined) input.value = "";
  else if (Array.isArray(value)) input.value = value.join(", ");
  else input.value = value;
}

function readInput(input) {
  const kind = input.dataset.kind;
  if (input.type === "checkbox") return input.checked;
  const text = input.value.trim();
  if (text === "") return kind === "list" ? [] : null;
  if (kind === "int") return Number.isInteger(Number(text)) ? Number(text) : text;
  if (kind === "float") return Number.isNaN(Number(text)) ? text : Number(text);
  if (kind === "list") return text.split(",").map((s) => s.trim()).filter(Boolean);
  if (kind === "yaml" && text.includes(",")) return text.split(",").map((s) => s.trim()).filter(Boolean);
  return text;
}

function fieldRow(field) {
  const input = fieldInput(field);
  const row = el("div", { class: "field" }, el("span", { class: "key", text: field.key }), input);
  const list = input.getAttribute("list");
  if (list && !document.getElementById(list)) row.append(el("datalist", { id: list }, ...field.suggestions.map((s) => el("option", { value: s }))));
  if (field.doc || field.range) row.append(el("span", { class: "doc", text: [field.doc, field.range && `allowed: ${field.range}`].filter(Boolean).join(" · ") }));
  input.addEventListener("change", () => setValue(field.key, readInput(input), input));
  return row;
}

function buildConfigForm() {
  const form = $("config-form");
  const open = new Set(["model", "data", "adapter", "train"]);
  for (const section of state.schema) {
    const details = el("details", open.has(section.section) ? { open: "" } : {}, el("summary", { text: section.section }));
    const fieldset = el("fieldset", {}, details);
    for (const field of section.fields) {
      state.defaults[field.key] = field.default;
      details.append(fieldRow(field));
    }
    form.append(fieldset);
  }
  const planKeys = ["model.path", "data.train", "data.max_length", "adapter.method", "adapter.lora_rank",
                    "train.batch_size", "train.epochs", "train.max_steps", "train.gradient_checkpointing"];
  const byKey = Object.fromEntries(state.schema.flatMap((s) => s.fields).map((f) => [f.key, f]));
  for (const key of planKeys) if (byKey[key]) $("plan-keys").append(fieldRow(byKey[key]));
  for (const [key, value] of Object.entries(state.defaults)) state.values[key] = value;
  syncInputs();
}

function syncInputs() {
  document.querySelectorAll("[data-key]").forEach((input) => {
    setInput(input, state.values[input.dataset.key]);
    const changed = JSON.stringify(state.values[input.dataset.key]) !== JSON.stringify(state.defaults[input.dataset.key]);
    input.parentElement.classList.toggle("changed", changed);
  });
}

function setValue(key, value, source) {
  state.values[key] = value;
  document.querySelectorAll(`[data-key="${key}"]`).forEach((input) => { if (input !== source) setInput(input, value); });
  syncInputs();
  configChanged();
}

function setValues(values) {
  for (const [key, value] of Object.entries(values)) state.values[key] = value;
  syncInputs();
  configChanged();
}

async function configChanged() {
  await guarded("config-error", async () => { $("yaml").value = (await api("/api/config", { values: state.values })).yaml; });
  schedulePlan();
}

$("apply-yaml").addEventListener("click", () => guarded("config-error", async () => {
  const values = (await api("/api/config/parse", { yaml: $("yaml").value })).values;
  for (const key of Object.keys(state.values)) state.values[key] = state.defaults[key];
  setValues(values);
}));

// ---- data tab ---------------------------------------------------------------------------
async function loadDemo(planted) {
  const files = await guarded("data-error", () => api("/api/data/demo", { planted }));
  if (!files) return;
  state.demo = files;
  $("data-train").value = files.train;
  $("data-eval").value = files.eval;
  await checkData();
}
$("demo-planted").addEventListener("click", () => loadDemo(true));
$("demo-clean").addEventListener("click", () => loadDemo(false));

async function upload(file) {
  const result = await guarded("data-error", async () => {
    const response = await fetch(`/api/data/upload?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error);
    return data;
  });
  if (result) { $("data-train").value = result.path; await checkData(); }
}
$("upload").addEventListener("change", (e) => e.target.files[0] && upload(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]); });

function dataArgs() {
  return { train: $("data-train").value.trim(), eval: $("data-eval").value.trim() || null,
           max_length: Number($("data-max-length").value) || 512, overlength: $("data-overlength").value,
           model: state.values["model.path"] === "embedded" ? null : state.values["model.path"] };
}

async function checkData() {
  $("check").disabled = true;
  show("data-summary", "checking ...");
  const view = await guarded("data-error", () => api("/api/data/check", dataArgs()));
  $("check").disabled = false;
  if (!view) { show("data-summary", ""); return; }
  show("data-summary", view.summary);
  $("fix-out").value = view.fixed_path;
  show("findings-count", `${view.findings.length} finding(s), ${view.errors} error(s)`);
  renderFindings(view.findings);
  renderHistogram(view.stats.train && view.stats.train.lengths, dataArgs().max_length);
  renderTruncation(view.truncation);
}
$("check").addEventListener("click", checkData);

function renderFindings(findings) {
  const box = $("findings");
  box.replaceChildren();
  if (!findings.length) { box.append(el("p", { class: "ok", text: "No findings: ready to train." })); return; }
  const rows = findings.map((f) => {
    const shown = el("details", {}, el("summary", { text: `${f.rows.length} row(s): ${f.where}` }),
      ...f.shown.map((r) => el("span", { class: "rowtext", text: `line ${r.line}: ${r.text}` })));
    if (f.rows.length > f.shown.length) shown.append(el("span", { class: "muted", text: `… and ${f.rows.length - f.shown.length} more` }));
    return [el("span", { class: `sev-${f.severity}`, text: f.severity }), f.kind, f.message, shown];
  });
  box.append(table(["severity", "kind", "message", "offending rows"], rows));
  box.querySelector("table").id = "findings-table";
}

function renderHistogram(lengths, cut) {
  const box = $("histogram");
  box.replaceChildren();
  if (!lengths || !lengths.histogram) { box.append(el("p", { class: "muted", text: "no length statistics" })); return; }
  const { edges, counts } = lengths.histogram;
  const W = 460, H = 170, pad = 30, top = Math.max(...counts, 1);
  const lo = edges[0], hi = Math.max(edges[edges.length - 1], cut > edges[edges.length - 1] * 1.5 ? edges[edges.length - 1] : cut);
  const x = (v) => pad + (W - pad - 10) * (v - lo) / Math.max(hi - lo, 1);
  let svg = `<svg id="histogram-svg" width="${W}" height="${H + 24}" xmlns="http://www.w3.org/2000/svg">`;
  counts.forEach((c, i) => {
    const h = (H - 10) * c / top;
    svg += `<rect x="${x(edges[i]) + 1}" y="${H - h}" width="${Math.max(x(edges[i + 1]) - x(edges[i]) - 2, 1)}" height="${h}" fill="#6f93d8"><title>${edges[i]}–${edges[i + 1]}: ${c}</title></rect>`;
  });
  svg += `<line x1="${pad}" y1="${H}" x2="${W - 10}" y2="${H}" stroke="#555"/>`;
  svg += `<text x="${pad}" y="${H + 14}" font-size="11">${lo}</text><text x="${W - 10}" y="${H + 14}" font-size="11" text-anchor="end">${edges[edges.length - 1]}</text>`;
  if (cut <= hi) svg += `<line x1="${x(cut)}" y1="0" x2="${x(cut)}" y2="${H}" stroke="#b3261e" stroke-dasharray="4 3"/><text x="${x(cut) - 4}" y="12" font-size="11" fill="#b3261e" text-anchor="end">max_length ${cut}</text>`;
  svg += `<text x="${W / 2}" y="${H + 22}" font-size="11" text-anchor="middle">${lengths.unit} per example (p50 ${lengths.p50}, p99 ${lengths.p99}, max ${lengths.max})</text></svg>`;
  box.innerHTML = svg;
}

function renderTruncation(rows) {
  const box = $("truncation");
  box.replaceChildren();
  if (!rows.length) { box.append(el("p", { class: "muted", text: "needs the model's tokenizer" })); return; }
  const pct = (v) => `${(100 * v).toFixed(1)}%`;
  box.append(table(["max_length", "drop: rows dropped", "drop: trained tokens lost", "truncate: rows cut", "truncate: trained tokens lost"],
    rows.map((r) => [`${r.max_length}${r.chosen ? " (chosen)" : ""}`, r.drop.dropped, `${num(r.drop.lost_trained_tokens)} (${pct(r.drop.lost_share)})`,
                     r.truncate.truncated, `${num(r.truncate.lost_trained_tokens)} (${pct(r.truncate.lost_share)})`])));
}

$("fix").addEventListener("click", () => guarded("data-error", async () => {
  const r = await api("/api/data/fix", { ...dataArgs(), out: $("fix-out").value.trim() });
  show("fix-result", `kept ${r.kept} rows → ${r.fixed}; ${r.rejected_rows} rejected, each with its reason → ${r.rejected} (${r.rows_read} rows read)`);
  $("data-train").value = r.fixed;
}));

$("use-data").addEventListener("click", () => {
  const values = { "data.train": $("data-train").value.trim() || null, "data.eval": $("data-eval").value.trim() || null,
                   "data.max_length": Number($("data-max-length").value) || 512, "data.overlength": $("data-overlength").value };
  if (state.demo && [state.demo.eval].includes(values["data.eval"])) values["eval.schema"] = state.demo.schema;
  setValues(values);
  const count = document.querySelector('[data-answer="n_examples"]');
  if (count && values["data.train"]) count.value = values["data.train"];  // the advisor counts its usable rows
  openTab("train");
});

// ---- decide and plan --------------------------------------------------------------------
function buildAdviseForm(answers) {
  const form = $("advise-form");
  for (const a of answers) {
    if (a.name === "dataset") continue;
    let input;
    if (a.kind === "bool") { input = el("input", { type: "checkbox" }); input.checked = a.default; }
    else if (a.kind === "choice") { input = el("select", {}, ...a.choices.map((c) => el("option", { value: c, text: c }))); input.value = a.default; }
    else { input = el("input", { type: a.name === "n_examples" ? "text" : "number", step: "any" }); input.value = a.default; }
    input.dataset.answer = a.name;
    input.dataset.kind = a.kind;
    form.append(el("label", {}, input, " ", a.question));
  }
}

function answers() {
  const out = {};
  document.querySelectorAll("[data-answer]").forEach((input) => {
    const name = input.dataset.answer;
    if (input.type === "checkbox") out[name] = input.checked;
    else if (name === "n_examples") out[name] = /^\d+$/.test(input.value.trim()) ? Number(input.value) : input.value.trim();
    else if (input.dataset.kind === "float" || input.dataset.kind === "int") out[name] = Number(input.value);
    else out[name] = input.value;
  });
  return out;
}

$("advise").addEventListener("click", () => guarded("advise-error", async () => {
  const a = await api("/api/advise", { answers: answers() });
  const box = $("advice");
  box.replaceChildren(el("h3", { id: "recommendation", text: `Recommendation: ${a.recommendation}${a.method ? ` (${a.method})` : ""}` }),
    el("ul", {}, ...a.reasons.map((r) => el("li", { text: r }))),
    ...a.warnings.map((w) => el("p", { class: "bad", text: `warning: ${w}` })),
    el("h3", { text: "Next steps" }), el("ol", {}, ...a.next_steps.map((s) => el("li", { text: s }))));
  if (a.config_yaml) {
    const use = el("button", { text: "Use this starting config" });
    use.addEventListener("click", () => { $("yaml").value = a.config_yaml; $("apply-yaml").click(); openTab("train"); });
    box.append(el("pre", { class: "summary", text: a.config_yaml }), use);
  }
}));

function schedulePlan() {
  clearTimeout(state.planTimer);
  state.planTimer = setTimeout(runPlan, 500);
}

async function runPlan() {
  if (!$("tab-plan").classList.contains("active")) return;  // planned when the tab is opened
  if (state.planBusy) { state.planAgain = true; return; }
  state.planBusy = true;
  show("plan-status", "planning ...");
  const plan = await guarded("plan-error", () => api("/api/plan", { values: state.values, calibrate: $("plan-calibrate").checked }));
  state.planBusy = false;
  show("plan-status", "");
  if (plan) renderPlan(plan);
  if (state.planAgain) { state.planAgain = false; runPlan(); }
}
$("plan-calibrate").addEventListener("change", schedulePlan);

const MEMORY_PARTS = [["weights", "#4c72b0"], ["adapter", "#55a868"], ["gradients", "#c44e52"], ["optimizer_state", "#8172b2"],
                      ["activations", "#ccb974"], ["logits", "#64b5cd"], ["temporaries", "#999"]];

function renderPlan(plan) {
  const m = plan.memory_gib, total = m.peak || MEMORY_PARTS.reduce((s, [k]) => s + (m[k] || 0), 0);
  const mib = (g) => g >= 1 ? `${g.toFixed(2)} GiB` : `${(g * 1024).toFixed(0)} MiB`;
  const bar = el("div", { class: "bar" }), legend = el("div", { class: "legend" });
  for (const [key, colour] of MEMORY_PARTS) {
    if (!m[key]) continue;
    const part = el("span", { title: `${key} ${mib(m[key])}` }); part.style.width = `${100 * m[key] / total}%`; part.style.background = colour;
    bar.append(part);
    const swatch = el("i"); swatch.style.background = colour;
    legend.append(el("span", {}, swatch, `${key.replace("_state", "")} ${mib(m[key])}`));
  }
  const duration = (s) => s == null || Number.isNaN(s) ? "?" : s < 120 ? `${s.toFixed(1)} s` : s < 7200 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`;
  $("plan").replaceChildren(
    el("p", { id: "plan-headline", text: `${plan.model} · ${plan.method} · ${num(plan.trainable_params)} trainable of ${num(plan.total_params)} parameters · ${num(plan.steps)} steps` }),
    el("h3", { text: `Peak memory on ${plan.device}: ${mib(total)}` }), bar, legend,
    el("h3", { text: `This machine: ~${duration(plan.this_machine_seconds)} (${plan.time_source})` }),
    table(["where", "fits", "time", "cost (USD)"], plan.targets.map((t) => [t.name, t.fits ? "yes" : `no (${t.memory_gib.toFixed(0)} GiB)`, t.fits ? duration(t.hours * 3600) : "–", t.fits ? `$${t.usd.toFixed(2)}` : "–"])),
    el("h3", { text: `Hosted alternative (prices ${plan.prices_as_of})` }),
    table(["service", "cost (USD)"], plan.hosted.map((h) => [h.name, `$${h.usd.toFixed(2)}`])),
    el("details", {}, el("summary", { text: "the plan as `hone plan` prints it" }), el("pre", { class: "summary", text: plan.text })));
}

