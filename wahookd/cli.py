"""Command line: argparse to functions, errors to exit codes (0 ok, 1 runtime, 2 usage/config)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence

from . import __version__
from .auth import ROLES, KeyError_, load_keys, mint_token
from .config import Config, ConfigError, find_config_path, load_config
from .events import is_session_id
from .logs import setup_logging
from .units import parse_duration

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments: exit 2 with the message."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wahookd", description="Durable, signed webhook delivery daemon."
    )
    parser.add_argument("--version", action="version", version=f"wahookd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", metavar="PATH", help="config file (TOML)")
        return p

    with_config(sub.add_parser("serve", help="run the daemon in the foreground"))
    token = with_config(sub.add_parser("token", help="print a signed JWT for this daemon"))
    token.add_argument("--sub", default="wahookd-cli", help="subject claim")
    token.add_argument("--role", default="admin", choices=ROLES, help="role claim")
    token.add_argument("--sessions", default="*", help="ID,ID,... or * (default: all)")
    token.add_argument("--ttl", default="1h", help="lifetime, e.g. 15m, 1h, 7d (default: 1h)")
    with_config(sub.add_parser("check-config", help="validate the config file"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `wahookd` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "check-config":
            _load(args.config)
            print("ok")
            return EXIT_OK
        config = _load(args.config)
        if args.command == "token":
            print(_token(config, args))
            return EXIT_OK
        return _serve(config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, KeyError_) as exc:
        print(f"wahookd: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _load(cli_path: str | None) -> Config:
    return load_config(find_config_path(cli_path, os.environ))


def _token(config: Config, args: argparse.Namespace) -> str:
    try:
        ttl_s = parse_duration(args.ttl)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc}") from None
    sessions: list[str] | None = None
    if args.sessions.strip() != "*":
        sessions = [s.strip() for s in args.sessions.split(",") if s.strip()]
        bad = [s for s in sessions if not is_session_id(s)]
        if bad or not sessions:
            raise UsageError(f"--sessions: invalid session id {bad[0] if bad else '(none)'!r}")
    keys = load_keys(config.auth, config.storage.path)
    return mint_token(
        config.auth,
        keys,
        subject=args.sub,
        role=args.role,
        sessions=sessions,
        ttl_s=ttl_s,
        now=time.time(),
    )


def _serve(config: Config) -> int:
    from .server import serve  # imported here so check-config and token stay light

    setup_logging(config.log.level, config.log.format)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config))
    except OSError as exc:
        print(f"wahookd: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK
