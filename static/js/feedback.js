// "Wrong? Choose the right class": under each answer, the person can name the right class. For
// an answer from the server it is sent to POST /feedback with the answer's request id; for one
// made on this device, only while sharing is on (outbox.js), under the id the answer was shared
// with. Without a server to take it, it waits in this browser (when sharing is on).

import { ApiError, sendFeedback, serverDidNotAnswer } from "./api.js";
import { describeError, displayLabel } from "./messages.js";
import { keepCorrection, sendWaiting, sharing } from "./outbox.js";

const $ = (id) => document.getElementById(id);
// The errors only feedback meets; the rest are the classifier's (messages.js).
const SENTENCES = {
  unknown_request_id: "The server has no record of this answer (it was not stored, or is too old to keep).",
  unknown_label: "The server's model does not have this class any more. Reload the page.",
  database_unavailable: "The server cannot store answers at the moment. Try again in a minute.",
};
let settings = { apiBase: "", context: {} };
let shown = null; // the entry the form is for

/** Wire the form once: where the API is, and the context error sentences need. */
export function initFeedback(apiBase, context) {
  settings = { apiBase, context };
  $("feedback").addEventListener("submit", (event) => {
    event.preventDefault();
    if (shown) submit(shown);
  });
}

/** The model's classes, for the choice (from GET /model). */
export function setFeedbackLabels(labels) {
  const options = labels.map((label) => Object.assign(document.createElement("option"), { value: label, textContent: displayLabel(label) }));
  const prompt = Object.assign(document.createElement("option"), { value: "", textContent: "Choose…" });
  $("feedback-label").replaceChildren(prompt, ...options);
  if (shown) showFeedback(shown);
}

/** The id the server knows an answer by: its request id, or the id it was shared with. */
function answerId(entry) {
  return entry.path === "server" ? entry.result.requestId : entry.result.shareId;
}

/** Show the form for an entry, or hide it where there is nothing to correct. */
export function showFeedback(entry) {
  const form = $("feedback");
  const offered = entry.state === "done" && Boolean(answerId(entry)) && $("feedback-label").options.length > 1;
  form.hidden = !offered;
  if (shown !== entry) $("feedback-label").value = entry.feedback?.label ?? "";
  shown = entry;
  $("feedback-note").textContent = offered ? entry.feedback?.note ?? "" : "";
}

async function submit(entry) {
  const label = $("feedback-label").value;
  const note = (text) => {
    entry.feedback = { ...entry.feedback, note: text };
    if (shown === entry) $("feedback-note").textContent = text;
  };
  if (!label) {
    note("Choose the right class first.");
    return;
  }
  note(`Sending: ${entry.name} is ${displayLabel(label)}…`);
  if (entry.path === "device") {
    // Shared (the form is offered for it only then): it follows its answer through the outbox.
    entry.feedback = { label, note: await keep(entry, label) };
    note(entry.feedback.note);
    return;
  }
  try {
    const answer = await sendFeedback(settings.apiBase, answerId(entry), label);
    entry.feedback = { label, note: recordedText(entry, label, answer) };
    note(entry.feedback.note);
  } catch (error) {
    const known = error instanceof ApiError ? error : new ApiError("unknown");
    if (sharing() && serverDidNotAnswer(known)) {
      entry.feedback = { label, note: await keep(entry, label) };
      note(entry.feedback.note);
    } else {
      note(`Not recorded: ${SENTENCES[known.code] ?? describeError(known, settings.context)}`);
    }
  }
}

/** Keep the correction to send, and send it now if the server answers. */
async function keep(entry, label) {
  await keepCorrection({ request_id: answerId(entry), label });
  try {
    await sendWaiting(settings.apiBase);
    return recordedText(entry, label, {});
  } catch {
    return `Kept in this browser: ${entry.name} is ${displayLabel(label)}. It will be sent when the server can be reached.`;
  }
}

function recordedText(entry, label, answer) {
  const replaced = answer.replaced && answer.replaced !== label ? ` (instead of ${displayLabel(answer.replaced)})` : "";
  return `Recorded: ${entry.name} is ${displayLabel(label)}${replaced}. Thank you.`;
}
