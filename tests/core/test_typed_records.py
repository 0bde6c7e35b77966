"""Each typed record of ``guardstream/records.py`` against its ``.avsc``: name, fields, types, defaults, constructor.

Named test_typed_records so it does not collide with tests/infra/ops/test_records.py (one module namespace).
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

import fastavro
import fastavro.validation
import pytest

from guardstream import records
from guardstream.schemas.contracts import Contract, current_contracts

CONTRACTS = sorted(current_contracts().values(), key=lambda c: c.full_name)
PRIMITIVES: dict[str, Any] = {"null": type(None), "boolean": bool, "int": int, "long": int, "float": float,
                              "double": float, "bytes": bytes, "string": str}
# A value of each Python type that fits the Avro type it stands for.
SAMPLES: dict[Any, Any] = {str: "x", int: 7, float: 1.5, bool: True, bytes: b"\x00b", type(None): None}


def python_type(avro: Any) -> Any:
    """The annotation a typed record gives a field of Avro type ``avro``."""
    if isinstance(avro, list):
        return typing.Union[tuple(python_type(member) for member in avro)]
    if isinstance(avro, dict):
        kind = avro["type"]
        if kind == "enum":
            return str
        if kind == "array":
            return list[python_type(avro["items"])]
        if kind == "map":
            return dict[str, python_type(avro["values"])]
        return python_type(kind)
    return PRIMITIVES[avro]


@pytest.mark.parametrize(("avro", "expected"), [
    ("string", str), ("long", int), ("int", int), ("double", float), ("boolean", bool), ("bytes", bytes),
    (["null", "string"], str | None), (["null", "long"], int | None), (["null", "bytes"], bytes | None),
    ({"type": "enum", "name": "E", "symbols": ["A"]}, str), ({"type": "array", "items": "string"}, list[str]),
    ({"type": "map", "values": "double"}, dict[str, float]), ({"type": "string"}, str),
])
def test_avro_types_have_one_python_annotation(avro: Any, expected: Any) -> None:
    assert python_type(avro) == expected


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def typed_definition(contract: Contract) -> type:
    return getattr(records, contract.name)


def sample(annotation: Any) -> Any:
    if annotation in SAMPLES:
        return SAMPLES[annotation]
    origin = typing.get_origin(annotation)
    if origin is list:
        return [sample(typing.get_args(annotation)[0])]
    if origin is dict:
        return {"k": sample(typing.get_args(annotation)[1])}
    return sample(typing.get_args(annotation)[0])  # a union: its first member


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_every_contract_has_its_name_constant(contract: Contract) -> None:
    assert getattr(records, snake(contract.name).upper()) == contract.full_name


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_the_typed_definition_has_the_fields_and_types_of_the_schema(contract: Contract) -> None:
    hints = typing.get_type_hints(typed_definition(contract))
    fields = contract.schema["fields"]
    assert list(hints) == [f["name"] for f in fields]
    assert hints == {f["name"]: python_type(f["type"]) for f in fields}
    assert typed_definition(contract).__total__


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_the_constructor_takes_each_field_by_name_with_the_schemas_default(contract: Contract) -> None:
    constructor = getattr(records, snake(contract.name))
    parameters = inspect.signature(constructor).parameters
    assert list(parameters) == [f["name"] for f in contract.schema["fields"]]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    for field in contract.schema["fields"]:
        default = parameters[field["name"]].default
        if default is not inspect.Parameter.empty:
            assert "default" in field and default == field["default"], field["name"]
        elif "default" in field:
            # a mutable default would be shared between records: callers pass the empty list or map
            assert field["default"] in ([], {}), field["name"]


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_the_constructor_builds_a_record_that_fits_the_schema(contract: Contract) -> None:
    constructor = getattr(records, snake(contract.name))
    hints = typing.get_type_hints(typed_definition(contract))
    required = [name for name, p in inspect.signature(constructor).parameters.items()
                if p.default is inspect.Parameter.empty]
    values = {name: sample(hints[name]) for name in required}
    record = constructor(**values)
    assert type(record) is dict and list(record) == list(hints)
    assert {name: record[name] for name in required} == values
    enums = {f["name"]: f["type"]["symbols"][0] for f in contract.schema["fields"]
             if isinstance(f["type"], dict) and f["type"]["type"] == "enum"}
    assert fastavro.validation.validate({**record, **enums}, fastavro.parse_schema(contract.schema))


def test_every_typed_definition_has_its_contract() -> None:
    typed = {name for name, value in vars(records).items()
             if isinstance(value, type) and typing.is_typeddict(value)}
    assert typed == {c.name for c in CONTRACTS}


def test_every_alert_action_has_the_status_it_leaves_the_alert_in() -> None:
    [action] = [f for f in current_contracts()[records.ALERT_ACTION].schema["fields"] if f["name"] == "action"]
    assert list(records.ACTION_STATUS) == action["type"]["symbols"]
