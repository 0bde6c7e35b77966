import os
import signal
import subprocess
import sys

from guardstream.infra.stack import free_port, wait_until
from support.http import http_get


def _env(settings, **extra):
    base = {k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")}
    return {**base, "GUARDSTREAM_PROFILE": "embedded", "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            **extra}


def _lag(settings, *args):
    return subprocess.run([sys.executable, "-m", "guardstream.cli", "lag", *args], env=_env(settings),
                          capture_output=True, text=True, timeout=60)


def test_lag_prints_one_row_per_partition_tab_separated_when_piped(settings, make_topic, produce, commit, unique):
    topic, group = make_topic(partitions=2), f"cli-{unique}"
    produce(topic, 0, 0, 10)
    produce(topic, 0, 10, 7)
    commit(group, {(topic, 0): 4, (topic, 1): 0})
    result = _lag(settings, "--group", group)
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert header == ["group", "status", "topic", "partition", "committed", "end", "lag", "lag_s",
                      "partition_status", "window"]
    table = {tuple(row[2:4]): dict(zip(header, row)) for row in rows}
    assert set(table) == {(topic, "0"), (topic, "1")}
    first = table[(topic, "0")]
    assert (first["group"], first["status"], first["committed"], first["end"], first["lag"]) == \
        (group, "OK", "4", "17", "13")
    assert float(first["lag_s"]) > 0 and first["window"] == "1/10"
    assert (table[(topic, "1")]["lag"], table[(topic, "1")]["lag_s"]) == ("0", "0.0")


def test_lag_for_an_unknown_group_is_one_line(settings, unique):
    result = _lag(settings, "--group", f"nobody-{unique}")
    assert result.returncode == 1
    assert result.stderr.strip() == f"guardstream: unknown_group: no consumer group 'nobody-{unique}' on the cluster"



def test_lag_exporter_component_serves_metrics_and_stops_on_sigterm(settings, make_topic, produce, commit, unique):
    topic, group = make_topic(), f"component-{unique}"
    produce(topic, 0, 0, 3)
    commit(group, {(topic, 0): 1})
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "guardstream.cli", "lag-exporter"],
                               env=_env(settings, GUARDSTREAM_METRICS_PORT=str(port)),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(base + "/readyz")[0] == 200, 30, "lag exporter")
        body = http_get(base + "/metrics")[1]
        assert f'kafka_consumergroup_lag{{consumergroup="{group}",partition="0",topic="{topic}"}} 2.0' in body
        assert 'guardstream_component_info{component="lag-exporter"' in body
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
