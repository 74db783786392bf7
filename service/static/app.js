// Draw-a-digit page. Talks to the service only through its HTTP contract (/predict, /feedback,
// /models, /weights, /train, /readyz), so it works the same against one worker or many.

import { api, DRAW_FIRST, explain, isNoDigit, isNotReady, NOT_READY } from "./api.js";
import { buildFeedback, hideFeedback, offerFeedback } from "./feedback.js";
import { showInside } from "./inside.js";

const $ = (selector) => document.querySelector(selector);
const token = () => $("#token").value.trim();
const TOKEN_KEY = "mnist-token"; // sessionStorage only: the token should not outlive the tab
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

// ---------------------------------------------------------------- messages

const showMessage = (text) => ($("#message").textContent = text);

function clearMessage(onlyIf) {
  if (onlyIf === undefined || $("#message").textContent === onlyIf) showMessage("");
}

function report(err) {
  showMessage(explain(err));
  if (isNotReady(err)) waitUntilReady();
}

/** Wraps an async action so any failure ends up in the message region, not the console. */
const reporting = (action) => (...args) => action(...args).catch(report);

// ---------------------------------------------------------------- readiness

let currentVersion = null;
let readyTimer = null;

async function checkReady() {
  try {
    const ready = await api("/readyz");
    currentVersion = ready.version;
    $("#service-status").textContent = `Ready: model ${ready.model} ${ready.version}`;
    return true;
  } catch {
    $("#service-status").textContent = NOT_READY;
    return false;
  }
}

/** Polls /readyz until the service answers, then reloads what failed. One poller at a time. */
function waitUntilReady() {
  if (readyTimer) return;
  showMessage(NOT_READY);
  const tick = async () => {
    if (!(await checkReady())) return (readyTimer = setTimeout(tick, 2000));
    readyTimer = null;
    clearMessage(NOT_READY);
    loadInside();
    if (hasInk) predictDrawing();
  };
  readyTimer = setTimeout(tick, 2000);
}

// ---------------------------------------------------------------- drawing pad

const pad = $("#pad");
const ink = pad.getContext("2d");
const PEN = pad.width / 14; // thick like MNIST strokes once shrunk to 28x28
Object.assign(ink, { lineWidth: PEN, lineCap: "round", lineJoin: "round", strokeStyle: "#000" });
let hasInk = false;
let stroke = null; // {id, last, mid}: the pointer that is drawing and where its curve ends

function resetPad() {
  // Opaque white rather than transparent: the PNG then looks like paper in any viewer.
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
}

function padPoint(event) {
  const box = pad.getBoundingClientRect(); // CSS size differs from the bitmap size
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function startStroke(event) {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId); // keep the stroke when the pointer leaves the pad
  const p = padPoint(event);
  stroke = { id: event.pointerId, last: p, mid: p };
  ink.fillStyle = "#000";
  ink.beginPath();
  ink.arc(p.x, p.y, PEN / 2, 0, 2 * Math.PI); // a tap leaves a dot
  ink.fill();
  hasInk = true;
  clearMessage(DRAW_FIRST);
}

function extendStroke(event) {
  if (!stroke || event.pointerId !== stroke.id) return;
  // Coalesced events keep fast strokes round instead of polygonal.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of events.length ? events : [event]) {
    const p = padPoint(e);
    const mid = { x: (stroke.last.x + p.x) / 2, y: (stroke.last.y + p.y) / 2 };
    // Quadratic curve through midpoints: smooth, and joins exactly with the previous piece.
    ink.beginPath();
    ink.moveTo(stroke.mid.x, stroke.mid.y);
    ink.quadraticCurveTo(stroke.last.x, stroke.last.y, mid.x, mid.y);
    ink.stroke();
    stroke.last = p;
    stroke.mid = mid;
  }
  schedulePredict();
}

function endStroke(event) {
  if (!stroke || event.pointerId !== stroke.id) return;
  ink.beginPath();
  ink.moveTo(stroke.mid.x, stroke.mid.y);
  ink.lineTo(stroke.last.x, stroke.last.y);
  ink.stroke();
  stroke = null;
  schedulePredict();
}

function clearAll() {
  stroke = null;
  resetPad();
  clearTimeout(predictTimer);
  appliedRequest = latestRequest; // answers still in flight belong to the old drawing
  resetResult();
  clearMessage(DRAW_FIRST);
  $("#upload-name").textContent = "";
}

// ---------------------------------------------------------------- predictions

let predictTimer = null;
let latestRequest = 0; // number of the last request sent
let appliedRequest = 0; // number of the newest request whose answer is on screen

function schedulePredict() {
  clearTimeout(predictTimer);
  predictTimer = setTimeout(predictDrawing, 150);
}

function predictDrawing() {
  clearTimeout(predictTimer);
  if (!hasInk) return showMessage(DRAW_FIRST); // nothing to ask the server about
  sendForPrediction(padAsPng(), "drawing.png");
}

/** The pad as a PNG blob. Synchronous on purpose: Chromium runs toBlob in idle time, which on a
 * busy page delayed answers by up to a second. */
function padAsPng() {
  const bytes = atob(pad.toDataURL("image/png").split(",")[1]);
  return new Blob([Uint8Array.from(bytes, (c) => c.charCodeAt(0))], { type: "image/png" });
}

async function sendForPrediction(blob, filename) {
  const request = ++latestRequest;
  const form = new FormData();
  form.append("file", blob, filename);
  try {
    const query = $("#explain").checked ? "debug=1&explain=1" : "debug=1";
    const answer = await api(`/predict?${query}`, { method: "POST", body: form });
    if (request <= appliedRequest) return; // a newer drawing already answered
    appliedRequest = request;
    showPrediction(answer);
    offerFeedback(answer.predictions[0], blob, filename);
    clearMessage();
  } catch (err) {
    if (request <= appliedRequest) return;
    appliedRequest = request;
    if (isNoDigit(err)) resetResult();
    report(err);
  }
}

function buildBars() {
  const bars = $("#bars");
  for (let d = 0; d < 10; d++) {
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.digit = String(d);
    row.dataset.probability = "0";
    row.innerHTML = `<span class="bar-label" aria-hidden="true">${d}</span>
      <div class="bar-track" role="meter" aria-label="Digit ${d}" aria-valuemin="0"
           aria-valuemax="100" aria-valuenow="0" aria-valuetext="0%"><div class="bar-fill"></div></div>
      <span class="bar-value" aria-hidden="true">0%</span>`;
    bars.append(row);
  }
}

function setBar(d, probability, isBest) {
  const row = $(`#bars [data-digit="${d}"]`);
  const percent = probability * 100;
  const text = `${percent.toFixed(1)}%`; // one format for every digit: 0.0%, 3.2%, 96.8%
  row.dataset.probability = String(probability);
  row.classList.toggle("best", isBest);
  row.querySelector(".bar-fill").style.width = `${percent}%`;
  row.querySelector(".bar-value").textContent = text;
  const meter = row.querySelector(".bar-track");
  meter.setAttribute("aria-valuenow", percent.toFixed(1));
  meter.setAttribute("aria-valuetext", text);
}

function showPrediction(answer) {
  const prediction = answer.predictions[0];
  $("#digit").textContent = String(prediction.digit);
  prediction.probabilities.forEach((p, d) => setBar(d, p, d === prediction.digit));
  $("#version").textContent = answer.version;
  drawSeen(prediction.input);
  showWhy(prediction.explanation);
}

/** The explanation's overlay (red: pixels that pushed towards the answer, blue: against). */
function showWhy(explanation) {
  $("#why-figure").hidden = !explanation;
  if (explanation) $("#why").src = explanation.png;
  else $("#why").removeAttribute("src");
}

function resetResult() {
  $("#digit").textContent = "–";
  $("#version").textContent = "–"; // no answer on screen, so no model answered it
  for (let d = 0; d < 10; d++) setBar(d, 0, false);
  drawSeen(null);
  showWhy(null);
  hideFeedback();
}

/** Paints the 28x28 grey levels (0..255, white ink on black, as in MNIST) the network got. */
function drawSeen(rows) {
  const seen = $("#seen").getContext("2d");
  seen.fillStyle = "#000";
  seen.fillRect(0, 0, 28, 28);
  if (!rows) return;
  const image = seen.createImageData(28, 28);
  rows.flat().forEach((v, i) => image.data.set([v, v, v, 255], i * 4));
  seen.putImageData(image, 0, 0);
}

function predictFile(file) {
  if (!file) return;
  clearAll();
  $("#upload-name").textContent = `Sent ${file.name}`;
  sendForPrediction(file, file.name); // the server judges the type: it answers 415 if unsure
}

// ---------------------------------------------------------------- inside the network

const loadInside = reporting(async () => {
  currentVersion = await showInside(report);
});

// ---------------------------------------------------------------- training jobs

let job = null; // the job record on screen
let pollTimer = null;

/** The preset, plus only the fields the person filled in: an empty field keeps the preset's value. */
function readTrainForm() {
  const params = { preset: $("#preset").value, promote: $("#promote").checked };
  const [hiddenText, epochsText, lrText] = ["#hidden", "#epochs", "#lr"].map((id) => $(id).value.trim());
  if (hiddenText) {
    const hidden = hiddenText.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
    if (!hidden.length || !hidden.every((n) => Number.isInteger(n) && n > 0)) {
      throw new Error("Hidden layers must be whole numbers separated by commas, like 256, 128");
    }
    params.hidden = hidden;
  }
  if (epochsText) {
    const epochs = Number(epochsText);
    if (!Number.isInteger(epochs) || epochs < 1) throw new Error("Epochs must be a whole number of at least 1");
    params.epochs = epochs;
  }
  if (lrText) {
    const lr = Number(lrText);
    if (!(lr > 0)) throw new Error("The learning rate must be a number above 0");
    params.lr = lr;
  }
  return params;
}

async function startTraining(event) {
  event.preventDefault();
  try {
    const params = readTrainForm(); // a plain Error with a sentence when a field is wrong
    $("#train-start").disabled = true; // no double submit while the request is out
    watchJob(await api("/train", { method: "POST", json: params, token: token() }));
    clearMessage();
  } catch (err) {
    report(err);
    if (err.status === 401 || err.status === 403) $("#token").focus();
    $("#train-start").disabled = false;
  }
}

function watchJob(record) {
  const stateChanged = !job || job.id !== record.id || job.state !== record.state;
  const finishedNow = stateChanged && TERMINAL.has(record.state);
  job = record;
  renderJob(record, stateChanged);
  clearTimeout(pollTimer);
  if (!TERMINAL.has(record.state)) pollTimer = setTimeout(pollJob, 500);
  else if (finishedNow && record.state === "succeeded") refreshAfterChange(); // a new version exists
}

async function pollJob() {
  try {
    watchJob(await api(`/train/${encodeURIComponent(job.id)}`));
    clearMessage(NOT_READY);
  } catch (err) {
    report(err);
    if (err.status !== 404) pollTimer = setTimeout(pollJob, 2000); // keep following through hiccups
  }
}

function renderJob(record, stateChanged) {
  const progress = record.progress || {};
  const bar = $("#train-progress");
  if (record.state === "queued") bar.removeAttribute("value"); // indeterminate until it starts
  else bar.value = record.state === "succeeded" ? 100 : progress.percent || 0;
  $("#train-state").textContent = describeJob(record);
  const running = !TERMINAL.has(record.state);
  $("#train-start").disabled = running;
  $("#train-cancel").disabled = !running;
  const promotable = record.state === "succeeded" && record.version && record.version !== currentVersion;
  $("#train-promote").disabled = !promotable;
  $("#train-promote").textContent = promotable ? `Promote ${record.version}` : "Promote";
  // Announce state changes only: ETA ticks every half second would drown a screen reader.
  if (stateChanged) $("#train-announce").textContent = `Training ${record.state}`;
}

function describeJob(record) {
  const p = record.progress || {};
  const running = record.state === "running" && p.phase;
  const parts = [`Job ${record.id.slice(0, 8)}: ${record.state}${running ? ` (${p.phase})` : ""}`];
  // A run in iterations (the seed preset) counts evaluations, not epochs: "evaluation 3 of 20".
  if (p.epochs != null) parts.push(`${p.unit || "epoch"} ${p.epoch} of ${p.epochs}`); // known once it runs
  if (p.test_accuracy != null) parts.push(`test accuracy ${(p.test_accuracy * 100).toFixed(2)}%`);
  else if (p.accuracy != null) parts.push(`${p.accuracy_on || "validation"} accuracy ${(p.accuracy * 100).toFixed(1)}%`);
  if (!TERMINAL.has(record.state) && p.eta_seconds != null) parts.push(`about ${formatSeconds(p.eta_seconds)} left`);
  if (record.version) parts.push(`version ${record.version}${record.promoted ? " (promoted)" : ""}`);
  if (record.error) parts.push(record.error);
  return parts.join(" · ");
}

function formatSeconds(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

const cancelJob = reporting(async () => {
  if (job) watchJob(await api(`/train/${encodeURIComponent(job.id)}`, { method: "DELETE", token: token() }));
});

const promoteJobVersion = reporting(async () => {
  if (!job?.version) return;
  const answer = await api(`/models/${encodeURIComponent(job.version)}/promote`, { method: "POST", token: token() });
  currentVersion = answer.current;
  job = { ...job, promoted: true };
  $("#train-announce").textContent = `${answer.current} is now the current model`;
  clearMessage();
  await refreshAfterChange();
});

async function refreshAfterChange() {
  await checkReady();
  await loadInside();
  if (job) renderJob(job, false); // the promote button depends on the current version
}

/** After a reload, keep following a job that is still going. */
async function resumeRunningJob() {
  const { jobs = [] } = await api("/train").catch(() => ({})); // a convenience: fine without it
  const running = jobs.find((j) => !TERMINAL.has(j.state));
  if (running) watchJob(running);
}

// ---------------------------------------------------------------- wiring

/** A file dropped anywhere on the page is read, so the drop target is never too small to hit. */
function wireDrop() {
  const highlight = (on) => $("#upload").classList.toggle("dragging", on);
  document.addEventListener("dragover", (e) => {
    e.preventDefault(); // allows the drop; the browser would otherwise open the file
    highlight(true);
  });
  document.addEventListener("dragleave", (e) => e.relatedTarget || highlight(false));
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    highlight(false);
    predictFile(e.dataTransfer.files[0]);
  });
}

function wire() {
  pad.addEventListener("pointerdown", startStroke);
  pad.addEventListener("pointermove", extendStroke);
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  $("#clear").addEventListener("click", clearAll);
  $("#predict").addEventListener("click", predictDrawing);
  $("#explain").addEventListener("change", () => hasInk && predictDrawing());
  document.addEventListener("keydown", (e) => {
    // Escape inside a text field belongs to that field (e.g. the token), not to the pad.
    if (e.key === "Escape" && !e.target.closest("input, select, textarea")) clearAll();
  });
  $("#file").addEventListener("change", (e) => {
    predictFile(e.target.files[0]);
    e.target.value = ""; // choosing the same file again should send it again
  });
  wireDrop();
  $("#token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("#token").addEventListener("input", (e) => sessionStorage.setItem(TOKEN_KEY, e.target.value.trim()));
  $("#train-form").addEventListener("submit", startTraining);
  $("#train-cancel").addEventListener("click", cancelJob);
  $("#train-promote").addEventListener("click", promoteJobVersion);
}

async function main() {
  buildBars();
  buildFeedback(report);
  wire();
  clearAll();
  if (await checkReady()) loadInside();
  else waitUntilReady();
  resumeRunningJob();
}

main();
