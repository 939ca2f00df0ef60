// The delivery log: filters (session, webhook, state, event type, time) and paging.

import { api, get, qs } from "../api.js";
import { badge, h, table, time } from "../dom.js";
import { sinceMillis } from "./since.js";

export const title = "Deliveries";

const STATES = ["pending", "processing", "retrying", "delivered", "failed"];
const PAGE = 25;

function select(id, label, name, options, value) {
  return [
    h("label", { for: id }, label),
    h("select", { id, name },
      options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))),
  ];
}

export function controls(args, params, ctx) {
  const p = (k) => params.get(k) || "";
  const form = h("form.filters", { id: "filters", "aria-label": "Filters" },
    select("f-session", "Session", "session", [[p("session"), p("session") || "…"]], p("session")),
    select("f-webhook", "Webhook", "webhook", [["", "any"]], p("webhook")),
    select("f-status", "State", "status", [["", "any"], ...STATES.map((s) => [s, s])],
      p("status")),
    select("f-event", "Event", "event", [["", "any"]], p("event")),
    h("label", { for: "f-since" }, "Since"),
    h("input", { id: "f-since", name: "since", size: 12, placeholder: "1h", value: p("since") }),
    h("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    try {
      sinceMillis(values.since);
    } catch (err) {
      ctx.say(err.message, "error");
      return;
    }
    ctx.navigate("deliveries", [], values);
  });
  fillOptions(form, params).catch((err) => ctx.say(err.message, "error"));
  return form;
}

async function fillOptions(form, params) {
  const [sessions, hooks, doc] = await Promise.all([
    get("/api/webhook/sessions"), get("/api/webhooks"), get("/api/openapi.json"),
  ]);
  const session = params.get("session") || sessions.sessions[0]?.sessionId || "";
  const fill = (sel, options, value) => sel.replaceChildren(...options.map(([v, text]) =>
    h("option", { value: v, selected: v === value }, text)));
  fill(form.session, sessions.sessions.map((s) => [s.sessionId, s.sessionId]), session);
  const serving = hooks.webhooks.filter((w) => w.sessionId === session || w.sessionId === "*");
  fill(form.webhook, [["", "any"], ...serving.map((w) => [w.id, w.description || w.url])],
    params.get("webhook") || "");
  const events = doc.components.schemas.EventType.enum || [];
  fill(form.event, [["", "any"], ...events.map((e) => [e, e])], params.get("event") || "");
  form.session.addEventListener("change", () => {
    form.webhook.value = "";
    form.requestSubmit();
  });
}

export async function load(args, params) {
  let session = params.get("session");
  if (!session) {
    const { sessions } = await get("/api/webhook/sessions");
    session = sessions[0]?.sessionId;
    if (!session) return { session: null };
  }
  const query = qs({
    status: params.get("status"),
    event: params.get("event"),
    webhookId: params.get("webhook"),
    cursor: params.get("cursor"),
    limit: PAGE,
  });
  const page = await get(`/api/webhook/deliveries/${encodeURIComponent(session)}${query}`);
  return { session, page };
}

export function render({ session, page }, ctx, args, params) {
  if (!session) return h("p.muted", {}, "No session has deliveries yet.");
  const since = sinceMillis(params.get("since") || "");
  let rows = page.deliveries;
  const cut = since !== null && rows.some((d) => Date.parse(d.createdAt) < since);
  if (since !== null) rows = rows.filter((d) => Date.parse(d.createdAt) >= since);
  const head = ["Delivery", "Event", "State", "Attempts", "Last status", "Created", "Next / finished"];
  if (ctx.admin) head.push("Actions");
  const body = rows.map((d) => h("tr", { "data-delivery": d.id },
    h("td", {}, h("a.mono", {
      href: `#/delivery/${encodeURIComponent(session)}/${d.id}`,
      "data-key": `open-${d.id}`,
    }, d.id)),
    h("td", {}, d.event),
    h("td", {}, badge(d.status)),
    h("td.num", {}, d.attemptCount),
    h("td.num", {}, d.lastStatusCode ?? "—"),
    h("td", {}, time(d.createdAt)),
    h("td", {}, time(d.finishedAt || d.nextAttemptAt)),
    ctx.admin ? h("td.actions", {}, d.status === "failed" ? retryButton(session, d, ctx) : null)
      : null));
  const base = Object.fromEntries(params);
  delete base.cursor;
  const older = page.nextCursor && !cut
    ? h("a", { href: link({ ...base, session, cursor: page.nextCursor }) }, "Older →") : null;
  const newest = params.get("cursor") ? h("a", { href: link({ ...base, session }) }, "← Newest") : null;
  return [
    table(`Deliveries of session ${session}, newest first`, head, body, "No delivery matches."),
    h("nav.pager", { "aria-label": "Pages" }, newest, cut ? h("span.muted", {},
      "Older ones are outside the time filter.") : null, older),
  ];
}

function link(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  return `#/deliveries?${q}`;
}

export function retryButton(session, d, ctx) {
  return h("button", {
    type: "button",
    "data-key": `retry-${d.id}`,
    "aria-label": `Retry ${d.id}`,
    onclick: () => ctx.act(`Retry ${d.id}`, () => api("POST",
      `/api/webhook/deliveries/${encodeURIComponent(session)}/${d.id}/retry`)),
  }, "Retry");
}
