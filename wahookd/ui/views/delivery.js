// One delivery: its body, the headers sent (signatures marked) and every attempt.

import { get } from "../api.js";
import { badge, h, table, time } from "../dom.js";
import { retryButton } from "./deliveries.js";

export const title = "Delivery";
export const nav = "deliveries";

export async function load([session, id]) {
  const answer = await get(`/api/webhook/deliveries/${encodeURIComponent(session)}/${id}`);
  return answer.delivery;
}

export function render(d, ctx, [session]) {
  const facts = [
    ["Id", h("span.mono", {}, d.id)],
    ["Session", h("a", { href: `#/deliveries?session=${encodeURIComponent(session)}` }, session)],
    ["Webhook", d.webhookId ? h("a", {
      href: `#/deliveries?session=${encodeURIComponent(session)}&webhook=${d.webhookId}`,
    }, d.webhookId) : "deleted"],
    ["Event", d.event],
    ["State", badge(d.status)],
    ["Attempts", String(d.attemptCount)],
    ["Created", time(d.createdAt)],
    ["Next attempt", time(d.nextAttemptAt)],
    ["Finished", time(d.finishedAt)],
  ];
  const sent = d.sentHeaders;
  const headerRows = sent ? Object.entries(sent.headers).map(([name, value]) => {
    const signed = sent.signatures.includes(name);
    return h(signed ? "tr.signature" : "tr", {},
      h("th.mono", { scope: "row" }, name),
      h("td.mono.wrap", {}, value, signed ? h("span.badge.s-signature", {
        title: "Recomputed with the webhook's current secret: differs from what was sent if "
          + "the secret changed since.",
      }, "signature, recomputed") : null));
  }) : [];
  const attempts = d.attempts.map((a) => h("tr", {},
    h("td.num", {}, a.attempt),
    h("td", {}, time(a.startedAt)),
    h("td.num", {}, a.statusCode ?? "—"),
    h("td.num", {}, a.responseTime),
    h("td", {}, badge(a.outcome)),
    h("td.wrap", {}, a.error || "—"),
    h("td", {}, a.responseBody ? h("pre.excerpt", {}, a.responseBody) : "—")));
  return [
    h("div.actions-bar", {},
      ctx.admin && d.status === "failed" ? retryButton(session, d, ctx) : null),
    h("dl.facts", {}, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("section", { "aria-labelledby": "attempts-title" },
      h("h3", { id: "attempts-title" }, "Attempts"),
      table("Every attempt, oldest first",
        ["#", "Started", "Status", "Time", "Outcome", "Error", "Response (excerpt)"],
        attempts, "No attempt yet.")),
    h("section", { "aria-labelledby": "headers-title" },
      h("h3", { id: "headers-title" }, sent ? `Headers sent (attempt ${sent.attempt})` : "Headers sent"),
      sent ? table("Headers of the latest attempt; signatures marked", ["Header", "Value"],
        headerRows) : h("p.muted", {}, d.webhookId ? "No attempt yet." : "The webhook was deleted.")),
    h("section", { "aria-labelledby": "body-title" },
      h("h3", { id: "body-title" }, "Body"),
      h("pre.body", { tabindex: "0", "aria-label": "The event body" },
        JSON.stringify(d.payload, null, 2))),
  ];
}
