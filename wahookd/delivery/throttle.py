"""A webhook's rate limit as a token bucket (SPEC §8 "Throttling"); pure.

`rateLimit = n`: at most n attempts per second, bursts of n. The caller passes the
time in (monotonic seconds), so tests drive it with plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# float refills land a hair below a whole token: count that as a token, or a caller
# that waited exactly the time it was told would be told to wait a few nanoseconds more
_EPSILON = 1e-9


@dataclass(slots=True)
class TokenBucket:
    """`rate_per_s` tokens a second, holding at most `burst` (default: the rate); starts full."""

    rate_per_s: float
    burst: float = 0.0
    _tokens: float = field(init=False, default=0.0)
    _at: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {self.rate_per_s}")
        if self.burst <= 0:
            self.burst = self.rate_per_s
        self._tokens = self.burst

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        if self._at is None or now > self._at:
            self._at = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when one was free (go now), else the seconds until one is.

        A refusal takes nothing: ask again after the wait.
        """
        self._refill(now)
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s

    def available(self, now: float) -> float:
        """Tokens free at `now` (for metrics and tests)."""
        self._refill(now)
        return self._tokens
