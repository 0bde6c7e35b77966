"""``guardstream topics apply`` and ``topics list``: the catalog made real.

:func:`plan_changes` is pure: declared topics and what the cluster reports in,
a list of changes out. :func:`apply` and :func:`describe` are the Admin API
shell around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

from guardstream.catalog import TOPICS, Topic
from guardstream.errors import ConfigError, InputError, UnavailableError
from guardstream.kafka import admin_config, error_code, error_text
from guardstream.settings import Settings
from guardstream.topic_end import probe_end_offsets


@dataclass(frozen=True)
class Existing:
    partitions: int
    configs: dict[str, str]


@dataclass(frozen=True)
class Change:
    topic: str
    action: str  # create | add_partitions | set_config | drift
    detail: str
    partitions: int = 0
    configs: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.action:<15} {self.topic:<18} {self.detail}"


def plan_changes(declared: tuple[Topic, ...], existing: dict[str, Existing]) -> list[Change]:
    changes: list[Change] = []
    for topic in declared:
        have = existing.get(topic.name)
        if have is None:
            configs = ", ".join(f"{k}={v}" for k, v in topic.configs.items())
            changes.append(Change(topic.name, "create", f"{topic.partitions} partitions, {configs}",
                                  topic.partitions, topic.configs))
            continue
        if have.partitions < topic.partitions:
            changes.append(Change(topic.name, "add_partitions", f"{have.partitions} -> {topic.partitions}",
                                  topic.partitions))
        elif have.partitions > topic.partitions:
            changes.append(Change(topic.name, "drift", f"has {have.partitions} partitions, catalog says "
                                  f"{topic.partitions}; Kafka cannot remove partitions"))
        wrong = {k: v for k, v in topic.configs.items() if have.configs.get(k) != v}
        if wrong:
            detail = ", ".join(f"{k}: {have.configs.get(k)} -> {v}" for k, v in wrong.items())
            changes.append(Change(topic.name, "set_config", detail, configs=wrong))
    return changes


def sized(settings: Settings, declared: tuple[Topic, ...]) -> tuple[Topic, ...]:
    """The declared topics with the partition cap of the settings applied (see
    ``Settings.partition_cap``). The cap is uniform, so topics whose partitions must
    line up (the raw topics and the worker's changelog) still do."""
    cap = settings.partition_cap
    if cap is None:
        return declared
    return tuple(replace(t, partitions=min(t.partitions, cap)) for t in declared)


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(admin_config(settings))


def _wait(futures: dict, what: str) -> dict:
    out = {}
    for key, future in futures.items():
        try:
            out[key] = future.result()
        except KafkaException as exc:
            raise UnavailableError(f"{what} {key}: {error_text(exc)}") from exc
    return out


def read_existing(admin: AdminClient, names: list[str], timeout_s: float = 10.0) -> dict[str, Existing]:
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise UnavailableError(f"Kafka unreachable: {exc}") from exc
    present = [n for n in names if n in metadata.topics]
    if not present:
        return {}
    described = _wait(admin.describe_configs([ConfigResource("topic", n) for n in present]), "describe configs of")
    return {
        resource.name: Existing(len(metadata.topics[resource.name].partitions),
                                {k: entry.value for k, entry in configs.items()})
        for resource, configs in described.items()
    }


def replication_factor(settings: Settings, topic: Topic, brokers: int) -> int:
    # the embedded profile is one broker, whichever command applies the catalog (not only `up`)
    wanted = settings.replication_factor or (1 if settings.embedded else topic.replication_factor)
    if wanted > brokers:
        raise ConfigError("GUARDSTREAM_REPLICATION_FACTOR",
                          f"{topic.name} wants {wanted} replicas but the cluster has {brokers} broker(s); "
                          "set a lower replication factor")
    return wanted


def apply(settings: Settings, declared: tuple[Topic, ...] | None = None) -> list[Change]:
    """Create or update the declared topics (default: the catalog's, with the settings'
    partition cap); returns the changes made (empty: nothing to do).

    Drift the broker cannot fix (fewer partitions, or a broker without the
    CreatePartitions / IncrementalAlterConfigs APIs) comes back as ``drift``.
    """
    declared = sized(settings, TOPICS.all()) if declared is None else declared
    admin = _admin(settings)
    existing = read_existing(admin, [t.name for t in declared])
    changes = plan_changes(declared, existing)
    by_name = {t.name: t for t in declared}
    brokers = len(admin.list_topics(timeout=10).brokers)
    creates = [NewTopic(c.topic, c.partitions, replication_factor(settings, by_name[c.topic], brokers),
                        config=c.configs) for c in changes if c.action == "create"]
    if creates:
        _wait(admin.create_topics(creates, operation_timeout=30), "create topic")
    return [_apply_one(admin, c) for c in changes]


def _apply_one(admin: AdminClient, change: Change) -> Change:
    try:
        if change.action == "add_partitions":
            _wait(admin.create_partitions([NewPartitions(change.topic, change.partitions)]), "add partitions to")
        elif change.action == "set_config":
            entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                       for k, v in change.configs.items()]
            _wait(admin.incremental_alter_configs([ConfigResource("topic", change.topic,
                                                                  incremental_configs=entries)]), "alter")
    except UnavailableError as exc:
        cause = exc.__cause__
        if isinstance(cause, KafkaException) and error_code(cause) == KafkaError._UNSUPPORTED_FEATURE:
            return Change(change.topic, "drift", f"{change.detail} (this broker cannot change it: "
                          "the API is not supported)")
        raise
    return change


@dataclass(frozen=True)
class TopicStatus:
    topic: Topic
    partitions: int | None  # None: missing on the cluster
    messages: int
    ends: dict[int, tuple[int, int]]


def describe(settings: Settings, declared: tuple[Topic, ...] = TOPICS.all()) -> list[TopicStatus]:
    """Partition counts and exact end offsets (see :func:`probe_end_offsets`)."""
    admin = _admin(settings)
    try:
        metadata = admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise UnavailableError(f"Kafka unreachable: {exc}") from exc
    parts = [(t.name, p) for t in declared if t.name in metadata.topics
             for p in metadata.topics[t.name].partitions]
    ends = probe_end_offsets(settings, parts)
    out = []
    for topic in declared:
        if topic.name not in metadata.topics:
            out.append(TopicStatus(topic, None, 0, {}))
            continue
        mine = {p: ends[(topic.name, p)] for p in metadata.topics[topic.name].partitions}
        out.append(TopicStatus(topic, len(mine), sum(hi - lo for lo, hi in mine.values()), mine))
    return out


def create_like(settings: Settings, name: str, like: str | None) -> Change | None:
    """Create ``name`` with the partitions and configs of the catalog topic ``like`` (``name``'s own
    when it is in the catalog): a target for ``replay --into`` or an analyst's copy. None when a topic
    of that name exists already (whatever its shape: nothing is changed)."""
    model = like or name
    try:
        shape = TOPICS.by_name(model)
    except KeyError:
        raise InputError(f"{model!r} is not a catalog topic: name one with --like (`guardstream topics list "
                         "--catalog` lists them)", reason="unknown_topic") from None
    admin = _admin(settings)
    if read_existing(admin, [name]):
        return None
    [topic] = sized(settings, (replace(shape, name=name),))
    brokers = len(admin.list_topics(timeout=10).brokers)
    _wait(admin.create_topics([NewTopic(name, topic.partitions, replication_factor(settings, topic, brokers),
                                        config=topic.configs)], operation_timeout=30), "create topic")
    configs = ", ".join(f"{k}={v}" for k, v in topic.configs.items())
    return Change(name, "create", f"{topic.partitions} partitions, {configs} (like {shape.name})",
                  topic.partitions, topic.configs)
