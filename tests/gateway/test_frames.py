"""frames: a pre-built frame is the frame websockets would send; many go out in one write, in order."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from guardstream.gateway.frames import FrameWriter, text_frame


def test_a_prebuilt_frame_is_what_websockets_sends_for_the_message() -> None:
    async def scenario() -> list[bytes]:
        written: list[bytes] = []

        async def handler(ws) -> None:
            original = ws.transport.write
            ws.transport.write = lambda data: (written.append(bytes(data)), original(data))
            for message in ("{}", "é" * 200, "x" * 70_000):  # 7-bit, 16-bit and 64-bit lengths
                await ws.send(message)
            ws.transport.write = original

        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", compression=None) as client:
                for _ in range(3):
                    await client.recv()
        return written

    assert asyncio.run(scenario()) == [text_frame(m) for m in ("{}", "é" * 200, "x" * 70_000)]


def test_frames_written_in_one_write_arrive_as_messages_in_order() -> None:
    messages = [f'{{"n":{n}}}' for n in range(500)]

    async def scenario() -> tuple[list[str], str]:
        async def handler(ws) -> None:
            writer = FrameWriter.of(ws)
            assert writer is not None and writer.open and writer.room() > 0
            writer.write([text_frame(m) for m in messages])
            await writer.drained()
            await ws.send("done")  # websockets' own send path still works after direct writes
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", compression=None) as client:
                got = [await client.recv() for _ in messages]
                return got, await client.recv()

    assert asyncio.run(scenario()) == (messages, "done")


def test_a_connection_with_compression_gets_no_writer() -> None:
    async def scenario() -> bool:
        found: list[FrameWriter | None] = []

        async def handler(ws) -> None:
            found.append(FrameWriter.of(ws))
            await ws.send("x")

        async with serve(handler, "127.0.0.1", 0, compression="deflate") as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", compression="deflate") as client:
                await client.recv()
        return found == [None]

    assert asyncio.run(scenario())
