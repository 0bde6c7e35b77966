"""Per-connection inbound rate limit: a token bucket. Pure; the clock is an argument.

A full bucket holds ``capacity`` tokens and refills continuously at
``refill_per_s``; a message takes one token. ``per_minute(n)`` allows a burst of
``n`` and ``n`` a minute sustained, so over any window of ``t`` seconds at most
``n + n * t / 60`` messages pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class TokenBucket:
    capacity: float
    refill_per_s: float
    tokens: float
    updated: float  # monotonic seconds of the last refill

    @classmethod
    def per_minute(cls, limit: int, now: float) -> TokenBucket:
        return cls(float(limit), limit / 60.0, float(limit), now)

    def take(self, now: float) -> tuple[TokenBucket, bool]:
        """(the bucket after the attempt, whether the message may pass)."""
        elapsed = max(0.0, now - self.updated)  # a clock that steps back refills nothing
        tokens = min(self.capacity, self.tokens + elapsed * self.refill_per_s)
        if tokens >= 1.0:
            return replace(self, tokens=tokens - 1.0, updated=max(now, self.updated)), True
        return replace(self, tokens=tokens, updated=max(now, self.updated)), False
