import pytest
from hypothesis import given, strategies as st

from guardstream.catalog import TOPICS
from guardstream.connectors.mapping import DEFAULT_RULES, Rule, load_rules, match, subscription_filters
from guardstream.errors import ConfigError, InputError


@pytest.mark.parametrize("topic, kafka_topic, key", [
    ("device/dev-42/telemetry", TOPICS.raw_device.name, "dev-42"),
    ("guard/g_17/gps", TOPICS.raw_guard.name, "g_17"),
    ("sensor/door.3/door", TOPICS.raw_sensor.name, "door.3"),
    ("alert/panic/g-17", TOPICS.raw_alert.name, "g-17"),
    ("system/bridge-1/health", TOPICS.raw_system.name, "bridge-1"),
    ("device/AA:BB:CC:DD/telemetry", TOPICS.raw_device.name, "AA:BB:CC:DD"),
    # the older fleet's sub-topics
    ("device/123/status", TOPICS.raw_device.name, "123"),
    ("device/123/heartbeat", TOPICS.raw_device.name, "123"),
    ("guard/123/location", TOPICS.raw_guard.name, "123"),
    ("device/123/online", TOPICS.raw_system.name, "123"),
    ("device/123/offline", TOPICS.raw_system.name, "123"),
    ("guard/123/offline", TOPICS.raw_system.name, "123"),
])
def test_default_mapping(topic, kafka_topic, key):
    found = match(DEFAULT_RULES, topic)
    assert (found.rule.kafka_topic, found.key) == (kafka_topic, key)


@pytest.mark.parametrize("topic, reason", [
    ("device/+/telemetry", "bad_topic"),
    ("device/#", "bad_topic"),
    ("device/a\x00b/telemetry", "bad_topic"),
    ("device/a\nb/telemetry", "bad_topic"),
    ("device/../telemetry", "bad_topic_id"),
    ("device/./telemetry", "bad_topic_id"),
    ("device//telemetry", "bad_topic"),
    ("/device/x/telemetry", "bad_topic"),
    ("device/x/telemetry/", "bad_topic"),
    ("$SYS/broker/clients", "bad_topic"),
    ("device/" + "x" * 300 + "/telemetry", "bad_topic"),
    ("device/" + "x" * 129 + "/telemetry", "bad_topic_id"),
    ("device/x;DROP TABLE/telemetry", "bad_topic_id"),
    ("device/x y/telemetry", "bad_topic_id"),
    ("device/é/telemetry", "bad_topic_id"),
    ("other/x/gps", "unmapped_topic"),
    ("device", "unmapped_topic"),
    ("devices/x/telemetry", "unmapped_topic"),
])
def test_refusals_have_reasons(topic, reason):
    with pytest.raises(InputError) as info:
        match(DEFAULT_RULES, topic)
    assert info.value.reason == reason


@given(st.text(max_size=400))
def test_any_topic_is_mapped_safely_or_refused(topic):
    try:
        found = match(DEFAULT_RULES, topic)
    except InputError as exc:
        assert exc.reason in ("bad_topic", "bad_topic_id", "unmapped_topic")
        return
    assert found.key and "/" not in found.key and found.key not in (".", "..")
    assert all(c.isascii() and c.isprintable() for c in found.key)


def test_subscription_filters_and_qos():
    # one filter per whitelisted prefix: a broker may deliver a message once per matching subscription
    assert dict(subscription_filters(DEFAULT_RULES)) == {"device/+/#": 1, "guard/+/#": 1, "sensor/+/#": 1,
                                                         "alert/#": 1, "system/+/#": 0}
    specific = tuple(r for r in DEFAULT_RULES if not r.is_catch_all and r.prefix in ("device", "system"))
    assert dict(subscription_filters(specific)) == {
        "device/+/telemetry": 1, "device/+/status": 1, "device/+/heartbeat": 1, "device/+/online": 1,
        "device/+/offline": 1, "system/+/health": 0}


@pytest.mark.parametrize("topic, kafka_topic, key, pattern", [
    ("device/123/battery", TOPICS.raw_device.name, "123", "device/{device_id}/#"),
    ("device/123", TOPICS.raw_device.name, "123", "device/{device_id}/#"),
    ("guard/g-1/gps/raw", TOPICS.raw_guard.name, "g-1", "guard/{guard_id}/#"),
    ("sensor/s-1/door/left", TOPICS.raw_sensor.name, "s-1", "sensor/{sensor_id}/#"),
    ("alert/panic/123/button", TOPICS.raw_alert.name, "123", "alert/{kind}/{device_id}/#"),
    ("alert/panic", TOPICS.raw_alert.name, "", "alert/#"),
    ("system/x/ping", TOPICS.raw_system.name, "x", "system/{component}/#"),
])
def test_every_topic_under_a_whitelisted_prefix_has_a_path(topic, kafka_topic, key, pattern):
    found = match(DEFAULT_RULES, topic)
    assert (found.rule.kafka_topic, found.key, found.rule.pattern) == (kafka_topic, key, pattern)
    assert found.rule.is_catch_all and not found.own


def test_the_command_topic_is_our_own_and_never_forwarded():
    found = match(DEFAULT_RULES, "device/123/cmd")
    assert found.own
    assert not match(DEFAULT_RULES, "device/123/cmd/ack").own


def test_a_catch_all_rule_in_a_rules_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\npattern = "fleet/{device_id}/pos"\ntopic = "raw.guard"\nkey = "device_id"\n'
                    '[[rule]]\npattern = "fleet/#"\ntopic = "raw.device"\nkey = ""\n')
    rules = load_rules(path)
    assert match(rules, "fleet/g-1/pos").rule.kafka_topic == TOPICS.raw_guard.name
    assert match(rules, "fleet/g-1/other/x").rule.kafka_topic == TOPICS.raw_device.name
    assert dict(subscription_filters(rules)) == {"fleet/#": 1}


def test_rules_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\npattern = "fleet/{site}/{device_id}/gps"\ntopic = "raw.guard"\n'
                    'key = "device_id"\nqos = 1\n')
    rules = load_rules(path)
    assert match(rules, "fleet/hq/g-1/gps").key == "g-1"


@pytest.mark.parametrize("text, words", [
    ('[[rule]]\npattern = "a/{id}"\ntopic = "events.high"\nkey = "id"\n', "is not a raw topic"),
    ('[[rule]]\npattern = "a/{id}"\ntopic = "raw.guard"\nkey = "other"\n', "is not one of its"),
    ('[[rule]]\npattern = "a/+/{id}"\ntopic = "raw.guard"\nkey = "id"\n', "segments must be"),
    ('[[rule]]\npattern = "a/#/{id}"\ntopic = "raw.guard"\nkey = "id"\n', "segments must be"),
    ('[[rule]]\npattern = "a/{id}"\ntopic = "raw.guard"\nkey = ""\n', "is not one of its"),
    ('[[rule]]\npattern = "a/{id}"\n', "'topic'"),
    ('not toml at all [', "GUARDSTREAM_BRIDGE_RULES"),
])
def test_bad_rules_file_names_the_setting(tmp_path, text, words):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert info.value.setting == "GUARDSTREAM_BRIDGE_RULES"
    assert words in str(info.value)


def test_rule_check_refuses_bad_qos():
    with pytest.raises(ConfigError):
        Rule("a/{id}", TOPICS.raw_guard.name, "id", 3).check()


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=128))
def test_every_id_the_bridge_forwards_is_one_validation_accepts(device_id):
    from guardstream.streams.validation import DEVICE_ID
    try:
        found = match(DEFAULT_RULES, f"device/{device_id}/telemetry")
    except InputError:
        return
    assert DEVICE_ID.fullmatch(found.key)
