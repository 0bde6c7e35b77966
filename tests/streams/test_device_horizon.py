"""The silent-device check forgets devices past the horizon, so its state stays bounded."""

import pytest

from guardstream.errors import ConfigError
from guardstream.streams.rules import default_rules, forgotten_devices, silent_check, silent_devices
from guardstream.streams.worker import check_horizon

NOW = 1_795_000_000_000
MIN = 60_000
HORIZON = 24 * 60 * MIN


@pytest.mark.parametrize(("silent_for_ms", "registered", "forgotten"), [
    (0, False, False),
    (HORIZON - 1, False, False),
    (HORIZON, False, True),
    (10 * HORIZON, False, True),
    (10 * HORIZON, True, False),  # the registry's devices are watched however long they are silent
])
def test_devices_past_the_horizon_are_forgotten_unless_registered(silent_for_ms, registered, forgotten):
    last_seen = {"d": ("acme", NOW - silent_for_ms)}
    assert forgotten_devices(last_seen, NOW, HORIZON, {"d"} if registered else ()) == (["d"] if forgotten else [])


def test_a_million_one_off_ids_leave_nothing_behind_after_the_horizon():
    last_seen = {f"spoof-{i}": ("acme", NOW - HORIZON - i) for i in range(1_000_000)}
    last_seen["real"] = ("acme", NOW - 20 * MIN)
    for device in forgotten_devices(last_seen, NOW, HORIZON):
        del last_seen[device]
    assert list(last_seen) == ["real"]
    [alert] = silent_devices(last_seen, NOW, {}, default_rules())
    assert alert["device_id"] == "real" and alert["kind"] == "DEVICE_SILENT"


def test_the_horizon_must_exceed_the_silence_that_alerts():
    after_s = default_rules().device_silent.after_ms // 1000
    assert check_horizon(after_s + 1, default_rules()) == (after_s + 1) * 1000
    with pytest.raises(ConfigError) as refused:
        check_horizon(after_s, default_rules())
    assert refused.value.setting == "GUARDSTREAM_WORKER_DEVICE_HORIZON_S"


SILENT = default_rules().device_silent.after_ms


@pytest.mark.parametrize(("seen_ms_ago", "registered", "alerted_for", "forgotten", "alerted"), [
    (0, False, None, False, False),  # heard just now
    (SILENT - 1, False, None, False, False),  # not silent yet
    (SILENT, False, None, False, True),  # silent: one alert
    (SILENT, False, "same", False, False),  # already alerted for this silence
    (SILENT, False, "earlier", False, True),  # heard since the last alert, silent again
    (HORIZON, False, None, True, False),  # past the horizon: forgotten, never alerted
    (HORIZON, False, "same", True, False),  # forgotten with its mark
    (HORIZON, True, None, False, True),  # the registry's devices: watched however long they are silent
    (HORIZON, True, "same", False, False),
])
def test_the_silent_check_forgets_then_alerts(seen_ms_ago, registered, alerted_for, forgotten, alerted):
    last_ms = NOW - seen_ms_ago
    marks = {"d": {"same": last_ms, "earlier": last_ms - MIN}[alerted_for]} if alerted_for else {}
    last_seen = {"d": ("acme", last_ms), "fresh": ("acme", NOW)}
    check = silent_check(last_seen, NOW, marks, HORIZON, {"d"} if registered else (), default_rules())
    assert check.forgotten == (["d"] if forgotten else [])
    assert [a["device_id"] for a in check.alerts] == (["d"] if alerted else [])
    assert check.alerted == ({"d": last_ms} if alerted else {})
    assert all(a["kind"] == "DEVICE_SILENT" and a["tenant"] == "acme" for a in check.alerts)
    assert last_seen["d"] == ("acme", last_ms) and marks == ({"d": marks["d"]} if alerted_for else {})  # pure
