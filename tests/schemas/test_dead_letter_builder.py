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


def test_a_payload_too_long_for_a_dead_letter_is_cut_with_its_length_and_hash_recorded():
    import hashlib
    from guardstream.schemas.dead_letters import MAX_PAYLOAD
    huge = bytes(range(256)) * 4063  # 1,040,128 bytes
    record, headers = dead_letter("bridge", "oversize", "d" * 5000, Source("device/d-1/telemetry"), huge, 1)
    assert record["payload"] == huge[:MAX_PAYLOAD]
    assert len(record["detail"]) <= MAX_DETAIL
    assert record["detail"].endswith(f"[payload cut to {MAX_PAYLOAD} of {len(huge)} bytes, "
                                      f"sha256 {hashlib.sha256(huge).hexdigest()}]")
    assert dict(headers)["guardstream.payload.bytes"] == str(len(huge)).encode()
    assert dict(headers)["guardstream.payload.sha256"] == hashlib.sha256(huge).hexdigest().encode()
    from guardstream.schemas.codec import Codec
    from guardstream.schemas.registry import FileRegistry
    assert len(Codec(FileRegistry.load()).encode(DEAD_LETTER, record)) < 300_000


def test_a_payload_that_fits_is_kept_whole_without_cut_headers():
    from guardstream.schemas.dead_letters import MAX_PAYLOAD
    record, headers = dead_letter("bridge", "not_json", "x", Source("t"), b"y" * MAX_PAYLOAD, 1)
    assert record["payload"] == b"y" * MAX_PAYLOAD and record["detail"] == "x"
    assert not any(name.startswith("guardstream.payload.") for name, _ in headers)
    bare, _ = dead_letter("bridge", "not_json", "x", Source("t"), b"abc", 1, max_payload=0)
    assert bare["payload"] == b"" and "cut to 0 of 3 bytes" in bare["detail"]
