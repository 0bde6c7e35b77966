"""The Prometheus files, checked and unit-tested with promtool (Debian's `prometheus` package)."""

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parents[2] / "infra" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install "
                                                         "prometheus; .ci/apt-packages lists it)")


def _promtool(*args):
    result = subprocess.run([PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-compose.yml"])
def test_configs_are_valid(config):
    assert "SUCCESS" in _promtool("check", "config", config)


def test_rules_are_valid():
    assert "SUCCESS: 15 rules found" in _promtool("check", "rules", "rules.yml")


def test_rules_unit_tests_pass():
    assert "SUCCESS" in _promtool("test", "rules", "rules_test.yml")


def test_every_alert_has_a_unit_test():
    import yaml
    alerts = {r["alert"] for g in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    assert alerts == tested
