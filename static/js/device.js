// "On this device": the same model, run in the browser with onnxruntime-web (WebAssembly).
// Everything comes from the page's own origin: the manifest and model.onnx from the app
// (web/device.py), onnxruntime-web from static/vendor/. The page loads them on first use; the
// service worker keeps them for use with no network.

import { decodeToRgb, toModelInput, INPUT_SIZE, UnreadableImage } from "./preprocess.js";

const ORT_DIR = new URL("../vendor/onnxruntime-web/", import.meta.url).href;
const TOP_K = 5; // as the server's default

export class DeviceError extends Error {
  constructor(code, detail = "") {
    super(detail || code);
    this.name = "DeviceError";
    this.code = code;
    this.detail = detail;
  }
}

let loading = null; // one download for every classification that waits on it
let loaded = null;

export function deviceModelReady() {
  return loaded !== null;
}

/** Load onnxruntime-web and the model once, from the manifest's URL (web/device.py). */
export function loadDeviceModel(manifestUrl) {
  if (!loading) {
    loading = load(manifestUrl).then(
      (model) => (loaded = model),
      (error) => {
        loading = null; // a later try may succeed (the network came back)
        throw error;
      },
    );
  }
  return loading;
}

async function load(manifestUrl) {
  if (typeof WebAssembly !== "object" || typeof OffscreenCanvas !== "function") {
    throw new DeviceError("device_unsupported");
  }
  const manifest = await fetchManifest(manifestUrl);
  let ort;
  try {
    ort = await import(`${ORT_DIR}ort.wasm.bundle.min.mjs`);
  } catch (error) {
    throw new DeviceError("device_runtime_failed", String(error));
  }
  // The bundle carries its JavaScript glue; only the .wasm binary is fetched, from here.
  ort.env.wasm.wasmPaths = { wasm: `${ORT_DIR}ort-wasm-simd-threaded.wasm` };
  // One thread, no worker: threads need a cross-origin-isolated page (COOP/COEP headers),
  // which would also stop the page from calling an API on another origin.
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  try {
    const session = await ort.InferenceSession.create(modelFileUrl(manifestUrl, manifest), { executionProviders: ["wasm"] });
    return { ort, session, labels: manifest.labels, manifest };
  } catch (error) {
    throw new DeviceError("device_model_failed", String(error));
  }
}

/** The model file's URL, named by its hash: the service worker (templates/sw.js) keeps each
 * hash's file, so a new model on the server is a new URL and an old one never answers. */
function modelFileUrl(manifestUrl, manifest) {
  const url = new URL(manifest.url, new URL(manifestUrl, location.href));
  url.searchParams.set("sha256", manifest.sha256);
  return url.href;
}

/** The manifest: labels, hash, URL, the model's name and version (the kept one with no network). */
export async function fetchManifest(url) {
  let response;
  try {
    response = await fetch(url, { credentials: "omit" });
  } catch {
    throw new DeviceError("device_model_failed");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new DeviceError(body?.error?.code === "device_model_unavailable" ? "device_model_unavailable" : "device_model_failed");
  }
  if (!body || !Array.isArray(body.labels) || !body.labels.length || !body.url || !body.sha256) throw new DeviceError("device_model_failed");
  return body;
}

/** Classify one file in the browser; resolves to {label, score, top, elapsedMs, model}. */
export async function classifyOnDevice(file) {
  if (!loaded) throw new DeviceError("device_model_failed");
  const { ort, session, labels, manifest } = loaded;
  const started = performance.now();
  let image;
  try {
    image = await decodeToRgb(file);
  } catch (error) {
    if (error instanceof UnreadableImage) throw new DeviceError("device_unreadable");
    throw error;
  }
  const input = new ort.Tensor("float32", toModelInput(image), [1, 3, INPUT_SIZE, INPUT_SIZE]);
  const outputs = await session.run({ [session.inputNames[0]]: input });
  const logits = outputs[session.outputNames[0]].data;
  const top = topClasses(softmax(logits), labels, Math.min(TOP_K, labels.length));
  const model = { name: manifest.name, version: manifest.version };
  return { label: top[0].label, score: top[0].score, top, elapsedMs: performance.now() - started, model };
}

export function softmax(logits) {
  const largest = Math.max(...logits);
  const exps = Array.from(logits, (value) => Math.exp(value - largest));
  const total = exps.reduce((sum, value) => sum + value, 0);
  return exps.map((value) => value / total);
}

function topClasses(probabilities, labels, count) {
  return probabilities
    .map((score, index) => ({ label: labels[index], score }))
    .sort((a, b) => b.score - a.score)
    .slice(0, count);
}
