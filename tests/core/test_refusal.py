"""``Refused``: the value every stage returns for input it will not pass on."""

from __future__ import annotations

import dataclasses

import pytest

from guardstream.errors import InputError
from guardstream.refusal import Refused


def test_a_refusal_carries_a_reason_code_and_a_detail():
    assert Refused("not_json", "payload is not JSON").reason == "not_json"
    assert Refused("not_json", "payload is not JSON") == Refused("not_json", "payload is not JSON")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Refused("not_json", "x").reason = "other"  # type: ignore[misc]


@pytest.mark.parametrize(("error", "expected"), [
    (InputError("field 'lat' is missing", reason="missing_field"), Refused("missing_field", "field 'lat' is missing")),
    (InputError("topic a/b maps to no raw topic", reason="unmapped_topic"),
     Refused("unmapped_topic", "topic a/b maps to no raw topic")),
    (InputError("something unusable"), Refused("bad_input", "something unusable")),  # the class's default reason
])
def test_an_input_error_becomes_the_refusal_it_describes(error: InputError, expected: Refused):
    assert Refused.of(error) == expected
