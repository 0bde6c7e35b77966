
from prometheus_client import Counter

from guardstream.observability import new_registry, serve
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
