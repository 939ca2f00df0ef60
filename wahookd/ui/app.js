// The console's entry: token, router, refresh loop with backoff, unreachable banner.

import {
  ApiError, Unreachable, adoptFragmentToken, forgetToken, isAdmin, role, setToken, token,
} from "./api.js";
import { h, swap } from "./dom.js";
import * as overview from "./views/overview.js";
import * as sessions from "./views/sessions.js";
import * as webhooks from "./views/webhooks.js";
import * as deliveries from "./views/deliveries.js";
import * as delivery from "./views/delivery.js";

const VIEWS = { overview, sessions, webhooks, deliveries, delivery };
const REFRESH_MS = 5000;
const MAX_BACKOFF_MS = 60000;

const $ = (id) => document.getElementById(id);
let route = null; // {name, args, params, view, controls, body}
let timer = null;
let generation = 0; // a newer navigation makes older answers moot
let failures = 0;
let offlineSince = null;

/** Parse "#/name/arg/arg?k=v" */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "") || "overview";
  const [path, query = ""] = raw.split("?");
  const [name, ...args] = path.split("/").map(decodeURIComponent);
  return { name: VIEWS[name] ? name : "overview", args, params: new URLSearchParams(query) };
}

export function navigate(name, args = [], params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  location.hash = `#/${[name, ...args].map(encodeURIComponent).join("/")}${s ? `?${s}` : ""}`;
}

function say(text, kind = "info") {
  const box = $("status");
  box.className = `status ${kind}`;
  box.setAttribute("role", kind === "error" ? "alert" : "status");
  box.textContent = text;
}

const ctx = {
  admin: false,
  navigate,
  refresh: () => schedule(0),
  say,
  /** Run an action (after confirming, when it drops data), report it, refresh. */
  async act(label, fn, confirmText) {
    if (confirmText && !window.confirm(confirmText)) return null;
    try {
      const answer = await fn();
      say(`${label}: done.`, "ok");
      schedule(0);
      return answer;
    } catch (err) {
      say(`${label} failed: ${err.message}`, "error");
      return null;
    }
  },
};

function showLogin(message) {
  $("login").hidden = false;
  $("view").replaceChildren();
  $("role").hidden = true;
  $("forget").hidden = true;
  if (message) say(message, "error");
  $("token-input").focus();
}

function start() {
  if (!token()) {
    showLogin();
    return;
  }
  $("login").hidden = true;
  ctx.admin = isAdmin();
  $("role").hidden = false;
  $("role").textContent = `role: ${role()}`;
  $("forget").hidden = false;
  document.body.classList.toggle("admin", ctx.admin);
  open();
}

/** Show the view of the current hash: its controls once, its data now and on each refresh. */
function open() {
  generation += 1;
  const { name, args, params } = parseHash();
  const view = VIEWS[name];
  for (const a of document.querySelectorAll("nav a")) {
    const current = a.dataset.view === (view.nav || name);
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${view.title} · wahookd`;
  const body = h("div.view-body", { "aria-busy": "true" });
  const controls = view.controls ? view.controls(args, params, ctx) : null;
  swap($("view"), [h("h2", {}, view.title), controls, body]);
  route = { name, args, params, view, body };
  schedule(0);
}

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(refresh, ms);
}

async function refresh() {
  if (!route || !token()) return;
  const mine = generation;
  const { view, args, params, body } = route;
  try {
    const data = await view.load(args, params, ctx);
    if (mine !== generation) return;
    swap(body, view.render(data, ctx, args, params));
    body.setAttribute("aria-busy", "false");
    failures = 0;
    if (offlineSince) {
      offlineSince = null;
      say("Connected again.", "ok");
    }
    document.body.classList.remove("offline");
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} s.`;
    schedule(REFRESH_MS);
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof ApiError && err.status === 401) {
      forgetToken();
      showLogin(`The token was refused: ${err.message}. Paste a new one.`);
      return;
    }
    if (err instanceof Unreachable) {
      failures += 1;
      offlineSince = offlineSince || new Date();
      const wait = Math.min(REFRESH_MS * 2 ** failures, MAX_BACKOFF_MS);
      document.body.classList.add("offline");
      say(`The daemon is unreachable (since ${offlineSince.toLocaleTimeString()}); `
        + `the numbers are hidden until it answers. Next try in ${Math.round(wait / 1000)} s.`,
      "error");
      schedule(wait);
      return;
    }
    swap(body, h("p.error", { role: "alert" }, err.message));
    body.setAttribute("aria-busy", "false");
    schedule(REFRESH_MS);
  }
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token-input").value.trim();
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(value)) {
    say("That does not look like a JWT (three base64url parts).", "error");
    return;
  }
  setToken(value);
  $("token-input").value = "";
  say("");
  start();
});
$("forget").addEventListener("click", () => {
  forgetToken();
  clearTimeout(timer);
  route = null;
  showLogin();
});
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#token=")) adoptFragmentToken();
  if (token()) start();
});

adoptFragmentToken();
start();
