"""``guardstream notifier`` (the component) and ``guardstream notify test --tenant T``.

The component runs a planner thread and one sender thread per configured channel
(``notifier/service.py``). ``/readyz`` is ready once PostgreSQL answered, Kafka answers and
the consumer has its partitions. SIGTERM or Ctrl-C stops every thread after its current
send; an unexpected error in any stops the process (exit 1) and the supervisor restarts it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING

from guardstream.settings import Settings
from guardstream.transport import KAFKA, component_settings

if TYPE_CHECKING:
    from guardstream.notifier.service import ChannelSender, Planner, Shared

log = logging.getLogger(__name__)


def build(settings: Settings) -> tuple[Shared, list[Planner | ChannelSender]]:
    from confluent_kafka import Consumer, Producer

    from guardstream.kafka import consumer_config, producer_config
    from guardstream.notifier.channels import senders
    from guardstream.notifier.metrics import NotifierMetrics
    from guardstream.notifier.rules import load_rules
    from guardstream.notifier.service import ChannelSender, Planner, Shared
    from guardstream.schemas.codec import Codec
    from guardstream.schemas.registry import registry_from_settings

    rules = load_rules(settings.notify_rules)
    configured = senders(settings, settings.notify_send_timeout_s)
    unconfigured = sorted(rules.channels_used() - set(configured))
    if unconfigured:
        log.warning("notifier: the rules use %s, which the settings do not configure: such notifications are "
                    "recorded as skipped", ", ".join(unconfigured))
    shared = Shared(settings, rules, configured, Producer(producer_config(settings, "guardstream-notifier")),
                    Codec(registry_from_settings(settings)), NotifierMetrics.create(), threading.Event())
    consumer = Consumer(consumer_config(settings, "guardstream-notifier", settings.notify_group))
    workers: list[Planner | ChannelSender] = [Planner(shared, consumer)]
    for channel in sorted(configured):
        # a rate limit is decided on the rows' count: one sender keeps that count true
        limited = channel in rules.rate_limits and rules.rate_limits[channel].count > 0
        workers += [ChannelSender(shared, channel) for _ in range(1 if limited else settings.notify_senders)]
    return shared, workers


def readiness(shared: Shared):
    from confluent_kafka import KafkaException

    def ready() -> tuple[bool, str]:
        if not shared.database_answered:
            return False, "PostgreSQL has not answered yet"
        try:
            shared.producer.list_topics(timeout=1)
        except KafkaException as exc:
            return False, f"Kafka unreachable: {exc}"
        if not shared.assigned:
            return False, "waiting for partitions"
        return True, ""
    return ready


def cmd_notifier(args: argparse.Namespace) -> int:
    from guardstream.lifecycle import install_stop_handlers, start_guarded
    from guardstream.observability import serve

    settings = component_settings(KAFKA)
    shared, workers = build(settings)
    failures: list[BaseException] = []

    def failed(exc: BaseException) -> None:
        failures.append(exc)
        shared.stop.set()

    install_stop_handlers(shared.stop.set)
    endpoints = (serve(shared.metrics.registry, readiness(shared), settings.metrics_host, settings.metrics_port)
                 if settings.metrics_port else None)
    log.info("notifier: group %s, channels %s", settings.notify_group, ", ".join(sorted(shared.senders)) or "none")
    try:
        names = [getattr(w, "channel", "planner") for w in workers]
        threads = [start_guarded(f"notify-{name}-{i}", w.run, failed, log, f"notifier {name}")
                   for i, (name, w) in enumerate(zip(names, workers))]
        for thread in threads:
            thread.join()
        shared.producer.flush(10)
    finally:
        if endpoints is not None:
            endpoints.close()
    return 1 if failures else 0


def cmd_notify_test(args: argparse.Namespace) -> int:
    """A test message to every recipient the tenant's rules name, on each of their configured channels."""
    from guardstream.console import emit_table
    from guardstream.notifier.channels import SendFailed, senders
    from guardstream.notifier.decide import Alert
    from guardstream.notifier.messages import Notice
    from guardstream.notifier.rules import load_rules

    settings = Settings.from_env()
    rules = load_rules(settings.notify_rules)
    configured = senders(settings, settings.notify_send_timeout_s)
    alert = Alert(f"test-{int(time.time() * 1000)}", args.tenant, "notify-test", "PANIC", "CRITICAL",
                  int(time.time() * 1000), message="test notification: no action needed")
    dashboard = settings.notify_dashboard_url or f"http://{settings.gateway_host}:{settings.gateway_port}/"
    rows: list[list[str]] = []
    failed = 0
    targets = sorted({(name, channel) for rule in rules.rules
                      if rule.tenants is None or args.tenant in rule.tenants
                      for tier in rule.tiers for name in tier.recipients for channel in tier.channels})
    for name, channel in targets:
        address = rules.recipients[name].address(channel) or ""
        if channel not in configured:
            rows.append([channel, name, address, "not configured"])
            continue
        try:
            outcome = "sent: " + configured[channel](Notice(alert, channel, name, address, 1, dashboard, test=True))
        except SendFailed as exc:
            failed += 1
            outcome = f"FAILED: {exc.detail}"
        rows.append([channel, name, address, outcome])
    if not targets:
        print(f"no rule names a recipient for tenant {args.tenant!r}", file=sys.stderr)
        return 1
    emit_table(f"notify test, tenant {args.tenant}", ["channel", "recipient", "address", "outcome"], rows)
    return 1 if failed else 0


def cmd_notify_subscribe(args: argparse.Namespace) -> int:
    """Store a browser's PushSubscription for a recipient (what the dashboard will hand over)."""
    import json

    from guardstream.errors import InputError
    from guardstream.notifier.store import PushBook

    try:
        subscription = json.loads(args.subscription)
        endpoint, keys = subscription["endpoint"], subscription["keys"]
        if not (isinstance(endpoint, str) and endpoint.startswith(("https://", "http://"))
                and isinstance(keys.get("p256dh"), str) and isinstance(keys.get("auth"), str)):
            raise ValueError("endpoint must be an http(s) URL and keys.p256dh, keys.auth strings")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"--subscription is not a PushSubscription JSON ({exc})", reason="bad_subscription") \
            from exc
    PushBook(Settings.from_env().database_url).subscribe(args.recipient, subscription)
    print(f"{args.recipient}: subscribed {endpoint}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("notifier", help="notify people of critical alerts by email, webhook, SMS and Web Push, escalating "
                   "until acknowledged").set_defaults(handler=cmd_notifier)
    notify = sub.add_parser("notify", help="notification tools").add_subparsers(dest="notify_command", required=True)
    test = notify.add_parser("test", help="send a test message through every channel a tenant's rules use")
    test.add_argument("--tenant", required=True)
    test.set_defaults(handler=cmd_notify_test, one_shot=True)
    subscribe = notify.add_parser("subscribe", help="store a browser's Web Push subscription for a recipient")
    subscribe.add_argument("--recipient", required=True, help="a recipient's name in the rules file")
    subscribe.add_argument("--subscription", required=True,
                           help='the browser\'s PushSubscription JSON: {"endpoint": ..., "keys": {"p256dh": ..., '
                                '"auth": ...}}')
    subscribe.set_defaults(handler=cmd_notify_subscribe, one_shot=True)
