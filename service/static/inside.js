// "Inside the network": the weight pictures of the current version, the list of versions, and the
// plots of the version the person chooses. Failures are thrown to the caller (or handed to onError
// for clicks), which owns the message region.

import { api } from "./api.js";

const $ = (selector) => document.querySelector(selector);
const DATE_FORMAT = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const PLOT_TITLES = {
  accuracy: "Accuracy per epoch on the training and validation sets",
  loss: "Loss per epoch on the training and validation sets",
  confusion: "Confusion matrix on the test set: true digit against predicted digit",
  noise: "Test accuracy as more and more noise is added to the images",
  w1: "First-layer weights, one tile per hidden unit",
  w2: "Per-digit maps of the weights along the path to each output",
  robustness: "Share of each robustness variant read right, read wrong and refused",
};
const WEAK = 0.9; // a variant read right less often than this is flagged
const PERCENT = (fraction) => `${(fraction * 100).toFixed(1)}%`;

let shownPlots = null; // the version whose plots are on screen; kept across refreshes
let currentShown = null; // the current version, whose weight pictures are the ones shown above

/** Loads GET /models and redraws the whole section. Returns the current version. */
export async function showInside(onError) {
  insideErrors = onError;
  const models = await api("/models");
  showWeights(models.current);
  currentShown = models.current;
  renderVersions(models.versions, models.current, onError);
  showPolicy(models.policy, models.policy_error);
  const known = models.versions.some((v) => v.version === shownPlots);
  await showPlots(known ? shownPlots : models.current);
  return models.current;
}

const POLICY_REFRESH_MS = 5000; // while an experiment runs, its figures are read again this often
let policyTimer = null;
let policyRound = 0; // showPolicy's calls: a refresh begun before the last one draws nothing
let insideErrors = null; // showInside's onError, for the refresh an experiment's end calls for

/** The routing policy (canary, sticky or shadow) set beside the current version, in one line from
 * GET /models at once; then GET /models/policy adds its figures, live while it runs (read again every
 * few seconds) and final once it ended, with when. */
function showPolicy(policy, problem) {
  clearTimeout(policyTimer);
  renderPolicyLine(policy ? describePolicy(policy) : problem ? `Experiment not applied: ${problem}` : "");
  $("#policy-figures").replaceChildren();
  refreshExperiment(false, ++policyRound);
}

/** `running`: the last GET /models/policy had a policy; its end then redraws the whole section. */
async function refreshExperiment(running, round) {
  let view;
  try {
    view = await api("/models/policy");
  } catch {
    return; // the figures are extra: the line from GET /models stays
  }
  if (round !== policyRound) return; // the section was redrawn meanwhile
  let figures = null;
  if (view.policy) {
    renderPolicyLine(describePolicy(view.policy));
    figures = view.live;
    policyTimer = setTimeout(() => refreshExperiment(true, round), POLICY_REFRESH_MS);
  } else if (running && insideErrors) {
    showInside(insideErrors).catch(insideErrors); // it ended meanwhile (a promote may have moved current)
    return;
  } else if (view.policy_error) {
    renderPolicyLine(`Experiment not applied: ${view.policy_error}`);
  } else if (view.ended) {
    const when = DATE_FORMAT.format(new Date(view.ended.ended_at));
    const { mode, version, percent } = view.ended.policy;
    renderPolicyLine(`Experiment (${mode}) of ${version} at ${percent}% ended ${when}. Its final figures:`);
    figures = view.ended;
  }
  $("#policy-figures").replaceChildren(...(figures ? experimentFigures(figures) : []));
}

function describePolicy(policy) {
  const share = policy.mode === "shadow"
    ? `computes ${policy.percent}% of requests in the shadow`
    : `answers ${policy.percent}% of requests`;
  return `Experiment (${policy.mode}): ${policy.version} ${share}.`;
}

function renderPolicyLine(text) {
  const line = $("#policy");
  line.textContent = text;
  line.hidden = !text;
}

/** An experiment's figures per version and role (GET /models/policy's `live` or `ended`): a table,
 * and whose figures they are (one worker's, from when). */
function experimentFigures(figures) {
  const scope = document.createElement("p");
  scope.className = "hint";
  const since = figures.since ? DATE_FORMAT.format(new Date(figures.since)) : "its start";
  scope.textContent = `As one worker (pid ${figures.pid}) saw it, from ${since}` +
    (figures.ended_at ? "." : "; each worker counts its own.");
  if (!figures.versions.length) {
    scope.textContent += " No requests yet.";
    return [scope];
  }
  const table = document.createElement("table");
  table.dataset.testid = "policy-table";
  table.innerHTML = `<caption class="visually-hidden"></caption>
    <thead><tr><th scope="col">Version</th><th scope="col">Role</th><th scope="col">Requests</th>
    <th scope="col">Mean latency</th><th scope="col">Mean confidence</th>
    <th scope="col">Same digit as current</th></tr></thead><tbody></tbody>`;
  table.caption.textContent = `Figures of the experiment on ${figures.policy.version}, per version and role`;
  const rows = figures.versions.map((v) => {
    const row = document.createElement("tr");
    row.dataset.role = v.role;
    row.innerHTML = "<th scope=\"row\"></th><td></td><td></td><td></td><td></td><td></td>";
    row.cells[0].textContent = v.version; // server text goes in as text, never as HTML
    row.cells[1].textContent = v.role;
    row.cells[2].textContent = String(v.requests);
    row.cells[3].textContent = v.mean_latency_ms == null ? "–" : `${v.mean_latency_ms.toFixed(2)} ms`;
    row.cells[4].textContent = v.mean_confidence == null ? "–" : PERCENT(v.mean_confidence);
    row.cells[5].textContent = v.agreement == null ? "–" : `${PERCENT(v.agreement)} of ${v.compared}`;
    return row;
  });
  table.tBodies[0].replaceChildren(...rows);
  const wrap = document.createElement("div");
  wrap.className = "table-wrap";
  wrap.append(table);
  return [scope, wrap];
}

function showWeights(version) {
  // ?version= busts browser caches when the current model changes.
  for (const id of ["w1", "w2"]) $(`#${id}`).src = `/weights/${id}.png?version=${encodeURIComponent(version)}`;
}

function renderVersions(versions, current, onError) {
  const rows = versions.map((v) => {
    const row = document.createElement("tr");
    row.dataset.version = v.version;
    row.innerHTML = `<th scope="row"></th><td></td><td></td>
      <td><button type="button" class="small" aria-pressed="false">Show</button></td>`;
    row.cells[0].textContent = v.version; // server text goes in as text, never as HTML
    if (v.version === current) row.cells[0].insertAdjacentHTML("beforeend", ' <span class="badge">current</span>');
    row.cells[1].textContent = v.test_accuracy == null ? "–" : `${(v.test_accuracy * 100).toFixed(2)}%`;
    row.cells[2].textContent = v.created_at ? DATE_FORMAT.format(new Date(v.created_at)) : "–";
    const button = row.querySelector("button");
    button.setAttribute("aria-label", `Show plots for ${v.version}`);
    button.addEventListener("click", () => showPlots(v.version).catch(onError));
    return row;
  });
  $("#versions tbody").replaceChildren(...rows);
}

async function showPlots(version) {
  if (!version) return;
  shownPlots = version;
  for (const row of document.querySelectorAll("#versions tr[data-version]")) {
    const selected = row.dataset.version === version;
    row.classList.toggle("selected", selected);
    row.querySelector("button").setAttribute("aria-pressed", String(selected));
  }
  const manifest = await api(`/models/${encodeURIComponent(version)}`);
  if (shownPlots !== version) return; // the person chose another version meanwhile
  const heading = document.createElement("h3");
  heading.textContent = `Plots for ${version}`;
  const grid = document.createElement("div");
  grid.className = "plot-grid";
  // The current version's W1 and W2 are already the two large pictures above: not again here.
  const above = version === currentShown ? new Set(["w1", "w2"]) : new Set();
  grid.append(...(manifest.plots || []).filter((name) => !above.has(name)).map((name) => plotFigure(version, name)));
  const parts = [heading];
  if (manifest.robustness) parts.push(robustnessTable(version, manifest.robustness));
  parts.push(grid.children.length ? grid : "No plots for this version.");
  $("#plots").replaceChildren(...parts);
}

/** The robustness suite's table (trainer/robustness.py): how each kind of upload fared. */
function robustnessTable(version, suite) {
  if (suite.error) { // the suite failed when the version was published; the version itself is fine
    const note = document.createElement("p");
    note.className = "hint";
    note.dataset.testid = "robustness";
    note.textContent = `Robustness of ${version} was not measured: ${suite.error}`;
    return note;
  }
  const variants = suite.variants || [];
  const weak = variants.filter((v) => v.accuracy < WEAK).sort((a, b) => a.accuracy - b.accuracy);
  const details = document.createElement("details");
  details.className = "robustness";
  details.dataset.testid = "robustness";
  details.open = true;
  const summary = document.createElement("summary");
  summary.textContent = `Robustness of ${version}: ${variants.length - weak.length} of ${variants.length} ` +
    `kinds of upload read right ≥ ${WEAK * 100}% (${suite.limit} digits each)`;
  // the weak ones (up to three), or the lowest of all when none is weak: where to look first
  const lowest = weak.length ? weak.slice(0, 3) : [...variants].sort((a, b) => a.accuracy - b.accuracy).slice(0, 1);
  if (lowest.length) {
    summary.textContent += `; weakest: ${lowest.map((v) => `${v.name} ${PERCENT(v.accuracy)}`).join(", ")}`;
  }
  const wrap = document.createElement("div");
  wrap.className = "table-wrap";
  const table = document.createElement("table");
  table.innerHTML = `<caption class="visually-hidden"></caption>
    <thead><tr><th scope="col">Variant</th><th scope="col">Read right</th><th scope="col">Refused</th>
    <th scope="col">Right when accepted</th></tr></thead><tbody></tbody>`;
  table.caption.textContent = `Robustness variants of ${version}`;
  const rows = variants.map((v) => {
    const row = document.createElement("tr");
    row.dataset.variant = v.name;
    row.classList.toggle("weak", v.accuracy < WEAK);
    row.innerHTML = "<th scope=\"row\"><span></span><span class=\"hint\"></span></th><td></td><td></td><td></td>";
    row.cells[0].children[0].textContent = v.name; // server text goes in as text, never as HTML
    row.cells[0].children[1].textContent = v.description || "";
    row.cells[1].textContent = PERCENT(v.accuracy);
    row.cells[2].textContent = `${v.refused} of ${v.n}`;
    row.cells[3].textContent = v.accepted_accuracy == null ? "–" : PERCENT(v.accepted_accuracy);
    return row;
  });
  table.tBodies[0].replaceChildren(...rows);
  wrap.append(table);
  details.append(summary, wrap);
  const apart = suite.separation;
  if (apart && apart.auroc != null) {
    const p = document.createElement("p");
    p.className = "hint";
    p.dataset.testid = "separation";
    p.textContent = `Digits against Fashion-MNIST clothes by the network's energy score: AUROC ` +
      `${apart.auroc.toFixed(3)} (1 = always told apart, 0.5 = chance; ${apart.others_refused} of ` +
      `${apart.others} clothes refused as no digit).`;
    details.append(p);
  }
  return details;
}

function plotFigure(version, name) {
  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.src = `/models/${encodeURIComponent(version)}/plots/${encodeURIComponent(name)}.png`;
  img.alt = `${PLOT_TITLES[name] || `Plot “${name}”`} (${version})`;
  img.loading = "lazy";
  img.addEventListener("error", () => figure.classList.add("missing"));
  const link = document.createElement("a"); // the grid shows them small; a click opens full size
  link.href = img.src;
  link.append(img);
  const caption = document.createElement("figcaption");
  caption.textContent = name;
  figure.append(link, caption);
  return figure;
}
