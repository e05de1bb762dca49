// Talking to the classification API: where it is, POST /predict, GET /model, POST /feedback,
// POST /device-predictions.
// Every failure becomes an ApiError with a code, so the page can say what happened in words.

const REQUEST_TIMEOUT_MS = 60_000;
// Over the server's per-client rate limit (429, docs/front.md), the page waits as long as
// Retry-After says and sends once more, so a long queue of images paces itself to the limit.
const RATE_LIMIT_RETRIES = 1;
const LONGEST_RETRY_AFTER_S = 10;

export class ApiError extends Error {
  constructor(code, { status = 0, serverMessage = "", retryAfter = null } = {}) {
    super(serverMessage || code);
    this.name = "ApiError";
    this.code = code;
    this.status = status;
    this.serverMessage = serverMessage;
    this.retryAfter = retryAfter; // seconds, from a 429's Retry-After
  }
}

/** The API's base URL: ?api= wins over the page's data-api-base; "" means the page's origin. */
export function resolveApiBase(pageUrl, root) {
  const raw = (new URL(pageUrl).searchParams.get("api") ?? root.dataset.apiBase ?? "").trim();
  if (!raw) return "";
  let url;
  try {
    url = new URL(raw, pageUrl);
  } catch {
    throw new ApiError("bad_api_base", { serverMessage: raw });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ApiError("bad_api_base", { serverMessage: raw });
  }
  return url.href.replace(/\/+$/, "");
}

/** Classify one file; resolves to {label, score, top, elapsedMs} or rejects with ApiError. */
export async function classify(base, file) {
  const form = new FormData();
  form.append("file", file, file.name || "image");
  const started = performance.now();
  // No ?top=: the server's default is the 5 best classes, capped at the model's class count.
  const { body, response } = await send(`${base}/predict`, { method: "POST", body: form });
  const elapsedMs = performance.now() - started;
  if (typeof body.label !== "string" || typeof body.score !== "number") {
    throw new ApiError("bad_response", { status: 200 });
  }
  const top = Array.isArray(body.top) && body.top.length ? body.top : [{ label: body.label, score: body.score }];
  // The answer's id names it in feedback (POST /feedback); "" if a proxy dropped the header.
  const requestId = response.headers.get("X-Request-ID") || "";
  return { label: body.label, score: body.score, top, elapsedMs, requestId };
}

/** Tell the server the right class of an earlier answer; resolves to {correct, replaced, ...}. */
export function sendFeedback(base, requestId, label) {
  return request(`${base}/feedback`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ request_id: requestId, label }),
  });
}

/** Report answers made on this device (web/monitoring.py); resolves to {recorded, already_recorded}. */
export function sendDevicePredictions(base, predictions) {
  return request(`${base}/device-predictions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ predictions }),
  });
}

/** Whether the server gave no answer (unreachable, too slow, down or restarting), as opposed
 * to an answer about the image or the request. */
export function serverDidNotAnswer(error) {
  return error instanceof ApiError && (["network", "timeout"].includes(error.code) || error.status >= 500);
}

/** The model's metadata from GET /model: name, version, labels, ... */
export function describeModel(base) {
  return request(`${base}/model`, { method: "GET" });
}

async function request(url, init) {
  return (await send(url, init)).body;
}

/** The parsed body and the response (for its headers), or an ApiError. */
async function send(url, init, retries = RATE_LIMIT_RETRIES) {
  let response;
  try {
    // No cookies: the API needs none, and a cross-origin call stays a simple CORS request.
    response = await fetch(url, { ...init, credentials: "omit", signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (error) {
    // A refused connection and a CORS refusal look the same from here: a TypeError.
    throw new ApiError(error.name === "TimeoutError" ? "timeout" : "network");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: a proxy's error page, say. Its text is never shown to the person.
  }
  if (!response.ok) {
    const error = body && typeof body.error === "object" ? body.error : {};
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    if (response.status === 429 && retries > 0) {
      const seconds = Number.isInteger(retryAfter) && retryAfter > 0 ? retryAfter : 1;
      if (seconds <= LONGEST_RETRY_AFTER_S) {
        await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
        return send(url, init, retries - 1);
      }
    }
    throw new ApiError(typeof error.code === "string" ? error.code : "http_error", {
      status: response.status,
      serverMessage: typeof error.message === "string" ? error.message : "",
      retryAfter: Number.isInteger(retryAfter) && retryAfter > 0 ? retryAfter : null,
    });
  }
  if (body === null || typeof body !== "object") {
    throw new ApiError("bad_response", { status: response.status });
  }
  return { body, response };
}
