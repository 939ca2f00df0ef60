// A minimal wahookd webhook receiver (Node.js 18+, Express 4).
//
//     npm ci
//     WEBHOOK_SECRET=your_webhook_secret_key PORT=3000 node server.js
//
// It verifies X-Webhook-Signature in constant time (401 otherwise) and, when present,
// the Standard Webhooks headers; answers 200 at once and does the work after
// (setImmediate); processes each X-Webhook-Id once; and has a handler for each of the
// eight event types.
//
// It listens on 127.0.0.1 over plain HTTP: put a TLS reverse proxy in front (wahookd
// sends to https:// URLs only, unless its config says `require_https = false`).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const express = require('express');

const SECRET = process.env.WEBHOOK_SECRET;
if (!SECRET) {
  // fail at start, not with an HMAC keyed by "undefined" on every request
  console.error('WEBHOOK_SECRET is not set');
  process.exit(1);
}
const PORT = Number(process.env.PORT || 3000);
const RECEIVED_LOG = process.env.RECEIVED_LOG; // a JSON line per processed delivery (tests)
const MAX_SEEN_IDS = 10000;
const TOLERANCE_S = 5 * 60; // Standard Webhooks: refuse older or future timestamps (replays)

// Constant-time equality of two strings; false, not an exception, when lengths differ
// (crypto.timingSafeEqual throws a RangeError on unequal lengths, a 500 in Express).
function safeEqual(a, b) {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

// X-Webhook-Signature: "sha256=" + hex HMAC-SHA256(secret, raw body).
function verifySignature(body, header) {
  const expected = 'sha256=' + crypto.createHmac('sha256', SECRET).update(body).digest('hex');
  return typeof header === 'string' && safeEqual(expected, header);
}

// The Standard Webhooks key: base64 after "whsec_", else the secret's UTF-8 bytes.
function standardKey(secret) {
  if (secret.startsWith('whsec_')) {
    const encoded = secret.slice('whsec_'.length);
    if (/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) {
      const key = Buffer.from(encoded, 'base64');
      if (key.length > 0) return key;
    }
  }
  return Buffer.from(secret, 'utf8');
}

// webhook-id/-timestamp/-signature: null when absent, else whether one v1 matches.
function verifyStandard(body, req) {
  const id = req.get('webhook-id');
  const timestamp = req.get('webhook-timestamp');
  const signatures = req.get('webhook-signature');
  if (!id || !timestamp || !signatures) return null;
  if (!/^\d+$/.test(timestamp)) return false;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_S) return false;
  const expected = crypto
    .createHmac('sha256', standardKey(SECRET))
    .update(`${id}.${timestamp}.`)
    .update(body)
    .digest('base64');
  // several space-separated signatures while a secret rotates: any one may match
  return signatures
    .split(' ')
    .some((part) => part.startsWith('v1,') && safeEqual(expected, part.slice(3)));
}

// The last MAX_SEEN_IDS delivery ids (a Map keeps insertion order: the first is the
// oldest). In memory, so a restart forgets them: a real app keeps them where its data is
// (a unique key in its database) and records the id in the same transaction as the work.
const seen = new Map();
function firstTime(deliveryId) {
  if (seen.has(deliveryId)) return false;
  seen.set(deliveryId, true);
  if (seen.size > MAX_SEEN_IDS) seen.delete(seen.keys().next().value);
  return true;
}

// ---- one handler per event type: replace the log lines with your work ----
const handlers = {
  'message.received': async (e) => console.log(`message ${e.messageId} from ${e.from}: ${e.text}`),
  'message.sent': async (e) => console.log(`message ${e.messageId} sent to ${e.to}`),
  'message.delivered': async (e) => console.log(`message ${e.messageId} delivered to ${e.to}`),
  'message.read': async (e) => console.log(`message ${e.messageId} read by ${e.to}`),
  'session.connected': async (e) => console.log(`session ${e.sessionId} connected as ${e.phoneNumber}`),
  'session.disconnected': async (e) => console.log(`session ${e.sessionId} disconnected: ${e.reason}`),
  'session.qr_generated': async (e) => console.log(`session ${e.sessionId}: new QR code, expires ${e.expiresAt}`),
  'contact.updated': async (e) => console.log(`contact ${e.phoneNumber} updated: ${e.contact && e.contact.name}`),
};

// The work, after the 200 has gone out.
async function processEvent(deliveryId, event, standard) {
  const handler = Object.hasOwn(handlers, event.event) ? handlers[event.event] : null;
  try {
    if (handler) await handler(event);
    else console.warn(`unknown event type ${JSON.stringify(event.event)} (delivery ${deliveryId})`);
  } catch (err) {
    // the sender already has its 200 and will not retry: log, or queue it for a retry
    console.error(`handling delivery ${deliveryId} failed:`, err);
  }
  if (RECEIVED_LOG) {
    const line = { id: deliveryId, event: event.event, verified: true, standardWebhooks: standard === true };
    fs.appendFileSync(RECEIVED_LOG, JSON.stringify(line) + '\n');
  }
}

const app = express();

// the raw bytes, whatever the Content-Type: the signature covers them, not parsed JSON
app.post('/webhook', express.raw({ type: () => true, limit: '1mb' }), (req, res) => {
  const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  if (!verifySignature(body, req.get('X-Webhook-Signature'))) {
    return res.status(401).send('Unauthorized');
  }
  const standard = verifyStandard(body, req);
  if (standard === false) return res.status(401).send('Unauthorized');
  let event;
  try {
    event = JSON.parse(body.toString('utf8'));
  } catch {
    return res.status(400).send('Bad Request');
  }
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    return res.status(400).send('Bad Request');
  }

  const deliveryId = req.get('X-Webhook-Id') || '';
  // every attempt of one delivery has the same id: a retry after a lost 200 is a no-op
  if (deliveryId && !firstTime(deliveryId)) return res.status(200).send('OK (duplicate)');

  res.status(200).send('OK');
  setImmediate(() => processEvent(deliveryId, event, standard));
});

app.listen(PORT, '127.0.0.1', () => {
  console.log(`webhook receiver on http://127.0.0.1:${PORT}/webhook`);
});
