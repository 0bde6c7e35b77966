"""The collector against the real broker; its clock is stepped by hand, so no test waits for a window."""

import pytest
from confluent_kafka import Consumer

from guardstream.infra.lag.burrow import Status
from guardstream.infra.lag.collect import LagCollector
from guardstream.infra.lag.reader import READER_ID
from guardstream.kafka import consumer_config


@pytest.fixture
def collector(settings, clock):
    collector = LagCollector(settings, window_size=3, clock=clock)
    yield collector
    collector.close()


def _rows(snapshot, group):
    return {(r.topic, r.partition): r for r in snapshot.lags if r.group == group}


def test_exact_lag_and_lag_seconds_over_multi_record_batches(settings, make_topic, produce, commit, collector,
                                                            clock, unique):
    topic, group = make_topic(partitions=2), f"lagging-{unique}"
    produce(topic, 0, 0, 10)  # two batches: tansu's watermark reads 11, the end is 17
    produce(topic, 0, 10, 7)
    commit(group, {(topic, 0): 4, (topic, 1): 0})

    snapshot = collector.collect()
    rows = _rows(snapshot, group)
    assert (rows[(topic, 0)].committed, rows[(topic, 0)].end, rows[(topic, 0)].lag) == (4, 17, 13)
    assert rows[(topic, 0)].lag_seconds == 96.0  # now is T0 + 100 s, record 4 was written at T0 + 4 s
    assert (rows[(topic, 1)].lag, rows[(topic, 1)].lag_seconds) == (0, 0.0)
    assert snapshot.ends[(topic, 0)] == (0, 17) and snapshot.ends[(topic, 1)] == (0, 0)
    assert snapshot.groups[group] is Status.OK
    assert READER_ID not in snapshot.groups  # the exporter's own reader leaves no group behind

    clock.now += 10  # nobody is in the group and nothing was committed for longer than the window spans
    assert collector.collect().groups[group] is Status.STOP

    produce(topic, 0, 17, 3)  # the end moved: only this partition is read again
    commit(group, {(topic, 0): 15})
    clock.now += 10
    rows = _rows(collector.collect(), group)
    assert (rows[(topic, 0)].end, rows[(topic, 0)].lag, rows[(topic, 0)].lag_seconds) == (20, 5, 120 - 15)


def test_a_live_group_goes_from_ok_to_stall_and_back_when_it_catches_up(settings, make_topic, produce, collector,
                                                                       clock, unique):
    topic, group = make_topic(), f"stalling-{unique}"
    produce(topic, 0, 0, 5)
    consumer = Consumer(consumer_config(settings, "lag-test", group))
    consumer.subscribe([topic])
    try:
        _consume_and_commit(consumer, 5)
        statuses = [collector.collect().groups[group]]
        produce(topic, 0, 5, 3)  # the consumer stays in the group but stops consuming
        for _ in range(3):
            clock.now += 10
            snapshot = collector.collect()
            statuses.append(snapshot.groups[group])
        assert statuses == [Status.OK, Status.OK, Status.OK, Status.STALL]
        assert _rows(snapshot, group)[(topic, 0)].lag == 3

        _consume_and_commit(consumer, 3)
        clock.now += 10
        snapshot = collector.collect()
        assert snapshot.groups[group] is Status.OK
        assert _rows(snapshot, group)[(topic, 0)].lag == 0
    finally:
        consumer.close()


def _consume_and_commit(consumer, count):
    last, seen = None, 0
    for _ in range(100):  # joining the group takes a few seconds on tansu
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            last, seen = message, seen + 1
            if seen == count:
                break
    assert seen == count
    consumer.commit(message=last, asynchronous=False)


def test_one_group_only(settings, make_topic, produce, commit, unique):
    topic = make_topic()
    produce(topic, 0, 0, 4)
    commit(f"one-{unique}", {(topic, 0): 1})
    commit(f"other-{unique}", {(topic, 0): 2})
    collector = LagCollector(settings, group=f"one-{unique}")
    try:
        snapshot = collector.collect()
    finally:
        collector.close()
    assert set(snapshot.groups) == {f"one-{unique}"}
    assert set(snapshot.ends) == {(topic, 0)}
    assert [r.lag for r in snapshot.lags] == [3]
