"""The HTTP API of SPEC §3: handlers by resource, the route table, the error envelope."""
