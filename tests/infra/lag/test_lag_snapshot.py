import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.infra.lag.burrow import Commit, Status
from guardstream.infra.lag.metrics import snapshot_families
from guardstream.infra.lag.snapshot import (EMPTY, GroupObservation, Observation, assemble, lag_seconds,
                                            offsets_to_date)

NOW = 1_000.0
ENDS = {("a", 0): (0, 17), ("a", 1): (5, 9), ("b", 0): (0, 0)}


def _observe(groups, at=NOW, ends=ENDS, failed=()):
    return Observation(at, ends, {g: GroupObservation(live, committed) for g, (live, committed) in groups.items()},
                       frozenset(failed))


def test_lag_is_exact_and_lag_seconds_come_from_the_record_at_the_committed_offset():
    observation = _observe({"g": (True, {("a", 0): 4, ("a", 1): 9, ("b", 0): 0})})
    assert offsets_to_date(observation) == {("a", 0, 4)}
    snapshot = assemble(observation, {("a", 0, 4): 904_000}, EMPTY, window_size=3)
    rows = {(r.topic, r.partition): (r.committed, r.end, r.lag, r.lag_seconds) for r in snapshot.lags}
    assert rows == {("a", 0): (4, 17, 13, 96.0), ("a", 1): (9, 9, 0, 0.0), ("b", 0): (0, 0, 0, 0.0)}
    assert snapshot.lag_sums() == {("g", "a"): 13, ("g", "b"): 0}
    assert snapshot.groups == {"g": Status.OK}


def test_lag_is_never_negative():
    snapshot = assemble(_observe({"g": (False, {("a", 1): 12})}), {}, EMPTY, window_size=3)
    assert [(r.lag, r.lag_seconds) for r in snapshot.lags] == [(0, 0.0)]


def test_a_committed_offset_below_the_oldest_is_dated_by_the_oldest_record():
    observation = _observe({"g": (False, {("a", 1): 2})})
    assert offsets_to_date(observation) == {("a", 1, 5)}
    snapshot = assemble(observation, {("a", 1, 5): 990_000}, EMPTY, window_size=3)
    assert [(r.lag, r.lag_seconds) for r in snapshot.lags] == [(7, 10.0)]


@pytest.mark.parametrize("now, stamp, lag, expected", [
    (100.0, 90_000, 3, 10.0),
    (100.0, 90_000, 0, 0.0),
    (100.0, 120_000, 3, 0.0),  # a producer clock ahead of ours
    (100.0, None, 3, None),
])
def test_lag_seconds(now, stamp, lag, expected):
    assert lag_seconds(now, stamp, lag) == expected


def test_windows_carry_over_and_groups_and_topics_that_vanished_leave_no_trace():
    first = assemble(_observe({"g": (True, {("a", 0): 4}), "h": (True, {("a", 0): 17})}), {}, EMPTY, 3)
    assert set(first.groups) == {"g", "h"}
    second = assemble(_observe({"g": (True, {("a", 0): 4, ("c", 0): 1})}, at=NOW + 10), {}, first, 3)
    assert set(second.groups) == {"g"}
    assert {(r.group, r.topic) for r in second.lags} == {("g", "a")}  # topic c is not on the cluster
    assert second.windows == {("g", "a", 0): (Commit(4, 13, NOW), Commit(4, 13, NOW + 10))}
    families = {f.name: f for f in snapshot_families(second)}
    assert all(s.labels.get("consumergroup") != "h" for f in families.values() for s in f.samples)


def test_a_group_that_cannot_be_read_is_err_and_keeps_its_window():
    first = assemble(_observe({"g": (True, {("a", 0): 4})}), {}, EMPTY, 3)
    second = assemble(_observe({}, at=NOW + 10, failed={"g"}), {}, first, 3)
    assert second.groups == {"g": Status.ERR}
    assert second.lags == ()
    assert second.windows == first.windows


def test_status_series_mark_the_current_status_with_one():
    snapshot = assemble(_observe({"g": (True, {("a", 0): 4})}), {("a", 0, 4): 904_000}, EMPTY, 3)
    families = {f.name: f for f in snapshot_families(snapshot)}
    status = {s.labels["status"]: s.value for s in families["guardstream_consumergroup_status"].samples}
    assert status == {"OK": 1, "WARN": 0, "STALL": 0, "STOP": 0, "ERR": 0}
    lag = families["kafka_consumergroup_lag"].samples
    assert [(s.labels, s.value) for s in lag] == [({"consumergroup": "g", "topic": "a", "partition": "0"}, 13)]
    ends = {(s.labels["topic"], s.labels["partition"]): s.value
            for s in families["kafka_topic_partition_current_offset"].samples}
    assert ends == {("a", "0"): 17, ("a", "1"): 9, ("b", "0"): 0}


committed = st.dictionaries(st.sampled_from(sorted(ENDS)), st.integers(0, 30), max_size=3)
groups = st.dictionaries(st.sampled_from(["g", "h", "i"]), st.tuples(st.booleans(), committed), max_size=3)


@given(st.lists(groups, min_size=1, max_size=6), st.integers(0, 2_000_000))
def test_lags_are_never_negative_and_windows_follow_the_cluster(rounds, stamp):
    snapshot = EMPTY
    for i, seen in enumerate(rounds):
        observation = _observe(seen, at=NOW + 10 * i)
        snapshot = assemble(observation, dict.fromkeys(offsets_to_date(observation), stamp), snapshot, 3)
        assert all(r.lag >= 0 and r.lag_seconds is not None and r.lag_seconds >= 0 for r in snapshot.lags)
        assert set(snapshot.groups) == set(seen)
        assert {k[0] for k in snapshot.windows} <= set(seen)
        assert all(1 <= len(w) <= 3 for w in snapshot.windows.values())
