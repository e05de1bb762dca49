// The page: take images (choose, photograph, drop, paste), classify them one after another
// and keep a history, newest first, that the person can go back to.

import { ApiError, classify, describeModel, resolveApiBase } from "./api.js";
import { DeviceError, classifyOnDevice, deviceModelReady, loadDeviceModel } from "./device.js";
import { initFeedback, setFeedbackLabels, showFeedback } from "./feedback.js";
import { FORMATS, describeError, humanSize } from "./messages.js";
import { historyItem, showEntry, showNothing, updateHistoryItem } from "./view.js";

const HISTORY_LIMIT = 50; // each entry holds its image in memory (a blob: URL)
const MODEL_RETRY_MS = 3000;

const $ = (id) => document.getElementById(id);
const root = document.documentElement;
const maxUploadBytes = Number(root.dataset.maxUploadBytes) || 0;
const deviceManifest = root.dataset.deviceManifest || "";
const entries = [];
let selected = null;
let queue = Promise.resolve(); // one request at a time, in the order the images came
let nextId = 1;
let apiBase = "";
let apiError = null;

try {
  apiBase = resolveApiBase(location.href, root);
} catch (error) {
  apiError = error;
}

const context = {
  maxUploadBytes,
  pageOrigin: location.origin,
  apiLabel: apiBase ? new URL(apiBase).host : location.host,
};

/** Queue files for classification; each gets a history entry at once. */
function enqueue(files) {
  for (const file of files) {
    const entry = {
      id: String(nextId++),
      name: file.name || "pasted image",
      previewUrl: URL.createObjectURL(file),
      state: "waiting",
      // Which path answers is decided when the image arrives, by the switch at that moment.
      path: onDevice() ? "device" : "server",
      at: new Date(),
    };
    addToHistory(entry);
    queue = queue.then(() => run(entry, file));
  }
}

async function run(entry, file) {
  entry.state = "pending";
  select(entry);
  try {
    if (entry.path === "device") {
      await classifyHere(entry, file);
    } else {
      checkBeforeSending(file);
      entry.result = await classify(apiBase, file);
    }
    entry.state = "done";
  } catch (error) {
    const known = error instanceof ApiError || error instanceof DeviceError;
    entry.state = "error";
    entry.errorText = describeError(known ? error : new ApiError("unknown"), context);
    if (!known) console.error(error);
  }
  refresh(entry);
}

/** The model in this browser: downloaded on first use, with a status line meanwhile. */
async function classifyHere(entry, file) {
  if (file.size === 0) throw new ApiError("empty_file");
  if (!deviceModelReady()) {
    entry.state = "loading";
    refresh(entry);
    await loadDeviceModel(deviceManifest);
    entry.state = "pending";
    refresh(entry);
  }
  entry.result = await classifyOnDevice(file);
}

function onDevice() {
  return Boolean(deviceManifest) && $("on-device").checked;
}

function describeWhere() {
  $("footer-server").hidden = onDevice();
  $("footer-device").hidden = !onDevice();
}

/** Refuse what the server would refuse anyway, without uploading it. */
function checkBeforeSending(file) {
  if (apiError) throw apiError;
  if (file.size === 0) throw new ApiError("empty_file");
  if (maxUploadBytes && file.size > maxUploadBytes) throw new ApiError("payload_too_large");
}

function addToHistory(entry) {
  entries.unshift(entry);
  const list = $("history");
  list.prepend(historyItem(entry, select));
  while (entries.length > HISTORY_LIMIT) {
    const oldest = entries.pop();
    URL.revokeObjectURL(oldest.previewUrl);
    list.lastElementChild.remove();
  }
  $("history-empty").hidden = true;
}

function select(entry) {
  selected = entry;
  for (const button of $("history").querySelectorAll(".history-item")) {
    const current = button.dataset.entryId === entry.id;
    if (current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  showEntry(entry);
  showFeedback(entry);
}

function refresh(entry) {
  const button = $("history").querySelector(`[data-entry-id="${entry.id}"]`);
  if (button) updateHistoryItem(button, entry);
  if (selected === entry) {
    showEntry(entry);
    showFeedback(entry);
  }
}

async function showModel() {
  const info = $("model-info");
  if (apiError) {
    info.textContent = describeError(apiError, context);
    return;
  }
  try {
    const model = await describeModel(apiBase);
    const labels = Array.isArray(model.labels) ? model.labels : [];
    info.textContent = `Model ${model.name} ${model.version} · ${labels.length} classes`;
    $("classes").textContent = labels.join(", ");
    $("classes-box").hidden = labels.length === 0;
    setFeedbackLabels(labels);
  } catch (error) {
    if (error.code === "model_not_ready") {
      info.textContent = "The classifier is loading its model…";
      setTimeout(showModel, MODEL_RETRY_MS);
    } else {
      info.textContent = describeError(error, context);
    }
  }
}

function listenForFiles() {
  for (const input of [$("file-input"), $("camera-input")]) {
    input.addEventListener("change", () => {
      enqueue([...input.files]);
      input.value = ""; // so that choosing the same file again is a new change
    });
  }
  $("dropzone").addEventListener("click", () => $("file-input").click());

  // Drop anywhere on the page: a near miss should not make the browser open the file.
  let dragDepth = 0;
  const carriesFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    dragDepth += 1;
    $("dropzone").classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!carriesFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) $("dropzone").classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    $("dropzone").classList.remove("dragging");
    enqueue([...event.dataTransfer.files]);
  });

  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (files.length) {
      event.preventDefault();
      enqueue(files);
    }
  });
}

function describeLimits() {
  const limit = maxUploadBytes ? `, up to ${humanSize(maxUploadBytes)}` : "";
  $("limits").textContent = `${FORMATS}${limit}.`;
  $("api-origin").textContent = apiBase ? new URL(apiBase).host : "this server";
  if (/Mac|iPhone|iPad/.test(navigator.platform)) $("paste-key").textContent = "⌘";
  if (deviceManifest) $("on-device").addEventListener("change", describeWhere);
}

describeLimits();
listenForFiles();
initFeedback(apiBase, context);
showNothing();
showModel();
root.dataset.ready = "true"; // the page is wired up (tests wait for this)
