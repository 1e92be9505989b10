// The page: list models, send one picture to /api/predict, draw the answer. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
// a server started with a token wants it on every /api call; the user opens /#token=... (the
// part after # never reaches the server's logs or other sites)
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const auth = token ? { Authorization: `Bearer ${token}` } : {};
let limits = null;
let lastFile = null;

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

async function loadModels() {
  try {
    const response = await fetch("/api/models", { headers: auth });
    if (!response.ok) throw new Error(await detailOf(response));
    const body = await response.json();
    limits = body.limits;
    const select = $("model");
    select.innerHTML = "";
    for (const m of body.models) {
      const acc = m.accuracy == null ? "accuracy not measured" : (100 * m.accuracy).toFixed(2) + "% test accuracy";
      const option = new Option(`${m.name} (${m.model}, ${acc})`, m.name);
      option.dataset.info = `${m.source} model, ${m.parameters == null ? "?" : m.parameters.toLocaleString()} parameters. ${m.description || ""}`;
      select.add(option);
    }
    if (!body.models.length) showError("No models: the shipped model is missing and no run has finished.");
    showModelInfo();
    $("limits").textContent = `Any format Pillow reads, up to ${(limits.max_upload_bytes / 1048576).toFixed(0)} MB and ${(limits.max_pixels / 1e6).toFixed(0)} Mpixels.`;
  } catch (e) {
    showError("Could not list the models: " + e.message);
  }
}

function showModelInfo() {
  const option = $("model").selectedOptions[0];
  $("model-info").textContent = option ? option.dataset.info : "";
}

function showPicture(file) {
  const preview = $("preview");
  preview.hidden = false;
  preview.onerror = () => { preview.hidden = true; };  // e.g. a TIFF the browser cannot draw
  preview.src = URL.createObjectURL(file);
  $("preview-caption").textContent = file.name;
  $("view").removeAttribute("src");
  $("view-figure").hidden = true;  // until the server sends the 32x32 view
  $("pictures").hidden = false;
}

function drawResult(body, elapsed) {
  const r = body.results[0];
  if (r.error) { showError(r.error); return; }
  if (r.view) { $("view").src = r.view; $("view-figure").hidden = false; }
  $("label").textContent = r.label;
  $("confidence").textContent = percent(r.probabilities[r.label]);
  const bars = $("bars");
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
  $("timing").textContent = `${size}${elapsed.toFixed(0)} ms in all (server ${body.timing_ms.total.toFixed(1)} ms, model ${body.timing_ms.inference.toFixed(1)} ms).`;
  $("placeholder").hidden = true;
  $("result").hidden = false;
}

async function classify(file) {
  clearError();
  $("result").hidden = true;
  $("placeholder").hidden = false;
  $("placeholder").textContent = "Classifying…";
  if (limits && file.size > limits.max_upload_bytes) {
    showError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${(limits.max_upload_bytes / 1048576).toFixed(0)} MB.`);
    $("placeholder").textContent = "The prediction appears here.";
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", $("model").value);
  form.append("top_k", "3");
  form.append("view", "true");
  const start = performance.now();
  try {
    const response = await fetch("/api/predict", { method: "POST", body: form, headers: auth });
    if (!response.ok) throw new Error(await detailOf(response));
    drawResult(await response.json(), performance.now() - start);
  } catch (e) {
    showError(e.message);
    $("pictures").hidden = true;  // most often the file was not a picture at all
    $("placeholder").textContent = "The prediction appears here.";
  }
}

function pick(file) {
  if (!file) return;
  lastFile = file;
  showPicture(file);
  classify(file);
}

function wireDropZone() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  $("file").addEventListener("change", (e) => pick(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    pick(e.dataTransfer.files[0]);
  });
  $("model").addEventListener("change", () => { showModelInfo(); if (lastFile) classify(lastFile); });
}

wireDropZone();
loadModels();
