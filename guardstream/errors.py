"""The one exception tree of guardstream.

    GuardstreamError                 base; every error carries a stable ``reason`` code
    ├── ConfigError                  a bad setting; names the variable (start-up stops)
    ├── InputError                   bad input from outside (a device, a file, a user);
    │                                expected, becomes a dead letter or a clear message
    ├── SchemaError                  an Avro schema does not parse, or breaks a rule
    │   └── IncompatibleSchemaError  a change breaks the subject's compatibility level
    └── UnavailableError             a server we depend on (Kafka, PostgreSQL, MQTT,
        │                            schema registry) cannot be reached; carries
        │                            ``retry_after`` seconds
        └── BackpressureError        we are full; the caller should slow down

Anything else raised inside guardstream is a bug and is allowed to fail loudly.
Library errors are wrapped with ``raise ... from exc`` at the edge that sees them;
nothing matches on message strings.
"""

from __future__ import annotations


class GuardstreamError(Exception):
    reason: str = "error"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason


class ConfigError(GuardstreamError):
    """A setting is missing or malformed; ``setting`` names the variable."""

    reason = "bad_setting"

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(f"{setting}: {detail}")
        self.setting = setting


class InputError(GuardstreamError):
    """Input from outside guardstream is unusable; ``reason`` is a stable code."""

    reason = "bad_input"


class SchemaError(GuardstreamError):
    reason = "bad_schema"

    def __init__(self, detail: str, *, subject: str | None = None, reason: str | None = None) -> None:
        super().__init__(detail, reason=reason)
        self.subject = subject


class IncompatibleSchemaError(SchemaError):
    reason = "incompatible_schema"


class UnavailableError(GuardstreamError):
    reason = "unavailable"

    def __init__(self, detail: str, *, retry_after: float = 1.0, reason: str | None = None) -> None:
        super().__init__(detail, reason=reason)
        self.retry_after = retry_after


class BackpressureError(UnavailableError):
    reason = "backpressure"
