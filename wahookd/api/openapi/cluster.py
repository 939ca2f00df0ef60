"""The cluster's part of the OpenAPI document (GET /api/cluster, SPEC §10).

`openapi/__init__.py` merges these into the document it builds from the route table.
"""

from __future__ import annotations

from typing import Final

from .schema import TIMESTAMP_PATTERN, Operation, Schema, _answer, _count, _error, _object, ref

_TIME: Final = {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}


def schemas() -> dict[str, Schema]:
    """The cluster's component schemas."""
    return {
        "ClusterNode": _object(
            {
                "id": {"type": "string", "minLength": 1, "description": "The node's id."},
                "host": {"type": "string"},
                "pid": {"type": "integer", "minimum": 0},
                "self": {
                    "type": "boolean",
                    "description": "True for the node that answered.",
                },
                "startedAt": {
                    "oneOf": [_TIME, {"type": "null"}],
                    "description": "When the node joined (null with SQLite).",
                },
                "lastHeartbeat": _TIME,
                "alive": {
                    "type": "boolean",
                    "description": (
                        "False once its last heartbeat is older than its lease: its "
                        "attempts go back to the queue for the other nodes."
                    ),
                },
                "attemptsHeld": _count("Attempts in flight under the node's lease."),
            }
        ),
        "ClusterResponse": _object(
            {
                "success": {"const": True},
                "backend": {"type": "string", "enum": ["sqlite", "postgres"]},
                "nodes": {"type": "array", "items": ref("ClusterNode"), "minItems": 1},
            }
        ),
    }


OPERATIONS: Final[dict[tuple[str, str], Operation]] = {
    ("GET", "/api/cluster"): {
        "operationId": "getCluster",
        "tags": ["queue"],
        "summary": "The nodes sharing the database, their last heartbeat, the attempts each holds",
        "description": (
            "With PostgreSQL every `wahookd serve` on the database is a node; with SQLite the "
            "one process is the only node."
        ),
        "responses": {
            "200": _answer("The nodes, by id.", ref("ClusterResponse")),
            "503": _error("Unavailable"),
        },
    },
}

__all__ = ["OPERATIONS", "schemas"]
