// The public REST API, as the dashboard uses it: the session cookie for identity,
// the CSRF token on every state-changing request, problem documents as errors.

const CSRF_COOKIE = "postd_csrf";
const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** A failed call: `status`, the problem document's `code`, `detail` and `errors`. */
export class ApiError extends Error {
  constructor(status, problem) {
    const doc = problem && typeof problem === "object" ? problem : {};
    super(doc.detail || doc.title || `The request failed (HTTP ${status}).`);
    this.status = status;
    this.code = doc.code || "http_error";
    this.errors = Array.isArray(doc.errors) ? doc.errors : [];
    this.problem = doc;
    this.retryAfter = null;
  }
}

/** Called with no argument when the session has ended (401). */
let onSignedOut = () => {};
export function whenSignedOut(handler) {
  onSignedOut = handler;
}

function readCookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

export function hasSession() {
  return readCookie(CSRF_COOKIE) !== "";
}

/** A URL of the API with query parameters; arrays repeat the parameter. */
export function apiUrl(path, query) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) {
      for (const item of value) url.searchParams.append(key, item);
    } else {
      url.searchParams.set(key, String(value));
    }
  }
  return url;
}

export function newIdempotencyKey() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
  const bytes = window.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Call the API. Resolves to the parsed JSON (null for 204); rejects with ApiError.
 * options: query, body (JSON), idempotencyKey, signal.
 */
export async function api(method, path, options = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", signal: options.signal };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  if (!SAFE.has(method)) headers["X-CSRF-Token"] = readCookie(CSRF_COOKIE);
  if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
  let response;
  try {
    response = await fetch(apiUrl(path, options.query), init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, { detail: "POSTD could not be reached. Check the connection and try again." });
  }
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    error.retryAfter = Number(response.headers.get("Retry-After")) || null;
    if (response.status === 401 && path !== "/v1/sessions") onSignedOut();
    throw error;
  }
  return data;
}

export const get = (path, query, signal) => api("GET", path, { query, signal });
export const post = (path, body, options = {}) => api("POST", path, { ...options, body });

/** Every page of a cursor-paginated list (use for bounded work such as bulk replay). */
export async function* allPages(path, query, pageSize = 500) {
  let cursor;
  do {
    const page = await get(path, { ...query, limit: pageSize, cursor });
    yield page.items;
    cursor = page.next_cursor;
  } while (cursor);
}

// ---------------------------------------------------------------- session

export async function signIn(apiKey) {
  return post("/v1/sessions", { api_key: apiKey });
}

export async function signOut() {
  return api("DELETE", "/v1/session");
}

export async function whoAmI() {
  return get("/v1/me");
}

// ---------------------------------------------------------------- shared look-ups

let capabilitiesPromise = null;
/** The capability matrix, fetched once per page load. */
export function capabilities() {
  if (!capabilitiesPromise) {
    capabilitiesPromise = get("/v1/capabilities").then((body) => body.platforms).catch((err) => {
      capabilitiesPromise = null;
      throw err;
    });
  }
  return capabilitiesPromise;
}
