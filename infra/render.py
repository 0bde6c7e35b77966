"""Tables and reports printed by the commands (rich), kept apart from the logic."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

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


def stack_report(stack: Stack, settings: Settings, waiting: list[str]) -> None:
    """What runs where, one address a line (never cut by a narrow terminal or a log), then the banner."""
    console = terminal()

    def line(name: str, where: str) -> None:
        console.print(f"  {name:<22} {where}", markup=False, highlight=False, soft_wrap=True)

    console.print("servers", markup=False, highlight=False)
    for name, where in stack.endpoints.items():
        line(name, where)
    if stack.logs:
        console.print("server logs", markup=False, highlight=False)
        for name, path in stack.logs.items():
            line(name, str(path))
    console.print("components (metrics, health)", markup=False, highlight=False)
    for name, port in stack.metrics_ports.items():
        line(name, f"http://{settings.metrics_host}:{port}/metrics")
    if "gateway" in stack.metrics_ports:
        console.print("dashboard (demo token, 12 h)", markup=False, highlight=False)
        console.print(f"  {dashboard_url(settings)}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"other shells: guardstream commands with the state directory {settings.state_dir} find this "
                  "stack; `guardstream env` prints its addresses for other tools",
                  markup=False, highlight=False, soft_wrap=True)
    if waiting:
        console.print(f"guardstream is running, but not ready yet: {', '.join(waiting)} (see its log lines); "
                      "Ctrl-C stops everything", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print("guardstream is up; Ctrl-C stops everything", markup=False, highlight=False)


def dashboard_url(settings: Settings) -> str:
    from guardstream.infra.demo import demo_token
    scheme = "https" if settings.gateway_tls_cert else "http"
    host = "127.0.0.1" if settings.gateway_host in ("0.0.0.0", "::", "") else settings.gateway_host
    page = f"{scheme}://{host}:{settings.gateway_port}/"
    try:
        return f"{page}?token={demo_token(settings)}"
    except ConfigError as exc:  # RS256 only: tokens come from the issuer that holds the private key
        return f"{page}?token=... (no demo token: {exc.detail})"
