"""Retry ladder and Retry-After arithmetic (SPEC §5), with plain numbers."""

from __future__ import annotations

import random

import pytest

from wahookd.delivery.retry import next_attempt_at, parse_retry_after, total_attempts

LADDER = (30.0, 300.0, 1800.0, 7200.0)  # the guide's 30 s, 5 min, 30 min, 2 h
NOW = 1_700_000_000.0


def test_default_ladder_has_five_attempts() -> None:
    assert total_attempts(LADDER) == 5
    assert total_attempts(()) == 1


def test_default_ladder_step_by_step() -> None:
    assert next_attempt_at(attempts_made=1, schedule_s=LADDER, now=NOW) == NOW + 30
    assert next_attempt_at(attempts_made=2, schedule_s=LADDER, now=NOW) == NOW + 300
    assert next_attempt_at(attempts_made=3, schedule_s=LADDER, now=NOW) == NOW + 1800
    assert next_attempt_at(attempts_made=4, schedule_s=LADDER, now=NOW) == NOW + 7200
    assert next_attempt_at(attempts_made=5, schedule_s=LADDER, now=NOW) is None
    assert next_attempt_at(attempts_made=6, schedule_s=LADDER, now=NOW) is None


def test_empty_schedule_means_one_attempt_only() -> None:
    assert next_attempt_at(attempts_made=1, schedule_s=(), now=NOW) is None
    assert next_attempt_at(attempts_made=1, schedule_s=(), now=NOW, retry_after_s=60) is None


def test_wait_is_counted_from_now() -> None:
    assert next_attempt_at(attempts_made=2, schedule_s=LADDER, now=100.0) == 400.0


def test_retry_after_postpones() -> None:
    at = next_attempt_at(attempts_made=1, schedule_s=LADDER, now=NOW, retry_after_s=120)
    assert at == NOW + 120


def test_retry_after_shorter_than_the_step_does_nothing() -> None:
    at = next_attempt_at(attempts_made=2, schedule_s=LADDER, now=NOW, retry_after_s=10)
    assert at == NOW + 300
    at = next_attempt_at(attempts_made=2, schedule_s=LADDER, now=NOW, retry_after_s=0)
    assert at == NOW + 300


def test_retry_after_is_capped_at_the_longest_step() -> None:
    at = next_attempt_at(attempts_made=1, schedule_s=LADDER, now=NOW, retry_after_s=86400)
    assert at == NOW + 7200
    at = next_attempt_at(attempts_made=4, schedule_s=LADDER, now=NOW, retry_after_s=86400)
    assert at == NOW + 7200


def test_retry_after_does_not_add_attempts() -> None:
    assert next_attempt_at(attempts_made=5, schedule_s=LADDER, now=NOW, retry_after_s=60) is None


def test_jitter_stays_within_bounds_and_varies() -> None:
    rng = random.Random(1234)
    waits = [
        next_attempt_at(attempts_made=2, schedule_s=LADDER, now=0.0, jitter=0.2, rng=rng)
        for _ in range(500)
    ]
    assert all(w is not None and 240.0 <= w <= 360.0 for w in waits)
    assert len(set(waits)) > 400  # actually random, not a fixed offset
    assert min(w for w in waits if w is not None) < 260.0
    assert max(w for w in waits if w is not None) > 340.0


def test_jitter_is_reproducible_with_a_seeded_random() -> None:
    first = next_attempt_at(
        attempts_made=1, schedule_s=LADDER, now=0.0, jitter=0.5, rng=random.Random(7)
    )
    again = next_attempt_at(
        attempts_made=1, schedule_s=LADDER, now=0.0, jitter=0.5, rng=random.Random(7)
    )
    assert first == again == 30.0 * random.Random(7).uniform(0.5, 1.5)


def test_jitter_without_rng_uses_module_random() -> None:
    at = next_attempt_at(attempts_made=3, schedule_s=LADDER, now=0.0, jitter=0.1)
    assert at is not None
    assert 1620.0 <= at <= 1980.0


def test_retry_after_applies_on_top_of_jitter() -> None:
    at = next_attempt_at(
        attempts_made=1,
        schedule_s=LADDER,
        now=0.0,
        retry_after_s=1000,
        jitter=0.2,
        rng=random.Random(3),
    )
    assert at == 1000.0


@pytest.mark.parametrize("jitter", [-0.1, 1.5])
def test_bad_jitter_is_a_programming_error(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        next_attempt_at(attempts_made=1, schedule_s=LADDER, now=NOW, jitter=jitter)


def test_attempts_made_starts_at_one() -> None:
    with pytest.raises(ValueError, match="attempts_made"):
        next_attempt_at(attempts_made=0, schedule_s=LADDER, now=NOW)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 30 ", 30.0),
        ("0007", 7.0),
        ("31536000", 31536000.0),  # one year: still honoured here, capped by the ladder
    ],
)
def test_retry_after_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


# 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("Tue, 14 Nov 2023 22:15:20 GMT", 120.0),  # IMF-fixdate
        ("Tuesday, 14-Nov-23 22:15:20 GMT", 120.0),  # obsolete RFC 850 form
        ("Tue Nov 14 22:15:20 2023", 120.0),  # asctime form, no zone: GMT
        ("Tue, 14 Nov 2023 23:13:20 +0100", 0.0),  # a numeric zone is honoured
        ("Tue, 14 Nov 2023 22:13:20 GMT", 0.0),
        ("Tue, 14 Nov 2023 21:00:00 GMT", 0.0),  # in the past: retry as soon as allowed
        ("Wed, 15 Nov 2023 00:13:20 GMT", 7200.0),
    ],
)
def test_retry_after_http_date(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "1.5",
        "1e3",
        "0x10",
        "120 seconds",
        "31536001",  # over a year
        "99999999999999999999999",
        "Tue, 14 Nov 2999 22:13:20 GMT",  # centuries ahead
        "Tue, 32 Nov 2023 22:13:20 GMT",
        "\u0661\u0662\u0660",  # Arabic-Indic digits are not delay-seconds
    ],
)
def test_garbage_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_parsed_retry_after_feeds_next_attempt() -> None:
    retry_after_s = parse_retry_after("Tue, 14 Nov 2023 22:23:20 GMT", NOW)
    assert retry_after_s == 600.0
    at = next_attempt_at(attempts_made=1, schedule_s=LADDER, now=NOW, retry_after_s=retry_after_s)
    assert at == NOW + 600
