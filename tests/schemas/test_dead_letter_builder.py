"""The one dead-letter builder: the record, its Connect-style headers, the detail limit."""

from __future__ import annotations

import fastavro
import fastavro.validation
import pytest

from guardstream.catalog import TOPICS
from guardstream.records import DEAD_LETTER
from guardstream.schemas.contracts import current_contracts
from guardstream.schemas.dead_letters import MAX_DETAIL, Source, cut_detail, dead_letter


@pytest.mark.parametrize(("text", "expected"), [
    ("", ""),
    ("short", "short"),
    ("x" * MAX_DETAIL, "x" * MAX_DETAIL),
    ("x" * (MAX_DETAIL + 1), "x" * (MAX_DETAIL - 1) + "…"),
    ("y" * 5000, "y" * (MAX_DETAIL - 1) + "…"),
])
def test_a_detail_is_cut_to_the_limit_and_says_so(text: str, expected: str) -> None:
    assert cut_detail(text) == expected
    assert len(cut_detail(text)) <= MAX_DETAIL


def test_the_sinks_dead_letter_carries_connect_headers():
    record, headers = dead_letter("sink", "check_violation", "x" * 2000,
                                  Source(TOPICS.events_low.name, 3, 99, b"dev-1"),
                                  b"\x00\x00\x00\x00\x01payload", 1795000000000)
    assert record["stage"] == "sink" and len(record["detail"]) == 1000
    assert record["key"] == b"dev-1" and record["payload"].endswith(b"payload")
    headers = dict(headers)
    assert headers == {
        "__connect.errors.topic": TOPICS.events_low.name.encode(), "__connect.errors.partition": b"3",
        "__connect.errors.offset": b"99", "__connect.errors.stage": b"sink",
        "__connect.errors.exception.class.name": b"check_violation",
        "__connect.errors.exception.message": record["detail"].encode()}


def test_a_bridge_dead_letter_names_the_mqtt_topic_and_no_kafka_position():
    record, headers = dead_letter("bridge", "oversize", "payload of 2000 bytes", Source("guard/g-1/gps"),
                                  b"{}", 1795000000000)
    assert (record["source_topic"], record["source_partition"], record["source_offset"], record["key"]) \
        == ("guard/g-1/gps", None, None, None)
    assert [name for name, _ in headers] == [
        "__connect.errors.topic", "__connect.errors.stage", "__connect.errors.exception.class.name",
        "__connect.errors.exception.message"]
    assert fastavro.validation.validate(record, fastavro.parse_schema(current_contracts()[DEAD_LETTER].schema))
