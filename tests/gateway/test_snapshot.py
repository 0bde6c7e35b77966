"""The snapshot's pure parts: what it covers, where live takes over, what the client is sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardstream.gateway.auth import Principal
from guardstream.gateway.snapshot import (ALERT_FIELDS, FIELDS, POSITION_FIELDS, Scope, Snapshot, border, records, scope,
                                          snapshot_messages)
from guardstream.records import ALERT_ACTION, DEVICE_ALERT, GUARD_POSITION

ANN = Principal("ann", frozenset({"acme"}), frozenset({"operator"}), 2e9)
NORA = Principal("nora", frozenset(), frozenset({"noc"}), 2e9)
A, B = ("events.critical", 0), ("events.high", 1)


@pytest.mark.parametrize(("principal", "channels", "expected"), [
    (ANN, ["tenant:acme:alerts"], Scope(frozenset({"acme"}), frozenset({"acme"}), frozenset(), frozenset())),
    (ANN, ["tenant:acme:positions", "device:g7"],
     Scope(frozenset({"acme"}), frozenset(), frozenset({"acme"}), frozenset({"g7"}))),
    (NORA, ["noc:alerts", "tenant:x:alerts"], Scope(None, None, frozenset(), frozenset())),
    (ANN, ["tenant:acme:sensors"], Scope(frozenset({"acme"}), frozenset(), frozenset(), frozenset())),
])
def test_scope_follows_the_channels_and_the_tokens_tenants(principal, channels, expected):
    assert scope(principal, channels) == expected


@pytest.mark.parametrize(("reflected", "live", "resume", "ahead"), [
    ({A: 10, B: 5}, {A: 12, B: 5}, {A: 9, B: 4}, {}),  # behind or level: replay [10, 12) of A
    ({A: 15}, {A: 12}, {A: 14}, {A: 15}),  # the sink is past the hub: live must reach 15 first
    ({}, {A: 3}, {A: -1}, {}),  # no position: the snapshot holds nothing of A, replay it all
    ({A: 4, ("alerts.actions", 0): 9}, {A: 4}, {A: 3}, {}),  # partitions the hub does not read are left out
])
def test_border_turns_the_snapshots_offsets_into_a_resume(reflected, live, resume, ahead):
    edge = border(reflected, live)
    assert (dict(edge.resume), dict(edge.ahead)) == (resume, ahead)


def row(fields: tuple[str, ...], **values: object) -> str:
    return json.dumps([values.get(f) for f in fields])


def alert(tenant: str, n: int, device: str | None = None) -> tuple[str, str | None, str]:
    return tenant, device, row(ALERT_FIELDS, event_id=f"{tenant}-a{n}", tenant=tenant, device_id=f"{tenant}-g1",
                               ts_ms=n, status="NEW")


def fixes(tenant: str, devices: list[str], device: str | None = None) -> tuple[str, str | None, str]:
    return tenant, device, "\n".join(row(POSITION_FIELDS, event_id=f"{tenant}-{d}", tenant=tenant, device_id=d,
                                          ts_ms=1, lat=1.0, lon=2.0) for d in devices)


def test_messages_name_each_item_by_the_channel_live_delivery_would_and_drop_other_tenants():
    snapshot = Snapshot({A: 10}, [alert("acme", 1), alert("globex", 2)], [],
                        [fixes("acme", [f"g{i}" for i in range(5)]), fixes("globex", ["g1"])])
    out = [json.loads(m) for m in snapshot_messages(ANN, ["tenant:acme:alerts", "tenant:acme:positions"], snapshot,
                                                    {A: 9}, chunk=2)]
    assert [m["type"] for m in out] == ["snapshot"] * 4 + ["snapshot_end"]
    items = {(m["channel"], i["event_id"]) for m in out[:-1] for i in records(m)}
    assert items == {("tenant:acme:alerts", "acme-a1")} | {("tenant:acme:positions", f"acme-g{i}") for i in range(5)}
    assert out[-1] == {"type": "snapshot_end", "offsets": {"events.critical:0": 9}, "alerts": 1, "actions": 0,
                       "positions": 5}


def test_a_device_channel_gets_its_device_once_even_when_the_tenant_channel_is_subscribed_too():
    snapshot = Snapshot({}, [alert("acme", 1)], [], [fixes("acme", ["acme-g1"], device="acme-g1")])
    out = [json.loads(m) for m in snapshot_messages(ANN, ["device:acme-g1", "tenant:acme:alerts"], snapshot, {})]
    assert [(m["channel"], len(m["rows"])) for m in out[:-1]] == [("device:acme-g1", 1), ("tenant:acme:alerts", 1)]


@pytest.mark.parametrize("schema", [GUARD_POSITION, DEVICE_ALERT, ALERT_ACTION])
def test_a_sections_fields_are_its_schemas_in_order_then_an_alerts_status(schema):
    avsc = json.loads((Path(__file__).parents[2] / "schemas" / "avro" / f"{schema.split('.')[-1]}.avsc").read_text())
    extra = ("status", "status_by", "status_ts_ms", "status_note") if schema == DEVICE_ALERT else ()
    assert FIELDS[schema] == tuple(f["name"] for f in avsc["fields"]) + extra
