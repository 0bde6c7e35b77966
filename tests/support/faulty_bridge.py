"""``guardstream bridge`` with one bug planted: handling a message whose payload is
``FAULT_PAYLOAD`` raises, as a bug of ours would. Used by ``tests/connectors/test_bridge_lanes.py``
to see what a lane failing on a message does to the process (and to the message)."""

from __future__ import annotations

import sys

from guardstream import cli
from guardstream.connectors import bridge

FAULT_PAYLOAD = b'{"planted": "fault"}'

_decide = bridge.decide


def faulty_decide(message, *args, **kwargs):  # type: ignore[no-untyped-def]
    if message.payload == FAULT_PAYLOAD:
        raise RuntimeError("planted fault")
    return _decide(message, *args, **kwargs)


if __name__ == "__main__":
    bridge.decide = faulty_decide
    sys.exit(cli.main(["bridge"]))
