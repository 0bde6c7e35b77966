import json

import pytest
from hypothesis import given, strategies as st

from guardstream.errors import InputError
from guardstream.infra.ops.records import (Decoded, Filter, Record, fields_of, headers_view, jsonable, matches,
                                           parse_filters, readable, same, table_row, view)


@pytest.mark.parametrize("data, shown", [
    (None, None),
    (b"", ""),
    (b'{"lat": 1}', '{"lat": 1}'),
    ("héllo".encode(), "héllo"),
    (b"line\ttab\n", "line\ttab\n"),
    (b"\x00\x01", {"base64": "AAE="}),
    (b"\xff\xfe", {"base64": "//4="}),
    (b"\x7f", {"base64": "fw=="}),
])
def test_bytes_show_as_text_or_base64(data, shown):
    assert readable(data) == shown


@given(st.binary(max_size=64))
def test_no_byte_is_lost(data):
    shown = readable(data)
    if isinstance(shown, str):
        assert shown.encode() == data
    else:
        import base64
        assert base64.b64decode(shown["base64"]) == data


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)))
def test_any_decoded_value_becomes_strict_json(value):
    json.dumps(jsonable(value), allow_nan=False)


def test_repeated_headers_keep_every_value():
    assert headers_view((("a", b"1"), ("b", None), ("a", b"\x00"))) == {"a": ["1", {"base64": "AA=="}], "b": None}


def test_view_of_an_avro_record():
    record = Record("t", 2, 41, 1_714_557_600_000, b"dev-1", b"...", (("msg.id", b"abc"),))
    shown = view(record, Decoded("guardstream.DeadLetter", {"payload": b"\x00", "stage": "sink"}))
    assert shown == {"topic": "t", "partition": 2, "offset": 41, "timestamp": "2024-05-01T10:00:00.000Z",
                     "timestamp_ms": 1_714_557_600_000, "key": "dev-1", "headers": {"msg.id": "abc"},
                     "schema": "guardstream.DeadLetter", "value": {"payload": {"base64": "AA=="}, "stage": "sink"}}
    assert table_row(shown) == ["2", "41", "2024-05-01T10:00:00.000Z", "dev-1",
                                '{"payload":{"base64":"AA=="},"stage":"sink"}']


@pytest.mark.parametrize("actual, wanted, result", [
    ("d-1", "d-1", True), ("d-1", "d-2", False),
    (3, "3", True), (3, "3.0", True), (2.5, "2.5", True), (3, "x", False),
    (True, "true", True), (False, "true", False), (None, "null", True), (None, "", False),
    (b"abc", "abc", True), ({"a": 1}, '{"a":1}', True), ("ALERT", "ALERT", True),
])
def test_a_filter_compares_like_an_operator_means(actual, wanted, result):
    assert same(actual, wanted) is result


def test_filters_match_key_and_top_level_fields_all_at_once():
    filters = parse_filters(["key=dev-1", "kind=PANIC"])
    assert matches(filters, b"dev-1", {"kind": "PANIC"})
    assert not matches(filters, b"dev-2", {"kind": "PANIC"})
    assert not matches(filters, b"dev-1", {"kind": "SOS"})
    assert not matches(filters, b"dev-1", None)
    assert not matches([Filter("key", "x")], None, {})


def test_a_raw_json_payload_is_filterable_and_other_payloads_are_not():
    assert fields_of(Decoded(None, b'{"device_id": "d", "n": 1}')) == {"device_id": "d", "n": 1}
    assert fields_of(Decoded(None, b"[1, 2]")) is None
    assert fields_of(Decoded(None, b"\xff")) is None
    assert fields_of(Decoded(None, None)) is None


@pytest.mark.parametrize("spec", ["novalue", "=x", ""])
def test_a_filter_needs_a_field_and_an_equals(spec):
    with pytest.raises(InputError) as info:
        parse_filters([spec])
    assert info.value.reason == "bad_filter"
