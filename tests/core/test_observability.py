import errno
import os
import socket

import pytest
from prometheus_client import Counter

from guardstream.errors import ConfigError
from guardstream.observability import cannot_listen, new_registry, serve
from support.http import http_get



def test_endpoints_serve_metrics_health_and_readiness():
    registry = new_registry("test")
    Counter("guardstream_test_things_total", "Things.", ["reason"], registry=registry).labels("x").inc(3)
    state = {"ready": (False, "kafka not connected")}
    endpoints = serve(registry, lambda: state["ready"], "127.0.0.1", 0)
    base = f"http://127.0.0.1:{endpoints.port}"
    try:
        status, body = http_get(base + "/metrics")
        assert status == 200
        assert 'guardstream_test_things_total{reason="x"} 3.0' in body
        assert 'guardstream_component_info{component="test"' in body
        assert http_get(base + "/healthz") == (200, "ok\n")
        assert http_get(base + "/readyz") == (503, "not ready: kafka not connected\n")
        state["ready"] = (True, "")
        assert http_get(base + "/readyz") == (200, "ready\n")
        assert http_get(base + "/nope")[0] == 404
    finally:
        endpoints.close()


def test_all_ready_names_the_first_part_that_is_not():
    from guardstream.observability import all_ready
    check = all_ready({"alerts lane": lambda: (True, ""), "bulk lane": lambda: (False, "no partitions")})
    assert check() == (False, "bulk lane: no partitions")
    assert all_ready({"a": lambda: (True, "")})() == (True, "")


def test_a_taken_port_is_one_bad_setting_naming_the_port_variable():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as refused:
            serve(new_registry("test"), lambda: (True, ""), "127.0.0.1", port)
    assert refused.value.setting == "GUARDSTREAM_METRICS_PORT"
    assert f"127.0.0.1:{port} is already in use" in str(refused.value)


@pytest.mark.parametrize("errno_, setting, reason", [
    (errno.EADDRINUSE, "GUARDSTREAM_GATEWAY_PORT", "bad_setting"),
    (errno.EACCES, "GUARDSTREAM_GATEWAY_PORT", "bad_setting"),
    (errno.EADDRNOTAVAIL, "GUARDSTREAM_GATEWAY_HOST", "bad_setting"),
    (errno.EMFILE, None, "cannot_listen"),
])
def test_why_a_server_cannot_listen(errno_, setting, reason):
    error = cannot_listen(OSError(errno_, os.strerror(errno_)), "10.9.8.7", 8765,
                          "GUARDSTREAM_GATEWAY_HOST", "GUARDSTREAM_GATEWAY_PORT")
    assert error.reason == reason
    assert getattr(error, "setting", None) == setting


def test_a_host_name_that_does_not_resolve_names_the_host_variable():
    error = cannot_listen(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "no-such-host", 9400,
                          "GUARDSTREAM_METRICS_HOST", "GUARDSTREAM_METRICS_PORT")
    assert isinstance(error, ConfigError) and error.setting == "GUARDSTREAM_METRICS_HOST"
