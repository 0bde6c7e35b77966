"""infra/compose.yml and the Dockerfile, checked statically (Docker does not run in CI)."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from guardstream.infra.components import COMPONENTS
from guardstream.settings import settings_vars

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "infra" / "compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if "build" in s}


def test_guardstream_services_are_built_from_the_dockerfile_at_the_root():
    assert set(OURS) >= {c.name for c in COMPONENTS} | {"setup"}
    for name, service in OURS.items():
        build = service["build"]
        assert (ROOT / "infra" / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile", name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    folders = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    assert {"guardstream", "connectors", "gateway", "infra", "notifier", "schemas", "sinks", "streams"} <= folders
    for folder in folders:
        assert f"COPY {folder} ./{folder}" in dockerfile  # every folder pyproject.toml maps to a package


def test_each_component_runs_its_own_command():
    for component in COMPONENTS:
        assert OURS[component.name]["command"] == list(component.command), component.name


@pytest.mark.parametrize("name", sorted(OURS))
def test_guardstream_services_set_only_real_settings(name):
    known = {v.env for v in settings_vars()}
    unknown = set(OURS[name].get("environment", {})) - known
    assert unknown == set(), f"{name}: {sorted(unknown)} are no guardstream settings"


def _published(service):
    """(host address, host port, protocol) of each published port."""
    out = []
    for spec in service.get("ports", []):
        text, protocol = (str(spec).split("/") + ["tcp"])[:2]
        parts = text.rsplit(":", 2)
        host_ip, host_port = ("0.0.0.0", parts[0]) if len(parts) == 2 else (parts[0], parts[1])
        assert len(parts) in (2, 3), f"publish host and container port explicitly: {spec}"
        out.append((host_ip, int(host_port), protocol))
    return out


def test_published_ports_do_not_clash():
    seen = {}
    for name, service in SERVICES.items():
        for _host_ip, port, protocol in _published(service):
            assert (port, protocol) not in seen, f"{name} and {seen[(port, protocol)]} both publish {port}"
            seen[(port, protocol)] = name
    assert {8765, 9090, 3000, 9092, 1883} <= {port for port, _ in seen}


def test_dependencies_name_services_and_the_files_mounted_exist():
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        assert set(depends) <= set(SERVICES), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / "infra" / source).exists(), f"{name}: {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name}: {source}"


def test_prometheus_in_compose_scrapes_every_component():
    config = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus-compose.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    port = {s["environment"]["GUARDSTREAM_METRICS_PORT"] for s in OURS.values()}
    assert port == {"9400"}
    assert targets == {f"{c.name}:9400" for c in COMPONENTS}
    assert "--config.file=/etc/prometheus/prometheus-compose.yml" in SERVICES["prometheus"]["command"]


def test_the_compose_broker_and_the_local_stack_share_the_bridge_s_broker_settings(tmp_path):
    from guardstream.infra.stack import MOSQUITTO_TUNING, mqtt_spec
    mosquitto = SERVICES["mosquitto"]
    config_dir = next(v.split(":")[0] for v in mosquitto["volumes"] if v.split(":")[1] == "/mosquitto/config")
    host_dir = (ROOT / "infra" / config_dir).resolve()
    main_conf = mosquitto["command"][-1].removeprefix("/mosquitto/config/")
    conf = (host_dir / main_conf).read_text()
    [included] = re.findall(r"^include_dir /mosquitto/config/(\S+)$", conf, re.M)
    assert (host_dir / included / MOSQUITTO_TUNING.name).resolve() == MOSQUITTO_TUNING
    assert re.search(r"^persistence true$", conf, re.M)
    tuning = MOSQUITTO_TUNING.read_text()
    assert re.search(r"^max_queued_messages 100000$", tuning, re.M)
    assert re.search(r"^set_tcp_nodelay true$", tuning, re.M)
    spec, broker = mqtt_spec(1883, tmp_path)
    if broker == "mosquitto":
        assert tuning in (tmp_path / "mosquitto.conf").read_text()
