"""Every metric a dashboard or an alert queries is one the code exports.

The exported names come from the components' own metrics modules (their registries, collected),
with the sample names Prometheus sees (``_total``, ``_bucket``, ``_sum``, ``_count``), and from the
lag exporter's ``kafka_*`` families.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
DASHBOARDS = sorted((INFRA / "grafana" / "dashboards").glob("*.json"))

# series Prometheus itself makes, not any exporter's
BUILT_INS = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped",
             "scrape_samples_post_metric_relabeling", "scrape_series_added"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "inf", "nan", "Inf", "NaN"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
            "gauge": ("",), "info": ("_info",), "unknown": ("",)}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label names, functions and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # ranges, subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name, rest = match.group(), text[match.end():].lstrip()
        if name in KEYWORDS or rest.startswith("("):
            continue
        if match.start() and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # the exponent or unit of a number (1e3, 5m)
        names.add(name)
    return names


@pytest.mark.parametrize("expr, names", [
    ('sum by (le, kind) (rate(guardstream_x_bucket{kind=~"a|b"}[5m])) > 0.5', {"guardstream_x_bucket"}),
    ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[$__rate_interval])))", {"a_bucket"}),
    ('up{job=~"guardstream.*"} == 0 and on (instance) b', {"up", "b"}),
    ('max by (consumergroup) (kafka_consumergroup_lag_seconds{topic="events.critical"}) > 30',
     {"kafka_consumergroup_lag_seconds"}),
    ("a - b offset 5m", {"a", "b"}),
])
def test_metric_names_are_found_in_promql(expr, names):
    assert metric_names(expr) == names


def exported_names() -> set[str]:
    from guardstream.connectors.metrics import BridgeMetrics, CommandMetrics
    from guardstream.gateway.metrics import GatewayMetrics
    from guardstream.infra.lag.burrow import Status
    from guardstream.infra.lag.metrics import LagMetrics
    from guardstream.notifier.metrics import NotifierMetrics
    from guardstream.infra.lag.snapshot import PartitionLag, Snapshot
    from guardstream.sinks.metrics import SinkMetrics
    from guardstream.streams.metrics import WorkerMetrics
    lag = LagMetrics.create(lambda: 100.0)
    # a snapshot with one row, so every lag family (the age one too) shows up in a collection
    row = PartitionLag("g", "t", 0, 1, 5, 4, 2.0, Status.OK, 1)
    lag.snapshot.publish(Snapshot(90.0, 10, {("t", 0): (0, 5)}, (row,), {"g": Status.OK}))
    from guardstream.connectors.broker_queue import BrokerQueue, queue_families
    bridge = BridgeMetrics.create()
    # the MQTT broker's figures, registered on the bridge's registry once mosquitto reports them
    bridge.registry.register(_Families(queue_families(BrokerQueue(5, 1, 0, 1.0, 1.0, 90.0), 100.0)))
    registries = [bridge.registry, CommandMetrics.create().registry, WorkerMetrics.create().registry,
                  SinkMetrics.create().registry, GatewayMetrics.create().registry, NotifierMetrics.create().registry,
                  lag.registry]
    names = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
            names.update(sample.name for sample in family.samples)
    return names


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return iter(self.families)


def _dashboard_exprs():
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        panels = list(doc["panels"])
        for panel in panels:
            panels.extend(panel.get("panels", []))  # panels inside collapsed rows
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']}", target["expr"]
        for variable in doc.get("templating", {}).get("list", []):
            query = variable.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            if variable.get("type") == "query" and query:
                inner = re.match(r"label_values\((.*),\s*\w+\)$", query)
                yield f"{path.name}: ${variable['name']}", inner[1] if inner else query


def _rule_exprs():
    doc = yaml.safe_load((INFRA / "prometheus" / "rules.yml").read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            yield f"rules.yml: {rule.get('alert') or rule.get('record')}", rule["expr"]


def test_the_dashboards_are_provisioned():
    assert {p.name for p in DASHBOARDS} == {"pipeline-overview.json", "lag.json", "bridge.json", "sink.json",
                                            "gateway.json"}
    provider = yaml.safe_load((INFRA / "grafana" / "provisioning" / "dashboards" / "guardstream.yml").read_text())
    datasource = yaml.safe_load((INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    uid = datasource["datasources"][0]["uid"]
    uids = set()
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        uids.add(doc["uid"])
        for panel in doc["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == uid, f"{path.name}: {panel['title']}"
                assert panel["targets"], f"{path.name}: {panel['title']} queries nothing"
    assert len(uids) == len(DASHBOARDS)


def test_every_queried_metric_is_exported():
    exported = exported_names()
    assert {"kafka_consumergroup_lag", "guardstream_bridge_received_total", "guardstream_worker_latency_seconds_bucket",
            "guardstream_gateway_messages_dropped_total", "guardstream_sink_circuit_state"} <= exported
    missing = []
    for where, expr in [*_dashboard_exprs(), *_rule_exprs()]:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        missing += [f"{where}: {name}" for name in sorted(names - exported - BUILT_INS)]
    assert missing == []
