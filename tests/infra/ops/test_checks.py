import pytest

from guardstream.infra.ops.checks import (CheckResult, component_checks, exit_code, line, parse_endpoints,
                                          readyz_url, stack_endpoints)


def test_exit_code_is_zero_only_when_every_check_passed():
    ok, bad = CheckResult("a", True, "", 0.01), CheckResult("b", False, "", 0.01)
    assert exit_code([ok, ok]) == 0
    assert exit_code([ok, bad]) == 1
    assert exit_code([]) == 1


def test_one_line_per_check():
    result = CheckResult("kafka", False, "unreachable:\n  refused", 0.0123)
    assert line(result, 8) == "FAIL kafka    unreachable: refused (12 ms)"


@pytest.mark.parametrize("url, readyz", [("http://h:9400", "http://h:9400/readyz"),
                                         ("http://h:9400/", "http://h:9400/readyz"),
                                         ("https://lb/bridge/readyz", "https://lb/bridge/readyz")])
def test_readyz_urls(url, readyz):
    assert readyz_url(url) == readyz


def test_endpoints_setting_and_the_stack_file_combine_configured_first():
    configured = parse_endpoints("bridge=http://b:1, gateway=http://g:2/readyz")
    doc = {"pid": 42, "metrics_host": "0.0.0.0", "metrics_ports": {"bridge": 9400, "sink": 9401, "x": 0}}
    from_stack = stack_endpoints(doc, alive=lambda pid: pid == 42)
    assert from_stack == [("bridge", "http://127.0.0.1:9400/readyz"), ("sink", "http://127.0.0.1:9401/readyz")]
    assert component_checks(configured, from_stack) == [
        ("bridge", "http://b:1/readyz"), ("gateway", "http://g:2/readyz"), ("sink", "http://127.0.0.1:9401/readyz")]


@pytest.mark.parametrize("doc", [None, {}, {"pid": "42"}, {"pid": 7, "metrics_ports": {"a": 1}}])
def test_a_missing_or_stale_stack_file_adds_nothing(doc):
    assert stack_endpoints(doc, alive=lambda pid: pid == 42) == []
