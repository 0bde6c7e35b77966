"""``guardstream replay`` against the session's tansu broker: copies, resumes, refusals, offset moves."""

import signal
import subprocess
import sys
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from ops_support import T0_MS, cli_env, numbered, read_all, run_cli

from guardstream.infra.ops.replay import CopyRequest, checkpoint_path, copy
from guardstream.infra.ops.replay_plan import REPLAY_ID, REPLAY_SOURCE, Checkpoint, destination_partition
from guardstream.infra.ops.state_files import load_json, save_json
from guardstream.infra.stack import wait_until
from guardstream.kafka import admin_config, consumer_config, producer_config


def _sources(records):
    """Counter of (source partition, offset) named by the copies' replay.source headers."""
    return Counter(tuple(int(x) for x in r.header(REPLAY_SOURCE).decode().rsplit("/", 2)[1:]) for r in records)


def test_a_time_range_is_copied_with_keys_headers_and_timestamps(ops_settings, make_topic, produce):
    source, into = make_topic(partitions=2, raw=True), make_topic(partitions=2, raw=True)
    produce(source, numbered(0, 60, partitions=2))
    result = run_cli(ops_settings, "replay", "--topic", source, "--from", str(T0_MS + 10_000),
                     "--to", str(T0_MS + 30_000), "--into", into)
    assert result.returncode == 0, result.stderr
    assert "copied 20 records" in result.stdout
    originals = {(r.partition, r.offset): r for r in read_all(ops_settings, source)}
    copies = read_all(ops_settings, into)
    assert len(copies) == 20
    for copy_ in copies:
        original = originals[tuple(int(x) for x in copy_.header(REPLAY_SOURCE).decode().rsplit("/", 2)[1:])]
        assert T0_MS + 10_000 <= original.timestamp_ms < T0_MS + 30_000
        assert (copy_.key, copy_.value, copy_.timestamp_ms, copy_.partition) == \
            (original.key, original.value, original.timestamp_ms, original.partition)
        assert list(copy_.headers[:-2]) == list(original.headers)
        assert copy_.headers[-2][0] == REPLAY_ID
    # the same command again: nothing more is copied
    again = run_cli(ops_settings, "replay", "--topic", source, "--from", str(T0_MS + 10_000),
                    "--to", str(T0_MS + 30_000), "--into", into)
    assert again.returncode == 0 and "already finished (20 records" in again.stdout
    assert len(read_all(ops_settings, into)) == 20


def test_a_finished_replay_of_topics_since_recreated_copies_again(ops_settings, make_topic, produce):
    """The checkpoint names the topic ids it was made against; a recreated topic (same name, new id,
    offsets from 0 again) is copied afresh instead of being reported as already finished."""
    source, into = make_topic(raw=True), make_topic(raw=True)
    produce(source, numbered(0, 10))
    args = ("replay", "--topic", source, "--from", str(T0_MS), "--into", into)
    assert "copied 10 records" in run_cli(ops_settings, *args).stdout
    path = checkpoint_path(ops_settings, CopyRequest(source, into, str(T0_MS)).id)
    doc = load_json(path)
    assert doc["done"] and set(doc["extra"]["bound_to"]["topics"]) == {source, into}
    doc["extra"]["bound_to"]["topics"][source] = "an-earlier-topic-id"
    save_json(path, doc)
    again = run_cli(ops_settings, *args)
    assert again.returncode == 0, again.stderr
    assert "set aside" in again.stderr and "copied 10 records" in again.stdout
    assert len(read_all(ops_settings, into)) == 20


def test_dry_run_shows_counts_per_partition_and_copies_nothing(ops_settings, make_topic, produce):
    source, into = make_topic(partitions=2, raw=True), make_topic(raw=True)
    produce(source, numbered(0, 20, partitions=2))
    result = run_cli(ops_settings, "replay", "--topic", source, "--from", str(T0_MS + 4_000), "--into", into,
                     "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["partition\tfirst\tend\trecords\tleft", "0\t2\t10\t8\t8", "1\t2\t10\t8\t8"]
    assert "would copy up to 16 of 16 records" in result.stderr and "2023-11-14T22:13:24.000Z" in result.stderr
    assert read_all(ops_settings, into) == []
    assert not checkpoint_path(ops_settings, CopyRequest(source, into, str(T0_MS + 4_000)).id).exists()


def test_copying_into_the_source_or_across_formats_is_refused(ops_settings, make_topic):
    source = make_topic(raw=True)
    result = run_cli(ops_settings, "replay", "--topic", source, "--from", "-1h", "--into", source)
    assert result.returncode == 1
    assert result.stderr.startswith(f"guardstream: into_source: refusing to write into the source topic {source}")
    from guardstream.catalog import TOPICS
    mixed = run_cli(ops_settings, "replay", "--topic", TOPICS.raw_guard.name, "--from", "-1h",
                    "--into", TOPICS.events_high.name)
    assert mixed.returncode == 1 and "format_mismatch" in mixed.stderr
    both = run_cli(ops_settings, "replay", "--topic", source, "--from", "-1h", "--into", "x", "--group", "g")
    assert both.returncode == 1 and "bad_arguments" in both.stderr


def test_a_killed_replay_resumes_with_no_record_missing_or_doubled(ops_settings, make_topic, produce):
    source, into = make_topic(partitions=3, raw=True), make_topic(partitions=2, raw=True)
    produce(source, numbered(0, 1500, partitions=3))
    args = ["replay", "--topic", source, "--from", str(T0_MS), "--into", into, "--chunk-size", "50"]
    path = checkpoint_path(ops_settings, CopyRequest(source, into, str(T0_MS)).id)
    process = subprocess.Popen([sys.executable, "-m", "guardstream.cli", *args, "--max-rate", "500"],
                               env=cli_env(ops_settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: (load_json(path) or {}).get("copied", 0) > 0 or process.poll() is not None, 60,
                   "a first checkpoint")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    partial = read_all(ops_settings, into)
    assert 0 < len(partial) < 1500
    resumed = run_cli(ops_settings, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert "copied 1500 records" in resumed.stdout and "(resumed)" in resumed.stdout
    copies = read_all(ops_settings, into)
    counts = _sources(copies)
    assert set(counts.values()) == {1} and len(counts) == 1500
    # with a different partition count, records go by key as Kafka's own partitioner puts them
    for copy_ in copies:
        source_partition = int(copy_.header(REPLAY_SOURCE).decode().rsplit("/", 2)[1])
        assert copy_.partition == destination_partition(copy_.key, source_partition, 3, 2)


def test_sigterm_stops_between_records_and_the_checkpoint_alone_resumes_exactly(ops_settings, make_topic,
                                                                              produce):
    source, into = make_topic(partitions=2, raw=True), make_topic(partitions=2, raw=True)
    produce(source, numbered(0, 600, partitions=2))
    args = ["replay", "--topic", source, "--from", str(T0_MS), "--into", into, "--chunk-size", "40"]
    path = checkpoint_path(ops_settings, CopyRequest(source, into, str(T0_MS)).id)
    process = subprocess.Popen([sys.executable, "-m", "guardstream.cli", *args, "--max-rate", "200"],
                               env=cli_env(ops_settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (load_json(path) or {}).get("copied", 0) > 0 or process.poll() is not None, 60,
                   "a first checkpoint")
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and "run the same command again to resume" in out
    stopped = Checkpoint.from_json(load_json(path))
    assert len(read_all(ops_settings, into)) == stopped.copied < 600  # every copy made is in the checkpoint
    resumed = run_cli(ops_settings, *args)
    assert resumed.returncode == 0 and "copied 600 records" in resumed.stdout
    assert "found already copied" not in resumed.stdout  # nothing past the checkpoint to look for
    assert set(_sources(read_all(ops_settings, into)).values()) == {1}


def test_a_crash_after_copies_landed_but_before_their_checkpoint_doubles_nothing(ops_settings, make_topic,
                                                                                   produce):
    source, into = make_topic(partitions=2, raw=True), make_topic(partitions=2, raw=True)
    produce(source, numbered(0, 100, partitions=2))
    request = CopyRequest(source, into, str(T0_MS), chunk_size=30)
    first = copy(ops_settings, request)
    assert first.checkpoint.done and first.copied_now == 100
    # rewind the checkpoint to its state before any chunk: the copies are there, the checkpoint knows none
    doc = load_json(first.path)
    cp = Checkpoint.from_json(doc)
    cp.positions = {p: start for p, (start, _) in cp.ranges.items()}
    cp.marks = {d: 0 for d in cp.marks}
    cp.copied, cp.done = 0, False
    save_json(first.path, cp.to_json())
    second = copy(ops_settings, request)
    assert second.resumed and second.checkpoint.done
    assert (second.copied_now, second.found_copied, second.checkpoint.copied) == (0, 100, 100)
    assert set(_sources(read_all(ops_settings, into)).values()) == {1}


def test_murmur2_matches_the_producers_partitioner(settings, make_topic):
    topic = make_topic(partitions=5, raw=True)
    producer = Producer(producer_config(settings, "ops-test"))
    keys = [f"device-{n}".encode() for n in range(40)]
    for key in keys:
        producer.produce(topic, b"v", key)
    assert producer.flush(20) == 0
    placed = {r.key: r.partition for r in read_all(settings, topic)}
    assert placed == {key: destination_partition(key, 0, 1, 5) for key in keys}


def _committed(settings, group, topic):
    admin = AdminClient(admin_config(settings))
    from confluent_kafka import ConsumerGroupTopicPartitions
    answer = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
    return {tp.partition: tp.offset for tp in answer.topic_partitions if tp.topic == topic}


def test_group_offsets_move_to_a_time_only_while_the_group_is_empty(ops_settings, make_topic, produce, unique):
    topic, group = make_topic(partitions=2, raw=True), f"reset-{unique}"
    produce(topic, numbered(0, 40, partitions=2))
    committer = Consumer(consumer_config(ops_settings, "ops-test", group))
    committer.commit(offsets=[TopicPartition(topic, 0, 20), TopicPartition(topic, 1, 20)], asynchronous=False)
    committer.close()
    dry = run_cli(ops_settings, "replay", "--topic", topic, "--group", group, "--reset-offsets",
                  "--from", str(T0_MS + 10_000), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == ["partition\tcommitted\tnew", "0\t20\t5", "1\t20\t5"]
    assert _committed(ops_settings, group, topic) == {0: 20, 1: 20}
    moved = run_cli(ops_settings, "replay", "--topic", topic, "--group", group, "--reset-offsets",
                    "--from", str(T0_MS + 10_000))
    assert moved.returncode == 0, moved.stderr
    assert _committed(ops_settings, group, topic) == {0: 5, 1: 5}

    member = Consumer(consumer_config(ops_settings, "ops-test-member", group))
    member.subscribe([topic])
    try:
        wait_until(lambda: member.poll(0.2) is not None or bool(member.assignment()), 30, "the member to join")
        refused = run_cli(ops_settings, "replay", "--topic", topic, "--group", group, "--reset-offsets",
                          "--from", str(T0_MS))
    finally:
        member.close()
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"guardstream: group_active: consumer group {group} has ")
    assert "stop its consumers" in refused.stderr
    assert _committed(ops_settings, group, topic) == {0: 5, 1: 5}


@pytest.mark.parametrize("args, why", [
    (["--group", "g"], "add --reset-offsets"),
    (["--reset-offsets", "--into", "x"], "--reset-offsets needs --group"),
    (["--group", "g", "--reset-offsets", "--to", "-1m"], "--to has no meaning"),
    ([], "name one target"),
])
def test_argument_combinations(ops_settings, args, why):
    result = run_cli(ops_settings, "replay", "--topic", "t", "--from", "-1h", *args)
    assert result.returncode == 1 and why in result.stderr


def test_replay_creates_its_target_like_the_source_and_topics_create_does_the_same(own_kafka, tmp_path):
    from guardstream.catalog import TOPICS
    from confluent_kafka.admin import ConfigResource
    settings = own_kafka.settings.replace(state_dir=tmp_path / "state")
    source = TOPICS.events_high.name
    send = Producer(producer_config(settings, "ops-test"))
    for n in range(5):
        send.produce(source, b"v%d" % n, b"k", timestamp=T0_MS + n)
    assert send.flush(20) == 0
    missing = run_cli(settings, "replay", "--topic", source, "--from", str(T0_MS), "--into", "replay.high")
    assert missing.returncode == 1 and "unknown_topic" in missing.stderr
    made = run_cli(settings, "replay", "--topic", source, "--from", str(T0_MS), "--into", "replay.high", "--create")
    assert made.returncode == 0, made.stderr
    assert f"created replay.high like {source}" in made.stderr and "copied 5 records" in made.stdout
    assert [r.value for r in read_all(settings, "replay.high")] == [b"v%d" % n for n in range(5)]

    admin = AdminClient(admin_config(settings))
    def shape(name):
        partitions = len(admin.list_topics(timeout=10).topics[name].partitions)
        configs = admin.describe_configs([ConfigResource("topic", name)])
        values = next(iter(configs.values())).result()
        return partitions, values["retention.ms"].value, values["cleanup.policy"].value
    assert shape("replay.high") == shape(source)

    created = run_cli(settings, "topics", "create", "analyst.geofences", "--like", TOPICS.geofences.name)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("create") and f"like {TOPICS.geofences.name}" in created.stdout
    assert shape("analyst.geofences")[2] == "compact"
    again = run_cli(settings, "topics", "create", "analyst.geofences", "--like", TOPICS.geofences.name)
    assert again.returncode == 0 and "exists already" in again.stdout
    unknown = run_cli(settings, "topics", "create", "mine")
    assert unknown.returncode == 1 and "unknown_topic" in unknown.stderr and "--like" in unknown.stderr
