import pytest
from hypothesis import given, strategies as st

from guardstream.catalog import TOPICS
from guardstream.infra.ops.dead_letters import (REPLAYED_FROM, Letter, Reinjection, Replayed, Skip, binding_changed,
                                                letter_row,
                                                plan, preview, selected, summary_rows, topic_of_stage, topics_for)
from guardstream.infra.ops.records import Record

T = 1_714_557_600_000


def _letter(offset, stage="validate", reason="not_json", source=("raw.x", 2, 40), ts=T, payload=b"{bad",
            key=b"dev-1", headers=()):
    topic, partition, source_offset = source if source else (None, None, None)
    value = {"stage": stage, "reason": reason, "detail": "line 1\nline 2", "source_topic": topic,
             "source_partition": partition, "source_offset": source_offset, "key": key, "payload": payload,
             "ts_ms": ts}
    return Letter(Record(topic_of_stage(stage), 0, offset, ts, key, b"", tuple(headers)), value)


def test_stages_map_to_their_topics():
    assert topic_of_stage("bridge") == topic_of_stage("commands") == TOPICS.dlq_bridge.name
    assert topics_for("sink") == [TOPICS.dlq_sink.name]
    assert topics_for("notify") == [TOPICS.dlq_notify.name]
    assert len(topics_for(None)) == 4


@pytest.mark.parametrize("stage, reason, since, chosen", [
    (None, None, None, True), ("validate", None, None, True), ("sink", None, None, False),
    (None, "not_json", None, True), (None, "oversize", None, False), (None, None, T, True), (None, None, T + 1, False),
])
def test_selection(stage, reason, since, chosen):
    assert selected(_letter(1), stage, reason, since) is chosen


def test_summary_counts_per_stage_and_reason_with_first_and_last_times():
    letters = [_letter(1, ts=T + 5000), _letter(2, ts=T), _letter(3, reason="oversize", stage="bridge", source=None)]
    assert summary_rows(letters) == [
        ["bridge", "oversize", "1", "2024-05-01T10:00:00.000Z", "2024-05-01T10:00:00.000Z"],
        ["validate", "not_json", "2", "2024-05-01T10:00:00.000Z", "2024-05-01T10:00:05.000Z"]]


def test_rows_are_one_line_each():
    row = letter_row(_letter(7, payload=b"\x00\x01"))
    assert row[0].endswith("/0/7") and row[4] == "raw.x[2]@40" and row[6] == "line 1 line 2"
    assert row[7] == "base64:AAE="
    assert preview(b"x" * 200).endswith("…") and len(preview(b"x" * 200)) == 80


@given(st.lists(st.integers(0, 60), max_size=40), st.integers(0, 60))
def test_replayed_offsets_are_remembered_exactly(offsets, probe):
    replayed = Replayed()
    for offset in offsets:
        replayed.add("dlq", 0, offset)
    again = Replayed.from_json(replayed.to_json())
    assert ((("dlq", 0, probe) in again) == (probe in offsets))
    assert ("dlq", 1, probe) not in again
    ranges = again.to_json()["replayed"].get("dlq/0", [])
    assert all(hi + 1 < lo for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False))  # merged, sorted


def test_plan_skips_what_was_replayed_what_has_no_source_and_second_letters_of_one_record():
    replayed = Replayed()
    replayed.add(TOPICS.dlq_validate.name, 0, 1)
    letters = [_letter(1), _letter(2), _letter(3), _letter(4, source=None), _letter(5, source=("raw.x", 2, 41))]
    steps = plan(letters, replayed, {})
    assert [s.why if isinstance(s, Skip) else "send" for s in steps] == \
        ["already_replayed", "same_source", "same_source", "no_source", "send"]


def test_a_kafka_reinjection_keeps_key_and_original_headers_under_a_msg_id_of_the_letter():
    original = {("raw.x", 2, 40): [("msg.id", b"abc"), ("mqtt.topic", b"guard/g/gps"), (REPLAYED_FROM, b"old")]}
    kept = plan([_letter(9)], Replayed(), original)[0]
    assert isinstance(kept, Reinjection) and not kept.via_mqtt
    assert (kept.topic, kept.key, kept.payload) == ("raw.x", b"dev-1", b"{bad")
    letter_id = f"{TOPICS.dlq_validate.name}/0/9"
    # the original id was seen by the worker's duplicate filter when it refused the record
    assert kept.headers == [("mqtt.topic", b"guard/g/gps"), ("msg.id", f"dlq:{letter_id}".encode()),
                            (REPLAYED_FROM, letter_id.encode())]
    rebuilt = plan([_letter(9)], Replayed(), {})[0]
    assert rebuilt.headers == [("msg.id", f"dlq:{letter_id}".encode()), (REPLAYED_FROM, letter_id.encode())]
    # the same letter twice (a crash inside a chunk): the same id, which the filter drops
    assert plan([_letter(9)], Replayed(), {})[0].headers == rebuilt.headers
    assert plan([_letter(10)], Replayed(), {})[0].headers[0] != rebuilt.headers[0]


CURRENT = {"cluster": "c1", "topics": {"dlq.validate": "id-A"}}


@pytest.mark.parametrize("saved, changed", [
    (None, False),  # written before bindings were recorded: taken as it is
    (CURRENT, False),
    ({"cluster": "c1", "topics": {"dlq.validate": "id-B"}}, True),  # the topic was recreated
    ({"cluster": "c2", "topics": {"dlq.validate": "id-A"}}, True),  # another cluster
    ({"cluster": "c1", "topics": {"dlq.validate": None}}, True),  # the topic did not exist then
    ({"cluster": "c1", "topics": {}}, True),
])
def test_a_checkpoint_is_bound_to_the_cluster_and_topic_ids_it_was_made_against(saved, changed):
    assert binding_changed(saved, CURRENT) is changed


def test_a_bridge_letter_goes_back_to_its_mqtt_topic_with_its_mqtt_properties():
    letter = _letter(3, stage="bridge", reason="oversize", source=None, key=None,
                     headers=[("__connect.errors.topic", b"guard/g-1/gps"), ("mqtt.qos", b"1"),
                              ("mqtt.content_type", b"application/json"), ("mqtt.user.fw", b"2.1")])
    letter.value["source_topic"] = "guard/g-1/gps"
    step = plan([letter], Replayed(), {})[0]
    assert step.via_mqtt and step.topic == "guard/g-1/gps" and step.payload == b"{bad"
    assert step.headers == [("mqtt.content_type", b"application/json"), ("mqtt.user.fw", b"2.1"),
                            (REPLAYED_FROM, f"{TOPICS.dlq_bridge.name}/0/3".encode())]


def test_notify_letters_are_inspected_but_never_replayed(tmp_path):
    from guardstream.errors import InputError
    from guardstream.infra.ops.dlq import Selection, replay
    from guardstream.settings import Settings
    with pytest.raises(InputError, match="undelivered notifications") as caught:
        replay(Settings(state_dir=tmp_path), None, Selection(stage="notify"))
    assert caught.value.reason == "bad_stage"
