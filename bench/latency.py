"""Latency from a 202 on /api/events to the delivery's arrival at a local receiver.

Starts its own daemon (subprocess) and receiver on 127.0.0.1, sends a bounded
number of events one at a time, prints p50/p95/p99. Usage:

    .venv/bin/python bench/latency.py [--events 300] [--gap-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import jwt
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from daemon_proc import DaemonProcess, free_port

SECRET = "b" * 64


async def main(events: int, gap_ms: float) -> None:
    arrivals: dict[str, float] = {}
    arrived = asyncio.Condition()
    app = web.Application()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        arrivals[body["reason"]] = time.perf_counter()
        async with arrived:
            arrived.notify_all()
        return web.Response(text="OK")

    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    rx_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", rx_port).start()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config = Path(tmp) / "wahookd.toml"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{port}"\n[storage]\npath = "{tmp}/w.db"\n'
            f'[auth]\njwt_secret = "{SECRET}"\n'
            '[delivery]\nrequire_https = false\nallow_networks = ["127.0.0.0/8"]\n'
            '[log]\nlevel = "warning"\n'
        )
        daemon = DaemonProcess(config, port, Path(tmp))
        await daemon.start()
        token = jwt.encode({"exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
        auth = {"Authorization": f"Bearer {token}"}
        latencies: list[float] = []
        try:
            async with aiohttp.ClientSession(headers=auth) as http:
                url = f"http://127.0.0.1:{rx_port}/hook"
                await http.put(
                    f"{daemon.base}/api/webhook/config/bench",
                    json={"url": url, "events": ["*"], "secret": "s"},
                )
                for i in range(events):
                    reason = f"r{i}"
                    event = {
                        "event": "session.disconnected",
                        "sessionId": "bench",
                        "reason": reason,
                    }
                    async with http.post(f"{daemon.base}/api/events", json=event) as resp:
                        assert resp.status == 202, await resp.text()
                        acked = time.perf_counter()
                    try:
                        async with asyncio.timeout(2.0), arrived:
                            await arrived.wait_for(lambda r=reason: r in arrivals)
                    except TimeoutError:
                        continue
                    if reason in arrivals:
                        latencies.append(max(0.0, arrivals[reason] - acked) * 1000)
                    await asyncio.sleep(gap_ms / 1000)
        finally:
            await daemon.stop()
            await runner.cleanup()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    print(f"events sent: {events}, delivered: {len(latencies)}")
    print(
        f"202 -> arrival ms: p50 {q[49]:.1f}  p95 {q[94]:.1f}  p99 {q[98]:.1f}"
        f"  max {latencies[-1]:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(main(min(args.events, 10_000), args.gap_ms))
