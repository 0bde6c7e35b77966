"""Finding the running local stack: the stack file, which variables it supplies, remembered ports."""

import json
import os

import pytest

from guardstream.local_stack import (ADDRESS_VARS, PORTS_FILE, STACK_FILE, adopted, nothing_configured,
                                     parse_stack, remembered_ports, running_stack, stack_doc)

ADDRESSES = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092", "MQTT_URL": "mqtt://127.0.0.1:11883",
             "GUARDSTREAM_PROFILE": "embedded", "GUARDSTREAM_GATEWAY_PORT": "18765"}


def _write(state, doc):
    state.mkdir(parents=True, exist_ok=True)
    (state / STACK_FILE).write_text(json.dumps(doc))


def test_a_stack_file_round_trips(tmp_path):
    _write(tmp_path, stack_doc(os.getpid(), ADDRESSES, "0.0.0.0", {"worker": 9402}))
    stack = running_stack(tmp_path)
    assert stack is not None
    assert (stack.pid, stack.addresses, stack.metrics_host, stack.metrics_ports) == \
        (os.getpid(), ADDRESSES, "0.0.0.0", {"worker": 9402})


def test_a_stack_whose_process_is_gone_is_not_running(tmp_path):
    _write(tmp_path, stack_doc(4242, ADDRESSES, "127.0.0.1", {}))
    assert running_stack(tmp_path, alive=lambda pid: pid != 4242) is None
    assert running_stack(tmp_path, alive=lambda pid: pid == 4242).pid == 4242


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", '{"pid": "12"}', '{"addresses": {}}'])
def test_an_unreadable_stack_file_is_no_stack(tmp_path, text):
    (tmp_path / STACK_FILE).write_text(text)
    assert running_stack(tmp_path, alive=lambda pid: True) is None


def test_no_stack_file_is_no_stack(tmp_path):
    assert running_stack(tmp_path / "nowhere", alive=lambda pid: True) is None


def test_only_address_variables_are_read_from_a_stack_file():
    doc = {"pid": 1, "addresses": {**ADDRESSES, "GUARDSTREAM_JWT_SECRET": "s", "PATH": "/x"}}
    assert parse_stack(doc, state_dir=None).addresses == ADDRESSES


def test_only_address_variables_are_written():
    with pytest.raises(ValueError, match="GUARDSTREAM_JWT_SECRET"):
        stack_doc(1, {"GUARDSTREAM_JWT_SECRET": "s"}, "127.0.0.1", {})
    assert set(ADDRESSES) <= set(ADDRESS_VARS)


def test_the_environment_wins_over_the_stack():
    stack = parse_stack({"pid": 1, "addresses": ADDRESSES}, state_dir=None)
    supplied = adopted({"MQTT_URL": "mqtt://mine:1883"}, stack)
    assert "MQTT_URL" not in supplied
    assert supplied["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
    assert adopted({}, None) == {}


@pytest.mark.parametrize("environ, has_stack, expected", [
    ({}, False, True),
    ({"GUARDSTREAM_LOG_LEVEL": "debug"}, False, True),
    ({"DATABASE_URL": "postgresql://db/x"}, False, False),
    ({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, False, False),
    ({}, True, False),
])
def test_nothing_configured_means_no_stack_and_no_server_named(environ, has_stack, expected):
    stack = parse_stack({"pid": 1}, state_dir=None) if has_stack else None
    assert nothing_configured(environ, stack) is expected


def test_remembered_ports_keep_only_ports(tmp_path):
    (tmp_path / PORTS_FILE).write_text(json.dumps({"mqtt": 11883, "kafka": 0, "gateway": 70000,
                                                   "worker": "9401", "sink": 9404}))
    assert remembered_ports(tmp_path) == {"mqtt": 11883, "sink": 9404}
    (tmp_path / PORTS_FILE).write_text("garbage")
    assert remembered_ports(tmp_path) == {}
    assert remembered_ports(tmp_path / "nowhere") == {}
