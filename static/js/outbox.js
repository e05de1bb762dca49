// What this browser tells the server's monitoring, with the person's consent ("Share answers
// made on this device", off by default): each answer made on this device (class, score, model,
// time; never the image) and each correction given while the server could not be reached.
// They wait in IndexedDB, so they outlive a reload and a closed tab, and are sent when the
// server answers again: answers to POST /device-predictions, corrections to POST /feedback.
// Each is deleted once the server has it; an answer carries an id made here, which the server
// records once however often it arrives.

import { ApiError, sendDevicePredictions, sendFeedback } from "./api.js";

const CONSENT_KEY = "share-device-answers"; // localStorage: "yes" while the switch is on
const DATABASE = "classifier";
const STORE = "outbox";
const BATCH = 100; // answers per request: the route's limit (web/monitoring.py)

export function sharing() {
  return localStorage.getItem(CONSENT_KEY) === "yes";
}

/** Switch sharing on or off; off also deletes whatever was waiting to be sent. */
export async function setSharing(on) {
  if (on) {
    localStorage.setItem(CONSENT_KEY, "yes");
  } else {
    localStorage.removeItem(CONSENT_KEY);
    await inStore("readwrite", (store) => store.clear());
  }
}

/** Keep an answer ({id, label, score, model_name, model_version, created_at}) to send. */
export function keepAnswer(answer) {
  return inStore("readwrite", (store) => store.add({ kind: "answer", body: answer }));
}

/** Keep a correction ({request_id, label}) to send. */
export function keepCorrection(correction) {
  return inStore("readwrite", (store) => store.add({ kind: "correction", body: correction }));
}

/** How many records wait to be sent. */
export function waiting() {
  return inStore("readonly", (store) => store.count());
}

/**
 * Send what waits, answers first (a correction names one), then delete what the server has.
 * Rejects with the ApiError that stopped it; what was not sent waits for the next call. One
 * tab sends at a time (a Web Lock), so two tabs do not send the same records at once.
 */
export function sendWaiting(apiBase) {
  const send = async () => {
    const records = await inStore("readonly", (store) => store.getAll());
    const answers = records.filter((record) => record.kind === "answer");
    for (let start = 0; start < answers.length; start += BATCH) {
      const batch = answers.slice(start, start + BATCH);
      await unlessRefused(sendDevicePredictions(apiBase, batch.map((record) => record.body)), [400]);
      await remove(batch);
    }
    for (const record of records.filter((record) => record.kind === "correction")) {
      // 404: the answer it corrects is no longer kept (docs/monitoring.md, retention).
      await unlessRefused(sendFeedback(apiBase, record.body.request_id, record.body.label), [400, 404]);
      await remove([record]);
    }
  };
  return navigator.locks ? navigator.locks.request(STORE, send) : send();
}

/** Wait for a request; a refusal that would come again (one of ``statuses``) counts as done,
 * so that one bad record does not hold back the rest. */
async function unlessRefused(sending, statuses) {
  try {
    await sending;
  } catch (error) {
    if (!(error instanceof ApiError && statuses.includes(error.status))) throw error;
  }
}

function remove(records) {
  return inStore("readwrite", (store) => records.forEach((record) => store.delete(record.key)));
}

/** Run ``work(store)`` in one transaction; resolves to its request's result once committed. */
async function inStore(mode, work) {
  const database = await new Promise((resolve, reject) => {
    const opening = indexedDB.open(DATABASE, 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore(STORE, { keyPath: "key", autoIncrement: true });
    opening.onsuccess = () => resolve(opening.result);
    opening.onerror = () => reject(opening.error);
  });
  return new Promise((resolve, reject) => {
    const transaction = database.transaction(STORE, mode);
    const request = work(transaction.objectStore(STORE));
    transaction.oncomplete = () => {
      database.close();
      resolve(request?.result);
    };
    transaction.onerror = transaction.onabort = () => {
      database.close();
      reject(transaction.error);
    };
  });
}
