// The wbc page: one request per file (so one bad file gets its own message), a running tally, CSV export.
"use strict";
const state = { classes: [], rows: [], near: null, expected: 0.05, lab: null };
const LAB_MIN_CELLS = 20, LAB_WARN_SHARE = 0.35, BLAST_RUN_MIN = 5, BLAST_RUN_SHARE = 0.05;  // as wbc.infer.predictor.LabCheck
const $ = (id) => document.getElementById(id);

async function loadModel() {
  try {
    const r = await fetch("/api/v1/model");
    const m = await r.json();
    state.classes = m.classes;
    state.near = m.near_distance;
    state.expected = ((m.metrics || {}).val || {}).openset ? m.metrics.val.openset.val_near : 0.05;
    const pct = (r) => `${(100 * r.accuracy).toFixed(1)}%`;
    const met = m.metrics || {};
    const kt = met.kaggle_test || met.test;
    // the figures the model file carries were measured when it was trained; README has today's (make demo)
    const acc = (kt ? `; when trained: Kaggle official TEST ${pct(kt)}` : "") + (met.pbc_test ? `, PBC test ${pct(met.pbc_test)}` : "")
      + (m.adapted ? `; adapted to ${m.adapted}` : "");
    $("model-info").textContent = `${m.backbone} (${m.engine}), classes: ${m.classes.join(", ")}${acc}`;
    if (!m.explain) { $("explain").checked = false; $("explain").disabled = true; }
  } catch (e) {
    $("model-info").textContent = "cannot reach the wbc server";
  }
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function card(file) {
  const c = el("div", { class: "card", "data-testid": "result" });
  c.append(el("div", { class: "name", text: file.name }), el("div", { class: "label", text: "classifying…" }));
  $("results").prepend(c);
  return c;
}

function showResult(c, file, r) {
  c.innerHTML = "";
  const img = el("img", { alt: file.name, src: URL.createObjectURL(file) });
  const original = img.src;
  c.append(img, el("div", { class: "name", text: file.name }));
  const empty = r.white_cell === false;  // "no white cell found": its flag, when it may have missed one, shown as a cell's
  if (empty) c.classList.add("empty");
  const alarm = !empty && ALARM.includes(r.class);
  if (alarm) c.classList.add("alarm");
  const text = empty ? "no white cell found" : r.class === "UNIDENTIFIED" ? "UNIDENTIFIED: unlike every known cell type" : `${r.class} ${(100 * r.probability).toFixed(1)}%`;
  const label = el("div", { class: "label", "data-testid": "label", text });
  if (r.review) label.append(el("span", { class: "review", "data-testid": "review", text: "review", title: r.review_reason || "" }));
  c.append(label);
  if (empty) c.append(el("div", { class: "note", text: r.note || "" }));
  if (r.review_reason) c.append(el("div", { class: "note", "data-testid": "review-reason", text: `review: ${r.review_reason}` }));
  if (empty) return;
  if (r.cells_seen > 1) c.append(el("div", { class: "note", "data-testid": "cells-seen",
    text: `${r.cells_seen} white cells in this image: this is the answer for the one nearest its middle (drop it under Whole smear fields for each)` }));
  if (r.px_per_um) c.append(el("div", { class: "note", text: `scale ${r.px_per_um.toFixed(1)} px/um (${r.scale})` }));
  for (const k of state.classes) {
    const p = r.probabilities[k];
    const fill = el("div", { class: "fill" });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    c.append(el("div", { class: "bar" }, el("span", { text: k }), el("div", { class: "track" }, fill), el("span", { text: `${(100 * p).toFixed(1)}%` })));
  }
  if (r.heatmap_png) {
    const box = el("input", { type: "checkbox", "data-testid": "heatmap-toggle" });
    box.addEventListener("change", () => { img.src = box.checked ? r.heatmap_png : original; });
    c.append(el("label", { class: "toggle" }, box, " heat-map (what the model looked at, on the framed input)"));
  }
}

function showError(c, file, message) {
  c.className = "card error";
  c.innerHTML = "";
  c.append(el("div", { class: "name", text: file.name }), el("div", { class: "label", "data-testid": "error", text: message }));
}

// One request for `files`: on success each of `cards` shows its answer and null comes back, else why it failed.
async function post(files, cards) {
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  try {
    const r = await fetch(`/api/v1/classify?explain=${$("explain").checked}`, { method: "POST", body: form });
    const body = await r.json().catch(() => ({ detail: `server answered ${r.status}` }));
    if (!r.ok) return body.detail || `server answered ${r.status}`;
    body.results.forEach((res, i) => { state.rows.push(res); showResult(cards[i], files[i], res); });
    renderTally();
    return null;
  } catch (e) {
    return `request failed: ${e.message}`;
  }
}

async function classify(file, c = card(file)) {
  const failed = await post([file], [c]);
  if (failed) showError(c, file, failed);
}

function renderTally() {
  const n = state.rows.length;
  $("summary").hidden = n === 0;
  $("summary-count").textContent = `(${n} cell${n === 1 ? "" : "s"})`;
  const body = $("tally").querySelector("tbody");
  body.innerHTML = "";
  for (const k of state.classes) {
    const m = state.rows.filter((r) => r.class === k).length;
    body.append(el("tr", { "data-class": k }, el("td", { text: k }), el("td", { text: String(m) }), el("td", { text: n ? (100 * m / n).toFixed(1) : "0" })));
  }
  const none = state.rows.filter((r) => r.white_cell === false).length;
  if (none) body.append(el("tr", { "data-class": "NO_WHITE_CELL" }, el("td", { text: "no white cell found" }), el("td", { text: String(none) }), el("td", { text: (100 * none / n).toFixed(1) })));
  const unid = state.rows.filter((r) => r.class === "UNIDENTIFIED").length;
  if (unid) body.prepend(el("tr", { "data-class": "UNIDENTIFIED", class: "alarm" }, el("td", { text: "UNIDENTIFIED" }), el("td", { text: String(unid) }), el("td", { text: (100 * unid / n).toFixed(1) })));
  renderLabWarning();
  const review = state.rows.filter(flagged).length;
  $("review-count").textContent = state.lab ? `all ${review} cells flagged for review: ${state.lab}` : `${review} flagged for review (each card says why)`;
}

// A cell is flagged by its own answer, or by its run: cells that as a whole lie far from every training source, or
// hold blasts, leave no answer unflagged (wbc.infer.predictor.flag_run).
const flagged = (r) => r.review || (state.lab !== null && r.white_cell !== false);

function renderLabWarning() {
  // said once: a folder out of the model's world (the share of cells unlike every training source), or one with blasts
  const measured = state.rows.filter((r) => r.distance != null && r.white_cell !== false && state.near);
  const unlike = measured.filter((r) => r.distance > state.near).length;
  const share = measured.length ? unlike / measured.length : 0;
  const far = measured.length >= LAB_MIN_CELLS && share > Math.max(LAB_WARN_SHARE, 3 * state.expected);
  const cells = state.rows.filter((r) => r.white_cell !== false), blasts = cells.filter((r) => r.class === "BLAST").length;
  const withBlasts = cells.length >= LAB_MIN_CELLS && blasts >= BLAST_RUN_MIN && blasts >= BLAST_RUN_SHARE * cells.length;
  const reasons = [far ? `lab unlike the training sources (${(100 * share).toFixed(0)}% of ${measured.length} cells of the run unlike every training source)` : "",
    withBlasts ? `blasts in this run (${blasts} of ${cells.length} cells of the run answered BLAST)` : ""].filter(Boolean);
  state.lab = reasons.length ? reasons.join("; ") : null;
  $("lab-warning").hidden = !state.lab;
  $("lab-warning").textContent = [
    far ? `These images lie far from the cells the model was trained on: ${(100 * share).toFixed(0)}% of ${measured.length} cells are unlike every training source (${(100 * state.expected).toFixed(0)}% on its own validation cells), so its answers here are unreliable and every one is flagged for review. Adapt it to this microscope: wbc adapt IMAGES --labelled DIR (ten labelled cells a class).` : "",
    withBlasts ? `Blasts in this run: ${blasts} of ${cells.length} cells (${(100 * blasts / cells.length).toFixed(1)}%) were answered BLAST, so every cell is flagged for review (blasts the model misses pass as other types).` : ""].filter(Boolean).join(" ");
}

function reasonOf(r) {
  const own = r.review_reason || "";
  return state.lab && r.white_cell !== false && !/lab unlike|blasts in this run/.test(own) ? [own, state.lab].filter(Boolean).join("; ") : own;
}

function csv() {
  const head = ["filename", "class", "probability", ...state.classes.map((k) => `p_${k}`), "review", "white_cell", "review_reason", "cells_seen"];
  // quoted, and a leading = + - @ tab or CR made text (OWASP's advice on CSV injection): a file named "=HYPERLINK(...).png"
  // opens in a spreadsheet as its name, not as a formula
  const quote = (s) => `"${String(s).replace(/^[=+\-@\t\r]/, "'$&").replace(/"/g, '""')}"`;
  const lines = state.rows.map((r) => [quote(r.filename), r.class, r.probability.toFixed(4), ...state.classes.map((k) => r.probabilities[k].toFixed(4)), flagged(r) ? 1 : 0, r.white_cell === false ? 0 : 1, quote(reasonOf(r)), r.cells_seen ?? ""].join(","));
  return [head.join(","), ...lines].join("\n") + "\n";
}

// Ten or more files go as runs, as `wbc predict` takes a folder: the server measures the run's scale once and each
// cell takes it (see README, "What an image should look like"). Near-equal requests of at most RUN_MAX files, each
// of RUN_MIN or more; a request one bad file spoils is sent again file by file, so each card says its own answer.
const RUN_MIN = 10, RUN_MAX = 25;

async function classifyRun(files) {
  const cards = files.map((f) => card(f));
  if (await post(files, cards)) files.forEach((f, i) => classify(f, cards[i]));
}

function handle(list) {
  const files = [...list];
  if (files.length < RUN_MIN) { for (const f of files) classify(f); return; }
  const k = Math.ceil(files.length / RUN_MAX);
  for (let i = 0; i < k; i++) classifyRun(files.slice(Math.floor(i * files.length / k), Math.floor((i + 1) * files.length / k)));
}

$("files").addEventListener("change", (e) => { handle(e.target.files); e.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); handle(e.dataTransfer.files); });
$("download").addEventListener("click", () => {
  const a = el("a", { href: URL.createObjectURL(new Blob([csv()], { type: "text/csv" })), download: "wbc-results.csv" });
  document.body.append(a); a.click(); a.remove();
});
$("clear").addEventListener("click", () => { state.rows = []; $("results").innerHTML = ""; renderTally(); });
// ---- whole smear fields: one request per field, totals and differential over all fields ----
const smear = { fields: [] };

async function countField(file) {
  const c = el("div", { class: "card", "data-testid": "smear-result" }, el("div", { class: "name", text: file.name }), el("div", { class: "label", text: "counting…" }));
  $("smear-results").prepend(c);
  const form = new FormData();
  form.append("files", file, file.name);
  try {
    const px = $("px-per-um").value;
    const r = await fetch("/api/v1/count" + (px ? `?px_per_um=${encodeURIComponent(px)}` : ""), { method: "POST", body: form });
    const body = await r.json().catch(() => ({ detail: `server answered ${r.status}` }));
    if (!r.ok) { showError(c, file, body.detail || `server answered ${r.status}`); return; }
    const f = body.fields[0];
    smear.fields.push(f);
    c.innerHTML = "";
    const n = f.counts;
    c.append(el("img", { alt: file.name, src: f.annotated_png }), el("div", { class: "name", text: file.name }),
      el("div", { class: "label", "data-testid": "smear-counts", text: `RBC ${n.RBC} · WBC ${n.WBC} · platelets ${n.Platelets}` }),
      el("div", { class: "note", "data-testid": "smear-scale", text: `scale ${f.px_per_um.toFixed(1)} px/um (${f.scale})` }),
      ...(f.warnings || []).map((w) => el("div", { class: "alerts", "data-testid": "smear-warning", text: w })),
      el("div", { class: "name", text: f.wbc.map((w) => `${w.class} ${(100 * w.probability).toFixed(0)}%${w.review ? " (review)" : ""}`).join(", ") || (f.cells.length ? "no WBC in this field" : "no cells found: check the magnification") }));
    renderSmear();
  } catch (e) {
    showError(c, file, `request failed: ${e.message}`);
  }
}

function wilson(k, n) {
  if (!n) return null;
  const z = 1.959964, p = k / n, d = 1 + z * z / n;
  const centre = (p + z * z / (2 * n)) / d, half = (z * Math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / d;
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

const ALARM = ["BLAST", "UNIDENTIFIED"];  // cells a differential exists to catch: always first, never missed

function renderSmear() {
  $("smear-summary").hidden = smear.fields.length === 0;
  const tot = { RBC: 0, WBC: 0, Platelets: 0 };
  const labels = [];
  for (const f of smear.fields) { for (const k in tot) tot[k] += f.counts[k]; for (const w of f.wbc) labels.push(w.class); }
  $("smear-totals").textContent = `${smear.fields.length} field(s): RBC ${tot.RBC}, WBC ${tot.WBC}, platelets ${tot.Platelets}`;
  const body = $("smear-diff").querySelector("tbody");
  body.innerHTML = "";
  const clinical = ["NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL", "BASOPHIL"];
  const first = ALARM.filter((k) => k === "UNIDENTIFIED" || state.classes.includes(k));
  const order = [...first, ...clinical, ...state.classes.filter((k) => !clinical.includes(k) && !first.includes(k))];  // the model's other classes after
  const alerts = first.filter((k) => labels.includes(k)).map((k) => {
    const m = labels.filter((x) => x === k).length;
    return `${k === "BLAST" ? "blasts" : "unidentified cells (review them)"}: ${m} of ${labels.length} white cells (${(100 * m / labels.length).toFixed(1)}%)`;
  });
  $("smear-alerts").textContent = alerts.join("; ");
  $("smear-alerts").hidden = alerts.length === 0;
  for (const k of order) {
    if (!state.classes.includes(k) && k !== "UNIDENTIFIED") { body.append(el("tr", {}, el("td", { text: k }), el("td", { text: "-" }), el("td", { text: "-" }), el("td", { text: "not a model class" }))); continue; }
    const m = labels.filter((x) => x === k).length, n = labels.length, ci = wilson(m, n);
    body.append(el("tr", { "data-class": k }, el("td", { text: k }), el("td", { text: String(m) }), el("td", { text: n ? (100 * m / n).toFixed(1) : "-" }),
      el("td", { text: ci ? `${(100 * ci[0]).toFixed(1)}-${(100 * ci[1]).toFixed(1)}` : "-" })));
  }
}

$("smear-files").addEventListener("change", (e) => { for (const f of e.target.files) countField(f); e.target.value = ""; });
const sdrop = $("smear-drop");
sdrop.addEventListener("dragover", (e) => { e.preventDefault(); sdrop.classList.add("over"); });
sdrop.addEventListener("dragleave", () => sdrop.classList.remove("over"));
sdrop.addEventListener("drop", (e) => { e.preventDefault(); sdrop.classList.remove("over"); for (const f of e.dataTransfer.files) countField(f); });
loadModel();
