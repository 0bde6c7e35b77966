"""Schema registry clients: where schema ids come from.

Two implementations of one small interface:

* :class:`FileRegistry` reads ``schemas/registry.json``, committed in the
  repository, so every machine encodes with the same ids without any server.
* :class:`HttpRegistry` talks to a Confluent-compatible Schema Registry
  (``SCHEMA_REGISTRY_URL``) over its REST API.

Both answer ``id_for(subject, schema)`` and ``schema_for_id(id)``; the codec
caches whatever they return, so neither sits on the hot path.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from guardstream.errors import SchemaError, UnavailableError
from guardstream.schemas.contracts import REGISTRY_FILE, normalise

COMPATIBILITY_LEVELS = ("NONE", "BACKWARD", "FORWARD", "FULL",
                        "BACKWARD_TRANSITIVE", "FORWARD_TRANSITIVE", "FULL_TRANSITIVE")


class Registry(Protocol):
    def id_for(self, subject: str, schema: dict[str, Any]) -> int: ...

    def schema_for_id(self, schema_id: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Version:
    version: int
    id: int
    schema: dict[str, Any]


@dataclass
class Subject:
    compatibility: str
    versions: list[Version] = field(default_factory=list)

    @property
    def latest(self) -> Version | None:
        return self.versions[-1] if self.versions else None


@dataclass
class FileRegistry:
    """The registry file: subjects, their compatibility level, versions and ids."""

    path: Path = REGISTRY_FILE
    default_compatibility: str = "BACKWARD"
    subjects: dict[str, Subject] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = REGISTRY_FILE) -> FileRegistry:
        if not path.exists():
            return cls(path=path)
        try:
            doc = json.loads(path.read_text())
            subjects = {
                name: Subject(entry.get("compatibility", doc.get("default_compatibility", "BACKWARD")),
                              [Version(v["version"], v["id"], v["schema"]) for v in entry["versions"]])
                for name, entry in doc.get("subjects", {}).items()
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise SchemaError(f"{path}: unreadable registry file ({exc})", reason="bad_registry") from exc
        return cls(path, doc.get("default_compatibility", "BACKWARD"), subjects)

    def save(self) -> None:
        doc = {
            "default_compatibility": self.default_compatibility,
            "subjects": {
                name: {"compatibility": s.compatibility,
                       "versions": [{"version": v.version, "id": v.id, "schema": v.schema} for v in s.versions]}
                for name, s in sorted(self.subjects.items())
            },
        }
        self.path.write_text(json.dumps(doc, indent=2) + "\n")

    def compatibility_of(self, subject: str) -> str:
        entry = self.subjects.get(subject)
        return entry.compatibility if entry else self.default_compatibility

    def find(self, subject: str, schema: dict[str, Any]) -> Version | None:
        entry = self.subjects.get(subject)
        wanted = normalise(schema)
        for version in entry.versions if entry else ():
            if normalise(version.schema) == wanted:
                return version
        return None

    def next_id(self) -> int:
        return 1 + max((v.id for s in self.subjects.values() for v in s.versions), default=0)

    def add(self, subject: str, schema: dict[str, Any]) -> Version:
        """Record ``schema`` as the subject's next version (the caller checked compatibility)."""
        existing = self.find(subject, schema)
        if existing:
            return existing
        entry = self.subjects.setdefault(subject, Subject(self.default_compatibility))
        version = Version(len(entry.versions) + 1, self.next_id(), schema)
        entry.versions.append(version)
        return version

    def id_for(self, subject: str, schema: dict[str, Any]) -> int:
        version = self.find(subject, schema)
        if version is None:
            raise SchemaError(f"{subject}: this schema is not in {self.path.name}; run "
                              "`guardstream schemas register --local`", subject=subject, reason="unregistered")
        return version.id

    def schema_for_id(self, schema_id: int) -> dict[str, Any]:
        for entry in self.subjects.values():
            for version in entry.versions:
                if version.id == schema_id:
                    return version.schema
        raise SchemaError(f"unknown schema id {schema_id}", reason="unknown_schema_id")


@dataclass
class HttpRegistry:
    """A Confluent-compatible Schema Registry reached over HTTP."""

    url: str
    timeout_s: float = 10.0

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url.rstrip("/") + path, data=data, method=method,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json",
                     "Accept": "application/vnd.schemaregistry.v1+json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            if exc.code == 409:
                raise SchemaError(f"registry refused {path}: {detail}", reason="incompatible_schema") from exc
            if exc.code == 404:
                raise SchemaError(f"registry has no {path}: {detail}", reason="not_found") from exc
            raise UnavailableError(f"registry answered {exc.code} for {path}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise UnavailableError(f"schema registry {self.url} unreachable: {exc}") from exc

    @staticmethod
    def _subject_path(subject: str) -> str:
        return "/subjects/" + urllib.parse.quote(subject, safe="")

    def id_for(self, subject: str, schema: dict[str, Any]) -> int:
        found = self._call("POST", self._subject_path(subject), {"schema": json.dumps(schema)})
        return int(found["id"])

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        answer = self._call("POST", self._subject_path(subject) + "/versions", {"schema": json.dumps(schema)})
        return int(answer["id"])

    def set_compatibility(self, subject: str, level: str) -> None:
        self._call("PUT", "/config/" + urllib.parse.quote(subject, safe=""), {"compatibility": level})

    def schema_for_id(self, schema_id: int) -> dict[str, Any]:
        answer = self._call("GET", f"/schemas/ids/{schema_id}")
        return json.loads(answer["schema"])


def registry_from_settings(settings: Any) -> Registry:
    if settings.schema_registry_url:
        return HttpRegistry(settings.schema_registry_url)
    return FileRegistry.load()
