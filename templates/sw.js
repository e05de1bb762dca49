// The page's service worker (web/pages.py serves it at /sw.js): it keeps the page, its files and
// the device model in this browser, so that the page opens and classifies on this device with
// no network (docs/page.md, "Offline").
//
// - The page and static/ are kept whole, under this version: a new page or file on the server
//   makes a new script, which the browser installs, and the old copies go.
// - The device model is kept by the hash its manifest gives: the page asks for the model's URL
//   with ?sha256=<hash>, which is the same file forever. A manifest with another hash (a new
//   model on the server) drops the copy at once and fetches the new one, so an old model never
//   answers; a server that no longer offers a model drops it too.
// - Everything else (the API) goes to the network as it would without this script.

const VERSION = {{ version|tojson }};
const FILES = {{ files|tojson }};
const MANIFEST = {{ manifest|tojson }}; // "" when the server offers no device model
const PAGE_CACHE = `page-${VERSION}`;
const MODEL_CACHE = "device-model";

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      // no-cache: a copy the browser still holds from before is checked with the server first.
      await (await caches.open(PAGE_CACHE)).addAll(FILES.map((url) => new Request(url, { cache: "no-cache" })));
      await refreshModel().catch(() => {}); // without the model the page still opens; next visit tries again
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith("page-") && name !== PAGE_CACHE) await caches.delete(name);
      }
      if (!MANIFEST) await caches.delete(MODEL_CACHE);
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const { request } = event;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== location.origin) return;
  if (request.mode === "navigate" && url.pathname === FILES[0]) {
    // The page as kept (?api= and the like are read by the page's script); a visit online
    // also checks the server's model, in the background.
    event.waitUntil(refreshModel().catch(() => {}));
    event.respondWith(kept(FILES[0], request));
  } else if (MANIFEST && url.pathname === MANIFEST) {
    event.respondWith(manifest(request));
  } else if (MANIFEST && url.searchParams.has("sha256")) {
    event.respondWith(modelFile(request));
  } else if (FILES.includes(url.pathname)) {
    event.respondWith(kept(url.pathname, request));
  }
});

async function kept(key, request) {
  return (await caches.match(key, { cacheName: PAGE_CACHE })) ?? fetch(request);
}

/** The server's manifest when it answers (kept, and its model fetched if new), else the kept one. */
async function manifest(request) {
  const cache = await caches.open(MODEL_CACHE);
  let response;
  try {
    response = await fetch(request, { cache: "no-cache" });
  } catch {
    return (await cache.match(MANIFEST)) ?? Response.error();
  }
  if (response.status === 404) {
    await caches.delete(MODEL_CACHE); // the server offers no model for browsers now: keep none
  } else if (response.ok) {
    const { url, sha256 } = await response.clone().json();
    const file = modelUrl(url, sha256);
    for (const key of await cache.keys()) {
      if (key.url !== file && new URL(key.url).pathname !== MANIFEST) await cache.delete(key);
    }
    await cache.put(MANIFEST, response.clone());
  } else {
    return (await cache.match(MANIFEST)) ?? response; // a restarting server: what was kept
  }
  return response;
}

/** Fetch the manifest, and the model it names unless it is kept already. */
async function refreshModel() {
  if (!MANIFEST) return;
  const response = await manifest(new Request(MANIFEST));
  if (!response.ok) return;
  const { url, sha256 } = await response.json();
  await modelFile(new Request(modelUrl(url, sha256)));
}

function modelUrl(url, sha256) {
  const file = new URL(url, new URL(MANIFEST, location.href));
  file.searchParams.set("sha256", sha256);
  return file.href;
}

/** The model file of one hash: kept, or fetched, checked against its hash, and kept. */
async function modelFile(request) {
  const cache = await caches.open(MODEL_CACHE);
  const cached = await cache.match(request);
  if (cached) return cached;
  const response = await fetch(request);
  if (!response.ok) return response;
  const bytes = await response.arrayBuffer();
  const digest = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
  // Another file than the manifest named: the model changed on the server meanwhile.
  if (digest !== new URL(request.url).searchParams.get("sha256")) return Response.error();
  const file = new Response(bytes, { headers: response.headers });
  await cache.put(request, file.clone());
  return file;
}
