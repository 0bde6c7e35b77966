"""Devices past the horizon leave the worker's memory and its changelog (real tansu), on both engines."""

import asyncio
import threading
from dataclasses import replace

from guardstream.catalog import TOPICS
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.streams.device_feed import DeviceFeed
from guardstream.streams.fences import FenceFeed
from guardstream.streams.registry import Entry
from guardstream.streams.metrics import WorkerMetrics
from guardstream.streams.rules import RuleState
from guardstream.streams.state_store import StateStore
from guardstream.streams.worker import Worker, lanes, now_ms

from support.faust_lanes import bulk_lane
from support.processes import collect


def test_a_device_silent_past_the_horizon_is_forgotten_and_tombstoned(applied, unique):
    codec = Codec(FileRegistry.load())
    worker = Worker(applied, codec, WorkerMetrics.create(), lanes(applied)[1],
                    FenceFeed(applied, codec, lambda index, seconds: None), DeviceFeed(applied, codec),
                    threading.Event())
    old, recent, registered = f"old-{unique}", f"recent-{unique}", f"registered-{unique}"
    # a device enabled in the registry is watched however long it is silent
    worker.devices.registry = replace(worker.devices.registry, entries={
        registered: Entry("acme", "GUARD", None, True), old: Entry("acme", "GUARD", None, False)})
    now = now_ms()
    for device, last_ms in ((old, now - worker.horizon_ms - 1), (recent, now - 1000),
                            (registered, now - worker.horizon_ms - 1)):
        worker.state.last_seen[device] = ("acme", last_ms)
        worker.store.put("rules", device, RuleState(frozenset({"low_battery"})), TOPICS.raw_device.name, 0)
    assert worker.producer.flush(30) == 0

    worker._check_silent()
    assert worker.producer.flush(30) == 0
    worker._commit_acknowledged()
    assert set(worker.state.last_seen) >= {recent, registered} and old not in worker.state.last_seen
    assert old not in worker.store.values["rules"] and recent in worker.store.values["rules"]
    assert collect(applied, TOPICS.worker_state.name, lambda r: r.key().endswith(old.encode()) and r.value() is None, 1)
    restored = StateStore(applied, worker.producer)
    restored.restore({(TOPICS.raw_device.name, 0)})
    assert old not in restored.values["rules"] and recent in restored.values["rules"]
    worker.consumer.close()


def test_faust_engine_a_device_silent_past_the_horizon_is_forgotten_and_tombstoned(applied, unique):
    old, recent, registered = f"old-{unique}", f"recent-{unique}", f"registered-{unique}"

    async def check() -> None:
        async with bulk_lane(applied) as lane:
            lane.devices.registry = replace(lane.devices.registry, entries={
                registered: Entry("acme", "GUARD", None, True), old: Entry("acme", "GUARD", None, False)})
            now = now_ms()
            for device, last_ms in ((old, now - lane.horizon_ms - 1), (recent, now - 1000),
                                    (registered, now - lane.horizon_ms - 1)):
                lane.state.last_seen[device] = ("acme", last_ms)
                lane.store.stage("rules", device, RuleState(frozenset({"low_battery"})), TOPICS.raw_device.name, 0)
            for key, value, partition in lane.store.take_staged():  # as a commit writes them
                await lane.app.producer.send(TOPICS.worker_state.name, key, value, partition, None, None)
            await lane.app.producer.flush()

            await lane.check_silent()
            assert set(lane.state.last_seen) >= {recent, registered} and old not in lane.state.last_seen
            assert old not in lane.store.values["rules"] and recent in lane.store.values["rules"]
    asyncio.run(check())

    assert collect(applied, TOPICS.worker_state.name, lambda r: r.key().endswith(old.encode()) and r.value() is None, 1)
    restored = StateStore(applied, None)
    restored.restore({(TOPICS.raw_device.name, 0)})
    assert old not in restored.values["rules"] and recent in restored.values["rules"]
