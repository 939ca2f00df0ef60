"""(a) The ceiling: a plain aiohttp client on uvloop, no queue, no database.

Run in its own process (as the daemon is): `python -m suite.ceiling URL COUNT INFLIGHT`
prints one JSON object. It POSTs COUNT bodies of the suite's event (BODY_BYTES each),
each signed as wahookd signs (HMAC-SHA256 hex and Standard Webhooks, computed per
request), with INFLIGHT requests in flight over one pooled session.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from .common import compact, event, self_cpu_s, signed_headers


async def blast(url: str, count: int, inflight: int) -> dict[str, Any]:
    """POST `count` signed bodies with `inflight` workers; the client's own timing."""
    bodies = [compact(event(i)) for i in range(count)]
    todo = iter(range(count))
    ok = failed = 0
    connector = aiohttp.TCPConnector(limit=inflight + 16, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as http:

        async def worker() -> None:
            nonlocal ok, failed
            for i in todo:  # the shared iterator hands each request to one worker
                body = bodies[i]
                headers = signed_headers(body, f"dlv_ceiling_{i:08d}", int(time.time()))
                async with http.post(url, data=body, headers=headers, allow_redirects=False) as r:
                    await r.read()
                    if 200 <= r.status < 300:
                        ok += 1
                    else:
                        failed += 1

        cpu0, start = self_cpu_s(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        seconds = time.perf_counter() - start
        cpu = self_cpu_s() - cpu0
    return {
        "count": count,
        "ok": ok,
        "failed": failed,
        "inflight": inflight,
        "seconds": seconds,
        "per_s": ok / seconds,
        "client_cpu_s": cpu,
    }


def main() -> None:
    """argv: URL COUNT INFLIGHT; prints the result as JSON."""
    url, count, inflight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import uvloop

    print(json.dumps(uvloop.run(blast(url, count, inflight))))


if __name__ == "__main__":
    main()
