<?php
// A minimal wahookd webhook receiver (PHP 8.1+, no extension beyond the defaults).
//
//     WEBHOOK_SECRET=your_webhook_secret_key php -S 127.0.0.1:3000 receiver.php
//
// or behind php-fpm (pass the variables with `env[WEBHOOK_SECRET] = ...` in the pool:
// php-fpm clears the environment by default). It verifies X-Webhook-Signature in
// constant time (401 otherwise) and, when present, the Standard Webhooks headers;
// answers 200 at once and does the work after; processes each X-Webhook-Id once; and
// has a handler for each of the eight event types.
//
// It listens on plain HTTP: put a TLS reverse proxy in front (wahookd sends to https://
// URLs only, unless its config says `require_https = false`).

declare(strict_types=1);

// getenv(), not $_ENV: $_ENV is empty under the default variables_order ("GPCS", no E)
$secret = getenv('WEBHOOK_SECRET');
if ($secret === false || $secret === '') {
    error_log('WEBHOOK_SECRET is not set');
    http_response_code(500);
    exit('Server not configured');
}
$receivedLog = getenv('RECEIVED_LOG') ?: null;   // a JSON line per processed delivery (tests)
// PHP keeps nothing in memory between requests, so the ids seen live in a small file
$seenFile = getenv('SEEN_IDS_FILE') ?: sys_get_temp_dir() . '/wahookd-receiver-seen-ids';
const MAX_SEEN_IDS = 10000;
const TOLERANCE_S = 300;  // Standard Webhooks: refuse older or future timestamps (replays)

// X-Webhook-Signature: "sha256=" + hex HMAC-SHA256(secret, raw body).
function verify_signature(string $secret, string $body, string $header): bool
{
    $expected = 'sha256=' . hash_hmac('sha256', $body, $secret);
    return hash_equals($expected, $header);  // known string first, then the user's
}

// The Standard Webhooks key: base64 after "whsec_", else the secret's bytes.
function standard_key(string $secret): string
{
    if (str_starts_with($secret, 'whsec_')) {
        $key = base64_decode(substr($secret, 6), true);
        if ($key !== false && $key !== '') {
            return $key;
        }
    }
    return $secret;
}

// webhook-id/-timestamp/-signature: null when absent, else whether one v1 matches.
function verify_standard(string $secret, string $body): ?bool
{
    // $_SERVER carries the request headers under every SAPI (the S of variables_order)
    $id = $_SERVER['HTTP_WEBHOOK_ID'] ?? '';
    $timestamp = $_SERVER['HTTP_WEBHOOK_TIMESTAMP'] ?? '';
    $signatures = $_SERVER['HTTP_WEBHOOK_SIGNATURE'] ?? '';
    if ($id === '' || $timestamp === '' || $signatures === '') {
        return null;
    }
    if (!ctype_digit($timestamp) || abs(time() - (int) $timestamp) > TOLERANCE_S) {
        return false;
    }
    $expected = base64_encode(
        hash_hmac('sha256', "$id.$timestamp.$body", standard_key($secret), true)
    );
    // several space-separated signatures while a secret rotates: any one may match
    foreach (explode(' ', $signatures) as $part) {
        if (str_starts_with($part, 'v1,') && hash_equals($expected, substr($part, 3))) {
            return true;
        }
    }
    return false;
}

// Remember the id (the last MAX_SEEN_IDS, under a lock); false when it was already there.
// A real app keeps them where its data is: a unique key in its database.
function first_time(string $file, string $deliveryId): bool
{
    $f = fopen($file, 'c+');
    if ($f === false || !flock($f, LOCK_EX)) {
        return true;  // cannot dedupe: process rather than lose the event
    }
    $ids = array_filter(explode("\n", stream_get_contents($f)), 'strlen');
    $new = !in_array($deliveryId, $ids, true);
    if ($new) {
        $ids[] = $deliveryId;
        $ids = array_slice($ids, -MAX_SEEN_IDS);
        ftruncate($f, 0);
        rewind($f);
        fwrite($f, implode("\n", $ids) . "\n");
        fflush($f);
    }
    flock($f, LOCK_UN);
    fclose($f);
    return $new;
}

// ---- one handler per event type: replace the log lines with your work ----
$handlers = [
    'message.received' => fn($e) => error_log("message {$e['messageId']} from {$e['from']}: " . ($e['text'] ?? '')),
    'message.sent' => fn($e) => error_log("message {$e['messageId']} sent to {$e['to']}"),
    'message.delivered' => fn($e) => error_log("message {$e['messageId']} delivered to {$e['to']}"),
    'message.read' => fn($e) => error_log("message {$e['messageId']} read by {$e['to']}"),
    'session.connected' => fn($e) => error_log("session {$e['sessionId']} connected as {$e['phoneNumber']}"),
    'session.disconnected' => fn($e) => error_log("session {$e['sessionId']} disconnected: {$e['reason']}"),
    'session.qr_generated' => fn($e) => error_log("session {$e['sessionId']}: new QR code, expires {$e['expiresAt']}"),
    'contact.updated' => fn($e) => error_log("contact {$e['phoneNumber']} updated: " . ($e['contact']['name'] ?? '')),
];

function answer(int $status, string $text): void
{
    http_response_code($status);
    header('Content-Type: text/plain');
    header('Content-Length: ' . strlen($text));
    echo $text;
}

// Send the answer now and keep running: php-fpm has fastcgi_finish_request(); the CLI
// server and mod_php do not, so the answer goes out with its Content-Length and a flush,
// and the sender has the whole response while the work below runs (the CLI server then
// takes the next request once this script ends: use php-fpm for real traffic).
function answer_now(int $status, string $text): void
{
    ignore_user_abort(true);  // the sender hanging up after the 200 must not stop the work
    header('Connection: close');
    answer($status, $text);
    if (function_exists('fastcgi_finish_request')) {
        fastcgi_finish_request();
        return;
    }
    while (ob_get_level() > 0) {
        ob_end_flush();
    }
    flush();
}

if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST' || parse_url($_SERVER['REQUEST_URI'] ?? '', PHP_URL_PATH) !== '/webhook') {
    answer(404, 'Not Found');
    return;
}

$body = file_get_contents('php://input');  // the raw bytes: the signature covers them
if (!verify_signature($secret, $body, $_SERVER['HTTP_X_WEBHOOK_SIGNATURE'] ?? '')) {
    answer(401, 'Unauthorized');
    return;
}
$standard = verify_standard($secret, $body);
if ($standard === false) {
    answer(401, 'Unauthorized');
    return;
}
$event = json_decode($body, true);
if (!is_array($event) || array_is_list($event)) {
    answer(400, 'Bad Request');
    return;
}

$deliveryId = $_SERVER['HTTP_X_WEBHOOK_ID'] ?? '';
// every attempt of one delivery has the same id: a retry after a lost 200 is a no-op
if ($deliveryId !== '' && !first_time($seenFile, $deliveryId)) {
    answer(200, 'OK (duplicate)');
    return;
}

answer_now(200, 'OK');

// The work, after the 200 has gone out.
$type = is_string($event['event'] ?? null) ? $event['event'] : '';
try {
    if (isset($handlers[$type])) {
        $handlers[$type]($event);
    } else {
        error_log('unknown event type ' . json_encode($event['event'] ?? null) . " (delivery $deliveryId)");
    }
} catch (Throwable $err) {
    // the sender already has its 200 and will not retry: log, or queue it for a retry
    error_log("handling delivery $deliveryId failed: $err");
}
if ($receivedLog !== null) {
    $line = ['id' => $deliveryId, 'event' => $type, 'verified' => true, 'standardWebhooks' => $standard === true];
    file_put_contents($receivedLog, json_encode($line) . "\n", FILE_APPEND | LOCK_EX);
}
