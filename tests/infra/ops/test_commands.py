"""How the operator subcommands read their words: a relative time after a time option is its value."""

import pytest

from guardstream.cli import build_parser
from guardstream.infra.ops.commands import time_values_attached


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


@pytest.mark.parametrize("argv, field, value", [
    (["tail", "t", "--from", "-15m"], "from_time", "-15m"),
    (["tail", "t", "--from=-15m"], "from_time", "-15m"),
    (["replay", "--topic", "t", "--from", "-1h", "--into", "x"], "from_time", "-1h"),
    (["replay", "--topic", "t", "--from", "-2h", "--to", "-1h", "--into", "x"], "to", "-1h"),
    (["dlq", "inspect", "--since", "-2h"], "since", "-2h"),
    (["dlq", "replay", "--stage", "bridge", "--since", "-1d"], "since", "-1d"),
])
def test_relative_times_parse_as_values(argv, field, value):
    assert getattr(build_parser().parse_args(argv), field) == value
