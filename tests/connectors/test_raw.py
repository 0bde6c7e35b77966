from guardstream.catalog import TOPICS
from guardstream.connectors.mapping import DEFAULT_RULES
from guardstream.connectors.raw import Divert, Forward, Incoming, Skip, decide, message_id


def _msg(topic="guard/g-1/gps", payload=b'{"lat": 1}', **kw):
    base = dict(qos=1, retain=False, received_ms=1_795_000_000_000)
    base.update(kw)
    return Incoming(topic, payload, **base)


def test_forward_keeps_payload_and_sets_headers():
    out = decide(_msg(content_type="application/json", user_properties=(("fw", "2.1"),)), DEFAULT_RULES, "b1", 1024)
    assert isinstance(out, Forward)
    assert (out.kafka_topic, out.key, out.value) == (TOPICS.raw_guard.name, b"g-1", b'{"lat": 1}')
    headers = dict(out.headers)
    assert headers["mqtt.topic"] == b"guard/g-1/gps"
    assert headers["mqtt.qos"] == b"1" and headers["mqtt.retain"] == b"0"
    assert headers["received_ms"] == b"1795000000000" and headers["bridge.id"] == b"b1"
    assert headers["msg.id"] == message_id("guard/g-1/gps", b'{"lat": 1}').encode()
    assert headers["mqtt.content_type"] == b"application/json" and headers["mqtt.user.fw"] == b"2.1"


def test_message_id_is_deterministic_and_distinguishes_topic_and_payload():
    assert message_id("a/b", b"x") == message_id("a/b", b"x")
    assert len({message_id("a/b", b"x"), message_id("a/c", b"x"), message_id("a/b", b"y"),
                message_id("a/bx", b"")}) == 4


def test_oversize_is_refused_with_reason():
    out = decide(_msg(payload=b"x" * 2000), DEFAULT_RULES, "b1", 1024)
    assert isinstance(out, Divert) and out.refused.reason == "oversize" and "2000 bytes" in out.refused.detail
    assert out.prefix == "guard"


def test_bad_topics_are_refused_with_a_bounded_label():
    assert decide(_msg(topic=None), DEFAULT_RULES, "b1", 1024).refused.reason == "bad_topic"
    out = decide(_msg(topic="attacker-chosen-prefix/x"), DEFAULT_RULES, "b1", 1024)
    assert isinstance(out, Divert) and out.prefix == "other" and out.refused.reason == "unmapped_topic"


def test_alerts_get_a_lane_of_their_own():
    from guardstream.connectors.bridge import lanes
    by_lane = {name: {r.kafka_topic for r in rules} for name, rules in lanes(DEFAULT_RULES)}
    assert by_lane["alerts"] == {TOPICS.raw_alert.name}
    assert TOPICS.raw_alert.name not in by_lane["main"] and len(by_lane["main"]) == 4
    assert [name for name, _ in lanes(tuple(r for r in DEFAULT_RULES
                                            if r.kafka_topic != TOPICS.raw_alert.name))] == ["main"]


def test_a_topic_no_rule_names_is_forwarded_with_its_catch_all_rule_in_a_header():
    out = decide(_msg(topic="device/123/battery"), DEFAULT_RULES, "b1", 1024)
    assert isinstance(out, Forward) and (out.kafka_topic, out.key) == (TOPICS.raw_device.name, b"123")
    headers = dict(out.headers)
    assert headers["mqtt.topic"] == b"device/123/battery"
    assert headers["bridge.catch_all"] == b"device/{device_id}/#"
    assert "bridge.catch_all" not in dict(decide(_msg(), DEFAULT_RULES, "b1", 1024).headers)


def test_the_command_topic_is_skipped_not_refused():
    assert decide(_msg(topic="device/123/cmd"), DEFAULT_RULES, "b1", 1024) == Skip("device")


def test_user_properties_stop_at_the_count_or_the_byte_limit():
    from guardstream.connectors.raw import PropertyLimits, user_property_headers
    props = tuple((f"p{i}", "v" * 10) for i in range(10))  # each header: "mqtt.user.pN" (12) + 10 bytes
    assert user_property_headers(props, PropertyLimits(count=3, bytes=10_000)) == (
        [(f"mqtt.user.p{i}", b"v" * 10) for i in range(3)], 7)
    assert user_property_headers(props, PropertyLimits(count=100, bytes=44)) == (
        [(f"mqtt.user.p{i}", b"v" * 10) for i in range(2)], 8)
    assert user_property_headers(props, PropertyLimits(count=0, bytes=0)) == ([], 10)
    assert user_property_headers(props, PropertyLimits()) == ([(f"mqtt.user.p{i}", b"v" * 10) for i in range(10)], 0)
    out = decide(_msg(user_properties=props), DEFAULT_RULES, "b1", 1024, PropertyLimits(count=1))
    assert out.dropped_properties == 9
