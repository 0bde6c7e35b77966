"""``guardstream devices import | list | disable | enable`` and the worker's registry feed, on a broker of
the test's own."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer

from guardstream import cli
from guardstream.catalog import TOPICS
from guardstream.infra.stack import wait_until
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.streams import device_admin
from guardstream.streams.device_feed import DeviceFeed
from guardstream.streams.registry import Entry, Unknown

CODEC = Codec(FileRegistry.load())
FLEET = "device_id,tenant,kind,site_id,enabled\ng1,acme,guard,hq,\ns1,globex,sensor,,no\n"


@pytest.fixture
def environ(own_kafka, monkeypatch, tmp_path):
    """The CLI's environment: the test's broker; a pipe, so tables come out as tab-separated lines."""
    for name, value in own_kafka.settings.as_env().items():
        monkeypatch.setenv(name, value)
    return own_kafka.settings


def run(capsys, *argv: str) -> tuple[int, list[list[str]], str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, [line.split("\t") for line in out.out.splitlines()], out.err


def test_import_list_disable_enable_through_the_command(environ, capsys, tmp_path):
    fleet = tmp_path / "fleet.csv"
    fleet.write_text(FLEET)
    code, lines, _ = run(capsys, "devices", "import", str(fleet))
    assert code == 0 and lines == [["tenant", "imported", "disabled"], ["acme", "1", "0"], ["globex", "1", "1"],
                                   ["imported 2 device(s) for 2 tenant(s)"]]
    code, lines, _ = run(capsys, "devices", "disable", "g1")
    assert code == 0 and lines == [["disabled g1"]]
    code, lines, _ = run(capsys, "devices", "list")
    assert [row[:5] for row in lines] == [["id", "tenant", "kind", "site", "enabled"],
                                          ["g1", "acme", "GUARD", "hq", "no"], ["s1", "globex", "SENSOR", "", "no"]]
    code, lines, _ = run(capsys, "devices", "list", "--tenant", "globex")
    assert [row[0] for row in lines] == ["id", "s1"]
    code, _, err = run(capsys, "devices", "enable", "nobody")
    assert code == 1 and "unknown_device: device nobody is not in the registry" in err


def test_a_file_with_bad_rows_writes_nothing_and_names_each_row(environ, capsys, tmp_path):
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps([{"id": "ok", "tenant": "acme"}, {"id": "x y", "tenant": "acme"},
                                 {"id": "z", "tenant": "acme", "kind": "robot"}]))
    code, lines, err = run(capsys, "devices", "import", str(fleet))
    assert code == 1 and "bad_rows: 2 bad row(s)" in err
    assert [row[:3] for row in lines] == [["row", "device_id", "reason"], ["2", "x y", "bad_id"],
                                          ["3", "z", "unknown_kind"]]
    assert device_admin.current(environ, CODEC) == {}
    (tmp_path / "fleet.txt").write_text(FLEET)
    code, _, err = run(capsys, "devices", "import", str(tmp_path / "fleet.txt"))
    assert code == 1 and "unknown_format" in err


def test_the_feed_loads_the_registry_then_follows_changes(own_kafka, tmp_path):
    settings = own_kafka.settings.replace(unknown_devices="dead_letter")
    records, problems = device_admin.read_file(_write(tmp_path, FLEET))
    assert problems == []
    device_admin.write(settings, CODEC, records)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    producer.produce(TOPICS.devices.name, b"not avro", b"broken")  # a bad record is counted, never fatal
    producer.flush(10)
    feed, failures = DeviceFeed(settings, CODEC), []
    feed.start(failures.append)
    try:
        assert feed.loaded.wait(30), failures
        first = feed.registry
        assert dict(first.entries) == {"g1": Entry("acme", "GUARD", "hq", True),
                                       "s1": Entry("globex", "SENSOR", None, False)}
        assert first.unknown is Unknown.DEAD_LETTER and feed.errors == 1
        device_admin.set_enabled(settings, CODEC, "s1", True)
        producer.produce(TOPICS.devices.name, None, b"g1")  # a tombstone forgets the device
        producer.flush(10)
        wait_until(lambda: "g1" not in feed.registry.entries and feed.registry.entries["s1"].enabled, 30,
                   "the changes in the feed")
        assert dict(first.entries) == {"g1": Entry("acme", "GUARD", "hq", True),
                                       "s1": Entry("globex", "SENSOR", None, False)}  # a batch's version stays whole
        assert failures == []
    finally:
        feed.stop()


def _write(folder, text):
    path = folder / "fleet.csv"
    path.write_text(text)
    return path
