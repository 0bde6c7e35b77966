"""The history API's parameters and track simplification, without a server."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.gateway.history import (BadParameter, alert_query, decode_cursor, encode_cursor, near_query,
                                         shown_address, simplify_track, track_query)

NOW = 1_795_000_000_000


def test_times_use_the_time_syntax_and_default_to_the_last_hour():
    query = track_query({"guard": ["g1"]}, NOW)
    assert (query.end - query.start).total_seconds() == 3600 and query.limit == 1000
    query = track_query({"guard": ["g1"], "from": ["2026-11-18T09:00:00Z"], "to": [str(NOW)]}, NOW)
    assert query.start == datetime(2026, 11, 18, 9, tzinfo=UTC)


@pytest.mark.parametrize(("params", "reason"), [
    ({"guard": ["g1"], "limit": ["10001"]}, "bad_limit"),
    ({"guard": ["g1"], "limit": ["-1"]}, "bad_limit"),
    ({"guard": ["g1", "g2"]}, "repeated_parameter"),
    ({"guard": ["g1"], "simplify_m": ["-3"]}, "bad_simplify_m"),
    ({"guard": ["g1"], "max_points": ["9"], "cursor": [encode_cursor(datetime.now(UTC), "e")]}, "bad_cursor"),
    ({"guard": [""]}, "bad_guard"),
])
def test_bad_track_parameters(params, reason):
    with pytest.raises(BadParameter) as caught:
        track_query(params, NOW)
    assert caught.value.reason == reason


def test_statuses_expand_and_combine():
    assert alert_query({"status": ["open"]}, NOW).statuses == ("NEW", "ACKNOWLEDGED")
    assert alert_query({"status": ["acknowledged,resolved"]}, NOW).statuses == ("ACKNOWLEDGED", "RESOLVED",
                                                                               "FALSE_ALARM")


def test_the_latitude_band_holds_the_whole_circle():
    south, north = near_query({"lat": ["89.9"], "lon": ["0"], "radius_m": ["50000"]}).latitude_band()
    assert north == 90.0 and south < 89.9 - 50000 / 111_700


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
       st.text(min_size=1, max_size=40))
def test_a_cursor_comes_back_as_it_went(ts, event_id):
    cursor = decode_cursor(encode_cursor(ts, event_id))
    assert (cursor.ts, cursor.event_id) == (ts, event_id)


@pytest.mark.parametrize("text", ["", "x", "WzEsMiwzXQ", "bnVsbA"])
def test_a_forged_cursor_is_refused(text):
    with pytest.raises(BadParameter):
        decode_cursor(text)


def test_simplification_keeps_the_ends_and_meets_the_cap():
    walk = [(i, 52.5 + i * 1e-5, 13.4 + math.sin(i / 30) * 1e-3) for i in range(5000)]
    kept, tolerance = simplify_track(walk, None, 100)
    assert 2 <= len(kept) <= 100 and kept[0] == walk[0] and kept[-1] == walk[-1]
    assert [p[0] for p in kept] == sorted(p[0] for p in kept) and tolerance > 0
    finer, _ = simplify_track(walk, 0.5, None)
    assert len(finer) > len(kept)
    assert simplify_track(walk[:50], None, 100) == (walk[:50], 0.0)


walks = st.lists(st.tuples(st.floats(-1e-3, 1e-3), st.floats(-1e-3, 1e-3)), min_size=3, max_size=400)


@given(walks, st.sampled_from([2, 3, 10, 50]))
def test_a_capped_track_keeps_what_one_pass_at_its_tolerance_over_every_fix_keeps(steps, cap):
    # the cap's search runs its later passes on earlier results: they must keep what a pass over
    # the whole track at the tolerance it settled on keeps
    walk, lat, lon = [], 52.5, 13.4
    for n, (dlat, dlon) in enumerate(steps):
        lat, lon = lat + dlat, lon + dlon
        walk.append((n * 1000, lat, lon))
    kept, tolerance = simplify_track(walk, None, cap)
    assert len(kept) <= cap and kept[0] == walk[0] and kept[-1] == walk[-1]
    assert simplify_track(walk, tolerance, None)[0] == kept


@pytest.mark.parametrize(("channel", "address", "shown"), [
    ("email", "ops@example.com", "ops@example.com"),
    ("sms", "+15550100", "+15550100"),
    ("push", "ops", "ops"),
    ("webhook", "https://hooks.example.com/services/T0/B0/secret", "https://hooks.example.com/…"),
    ("webhook", "https://user:pw@hooks.example.com:8443/h?token=secret", "https://hooks.example.com:8443/…"),
    ("webhook", "http://127.0.0.1:notaport/x", "http://127.0.0.1/…"),
])
def test_a_notification_address_shows_a_webhook_as_its_host_only(channel, address, shown):
    assert shown_address(channel, address) == shown
