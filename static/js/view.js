// Drawing one history entry: its result panel (bars, status, error) and its history row.
// An entry is {id, name, previewUrl, path: "server"|"device", fallback (why the other path failed),
//   state: "waiting"|"loading"|"pending"|"done"|"error", result, errorText, at}.

import { displayLabel, formatDuration, formatPercent } from "./messages.js";

const $ = (id) => document.getElementById(id);

/** Show an entry in the result panel and the preview; the status line is the live region. */
export function showEntry(entry) {
  showPreview(entry);
  $("error").textContent = entry.state === "error" ? entry.errorText : "";
  $("status").textContent = statusText(entry);
  $("timing").textContent = entry.state === "done" ? answeredText(entry) : "";
  document.querySelector(".result-panel").setAttribute("aria-busy", String(isBusy(entry)));
  renderScores(entry.state === "done" ? entry.result.top : []);
}

export function showNothing() {
  showPreview(null);
  $("error").textContent = "";
  $("scores").replaceChildren();
  $("timing").textContent = "";
}

function isBusy(entry) {
  return entry.state === "pending" || entry.state === "waiting" || entry.state === "loading";
}

/** Which path and model answered, how fast, and why that path if the other failed. */
function answeredText(entry) {
  const { elapsedMs, model } = entry.result;
  const why = entry.fallback ? (entry.path === "device" ? " (the server did not answer)" : " (this browser could not classify it)") : "";
  return `Answered ${pathPhrase(entry.path)} in ${formatDuration(elapsedMs)}${why}${model ? ` · model ${model.name} ${model.version}` : ""}`;
}

/** Which path answered, in words: the server, or this browser. */
export function pathPhrase(path) {
  return path === "device" ? "on this device" : "by the server";
}

function pathName(path) {
  return path === "device" ? "This device" : "Server";
}

function statusText(entry) {
  switch (entry.state) {
    case "waiting":
      return `${entry.name} is waiting for the images before it.`;
    case "loading":
      return "Loading the model into this browser, once (a download of several MB)…";
    case "pending":
      return entry.path === "device" ? `Classifying ${entry.name} on this device…` : `Classifying ${entry.name}…`;
    case "done": {
      const { label, score } = entry.result;
      return `${entry.name}: ${displayLabel(label)}, ${formatPercent(score)}.`;
    }
    default:
      return `Could not classify ${entry.name}.`;
  }
}

function renderScores(top) {
  const rows = top.map(({ label, score }, index) => {
    const row = element("li", { className: index === 0 ? "score best" : "score" });
    // The exact figures, for scripts and tests; people read the rounded percentage.
    row.dataset.label = label;
    row.dataset.score = String(score);
    const name = element("span", { className: "score-label", textContent: displayLabel(label) });
    const value = element("span", { className: "score-value", textContent: formatPercent(score) });
    const bar = element("span", { className: "bar" });
    bar.setAttribute("aria-hidden", "true");
    const fill = element("span", { className: "fill" });
    fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
    bar.append(fill);
    row.append(name, value, bar);
    return row;
  });
  $("scores").replaceChildren(...rows);
}

function showPreview(entry) {
  const preview = $("preview");
  const note = $("preview-note");
  $("drop-hint").hidden = Boolean(entry);
  note.hidden = true;
  if (!entry) {
    preview.hidden = true;
    preview.removeAttribute("src");
    return;
  }
  preview.alt = `Preview of ${entry.name}`;
  preview.hidden = false;
  preview.onerror = () => {
    // TIFF and HEIC, say: the server reads them, this browser cannot draw them.
    preview.hidden = true;
    note.textContent = `No preview for ${entry.name} in this browser.`;
    note.hidden = false;
  };
  preview.src = entry.previewUrl;
}

/** The history row for an entry: a button that shows the entry again. */
export function historyItem(entry, onSelect) {
  const button = element("button", { type: "button", className: "history-item" });
  button.dataset.entryId = entry.id;
  const thumb = element("img", { className: "thumb", alt: "", src: entry.previewUrl });
  thumb.onerror = () => thumb.replaceWith(element("span", { className: "thumb thumb-missing" }));
  const text = element("span", { className: "history-text" });
  const title = element("span", { className: "history-title" });
  const meta = element("span", { className: "history-meta" });
  text.append(title, meta);
  button.append(thumb, text);
  button.addEventListener("click", () => onSelect(entry));
  updateHistoryItem(button, entry);
  const item = element("li");
  item.append(button);
  return item;
}

export function updateHistoryItem(button, entry) {
  const title = button.querySelector(".history-title");
  const meta = button.querySelector(".history-meta");
  const time = entry.at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  button.classList.toggle("failed", entry.state === "error");
  button.dataset.path = entry.path;
  const badge = element("span", { className: "path-badge", textContent: pathName(entry.path) });
  if (entry.state === "done") {
    title.replaceChildren(`${displayLabel(entry.result.label)} · ${formatPercent(entry.result.score)}`, badge);
    meta.textContent = `${entry.name} · ${time} · ${formatDuration(entry.result.elapsedMs)}`;
  } else {
    title.replaceChildren(entry.state === "error" ? "Not classified" : "Classifying…", badge);
    meta.textContent = `${entry.name} · ${time}`;
  }
}

function element(tag, properties = {}) {
  return Object.assign(document.createElement(tag), properties);
}
