// Webhooks: every one (default, extra, static) with its health; pause/resume, send a test.

import { api, get } from "../api.js";
import { badge, h, table, time } from "../dom.js";

export const title = "Webhooks";

const RANK = { failing: 0, disabled: 1, healthy: 2 };

/** Sort key: failing first, then disabled, then healthy. */
export function healthRank(w) {
  return RANK[w.health.state] ?? 3;
}

function kind(w) {
  if (w.static) return "static";
  return w.default ? "default" : "extra";
}

/** A link to the webhook's deliveries (a static one: in the first session it serves). */
export function webhookLink(w, ctx) {
  const label = w.description ? `${w.description} (${w.url})` : w.url;
  if (w.sessionId === "*") return h("span", { title: w.id }, label);
  return h("a", {
    href: `#/deliveries?session=${encodeURIComponent(w.sessionId)}&webhook=${w.id}`,
    title: `${w.id}: its deliveries`,
  }, label);
}

export function controls(args, params, ctx) {
  if (!ctx.admin) return null;
  const out = h("output", { id: "test-result", for: "test-url" });
  const form = h("form.inline", { id: "test-form", "aria-labelledby": "test-title" },
    h("h3", { id: "test-title" }, "Send a test"),
    h("label", { for: "test-url" }, "URL"),
    h("input", { id: "test-url", name: "url", type: "url", required: true, size: 40 }),
    h("label", { for: "test-payload" }, "Payload (JSON, optional)"),
    h("input", { id: "test-payload", name: "payload", size: 30, placeholder: '{"ping": true}' }),
    h("button", { type: "submit" }, "Send test"),
    out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { url: form.url.value };
    if (form.payload.value.trim()) {
      try {
        body.payload = JSON.parse(form.payload.value);
      } catch {
        out.textContent = "The payload is not valid JSON.";
        return;
      }
    }
    out.textContent = "Sending…";
    const answer = await ctx.act("Send a test", () => api("POST", "/api/webhook/test", body));
    out.textContent = answer
      ? `${answer.success ? "OK" : "Failed"}: status ${answer.statusCode ?? "none"}, `
        + `${answer.responseTime}${answer.error ? `, ${answer.error}` : ""}`
        + `${answer.responseBody ? ` — ${answer.responseBody.slice(0, 200)}` : ""}`
      : "Not sent (see the message above).";
  });
  return form;
}

export async function load() {
  return (await get("/api/webhooks")).webhooks;
}

export function render(hooks, ctx) {
  const sorted = [...hooks].sort((a, b) => healthRank(a) - healthRank(b)
    || a.sessionId.localeCompare(b.sessionId));
  const head = ["Webhook", "Session", "Kind", "Events", "Health", "Failing since",
    "Last status", "Last attempt"];
  if (ctx.admin) head.push("Actions");
  const rows = sorted.map((w) => h("tr", { "data-webhook": w.id },
    h("td", {}, webhookLink(w, ctx)),
    h("td", {}, w.sessionId === "*" ? "every session" : w.sessionId),
    h("td", {}, kind(w)),
    h("td", {}, w.events.join(", ")),
    h("td", {}, badge(w.health.state)),
    h("td", {}, time(w.health.failingSince)),
    h("td.num", {}, w.health.lastStatus ?? "—"),
    h("td", {}, time(w.health.lastAttemptAt)),
    ctx.admin ? h("td.actions", {}, actions(w, ctx)) : null));
  return table("Webhooks, failing first", head, rows, "No webhook yet.");
}

function actions(w, ctx) {
  const out = [];
  if (!w.static) {
    const pause = w.isActive;
    out.push(h("button", {
      type: "button",
      "data-key": `toggle-${w.id}`,
      "aria-label": `${pause ? "Pause" : "Resume"} ${w.description || w.url} (${w.sessionId})`,
      onclick: () => ctx.act(pause ? "Pause" : "Resume",
        () => api("PATCH", `/api/webhooks/${w.id}`, { isActive: !pause })),
    }, pause ? "Pause" : "Resume"));
  }
  out.push(h("button", {
    type: "button",
    "data-key": `test-${w.id}`,
    "aria-label": `Test ${w.description || w.url} (${w.sessionId})`,
    onclick: () => {
      const input = document.getElementById("test-url");
      input.value = w.url.replace(/\?…$/, "");
      input.focus();
    },
  }, "Test…"));
  return out;
}
