"""The baseline's Huey app: what a Python shop would glue together for webhooks.

SqliteHuey (its SQLite storage, WAL, `fsync=True` so an enqueued task survives power
loss like wahookd's synchronous = "full") plus `requests`. One task per webhook
delivery: sign the body as wahookd does, POST it, raise on anything but 2xx so Huey
retries it (5 attempts, 30 s apart), and return the status, which Huey stores as the
task's result (its record of the attempt). The consumer imports this module:

    huey_consumer suite.huey_tasks.huey -w 8 -k thread      (BENCH_HUEY_DB=... set)
"""

from __future__ import annotations

import os
import threading
import time

import requests
from huey import SqliteHuey

from .common import signed_headers

huey = SqliteHuey("bench", filename=os.environ.get("BENCH_HUEY_DB", "huey.db"), fsync=True)
_local = threading.local()


def _session() -> requests.Session:
    """One pooled session per worker thread (requests.Session is not thread-safe)."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


@huey.task(retries=4, retry_delay=30)
def deliver(url: str, delivery_id: str, body: bytes) -> int:
    """One attempt of one delivery; an exception makes Huey retry it."""
    headers = signed_headers(body, delivery_id, int(time.time()))
    response = _session().post(url, data=body, headers=headers, timeout=5, allow_redirects=False)
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"HTTP {response.status_code}")
    return response.status_code
