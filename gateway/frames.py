"""Pre-built WebSocket frames and the writer that puts many of them on a connection in one write.

A server's frames are not masked, so the frame of a message is the same bytes
for every client: the hub builds it once per event and channel
(:func:`text_frame`) and a client's queued frames go out joined, in one
``transport.write`` per Kafka batch, instead of one ``send`` (frame built,
write, drain, task wake-up) per message and client.

This bypasses websockets' send path for event messages only; protocol replies,
pings, pongs and the close handshake still go through it. That is sound while
no extension is negotiated (the server runs with ``compression=None``; a
connection with one gets no :class:`FrameWriter` and is served by ``send``),
no fragmented message is in progress (the gateway sends none), and nothing is
written once the connection left the OPEN state. Flow control is websockets':
its ``paused`` flag (set by the transport above the write limit) and
``drain()``. Those members are read here and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from websockets.frames import OP_TEXT, Frame
from websockets.protocol import State

if TYPE_CHECKING:
    from websockets.asyncio.connection import Connection


def text_frame(message: str) -> bytes:
    """The unmasked, uncompressed text frame of ``message``: what a server sends."""
    return Frame(OP_TEXT, message.encode()).serialize(mask=False, extensions=[])


class FrameWriter:
    """Writes pre-built frames to one websockets connection, within its write limit."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.limit = connection.write_limit[0] if isinstance(connection.write_limit, tuple) \
            else connection.write_limit

    @classmethod
    def of(cls, connection: Connection) -> FrameWriter | None:
        """A writer, or None when frames must go through ``send`` (an extension was negotiated)."""
        return None if connection.protocol.extensions else cls(connection)

    @property
    def open(self) -> bool:
        return self.connection.protocol.state is State.OPEN

    def room(self) -> int:
        """Bytes the connection takes now: 0 while it is paused, at least 1 otherwise."""
        connection = self.connection
        if connection.paused or connection.protocol.state is not State.OPEN:
            return 0
        return max(1, self.limit - connection.transport.get_write_buffer_size())

    def write(self, frames: list[bytes]) -> None:
        self.connection.transport.write(b"".join(frames) if len(frames) > 1 else frames[0])

    async def drained(self) -> None:
        """Until the connection is below its write limit again (or closed)."""
        await self.connection.drain()
