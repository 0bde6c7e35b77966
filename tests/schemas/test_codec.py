import io
import json

import fastavro
import pytest

from guardstream.errors import InputError, SchemaError
from guardstream.schemas.codec import Codec, frame_header, read_header
from guardstream.schemas.contracts import EXAMPLES_DIR, current_contracts
from guardstream.schemas.registry import FileRegistry


def _examples(contract):
    parsed = fastavro.parse_schema(contract.schema)
    text = (EXAMPLES_DIR / f"{contract.name}.jsonl").read_text()
    return list(fastavro.json_reader(io.StringIO(text), parsed))


@pytest.fixture(scope="module")
def codec():
    return Codec(FileRegistry.load())


@pytest.mark.parametrize("name", sorted(current_contracts()))
def test_every_contract_round_trips(codec, name):
    contract = current_contracts()[name]
    for record in _examples(contract):
        value = codec.encode(name, record)
        assert value[0] == 0
        assert read_header(value) == codec.schema_id(name)
        decoded_name, decoded = codec.decode(value)
        assert decoded_name == name
        assert decoded == record


def test_ids_come_from_the_registry_file(codec):
    registry = FileRegistry.load()
    for name, contract in current_contracts().items():
        assert codec.schema_id(name) == registry.id_for(name, contract.schema)


def test_wire_format_is_confluent_framing():
    assert frame_header(258) == b"\x00\x00\x00\x01\x02"
    assert read_header(b"\x00\x00\x00\x01\x02rest") == 258


@pytest.mark.parametrize("value, reason", [(b"", "not_avro"), (b"\x01\x00\x00\x00\x01", "not_avro"),
                                           (b"{\"json\": 1}", "not_avro")])
def test_unframed_values_are_input_errors(codec, value, reason):
    with pytest.raises(InputError) as info:
        codec.decode(value)
    assert info.value.reason == reason


def test_truncated_body_is_an_input_error(codec):
    record = _examples(current_contracts()["guardstream.GuardPosition"])[0]
    value = codec.encode("guardstream.GuardPosition", record)
    with pytest.raises(InputError) as info:
        codec.decode(value[:12])
    assert info.value.reason == "bad_avro"


def test_a_record_that_does_not_fit_is_a_schema_error(codec):
    with pytest.raises(SchemaError) as info:
        codec.encode("guardstream.AlertAction", {"action_id": "x"})
    assert info.value.reason == "record_mismatch"
    with pytest.raises(SchemaError):
        codec.encode("guardstream.NoSuchRecord", {})


def test_old_writer_versions_decode_to_todays_shape(tmp_path):
    """Data written with v1 is read with the current reader schema (defaults filled)."""
    contract = current_contracts()["guardstream.AlertAction"]
    old = json.loads(json.dumps(contract.schema))
    old["fields"] = [f for f in old["fields"] if f["name"] != "note"]
    registry = FileRegistry(path=tmp_path / "r.json")
    registry.add("guardstream.AlertAction", old)
    writer = Codec(registry, contracts={"guardstream.AlertAction": type(contract)(contract.full_name, contract.path, old)})
    record = {k: v for k, v in _examples(contract)[0].items() if k != "note"}
    value = writer.encode("guardstream.AlertAction", record)
    reader = Codec(registry)
    _, decoded = reader.decode(value)
    assert decoded["note"] is None and decoded["action_id"] == record["action_id"]
