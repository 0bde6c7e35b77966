"""The settings every benchmark here gives the components it starts, and how it knows they are ready.

The embedded profile against the servers the benchmark started, overridden by
any ``GUARDSTREAM_*`` variable of the caller's environment, so a setting can be
compared by exporting it: ``GUARDSTREAM_BRIDGE_LINGER_MS=5 python bench/end_to_end.py``.
"""

from __future__ import annotations

import os
import urllib.request


def embedded_env(**values: str) -> dict[str, str]:
    """The embedded profile with one replica, then ``values``, then the caller's ``GUARDSTREAM_*``."""
    return {"GUARDSTREAM_PROFILE": "embedded", "GUARDSTREAM_REPLICATION_FACTOR": "1", **values,
            **{name: value for name, value in os.environ.items() if name.startswith("GUARDSTREAM_")}}


def ready(metrics_port: int) -> bool:
    """Whether the component serving /metrics on ``metrics_port`` answers its /readyz with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
