"""Next-attempt arithmetic for the retry ladder and Retry-After (SPEC §5); no clock reads."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final

# A Retry-After further out than this is a misconfigured receiver, not a plan.
MAX_RETRY_AFTER_S: Final = 365 * 24 * 3600.0

_DELAY_SECONDS_RE: Final = re.compile(r"[0-9]+")


def total_attempts(schedule_s: Sequence[float]) -> int:
    """Attempts in all for a schedule: the immediate one plus one per step."""
    return len(schedule_s) + 1


def next_attempt_at(
    *,
    attempts_made: int,
    schedule_s: Sequence[float],
    now: float,
    retry_after_s: float | None = None,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float | None:
    """Unix time of the next attempt after a failure, or None when no attempts are left."""
    if attempts_made < 1:
        raise ValueError(f"attempts_made must be >= 1, got {attempts_made}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be between 0 and 1, got {jitter}")
    if attempts_made > len(schedule_s):
        return None
    wait_s = schedule_s[attempts_made - 1]
    if jitter > 0:
        wait_s *= (rng or random).uniform(1.0 - jitter, 1.0 + jitter)
    if retry_after_s is not None:
        # The receiver may ask for more time but cannot park a delivery beyond the ladder's
        # longest step, or one bad header would stall it for days.
        wait_s = max(wait_s, min(retry_after_s, max(schedule_s)))
    return now + wait_s


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), else None."""
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS_RE.fullmatch(value):
        seconds = float(int(value))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (ValueError, TypeError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            # asctime dates carry no zone; RFC 7231 says HTTP dates are GMT.
            when = when.replace(tzinfo=UTC)
        # A date in the past means "now", not a negative wait.
        seconds = max(0.0, when.timestamp() - now)
    return seconds if seconds <= MAX_RETRY_AFTER_S else None
