from confluent_kafka import Producer

from guardstream.catalog import TOPICS, Topic
from guardstream.infra import topics
from guardstream.infra.topics import Existing, plan_changes, sized
from guardstream.settings import Settings
from guardstream.topic_end import probe_end_offsets

DAY = 86_400_000


def _topic(name, partitions=3, retention=DAY, cleanup="delete"):
    return Topic(name, partitions, retention, cleanup, "k", ("guardstream.Telemetry",), "test topic")


def test_plan_creates_what_is_missing_and_nothing_when_equal():
    declared = (_topic("a"), _topic("b", cleanup="compact"))
    changes = plan_changes(declared, {})
    assert [(c.topic, c.action) for c in changes] == [("a", "create"), ("b", "create")]
    existing = {t.name: Existing(t.partitions, dict(t.configs)) for t in declared}
    assert plan_changes(declared, existing) == []


def test_the_partition_cap_is_the_embedded_default_and_keeps_partitions_aligned():
    embedded = sized(Settings.from_env({"GUARDSTREAM_PROFILE": "embedded"}), TOPICS.all())
    assert {t.name: t.partitions for t in embedded} == {t.name: 1 for t in TOPICS.all()}
    by_name = {t.name: t for t in embedded}
    assert {by_name[t.name].partitions for t in TOPICS.raw()} == {by_name[TOPICS.worker_state.name].partitions}
    assert sized(Settings.from_env({}), TOPICS.all()) == TOPICS.all()
    wide = sized(Settings.from_env({"GUARDSTREAM_PROFILE": "embedded", "GUARDSTREAM_PARTITIONS_MAX": "4"}),
                 TOPICS.all())
    assert max(t.partitions for t in wide) == 4 and min(t.partitions for t in wide) == 1


def test_plan_reports_drift_per_kind():
    declared = (_topic("a", partitions=6), _topic("b", partitions=2), _topic("c"))
    existing = {"a": Existing(3, {"cleanup.policy": "delete", "retention.ms": str(DAY)}),
                "b": Existing(4, {"cleanup.policy": "delete", "retention.ms": str(DAY)}),
                "c": Existing(3, {"cleanup.policy": "compact", "retention.ms": "1000"})}
    got = {(c.topic, c.action): c for c in plan_changes(declared, existing)}
    assert got[("a", "add_partitions")].partitions == 6
    assert "cannot remove partitions" in got[("b", "drift")].detail
    assert got[("c", "set_config")].configs == {"cleanup.policy": "delete", "retention.ms": str(DAY)}


def test_apply_twice_changes_nothing_the_second_time(settings):
    first = topics.apply(settings)
    assert all(c.action in ("create",) for c in first)
    assert topics.apply(settings) == []


def test_apply_reports_drift_it_finds(settings, unique):
    name = f"drift.{unique}"
    assert [c.action for c in topics.apply(settings, (_topic(name),))] == ["create"]
    changed = (_topic(name, retention=2 * DAY),)
    changes = topics.apply(settings, changed)
    assert len(changes) == 1
    assert changes[0].topic == name
    # A broker with IncrementalAlterConfigs fixes it (set_config); one without reports drift.
    assert changes[0].action in ("set_config", "drift")
    assert "retention.ms" in changes[0].detail


def test_end_offsets_are_exact_with_multi_record_batches(settings, unique):
    name = f"offsets.{unique}"
    topics.apply(settings, (_topic(name, partitions=2),))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 100})
    for i in range(10):
        producer.produce(name, value=b"x", partition=0)
    producer.flush()
    for i in range(7):
        producer.produce(name, value=b"y", partition=0)
    producer.flush()
    ends = probe_end_offsets(settings, [(name, 0), (name, 1)])
    assert ends[(name, 0)] == (0, 17)
    assert ends[(name, 1)] == (0, 0)
    status = next(s for s in topics.describe(settings, (_topic(name, partitions=2),)))
    assert status.partitions == 2 and status.messages == 17


def test_describe_marks_missing_topics(settings, unique):
    status = topics.describe(settings, (_topic(f"missing.{unique}"),))
    assert status[0].partitions is None


def test_the_embedded_profile_means_one_replica_for_every_command():
    topic = TOPICS.all()[0]
    assert topic.replication_factor == 3
    embedded = Settings.from_env({"GUARDSTREAM_PROFILE": "embedded"})
    assert topics.replication_factor(embedded, topic, brokers=1) == 1
    production = Settings.from_env({})
    assert topics.replication_factor(production, topic, brokers=3) == 3
    explicit = Settings.from_env({"GUARDSTREAM_PROFILE": "embedded", "GUARDSTREAM_REPLICATION_FACTOR": "2"})
    assert topics.replication_factor(explicit, topic, brokers=2) == 2
