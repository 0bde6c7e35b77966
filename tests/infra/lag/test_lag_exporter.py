
import pytest
from confluent_kafka.admin import AdminClient

from guardstream.infra.lag.collect import LagCollector
from guardstream.infra.lag.exporter import LagExporter, collection_interval_s
from guardstream.infra.lag.metrics import LagMetrics
from guardstream.kafka import admin_config
from guardstream.observability import serve
from guardstream.settings import Settings
from support.http import http_get



@pytest.fixture
def served(settings, clock):
    def start(settings=settings, timeout_s=10.0):
        collector = LagCollector(settings, window_size=3, clock=clock, timeout_s=timeout_s)
        metrics = LagMetrics.create(clock)
        exporter = LagExporter(collector, metrics, interval_s=1.0)
        endpoints = serve(metrics.registry, exporter.ready, "127.0.0.1", 0)
        started.append((collector, endpoints))
        return exporter, f"http://127.0.0.1:{endpoints.port}"
    started = []
    yield start
    for collector, endpoints in started:
        endpoints.close()
        collector.close()


def _series(body, name, **labels):
    """Values of the series `name` whose labels include `labels`."""
    out = []
    for line in body.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            out.append(float(line.rsplit(" ", 1)[1]))
    return out


def test_metrics_come_from_the_last_snapshot_and_vanish_with_their_group_or_topic(
        settings, served, make_topic, produce, commit, unique):
    kept, dropped = make_topic(name="kept"), make_topic(name="dropped")
    produce(kept, 0, 0, 10)
    produce(kept, 0, 10, 7)
    produce(dropped, 0, 0, 2)
    commit(f"kept-{unique}", {(kept, 0): 4})
    commit(f"gone-{unique}", {(kept, 0): 1})
    commit(f"on-dropped-{unique}", {(dropped, 0): 1})
    exporter, base = served()
    assert http_get(base + "/readyz")[0] == 503
    assert exporter.run_cycle()
    assert http_get(base + "/readyz") == (200, "ready\n")

    body = http_get(base + "/metrics")[1]
    group = f"kept-{unique}"
    assert _series(body, "kafka_consumergroup_lag", consumergroup=group, topic=kept, partition=0) == [13]
    assert _series(body, "kafka_consumergroup_lag_sum", consumergroup=group, topic=kept) == [13]
    assert _series(body, "kafka_consumergroup_current_offset", consumergroup=group, topic=kept) == [4]
    assert _series(body, "kafka_consumergroup_lag_seconds", consumergroup=group, topic=kept) == [96]
    assert _series(body, "kafka_topic_partition_current_offset", topic=kept, partition=0) == [17]
    assert _series(body, "kafka_topic_partition_oldest_offset", topic=kept, partition=0) == [0]
    assert _series(body, "guardstream_consumergroup_status", consumergroup=group, status="OK") == [1]
    assert _series(body, "guardstream_consumergroup_status", consumergroup=group, status="STOP") == [0]
    assert _series(body, "kafka_consumergroup_lag", consumergroup=f"gone-{unique}") == [16]
    assert _series(body, "kafka_topic_partition_current_offset", topic=dropped) == [2]

    admin = AdminClient(admin_config(settings))
    admin.delete_consumer_groups([f"gone-{unique}"])[f"gone-{unique}"].result()
    admin.delete_topics([dropped])[dropped].result()
    assert exporter.run_cycle()
    body = http_get(base + "/metrics")[1]
    assert _series(body, "kafka_consumergroup_lag", consumergroup=group) == [13]
    assert f"gone-{unique}" not in body
    assert f"on-dropped-{unique}" not in body and dropped not in body
    assert _series(body, "guardstream_lag_collect_duration_seconds_count") == [2]
    assert _series(body, "guardstream_lag_snapshot_age_seconds") == [0]  # the test's clock stands still


def test_an_unreachable_cluster_is_counted_and_leaves_the_exporter_unready(settings, served):
    exporter, base = served(settings.replace(kafka_bootstrap_servers="127.0.0.1:1"), timeout_s=1.0)
    assert not exporter.run_cycle()
    assert http_get(base + "/readyz")[0] == 503
    body = http_get(base + "/metrics")[1]
    assert _series(body, "guardstream_lag_collect_errors_total", reason="unavailable") == [1]
    assert "kafka_consumergroup_lag" not in body


@pytest.mark.parametrize("env, expected", [
    ({}, 10.0),
    ({"GUARDSTREAM_PROFILE": "embedded"}, 2.0),
    ({"GUARDSTREAM_PROFILE": "embedded", "GUARDSTREAM_LAG_INTERVAL_S": "0.5"}, 0.5),
])
def test_collection_interval_follows_the_profile_unless_set(env, expected):
    assert collection_interval_s(Settings.from_env(env)) == expected
