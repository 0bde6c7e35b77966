"""Helpers of the operator-command tests."""

import os
import subprocess
import sys

from guardstream.infra.ops.records import Record
from guardstream.infra.ops.topic_reader import TopicReader

T0_MS = 1_700_000_000_000  # records carry explicit timestamps from here, one second apart


def numbered(first, count, partitions=1, key_prefix="dev"):
    """Records numbered first.., spread over partitions, stamped T0 + n s, with a header naming n."""
    return [(n % partitions, f"{key_prefix}-{n % 7}".encode(), b'{"n": %d, "device_id": "%s"}' % (
        n, f"{key_prefix}-{n % 7}".encode()), [("n", str(n).encode()), ("mqtt.qos", b"1")], T0_MS + n * 1000)
        for n in range(first, first + count)]


def read_all(settings, topic) -> list[Record]:
    with TopicReader(settings) as reader:
        bounds = reader.ends(topic, reader.partitions(topic))
        return list(reader.read({(topic, p): (low, end) for p, (low, end) in bounds.items()}))


def run_cli(settings, *args, timeout=120):
    base = {k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")}
    env = {**base, **settings.as_env()}
    return subprocess.run([sys.executable, "-m", "guardstream.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def cli_env(settings, **extra):
    base = {k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")}
    return {**base, **settings.as_env(), **extra}
