// Sentences for people: every way a classification can fail, and the numbers the page shows.
// The API's own messages are written for curl users ("multipart field 'file'"), so the page
// has its own sentence for each error code it knows, and falls back to the API's otherwise.

export const FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC";

// The device's sentences are shown when the server could not answer either (main.js).
const NO_SERVER = "and the server could not be reached";

const SENTENCES = {
  payload_too_large: ({ maxUploadBytes }) =>
    `This file is too large${maxUploadBytes ? `: the limit is ${humanSize(maxUploadBytes)}` : ""}. Choose a smaller image.`,
  image_too_large: () => "This image has too many pixels for the classifier. Try a smaller copy of it.",
  not_an_image: () => `This file is not an image the classifier can read. Choose a picture: ${FORMATS}.`,
  unsupported_type: () => `This kind of file is not supported. Choose a ${FORMATS} image.`,
  empty_file: () => "This file is empty. Choose another image.",
  missing_file: () => "The image did not reach the classifier. Try again.",
  model_not_ready: () => "The classifier is still starting up. Try again in a few seconds.",
  unauthorized: () =>
    "This classifier needs an API key, and this page has none to send. Ask its owner for access, or use the API with its key.",
  request_timeout: () => "The upload was too slow and the classifier stopped waiting. Check your connection and try again.",
  incomplete_body: () => "The upload was cut off before it finished. Try again.",
  // Answered by the front (nginx) itself: docs/front.md.
  rate_limited: (_, error) =>
    `Too many images from this address in a short time. Wait ${error.retryAfter && error.retryAfter > 1 ? `${error.retryAfter} seconds` : "a second"} and try again.`,
  bad_gateway: () => "The classifier is restarting. Try again in a few seconds.",
  service_unavailable: () => "The classifier is restarting. Try again in a few seconds.",
  gateway_timeout: () => "The classifier took too long to answer. Try again, or try a smaller image.",
  bad_request: () => "The classifier could not read the request this page sent. Reload the page and try again.",
  request_header_too_large: () => "The request this page sent was too large for the classifier. Reload the page and try again.",
  uri_too_long: ({ apiLabel }) => `The API address ${apiLabel} is too long. Check it.`,
  not_found: ({ apiLabel }) => `There is no classifier at ${apiLabel}. Check the API address.`,
  method_not_allowed: ({ apiLabel }) => `There is no classifier at ${apiLabel}. Check the API address.`,
  network: ({ apiLabel, pageOrigin }) =>
    `Could not reach the classifier at ${apiLabel}. It may be offline, or it may not accept requests from this page (${pageOrigin}).`,
  timeout: () => "The classifier took too long to answer. Try again, or try a smaller image.",
  internal_error: () => "The classifier failed on this image. Try again, or try another image.",
  bad_response: () => "The classifier sent an answer this page cannot read. Try again later.",
  bad_api_base: (_, error) => `The API address "${error.serverMessage}" is not a web address (http:// or https://).`,
  // "On this device": the model in the browser.
  device_unsupported: () =>
    `This browser cannot run the model itself (it lacks WebAssembly or OffscreenCanvas), ${NO_SERVER}. Try again when it can.`,
  device_model_failed: () =>
    `The model could not be loaded into this browser, ${NO_SERVER}. Check the connection and try again.`,
  device_runtime_failed: () => `The model could not be started in this browser, ${NO_SERVER}. Try again when it can.`,
  device_unreadable: () =>
    `This browser cannot read this image (some TIFF forms, HEIC), ${NO_SERVER} to classify it. Try again when it can.`,
};

/** One sentence a person can act on, for an ApiError; never the server's raw text or a trace. */
export function describeError(error, context) {
  const sentence = SENTENCES[error.code];
  if (sentence) return sentence(context, error);
  if (error.serverMessage) return error.serverMessage;
  if (error.status >= 500) return `The classifier is having trouble (HTTP ${error.status}). Try again later.`;
  if (error.status) return `The classifier refused this image (HTTP ${error.status}).`;
  return "Something went wrong while classifying this image. Try again.";
}

export function humanSize(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${formatNumber(bytes / 1024)} KB`;
  return `${formatNumber(bytes / (1024 * 1024))} MB`;
}

export function formatPercent(score) {
  if (score > 0 && score < 0.001) return "<0.1%";
  return `${(score * 100).toFixed(1)}%`;
}

export function formatDuration(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** A class name as people read it: "mobile_home_park" becomes "mobile home park". */
export function displayLabel(label) {
  return label.replace(/[_-]+/g, " ");
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}
