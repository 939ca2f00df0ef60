"""Logging setup: text for people, JSON (one object per line) for journald and collectors."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any, TextIO

from .clock import Clock
from .events import format_timestamp

# attributes every LogRecord has; anything else was passed through `extra=`
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as compact JSON."""
        data: dict[str, Any] = {
            "time": format_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)

    def info_line(self, created: float, name: str, message: str, fields: dict[str, Any]) -> str:
        """format() of an INFO record with these `extra` fields, without the record."""
        data: dict[str, Any] = {
            "time": format_timestamp(created),
            "level": "info",
            "logger": name,
            "message": message,
            **fields,
        }
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger: message`; the time's seconds are formatted once per second.

    The daemon writes a line per attempt, thousands a second under load, and
    strftime was a sixth of each line's cost.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._prefix = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """Local time as logging's default format shows it: 2026-11-25 12:00:00,123."""
        return f"{self._seconds(int(record.created))},{int(record.msecs):03d}"

    def info_line(self, created: float, name: str, message: str, fields: dict[str, Any]) -> str:
        """format() of an INFO record, without the record (text shows no `extra` fields)."""
        second = int(created)
        msecs = int((created - second) * 1000)  # LogRecord's msecs, computed as it does
        return f"{self._seconds(second)},{msecs:03d} INFO {name}: {message}"

    def _seconds(self, second: int) -> str:
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return self._prefix


class RateLimitedLog:
    """At most one line per key every interval_s; the next line counts the ones held back.

    For lines a client can cause at will (a refused token): a flood of them costs a line
    every interval_s, not a disk. Keys come from a fixed set, so the table stays small.
    """

    def __init__(self, logger: logging.Logger, clock: Clock, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.clock = clock
        self.interval_s = interval_s
        self._last_at: dict[str, float] = {}  # monotonic time of each key's last line
        self._held: dict[str, int] = {}  # lines held back since then

    def warning(self, key: str, msg: str, *args: object, extra: dict[str, Any]) -> None:
        """Log msg at warning level, unless key had a line less than interval_s ago."""
        now = self.clock.monotonic()
        last_at = self._last_at.get(key)
        if last_at is not None and now - last_at < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return
        self._last_at[key] = now
        held = self._held.pop(key, 0)
        if held:
            msg += " (%d more like it since the last such line, not logged)"
            args = (*args, held)
        self.logger.warning(msg, *args, extra={**extra, "suppressed": held})


class OneLine(logging.Filter):
    """A record's traceback folded into its message: one line with the error's text.

    For asyncpg's pool, which logs a traceback for each failed attempt to reconnect
    while PostgreSQL is down: an outage is not a bug, and its error says enough.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, without its traceback."""
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


ONE_LINE_LOGGERS = ("asyncpg.pool",)


class PassHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes the event loop's info lines once per loop pass.

    The daemon writes a line per attempt, thousands a second, and a write (a syscall
    each) per line was most of a line's cost. Lines below WARNING logged on the event
    loop's thread wait, in order, until the loop's current pass ends (one `call_soon`
    for all of them). A warning or error is written at once, after those waiting; so is
    a line with no loop running in its thread (the SQLite thread, the CLI). A kill -9
    loses at most one pass's info lines: the delivery log holds every attempt anyway.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []  # only the loop's thread touches it

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(line)  # another thread, or no loop: it may not touch _pending
            return
        self._pending.append(line)
        if record.levelno >= logging.WARNING:
            self.flush()
        elif len(self._pending) == 1:
            loop.call_soon(self.flush)

    def info_lines(self, name: str, lines: list[tuple[str, dict[str, Any]]]) -> None:
        """Info lines (message, `extra` fields) of one logger, formatted without LogRecords.

        For direct_handler()'s callers on the loop's thread: what emit() would write
        for each, at a third of the cost (LogRecord's making was most of it).
        """
        formatter = self.formatter
        assert isinstance(formatter, TextFormatter | JsonFormatter)
        created = time.time()
        was_empty = not self._pending
        self._pending += [
            formatter.info_line(created, name, message, fields) + self.terminator
            for message, fields in lines
        ]
        if was_empty and self._pending:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write the lines waiting (the loop's pass ended, a warning, or shutdown)."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._write("".join(pending))

    def _write(self, text: str) -> None:
        self.acquire()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr is gone (closed pipe, closed file): nothing left to tell
        finally:
            self.release()


def direct_handler(logger: logging.Logger) -> PassHandler | None:
    """The PassHandler that alone would write logger's INFO lines, for its info_lines().

    None when an INFO line of logger would not be written, or when anything else could
    see its record: another handler (a test's capture), a filter, a formatter of its own.
    """
    if not logger.isEnabledFor(logging.INFO):
        return None
    handler: logging.Handler | None = None
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters or (node.handlers and (handler is not None or len(node.handlers) > 1)):
            return None
        if node.handlers:
            handler = node.handlers[0]
        if not node.propagate:
            break
        node = node.parent
    if (
        type(handler) is not PassHandler
        or handler.filters
        or handler.level > logging.INFO
        or type(handler.formatter) not in (TextFormatter, JsonFormatter)
    ):
        return None
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None  # not the loop's thread: only emit() knows what to do there
    return handler


def setup_logging(level: str, fmt: str) -> None:
    """Configure the root logger once, to stderr."""
    handler = PassHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    # None of our formats shows the caller, the process or the thread: skip gathering them
    # (the logging HOWTO's "Optimization" list); it is a quarter of an attempt's log line
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print every request; our own lines say what matters
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in ONE_LINE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLine) for f in logger.filters):
            logger.addFilter(OneLine())


def set_level(level: str) -> None:
    """Change the root log level (SIGHUP reload)."""
    logging.getLogger().setLevel(level.upper())
