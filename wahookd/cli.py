"""Command line: argparse to functions, errors to exit codes.

0 ok, 1 runtime (for the operator commands: the daemon answered an error), 2 usage or
config, 3 the daemon is not running or not reachable, 4 not found (see ops.py).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .auth import ROLES, KeyError_, Keys, generated_secret_path, load_keys, mint_token
from .config import Config, ConfigError, find_config_path, load_config
from .events import SESSION_ID_RULE, is_session_id
from .invocation import invocation as invocation  # tests import it from here
from .logquery import DELIVERY_ID_RE, MAX_LIMIT
from .logs import setup_logging
from .models import State
from .rules import WEBHOOK_ID_RE
from .units import parse_duration

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
NO_CONFIG_FILE = "no config file found; checked the embedded defaults"


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

    with_config(
        sub.add_parser(
            "serve",
            help="run the daemon in the foreground",
            description="Run the daemon in the foreground until SIGTERM or SIGINT; SIGHUP"
            " reloads the config. It listens on server.listen and keeps its data at"
            " storage.path; with no JWT key in [auth] it generates jwt.secret beside the"
            " database on first start.",
        )
    )
    token = with_config(
        sub.add_parser(
            "token",
            help="print a signed JWT for this daemon",
            description="Print a signed JWT (only the token, so $(wahookd token) works) for"
            " the API of the daemon that runs with this config. It reads the daemon's key"
            " and never creates one: pass the daemon's config with -c PATH.",
        )
    )
    token.add_argument("--sub", default="wahookd-cli", help="subject claim")
    token.add_argument("--role", default="admin", choices=ROLES, help="role claim")
    token.add_argument("--sessions", default="*", help="ID,ID,... or * (default: all)")
    token.add_argument("--ttl", default="1h", help="lifetime, e.g. 15m, 1h, 7d (default: 1h)")
    console = with_config(
        sub.add_parser(
            "console",
            help="print the web console's URL with a fresh token",
            description="Print the URL of the web console of the daemon that runs with this"
            " config, with a fresh short-lived token in its fragment (the part after #, which"
            " the browser never sends). The page keeps it in the tab's sessionStorage.",
        )
    )
    console.add_argument(
        "--role", default="admin", choices=("viewer", "admin"), help="role claim (default: admin)"
    )
    console.add_argument("--ttl", default="15m", help="lifetime, e.g. 15m, 1h (default: 15m)")
    with_config(
        sub.add_parser(
            "check-config",
            help="validate the config file",
            description="Validate the config (syntax, keys, types, values, and that the"
            " files it names are readable) and print ok, or every error with exit status 2."
            " With no config file found it checks the embedded defaults and says so.",
        )
    )
    _ops_parsers(sub, with_config)
    return parser


def _ops_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    """The operator commands: they talk to the running daemon at server.listen."""

    def op(name: str, summary: str) -> argparse.ArgumentParser:
        p = with_config(
            sub.add_parser(name, help=summary, description=summary[:1].upper() + summary[1:] + ".")
        )
        p.add_argument("--json", action="store_true", help="print the API's JSON answer")
        return p

    op("status", "show the daemon's health, queue and sessions")
    queue = op("queue", "show queued deliveries by state")
    queue.add_argument("session", nargs="?", type=_session_arg, help="only this session")
    dl = op("deliveries", "list a session's deliveries, newest first")
    dl.add_argument("session", type=_session_arg)
    which = dl.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_true", help="only failed deliveries")
    which.add_argument("--status", choices=[s.value for s in State], help="only this state")
    dl.add_argument("--limit", type=_limit_arg, default=50, help="at most N (1-500, default 50)")
    dl.add_argument("--webhook", type=_webhook_arg, help="only those to this webhook (wh_...)")
    retry = op("retry", "queue failed deliveries again")
    retry.add_argument("session", type=_session_arg)
    what = retry.add_mutually_exclusive_group(required=True)
    what.add_argument("delivery_id", nargs="?", type=_delivery_arg, help="one failed delivery")
    what.add_argument("--all-failed", action="store_true", help="every failed delivery")
    retry.add_argument("--since", help="with --all-failed: failed since a time or within 2h")
    retry.add_argument(
        "--webhook", type=_webhook_arg, help="with --all-failed: only those to this webhook"
    )
    emit = op("emit", "publish an event as the gateway would; prints its id")
    emit.add_argument("session", type=_session_arg)
    emit.add_argument("event", help="the event type, e.g. message.received")
    emit.add_argument("--data", type=_object_arg, default={}, help="more fields, a JSON object")
    webhook = op("webhook", "enable or disable a session's webhook")
    webhook.add_argument("action", choices=["enable", "disable"])
    webhook.add_argument("session", type=_session_arg)
    _webhooks_parsers(sub, with_config)
    test = op("test-webhook", "send one signed test POST from the daemon now")
    test.add_argument("url")
    test.add_argument("--secret", help="sign with this secret")
    test.add_argument("--payload", type=_object_arg, help="send this JSON object")


def _webhooks_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    """`wahookd webhooks list|add|edit|rm|enable|disable`: the collection of SPEC §8."""
    summary = "list, add, edit, remove, enable or disable webhooks (several per session)"
    group = sub.add_parser(
        "webhooks", help=summary, description=summary[:1].upper() + summary[1:] + "."
    )
    actions = group.add_subparsers(dest="webhooks_action", metavar="ACTION", required=True)

    def action(name: str, text: str) -> argparse.ArgumentParser:
        p = with_config(actions.add_parser(name, help=text, description=text + "."))
        p.add_argument("--json", action="store_true", help="print the API's JSON answer")
        return p

    ls = action("list", "every webhook with its health: default, extra and static ones")
    ls.add_argument("--session", type=_session_arg, help="only this session's")
    ls.add_argument("--failing", action="store_true", help="only the failing ones")
    add = action("add", "add a webhook to a session; prints its id")
    add.add_argument("session", type=_session_arg)
    add.add_argument("url")
    _webhook_field_args(add, adding=True)
    edit = action("edit", "change some fields of a webhook; the others keep their value")
    edit.add_argument("id", type=_webhook_arg)
    edit.add_argument("--url")
    _webhook_field_args(edit, adding=False)
    for name, text in (
        ("rm", "remove a webhook and drop its queued deliveries"),
        ("enable", "enable a webhook; its queued deliveries are due again"),
        ("disable", "disable a webhook; its queued deliveries wait"),
    ):
        action(name, text).add_argument("id", type=_webhook_arg)


def _webhook_field_args(p: argparse.ArgumentParser, *, adding: bool) -> None:
    p.add_argument("--events", help="EVENT,EVENT,... or * (default when adding: *)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--secret", help="sign with this secret")
    if not adding:
        secret.add_argument("--no-secret", action="store_true", help="stop signing")
    p.add_argument("--description", help="a note for people (at most 256 characters)")
    chats = p.add_mutually_exclusive_group()
    chats.add_argument(
        "--chats", help="only these chat kinds: direct,group,status,channel,broadcast"
    )
    if not adding:
        chats.add_argument("--all-chats", action="store_true", help="drop the chat filter")
    p.add_argument("--ordering", choices=["none", "chat", "session"])
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--rate-limit", type=int, metavar="N", help="at most N attempts a second")
    if not adding:
        rate.add_argument("--no-rate-limit", action="store_true", help="drop the rate limit")
    p.add_argument(
        "--header", action="append", metavar="NAME=VALUE", help="an extra request header"
    )
    if adding:
        p.add_argument("--disabled", action="store_true", help="add it inactive")


def _webhook_body(args: argparse.Namespace, *, adding: bool) -> dict[str, Any]:
    """The request body of `webhooks add|edit` from its options (only those given)."""
    body: dict[str, Any] = {}
    if adding:
        body.update(sessionId=args.session, url=args.url, events=["*"])
    elif args.url is not None:
        body["url"] = args.url
    if args.events is not None:
        body["events"] = [e.strip() for e in args.events.split(",") if e.strip()]
    if args.secret is not None:
        body["secret"] = args.secret
    elif getattr(args, "no_secret", False):
        body["secret"] = None
    if args.description is not None:
        body["description"] = args.description
    if args.chats is not None:
        body["filter"] = {"chats": [k.strip() for k in args.chats.split(",") if k.strip()]}
    elif getattr(args, "all_chats", False):
        body["filter"] = None
    if args.ordering is not None:
        body["ordering"] = args.ordering
    if args.rate_limit is not None:
        body["rateLimit"] = args.rate_limit
    elif getattr(args, "no_rate_limit", False):
        body["rateLimit"] = None
    if args.header:
        headers = {}
        for item in args.header:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise UsageError(f"--header: {item!r} is not NAME=VALUE")
            headers[name] = value
        body["headers"] = headers
    if adding and args.disabled:
        body["isActive"] = False
    if not adding and not body:
        raise UsageError("webhooks edit: nothing to change; give at least one option")
    return body


def _webhook_arg(value: str) -> str:
    if not WEBHOOK_ID_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"invalid webhook id {value!r}: wh_ then 16 hex digits")
    return value


def _session_arg(value: str) -> str:
    if not is_session_id(value):
        raise argparse.ArgumentTypeError(f"invalid session id {value!r}: {SESSION_ID_RULE}")
    return value


def _delivery_arg(value: str) -> str:
    if not DELIVERY_ID_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"invalid delivery id {value!r}: dlv_ then hex digits")
    return value


def _limit_arg(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def _object_arg(value: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `wahookd` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "check-config":
            checked = _load(args.config)
            print("ok" if checked.source else f"ok ({NO_CONFIG_FILE})")
            return EXIT_OK
        config = _load(args.config)
        if args.command == "token":
            print(_token(config, args))
            return EXIT_OK
        if args.command == "console":
            return _console(config, args)
        if args.command != "serve":
            return _ops(config, args)
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
    keys = _token_keys(config)
    return mint_token(
        config.auth,
        keys,
        subject=args.sub,
        role=args.role,
        sessions=sessions,
        ttl_s=ttl_s,
        now=time.time(),
    )


def _console(config: Config, args: argparse.Namespace) -> int:
    from . import ops

    args.sub, args.sessions = "wahookd-console", "*"
    try:
        url = ops.console_url(config, _token(config, args))
    except ops.OpsError as exc:
        print(f"wahookd: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(url)
    print(
        f"Open it in a browser; the {args.role} token in it is valid for {args.ttl}.",
        file=sys.stderr,
    )
    return EXIT_OK


def _token_keys(config: Config) -> Keys:
    # Never generate here: a secret made in the wrong directory signs tokens the daemon refuses.
    try:
        return load_keys(config.auth, config.storage.path, generate=False)
    except KeyError_:
        secret = generated_secret_path(config.storage.path)
        if config.auth.jwt_secret is not None or config.auth.jwt_secret_file or secret.exists():
            raise
        raise UsageError(
            f"no JWT secret at {secret}: start the daemon once (wahookd serve) to generate it,"
            " or pass the daemon's config with -c PATH"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read the JWT key {exc.filename}: {exc.strerror}") from None


def _ops(config: Config, args: argparse.Namespace) -> int:
    from . import ops  # imported here: the HTTP client is only for these commands

    command: ops.Command
    timeout_s = ops.TIMEOUT_S
    if args.command == "status":
        command = ops.status
    elif args.command == "queue":
        command = functools.partial(ops.queue, session=args.session)
    elif args.command == "deliveries":
        status = "failed" if args.failed else args.status
        command = functools.partial(
            ops.deliveries,
            session=args.session,
            status=status,
            limit=args.limit,
            webhook=args.webhook,
        )
    elif args.command == "retry":
        for flag, value in (("--since", args.since), ("--webhook", args.webhook)):
            if value and not args.all_failed:
                raise UsageError(f"retry: {flag} goes with --all-failed")
        command = functools.partial(
            ops.retry,
            session=args.session,
            delivery_id=args.delivery_id,
            since=args.since,
            webhook=args.webhook,
        )
    elif args.command == "emit":
        for key, value in (("event", args.event), ("sessionId", args.session)):
            if key in args.data and args.data[key] != value:
                raise UsageError(f"emit: --data sets {key!r} to something else than the argument")
        command = functools.partial(
            ops.emit, session=args.session, event=args.event, data=args.data
        )
    elif args.command == "webhooks":
        command = _webhooks_command(args)
    elif args.command == "webhook":
        command = functools.partial(
            ops.webhook_active, session=args.session, active=args.action == "enable"
        )
    else:
        command = functools.partial(
            ops.test_webhook, url=args.url, secret=args.secret, payload=args.payload
        )
        timeout_s += config.delivery.timeout_s  # the daemon waits that long for the receiver
    try:
        report = ops.run(config, os.environ, command, timeout_s)
    except ops.OpsError as exc:
        if args.json and exc.answer is not None:
            print(json.dumps(exc.answer, indent=2, ensure_ascii=False))
        print(f"wahookd: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    print(json.dumps(report.data, indent=2, ensure_ascii=False) if args.json else report.text)
    if report.note:
        print(f"wahookd: {report.note}", file=sys.stderr)
    return report.exit_code


def _webhooks_command(args: argparse.Namespace) -> Any:
    """The ops call of `wahookd webhooks ACTION`."""
    from . import ops

    action = args.webhooks_action
    if action == "list":
        return functools.partial(ops.webhooks_list, session=args.session, failing=args.failing)
    if action == "add":
        return functools.partial(ops.webhooks_add, body=_webhook_body(args, adding=True))
    if action == "edit":
        body = _webhook_body(args, adding=False)
        return functools.partial(ops.webhooks_edit, webhook_id=args.id, body=body)
    if action == "rm":
        return functools.partial(ops.webhooks_rm, webhook_id=args.id)
    return functools.partial(ops.webhooks_active, webhook_id=args.id, active=action == "enable")


def _serve(config: Config) -> int:
    from .server import serve  # imported here so check-config and token stay light
    from .store.types import StorageError

    setup_logging(config.log.level, config.log.format)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config))
    except (OSError, StorageError) as exc:  # a StorageError never shows a DSN's password
        print(f"wahookd: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK
