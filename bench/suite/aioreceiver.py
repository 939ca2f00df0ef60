"""One process of the fallback receiver: `python -m suite.aioreceiver PORT[,PORT...] LOG_DIR`.

Answers every POST /NAME with 200 "OK" and appends `<unix seconds> 200 <X-Webhook-Id>`
to LOG_DIR/NAME.PID.log (the nginx receiver's log format); a POST /NAME/SUB-PATH too,
with two more fields, `<local port> <path>` (nginx's `bench_route` format). It listens
on every port given; several processes share them through SO_REUSEPORT and the kernel
spreads connections between them. Stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import IO

from aiohttp import web

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
FLUSH_EVERY_S = 0.05


async def serve(ports: list[int], log_dir: Path) -> None:
    """Serve until SIGTERM, flushing the arrival logs every FLUSH_EVERY_S."""
    files: dict[str, IO[str]] = {}
    pending: dict[str, list[str]] = {}

    async def hook(request: web.Request) -> web.Response:
        now = time.time()
        await request.read()
        name = request.match_info["name"]
        if not NAME_RE.fullmatch(name):
            return web.Response(status=404)
        webhook_id = request.headers.get("X-Webhook-Id", "-")
        line = f"{now:.6f} 200 {webhook_id}"
        if "rest" in request.match_info:
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            port = sockname[1] if sockname else 0
            line += f" {port} {request.path}"
        pending.setdefault(name, []).append(line + "\n")
        return web.Response(text="OK")

    def flush() -> None:
        for name, lines in pending.items():
            if lines:
                f = files.get(name)
                if f is None:
                    f = files[name] = (log_dir / f"{name}.{os_pid}.log").open("a")
                f.write("".join(lines))
                f.flush()
                lines.clear()

    os_pid = os.getpid()
    app = web.Application()
    app.router.add_post("/{name}", hook)
    app.router.add_post("/{name}/{rest:.+}", hook)
    app.router.add_get("/", lambda _: web.Response(text="receiver"))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    for port in ports:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        await web.SockSite(runner, sock, backlog=4096).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_EVERY_S)
    finally:
        flush()
        for f in files.values():
            f.close()
        await runner.cleanup()


def main() -> None:
    """Parse argv and serve on uvloop."""
    ports, log_dir = [int(p) for p in sys.argv[1].split(",")], Path(sys.argv[2])
    try:
        import uvloop

        uvloop.run(serve(ports, log_dir))
    except ImportError:
        asyncio.run(serve(ports, log_dir))


if __name__ == "__main__":
    main()
