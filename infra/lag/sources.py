"""Where ``guardstream lag`` reads the queues before Kafka: the MQTT broker's ``$SYS`` figures
and the bridges' /metrics (the bridge window of each lane).

The bridges are those of ``GUARDSTREAM_LAG_BRIDGE_METRICS`` (URLs, comma-separated) and the
running local stack's (``stack.json``). A bridge that does not answer leaves its lanes out.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from guardstream.settings import Settings

from .path import BridgeWindow

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0
_FIGURES = {"guardstream_bridge_window_messages": "messages",
            "guardstream_bridge_window_capacity": "capacity",
            "guardstream_bridge_window_oldest_age_seconds": "oldest_age_s",
            "guardstream_bridge_producer_queue_messages": "producer_queue"}


def windows_from_metrics(text: str, source: str) -> list[BridgeWindow]:
    """The lanes' windows in a bridge's /metrics text; lanes without window and capacity left out."""
    lanes: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            figure = _FIGURES.get(sample.name)
            if figure and "lane" in sample.labels:
                lanes.setdefault(sample.labels["lane"], {})[figure] = sample.value
    return [BridgeWindow(source, lane, int(f["messages"]), int(f["capacity"]), f.get("oldest_age_s", 0.0),
                         int(f["producer_queue"]) if "producer_queue" in f else None)
            for lane, f in sorted(lanes.items()) if "messages" in f and "capacity" in f]


def metrics_url(url: str) -> str:
    """A component's base URL (``http://host:9400``) as its /metrics; a URL with a path is used as given."""
    return url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + "/metrics"


def bridge_urls(settings: Settings) -> list[str]:
    """The /metrics URLs of the configured bridges and of the running local stack's."""
    from guardstream.errors import GuardstreamError
    from guardstream.infra.ops.checks import stack_endpoints
    from guardstream.infra.ops.state_files import load_json
    from guardstream.local_stack import STACK_FILE, pid_alive
    urls = [metrics_url(u.strip()) for u in settings.lag_bridge_metrics.split(",") if u.strip()]
    try:
        stack = load_json(settings.state_dir / STACK_FILE)
    except GuardstreamError:
        stack = None  # an unreadable file of a stack long gone: no bridge from it
    urls += [url.removesuffix("/readyz") + "/metrics" for name, url in stack_endpoints(stack, pid_alive)
             if name.startswith("bridge")]
    return list(dict.fromkeys(urls))


def read_windows(urls: list[str], timeout_s: float = TIMEOUT_S) -> list[BridgeWindow]:
    windows: list[BridgeWindow] = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - operator's URL
                windows += windows_from_metrics(response.read().decode(), url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("bridge metrics %s: %s", url, exc)
    return windows


def read_broker_queued(settings: Settings, timeout_s: float = TIMEOUT_S) -> int | None:
    """Messages the MQTT broker holds (mosquitto's $SYS); None when it reports nothing in time."""
    from guardstream.connectors.broker_queue import read_once
    try:
        queue = read_once(settings, f"guardstream-lag-{os.getpid()}", timeout_s)
    except OSError as exc:
        log.warning("MQTT broker figures: %s", exc)
        return None
    return None if queue is None else queue.queued
