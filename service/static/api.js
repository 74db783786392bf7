// The HTTP side of the page: one fetch wrapper for the service's contract, and the wording a
// person reads for each kind of failure. No DOM here, so the rules stay in one small place.

export const DRAW_FIRST = "Draw a digit first";
export const NOT_READY = "The service is not ready yet, retrying…";
export const BAD_TOKEN = "That token was not accepted";

export class ApiError extends Error {
  constructor(status, body) {
    super(body.detail || body.error || `HTTP ${status}`);
    this.status = status; // 0 means the request never got an answer
    this.code = body.error;
    this.detail = body.detail;
  }
}

/** fetch + JSON + the contract's {"error", "detail"} shape. `token` adds the bearer header. */
export async function api(path, { method = "GET", body, json, token } = {}) {
  const headers = { Accept: "application/json" };
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, body, headers }).catch((err) => {
    throw new ApiError(0, { error: "network", detail: String(err) });
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** No answer at all, or 503: the service is starting, reloading or overloaded. Worth a retry. */
export const isNotReady = (err) => err instanceof ApiError && (err.status === 0 || err.status === 503);

export const isNoDigit = (err) => err instanceof ApiError && err.status === 422 && err.code === "no_digit_found";

/** Turns any failure into the sentence a person should read. */
export function explain(err) {
  if (!(err instanceof ApiError)) return err.message || String(err);
  if (isNotReady(err)) return NOT_READY;
  if (err.status === 401 || err.status === 403) return BAD_TOKEN;
  if (isNoDigit(err)) return DRAW_FIRST; // the server agrees the image is blank
  // FastAPI's own validation errors carry a list of {loc, msg} instead of a sentence.
  if (Array.isArray(err.detail)) return err.detail.map((d) => d.msg || String(d)).join("; ");
  return err.message;
}
