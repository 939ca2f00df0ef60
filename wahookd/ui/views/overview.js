// Overview: queue counts, deliveries per minute over the last hour, failing webhooks first.

import { get } from "../api.js";
import { badge, h, table, time } from "../dom.js";
import { healthRank, webhookLink } from "./webhooks.js";

export const title = "Overview";

export async function load() {
  const [queue, activity, hooks] = await Promise.all([
    get("/api/webhook/queue"),
    get("/api/webhook/activity?minutes=60"),
    get("/api/webhooks"),
  ]);
  return { queue: queue.queue, activity, webhooks: hooks.webhooks };
}

export function render({ queue, activity, webhooks }, ctx) {
  const cards = ["pending", "processing", "retrying", "failed"].map((state) =>
    h(`div.card.s-${state}`, {},
      h("dt", {}, state),
      h("dd", { "data-count": state }, String(queue[state]))));
  const hooks = [...webhooks].sort((a, b) => healthRank(a) - healthRank(b));
  const rows = hooks.map((w) => h("tr", {},
    h("td", {}, webhookLink(w, ctx)),
    h("td", {}, w.sessionId === "*" ? "every session" : w.sessionId),
    h("td", {}, badge(w.health.state)),
    h("td", {}, w.health.failingSince ? time(w.health.failingSince) : "—"),
    h("td.num", {}, w.health.lastStatus ?? "—"),
    h("td", {}, time(w.health.lastAttemptAt))));
  return [
    h("section", { "aria-labelledby": "queue-title" },
      h("h3", { id: "queue-title" }, "Queue"),
      h("dl.cards", {}, cards)),
    h("section", { "aria-labelledby": "activity-title" },
      h("h3", { id: "activity-title" }, "Deliveries per minute, last hour"),
      chart(activity)),
    h("section", { "aria-labelledby": "health-title" },
      h("h3", { id: "health-title" }, "Webhooks, failing first"),
      table("Every webhook and its health",
        ["Webhook", "Session", "Health", "Failing since", "Last status", "Last attempt"],
        rows, "No webhook yet.")),
  ];
}

function chart(activity) {
  const minutes = activity.minutes;
  const W = 600;
  const H = 120;
  const step = W / minutes.length;
  const peak = Math.max(1, ...minutes.map((m) => m.delivered + m.failed));
  const scale = (H - 4) / peak;
  const bars = minutes.map((m, i) => {
    const dh = m.delivered * scale;
    const fh = m.failed * scale;
    const x = i * step + 1;
    const w = Math.max(step - 2, 1);
    const label = `${new Date(m.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`
      + ` (${m.at.slice(11, 16)} UTC): ${m.delivered} delivered, ${m.failed} failed`;
    return h("g", {},
      h("title", {}, label),
      h("rect.bar-hit", { x: i * step, y: 0, width: step, height: H }),
      m.delivered ? h("rect.bar-ok", { x, y: H - dh, width: w, height: dh }) : null,
      m.failed ? h("rect.bar-bad", { x, y: H - dh - fh, width: w, height: fh }) : null);
  });
  const summary = `${activity.delivered} delivered and ${activity.failed} failed in the last `
    + `${minutes.length} minutes; at most ${peak} in a minute.`;
  return h("figure.chart", {},
    h("div.chart-peak", { "aria-hidden": "true" }, `${peak} per minute`),
    h("svg", {
      viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary,
      preserveAspectRatio: "none", class: "chart-svg",
    },
    h("line.axis", { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }),
    bars),
    h("div.chart-axis", {},
      h("span", {}, "60 min ago"),
      h("span.legend", {},
        h("span.key.key-ok", {}, "delivered"), " ", h("span.key.key-bad", {}, "failed")),
      h("span", {}, "now")),
    h("figcaption", {}, summary));
}
