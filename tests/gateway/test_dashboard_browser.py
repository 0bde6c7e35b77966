"""The dashboard in headless Chromium (Debian's, driven by Playwright): alerts appear, Acknowledge works.

1. A DeviceAlert produced to events.critical shows in the page's alert list; clicking
   Acknowledge writes an AlertAction to alerts.actions and the page shows ACKNOWLEDGED.
2. The whole way: an MQTT panic publish goes bridge -> worker -> events.critical -> gateway
   -> page; Acknowledge in the page goes gateway -> alerts.actions -> sink, and the alert's
   row in PostgreSQL reads ACKNOWLEDGED.
3. Three alerts survive a reload (the snapshot on subscribe); an acknowledgement on a second
   screen reaches the first, and a reload still shows who acknowledged.
4. An alert's Notifications panel shows what a real notifier sent, to whom and when.
5. The link in a notifier's email (`#alert=<id>`) opens the page on that alert, its panel open.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from gateway_support import CODEC, alert, position, produce, start_gateway, token
from support.notify import Alerts, HttpReceiver, MailBox, Notifier, start_group_at_end
from support.processes import collect, publisher

from guardstream.catalog import TOPICS
from guardstream.infra.migrate import migrate
from guardstream.infra.stack import wait_until

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                 "(apt-get install chromium chromium-driver; see .ci/apt-packages)")]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], errors


def open_dashboard(page, gateway, tenant: str) -> None:
    page.goto(f"{gateway.http_url}/?token={token(sub='op-web', tenants=[tenant], roles=['operator'])}")
    page.wait_for_selector("#connection[data-state='live']", timeout=WAIT_MS)


def test_an_alert_appears_and_acknowledge_reaches_kafka_and_the_page(page, gateway, applied, unique) -> None:
    from playwright.sync_api import expect

    tenant = f"web{unique}"
    open_dashboard(page, gateway, tenant)
    raised = alert(tenant, "g-9")
    produce(applied, TOPICS.events_critical.name, "guardstream.DeviceAlert", [raised])
    produce(applied, TOPICS.events_high.name, "guardstream.GuardPosition", [position(tenant, "g-9", 1)])
    item = page.locator(f"#alerts li[data-alert-id='{raised['event_id']}']")
    expect(item).to_be_visible(timeout=WAIT_MS)
    expect(item.locator(".status")).to_have_text("NEW")
    expect(page.locator("#guards g.guard")).to_have_count(1, timeout=WAIT_MS)

    item.locator("button.ack").click()

    records = collect(applied, TOPICS.alerts_actions.name, lambda r: r.key() == raised["event_id"].encode(), 1, 30)
    assert records, "no AlertAction on alerts.actions"
    schema, action = CODEC.decode(records[0].value())
    assert (schema, action["action"], action["tenant"], action["actor"]) == (
        "guardstream.AlertAction", "ACKNOWLEDGE", tenant, "op-web")
    expect(item.locator(".status")).to_have_text("ACKNOWLEDGED", timeout=WAIT_MS)


def guard_fixes(database_url: str, tenant: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM guard_positions WHERE tenant = %s", (tenant,)).fetchone()[0]


def alert_status(database_url: str, alert_id: str) -> str | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status FROM device_alerts WHERE event_id = %s", (alert_id,)).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("engine", ["batch", "faust"])  # the worker's engines (streams/worker.py, faust_engine.py)
def test_mqtt_panic_to_dashboard_acknowledge_to_postgresql(page, gateway, applied, run_component, database_url,
                                                           unique, engine) -> None:
    from playwright.sync_api import expect

    tenant, device = f"e2e{unique}", f"guard-{unique}"
    migrate(database_url)
    settings = applied.replace(database_url=database_url)
    run_component(["bridge"], settings, GUARDSTREAM_BRIDGE_ID=f"b-{unique}",
                  GUARDSTREAM_BRIDGE_SHARED_GROUP=f"g-{unique}")
    run_component(["worker"], settings, GUARDSTREAM_WORKER_ENGINE=engine)
    run_component(["sink"], settings, GUARDSTREAM_SINK_GROUP=f"sink-{unique}")
    open_dashboard(page, gateway, tenant)

    mqtt = publisher(applied, f"pub-{unique}")
    payload = {"ts": time.time_ns() // 1_000_000, "latitude": 52.5201, "longitude": 13.4049,
               "message": "panic button", "tenant": tenant}
    mqtt.publish(f"alert/panic/{device}", json.dumps(payload).encode(), qos=1).wait_for_publish(10)

    item = page.locator(f"#alerts li[data-tenant='{tenant}']")
    expect(item).to_be_visible(timeout=60_000)
    alert_id = item.get_attribute("data-alert-id")
    wait_until(lambda: alert_status(database_url, alert_id) == "NEW", 60, "the alert's row")

    item.locator("button.ack").click()

    expect(item.locator(".status")).to_have_text("ACKNOWLEDGED", timeout=WAIT_MS)
    wait_until(lambda: alert_status(database_url, alert_id) == "ACKNOWLEDGED", 60, "the row acknowledged")
    mqtt.loop_stop()
    mqtt.disconnect()


def test_a_reload_keeps_the_open_alerts_and_a_second_screen_acknowledges(page, browser, applied, run_component,
                                                                       database_url, unique, tmp_path) -> None:
    """Three alerts survive a reload (from the snapshot); one acknowledged on a second screen
    changes on the first, and after another reload the page still says who acknowledged."""
    from playwright.sync_api import expect

    tenant = f"reload{unique}"
    migrate(database_url)
    run_component(["sink"], applied.replace(database_url=database_url), GUARDSTREAM_SINK_GROUP=f"sink-{unique}")
    gateway = start_gateway(applied, tmp_path / "gateway.log", DATABASE_URL=database_url)
    try:
        base = int(time.time() * 1000) - 10_000
        alerts = [alert(tenant, f"guard-{n}") | {"ts_ms": base + n * 1000} for n in range(3)]
        produce(applied, TOPICS.events_critical.name, "guardstream.DeviceAlert", alerts)
        wait_until(lambda: all(alert_status(database_url, a["event_id"]) == "NEW" for a in alerts), 60,
                   "the three alerts in PostgreSQL")
        items = page.locator(f"#alerts li[data-tenant='{tenant}']")
        open_dashboard(page, gateway, tenant)
        expect(items).to_have_count(3, timeout=WAIT_MS)
        page.reload()
        page.wait_for_selector("#connection[data-state='live']", timeout=WAIT_MS)
        expect(items).to_have_count(3, timeout=WAIT_MS)
        # panics stand apart, newest first
        expect(page.locator(f"#alerts li.life-safety[data-tenant='{tenant}']")).to_have_count(3)
        assert items.evaluate_all("els => els.map(e => e.dataset.alertId)") == [a["event_id"] for a in alerts[::-1]]

        second = browser.new_context()
        try:
            other = second.new_page()
            open_dashboard(other, gateway, tenant)
            target = alerts[1]["event_id"]
            other.locator(f"#alerts li[data-alert-id='{target}'] button.ack").click()
            first_item = page.locator(f"#alerts li[data-alert-id='{target}']")
            expect(first_item.locator(".status")).to_have_text("ACKNOWLEDGED", timeout=WAIT_MS)
        finally:
            second.close()
        wait_until(lambda: alert_status(database_url, target) == "ACKNOWLEDGED", 60, "the acknowledgement's row")
        page.reload()
        page.wait_for_selector("#connection[data-state='live']", timeout=WAIT_MS)
        expect(items).to_have_count(3, timeout=WAIT_MS)
        expect(first_item.locator(".status")).to_have_text("ACKNOWLEDGED", timeout=WAIT_MS)
        expect(first_item.locator(".who")).to_contain_text("by op-web", timeout=WAIT_MS)

        # a guard known only from the snapshot is on the map; a click draws its last hour
        fixes = [position(tenant, "guard-0", n) for n in range(5)]
        produce(applied, TOPICS.events_high.name, "guardstream.GuardPosition", fixes)
        wait_until(lambda: guard_fixes(database_url, tenant) == 5, 60, "the fixes in PostgreSQL")
        page.reload()
        page.wait_for_selector("#connection[data-state='live']", timeout=WAIT_MS)
        page.locator("#guards g[data-guard='guard-0']").click()
        expect(page.locator("#track polyline")).to_have_count(1, timeout=WAIT_MS)
        assert len(page.locator("#track polyline").get_attribute("points").split()) >= 2

        # two guards on the same spot: one label shows, the other is hidden
        produce(applied, TOPICS.events_high.name, "guardstream.GuardPosition",
                [fixes[-1] | {"event_id": f"{tenant}-twin", "device_id": "guard-1"}])
        wait_until(lambda: guard_fixes(database_url, tenant) == 6, 60, "the twin's fix in PostgreSQL")
        page.reload()
        page.wait_for_selector("#guards g[data-guard='guard-1']", timeout=WAIT_MS)
        shown = "els => els.filter(e => getComputedStyle(e).visibility !== 'hidden').length"
        page.wait_for_function(f"() => ({shown})([...document.querySelectorAll('#guards text')]) === 1",
                               timeout=WAIT_MS)
    finally:
        gateway.stop()


def test_an_alert_shows_what_the_notifier_sent_to_whom_and_when(page, applied, database_url, unique, tmp_path) -> None:
    """A real notifier sends to a real SMTP server and HTTP receiver; the alert's panel on the dashboard
    shows each notification (tier 1 on open, the escalation while open, the acknowledgement's cancel)."""
    from playwright.sync_api import expect

    tenant = f"ntf{unique}"
    migrate(database_url)
    group = f"test-dash-notify-{unique}"
    start_group_at_end(applied, group)
    mail, http = MailBox(), HttpReceiver()
    now = datetime.now(UTC)
    quiet = f"{(now - timedelta(hours=1)):%H}:00-{(now + timedelta(hours=2)):%H}:00"  # now is inside
    rules = tmp_path / "rules.toml"
    rules.write_text(f"""
[recipients.ops]
email = "ops@example.invalid"
phone = "+15550100"
webhook = "{http.url}/hook/s3cr3t"
[recipients.night-manager]
email = "night@example.invalid"
quiet_hours = "{quiet}"
[[rules]]
name = "dashboard"
tenants = ["{tenant}"]
  [[rules.tiers]]
  recipients = ["ops"]
  channels = ["email", "webhook", "sms"]
  escalate_after_s = 2
  [[rules.tiers]]
  recipients = ["night-manager"]
  channels = ["email"]
""")
    notifier = Notifier(applied, database_url, group, rules, mail, http, tmp_path / "notifier.log").start()
    gateway = start_gateway(applied, tmp_path / "gateway.log", DATABASE_URL=database_url)
    requests: list[str] = []
    refused: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    try:
        open_dashboard(page, gateway, tenant)
        alert_id = f"{tenant}-tamper"
        alerts = Alerts(applied, tenant)
        alerts.alert(alert_id, kind="TAMPER")  # not life-safety: quiet hours hold it
        alerts.flush()
        item = page.locator(f"#alerts li[data-alert-id='{alert_id}']")
        expect(item).to_be_visible(timeout=WAIT_MS)
        wait_until(lambda: notifier.count("status = 'sent'") == 3, 30, "tier 1 sent")

        item.locator("details.notifications summary").click()  # opening the panel asks the history API
        panel = item.locator("details.notifications")
        expect(panel.locator("tbody tr")).to_have_count(3, timeout=WAIT_MS)
        for channel in ("email", "webhook", "sms"):
            row = panel.locator(f"tr[data-channel='{channel}'][data-recipient='ops'][data-tier='1']")
            expect(row).to_have_attribute("data-status", "sent")
            expect(row.locator("td.tries")).to_have_text("1")
            expect(row.locator("td.when")).not_to_have_text("")
        expect(panel.locator("tr[data-channel='email'] td.to")).to_have_text("ops · ops@example.invalid")
        expect(panel.locator("tr[data-channel='webhook'] td.to")).to_have_text(f"ops · {http.url}/…")
        expect(panel.locator("summary")).to_have_text("Notifications · 3 of 3 sent")

        # nobody acknowledged: tier 2, held by the night manager's quiet hours, appears while the panel is open
        held = panel.locator("tr[data-recipient='night-manager'][data-tier='2']")
        expect(held).to_have_attribute("data-status", "held", timeout=WAIT_MS)
        expect(held.locator("td.state")).to_contain_text("held: quiet hours")

        item.locator("button.ack").click()  # the escalation stops and what was held is cancelled
        expect(held).to_have_attribute("data-status", "cancelled", timeout=WAIT_MS)
        expect(panel.locator("summary")).to_have_text("Notifications · 3 of 4 sent")
        assert [m["To"] for m in mail.received()] == ["ops@example.invalid"]
        assert len(http.accepted) == 2  # the webhook and the SMS, once each
        assert "s3cr3t" not in page.content()
    finally:
        gateway.stop()
        notifier.stop()
        mail.stop()
        http.close()
    ws = gateway.ws_url.replace("/ws", "")
    assert requests and all(url.startswith((gateway.http_url, ws)) for url in requests), requests
    assert refused == []


def test_the_link_in_a_notification_opens_its_alert_with_what_was_sent(page, applied, run_component, database_url,
                                                                       unique, tmp_path) -> None:
    """The link a real notifier puts in its email (`…/#alert=<id>`) opens the dashboard on that alert: once
    the snapshot is in, it is selected, scrolled into view below thirty panics, and its Notifications panel
    is open; another alert's link in the same tab moves there; an alert that is not open is said to be so."""
    from playwright.sync_api import expect

    tenant = f"link{unique}"
    migrate(database_url)
    run_component(["sink"], applied.replace(database_url=database_url), GUARDSTREAM_SINK_GROUP=f"sink-{unique}")
    gateway = start_gateway(applied, tmp_path / "gateway.log", DATABASE_URL=database_url)
    group = f"test-dash-link-{unique}"
    start_group_at_end(applied, group)
    mail, http = MailBox(), HttpReceiver()
    rules = tmp_path / "rules.toml"
    rules.write_text(f"""
[recipients.ops]
email = "ops@example.invalid"
[[rules]]
name = "tamper"
tenants = ["{tenant}"]
kinds = ["TAMPER"]
  [[rules.tiers]]
  recipients = ["ops"]
  channels = ["email"]
""")
    notifier = Notifier(applied, database_url, group, rules, mail, http, tmp_path / "notifier.log",
                        env={"GUARDSTREAM_NOTIFY_DASHBOARD_URL": gateway.http_url + "/"}).start()
    requests: list[str] = []
    refused: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    try:
        panics = [alert(tenant, f"guard-{n}") for n in range(30)]  # life-safety: listed above the tamper
        tamper = alert(tenant, "door-7", kind="TAMPER")
        produce(applied, TOPICS.events_critical.name, "guardstream.DeviceAlert", [tamper, *panics])
        wait_until(lambda: all(alert_status(database_url, a["event_id"]) == "NEW" for a in [tamper, *panics]), 60,
                   "the alerts in PostgreSQL")
        wait_until(lambda: notifier.count("status = 'sent'") == 1, 30, "the tamper's email sent")
        [message] = mail.received()
        [link] = [line.rsplit(" ", 1)[1] for line in message.get_body(("plain",)).get_content().splitlines()
                  if line.startswith("Open the alert on the dashboard: ")]
        address, fragment = link.split("#", 1)
        assert (address, fragment) == (gateway.http_url + "/", f"alert={tamper['event_id']}")

        # the operator's session supplies the token; the link supplies the alert
        page.goto(f"{address}?token={token(sub='op-web', tenants=[tenant], roles=['operator'])}#{fragment}")
        item = page.locator(f"#alerts li[data-alert-id='{tamper['event_id']}']")
        expect(item).to_have_class(re.compile(r"\bselected\b"), timeout=WAIT_MS)
        expect(page.locator("#alerts li")).to_have_count(31)
        assert item.evaluate("el => el === el.parentElement.lastElementChild")  # below every panic
        expect(item).to_be_in_viewport()
        assert page.locator("#alerts-panel").evaluate("el => el.scrollTop") > 0  # it was scrolled to
        assert item.evaluate("el => document.activeElement === el")
        panel = item.locator("details.notifications")
        expect(panel).to_have_attribute("open", "")
        row = panel.locator("tr[data-channel='email'][data-recipient='ops'][data-tier='1']")
        expect(row).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
        expect(panel.locator("summary")).to_have_text("Notifications · 1 of 1 sent")
        expect(page.locator("#alerts li.selected")).to_have_count(1)

        # another alert's link in the same tab: that alert, without a reload
        other = page.locator(f"#alerts li[data-alert-id='{panics[0]['event_id']}']")
        page.evaluate("id => { location.hash = 'alert=' + encodeURIComponent(id); }", panics[0]["event_id"])
        expect(other).to_have_class(re.compile(r"\bselected\b"), timeout=WAIT_MS)
        expect(other.locator("details.notifications .sent-note")).to_have_text("nothing sent for this alert",
                                                                               timeout=WAIT_MS)
        expect(page.locator("#alerts li.selected")).to_have_count(1)
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")

        page.evaluate("() => { location.hash = 'alert=gone-1'; }")
        expect(page.locator("#message")).to_contain_text("alert gone-1 from the link is not among the open alerts",
                                                         timeout=WAIT_MS)
    finally:
        gateway.stop()
        notifier.stop()
        mail.stop()
        http.close()
    ws = gateway.ws_url.replace("/ws", "")
    assert requests and all(url.startswith((gateway.http_url, ws)) for url in requests), requests
    assert refused == []
