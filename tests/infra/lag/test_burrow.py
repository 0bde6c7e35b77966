import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.infra.lag.burrow import SEVERITY, Commit, Status, advance, partition_status, worst


def _window(*entries):
    return tuple(Commit(offset, lag, at) for offset, lag, at in entries)


@pytest.mark.parametrize("entries, lag, now, expected, why", [
    ([(5, 3, 0), (5, 4, 10), (5, 5, 20)], 0, 20, Status.OK, "rule 1: no lag now"),
    ([], 7, 20, Status.OK, "nothing to judge"),
    ([(5, 4, 0)], 4, 10, Status.STOP, "rule 2: one commit, then nothing"),
    ([(5, 4, 10)], 4, 10, Status.OK, "one commit, seen just now"),
    ([(5, 3, 0), (6, 3, 10)], 3, 30, Status.STOP, "rule 2: silent for 20 s, the window spans 10 s"),
    ([(5, 0, 0), (5, 0, 10)], 4, 30, Status.STOP, "rule 2 before rule 3: died caught up, records piled up"),
    ([(5, 0, 0), (5, 4, 10), (5, 4, 20)], 4, 20, Status.OK, "rule 3: zero lag in the window"),
    ([(5, 4, 0), (5, 4, 10)], 4, 10, Status.OK, "rule 4: window not full, no trend yet"),
    ([(5, 4, 0), (5, 5, 10), (5, 6, 20)], 6, 20, Status.STALL, "rule 5: offset never moved"),
    ([(5, 4, 0), (6, 4, 10), (7, 5, 20)], 5, 20, Status.WARN, "rule 6: moving, lag never decreasing"),
    ([(5, 6, 0), (7, 5, 10), (9, 5, 20)], 5, 20, Status.OK, "rule 7: lag went down once"),
    ([(5, 4, 0), (5, 4, 10), (5, 4, 20)], 4, 20, Status.STALL, "stalled beats warn: both hold"),
])
def test_partition_status_rules(entries, lag, now, expected, why):
    assert partition_status(_window(*entries), lag, now, size=3) is expected, why


@pytest.mark.parametrize("entries, seen, live, expected", [
    ([], (5, 1, 0), False, [(5, 1, 0)]),
    ([(5, 1, 0)], (5, 2, 10), True, [(5, 1, 0), (5, 2, 10)]),
    ([(5, 1, 0)], (5, 2, 10), False, [(5, 1, 0)]),
    ([(5, 1, 0)], (6, 2, 10), False, [(5, 1, 0), (6, 2, 10)]),
    ([(5, 1, 0), (6, 1, 10)], (2, 9, 20), True, [(2, 9, 20)]),
    ([(1, 1, 0), (2, 1, 10), (3, 1, 20)], (4, 1, 30), True, [(2, 1, 10), (3, 1, 20), (4, 1, 30)]),
])
def test_advance_window(entries, seen, live, expected):
    assert advance(_window(*entries), Commit(*seen), live=live, size=3) == _window(*expected)


@pytest.mark.parametrize("statuses, expected", [
    ([], Status.OK),
    ([Status.OK, Status.WARN, Status.OK], Status.WARN),
    ([Status.STALL, Status.WARN], Status.STALL),
    ([Status.STALL, Status.STOP], Status.STOP),
    ([Status.STOP, Status.ERR, Status.OK], Status.ERR),
])
def test_a_group_shows_its_worst_partition(statuses, expected):
    assert worst(statuses) is expected


commits = st.builds(Commit, st.integers(0, 50), st.integers(0, 20), st.floats(0, 1000))
observations = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20), st.booleans()), max_size=40)


def _replay(steps, size, step_s=10.0):
    window, now = (), 0.0
    for offset, lag, live in steps:
        now += step_s
        window = advance(window, Commit(offset, lag, now), live=live, size=size)
    return window, now


@given(observations, st.integers(2, 12))
def test_windows_stay_bounded_and_never_go_backwards(steps, size):
    window, _ = _replay(steps, size)
    assert len(window) <= size
    assert all(a.offset <= b.offset and a.at < b.at for a, b in zip(window, window[1:]))


@given(st.lists(commits, max_size=12), st.floats(0, 2000), st.integers(2, 12))
def test_no_lag_is_always_ok(entries, now, size):
    assert partition_status(tuple(entries), 0, now, size) is Status.OK


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20)), min_size=1, max_size=40),
       st.integers(2, 12), st.integers(1, 20))
def test_a_live_group_is_never_stopped(steps, size, lag):
    window, now = _replay([(offset, lag_, True) for offset, lag_ in steps], size)
    assert partition_status(window, lag, now, size) is not Status.STOP


@given(observations, st.integers(2, 12), st.integers(1, 20))
def test_trends_wait_for_a_full_window(steps, size, lag):
    window, now = _replay(steps, size)
    if len(window) < size:
        assert partition_status(window, lag, now, size) in (Status.OK, Status.STOP)


@given(observations, st.integers(2, 12), st.integers(1, 20))
def test_a_window_with_zero_lag_seen_just_now_is_ok(steps, size, lag):
    window, now = _replay(steps + [(60, 0, True)], size)
    assert partition_status(window, lag, now, size) is Status.OK


@given(st.lists(st.sampled_from(SEVERITY), max_size=10))
def test_worst_is_one_of_the_statuses_and_none_is_worse(statuses):
    verdict = worst(statuses)
    assert verdict in statuses or (not statuses and verdict is Status.OK)
    assert all(SEVERITY.index(s) <= SEVERITY.index(verdict) for s in statuses)
