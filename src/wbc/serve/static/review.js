// The review station's page: log in, pick a case, review its cells by keyboard (or mouse), sign, export.
"use strict";
const $ = (id) => document.getElementById(id);
const API = "/api/v1/review";
const KEYS = "1234567890qwertyiop".split("");  // 'u' is undo
const ORDER = ["UNIDENTIFIED", "BLAST", "NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL", "BASOPHIL", "IG",
  "ERYTHROBLAST", "PLATELET", "SMUDGE", "ARTEFACT", "NO_WHITE_CELL"];
const ALARM = new Set(["UNIDENTIFIED", "BLAST"]);
const st = { csrf: null, user: null, caseId: null, data: null, selected: new Set(), cursor: null, hover: null, flat: [] };

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  kids.forEach((k) => e.append(k));
  return e;
}

async function call(path, method = "GET", body = null) {
  const opts = { method, headers: {} };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = st.csrf || "";
  if (body) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(API + path, opts);
  const out = await r.json().catch(() => ({}));
  if (r.status === 401) { showLogin(out.detail); throw new Error(out.detail || "log in first"); }
  if (!r.ok) throw Object.assign(new Error(out.detail || `server answered ${r.status}`), { status: r.status });
  return out;
}

function show(id) { for (const s of ["login", "cases-view", "case-view"]) $(s).hidden = s !== id; }
function showLogin(why = "") {
  st.user = null; st.csrf = null; st.caseId = null; st.data = null;  // no patient's cells left on the page
  if ($("zoom").open) $("zoom").close();
  for (const t of ["galleries", "case-title", "blockers"]) $(t).textContent = "";
  for (const t of ["cases", "diff"]) $(t).querySelector("tbody").innerHTML = "";
  $("zoom-img").removeAttribute("src"); $("sign-password").value = "";
  show("login"); $("who").textContent = ""; $("logout").hidden = true;
  $("login-error").textContent = why; $("login-name").focus();
}
function loggedIn(who) {
  st.user = who.user; st.csrf = who.csrf; st.role = who.role; st.idleMinutes = who.idle_minutes;
  $("who").textContent = `${who.user} (${who.role})`; $("logout").hidden = false;
}

async function logOut(why = "") {
  await fetch(API + "/logout", { method: "POST", headers: { "X-CSRF-Token": st.csrf || "" } }).catch(() => {});
  showLogin(why);
}
$("logout").addEventListener("click", () => logOut());

// A bench left logged in logs itself out (the server ends a session idle as long too): no patient's cells stay on
// an unattended screen, and nobody acts under the name of whoever walked away. The tabs of one browser share the
// session, so they share the last input too: a tab left open beside the one in use does not log the user out.
const LAST_INPUT = "wbc-review-last-input";
let lastInput = Date.now(), lastShared = 0;
function touched() {
  lastInput = Date.now();
  if (lastInput - lastShared > 5000) { lastShared = lastInput; try { localStorage.setItem(LAST_INPUT, String(lastInput)); } catch (e) { /* storage off */ } }
}
function lastActivity() {
  let shared = 0;
  try { shared = Number(localStorage.getItem(LAST_INPUT)) || 0; } catch (e) { /* storage off */ }
  return Math.max(lastInput, shared);
}
for (const ev of ["keydown", "pointerdown", "wheel"]) document.addEventListener(ev, touched, true);
setInterval(() => {
  if (st.user && st.idleMinutes && Date.now() - lastActivity() >= st.idleMinutes * 60000) {
    logOut(`logged out after ${st.idleMinutes} minutes without activity: log in again`);
  }
}, 15000);

async function start() {
  try {
    loggedIn(await call("/me"));
    await listCases();
  } catch (e) { showLogin(); }
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await fetch(API + "/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: $("login-name").value, password: $("login-password").value }) });
  const out = await r.json().catch(() => ({}));
  if (!r.ok) { $("login-error").textContent = out.detail || "login failed"; return; }
  $("login-password").value = ""; $("login-error").textContent = "";
  touched();
  loggedIn(out);
  await listCases();
});

async function listCases() {
  show("cases-view");
  const rows = await call("/cases");
  const body = $("cases").querySelector("tbody");
  body.innerHTML = "";
  for (const c of rows) {
    const row = el("tr", { "data-id": c.id, tabindex: "0", onclick: () => openCase(c.id) },
      ...[c.id, c.reference, c.version, c.specimen, c.status, c.cells].map((v) => el("td", { text: String(v) })));
    row.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); openCase(c.id); } });
    body.append(row);
  }
  const first = body.querySelector("tr"); // keyboard users start on the newest case: Enter opens it, Tab moves on
  if (first && !$("new-case").contains(document.activeElement)) first.focus(); // not while a new case is being typed: its Enter would open the newest
  await showAgreement();
}

const pct = (v) => (v === null || v === undefined ? "-" : `${(100 * v).toFixed(1)}%`);

async function showAgreement() {
  const a = await call("/agreement");
  $("agreement-summary").textContent = a.cells ? `${a.cells} cells in signed cases, ${a.kept} pre-classifications kept (${pct(a.accepted_share)})` : "no signed case yet";
  const body = $("agreement").querySelector("tbody");
  body.innerHTML = "";
  for (const r of a.per_class) {
    body.append(el("tr", { "data-class": r.class }, ...[r.class, r.final, r.called, r.agreed, pct(r.sensitivity), pct(r.predictive_value)]
      .map((v) => el("td", { text: String(v) }))));
  }
  $("adapt-box").hidden = st.role !== "admin";
  if (st.role === "admin") showAdapt(await call("/adapt"));
}

function showAdapt(j) {
  const r = j.result;
  $("adapt-status").textContent = j.state === "running" ? `adapting (started by ${j.by})…`
    : j.state === "failed" ? `not adapted: ${j.error}`
    : j.state === "done" ? `held-out verified cells ${pct(r.before)} before, ${pct(r.after)} after: ` +
      (r.installed ? `installed as ${r.lab_model} (restart wbc serve with --model ${r.lab_model})` : "not better, the model stays as it was")
    : "";
  $("adapt").disabled = j.state === "running";
  if (j.state === "running") setTimeout(async () => showAdapt(await call("/adapt")), 2000);
}

$("adapt").addEventListener("click", async () => {
  try { showAdapt(await call("/adapt", "POST")); } catch (e) { $("adapt-status").textContent = e.message; }
});

$("new-case").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const c = await call("/cases", "POST", { reference: $("new-ref").value, specimen: $("new-specimen").value });
  $("new-ref").value = "";
  await openCase(c.id);
});
$("back").addEventListener("click", (ev) => { ev.preventDefault(); st.caseId = null; listCases(); });

async function openCase(id) {
  st.caseId = id; st.selected.clear(); st.cursor = null;
  show("case-view");
  await refresh();
}

async function refresh() {
  st.data = await call(`/cases/${st.caseId}`);
  render();
}

function classOrder(classes) {
  return [...ORDER.filter((c) => classes.includes(c)), ...classes.filter((c) => !ORDER.includes(c))];
}

function render() {
  const d = st.data;
  $("case-title").textContent = `Case ${d.id}: ${d.reference} (${d.specimen}, version ${d.version}, ${d.status})`;
  const classes = classOrder(d.classes);
  st.keymap = Object.fromEntries(classes.map((c, i) => [KEYS[i], c]));
  $("keys").innerHTML = "";
  classes.forEach((c, i) => $("keys").append(el("span", { "data-key": KEYS[i], text: `${KEYS[i]} ${c}` })));
  const gal = $("galleries");
  gal.innerHTML = "";
  st.flat = [];
  for (const c of classes) {
    const cells = d.cells.filter((x) => x.class === c).sort((a, b) => (b.flagged - a.flagged) || (a.id - b.id));
    if (!cells.length && !ALARM.has(c) && !["NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL", "BASOPHIL"].includes(c)) continue;
    const box = el("div", { class: "cells" });
    const g = el("section", { class: "gallery" + (ALARM.has(c) ? " alarm" : ""), "data-class": c, "data-testid": `gallery-${c}` },
      el("h3", { text: `${c} (${cells.length})` }), box);
    g.addEventListener("dragover", (ev) => { ev.preventDefault(); g.classList.add("drop-target"); });
    g.addEventListener("dragleave", () => g.classList.remove("drop-target"));
    g.addEventListener("drop", (ev) => { ev.preventDefault(); g.classList.remove("drop-target"); const id = +ev.dataTransfer.getData("text/plain"); setClass(targets(id), c); });
    for (const x of cells) { box.append(cellCard(x)); st.flat.push(x.id); }
    gal.append(g);
  }
  const diff = $("diff").querySelector("tbody");
  diff.innerHTML = "";
  for (const r of d.differential) {
    diff.append(el("tr", { class: ALARM.has(r.class) ? "alarm" : "", "data-class": r.class },
      el("td", { text: r.class }), el("td", { text: String(r.count) }), el("td", { text: r.percent == null ? "-" : `${r.percent.toFixed(1)}%` })));
  }
  for (const r of d.not_white) {
    diff.append(el("tr", { "data-class": r.class }, el("td", { text: r.class }), el("td", { text: String(r.count) }),
      el("td", { text: r.per_100_white == null ? "-" : `${r.per_100_white.toFixed(1)}/100 WBC` })));
  }
  $("tally-count").textContent = `${d.white_cells} / ${d.target} white cells`;
  $("blockers").textContent = d.blockers.join("; ");
  $("export").href = `${API}/cases/${d.id}/export.csv`;
  if (st.cursor == null && st.flat.length) select(st.flat[0], false);
  else markSelection();
}

function cellCard(x) {
  const pct = Math.round(100 * (x.probabilities[x.model_class] || 0));
  const card = el("div", { class: "cell" + (x.flagged ? " flagged" : "") + (x.class !== x.model_class ? " changed" : ""), "data-id": x.id,
    "data-testid": "cell", draggable: "true", title: x.review_reason || "" },
  el("img", { src: x.image, alt: x.class, loading: "lazy" }), el("div", { class: "p", text: `${x.model_class} ${pct}%` }));
  card.addEventListener("click", (ev) => select(x.id, ev.shiftKey));
  card.addEventListener("dblclick", () => zoom(x.id));
  card.addEventListener("mouseenter", () => { st.hover = x.id; });
  card.addEventListener("mouseleave", () => { st.hover = null; });
  card.addEventListener("dragstart", (ev) => ev.dataTransfer.setData("text/plain", String(x.id)));
  return card;
}

function select(id, add) {
  if (!add) st.selected.clear();
  if (add && st.selected.has(id)) st.selected.delete(id); else st.selected.add(id);
  st.cursor = id;
  markSelection();
}

function markSelection() {
  document.querySelectorAll(".cell").forEach((c) => c.classList.toggle("selected", st.selected.has(+c.dataset.id)));
  const cur = document.querySelector(`.cell[data-id="${st.cursor}"]`);
  if (cur) cur.scrollIntoView({ block: "nearest" });
}

function targets(id) {
  if (id != null && !st.selected.has(id)) return [id];
  return st.selected.size ? [...st.selected] : (st.hover != null ? [st.hover] : []);
}

function byId(id) { return st.data.cells.find((c) => c.id === id); }

async function setClass(ids, cls) {
  if (!ids.length) return;
  const next = st.flat[st.flat.indexOf(ids[ids.length - 1]) + 1];
  try {
    await call(`/cases/${st.caseId}/reclassify`, "POST", { cells: ids.map((i) => ({ id: i, version: byId(i).version })), class: cls });
  } catch (e) { alert(e.message); }
  await refresh();
  if (next != null && st.flat.includes(next)) select(next, false);
}

async function zoom(id) {
  const x = await call(`/cases/${st.caseId}/cells/${id}/open`, "POST");
  $("zoom-img").src = x.image;
  $("zoom-heat").src = `${API}/cases/${st.caseId}/cells/${id}/heatmap`;
  const probs = Object.entries(x.probabilities).sort((a, b) => b[1] - a[1]).slice(0, 4).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}%`).join(", ");
  $("zoom-info").textContent = `${x.class} (model: ${x.model_class}; ${probs})` + (x.review_reason ? ` — review: ${x.review_reason}` : "");
  $("zoom").showModal();
  await refresh();
}
$("zoom-close").addEventListener("click", () => $("zoom").close());

document.addEventListener("keydown", async (ev) => {
  if (!st.caseId || $("case-view").hidden || ev.target.tagName === "INPUT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if ($("zoom").open) { if (ev.key === "Escape" || ev.key === "Enter") { ev.preventDefault(); $("zoom").close(); } return; }
  const i = st.flat.indexOf(st.cursor);
  if (ev.key === "ArrowRight" || ev.key === "ArrowDown") { ev.preventDefault(); if (i + 1 < st.flat.length) select(st.flat[i + 1], ev.shiftKey); }
  else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") { ev.preventDefault(); if (i > 0) select(st.flat[i - 1], ev.shiftKey); }
  else if (ev.key === "Enter" && st.cursor != null) { ev.preventDefault(); await zoom(st.cursor); }
  else if (ev.key === "n") { ev.preventDefault(); nextUnopened(); }
  else if (ev.key === "s") { ev.preventDefault(); $("sign-password").focus(); }
  else if (ev.key === "u") { ev.preventDefault(); await call(`/cases/${st.caseId}/undo`, "POST").catch((e) => alert(e.message)); await refresh(); }
  else if (st.keymap && st.keymap[ev.key.toLowerCase()]) { ev.preventDefault(); await setClass(targets(null), st.keymap[ev.key.toLowerCase()]); }
});

function nextUnopened() {
  // the next flagged cell nobody opened yet, after the cursor (wrapping): signing waits for every one of them
  const i = st.flat.indexOf(st.cursor);
  const order = [...st.flat.slice(i + 1), ...st.flat.slice(0, i + 1)];
  const id = order.find((k) => { const x = byId(k); return x.flagged && !x.opened; });
  if (id != null) select(id, false);
}

$("sign-password").addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); $("sign").click(); } });

$("sign").addEventListener("click", async () => {
  try {
    const s = await call(`/cases/${st.caseId}/sign`, "POST", { password: $("sign-password").value, second: $("sign-second").checked });
    $("sign-result").textContent = `signed by ${s.user} (${s.kind}) at ${s.at}`;
  } catch (e) { $("sign-result").textContent = e.message; }
  $("sign-password").value = "";
  await refresh();
});

const IMPORT_CHUNK = { cells: 16, fields: 2 }; // files a request: each is one transaction, the page stays live

async function importFiles(fileList) {
  // sent in chunks: progress shows, the galleries fill as it goes, a refused chunk does not undo the others
  const files = [...fileList], asFields = $("import-fields").checked;
  const chunk = asFields ? IMPORT_CHUNK.fields : IMPORT_CHUNK.cells;
  const bar = $("import-progress");
  let imported = 0, sent = 0, refused = [], failed = null, several = 0;
  bar.max = files.length; bar.value = 0; bar.hidden = false;
  for (let i = 0; i < files.length && !failed; i += chunk) {
    const form = new FormData();
    files.slice(i, i + chunk).forEach((f) => form.append("files", f, f.name));
    form.append("fields", asFields ? "true" : "false");
    $("import-status").textContent = `importing ${sent} of ${files.length} file(s)…`;
    const r = await fetch(`${API}/cases/${st.caseId}/import`, { method: "POST", body: form, headers: { "X-CSRF-Token": st.csrf } });
    const out = await r.json().catch(() => ({}));
    if (!r.ok) { failed = out.detail || `server answered ${r.status}`; break; }
    imported += out.imported; refused = refused.concat(out.refused); sent = Math.min(files.length, i + chunk);
    several += out.several_cells || 0;
    bar.value = sent; touched();  // an import the user started is activity: a long one is not cut off
    await refresh();
  }
  const said = `${sent} of ${files.length} file(s) sent, ${imported} cells imported` +
    (refused.length ? `, refused: ${refused.map((x) => `${x.file} (${x.error})`).join("; ")}` : "") +
    (several ? `; ${several} image(s) show more than one white cell: each imported as one cell, flagged (tick "whole smear fields" to count every cell)` : "");
  $("import-status").textContent = failed ? `${said}; stopped: ${failed}` : said;
  bar.hidden = true;
  await refresh();
}
$("import-files").addEventListener("change", (ev) => importFiles(ev.target.files));
$("import-folder").addEventListener("change", (ev) => importFiles([...ev.target.files].filter((f) => IMAGE_NAME.test(f.name))));

const IMAGE_NAME = /\.(jpe?g|png|tiff?|bmp|webp)$/i;

async function droppedFiles(items) {
  // a dropped folder arrives as a directory entry: walk it (every image file under it, in name order)
  const out = [];
  const walk = async (entry, inFolder) => {
    if (entry.isFile) {  // a file dropped by itself is sent whatever its name (and refused by name if it is no image)
      if (!inFolder || IMAGE_NAME.test(entry.name)) out.push(await new Promise((ok, fail) => entry.file(ok, fail)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const e of batch.sort((a, b) => a.name.localeCompare(b.name))) await walk(e, true);
      }
    }
  };
  for (const entry of [...items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean)) await walk(entry, false);
  return out;
}
$("import").addEventListener("dragover", (ev) => { ev.preventDefault(); $("import").classList.add("over"); });
$("import").addEventListener("dragleave", () => $("import").classList.remove("over"));
$("import").addEventListener("drop", async (ev) => {
  ev.preventDefault(); $("import").classList.remove("over");
  const items = ev.dataTransfer.items;
  importFiles(items && items.length && items[0].webkitGetAsEntry ? await droppedFiles(items) : ev.dataTransfer.files);
});

start();
