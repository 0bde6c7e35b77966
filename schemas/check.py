"""``guardstream schemas check``: the rules every Avro contract must keep.

1. every ``.avsc`` parses;
2. every field of every record has a ``doc``;
3. every example payload in ``schemas/examples/NAME.json`` validates against its schema,
   and every contract has at least one;
4. every contract is registered as it stands; a change is compatible with the
   previous version(s) under the subject's compatibility level;
5. registered ids never change: ids are unique, versions run 1..n, and against a
   baseline registry file no (subject, version) lost or changed its id or schema.

Each problem names the schema, the field and the rule it breaks. The checks are
pure functions over loaded data; the command only prints them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.errors
import avro.schema
import fastavro
import fastavro.validation
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from guardstream.schemas.contracts import EXAMPLES_DIR, SCHEMA_DIR, Contract, full_name_of, normalise
from guardstream.schemas.registry import COMPATIBILITY_LEVELS, FileRegistry


@dataclass(frozen=True)
class Problem:
    subject: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.subject}: [{self.rule}] {self.detail}"


def _parse(schema: dict[str, Any]) -> avro.schema.Schema:
    return avro.schema.parse(json.dumps(schema))


# -- rule 1 and 2 ------------------------------------------------------------------

def load_and_parse(schema_dir: Path) -> tuple[dict[str, Contract], list[Problem]]:
    contracts: dict[str, Contract] = {}
    problems: list[Problem] = []
    for path in sorted(schema_dir.glob("*.avsc")):
        try:
            schema = json.loads(path.read_text())
            _parse(schema)
            fastavro.parse_schema(schema)
        except (ValueError, avro.errors.AvroException, fastavro.schema.SchemaParseException) as exc:
            problems.append(Problem(path.name, "parse", f"does not parse: {exc}"))
            continue
        name = full_name_of(schema)
        contracts[name] = Contract(name, path, schema)
    return contracts, problems


def missing_docs(subject: str, schema: Any, where: str = "") -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(schema, list):
        for branch in schema:
            problems += missing_docs(subject, branch, where)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for f in schema.get("fields", []):
                path = f"{where}{f['name']}"
                if not str(f.get("doc", "")).strip():
                    problems.append(Problem(subject, "doc", f"field `{path}` has no doc"))
                problems += missing_docs(subject, f["type"], path + ".")
        elif schema.get("type") in ("array", "map"):
            problems += missing_docs(subject, schema.get("items", schema.get("values")), where)
    return problems


# -- rule 3 ------------------------------------------------------------------------

def example_problems(contracts: dict[str, Contract], examples_dir: Path) -> list[Problem]:
    """Examples are in Avro's JSON encoding (unions tagged, as the console producers take them)."""
    problems: list[Problem] = []
    for name, contract in contracts.items():
        path = examples_dir / f"{contract.name}.jsonl"
        if not path.exists():
            problems.append(Problem(name, "example", f"no example payload in {path.name}"))
            continue
        parsed = fastavro.parse_schema(contract.schema)
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        for i, line in enumerate(lines, start=1):
            try:
                record = next(iter(fastavro.json_reader(io.StringIO(line), parsed)))
                fastavro.validation.validate(record, parsed, raise_errors=True)
            except (ValueError, KeyError, TypeError, StopIteration,
                    fastavro.validation.ValidationError) as exc:
                problems.append(Problem(name, "example", f"{path.name} line {i} does not validate: {exc}"))
    return problems


# -- rule 4 ------------------------------------------------------------------------

def _incompatibilities(reader: dict[str, Any], writer: dict[str, Any], role: str) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``, field by field."""
    checker = ReaderWriterCompatibilityChecker()
    overall = checker.get_compatibility(_parse(reader), _parse(writer))
    if overall.compatibility is SchemaCompatibilityType.compatible:
        return []
    reasons: list[str] = []
    if reader.get("type") == "record" and writer.get("type") == "record":
        writer_fields = {f["name"]: f for f in writer["fields"]}
        for f in reader["fields"]:
            names = [f["name"], *f.get("aliases", [])]
            match = next((writer_fields[n] for n in names if n in writer_fields), None)
            if match is None:
                if "default" not in f:
                    reasons.append(f"field `{f['name']}` is missing from the {role} schema and has no default")
                continue
            # Wrap each field type in a one-field record so named types resolve.
            r = {"type": "record", "name": reader["name"], "namespace": reader.get("namespace"),
                 "fields": [{"name": "f", "type": f["type"]}]}
            w = {"type": "record", "name": writer["name"], "namespace": writer.get("namespace"),
                 "fields": [{"name": "f", "type": match["type"]}]}
            result = checker.get_compatibility(_parse(r), _parse(w))
            if result.compatibility is not SchemaCompatibilityType.compatible:
                reasons.append(f"field `{f['name']}`: type {json.dumps(match['type'])} in the {role} schema "
                               f"cannot be read as {json.dumps(f['type'])} ({'; '.join(sorted(result.messages))})")
    return reasons or sorted(overall.messages)


def compatibility_problems(subject: str, new: dict[str, Any], history: list[dict[str, Any]],
                           level: str) -> list[Problem]:
    if level not in COMPATIBILITY_LEVELS:
        return [Problem(subject, "compatibility", f"unknown compatibility level {level}")]
    if level == "NONE" or not history:
        return []
    against = history if level.endswith("_TRANSITIVE") else history[-1:]
    base = level.removesuffix("_TRANSITIVE")
    problems: list[Problem] = []
    for old in against:
        version = history.index(old) + 1
        if base in ("BACKWARD", "FULL"):
            for why in _incompatibilities(new, old, f"registered v{version}"):
                problems.append(Problem(subject, level, f"{why} — new readers cannot read data written with v{version}"))
        if base in ("FORWARD", "FULL"):
            for why in _incompatibilities(old, new, "new"):
                problems.append(Problem(subject, level, f"{why} — readers of v{version} cannot read new data"))
    return problems


def registration_problems(contracts: dict[str, Contract], registry: FileRegistry) -> list[Problem]:
    problems: list[Problem] = []
    for name, contract in contracts.items():
        entry = registry.subjects.get(name)
        history = [v.schema for v in entry.versions] if entry else []
        problems += compatibility_problems(name, contract.schema, history, registry.compatibility_of(name))
        if registry.find(name, contract.schema) is None and not problems:
            problems.append(Problem(name, "registered", "changed since its last registered version; record it "
                                    "with `guardstream schemas register --local`"))
        elif entry and registry.find(name, contract.schema) not in (None, entry.latest):
            problems.append(Problem(name, "registered", "matches an older registered version, not the latest"))
    return problems


# -- rule 5 ------------------------------------------------------------------------

def id_problems(registry: FileRegistry, baseline: FileRegistry | None = None) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[int, str] = {}
    for name, entry in registry.subjects.items():
        for i, version in enumerate(entry.versions, start=1):
            if version.version != i:
                problems.append(Problem(name, "ids", f"versions must run 1..n; found v{version.version} at {i}"))
            if version.id in seen and seen[version.id] != name:
                problems.append(Problem(name, "ids", f"id {version.id} is also used by {seen[version.id]}"))
            seen[version.id] = name
    for name, entry in (baseline.subjects.items() if baseline else ()):
        current = registry.subjects.get(name)
        for old in entry.versions:
            new = current.versions[old.version - 1] if current and len(current.versions) >= old.version else None
            if new is None:
                problems.append(Problem(name, "ids", f"registered v{old.version} (id {old.id}) was removed"))
            elif new.id != old.id:
                problems.append(Problem(name, "ids", f"v{old.version} changed id from {old.id} to {new.id}"))
            elif normalise(new.schema) != normalise(old.schema):
                problems.append(Problem(name, "ids", f"v{old.version} (id {old.id}) was edited after registration"))
    return problems


def check_all(schema_dir: Path = SCHEMA_DIR, examples_dir: Path = EXAMPLES_DIR,
              registry: FileRegistry | None = None, baseline: FileRegistry | None = None) -> list[Problem]:
    contracts, problems = load_and_parse(schema_dir)
    registry = registry or FileRegistry.load()
    for name, contract in contracts.items():
        problems += missing_docs(name, contract.schema)
    problems += example_problems(contracts, examples_dir)
    problems += registration_problems(contracts, registry)
    problems += id_problems(registry, baseline)
    return problems


def register_locally(schema_dir: Path = SCHEMA_DIR, registry: FileRegistry | None = None) -> list[str]:
    """Record every changed, compatible contract as a new version; returns what changed.

    Refuses (raises nothing, returns nothing new) for a contract that breaks its
    level: ``check_all`` reports those.
    """
    contracts, _ = load_and_parse(schema_dir)
    registry = registry or FileRegistry.load()
    changed: list[str] = []
    for name, contract in contracts.items():
        if registry.find(name, contract.schema):
            continue
        entry = registry.subjects.get(name)
        history = [v.schema for v in entry.versions] if entry else []
        if compatibility_problems(name, contract.schema, history, registry.compatibility_of(name)):
            continue
        version = registry.add(name, contract.schema)
        changed.append(f"{name}: v{version.version} id {version.id}")
    if changed:
        registry.save()
    return changed
