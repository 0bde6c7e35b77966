"""Fleet files in, Device records or row-numbered problems out; pure."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from guardstream.streams.device_import import REASONS, parse

AT = 1_795_000_000_000


def test_a_csv_fleet_with_per_row_tenants_and_defaults():
    text = "id,tenant,kind,site,enabled\ng1,acme,guard,hq,\ns1,globex,Sensor,,no\n\nr1,acme,,,TRUE\n"
    records, problems = parse(text, "csv", AT)
    assert problems == []
    assert [(r["device_id"], r["tenant"], r["kind"], r["site_id"], r["enabled"]) for r in records] == [
        ("g1", "acme", "GUARD", "hq", True), ("s1", "globex", "SENSOR", None, False),
        ("r1", "acme", "DEVICE", None, True)]
    assert {r["updated_ms"] for r in records} == {AT}


def test_a_json_fleet_takes_the_old_fleets_integer_ids():
    text = json.dumps([{"device_id": 123, "tenant": 1, "kind": "guard"}, {"id": "door-3", "tenant": "acme",
                                                                           "enabled": False}])
    records, problems = parse(text, "json", AT)
    assert problems == []
    assert [(r["device_id"], r["tenant"], r["enabled"]) for r in records] == [("123", "1", True),
                                                                              ("door-3", "acme", False)]


CSV_PROBLEMS = [
    ("bad id,acme,guard,,", "bad_id"),
    ("g/1,acme,guard,,", "bad_id"),
    ("g1,ac me,guard,,", "bad_id"),
    ("g1,acme,guard,site 1,", "bad_id"),
    (",acme,guard,,", "missing_field"),
    ("g1,,guard,,", "missing_field"),
    ("g1,acme,robot,,", "unknown_kind"),
    ("g1,acme,guard,,maybe", "bad_value"),
    ("g1,acme,guard,,,surplus", "unknown_field"),
]


@pytest.mark.parametrize(("line", "reason"), CSV_PROBLEMS)
def test_a_bad_csv_row_is_named_by_its_line_and_reason(line, reason):
    records, problems = parse(f"device_id,tenant,kind,site_id,enabled\nok-1,acme,guard,,\n{line}\n", "csv", AT)
    assert [r["device_id"] for r in records] == ["ok-1"]
    assert [(p.row, p.reason) for p in problems] == [(3, reason)]
    assert reason in REASONS and problems[0].detail


def test_duplicates_unknown_columns_and_unreadable_files():
    _, problems = parse("device_id,tenant\ng1,acme\ng2,acme\ng1,globex\n", "csv", AT)
    assert [(p.row, p.device_id, p.reason, p.detail) for p in problems] == [(4, "g1", "duplicate_id", "also in row 2")]
    _, problems = parse("device_id,tenant,colour\ng1,acme,red\n", "csv", AT)
    assert [(p.row, p.reason) for p in problems] == [(2, "unknown_field")]
    _, problems = parse('[{"device_id": "g1", "tenant": "acme"}, 7]', "json", AT)
    assert [(p.row, p.reason) for p in problems] == [(2, "bad_value")]
    for text, fmt in (("{", "json"), ('{"device_id": "g1"}', "json"), ("", "csv")):
        _, problems = parse(text, fmt, AT)
        assert [(p.row, p.reason) for p in problems] == [(0, "not_readable")]


def test_a_spreadsheets_trailing_empty_column_is_no_field():
    records, problems = parse("device_id,tenant,\ng1,acme,\n", "csv", AT)
    assert problems == [] and [r["device_id"] for r in records] == ["g1"]


@given(st.text(max_size=300), st.sampled_from(["csv", "json"]))
def test_any_text_gives_records_or_problems_never_an_exception(text, fmt):
    records, problems = parse(text, fmt, AT)
    assert all(p.reason in REASONS for p in problems)
    assert len({r["device_id"] for r in records}) == len(records)
