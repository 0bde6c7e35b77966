"""The Faust engine's bulk lane in the test's own process, its producer started against the test broker:
the shell's write paths driven directly, as the batch engine's tests drive its ``Worker``."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.settings import Settings
from guardstream.streams.device_feed import DeviceFeed
from guardstream.streams.faust_engine import FaustLane, build
from guardstream.streams.fences import FenceFeed
from guardstream.streams.metrics import WorkerMetrics


@asynccontextmanager
async def bulk_lane(settings: Settings) -> AsyncIterator[FaustLane]:
    """The bulk lane of a Faust engine app whose producer runs; every write flushed on the way out."""
    codec = Codec(FileRegistry.load())
    with tempfile.TemporaryDirectory(prefix="guardstream-faust-test-") as datadir:
        app, (_, bulk) = build(settings, codec, WorkerMetrics.create(), FenceFeed(settings, codec, lambda *_: None),
                               DeviceFeed(settings, codec), datadir)
        await app.producer.start()
        try:
            yield bulk
            await app.producer.flush()
        finally:
            await app.producer.stop()
