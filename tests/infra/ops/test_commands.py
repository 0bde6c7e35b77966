"""How the operator subcommands read their words: a relative time after a time option is its value."""

import pytest

from guardstream.cli import parse_args


@pytest.mark.parametrize("argv, field, value", [
    (["tail", "t", "--from", "-15m"], "from_time", "-15m"),
    (["tail", "t", "--from=-15m"], "from_time", "-15m"),
    (["replay", "--topic", "t", "--from", "-1h", "--into", "x"], "from_time", "-1h"),
    (["replay", "--topic", "t", "--from", "-2h", "--to", "-1h", "--into", "x"], "to", "-1h"),
    (["dlq", "inspect", "--since", "-2h"], "since", "-2h"),
    (["dlq", "replay", "--stage", "bridge", "--since", "-1d"], "since", "-1d"),
])
def test_relative_times_parse_as_values(argv, field, value):
    assert getattr(parse_args(argv), field) == value
