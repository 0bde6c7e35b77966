"""The whole path's queues and the first stage behind: case tables, no servers."""

import pytest

from guardstream.infra.lag.burrow import Status
from guardstream.infra.lag.path import (BEHIND_AGE_S, BridgeWindow, StageQueue, first_behind, is_behind,
                                        path_rows, path_stages, verdict)
from guardstream.infra.lag.snapshot import PartitionLag, Snapshot
from guardstream.infra.lag.sources import windows_from_metrics

OLD = BEHIND_AGE_S + 1


@pytest.mark.parametrize("stage, behind", [
    (StageQueue("mqtt broker", None), False),  # not reported: never judged
    (StageQueue("mqtt broker", 1000, 1000), False),  # no more than the windows hold in flight
    (StageQueue("mqtt broker", 1001, 1000), True),  # the rest waits in the broker's queue
    (StageQueue("mqtt broker", 50_000, None), False),  # without the bridge's window, no yardstick
    (StageQueue("bridge main", 999, 1000, 0.2), False),
    (StageQueue("bridge main", 1000, 1000, 0.2), True),  # full: the lane stopped reading
    (StageQueue("bridge main", 3, 1000, OLD), True),  # waiting on Kafka for long
    (StageQueue("bridge main", None, note="/metrics not read"), False),
    (StageQueue("group w", 0, None, 0.0, Status.OK), False),
    (StageQueue("group w", 500, None, 2.0, Status.WARN), False),  # behind in records, not in time
    (StageQueue("group w", 500, None, OLD, Status.WARN), True),
    (StageQueue("group w", 5, None, 1.0, Status.STOP), True),
    (StageQueue("group w", 5, None, 1.0, Status.STALL), True),
    (StageQueue("group w", 0, None, None, Status.ERR), True),
    (StageQueue("group w", 5, None, None, Status.OK), False),  # lag seconds unreadable
])
def test_is_behind(stage, behind):
    assert is_behind(stage) is behind


def _stages(broker=0, window=0, window_age=0.0, worker=(0, 0.0, Status.OK), sink=(0, 0.0, Status.OK)):
    return [StageQueue("mqtt broker", broker, 1000), StageQueue("bridge main", window, 1000, window_age),
            StageQueue("group worker", worker[0], None, worker[1], worker[2]),
            StageQueue("group sink", sink[0], None, sink[1], sink[2])]


@pytest.mark.parametrize("stages, first", [
    (_stages(), None),
    (_stages(sink=(900, 40.0, Status.WARN)), "group sink"),
    (_stages(worker=(900, 40.0, Status.WARN), sink=(900, 40.0, Status.WARN)), "group worker"),
    (_stages(window=1000, worker=(0, 0.0, Status.STOP)), "bridge main"),  # Kafka away: the window fills first
    (_stages(broker=20_000, window=1000), "mqtt broker"),  # the bridge too slow: the broker queues
    (_stages(broker=20_000, window=1000, worker=(10, 30.0, Status.WARN)), "mqtt broker"),
    (_stages(window=2, window_age=OLD), "bridge main"),
])
def test_first_behind_is_the_earliest_stage_along_the_path(stages, first):
    found = first_behind(stages)
    assert (found.stage if found else None) == first
    assert verdict(stages) == (f"first stage behind: {first}" if first else "no stage is behind")


def _lag(group, topic, partition, lag, seconds):
    return PartitionLag(group, topic, partition, 100, 100 + lag, lag, seconds, Status.OK, 3)


def test_path_stages_put_the_raw_topics_groups_first_and_sum_each_group():
    snapshot = Snapshot(0.0, 10, {}, (
        _lag("a-sink", "events.low", 0, 5, 1.5), _lag("a-sink", "events.low", 1, 7, 3.0),
        _lag("z-worker", "raw.device", 0, 0, 0.0)), {"a-sink": Status.WARN, "z-worker": Status.OK})
    windows = [BridgeWindow("http://b/metrics", "alerts", 0, 100, 0.0, 0),
               BridgeWindow("http://b/metrics", "main", 1000, 1000, 4.0, 812)]
    stages = path_stages(3000, windows, snapshot, frozenset({"raw.device"}))
    assert [s.stage for s in stages] == ["mqtt broker", "bridge alerts", "bridge main", "group z-worker",
                                         "group a-sink"]
    assert stages[0].limit == 1100
    assert (stages[4].queued, stages[4].age_s, stages[4].status) == (12, 3.0, Status.WARN)
    rows = path_rows(stages)
    assert rows[0] == ["mqtt broker", "3000", "1100", "", "", "BEHIND"]
    assert rows[2] == ["bridge main", "1000", "1000", "4.0", "producer queue 812", "BEHIND"]


def test_without_broker_or_bridge_figures_those_stages_say_so():
    stages = path_stages(None, [], Snapshot(0.0, 10, {}, (), {}), frozenset())
    assert path_rows(stages) == [["mqtt broker", "-", "", "", "not reported (mosquitto $SYS only)", ""],
                                 ["bridge", "-", "", "", "/metrics not read", ""]]
    assert verdict(stages) == "no stage is behind"


def test_windows_are_read_from_a_bridges_metrics_text():
    text = ('guardstream_bridge_window_messages{lane="main"} 1000.0\n'
            'guardstream_bridge_window_capacity{lane="main"} 1000.0\n'
            'guardstream_bridge_window_oldest_age_seconds{lane="main"} 12.5\n'
            'guardstream_bridge_producer_queue_messages{lane="main"} 40.0\n'
            'guardstream_bridge_window_messages{lane="alerts"} 0.0\n'
            'guardstream_bridge_inflight_messages 1000.0\n')
    assert windows_from_metrics(text, "u") == [BridgeWindow("u", "main", 1000, 1000, 12.5, 40)]


def test_the_watch_view_shows_the_verdict_under_the_path():
    from rich.console import Console
    from guardstream.infra.lag.table import path_table
    console = Console(width=120, record=True)
    console.print(path_table(_stages(window=1000)))
    text = console.export_text()
    assert "bridge main" in text and "BEHIND" in text and "first stage behind: bridge main" in text
