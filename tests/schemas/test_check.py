import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guardstream.schemas.check import check_all, compatibility_problems, register_locally
from guardstream.schemas.contracts import EXAMPLES_DIR, REGISTRY_FILE, SCHEMA_DIR
from guardstream.schemas.registry import FileRegistry


@pytest.fixture
def copy(tmp_path):
    """A temporary copy of the contracts, examples and registry file."""
    shutil.copytree(SCHEMA_DIR, tmp_path / "avro")
    shutil.copytree(EXAMPLES_DIR, tmp_path / "examples")
    shutil.copy(REGISTRY_FILE, tmp_path / "registry.json")
    return tmp_path


def _edit(path: Path, change) -> None:
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2))


def _field(schema, name):
    return next(f for f in schema["fields"] if f["name"] == name)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "guardstream.cli", "schemas", "check", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_repository_passes():
    assert check_all() == []
    result = _cli()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problem(s)" in result.stderr


def test_changed_type_fails_and_names_field_and_rule(copy):
    _edit(copy / "avro" / "GuardPosition.avsc", lambda s: _field(s, "lat").update(type="string"))
    result = _cli("--schemas", str(copy / "avro"), "--registry", str(copy / "registry.json"))
    assert result.returncode == 1
    assert "guardstream.GuardPosition: [BACKWARD] field `lat`" in result.stdout
    assert "cannot be read as \"string\"" in result.stdout


def test_removed_field_without_default_breaks_full(copy):
    registry = json.loads((copy / "registry.json").read_text())
    registry["subjects"]["guardstream.Telemetry"]["compatibility"] = "FULL"
    (copy / "registry.json").write_text(json.dumps(registry))
    _edit(copy / "avro" / "Telemetry.avsc",
          lambda s: s.update(fields=[f for f in s["fields"] if f["name"] != "device_id"]))
    result = _cli("--schemas", str(copy / "avro"), "--registry", str(copy / "registry.json"))
    assert result.returncode == 1
    assert "guardstream.Telemetry: [FULL] field `device_id` is missing from the new schema and has no default" \
        in result.stdout


def test_added_field_without_default_breaks_backward(copy):
    _edit(copy / "avro" / "AlertAction.avsc",
          lambda s: s["fields"].append({"name": "shift", "type": "string", "doc": "shift id"}))
    problems = check_all(copy / "avro", copy / "examples", FileRegistry.load(copy / "registry.json"))
    assert any(p.rule == "BACKWARD" and "`shift`" in p.detail for p in problems)


def test_compatible_change_must_be_registered_then_passes(copy):
    _edit(copy / "avro" / "AlertAction.avsc",
          lambda s: s["fields"].append({"name": "shift", "type": ["null", "string"], "default": None,
                                        "doc": "Shift id of the operator."}))
    registry = FileRegistry.load(copy / "registry.json")
    problems = check_all(copy / "avro", copy / "examples", registry)
    assert [p.rule for p in problems] == ["registered"]
    before = registry.next_id()
    assert register_locally(copy / "avro", registry) == [f"guardstream.AlertAction: v2 id {before}"]
    registry = FileRegistry.load(copy / "registry.json")
    assert check_all(copy / "avro", copy / "examples", registry) == []
    assert len(registry.subjects["guardstream.AlertAction"].versions) == 2


def test_missing_doc_and_bad_example_are_reported(copy):
    _edit(copy / "avro" / "Telemetry.avsc", lambda s: _field(s, "firmware").pop("doc"))
    (copy / "examples" / "DeviceCommand.jsonl").write_text('{"command_id": 5}\n')
    problems = check_all(copy / "avro", copy / "examples", FileRegistry.load(copy / "registry.json"))
    rules = {(p.subject, p.rule) for p in problems}
    assert ("guardstream.Telemetry", "doc") in rules
    assert ("guardstream.DeviceCommand", "example") in rules


def test_registered_ids_never_change(copy):
    baseline = FileRegistry.load(copy / "registry.json")
    doc = json.loads((copy / "registry.json").read_text())
    doc["subjects"]["guardstream.Geofence"]["versions"][0]["id"] = 999
    (copy / "registry.json").write_text(json.dumps(doc))
    result = _cli("--schemas", str(copy / "avro"), "--registry", str(copy / "registry.json"),
                  "--baseline", str(REGISTRY_FILE))
    assert result.returncode == 1
    assert "guardstream.Geofence: [ids] v1 changed id from" in result.stdout
    assert baseline.subjects["guardstream.Geofence"].versions[0].id != 999


def test_unparsable_schema_is_reported(copy):
    (copy / "avro" / "Broken.avsc").write_text('{"type": "record", "name": "Broken", "fields": [{"name": 1}]}')
    problems = check_all(copy / "avro", copy / "examples", FileRegistry.load(copy / "registry.json"))
    assert any(p.subject == "Broken.avsc" and p.rule == "parse" for p in problems)


def test_transitive_levels_check_every_version():
    as_int = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "doc": "a"}]}
    as_long = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long", "doc": "a"}]}
    # int widens to long: new long readers read old int data, not the other way round
    assert compatibility_problems("R", as_long, [as_int], "BACKWARD") == []
    assert compatibility_problems("R", as_long, [as_int], "FORWARD") != []
    assert compatibility_problems("R", as_long, [as_int], "FULL") != []
    # against the latest (long) only, v3=long is fine; against v1 (int) readers it is not
    assert compatibility_problems("R", as_long, [as_int, as_long], "FORWARD") == []
    assert compatibility_problems("R", as_long, [as_int, as_long], "FORWARD_TRANSITIVE") != []
    assert compatibility_problems("R", as_int, [as_long], "NONE") == []
