"""protocol: client messages in, server messages out."""

from __future__ import annotations

import json

import pytest

from guardstream.gateway.auth import Principal
from guardstream.gateway.protocol import (Ack, Ping, ProtocolError, Subscribe, Unsubscribe, alert_action,
                                          alert_status_message, event_message, live_message, parse_client_message,
                                          subscribed_message)
from guardstream.catalog import TOPICS

HIGH, CRITICAL = TOPICS.events_high.name, TOPICS.events_critical.name
RESUMABLE = frozenset({HIGH, CRITICAL, TOPICS.alerts_actions.name})


@pytest.mark.parametrize(("message", "op"), [
    ({"op": "ping"}, Ping()),
    ({"op": "subscribe", "channels": ["noc:alerts", "noc:alerts", "device:x"]}, Subscribe(("noc:alerts", "device:x"))),
    ({"op": "subscribe", "channels": ["device:x"], "resume": {f"{HIGH}:3": 41, f"{CRITICAL}:0": -1}},
     Subscribe(("device:x",), {(HIGH, 3): 41, (CRITICAL, 0): -1})),
    ({"op": "unsubscribe", "channels": ["tenant:a:alerts"]}, Unsubscribe(("tenant:a:alerts",))),
    ({"op": "ack", "alert_event_id": "al-1", "action": "ACKNOWLEDGE"}, Ack("al-1", "ACKNOWLEDGE")),
    ({"op": "ack", "alert_event_id": "al-1", "action": "FALSE_ALARM", "note": "cat"}, Ack("al-1", "FALSE_ALARM", "cat")),
])
def test_client_messages(message, op) -> None:
    assert parse_client_message(json.dumps(message), RESUMABLE) == op


@pytest.mark.parametrize(("text", "reason"), [
    ("{", "bad_json"),
    ("[1]", "bad_message"),
    ('{"op": "dance"}', "unknown_op"),
    ('{"channels": []}', "unknown_op"),
    ('{"op": "subscribe", "channels": []}', "bad_message"),
    ('{"op": "subscribe", "channels": "noc:alerts"}', "bad_message"),
    ('{"op": "subscribe", "channels": ["tenant:a:b"]}', "bad_channel"),
    (json.dumps({"op": "subscribe", "channels": ["noc:alerts"], "resume": {"raw.guard:0": 1}}), "bad_resume"),
    (json.dumps({"op": "subscribe", "channels": ["noc:alerts"], "resume": {f"{HIGH}:x": 1}}), "bad_resume"),
    (json.dumps({"op": "subscribe", "channels": ["noc:alerts"], "resume": {f"{HIGH}:0": -2}}), "bad_resume"),
    (json.dumps({"op": "subscribe", "channels": ["noc:alerts"], "resume": {f"{HIGH}:0": True}}), "bad_resume"),
    (json.dumps({"op": "subscribe", "channels": ["noc:alerts"], "resume": [1]}), "bad_resume"),
    ('{"op": "ack", "alert_event_id": "a", "action": "DELETE"}', "bad_action"),
    ('{"op": "ack", "alert_event_id": "", "action": "RESOLVE"}', "bad_action"),
    ('{"op": "ack", "alert_event_id": "a", "action": "RESOLVE", "note": 5}', "bad_action"),
])
def test_bad_client_messages(text: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_client_message(text, RESUMABLE)
    assert refused.value.reason == reason


def test_server_messages() -> None:
    assert json.loads(event_message("device:g", HIGH, 2, 7, "guardstream.GuardPosition", {"lat": 1.5})) == {
        "type": "event", "channel": "device:g", "topic": HIGH, "partition": 2, "offset": 7,
        "schema": "guardstream.GuardPosition", "data": {"lat": 1.5}}
    assert json.loads(subscribed_message({"b", "a"}, {(HIGH, 1): 4, (HIGH, 0): -1})) == {
        "type": "subscribed", "channels": ["a", "b"], "positions": {f"{HIGH}:0": -1, f"{HIGH}:1": 4}}
    assert json.loads(live_message(3, {(HIGH, 0): (5, 9)})) == {"type": "live", "replayed": 3,
                                                                "gaps": {f"{HIGH}:0": [5, 9]}}


def test_an_ack_becomes_an_alert_action_by_the_token_subject_and_its_status_message() -> None:
    principal = Principal("op-7", frozenset({"acme"}), frozenset({"operator"}), 0)
    record = alert_action(principal, Ack("al-1", "RESOLVE", "done"), "acme", "id-1", 1234)
    assert record == {"action_id": "id-1", "tenant": "acme", "alert_event_id": "al-1", "action": "RESOLVE",
                      "actor": "op-7", "ts_ms": 1234, "note": "done"}
    status = json.loads(alert_status_message("tenant:acme:alerts", TOPICS.alerts_actions.name, 0, 3, record))
    assert (status["type"], status["status"], status["actor"]) == ("alert_status", "RESOLVED", "op-7")
