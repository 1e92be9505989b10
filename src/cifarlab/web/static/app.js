// The page: list the models, take many pictures (choose, drop, paste, camera, examples), send
// each to /api/predict, and show one card per picture. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
// a server started with a token wants it on every /api call; the user opens /#token=... (the
// part after # never reaches the server's logs or other sites)
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const auth = token ? { Authorization: `Bearer ${token}` } : {};
const CONCURRENT = 3;  // requests at once; the server batches them (and caps one address at 8)
let limits = null;
let examples = [];
let models = {};  // name -> the /api/models entry (with its card)
const cards = [];  // {file, el, truth, generation}
let waiting = [];
let running = 0;

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function percent(p) {
  return (100 * p).toFixed(1) + "%";
}

async function detailOf(response) {
  // FastAPI errors are {"detail": "..."} or, for validation errors, {"detail": [{msg}, ...]}
  try {
    const body = await response.json();
    const d = body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((e) => e.msg).join("; ");
  } catch (e) { /* not JSON */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

function article(word) {
  return /^[aeiou]/i.test(word) ? "an" : "a";
}

function megabytes(bytes) {
  return (bytes / 1048576).toFixed(0);
}

async function loadModels() {
  try {
    const response = await fetch("/api/models", { headers: auth });
    if (!response.ok) throw new Error(await detailOf(response));
    const body = await response.json();
    limits = body.limits;
    const select = $("model");
    select.innerHTML = "";
    models = {};
    for (const m of body.models) {
      const acc = m.accuracy == null ? "accuracy not measured" : (100 * m.accuracy).toFixed(2) + "% test accuracy";
      const option = new Option(m.label || `${m.name} (${m.model}, ${acc})`, m.name);
      option.dataset.info = `${m.source} model, ${m.parameters == null ? "?" : m.parameters.toLocaleString()} parameters. ${m.description || ""}`;
      select.add(option);
      models[m.name] = m;
    }
    if (!body.models.length) showError("No models: the shipped model is missing and no run has finished.");
    showModelInfo();
    $("limits").textContent = `JPEG, PNG, WebP, GIF, BMP or TIFF pictures, up to ${megabytes(limits.max_upload_bytes)} MB and ${(limits.max_pixels / 1e6).toFixed(0)} megapixels each.`;
    loadExamples();
  } catch (e) {
    showError("Could not list the models: " + e.message);
  }
}

async function loadExamples() {
  try {
    const response = await fetch("/api/examples", { headers: auth });
    if (!response.ok) return;
    examples = (await response.json()).examples;
  } catch (e) { examples = []; }
  $("example").hidden = examples.length === 0;
}

function showModelInfo() {
  const option = $("model").selectedOptions[0];
  $("model-info").textContent = option ? option.dataset.info : "";
  showModelCard(option ? models[option.value] : null);
}

// ------------------------------------------------------------------ the model card
function withCode(el, text) {
  // the card's sentences mark commands as `code`
  text.split("`").forEach((part, i) => {
    if (!part) return;
    if (i % 2) {
      const code = document.createElement("code");
      code.textContent = part;
      el.appendChild(code);
    } else {
      el.appendChild(document.createTextNode(part));
    }
  });
  return el;
}

function showModelCard(m) {
  const box = $("model-card");
  box.innerHTML = "";
  $("model-details").hidden = !m;
  if (!m) return;
  const sections = m.card_sections || [{ title: null, text: ["No model card: the server sent none."] }];
  for (const sec of sections) {
    if (sec.title) {
      const h = document.createElement("h3");
      h.textContent = sec.title;
      box.appendChild(h);
    }
    for (const para of sec.text || []) box.appendChild(withCode(document.createElement("p"), para));
    if (sec.rows && sec.rows.length) {
      const table = document.createElement("table");
      const head = table.createTHead().insertRow();
      for (const name of sec.header) {
        const th = document.createElement("th");
        th.textContent = name;
        head.appendChild(th);
      }
      const tbody = table.createTBody();
      for (const row of sec.rows) {
        const tr = tbody.insertRow();
        row.forEach((cell) => { tr.insertCell().textContent = cell; });
      }
      box.appendChild(table);
    }
  }
}

// ------------------------------------------------------------------ cards
function addPictures(files, truths = []) {
  files = Array.from(files);
  if (!files.length) return;
  clearError();
  files.forEach((file, i) => addCard(file, truths[i]));
  updateSummary();
  pump();
}

function addCard(file, truth) {
  const el = $("card-template").content.firstElementChild.cloneNode(true);
  const card = { file, el, truth, generation: 0 };
  el.querySelector(".explain").addEventListener("click", () => toggleHeat(card));
  const thumb = el.querySelector(".thumb");
  thumb.src = URL.createObjectURL(file);
  thumb.alt = file.name;
  thumb.onload = () => { if (thumb.naturalWidth <= 64) el.classList.add("small"); };
  thumb.onerror = () => { thumb.removeAttribute("src"); };  // e.g. a TIFF the browser cannot draw
  el.querySelector(".filename").textContent = file.name;
  el.querySelector(".filename").title = file.name;
  if (truth) {
    el.querySelector(".truth").hidden = false;
    el.querySelector(".truth").textContent = `test picture of ${article(truth)} ${truth}`;
  }
  $("results").appendChild(el);
  $("results-panel").hidden = false;
  cards.push(card);
  queue(card);
}

function queue(card) {
  card.generation += 1;
  resetHeat(card);
  setPending(card, "waiting");
  if (!waiting.includes(card)) waiting.push(card);
}

function pump() {
  while (running < CONCURRENT && waiting.length) {
    const card = waiting.shift();
    running += 1;
    classify(card).finally(() => { running -= 1; updateSummary(); pump(); });
  }
}

function setPending(card, text) {
  const el = card.el;
  el.classList.add("pending");
  el.querySelector(".label").textContent = text;
  el.querySelector(".confidence").textContent = "";
  el.querySelector(".card-error").hidden = true;
}

function setError(card, text) {
  const el = card.el;
  el.classList.remove("pending");
  el.classList.add("failed");
  el.querySelector(".label").textContent = "not classified";
  el.querySelector(".confidence").textContent = "";
  el.querySelector(".card-error").textContent = text;
  el.querySelector(".card-error").hidden = false;
  el.querySelector(".more").hidden = true;
}

async function post(file, fields) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", $("model").value);
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  const response = await fetch("/api/predict", { method: "POST", body: form, headers: auth });
  if (!response.ok) throw new Error(await detailOf(response));
  return response.json();
}

async function classify(card) {
  const generation = card.generation;
  const file = card.file;
  if (limits && file.size > limits.max_upload_bytes) {
    setError(card, `${file.name} is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${megabytes(limits.max_upload_bytes)} MB.`);
    return;
  }
  setPending(card, "classifying…");
  const start = performance.now();
  try {
    const body = await post(file, { top_k: "3", view: "true" });
    if (generation !== card.generation) return;  // the model changed meanwhile: a newer answer comes
    drawResult(card, body, performance.now() - start);
  } catch (e) {
    if (generation === card.generation) setError(card, e.message);
  }
}

function drawResult(card, body, elapsed) {
  const r = body.results[0];
  if (r.error) { setError(card, r.error); return; }
  const el = card.el;
  el.classList.remove("pending", "failed");
  el.querySelector(".label").textContent = r.label;
  el.querySelector(".confidence").textContent = percent(r.probabilities[r.label]);
  if (card.truth) {
    const truth = el.querySelector(".truth");
    truth.classList.toggle("right", r.label === card.truth);
    truth.classList.toggle("wrong", r.label !== card.truth);
    truth.textContent = `test picture of ${article(card.truth)} ${card.truth}: ${r.label === card.truth ? "right" : "wrong"}`;
  }
  if (r.view) el.querySelector(".view").src = r.view;
  const bars = el.querySelector(".bars");
  bars.innerHTML = "";
  for (const [name, p] of Object.entries(r.probabilities)) {
    const li = document.createElement("li");
    li.className = name === r.label ? "bar top" : "bar";
    li.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
    li.querySelector(".name").textContent = name;
    li.querySelector(".fill").style.width = percent(p);
    li.querySelector(".pct").textContent = percent(p);
    bars.appendChild(li);
  }
  const size = r.size ? `${r.size[0]}×${r.size[1]} picture, ` : "";
  el.querySelector(".timing").textContent = `${size}${elapsed.toFixed(0)} ms in all (server ${body.timing_ms.total.toFixed(1)} ms, model ${body.timing_ms.inference.toFixed(1)} ms).`;
  el.querySelector(".more").hidden = false;
  el.querySelector(".explain").hidden = false;
}

// ------------------------------------------------------------------ where it looked (Grad-CAM)
function resetHeat(card) {
  const heat = card.el.querySelector(".heat");
  heat.hidden = true;
  heat.removeAttribute("src");
  const button = card.el.querySelector(".explain");
  button.hidden = true;
  button.setAttribute("aria-pressed", "false");
  button.textContent = "Show where it looked";
}

async function toggleHeat(card) {
  const heat = card.el.querySelector(".heat");
  const button = card.el.querySelector(".explain");
  if (button.getAttribute("aria-pressed") === "true") {
    heat.hidden = true;
    button.setAttribute("aria-pressed", "false");
    button.textContent = "Show where it looked";
    return;
  }
  if (!heat.getAttribute("src")) {
    const generation = card.generation;
    button.disabled = true;
    button.textContent = "Working it out…";
    try {
      const r = (await post(card.file, { top_k: "1", explain: "true" })).results[0];
      if (generation !== card.generation) return;
      if (r.error || !r.heat) throw new Error(r.error || "no heat map in the answer");
      heat.src = r.heat;
    } catch (e) {
      button.textContent = "Show where it looked";
      showError(`${card.file.name}: ${e.message}`);
      return;
    } finally {
      button.disabled = false;
    }
  }
  heat.hidden = false;
  button.setAttribute("aria-pressed", "true");
  button.textContent = "Hide where it looked";
}

function updateSummary() {
  const done = cards.filter((c) => !c.el.classList.contains("pending")).length;
  const n = cards.length;
  $("summary").textContent = n === done ? `${n} picture${n === 1 ? "" : "s"}` : `${done} of ${n} pictures classified`;
}

function clearAll() {
  for (const card of cards) URL.revokeObjectURL(card.el.querySelector(".thumb").src);
  cards.length = 0;
  waiting = [];
  $("results").innerHTML = "";
  $("results-panel").hidden = true;
  clearError();
}

// ------------------------------------------------------------------ ways in
async function tryExamples(count = 4) {
  const chosen = [...examples].sort(() => Math.random() - 0.5).slice(0, count);
  try {
    const files = await Promise.all(chosen.map(async (ex) => {
      const response = await fetch(ex.url, { headers: auth });
      if (!response.ok) throw new Error(await detailOf(response));
      return new File([await response.blob()], ex.name, { type: "image/png" });
    }));
    addPictures(files, chosen.map((ex) => ex.label));
  } catch (e) {
    showError("Could not fetch the examples: " + e.message);
  }
}

function picturesIn(dataTransfer) {
  // files dropped or pasted; a pasted screenshot comes as an item of kind "file"
  const files = Array.from(dataTransfer.files || []);
  if (files.length) return files;
  return Array.from(dataTransfer.items || []).filter((it) => it.kind === "file").map((it) => it.getAsFile()).filter(Boolean);
}

function wire() {
  const drop = $("drop");
  $("choose").addEventListener("click", () => $("file").click());
  $("camera-button").addEventListener("click", () => $("camera").click());
  $("example").addEventListener("click", () => tryExamples());
  $("clear").addEventListener("click", clearAll);
  for (const id of ["file", "camera"]) {
    $(id).addEventListener("change", (e) => { addPictures(e.target.files); e.target.value = ""; });
  }
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", () => drop.classList.remove("over"));
  // pictures dropped anywhere on the page count (in the zone too: the event comes up to here);
  // else a drop that misses the zone would open the picture in place of the page
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => { e.preventDefault(); addPictures(picturesIn(e.dataTransfer)); });
  document.addEventListener("paste", (e) => {
    const files = picturesIn(e.clipboardData);
    if (files.length) { e.preventDefault(); addPictures(files); }
  });
  $("model").addEventListener("change", () => {
    showModelInfo();
    cards.forEach(queue);
    updateSummary();
    pump();
  });
}

wire();
loadModels();
