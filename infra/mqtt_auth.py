"""``guardstream mqtt acl``: the broker's password and ACL files, written from the device registry.

Writes, into one folder (default ``GUARDSTREAM_STATE_DIR/mqtt/auth``, where the local stack's
mosquitto reads them with ``GUARDSTREAM_MQTT_AUTH=on``):

* ``acl``: :func:`guardstream.connectors.acl.acl_file` of the enabled devices and the service user;
* ``passwd``: a mosquitto password file, kept with ``mosquitto_passwd``: an entry for every
  enabled device and the service user; entries of disabled and unregistered devices are
  removed; a device without an entry gets a new random password;
* ``credentials-<ms>.csv`` (mode 0600): the passwords made by this run, once, for provisioning
  the devices; guardstream keeps only their hashes.

Without ``mosquitto_passwd`` on PATH only the ACL is written and the report says so; the
passwords are then provisioned some other way (README). mosquitto reads both files again on
SIGHUP: ``--reload`` sends it to the pid in ``mqtt/mosquitto.pid`` of the state directory (the
local stack's broker).
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from guardstream.connectors.acl import Acl, acl_file
from guardstream.connectors.mapping import load_rules
from guardstream.errors import ConfigError, GuardstreamError, InputError
from guardstream.settings import Settings

DEFAULT_SERVICE_USER = "guardstream"
PID_FILE = "mosquitto.pid"


def auth_dir(settings: Settings) -> Path:
    return settings.state_dir.resolve() / "mqtt" / "auth"


@dataclass
class Report:
    acl: Path
    devices: int  # devices with MQTT access
    passwd: Path | None = None  # None: no mosquitto_passwd, credentials provisioned elsewhere
    credentials: Path | None = None  # the new passwords of this run, if any
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (device id, why it got no access)


def mosquitto_passwd() -> str | None:
    return shutil.which("mosquitto_passwd") or next(
        (p for p in ("/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd") if os.access(p, os.X_OK)), None)


def write_files(out: Path, registry: Mapping[str, Mapping], rules_path: Path | None, service_user: str,
                service_password: str | None = None) -> Report:
    """Write ``acl`` and ``passwd`` under ``out`` for the enabled devices of ``registry``."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    enabled, refused = _usable(registry, service_user)
    acl = acl_file(load_rules(rules_path), enabled, service_user,
                   f"guardstream mqtt acl: {len(enabled)} device(s) of the registry, written "
                   f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; do not edit, run it again")
    refused += [(device_id, f"grant {grant} would cover a command topic") for device_id, grant in acl.left_out]
    report = Report(out / "acl", len(acl.users), refused=refused)
    _write_atomically(report.acl, acl.text)
    tool = mosquitto_passwd()
    if tool is not None:
        _update_passwords(tool, out, acl, service_user, service_password, report)
    return report


def _usable(registry: Mapping[str, Mapping], service_user: str) -> tuple[list[str], list[tuple[str, str]]]:
    enabled: list[str] = []
    refused: list[tuple[str, str]] = []
    for device_id, record in sorted(registry.items()):
        if not record["enabled"]:
            continue
        if device_id == service_user:
            refused.append((device_id, "the service user's name"))
        elif ":" in device_id:
            # the password file separates user and hash with ':'; such a device needs a client certificate
            refused.append((device_id, "':' cannot be in a password file user name"))
        else:
            enabled.append(device_id)
    return enabled, refused


def _update_passwords(tool: str, out: Path, acl: Acl, service_user: str, service_password: str | None,
                      report: Report) -> None:
    path = out / "passwd"
    report.passwd = path
    current = _read_passwd(path)
    wanted = {service_user, *acl.users}
    report.removed = sorted(set(current) - wanted)
    new = {user: secrets.token_urlsafe(18) for user in sorted(wanted - set(current))}
    if service_password is not None:
        new[service_user] = service_password
    hashed = _hash(tool, out, new) if new else {}
    kept = {user: line for user, line in current.items() if user in wanted}
    _write_atomically(path, "".join(f"{line}\n" for line in {**kept, **hashed}.values()))
    made = {user: pw for user, pw in new.items() if user != service_user or service_password is None}
    report.added = sorted(u for u in made if u != service_user)
    if made:
        report.credentials = out / f"credentials-{time.time_ns() // 1_000_000}.csv"
        rows = [["username", "password"], *([u, pw] for u, pw in sorted(made.items()))]
        _write_atomically(report.credentials, _csv(rows))


def _read_passwd(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {line.split(":", 1)[0]: line for line in lines}


def _hash(tool: str, out: Path, passwords: Mapping[str, str]) -> dict[str, str]:
    """user -> hashed password file line, by ``mosquitto_passwd -U`` on a private plain-text file
    (passwords never on a command line)."""
    fd, name = tempfile.mkstemp(dir=out, prefix=".plain-")
    try:
        with os.fdopen(fd, "w") as plain:
            plain.write("".join(f"{user}:{pw}\n" for user, pw in passwords.items()))
        result = subprocess.run([tool, "-U", name], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise GuardstreamError(f"mosquitto_passwd -U failed: {result.stderr.strip() or result.stdout.strip()}",
                                   reason="passwd_failed")
        return _read_passwd(Path(name))
    finally:
        Path(name).unlink(missing_ok=True)


def _csv(rows: Iterable[list[str]]) -> str:
    import io
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _write_atomically(path: Path, text: str) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(name, 0o600)  # the broker's own user must read them: run it as the user that writes them
    os.replace(name, path)


def reload_broker(settings: Settings) -> int:
    """SIGHUP to the local stack's mosquitto (its pid file); returns the pid."""
    pid_file = settings.state_dir.resolve() / "mqtt" / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise InputError(f"no running local mosquitto to reload ({pid_file}): {exc}", reason="no_broker") from exc
    return pid


def service_user_of(settings: Settings, given: str | None) -> tuple[str, str | None]:
    """(service user, its password if MQTT_URL names one)."""
    from urllib.parse import unquote, urlsplit
    parts = urlsplit(settings.mqtt_url)
    user = given or (unquote(parts.username) if parts.username else DEFAULT_SERVICE_USER)
    if ":" in user or not user:
        raise ConfigError("MQTT_URL", f"service user {user!r} cannot be a password file user name")
    password = unquote(parts.password) if parts.password and user == unquote(parts.username or "") else None
    return user, password
