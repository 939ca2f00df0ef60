// Sessions: queue and stats of each; retry its failed deliveries, clear its queue.

import { api, get, qs } from "../api.js";
import { h, table, time } from "../dom.js";
import { sinceParam } from "./since.js";

export const title = "Sessions";

export function controls(args, params, ctx) {
  if (!ctx.admin) return null;
  return h("form.inline", { id: "since-form", onsubmit: (ev) => ev.preventDefault() },
    h("label", { for: "retry-since" }, "Retry failed since (2h, or a local time; empty: all)"),
    h("input", { id: "retry-since", name: "since", size: 22, placeholder: "2h" }));
}

export async function load() {
  return (await get("/api/webhook/sessions")).sessions;
}

export function render(sessions, ctx) {
  const head = ["Session", "Webhooks", "Pending", "Processing", "Retrying", "Failed",
    "Delivered", "Avg. response", "Last delivery"];
  if (ctx.admin) head.push("Actions");
  const rows = sessions.map((s) => h("tr", { "data-session": s.sessionId },
    h("th", { scope: "row" },
      h("a", { href: `#/deliveries?session=${encodeURIComponent(s.sessionId)}` }, s.sessionId)),
    h("td", {}, s.webhooks.map((w) =>
      h("span.hook", { title: w.url }, `${w.kind}${w.isActive ? "" : " (paused)"}`))),
    h("td.num", {}, s.queue.pending),
    h("td.num", {}, s.queue.processing),
    h("td.num", {}, s.queue.retrying),
    h("td.num", {}, s.queue.failed),
    h("td.num", {}, s.stats.successful),
    h("td.num", {}, s.stats.averageResponseTime),
    h("td", {}, time(s.stats.lastDelivery)),
    ctx.admin ? h("td.actions", {}, actions(s, ctx)) : null));
  return table("Sessions with a webhook or queued deliveries", head, rows, "No session yet.");
}

function actions(s, ctx) {
  const path = encodeURIComponent(s.sessionId);
  const retry = async () => {
    let since;
    try {
      since = sinceParam(document.getElementById("retry-since").value);
    } catch (err) {
      ctx.say(err.message, "error");
      return;
    }
    const answer = await ctx.act(`Retry failed of ${s.sessionId}`,
      () => api("POST", `/api/webhook/queue/${path}/retry-failed${qs({ since })}`));
    if (answer) ctx.say(`Queued ${answer.retried} failed deliveries of ${s.sessionId} again`
      + `${answer.parked ? ` (${answer.parked} wait behind a paused webhook)` : ""}.`, "ok");
  };
  const total = s.queue.pending + s.queue.retrying + s.queue.failed;
  return [
    h("button", {
      type: "button", "data-key": `retry-${s.sessionId}`, onclick: retry,
      "aria-label": `Retry failed deliveries of ${s.sessionId}`,
    }, "Retry failed"),
    h("button.danger", {
      type: "button",
      "data-key": `clear-${s.sessionId}`,
      "aria-label": `Clear the queue of ${s.sessionId}`,
      onclick: () => ctx.act(`Clear the queue of ${s.sessionId}`,
        () => api("DELETE", `/api/webhook/queue/${path}`),
        `Drop the ${total} queued deliveries (pending, retrying, failed) of session `
        + `${s.sessionId}? They will not be sent. Those in flight finish.`),
    }, "Clear queue"),
  ];
}
