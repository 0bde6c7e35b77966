"""channels: which channels an event reaches, and who may subscribe where."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.errors import InputError
from guardstream.gateway.auth import Principal
from guardstream.gateway.channels import Channel, Kind, authorise, channel_kind, parse_channel, route
from guardstream.gateway.queues import Lane


def who(tenants=("acme",), roles=()) -> Principal:
    return Principal("u", frozenset(tenants), frozenset(roles), 0.0)


def record(**fields) -> dict:
    return {"event_id": "e1", "tenant": "acme", "device_id": "g-1", **fields}


@pytest.mark.parametrize(("name", "channel"), [
    ("tenant:acme:alerts", Channel(Kind.ALERTS, tenant="acme")),
    ("tenant:acme:positions", Channel(Kind.POSITIONS, tenant="acme")),
    ("tenant:a.b-c:sensors", Channel(Kind.SENSORS, tenant="a.b-c")),
    ("tenant:acme:telemetry", Channel(Kind.TELEMETRY, tenant="acme")),
    ("device:guard-07", Channel(Kind.DEVICE, device="guard-07")),
    ("device:hq:door:2", Channel(Kind.DEVICE, device="hq:door:2")),
    ("noc:alerts", Channel(Kind.NOC)),
])
def test_channel_names_parse_and_print_back(name: str, channel: Channel) -> None:
    assert parse_channel(name) == channel and channel.name == name


@pytest.mark.parametrize("name", ["", "tenant:acme", "tenant:acme:things", "tenant::alerts", "device:",
                                  "device:a b", "noc:positions", "tenant:acme:device", 7, None, "x" * 300])
def test_anything_else_is_bad_channel(name) -> None:
    with pytest.raises(InputError) as refused:
        parse_channel(name)
    assert refused.value.reason == "bad_channel"


@pytest.mark.parametrize(("schema", "fields", "channels", "lane"), [
    ("guardstream.DeviceAlert", {}, ("tenant:acme:alerts", "noc:alerts", "device:g-1"), Lane.CRITICAL),
    ("guardstream.GeofenceEvent", {}, ("tenant:acme:alerts", "noc:alerts", "device:g-1"), Lane.CRITICAL),
    ("guardstream.GuardPosition", {}, ("tenant:acme:positions", "device:g-1"), Lane.POSITION),
    ("guardstream.SensorReading", {}, ("tenant:acme:sensors", "device:g-1"), Lane.OTHER),
    ("guardstream.Telemetry", {}, ("tenant:acme:telemetry", "device:g-1"), Lane.OTHER),
    ("guardstream.SystemHealth", {}, ("tenant:acme:telemetry", "device:g-1"), Lane.OTHER),
    ("guardstream.AlertAction", {"device_id": None}, ("tenant:acme:alerts", "noc:alerts"), Lane.CRITICAL),
])
def test_routes(schema, fields, channels, lane) -> None:
    where = route(schema, record(**fields))
    assert where.channels == channels and where.lane is lane and where.tenant == "acme"


def test_records_no_channel_carries_have_no_route() -> None:
    assert route("guardstream.DeadLetter", record()) is None
    assert route("guardstream.GuardPosition", {"device_id": "x"}) is None


@pytest.mark.parametrize(("principal", "name", "device_tenant", "allowed"), [
    (who(), "tenant:acme:alerts", None, True),
    (who(), "tenant:globex:alerts", None, False),
    (who(roles=("noc",)), "tenant:globex:positions", None, True),
    (who(), "noc:alerts", None, False),
    (who(roles=("operator",)), "noc:alerts", None, False),
    (who(tenants=(), roles=("noc",)), "noc:alerts", None, True),
    (who(), "device:g-1", "acme", True),
    (who(), "device:g-1", "globex", False),
    (who(), "device:g-1", None, True),  # not seen yet: delivery checks each event's tenant
    (who(roles=("noc",)), "device:g-1", "globex", True),
])
def test_authorise(principal, name, device_tenant, allowed) -> None:
    assert (authorise(principal, parse_channel(name), device_tenant) is None) is allowed


@pytest.mark.parametrize(("name", "kind"), [("noc:alerts", "noc"), ("device:a:b", "device"),
                                            ("tenant:x:positions", "positions")])
def test_channel_kind(name: str, kind: str) -> None:
    assert channel_kind(name) == kind


tenants = st.sampled_from(["acme", "globex", "initech"])


@given(tenants, st.frozensets(tenants), st.sampled_from(sorted({"guardstream.DeviceAlert", "guardstream.GuardPosition",
                                                                "guardstream.SensorReading", "guardstream.Telemetry"})))
def test_a_subscription_allowed_for_a_tenant_channel_only_names_tenants_the_principal_sees(event_tenant, mine, schema):
    principal = who(tenants=mine)
    for name in route(schema, record(tenant=event_tenant)).channels:
        channel = parse_channel(name)
        if channel.kind in (Kind.NOC, Kind.DEVICE):
            continue
        assert (authorise(principal, channel, None) is None) == (event_tenant in mine)
