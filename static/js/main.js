// The page: take images (choose, photograph, drop, paste), classify them one after another
// and keep a history, newest first, that the person can go back to. Each image goes to the
// server, or to the model in this browser when the switch says so; when one path fails, the
// other answers (docs/page.md).

import { ApiError, classify, describeModel, resolveApiBase, serverDidNotAnswer } from "./api.js";
import { DeviceError, classifyOnDevice, deviceModelReady, fetchManifest, loadDeviceModel } from "./device.js";
import { initFeedback, setFeedbackLabels, showFeedback } from "./feedback.js";
import { FORMATS, describeError, humanSize } from "./messages.js";
import { keepAnswer, sendWaiting, setSharing, sharing, waiting } from "./outbox.js";
import { previewUrl } from "./preprocess.js";
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
let serverModel = null; // {name, version} from GET /model: which model the server's answers come from

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

/** Queue files for classification; each gets a history entry, in the order they came. */
async function enqueue(files) {
  for (const file of files) {
    const entry = {
      id: String(nextId++),
      name: file.name || "pasted image",
      previewUrl: await previewUrl(file),
      state: "waiting",
      // Which path answers first is decided when the image arrives, by the switch at that moment.
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
    await classifyEitherWay(entry, file);
    entry.state = "done";
    if (entry.path === "device" && sharing()) await share(entry).catch((error) => console.warn("Not kept to share:", error));
  } catch (error) {
    const known = error instanceof ApiError || error instanceof DeviceError;
    entry.state = "error";
    entry.errorText = describeError(known ? error : new ApiError("unknown"), context);
    if (!known) console.error(error);
  }
  refresh(entry);
  if (entry.state === "done" && sharing()) sendShared(); // the server may be back
}

/** Classify on the entry's path; when that fails in a way the other path may not, on the other. */
async function classifyEitherWay(entry, file) {
  try {
    return await classifyBy(entry.path, entry, file);
  } catch (error) {
    const other = entry.path === "device" ? "server" : "device";
    if (!fallsBack(error, other)) throw error;
    entry.fallback = error; // the answer says why the other path gave it
    entry.path = other;
    refresh(entry);
    try {
      return await classifyBy(other, entry, file);
    } catch (second) {
      const [server, device] = other === "device" ? [error, second] : [second, error];
      // With no server at all, the device's reason is the one that helps (unless it has no model).
      throw serverDidNotAnswer(server) && device.code !== "device_model_unavailable" ? device : server;
    }
  }
}

/** Whether a failure of one path hands the image to the other path. */
function fallsBack(error, to) {
  // From the server only when it gave no answer: one about the image would be the device's too.
  if (to === "device") return Boolean(deviceManifest) && serverDidNotAnswer(error);
  return error instanceof DeviceError; // the server reads more formats, and has its own model
}

async function classifyBy(path, entry, file) {
  if (path === "device") {
    await classifyHere(entry, file);
  } else {
    checkBeforeSending(file);
    entry.result = { ...(await classify(apiBase, file)), model: serverModel };
  }
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

/** Keep an answer made here for the server's monitoring (the person said yes to sharing). */
async function share(entry) {
  const { label, score, model } = entry.result;
  entry.result.shareId = crypto.randomUUID(); // feedback on this answer names it
  const answer = { id: entry.result.shareId, label, score, model_name: model.name, model_version: model.version };
  await keepAnswer({ ...answer, created_at: entry.at.toISOString() });
}

/** Send what waits to be shared; say how much still waits. */
async function sendShared() {
  await sendWaiting(apiBase).catch(() => {}); // no server yet: it waits for the next try
  const count = await waiting();
  $("share-note").textContent = count ? `${count} waiting in this browser to be sent to the server.` : "";
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
    serverModel = { name: model.name, version: model.version };
    showClasses(`Model ${model.name} ${model.version}`, model.labels);
  } catch (error) {
    if (error.code === "model_not_ready") {
      info.textContent = "The classifier is loading its model…";
      setTimeout(showModel, MODEL_RETRY_MS);
    } else if (deviceManifest && serverDidNotAnswer(error)) {
      await showDeviceModel(error);
    } else {
      info.textContent = describeError(error, context);
    }
  }
}

/** No server: the model kept in this browser, if there is one, answers instead. */
async function showDeviceModel(serverError) {
  try {
    const model = await fetchManifest(deviceManifest);
    showClasses(`Model ${model.name} ${model.version}, on this device: the server cannot be reached`, model.labels);
  } catch {
    $("model-info").textContent = describeError(serverError, context);
  }
}

function showClasses(title, labels) {
  labels = Array.isArray(labels) ? labels : [];
  $("model-info").textContent = `${title} · ${labels.length} classes`;
  $("classes").textContent = labels.join(", ");
  $("classes-box").hidden = labels.length === 0;
  setFeedbackLabels(labels);
}

/** The service worker keeps the page and its model for use with no network (templates/sw.js). */
async function keepForOffline() {
  if (!("serviceWorker" in navigator) || !root.dataset.serviceWorker) return;
  try {
    await navigator.serviceWorker.register(root.dataset.serviceWorker);
    await navigator.serviceWorker.ready;
  } catch (error) {
    console.warn("This page will not work offline:", error);
    return;
  }
  $("footer-offline").hidden = false;
  root.dataset.offline = "ready"; // tests wait for this
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
  $("share").checked = sharing();
  $("share").addEventListener("change", async () => {
    await setSharing($("share").checked);
    sendShared();
  });
  addEventListener("online", () => sharing() && sendShared());
}

describeLimits();
listenForFiles();
initFeedback(apiBase, context);
showNothing();
showModel();
keepForOffline();
if (sharing()) sendShared();
root.dataset.ready = "true"; // the page is wired up (tests wait for this)
