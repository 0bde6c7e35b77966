"""`guardstream up`, stop, `up` again: what the user keeps (PostgreSQL's rows, the fences, so violations
are still raised, and who is inside which fence, so exits are still seen) although the embedded Kafka
starts empty."""

import json
import os
import re
import shlex
import signal
import time
from pathlib import Path

import psycopg
import pytest

from guardstream.infra.stack import wait_until
from guardstream.settings import Settings

from support.fences import SQUARE
from support.processes import publisher
from support.up_runs import clean_env, ctrl_c, second_shell, start_up, wait_banner

pytestmark = pytest.mark.slow

INSIDE = (52.521, 13.405)  # in support.fences.SQUARE
FAR_OUT = (52.600, 13.600)


def _stack_settings(cwd) -> Settings:
    """The running stack's settings, as a second shell gets them from `guardstream env`."""
    exports = second_shell(["env"], cwd)
    assert exports.returncode == 0, exports.stderr
    env = dict(shlex.split(line)[1].split("=", 1) for line in exports.stdout.splitlines()
               if line.startswith("export "))
    return Settings.from_env(env)


def _count(settings: Settings, query: str, *args) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(query, args).fetchone()[0]


def _publish_fix(settings: Settings, device: str, tenant: str, at: tuple[float, float]) -> None:
    client = publisher(settings, f"pub-{device}")
    try:
        payload = {"ts": int(time.time()), "lat": at[0], "lon": at[1], "accuracy_m": 4, "tenant": tenant}
        client.publish(f"guard/{device}/gps", json.dumps(payload).encode(), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_restart_keeps_the_rows_the_fences_and_the_registry_and_violations_are_still_raised(tmp_path):
    tenant = "acme"
    fences = tmp_path / "fences.geojson"
    fences.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "hq", "name": "HQ", "kind": "site", "tenant": tenant},
         "geometry": {"type": "Polygon", "coordinates": [SQUARE]}}]}))
    fence_rows = "SELECT count(*) FROM geofences WHERE fence_id = 'hq' AND NOT deleted"
    fleet = tmp_path / "fleet.csv"
    fleet.write_text("device_id,tenant,kind,site_id,enabled\nguard-07,acme,guard,acme-hq,true\n")
    positions = "SELECT count(*) FROM guard_positions WHERE device_id = %s"

    process, lines = start_up(clean_env(), tmp_path)
    try:
        wait_banner(process, lines)
        settings = _stack_settings(tmp_path)
        imported = second_shell(["fences", "import", str(fences)], tmp_path)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        wait_until(lambda: _count(settings, fence_rows) == 1, 30, "the fence in PostgreSQL")
        _publish_fix(settings, "g-before", tenant, INSIDE)
        wait_until(lambda: _count(settings, positions, "g-before") == 1, 30, "the first position in PostgreSQL")
        registered = second_shell(["devices", "import", str(fleet)], tmp_path)
        assert registered.returncode == 0, registered.stdout + registered.stderr
        wait_until(lambda: _count(settings, "SELECT count(*) FROM devices WHERE device_id = 'guard-07'") == 1,
                   30, "the device in PostgreSQL")
    finally:
        ctrl_c(process, lines)
    assert "geofences: restored" not in "".join(lines)  # nothing to restore on the first start

    process, lines = start_up(clean_env(), tmp_path)
    try:
        wait_banner(process, lines)
        assert "geofences: restored 1 from PostgreSQL" in "".join(lines)
        assert "devices: restored 1 from PostgreSQL" in "".join(lines)
        assert "worker state: restored who is inside which fence for 1 device(s)" in "".join(lines)
        devices = second_shell(["devices", "list"], tmp_path)
        assert devices.returncode == 0 and "guard-07" in devices.stdout, devices.stdout + devices.stderr
        settings = _stack_settings(tmp_path)
        assert _count(settings, fence_rows) == 1
        assert _count(settings, positions, "g-before") == 1
        listed = second_shell(["fences", "list"], tmp_path)
        assert listed.returncode == 0 and "hq" in listed.stdout, listed.stdout + listed.stderr
        # a guard outside every site of its tenant: the worker knows the fence again
        _publish_fix(settings, "g-after", tenant, FAR_OUT)
        wait_until(lambda: _count(settings, "SELECT count(*) FROM device_alerts WHERE device_id = %s "
                                            "AND kind = 'GEOFENCE_VIOLATION'", "g-after") == 1,
                   30, "a violation for the guard outside")
        # the guard inside the site before the restart leaves it: the worker's state came back from
        # PostgreSQL, so it knows the guard was inside and raises the EXIT
        _publish_fix(settings, "g-before", tenant, FAR_OUT)
        wait_until(lambda: _count(settings, "SELECT count(*) FROM geofence_events WHERE device_id = %s "
                                            "AND transition = 'EXIT' AND fence_id = 'hq'", "g-before") == 1,
                   30, "the EXIT of the guard inside before the restart")
    finally:
        ctrl_c(process, lines)


def _broker_pid(up_pid: int) -> int:
    """The embedded tansu among the children of `up`."""
    for child in (Path("/proc") / str(up_pid) / "task").glob("*/children"):
        for pid in child.read_text().split():
            if "tansu" in (Path("/proc") / pid / "cmdline").read_bytes().decode(errors="replace"):
                return int(pid)
    raise AssertionError("no tansu child of up")


def test_a_killed_broker_comes_back_with_the_topics_and_the_fences(tmp_path):
    """kill -9 of the embedded broker: the supervisor starts it again, empty; up applies the topics
    and writes the fences back from PostgreSQL, then restarts the components against it."""
    fences = tmp_path / "fences.geojson"
    fences.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "depot", "name": "Depot", "kind": "site", "tenant": "acme"},
         "geometry": {"type": "Polygon", "coordinates": [SQUARE]}}]}))
    process, lines = start_up(clean_env(), tmp_path)
    try:
        wait_banner(process, lines)
        settings = _stack_settings(tmp_path)
        imported = second_shell(["fences", "import", str(fences)], tmp_path)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        wait_until(lambda: _count(settings, "SELECT count(*) FROM geofences WHERE fence_id = 'depot'") == 1,
                   30, "the fence in PostgreSQL")
        before = len(lines)
        os.kill(_broker_pid(process.pid), signal.SIGKILL)
        wait_until(lambda: any("restarting the components" in line for line in lines[before:]), 60,
                   "the broker refilled")
        after = "".join(lines[before:])
        assert re.search(r"topics: [1-9]\d* change\(s\) after the broker's restart", after), after
        assert "geofences: restored 1 from PostgreSQL" in after, after
        listed = second_shell(["fences", "list"], tmp_path)
        assert listed.returncode == 0 and "depot" in listed.stdout, listed.stdout + listed.stderr
        health = second_shell(["health"], tmp_path).stdout
        assert "every catalog topic present" in health, health
        # the components, started again once the fences were back, raise violations as before
        wait_until(lambda: second_shell(["health"], tmp_path).returncode == 0, 60, "the components ready again")
        _publish_fix(settings, "g-killed", "acme", FAR_OUT)
        wait_until(lambda: _count(settings, "SELECT count(*) FROM device_alerts WHERE device_id = %s "
                                            "AND kind = 'GEOFENCE_VIOLATION'", "g-killed") == 1,
                   60, "a violation after the broker's death")
    finally:
        ctrl_c(process, lines)
