// "Wrong? It was a _": ten buttons under the answer that tell the service the right digit
// (POST /feedback with the answer's id). An id is remembered only by the worker process that
// answered, for a while: when the service no longer knows it, the same picture is sent instead.

import { api, ApiError } from "./api.js";

const $ = (selector) => document.querySelector(selector);
let current = null; // {id, answer, blob, filename} of the answer on screen

export function buildFeedback(onError) {
  const group = $("#feedback-digits");
  for (let d = 0; d < 10; d++) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary digit-button";
    button.textContent = String(d);
    button.dataset.testid = `feedback-${d}`;
    button.setAttribute("aria-label", `It was a ${d}`);
    button.addEventListener("click", () => send(d).catch(onError));
    group.append(button);
  }
}

/** Offer feedback on the answer just shown (`prediction` of /predict, the picture it read). */
export function offerFeedback(prediction, blob, filename) {
  current = { id: prediction.id, answer: prediction.digit, blob, filename };
  $("#feedback").hidden = false;
  $("#feedback").dataset.answer = prediction.id; // which answer the buttons correct
  $("#feedback-thanks").textContent = "";
  setEnabled(true);
}

export function hideFeedback() {
  current = null;
  $("#feedback").hidden = true;
  delete $("#feedback").dataset.answer;
  $("#feedback-thanks").textContent = "";
}

function setEnabled(enabled) {
  document.querySelectorAll("#feedback-digits button").forEach((b) => (b.disabled = !enabled));
}

async function send(digit) {
  const answer = current;
  if (!answer) return;
  setEnabled(false);
  let stored;
  try {
    stored = await api("/feedback", { method: "POST", json: { id: answer.id, digit } });
  } catch (err) {
    if (!(err instanceof ApiError && err.code === "feedback_id_unknown")) {
      setEnabled(true);
      throw err;
    }
    const form = new FormData(); // another worker answered, or it was too long ago: send the picture
    form.append("file", answer.blob, answer.filename);
    try {
      stored = await api(`/feedback?digit=${digit}`, { method: "POST", body: form });
    } catch (again) {
      setEnabled(true);
      throw again;
    }
  }
  if (answer !== current) return; // a newer drawing replaced it meanwhile
  $("#feedback-thanks").textContent = stored.correct
    ? `Thanks: ${digit} it was, as ${stored.version} read it.`
    : `Thanks: stored as ${digit === 8 ? "an" : "a"} ${digit} (${stored.version} read ${stored.answer}); ` +
      "the next version learns from it.";
}
