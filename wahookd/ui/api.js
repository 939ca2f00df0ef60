// The JSON API with the operator's token, and what the page knows of that token.

const KEY = "wahookd.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The daemon did not answer at all (down, or the network is). */
export class Unreachable extends Error {}

/** Take a token from the URL fragment (#token=...) into sessionStorage, then drop it there. */
export function adoptFragmentToken() {
  const m = location.hash.match(/^#token=([A-Za-z0-9._-]+)/);
  if (!m) return;
  sessionStorage.setItem(KEY, m[1]);
  history.replaceState(null, "", location.pathname + "#/overview");
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value.trim());
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

/** The token's claims (not verified here: the daemon does; the page only hides actions). */
export function claims() {
  const t = token();
  if (!t) return null;
  try {
    const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

/** The role the token claims; absent means admin (SPEC §3). */
export function role() {
  const c = claims();
  return c ? c.role || "admin" : null;
}

export function isAdmin() {
  return role() === "admin";
}

/** A call of the JSON API; resolves to its JSON body, throws ApiError or Unreachable. */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new Unreachable(String(err));
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    if (resp.status >= 500 || resp.status === 0) throw new Unreachable(`HTTP ${resp.status}`);
  }
  if (!resp.ok) {
    if (resp.status === 503 || resp.status === 502 || resp.status === 504) {
      throw new Unreachable(data?.error?.message || `HTTP ${resp.status}`);
    }
    throw new ApiError(resp.status, data?.error?.message || `HTTP ${resp.status}`);
  }
  return data;
}

export const get = (path) => api("GET", path);

/** A query string from the non-empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
