"""``guardstream devices import | list | disable | enable``: the device registry, by hand.

The compacted ``devices`` topic is the registry every worker loads and follows; these
commands write to it and read it back. Importing checks every row first
(``device_import.parse``) and writes nothing if one is bad. The sink copies the topic into
the ``devices`` table of PostgreSQL.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from confluent_kafka import Producer

from guardstream.catalog import TOPICS
from guardstream.errors import GuardstreamError, InputError, UnavailableError
from guardstream.kafka import producer_config
from guardstream.records import DEVICE, Device, device
from guardstream.schemas.codec import Codec
from guardstream.settings import Settings
from guardstream.streams.device_import import Problem, parse
from guardstream.topic_end import latest_values

CLIENT_ID = "guardstream-devices-admin"
log = logging.getLogger("guardstream.devices")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def format_of(path: Path, fmt: str | None) -> str:
    chosen = fmt or path.suffix.lower().lstrip(".")
    if chosen not in ("csv", "json"):
        raise InputError(f"{path}: say --format csv or json (the name ends in {path.suffix or 'nothing'})",
                         reason="unknown_format")
    return chosen


def read_file(path: Path, fmt: str | None = None) -> tuple[list[Device], list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's CSV often starts with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not readable: {exc}", reason="not_readable") from exc
    return parse(text, format_of(path, fmt), now_ms())


def write(settings: Settings, codec: Codec, records: list[Device]) -> None:
    producer = Producer(producer_config(settings, CLIENT_ID))
    for record in records:
        producer.produce(TOPICS.devices.name, codec.encode(DEVICE, record), record["device_id"].encode())
        producer.poll(0)
    if producer.flush(30) > 0:
        raise UnavailableError("Kafka did not acknowledge the device records within 30 s")


def current(settings: Settings, codec: Codec, timeout_s: float = 30.0) -> dict[str, Device]:
    """Every registered device (the latest record per id); :class:`UnavailableError` when the
    topic is missing or not read to its end within ``timeout_s``. A record that does not decode
    is left out and logged, as the workers leave it out."""
    values = latest_values(settings, TOPICS.devices.name, timeout_s, CLIENT_ID)
    out: dict[str, Device] = {}
    for key, value in values.items():
        device_id = key.decode("utf-8", "replace")
        try:
            out[device_id] = codec.decode(value)[1]
        except GuardstreamError as exc:
            log.error("device %s left out: its record does not decode: %s: %s", device_id, exc.reason, exc.detail)
    return out


def set_enabled(settings: Settings, codec: Codec, device_id: str, enabled: bool) -> Device:
    """Write the device's record again with ``enabled``; :class:`InputError` for an unknown id."""
    known = current(settings, codec).get(device_id)
    if known is None:
        raise InputError(f"device {device_id} is not in the registry", reason="unknown_device")
    record = device(**{**known, "enabled": enabled, "updated_ms": now_ms()})
    write(settings, codec, [record])
    return record
