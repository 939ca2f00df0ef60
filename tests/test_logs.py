"""The log formats: the text formatter's cached time reads as logging's own; the attempt line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wahookd.delivery.recorder import log_attempt as _log_attempt
from wahookd.delivery.recorder import log_attempts
from wahookd.logs import JsonFormatter, PassHandler, TextFormatter, direct_handler, setup_logging
from wahookd.models import AttemptResult, Claimed, Outcome, OutcomeKind

DEFAULT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def record_at(created: float) -> logging.LogRecord:
    record = logging.LogRecord("wahookd.x", logging.INFO, "", 0, "attempt %s", ("a",), None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


@given(st.lists(st.floats(min_value=0, max_value=4e9), min_size=1, max_size=20))
def test_text_lines_read_as_loggings_default_format(times: list[float]) -> None:
    # one formatter over a sequence of times, so a stale cached second would show
    ours = TextFormatter()
    for created in sorted(times) + sorted(times, reverse=True):
        record = record_at(created)
        assert ours.format(record) == DEFAULT.format(record)


# ------------------------------------------------------------------ the attempt line


def _outcome(result: AttemptResult, kind: OutcomeKind = "retry") -> Outcome:
    claimed = Claimed(1, "dlv_1", 7, "s1", "message.received", 2, b'{"secret":"x"}')
    return Outcome(claimed, 0.0, result, kind, None)


ATTEMPT_LINES = [
    pytest.param(
        AttemptResult(None, "connection refused", 3, "", None, "network"),
        "connection refused",
        id="refused",
    ),
    pytest.param(
        AttemptResult(None, "timeout after 5s", 5000, "", None, "timeout"),
        "timeout after 5s",
        id="timeout",
    ),
    pytest.param(
        AttemptResult(
            None, "TLS: certificate verify failed (hostname mismatch)", 9, "", None, "tls"
        ),
        "TLS: certificate verify failed (hostname mismatch)",
        id="tls",
    ),
    pytest.param(
        AttemptResult(503, "HTTP 503", 12, "busy", None, "5xx"), "HTTP 503", id="answer-503"
    ),
]


@pytest.mark.parametrize(("result", "says"), ATTEMPT_LINES)
def test_the_attempt_line_names_why_it_failed(
    caplog: pytest.LogCaptureFixture, result: AttemptResult, says: str
) -> None:
    caplog.set_level(logging.INFO, logger="wahookd.scheduler")
    _log_attempt(_outcome(result))
    (record,) = caplog.records
    text = TextFormatter().format(record)
    assert text.endswith(
        f" INFO wahookd.scheduler: attempt dlv_1 #2 s1 message.received: {says} in"
        f" {result.duration_ms}ms, retry"
    ), text
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == text.split(": ", 1)[1], data
    assert (data["error"], data["error_class"], data["status"]) == (
        result.error,
        result.error_class,
        result.status_code,
    )
    assert "secret" not in text and "secret" not in json.dumps(data)


def test_an_answered_attempt_shows_its_status(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wahookd.scheduler")
    _log_attempt(_outcome(AttemptResult(200, None, 84, "OK", None, "2xx"), "delivered"))
    (record,) = caplog.records
    assert (
        record.getMessage() == "attempt dlv_1 #2 s1 message.received: HTTP 200 in 84ms, delivered"
    )


def test_asyncpg_pool_reconnect_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # while PostgreSQL is down, asyncpg's pool logs each failed reconnect with a traceback
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging("info", "text")
    try:
        try:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        except ConnectionRefusedError:
            logging.getLogger("asyncpg.pool").exception(
                "Failed to restore the pool connection floor"
            )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "Failed to restore the pool connection floor: ConnectionRefusedError:" in err


def handler_on(stream: io.StringIO) -> tuple[logging.Logger, PassHandler]:
    handler = PassHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("wahookd.test-pass-handler")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


async def test_the_loops_info_lines_are_written_once_its_pass_ends() -> None:
    stream = io.StringIO()
    logger, _ = handler_on(stream)
    logger.info("one")
    logger.info("two")
    assert stream.getvalue() == ""  # waiting for the end of this pass of the loop
    await asyncio.sleep(0)
    assert stream.getvalue() == "INFO one\nINFO two\n"
    logger.info("three")
    logger.warning("four")  # a warning goes out at once, after what waited
    assert stream.getvalue().endswith("INFO three\nWARNING four\n")


def test_lines_of_other_threads_or_without_a_loop_are_written_at_once() -> None:
    stream = io.StringIO()
    logger, handler = handler_on(stream)
    logger.info("no loop")
    assert stream.getvalue() == "INFO no loop\n"
    thread = threading.Thread(target=logger.info, args=("a thread",))
    thread.start()
    thread.join()
    assert stream.getvalue().endswith("INFO a thread\n")
    stream.close()
    logger.info("stderr is gone")  # nothing raised: there is nobody left to tell
    handler.flush()


# ------------------------------------------------ the attempt lines' direct path


@pytest.fixture
def root_on_stream() -> Iterator[io.StringIO]:
    """The daemon's logging (setup_logging) writing to a StringIO; restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def _setup(stream: io.StringIO, fmt: str, level: str = "info") -> PassHandler:
    setup_logging(level, fmt)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, PassHandler)
    handler.setStream(stream)
    return handler


BATCH = [
    _outcome(AttemptResult(200, None, 84, "OK", None, "2xx"), "delivered"),
    _outcome(AttemptResult(None, "connection refused", 3, "", None, "network")),
    _outcome(AttemptResult(503, "HTTP 503", 12, "busy", None, "5xx")),
]


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_the_direct_path_writes_what_the_records_would(
    root_on_stream: io.StringIO, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the same clock reading for both paths, with milliseconds that round badly
    monkeypatch.setattr("time.time", lambda: 1_704_110_400.0995)
    _setup(root_on_stream, fmt)
    assert direct_handler(logging.getLogger("wahookd.scheduler")) is not None
    log_attempts(BATCH)
    await asyncio.sleep(0)
    direct = root_on_stream.getvalue()
    root_on_stream.truncate(0)
    root_on_stream.seek(0)
    for outcome in BATCH:
        _log_attempt(outcome)  # through a LogRecord
    await asyncio.sleep(0)
    assert direct == root_on_stream.getvalue()
    assert len(direct.splitlines()) == 3
    if fmt == "text":
        assert direct.startswith(
            time.strftime("%Y-%m-%d %H:%M:%S,099 INFO", time.localtime(1_704_110_400))
        )
    else:
        first = json.loads(direct.splitlines()[0])
        assert (first["delivery"], first["status"], first["outcome"]) == ("dlv_1", 200, "delivered")


async def test_the_direct_path_steps_aside_for_anything_else_that_listens(
    root_on_stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    handler = _setup(root_on_stream, "text")
    scheduler = logging.getLogger("wahookd.scheduler")
    assert direct_handler(scheduler) is handler
    root = logging.getLogger()
    root.addHandler(caplog.handler)  # a second handler would miss the lines
    try:
        assert direct_handler(scheduler) is None
        log_attempts(BATCH[:1])
        assert [r.getMessage() for r in caplog.records] == [
            "attempt dlv_1 #2 s1 message.received: HTTP 200 in 84ms, delivered"
        ]
    finally:
        root.removeHandler(caplog.handler)
    await asyncio.sleep(0)
    root_on_stream.truncate(0)
    root_on_stream.seek(0)
    dropped = logging.Filter("nothing")
    handler.addFilter(dropped)
    assert direct_handler(scheduler) is None
    handler.removeFilter(dropped)
    root.setLevel(logging.WARNING)
    assert direct_handler(scheduler) is None
    log_attempts(BATCH)
    await asyncio.sleep(0)
    assert root_on_stream.getvalue() == ""  # below the level: nothing, either way
    root.setLevel(logging.INFO)
    assert direct_handler(scheduler) is handler


def test_the_direct_path_is_only_for_the_loops_thread(root_on_stream: io.StringIO) -> None:
    _setup(root_on_stream, "text")
    assert direct_handler(logging.getLogger("wahookd.scheduler")) is None
    log_attempts(BATCH[:1])  # no loop here: written at once, through a record
    assert root_on_stream.getvalue().endswith("HTTP 200 in 84ms, delivered\n")
