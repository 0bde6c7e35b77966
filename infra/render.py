"""Tables and reports printed by the commands (rich), kept apart from the logic."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

from rich.table import Table

from guardstream.catalog import DAY_MS, Topic
from guardstream.console import emit_table, terminal
from guardstream.errors import ConfigError
from guardstream.settings import Secret, Settings, masked_url

if TYPE_CHECKING:
    from guardstream.infra.stack import Stack
    from guardstream.infra.topics import TopicStatus


def _retention(ms: int) -> str:
    if ms < 0:
        return "forever"
    return f"{ms / DAY_MS:g} d" if ms >= DAY_MS else f"{ms / 1000:g} s"


def topics_table(declared: tuple[Topic, ...], statuses: list[TopicStatus] | None) -> None:
    columns = ["topic", "partitions", "retention", "cleanup", "priority", "key", "value"]
    if statuses is not None:
        columns += ["records", "end offsets (partition:end)"]
    by_name = {s.topic.name: s for s in statuses or []}
    rows = []
    for topic in declared:
        row = [topic.name, str(topic.partitions), _retention(topic.retention_ms), topic.cleanup_policy,
               topic.priority.value if topic.priority else "", topic.key, ", ".join(topic.value_schemas)]
        if statuses is not None:
            status = by_name[topic.name]
            if status.partitions is None:
                row += ["missing", "run `guardstream topics apply`"]
            else:
                row[1] = f"{status.partitions}" + ("" if status.partitions == topic.partitions
                                                   else f" (catalog: {topic.partitions})")
                row += [str(status.messages), " ".join(f"{p}:{hi}" for p, (_, hi) in sorted(status.ends.items()))]
        rows.append(row)
    emit_table("guardstream topics", columns, rows)


def settings_table(settings: Settings) -> None:
    rows = []
    for f in fields(settings):
        var = f.metadata["var"]
        value = getattr(settings, f.name)
        if isinstance(value, Secret):
            shown = "***" if value else ""
        else:
            shown = "" if value is None else str(value)
            shown = masked_url(shown) if "://" in shown else shown
        rows.append([var.env, shown, var.doc])
    emit_table("guardstream settings", ["variable", "value", "meaning"], rows)


def stack_report(stack: Stack, settings: Settings) -> None:
    table = Table(title="guardstream is up", title_justify="left")
    table.add_column("what")
    table.add_column("where")
    for name, where in stack.endpoints.items():
        table.add_row(name, where)
    for name, port in stack.metrics_ports.items():
        table.add_row(f"{name} metrics", f"http://{settings.metrics_host}:{port}/metrics")
    console = terminal()
    console.print(table)
    if "gateway" in stack.metrics_ports:
        console.print(f"dashboard (demo token, 12 h): {dashboard_url(settings)}", markup=False)
    console.print("guardstream is up; Ctrl-C stops everything", markup=False)


def dashboard_url(settings: Settings) -> str:
    from guardstream.infra.demo import demo_token
    scheme = "https" if settings.gateway_tls_cert else "http"
    host = "127.0.0.1" if settings.gateway_host in ("0.0.0.0", "::", "") else settings.gateway_host
    page = f"{scheme}://{host}:{settings.gateway_port}/"
    try:
        return f"{page}?token={demo_token(settings)}"
    except ConfigError as exc:  # RS256 only: tokens come from the issuer that holds the private key
        return f"{page}?token=... (no demo token: {exc.detail})"
