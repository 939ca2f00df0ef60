// "since" as the operator types it: a duration back from now (2h) or a local time.

const DURATION = /^[0-9]+(ms|s|m|h|d)$/;

/** The API's `since`: the duration as typed, or the local time as UTC ISO; null if empty. */
export function sinceParam(text) {
  const value = text.trim();
  if (!value) return null;
  if (DURATION.test(value)) return value;
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw new Error(`"${value}" is neither a duration (2h) nor a time`);
  return d.toISOString();
}

/** The same as a time (ms since the epoch) for filtering on the page; null if empty. */
export function sinceMillis(text) {
  const param = sinceParam(text);
  if (param === null) return null;
  const m = param.match(DURATION);
  if (!m) return Date.parse(param);
  const n = parseInt(param, 10);
  const unit = { ms: 1, s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[m[1]];
  return Date.now() - n * unit;
}
