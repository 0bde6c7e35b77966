"""ratelimit: the per-connection token bucket."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.gateway.ratelimit import TokenBucket


def run(bucket: TokenBucket, times: list[float]) -> list[bool]:
    out = []
    for now in times:
        bucket, allowed = bucket.take(now)
        out.append(allowed)
    return out


@pytest.mark.parametrize(("limit", "times", "expected"), [
    (3, [0, 0, 0, 0], [True, True, True, False]),  # a burst of the limit, not more
    (3, [0, 0, 0, 20], [True, True, True, True]),  # 3/min: one token back after 20 s
    (3, [0, 0, 0, 19.9], [True, True, True, False]),
    (60, [0] * 60 + [1.0, 1.0], [True] * 60 + [True, False]),  # 1/s sustained
    (2, [10, 5, 5], [True, True, False]),  # a clock stepping back refills nothing
])
def test_cases(limit: int, times: list[float], expected: list[bool]) -> None:
    assert run(TokenBucket.per_minute(limit, times[0]), times) == expected


@given(st.integers(1, 200), st.lists(st.floats(0, 600, allow_nan=False), max_size=400))
def test_never_more_than_burst_plus_rate_over_any_window(limit: int, gaps: list[float]) -> None:
    times = []
    now = 0.0
    for gap in gaps:
        now += gap / 100
        times.append(now)
    allowed = [t for t, ok in zip(times, run(TokenBucket.per_minute(limit, 0.0), times), strict=True) if ok]
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            window = allowed[j] - start
            assert j - i + 1 <= limit + limit * window / 60 + 1e-9


@given(st.integers(1, 100))
def test_a_steady_client_under_the_limit_is_never_refused(limit: int) -> None:
    interval = 60 / limit
    assert all(run(TokenBucket.per_minute(limit, 0.0), [n * interval for n in range(3 * limit)]))
