"""``guardstream dlq inspect`` and ``dlq replay`` end to end: DeadLetter records written with the codec,
re-injected into a Kafka topic and over MQTT."""

import threading
import time

import paho.mqtt.client as mqtt
from confluent_kafka import Producer
import pytest
from ops_support import T0_MS, read_all, run_cli
from support.processes import WORKER_ENGINES
from guardstream.infra.stack import wait_until
from paho.mqtt.enums import CallbackAPIVersion

from guardstream.catalog import TOPICS
from guardstream.connectors.mqtt import endpoint
from guardstream.kafka import producer_config
from guardstream.schemas.codec import Codec
from guardstream.schemas.dead_letters import Source, dead_letter
from guardstream.schemas.registry import FileRegistry

CODEC = Codec(FileRegistry.load())


def _send_letters(settings, letters):
    """letters: [(dlq topic, stage, reason, Source, payload, ts_ms, extra headers)]; returns their offsets."""
    producer = Producer(producer_config(settings, "ops-test"))
    offsets = []
    for topic, stage, reason, source, payload, ts, extra in letters:
        record, headers = dead_letter(stage, reason, f"{reason} detail", source, payload, ts)
        producer.produce(topic, CODEC.encode("guardstream.DeadLetter", record), source.key,
                         headers=headers + extra, on_delivery=lambda err, msg: offsets.append(msg.offset()))
        producer.flush(20)
    return offsets


def _tsv(text):
    return [line.split("\t") for line in text.splitlines() if line]


def test_inspect_counts_per_stage_and_reason_and_shows_the_latest(applied, ops_settings, unique):
    now = int(time.time() * 1000)
    validate, sink = f"not_json_{unique}", f"bad_row_{unique}"
    _send_letters(ops_settings, [
        (TOPICS.dlq_validate.name, "validate", validate, Source("raw.x", 0, n, b"dev-1"), b"{bad %d" % n, now + n, [])
        for n in range(3)] + [
        (TOPICS.dlq_sink.name, "sink", sink, Source("events.x", 1, n, b"dev-2"), b"\x00\x01", T0_MS + n, [])
        for n in range(2)])
    result = run_cli(ops_settings, "dlq", "inspect", "--reason", validate)
    assert result.returncode == 0, result.stderr
    rows = _tsv(result.stdout)
    assert rows[0] == ["stage", "reason", "count", "first", "last"]
    assert rows[1][:3] == ["validate", validate, "3"]
    assert rows[2] == ["dlq", "time", "stage", "reason", "source", "key", "detail", "payload"]
    assert [r[4] for r in rows[3:]] == ["raw.x[0]@0", "raw.x[0]@1", "raw.x[0]@2"]
    assert rows[3][5:] == ["dev-1", f"{validate} detail", "{bad 0"]

    latest = _tsv(run_cli(ops_settings, "dlq", "inspect", "--stage", "sink", "--reason", sink, "--max", "1").stdout)
    assert latest[1][:3] == ["sink", sink, "2"] and len(latest) == 4
    assert latest[3][4] == "events.x[1]@1" and latest[3][7] == "base64:AAE="
    recent = _tsv(run_cli(ops_settings, "dlq", "inspect", "--reason", sink, "--since", "-1h").stdout)
    assert recent == [["stage", "reason", "count", "first", "last"],
                      ["dlq", "time", "stage", "reason", "source", "key", "detail", "payload"]]


def test_replay_reinjects_into_the_source_topic_once(applied, ops_settings, make_topic, produce, unique):
    source = make_topic(raw=True, name="raw-like")
    produce(source, [(0, b"dev-1", b"{bad 0", [("msg.id", b"m0"), ("mqtt.topic", b"device/dev-1/telemetry")],
                      T0_MS), (0, b"dev-1", b"{bad 1", [("msg.id", b"m1")], T0_MS + 1)])
    reason = f"not_json_{unique}"
    letters = _send_letters(ops_settings, [
        (TOPICS.dlq_validate.name, "validate", reason, Source(source, 0, 0, b"dev-1"), b"{bad 0", T0_MS, []),
        (TOPICS.dlq_validate.name, "validate", reason, Source(source, 0, 1, b"dev-1"), b"{bad 1", T0_MS, []),
        (TOPICS.dlq_validate.name, "validate", reason, Source(source, 0, 0, b"dev-1"), b"{bad 0", T0_MS, []),
        (TOPICS.dlq_validate.name, "validate", reason, Source(source, 0, 77, b"dev-9"), b"{gone", T0_MS, [])])
    dry = run_cli(ops_settings, "dlq", "replay", "--stage", "validate", "--reason", reason, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [f"dlq validate: would re-inject 3 dead letter(s): {source} 3",
                                       "dlq validate: skipped 1 (same source)"]
    assert len(read_all(ops_settings, source)) == 2

    done = run_cli(ops_settings, "dlq", "replay", "--stage", "validate", "--reason", reason)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"dlq validate: re-injected 3 dead letter(s): {source} 3"
    back = read_all(ops_settings, source)[2:]
    tag = TOPICS.dlq_validate.name

    def ids(n):
        return [("msg.id", f"dlq:{tag}/0/{letters[n]}".encode()),
                ("dlq.replayed_from", f"{tag}/0/{letters[n]}".encode())]
    assert [(r.key, r.value, list(r.headers)) for r in back] == [
        (b"dev-1", b"{bad 0", [("mqtt.topic", b"device/dev-1/telemetry"), *ids(0)]),
        (b"dev-1", b"{bad 1", ids(1)),
        (b"dev-9", b"{gone", ids(3))]

    again = run_cli(ops_settings, "dlq", "replay", "--stage", "validate", "--reason", reason)
    assert again.stdout.splitlines() == ["dlq validate: re-injected 0 dead letter(s)",
                                         "dlq validate: skipped 3 (already replayed)",
                                         "dlq validate: skipped 1 (same source)"]
    assert len(read_all(ops_settings, source)) == 5


def test_bridge_letters_are_published_again_on_their_mqtt_topic(applied, ops_settings, unique):
    mqtt_topic = f"test/{unique}/gps"
    reason = f"oversize_{unique}"
    received, arrived = [], threading.Event()
    ep = endpoint(ops_settings)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dlq-test-{unique}", protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = lambda c, u, message: (received.append(message), arrived.set())
    client.connect(ep.host, ep.port)
    client.loop_start()
    try:
        client.subscribe(mqtt_topic, qos=1)
        assert subscribed.wait(10)
        offsets = _send_letters(ops_settings, [(TOPICS.dlq_bridge.name, "bridge", reason, Source(mqtt_topic),
                                                b'{"lat": 1}', T0_MS, [("mqtt.content_type", b"application/json"),
                                                                       ("mqtt.user.fw", b"2.1")])])
        result = run_cli(ops_settings, "dlq", "replay", "--stage", "bridge", "--reason", reason)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [f"dlq bridge: re-injected 1 dead letter(s): {mqtt_topic} 1"]
        assert arrived.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    message = received[0]
    assert (message.topic, message.payload, message.retain) == (mqtt_topic, b'{"lat": 1}', False)
    assert message.properties.ContentType == "application/json"
    assert message.properties.UserProperty == [("fw", "2.1"),
                                               ("dlq.replayed_from", f"{TOPICS.dlq_bridge.name}/0/{offsets[0]}")]


@pytest.mark.parametrize("engine", WORKER_ENGINES)
def test_a_replayed_letter_is_processed_again_and_its_new_letter_can_be_replayed(applied, run_component, unique,
                                                                                  tmp_path, engine):
    """Through the real worker: the re-injected record is not dropped by the duplicate filter (it is
    refused again, with the reason of today's code), and the new letter is re-injected in turn."""
    from support.processes import collect, header
    settings = applied.replace(state_dir=tmp_path / "state")
    device = f"d-{unique}".encode()
    run_component(["worker"], applied, GUARDSTREAM_WORKER_ENGINE=engine)
    # a worker whose group starts behind (the Faust engine's starts where the batch engine's last
    # committed, up to a checkpoint behind what it wrote) refuses earlier tests' broken records
    # again: the window the replay selects begins once it has caught up with raw.guard
    wait_until(lambda: caught_up(applied, engine_groups(applied, engine), TOPICS.raw_guard.name), 60,
               "the worker caught up with raw.guard")
    since = str(int(time.time() * 1000))
    producer = Producer(producer_config(applied, "ops-test"))
    producer.produce(TOPICS.raw_guard.name, b"{broken", device,
                     headers=[("msg.id", f"m-{unique}".encode()), ("received_ms", since.encode())])
    assert producer.flush(20) == 0
    mine = lambda r: r.key() == device  # noqa: E731
    [first] = collect(applied, TOPICS.dlq_validate.name, mine, 1)

    for round_ in (1, 2):
        done = run_cli(settings, "dlq", "replay", "--stage", "validate", "--reason", "not_json", "--since", since)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == f"dlq validate: re-injected 1 dead letter(s): {TOPICS.raw_guard.name} 1"
        letters = collect(applied, TOPICS.dlq_validate.name, mine, round_ + 1)
        assert len(letters) == round_ + 1
        newest = letters[-1]
        assert header(newest, "__connect.errors.exception.class.name") == b"not_json"
        assert header(newest, "__connect.errors.offset") != header(letters[-2], "__connect.errors.offset")
    assert header(first, "__connect.errors.topic") == TOPICS.raw_guard.name.encode()
    # what was re-injected: each time under the id of the letter it came from
    source = [r for r in collect(applied, TOPICS.raw_guard.name, mine, 3)]
    assert [header(r, "msg.id") for r in source] == [
        f"m-{unique}".encode(),
        f"dlq:{TOPICS.dlq_validate.name}/{letters[0].partition()}/{letters[0].offset()}".encode(),
        f"dlq:{TOPICS.dlq_validate.name}/{letters[1].partition()}/{letters[1].offset()}".encode()]


def engine_groups(settings, engine: str) -> list[str]:
    """The consumer groups an engine of the worker commits raw.guard's offsets under."""
    from guardstream.streams.faust_engine import FAUST_GROUP
    from guardstream.streams.worker import lanes
    return [FAUST_GROUP] if engine == "faust" else [lane.group for lane in lanes(settings)
                                                    if TOPICS.raw_guard.name in lane.topics]


def caught_up(settings, groups: list[str], topic: str) -> bool:
    """Whether every one of ``groups`` has committed ``topic`` to its end."""
    from confluent_kafka import Consumer, TopicPartition
    from guardstream.topic_end import partitions_of, reader_config
    for group in groups:
        consumer = Consumer(reader_config(settings, "ops-test-lag") | {"group.id": group})
        try:
            partitions = [TopicPartition(topic, p) for p in partitions_of(consumer, topic)]
            committed = consumer.committed(partitions, timeout=10)
            for tp in committed:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
                if high > low and tp.offset < high:
                    return False
        finally:
            consumer.close()
    return True


def test_a_checkpoint_of_a_recreated_dead_letter_topic_is_set_aside(applied, ops_settings, unique):
    """A restarted in-memory broker recreates the topics under their names: offsets start again, and
    an earlier run's checkpoint must not skip the new letters."""
    import json
    reason = f"not_json_{unique}"
    _send_letters(ops_settings, [(TOPICS.dlq_validate.name, "validate", reason, Source("raw.x", 0, 1, b"d"),
                                  b"{bad", T0_MS, [])])
    path = ops_settings.state_dir / "dlq-replay" / f"{TOPICS.dlq_validate.name}.json"
    path.parent.mkdir(parents=True)
    everything = {"replayed": {f"{TOPICS.dlq_validate.name}/0": [[0, 10**9]]}}
    path.write_text(json.dumps(everything))  # unbound (an older checkpoint): taken as it is
    kept = run_cli(ops_settings, "dlq", "replay", "--stage", "validate", "--reason", reason, "--dry-run")
    assert kept.stdout.splitlines() == ["dlq validate: would re-inject 0 dead letter(s)",
                                        "dlq validate: skipped 1 (already replayed)"], kept.stderr
    path.write_text(json.dumps({**everything, "bound_to": {"cluster": "gone", "topics": {}}}))
    fresh = run_cli(ops_settings, "dlq", "replay", "--stage", "validate", "--reason", reason, "--dry-run")
    assert fresh.returncode == 0, fresh.stderr
    lines = fresh.stdout.splitlines()
    assert "earlier incarnation of the dead-letter topic" in lines[0]
    assert lines[1:] == ["dlq validate: would re-inject 1 dead letter(s): raw.x 1"]


def test_a_letter_replayed_after_the_fix_lands_in_postgresql_once(own_kafka, database_url, run_component, unique,
                                                                   tmp_path):
    """A fix of a device missing from the registry is dead-lettered; the device is registered (the
    fix); `dlq replay` re-injects the letter, the worker takes it, the sink writes it: one row. A
    second replay re-injects nothing, and the row is still one."""
    import json

    import psycopg

    from guardstream.infra.migrate import migrate
    from guardstream.infra.stack import wait_until
    from support.processes import collect, header
    settings = own_kafka.settings.replace(database_url=database_url, state_dir=tmp_path / "state",
                                          unknown_devices="dead_letter")
    migrate(database_url)
    worker = run_component(["worker"], settings)
    run_component(["sink"], settings)
    device = f"g-{unique}"
    since = str(int(time.time() * 1000) - 1000)
    fix = {"ts": int(time.time()), "lat": 52.52, "lon": 13.40, "accuracy_m": 4, "tenant": "acme"}
    producer = Producer(producer_config(settings, "ops-test"))
    producer.produce(TOPICS.raw_guard.name, json.dumps(fix).encode(), device.encode(),
                     headers=[("msg.id", f"m-{unique}".encode()), ("received_ms", since.encode())])
    assert producer.flush(20) == 0
    mine = lambda r: r.key() == device.encode()  # noqa: E731
    [letter] = collect(settings, TOPICS.dlq_validate.name, mine, 1)
    assert header(letter, "__connect.errors.exception.class.name") == b"unknown_device"

    fleet = tmp_path / "fleet.csv"
    fleet.write_text(f"device_id,tenant,kind,site_id,enabled\n{device},acme,guard,acme-hq,true\n")
    registered = run_cli(settings, "devices", "import", str(fleet))
    assert registered.returncode == 0, registered.stdout + registered.stderr

    def worker_knows_it() -> bool:
        # the worker sets its registry gauge after each batch: a broken record (a not_json letter) makes one
        producer.produce(TOPICS.raw_guard.name, b"{tick", f"tick-{unique}".encode())
        producer.flush(10)
        return worker.metric("guardstream_worker_registry_devices") >= 1
    wait_until(worker_knows_it, 30, "the worker knows the device", interval_s=0.5)

    rows = lambda: psycopg.connect(database_url).execute(  # noqa: E731
        "SELECT count(*) FROM guard_positions WHERE device_id = %s", (device,)).fetchone()[0]
    assert rows() == 0
    done = run_cli(settings, "dlq", "replay", "--stage", "validate", "--reason", "unknown_device", "--since", since)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"dlq validate: re-injected 1 dead letter(s): {TOPICS.raw_guard.name} 1"
    wait_until(lambda: rows() == 1, 30, "the replayed fix in PostgreSQL")
    again = run_cli(settings, "dlq", "replay", "--stage", "validate", "--reason", "unknown_device", "--since", since)
    assert again.returncode == 0, again.stderr
    assert "skipped 1 (already replayed)" in again.stdout, again.stdout
    # one position in Kafka, one letter (none new since the replay), one row
    assert len(collect(settings, TOPICS.events_high.name, mine, 2, timeout_s=3)) == 1
    assert len(collect(settings, TOPICS.dlq_validate.name, mine, 2, timeout_s=3)) == 1
    assert rows() == 1
