// Building DOM without innerHTML (no markup from data, CSP without inline anything).

/** h("tag.class", {attr: value, onclick: fn}, ...children): an element. */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElementNS(
    SVG_TAGS.has(tag) ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  if (classes.length) el.setAttribute("class", classes.join(" "));
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "value" && "value" in el) {
      el.value = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

const SVG_TAGS = new Set(["svg", "rect", "line", "text", "g", "title"]);

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** A UTC ISO time shown in local time, the UTC time on hover. */
export function time(iso) {
  if (!iso) return h("span.muted", {}, "—");
  const d = new Date(iso);
  const local = d.toLocaleString(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  return h("time", { datetime: iso, title: `${iso} (UTC)` }, local);
}

/** Replace a container's children in one step, keeping the focus on the same control. */
export function swap(container, nodes) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.getAttribute("data-key") : null;
  container.replaceChildren(...[nodes].flat(Infinity).filter(Boolean));
  if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus({ preventScroll: true });
  }
}

export function badge(state) {
  return h(`span.badge.s-${state}`, {}, state);
}

export function table(caption, head, rows, empty = "Nothing here.") {
  return h("div.scroll", {},
    h("table", {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.length ? rows
        : h("tr", {}, h("td.muted", { colspan: head.length }, empty)))));
}
