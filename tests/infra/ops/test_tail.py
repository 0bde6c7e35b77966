"""``guardstream tail`` against the session's tansu broker, as a command and as a generator."""

import json

from ops_support import T0_MS, numbered, run_cli

from guardstream.infra.ops.positions import StartAt
from guardstream.infra.ops.records import parse_filters
from guardstream.infra.ops.tail import TailRequest, tail
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry

CODEC = Codec(FileRegistry.load())


def _lines(result):
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_from_the_beginning_with_a_filter_prints_json_lines(settings, make_topic, produce):
    topic = make_topic(partitions=2, raw=True)
    produce(topic, numbered(0, 30, partitions=2))
    shown = _lines(run_cli(settings, "tail", topic, "--from-beginning", "--filter", "key=dev-3"))
    assert sorted(r["value"] for r in shown) == sorted(f'{{"n": {n}, "device_id": "dev-3"}}'
                                                       for n in range(30) if n % 7 == 3)
    first = min(shown, key=lambda r: json.loads(r["value"])["n"])
    assert first == {"topic": topic, "partition": 1, "offset": 1, "timestamp": "2023-11-14T22:13:23.000Z",
                     "timestamp_ms": T0_MS + 3000, "key": "dev-3", "headers": {"n": "3", "mqtt.qos": "1"},
                     "schema": None, "value": '{"n": 3, "device_id": "dev-3"}'}
    # a raw payload that is a JSON object filters on its fields too
    by_field = _lines(run_cli(settings, "tail", topic, "--from-beginning", "--filter", "n=12", "device_id=dev-5"))
    assert [r["offset"] for r in by_field] == [6] and by_field[0]["partition"] == 0


def test_without_a_position_the_last_records_of_each_partition(settings, make_topic, produce):
    topic = make_topic(partitions=2, raw=True)
    produce(topic, numbered(0, 40, partitions=2))
    shown = _lines(run_cli(settings, "tail", topic))
    assert sorted((r["partition"], r["offset"]) for r in shown) == [(p, o) for p in (0, 1) for o in range(10, 20)]
    assert len(_lines(run_cli(settings, "tail", topic, "--last", "2", "--max", "3"))) == 3


def test_from_an_offset_and_from_a_time(settings, make_topic, produce):
    topic = make_topic(partitions=2, raw=True)
    produce(topic, numbered(0, 20, partitions=2))  # partition 0 holds n = 0, 2, ..., stamped T0 + n s
    at_offset = _lines(run_cli(settings, "tail", topic, "--offset", "0:7"))
    assert [(r["partition"], r["offset"]) for r in at_offset] == [(0, 7), (0, 8), (0, 9)]
    from_time = _lines(run_cli(settings, "tail", topic, "--from", str(T0_MS + 15_000), "--filter", "key=dev-2"))
    assert [json.loads(r["value"])["n"] for r in from_time] == [16]
    iso = _lines(run_cli(settings, "tail", topic, "--from", "2023-11-14T22:13:38Z", "--format", "json"))
    assert sorted(json.loads(r["value"])["n"] for r in iso) == [18, 19]
    relative = _lines(run_cli(settings, "tail", topic, "--from", "-5m"))  # the records are from 2023
    assert relative == []


def test_avro_values_are_decoded_by_schema_id_and_bytes_fields_stay_readable(settings, make_topic, produce):
    topic = make_topic()
    letter = {"stage": "sink", "reason": "bad_row", "detail": "d", "source_topic": "t", "source_partition": 0,
              "source_offset": 1, "key": None, "payload": b"\x00\xff", "ts_ms": T0_MS}
    produce(topic, [(0, b"k", CODEC.encode("guardstream.DeadLetter", letter), None, T0_MS),
                    (0, b"k", b"not avro", None, T0_MS + 1), (0, b"k", None, None, T0_MS + 2)])
    shown = [r for r in tail(settings, CODEC, TailRequest(topic, StartAt(last=None, beginning=True)))]
    assert shown[0]["schema"] == "guardstream.DeadLetter"
    assert shown[0]["value"]["payload"] == {"base64": "AP8="} and shown[0]["value"]["reason"] == "bad_row"
    assert (shown[1]["schema"], shown[1]["value"]) == (None, "not avro")
    assert shown[2]["value"] is None
    filtered = list(tail(settings, CODEC, TailRequest(topic, StartAt(last=None, beginning=True),
                                                      filters=parse_filters(["reason=bad_row", "source_offset=1"]))))
    assert [r["offset"] for r in filtered] == [0]


def test_table_format_is_tab_separated_when_piped(settings, make_topic, produce):
    topic = make_topic(raw=True)
    produce(topic, numbered(0, 2))
    result = run_cli(settings, "tail", topic, "--format", "table")
    assert result.stdout.splitlines() == [
        "partition\toffset\ttimestamp\tkey\tvalue",
        '0\t0\t2023-11-14T22:13:20.000Z\tdev-0\t{"n": 0, "device_id": "dev-0"}',
        '0\t1\t2023-11-14T22:13:21.000Z\tdev-1\t{"n": 1, "device_id": "dev-1"}']


def test_follow_prints_records_as_they_come(settings, make_topic, produce):
    import subprocess
    import sys
    import threading

    from ops_support import cli_env

    from guardstream.infra.stack import wait_until
    topic = make_topic(raw=True)
    produce(topic, numbered(0, 1))
    process = subprocess.Popen([sys.executable, "-m", "guardstream.cli", "tail", topic, "--follow", "--max", "3"],
                               env=cli_env(settings), stdout=subprocess.PIPE, text=True)
    lines = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    try:
        wait_until(lambda: len(lines) == 1, 30, "the existing record")
        produce(topic, numbered(1, 2))
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert [json.loads(line)["offset"] for line in lines] == [0, 1, 2]


def test_an_unknown_topic_is_one_line(settings, unique):
    result = run_cli(settings, "tail", f"nothing.{unique}")
    assert result.returncode == 1
    assert result.stderr.strip() == f"guardstream: unknown_topic: no topic 'nothing.{unique}' on the cluster"
