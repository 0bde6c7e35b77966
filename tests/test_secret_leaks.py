"""No secret in any output: every component runs with passwords in MQTT_URL and DATABASE_URL
and a JWT secret (the test servers accept or ignore the passwords, so the components really
work), at debug level, and neither their logs nor ``guardstream settings`` show any of them."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

from guardstream.infra.migrate import migrate
from guardstream.infra.stack import free_port

from support.processes import collect, publisher


def _with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def test_no_component_log_and_no_settings_output_shows_a_secret(applied, database_url, run_component, unique,
                                                                  tmp_path):
    secrets = {"mqtt": f"mqtt-pw-{unique}", "database": f"db-pw-{unique}",
               "jwt": f"jwt-secret-{unique}-0123456789abcdef-0123456789"}
    migrate(database_url)
    settings = applied.replace(mqtt_url=_with_password(applied.mqtt_url, "bridge", secrets["mqtt"]),
                               database_url=_with_password(database_url, "postgres", secrets["database"]))
    env = {"GUARDSTREAM_LOG_LEVEL": "debug", "GUARDSTREAM_JWT_SECRET": secrets["jwt"],
           "GUARDSTREAM_STATE_DIR": str(tmp_path / "state")}
    components = [
        run_component(["bridge"], settings, GUARDSTREAM_BRIDGE_ID=f"b-{unique}",
                      GUARDSTREAM_BRIDGE_SHARED_GROUP=f"g-{unique}", **env),
        run_component(["commands"], settings, **env),
        run_component(["worker"], settings, **env),
        run_component(["sink"], settings, GUARDSTREAM_SINK_GROUP=f"sink-{unique}", **env),
        run_component(["gateway"], settings, GUARDSTREAM_GATEWAY_PORT=str(free_port()),
                      GUARDSTREAM_GATEWAY_ORIGINS="https://ops.example.com", **env),
        run_component(["lag-exporter"], settings, **env),
    ]
    # some traffic through the bridge, so its message path logs too
    pub = publisher(applied, f"pub-{unique}")
    pub.publish(f"device/d-{unique}/telemetry", b'{"battery_pct": 50}', qos=1).wait_for_publish(10)
    pub.publish(f"sensor/bad id {unique}/door", b"{}", qos=1).wait_for_publish(10)
    assert collect(applied, "dlq.bridge", lambda r: unique.encode() in dict(r.headers() or ()).get(
        "mqtt.topic", b""), 1)
    pub.loop_stop()
    for component in components:
        component.stop()

    child_env = {**{k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")},
                 **settings.as_env(), **env}
    shown = subprocess.run([sys.executable, "-m", "guardstream.cli", "settings"], env=child_env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "MQTT_URL" in shown.stdout and "DATABASE_URL" in shown.stdout
    outputs = {"settings": shown.stdout + shown.stderr} | {c.log.name: c.output() for c in components}
    # the URLs are there, masked: what is checked is what is shown
    assert "bridge:***@" in shown.stdout and "postgres:***@" in shown.stdout
    assert "bridge:***@" in components[0].output()
    leaks = {(name, which) for name, text in outputs.items() for which, secret in secrets.items() if secret in text}
    assert leaks == set()
