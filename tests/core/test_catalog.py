import re
from pathlib import Path

from guardstream.catalog import INTERNAL_JSON, RAW_BYTES, TOPICS, Priority, topic_for_priority
from guardstream.schemas.contracts import current_contracts

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"raw.device", "raw.guard", "raw.sensor", "raw.alert", "raw.system", "events.critical", "events.high",
            "events.normal", "events.low", "geofences", "alerts.actions", "commands.device", "dlq.bridge",
            "dlq.validate", "dlq.sink"}


def test_catalog_declares_every_required_topic_once():
    names = [t.name for t in TOPICS.all()]
    assert len(names) == len(set(names))
    assert REQUIRED <= set(names)


def test_every_topic_is_fully_described():
    for topic in TOPICS.all():
        assert topic.partitions >= 1 and topic.replication_factor >= 1
        assert topic.cleanup_policy in ("delete", "compact")
        assert topic.key and topic.description and topic.value_schemas


def test_value_schemas_name_real_contracts():
    contracts = current_contracts()
    for topic in TOPICS.all():
        if topic.value_schemas not in ((RAW_BYTES,), (INTERNAL_JSON,)):
            assert set(topic.value_schemas) <= set(contracts), topic.name


def test_priority_topics_in_order_of_urgency():
    assert [t.priority for t in TOPICS.events()] == list(Priority)
    assert topic_for_priority(Priority.CRITICAL).name == "events.critical"
    assert TOPICS.geofences.cleanup_policy == "compact"
    assert len(TOPICS.raw()) == 5


def test_no_topic_name_is_spelled_outside_the_catalog():
    names = "|".join(re.escape(t.name) for t in TOPICS.all())
    literal = re.compile(rf"""["']({names})["']""")
    offenders = []
    for folder in ("guardstream", "streams", "connectors", "sinks", "gateway", "notifier", "infra", "schemas"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "catalog.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if literal.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_worker_state_changelog_is_copartitioned_with_the_raw_topics():
    assert {t.partitions for t in TOPICS.raw()} == {TOPICS.worker_state.partitions}
    assert TOPICS.worker_state.cleanup_policy == "compact"
