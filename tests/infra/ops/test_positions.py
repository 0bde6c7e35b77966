import pytest

from guardstream.errors import InputError
from guardstream.infra.ops.positions import StartAt, parse_offset, starts

BOUNDS = {0: (0, 100), 1: (40, 45), 2: (7, 7)}


@pytest.mark.parametrize("start, expected", [
    (StartAt(), {0: 90, 1: 40, 2: 7}),  # the default: the last 10 of each partition
    (StartAt(last=0), {0: 100, 1: 45, 2: 7}),
    (StartAt(last=None, beginning=True), {0: 0, 1: 40, 2: 7}),
    (StartAt(last=None, offsets={0: 55}), {0: 55}),
    (StartAt(last=None, offsets={1: 3}), {1: 40}),  # before the oldest record: the oldest
    (StartAt(last=None, offsets={1: 99}), {1: 45}),  # past the end: the end
])
def test_where_each_partition_starts(start, expected):
    assert starts(start, BOUNDS) == expected


def test_an_offset_of_a_partition_the_topic_lacks_is_refused():
    with pytest.raises(InputError) as info:
        starts(StartAt(last=None, offsets={9: 0}), BOUNDS)
    assert info.value.reason == "bad_offset"


@pytest.mark.parametrize("spec, parsed", [("0:1200", (0, 1200)), ("3:0", (3, 0))])
def test_offsets_read_partition_colon_offset(spec, parsed):
    assert parse_offset(spec) == parsed


@pytest.mark.parametrize("spec", ["1200", "a:1", "1:-5", "1:"])
def test_bad_offsets_are_refused(spec):
    with pytest.raises(InputError):
        parse_offset(spec)
