"""channels: which channels an event reaches, and who may subscribe where."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.errors import InputError
from guardstream.gateway.auth import Principal
from guardstream.gateway.channels import (Channel, Kind, authorise, channel_kind, delivery_channel, parse_channel,
                                         route)
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


# -- delivery: which channel names an event to one client, if any ---------------------------

POSITION_OF_ACME = ("acme", ("tenant:acme:positions", "device:g-1"))
POSITION_OF_GLOBEX = ("globex", ("tenant:globex:positions", "device:g-1"))  # the same device id
ALERT_OF_GLOBEX = ("globex", ("tenant:globex:alerts", "noc:alerts", "device:g-1"))


@pytest.mark.parametrize(("principal", "subscribed", "event", "channel"), [
    (who(), {"tenant:acme:positions"}, POSITION_OF_ACME, "tenant:acme:positions"),
    (who(), {"device:g-1"}, POSITION_OF_ACME, "device:g-1"),
    # subscribed to two of the event's channels: once, named by the first in the route's order
    (who(), {"device:g-1", "tenant:acme:positions"}, POSITION_OF_ACME, "tenant:acme:positions"),
    (who(), {"tenant:acme:alerts"}, POSITION_OF_ACME, None),
    (who(), set(), POSITION_OF_ACME, None),
    # a device id shared by two tenants: the device channel never carries the other tenant's event
    (who(), {"device:g-1"}, POSITION_OF_GLOBEX, None),
    (who(roles=("operator",)), {"device:g-1"}, POSITION_OF_GLOBEX, None),
    (who(tenants=("acme", "globex")), {"device:g-1"}, POSITION_OF_GLOBEX, "device:g-1"),
    (who(roles=("noc",)), {"device:g-1"}, POSITION_OF_GLOBEX, "device:g-1"),
    (who(tenants=(), roles=("noc",)), {"noc:alerts"}, ALERT_OF_GLOBEX, "noc:alerts"),
    (who(tenants=(), roles=("noc",)), {"noc:alerts", "tenant:globex:alerts"}, ALERT_OF_GLOBEX,
     "tenant:globex:alerts"),
    (who(tenants=(), roles=("noc",)), {"noc:alerts"}, POSITION_OF_GLOBEX, None),
])
def test_delivery_channel(principal, subscribed, event, channel) -> None:
    tenant, channels = event
    assert delivery_channel(principal, subscribed, tenant, channels) == channel


principals = st.builds(lambda mine, roles: who(tenants=mine, roles=roles), st.frozensets(tenants),
                       st.frozensets(st.sampled_from(["noc", "operator"])))
schemas = st.sampled_from(["guardstream.DeviceAlert", "guardstream.GeofenceEvent", "guardstream.GuardPosition",
                           "guardstream.SensorReading", "guardstream.Telemetry", "guardstream.AlertAction"])
channel_names = st.sampled_from(["noc:alerts", "device:g-1", "device:g-2"]
                                + [f"tenant:{t}:{k.value}" for t in ("acme", "globex", "initech")
                                   for k in (Kind.ALERTS, Kind.POSITIONS, Kind.SENSORS, Kind.TELEMETRY)])


@given(principals, st.frozensets(channel_names), schemas, tenants, st.sampled_from(["g-1", "g-2"]))
def test_an_event_is_never_delivered_across_tenants_unless_noc(principal, subscribed, schema, tenant, device):
    where = route(schema, record(tenant=tenant, device_id=device))
    channel = delivery_channel(principal, subscribed, where.tenant, where.channels)
    if channel is not None:
        assert principal.noc or tenant in principal.tenants
        assert channel in subscribed and channel in where.channels
    elif tenant in principal.tenants or principal.noc:
        assert subscribed.isdisjoint(where.channels)  # a tenant it sees: withheld only when not subscribed
