import pytest
from hypothesis import given, strategies as st

from guardstream.errors import InputError
from guardstream.timespec import iso, parse_time, time_values_attached

NOW = 1_714_557_600_000  # 2024-05-01T10:00:00Z


@pytest.mark.parametrize("text, expected", [
    ("now", NOW),
    ("-15m", NOW - 15 * 60_000),
    ("-2h", NOW - 2 * 3_600_000),
    ("-90s", NOW - 90_000),
    ("-1d", NOW - 86_400_000),
    ("-1w", NOW - 7 * 86_400_000),
    ("-250ms", NOW - 250),
    ("-1.5h", NOW - 5_400_000),
    ("2024-05-01T10:00:00Z", NOW),
    ("2024-05-01T12:00:00+02:00", NOW),
    ("2024-05-01T10:00:00", NOW),  # no offset: UTC
    ("2024-05-01", NOW - 10 * 3_600_000),
    ("2024-05-01T10:00:00.250Z", NOW + 250),
    ("1714557600000", NOW),
    ("  -15m ", NOW - 15 * 60_000),
])
def test_times_operators_type(text, expected):
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "15m", "-15x", "-m", "12345", "2024-13-01", "--1h"])
def test_anything_else_is_a_bad_time(text):
    with pytest.raises(InputError) as info:
        parse_time(text, NOW)
    assert info.value.reason == "bad_time"


def test_iso_prints_milliseconds_in_utc():
    assert iso(NOW + 7) == "2024-05-01T10:00:00.007Z"


@given(st.integers(min_value=10**11, max_value=9_999_999_999_999))
def test_iso_output_reads_back_as_the_same_instant(ms):
    assert parse_time(iso(ms), NOW) == ms


@pytest.mark.parametrize("words, expected", [
    (["t", "--from", "-15m"], ["t", "--from=-15m"]),
    (["--topic", "t", "--from", "-1h", "--to", "-5m", "--into", "x"],
     ["--topic", "t", "--from=-1h", "--to=-5m", "--into", "x"]),
    (["--since", "-2h"], ["--since=-2h"]),
    (["--since", "-1.5h"], ["--since=-1.5h"]),
    (["--from", "-250ms"], ["--from=-250ms"]),
    (["--from", "-5"], ["--from=-5"]),
    (["--from=-15m"], ["--from=-15m"]),
    (["--from", "1700000000000"], ["--from", "1700000000000"]),  # not beginning with "-": argparse reads it
    (["--from", "2024-05-01T10:00:00Z"], ["--from", "2024-05-01T10:00:00Z"]),
    (["--from", "--into", "x"], ["--from", "--into", "x"]),  # no value: argparse says so
    (["--from", "-15x"], ["--from", "-15x"]),  # not a relative time: an unknown option, as before
    (["--max", "-5m"], ["--max", "-5m"]),  # not a time option
    (["--from"], ["--from"]),
    (["t", "--", "--from", "-15m"], ["t", "--", "--from", "-15m"]),  # after "--" every word is positional
    ([], []),
])
def test_time_values_attached(words, expected):
    assert time_values_attached(words) == expected
