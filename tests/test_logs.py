"""The log formats: the text formatter's cached time reads as logging's own."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from wahookd.logs import TextFormatter

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
