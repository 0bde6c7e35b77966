"""What the device registry costs the stream worker per record, in process (no broker).

1. ``registry.tenant_for`` alone, over a registry of N_DEVICES devices: records of enabled
   devices naming no tenant or their own (the common case), then a mix in which 1 in 10 devices
   is unknown and half the rest name another tenant;
2. ``pipeline.process`` on batches of 2,000 raw records (GPS fixes, telemetry, alerts from
   10,000 registered devices) with the registry and without it, interleaved, best of ROUNDS:
   the difference per record is what the registry adds to the worker's whole path;
3. what a registry change costs a worker once the registry is loaded: one copy of the entries
   (``device_feed.DeviceFeed`` copies on write, once per poll that changed something).

Prints figures only; nothing is asserted. Run: python bench/device_registry.py [N_DEVICES] [ROUNDS]
"""

from __future__ import annotations

import json
import random
import sys
import time

from guardstream.catalog import TOPICS
from guardstream.streams.geofence import FenceIndex
from guardstream.streams.geofence_state import Params
from guardstream.streams.pipeline import RawRecord, State, process
from guardstream.streams.registry import Entry, Registry, Unknown, tenant_for
from guardstream.streams.rules import default_rules
from guardstream.streams.validation import Policy

NOW_MS = 1_795_000_000_000
TENANTS = ("acme", "globex", "initech")


def registry_of(n: int) -> Registry:
    entries = {f"d{i}": Entry(TENANTS[i % 3], "GUARD", None, i % 50 != 0) for i in range(n)}
    return Registry(entries, Unknown.DEAD_LETTER, "default")


def bench_lookups(reg: Registry, calls: int, accepted_only: bool = False) -> float:
    rng = random.Random(1)
    n = len(reg.entries)
    if accepted_only:  # the common case: an enabled, registered device naming no tenant or its own
        picks = [i for i in (rng.randrange(n) for _ in range(calls)) if i % 50]
        asks = [(f"d{i}", rng.choice((None, TENANTS[i % 3]))) for i in picks]
    else:
        asks = [(f"d{rng.randrange(n)}" if rng.random() < 0.9 else f"x{i}", rng.choice((None, *TENANTS)))
                for i in range(calls)]
    started = time.perf_counter()
    for device_id, claimed in asks:
        tenant_for(device_id, claimed, reg)
    return (time.perf_counter() - started) / len(asks) * 1e9


def batch(seed: int, size: int = 2000) -> list[RawRecord]:
    rng = random.Random(seed)
    out = []
    for offset in range(size):
        i = rng.randrange(10_000)
        device, tenant = f"d{i}", TENANTS[i % 3]
        kind = rng.random()
        if kind < 0.6:
            topic, payload = TOPICS.raw_guard.name, {"ts": NOW_MS - 1000, "lat": 52.5, "lon": 13.4, "accuracy_m": 5}
        elif kind < 0.95:
            topic, payload = TOPICS.raw_device.name, {"ts": NOW_MS - 1000, "battery_pct": 80}
        else:
            topic, payload = TOPICS.raw_alert.name, {"ts": NOW_MS - 1000, "kind": "sos"}
        if rng.random() < 0.5:
            payload["tenant"] = tenant
        headers = {"msg.id": f"m{seed}-{offset}".encode(), "received_ms": str(NOW_MS).encode()}
        out.append(RawRecord(topic, 0, offset, device.encode(), json.dumps(payload).encode(), headers, NOW_MS))
    return out


def time_process(records: list[RawRecord], reg: Registry | None) -> float:
    state = State(fences=FenceIndex.build(()))  # a new state: no record is a duplicate of the last round's
    started = time.perf_counter()
    process(records, state, Policy(now_ms=NOW_MS), default_rules(), Params(), registry=reg)
    return time.perf_counter() - started


def main() -> None:
    n_devices = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    reg = registry_of(n_devices)
    print(f"registry of {n_devices:,} devices (1 in 50 disabled)")
    accepted = min(bench_lookups(reg, 500_000, accepted_only=True) for _ in range(3))
    mixed = min(bench_lookups(reg, 500_000) for _ in range(3))
    print(f"tenant_for alone, best of 3: {accepted:.0f} ns per accepted record; {mixed:.0f} ns over a mix with "
          "10 % unknown devices and a wrong tenant in half the rest (a refusal builds its detail)")

    batches = [batch(seed) for seed in range(4)]
    without, with_registry = [], []
    for r in range(rounds):  # the same batch with and without, back to back, in alternating order
        records = batches[r % len(batches)]
        pair = [(None, without), (reg, with_registry)][:: 1 if r % 2 else -1]
        for registry, times in pair:
            times.append(time_process(records, registry) / len(records))
    best_without, best_with = min(without), min(with_registry)
    paired = sorted(w - wo for w, wo in zip(with_registry, without))
    print(f"pipeline.process without a registry: {best_without * 1e6:6.2f} us per record "
          f"({1 / best_without:,.0f} records/s), best of {rounds} batches of 2,000")
    print(f"pipeline.process with the registry:  {best_with * 1e6:6.2f} us per record ({1 / best_with:,.0f} records/s)")
    print(f"the registry adds {(best_with - best_without) * 1e9:.0f} ns per record between the bests "
          f"({(best_with / best_without - 1) * 100:+.1f} %); the median of the {rounds} back-to-back pairs: "
          f"{paired[len(paired) // 2] * 1e9:.0f} ns")

    started = time.perf_counter()
    dict(reg.entries)
    print(f"a registry change after the load: one copy of {n_devices:,} entries, "
          f"{(time.perf_counter() - started) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
