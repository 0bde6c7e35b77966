"""Who a device is: the registry's decision, case by case and by property, and inside the batch core."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from guardstream.catalog import TOPICS
from guardstream.refusal import Refused
from guardstream.streams.geofence import FenceIndex
from guardstream.streams.geofence_state import Params
from guardstream.streams.pipeline import RawRecord, State, process
from guardstream.streams.registry import REASONS, Entry, Registry, Unknown, tenant_for
from guardstream.streams.rules import default_rules
from guardstream.streams.validation import Policy

NOW = 1_795_000_000_000
ACME = Entry("acme", "GUARD", "hq", True)
OFF = Entry("acme", "GUARD", None, False)


def registry(unknown: Unknown = Unknown.DEAD_LETTER, **entries: Entry) -> Registry:
    return Registry(entries, unknown, "default")


# (entries, unknown rule, device, payload tenant) -> tenant, or the reason it is refused
CASES = [
    ({}, Unknown.DEAD_LETTER, None, "unknown_device"),
    ({}, Unknown.DEAD_LETTER, "acme", "unknown_device"),
    ({}, Unknown.DEFAULT_TENANT, None, "default"),
    ({}, Unknown.DEFAULT_TENANT, "globex", "globex"),
    ({"d": OFF}, Unknown.DEAD_LETTER, None, "device_disabled"),
    ({"d": OFF}, Unknown.DEFAULT_TENANT, "acme", "device_disabled"),
    ({"d": OFF}, Unknown.DEFAULT_TENANT, "globex", "device_disabled"),  # disabled is said first
    ({"d": ACME}, Unknown.DEAD_LETTER, None, "acme"),
    ({"d": ACME}, Unknown.DEAD_LETTER, "acme", "acme"),
    ({"d": ACME}, Unknown.DEFAULT_TENANT, "globex", "tenant_mismatch"),
    ({"d": ACME}, Unknown.DEAD_LETTER, "default", "tenant_mismatch"),
    ({"other": ACME}, Unknown.DEAD_LETTER, "acme", "unknown_device"),
]


@pytest.mark.parametrize(("entries", "unknown", "claimed", "expected"), CASES)
def test_the_decision_table(entries, unknown, claimed, expected):
    got = tenant_for("d", claimed, registry(unknown, **entries))
    if expected in REASONS:
        assert isinstance(got, Refused) and got.reason == expected
        assert "acme" not in got.detail or claimed == "acme"  # a refusal never tells the registered tenant
    else:
        assert got == expected


tenants = st.sampled_from(["acme", "globex", "initech", "default"])
entries = st.builds(Entry, tenants, st.sampled_from(["GUARD", "SENSOR", "DEVICE"]), st.none(), st.booleans())
registries = st.builds(Registry, st.dictionaries(st.sampled_from(["d1", "d2", "d3"]), entries),
                       st.sampled_from(list(Unknown)), tenants)


@given(registries, st.sampled_from(["d1", "d2", "d3"]), st.none() | tenants)
def test_a_registered_device_only_ever_gets_its_registered_tenant(reg, device, claimed):
    got = tenant_for(device, claimed, reg)
    entry = reg.entries.get(device)
    if isinstance(got, Refused):
        assert got.reason in REASONS
    if entry is not None:
        assert got == entry.tenant or isinstance(got, Refused)
        if not entry.enabled:
            assert isinstance(got, Refused) and got.reason == "device_disabled"
        elif claimed in (None, entry.tenant):
            assert got == entry.tenant
    elif reg.unknown is Unknown.DEAD_LETTER:
        assert isinstance(got, Refused) and got.reason == "unknown_device"
    else:
        assert got == (claimed or reg.default_tenant)


# -- inside the batch core -----------------------------------------------------------------

def _raw(n: int, topic: str, key: str, payload: dict) -> RawRecord:
    headers = {"msg.id": f"m{n}".encode(), "received_ms": str(NOW).encode()}
    return RawRecord(topic, 0, n, key.encode(), json.dumps(payload).encode(), headers, NOW)


def _process(records, reg):
    return process(records, State(fences=FenceIndex.build(())), Policy(now_ms=NOW, default_tenant="default"),
                   default_rules(), Params(), registry=reg)


def test_the_batch_core_takes_the_tenant_from_the_registry_and_dead_letters_the_rest():
    reg = registry(Unknown.DEAD_LETTER, g1=ACME, g2=OFF)
    out = _process([
        _raw(1, TOPICS.raw_guard.name, "g1", {"ts": NOW, "lat": 52.5, "lon": 13.4}),  # no tenant: acme's
        _raw(2, TOPICS.raw_alert.name, "g1", {"ts": NOW, "kind": "panic", "tenant": "globex"}),
        _raw(3, TOPICS.raw_device.name, "g2", {"ts": NOW, "battery_pct": 50}),
        _raw(4, TOPICS.raw_sensor.name, "s9", {"ts": NOW, "state": "open", "kind": "door"}),
        _raw(5, TOPICS.raw_system.name, "bridge-1", {"ts": NOW, "status": "OK"}),  # components: not judged
        _raw(6, TOPICS.raw_alert.name, "g1", {"ts": NOW, "kind": "panic", "client_id": "acme"}),
    ], reg)
    assert sorted((e.value["device_id"], e.value["tenant"]) for e in out.emits) == [
        ("bridge-1", "default"), ("g1", "acme"), ("g1", "acme")]
    assert [(r.record.offset, r.refused.reason) for r in out.refused] == [
        (2, "tenant_mismatch"), (3, "device_disabled"), (4, "unknown_device")]


def test_without_a_registry_the_payload_tenant_stands_as_before():
    out = process([_raw(1, TOPICS.raw_guard.name, "g1", {"ts": NOW, "lat": 52.5, "lon": 13.4, "tenant": "globex"})],
                  State(fences=FenceIndex.build(())), Policy(now_ms=NOW, default_tenant="default"), default_rules(),
                  Params())
    assert [e.value["tenant"] for e in out.emits] == ["globex"]


@given(st.lists(st.tuples(st.sampled_from(["a1", "a2", "b1", "c1", "x9"]), st.none() | tenants), max_size=30))
def test_no_record_leaves_the_batch_core_with_a_tenant_other_than_its_devices(sends):
    reg = registry(Unknown.DEFAULT_TENANT, a1=Entry("acme", "GUARD", None, True),
                   a2=Entry("acme", "GUARD", None, True), b1=Entry("globex", "GUARD", None, True),
                   c1=Entry("initech", "GUARD", None, False))
    records = [_raw(n, TOPICS.raw_alert.name, device, {"ts": NOW, "kind": "sos", **({"tenant": t} if t else {})})
               for n, (device, t) in enumerate(sends)]
    out = _process(records, reg)
    for emit in out.emits:
        entry = reg.entries.get(emit.value["device_id"])
        if entry is not None:
            assert entry.enabled and emit.value["tenant"] == entry.tenant
    assert len(out.emits) + len(out.refused) == len(records)


def test_every_reason_is_documented():
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    payloads, readme = (root / "docs" / "payloads.md").read_text(), (root / "README.md").read_text()
    for reason in REASONS:
        assert f"| `{reason}` |" in payloads and f"`{reason}`" in readme, reason
