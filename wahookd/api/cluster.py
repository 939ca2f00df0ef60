"""The cluster: the nodes sharing the database, their heartbeat and the attempts each holds.

With PostgreSQL every `wahookd serve` on the database is a node (SPEC §10); with SQLite
the one process is the only node, and it says so.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from aiohttp import web

from ..events import format_timestamp
from ..store import PgStore
from .common import ok, requires
from .keys import CLOCK, STORE


@requires("viewer")
async def get_cluster(request: web.Request) -> web.Response:
    """GET /api/cluster: every node, its last heartbeat and the attempts it holds."""
    store, now = request.app[STORE], request.app[CLOCK].time()
    nodes: list[dict[str, Any]] = []
    if isinstance(store, PgStore):
        backend = "postgres"
        for node in await store.cluster():
            nodes.append(
                {
                    "id": node.node_id,
                    "host": node.host,
                    "pid": node.pid,
                    "self": node.node_id == store.node_id,
                    "startedAt": format_timestamp(node.started_at),
                    "lastHeartbeat": format_timestamp(node.heartbeat_at),
                    # past its lease without a beat: its attempts are anyone's to take back
                    "alive": now - node.heartbeat_at <= node.lease_s,
                    "attemptsHeld": node.holding,
                }
            )
    else:
        backend = "sqlite"
        held = (await store.queue_counts(None))["processing"]
        nodes.append(
            {
                "id": socket.gethostname(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "self": True,
                "startedAt": None,
                "lastHeartbeat": format_timestamp(now),
                "alive": True,
                "attemptsHeld": held,
            }
        )
    return ok({"success": True, "backend": backend, "nodes": nodes})
