"""The replay's arithmetic, including a crash at any point of a chunk followed by a resume."""

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from guardstream.infra.ops.replay_plan import (REPLAY_ID, REPLAY_SOURCE, Checkpoint, already_copied, copy_headers,
                                               destination_partition, in_window, last_copied, murmur2,
                                               parse_source_tag, replay_id, source_tag)


def test_the_id_depends_on_every_argument_and_only_on_them():
    base = replay_id("raw.x", "into:y", "-2h", None)
    assert base == replay_id("raw.x", "into:y", " -2h ", "")
    assert len({base, replay_id("raw.x", "into:z", "-2h", None), replay_id("raw.x", "into:y", "-3h", None),
                replay_id("raw.x", "into:y", "-2h", "-1h"), replay_id("raw.w", "into:y", "-2h", None)}) == 5


@pytest.mark.parametrize("key, expected", [(b"", 275646681), (b"21", -973932308), (b"foobar", -790332482),
                                           (b"a-little-bit-long-string", -985981536)])
def test_murmur2_is_kafkas(key, expected):
    # vectors of Kafka's own UtilsTest (the Java client's partitioner hash)
    assert murmur2(key) == expected


@pytest.mark.parametrize("key, source, counts, dest", [
    (b"k", 4, (6, 6), 4),  # same layout: the source partition
    (None, 5, (6, 4), 1),  # no key: source partition modulo the count
    (b"21", 0, (6, 3), (-973932308 & 0x7FFFFFFF) % 3),  # otherwise: by key, as the Java client
])
def test_destination_partition(key, source, counts, dest):
    assert destination_partition(key, source, *counts) == dest


def test_headers_keep_their_order_and_name_the_copy_once():
    headers = [("msg.id", b"a"), (REPLAY_SOURCE, b"old/0/1"), ("x", None), (REPLAY_ID, b"old")]
    assert copy_headers(headers, "abc", b"t/1/7") == [("msg.id", b"a"), ("x", None), (REPLAY_ID, b"abc"),
                                                       (REPLAY_SOURCE, b"t/1/7")]


@pytest.mark.parametrize("value, parsed", [(source_tag("raw.guard", 3, 17), ("raw.guard", 3, 17)),
                                           (b"a/b", None), (b"t/x/1", None), (None, None), (b"", None)])
def test_source_tags(value, parsed):
    assert parse_source_tag(value) == parsed


@pytest.mark.parametrize("stamp, window, inside", [(5, (5, None), True), (4, (5, None), False),
                                                   (9, (5, 10), True), (10, (5, 10), False)])
def test_the_window_is_half_open(stamp, window, inside):
    assert in_window(stamp, *window) is inside


def test_last_copied_ignores_other_replays_and_other_sources():
    tags = [(0, b"r1", b"src/0/5"), (0, b"r1", b"src/0/9"), (0, b"r2", b"src/0/50"), (1, b"r1", b"src/2/3"),
            (1, b"r1", b"other/2/99"), (1, None, None), (1, b"r1", b"garbage")]
    assert last_copied(tags, "r1", "src") == {(0, 0): 9, (2, 1): 3}
    assert already_copied({(0, 0): 9}, 0, 0, 9) and not already_copied({(0, 0): 9}, 0, 0, 10)
    assert not already_copied({(0, 0): 9}, 0, 1, 1)


def test_checkpoint_round_trips_through_json():
    import json
    cp = Checkpoint("id", "s", "d", 1, None, {0: (3, 9), 2: (0, 0)}, {0: 5, 2: 0}, {0: 12, 1: 0}, 3, 2,
                    copied=2, outside=1, extra={"from": "-1h"})
    again = Checkpoint.from_json(json.loads(json.dumps(cp.to_json())))
    assert again == cp
    assert (again.remaining(), again.total()) == (4, 6)


# -- a crash anywhere, then a resume: every record copied exactly once ------------------------

def _simulate(records, source_parts, dest_parts, chunk, crash_after, kept):
    """Copy ``records`` [(partition, offset, key)] chunk by chunk; crash after ``crash_after`` produces,
    when each destination partition keeps only a prefix of what the crashed chunk sent to it (``kept``
    draws the prefix lengths); then resume as replay.copy does. Returns the destination's copies."""
    dest = {d: [] for d in range(dest_parts)}  # destination partition -> [(source partition, offset)]
    positions = {p: 0 for p in range(source_parts)}
    marks = {d: 0 for d in range(dest_parts)}
    by_partition = {p: [r for r in records if r[0] == p] for p in range(source_parts)}
    order = list(records)  # the reader's interleaving: as given
    produced, pending = 0, {d: [] for d in range(dest_parts)}
    crashed = False
    in_chunk = 0
    for partition, offset, key in order:
        if produced == crash_after:
            crashed = True
            break
        d = destination_partition(key, partition, source_parts, dest_parts)
        pending[d].append((partition, offset))
        produced += 1
        in_chunk += 1
        if in_chunk == chunk:  # flush: everything acknowledged, then the checkpoint
            for each, copies in pending.items():
                dest[each].extend(copies)
                marks[each] = len(dest[each])
            pending = {d: [] for d in range(dest_parts)}
            positions.update({p: o + 1 for p, o, _ in order[:produced]})
            in_chunk = 0
    if not crashed:
        for each, copies in pending.items():
            dest[each].extend(copies)
        return dest
    for each, copies in pending.items():  # the crash: an in-order prefix of each partition's copies landed
        dest[each].extend(copies[:kept.draw(st.integers(0, len(copies)))])
    tags = [(d, b"rid", source_tag("src", p, o)) for d, copies in dest.items() for p, o in copies[marks[d]:]]
    last = last_copied(tags, "rid", "src")
    for p, rows in by_partition.items():
        for partition, offset, key in rows:
            if offset < positions[p]:
                continue
            d = destination_partition(key, partition, source_parts, dest_parts)
            if not already_copied(last, partition, d, offset):
                dest[d].append((partition, offset))
    return dest


@hsettings(max_examples=200, deadline=None)
@given(st.data())
def test_a_resume_after_a_crash_anywhere_copies_every_record_exactly_once(data):
    source_parts = data.draw(st.integers(1, 4))
    dest_parts = data.draw(st.integers(1, 4))
    counts = data.draw(st.lists(st.integers(0, 12), min_size=source_parts, max_size=source_parts))
    records = [(p, o, data.draw(st.sampled_from([None, b"a", b"b", b"c", b"dev-7"])))
               for p in range(source_parts) for o in range(counts[p])]
    records = data.draw(st.permutations(records))
    records.sort(key=lambda r: (r[0], r[1]))  # within a partition the reader keeps offset order...
    interleaving = data.draw(st.permutations(records))
    # ...and across partitions it interleaves freely: rebuild each partition's order in the drawn interleaving
    queues = {p: [r for r in records if r[0] == p] for p in range(source_parts)}
    order = [queues[r[0]].pop(0) for r in interleaving]
    chunk = data.draw(st.integers(1, 5))
    crash_after = data.draw(st.integers(0, len(order)))
    dest = _simulate(order, source_parts, dest_parts, chunk, crash_after, data)
    copies = sorted(c for each in dest.values() for c in each)
    assert copies == sorted((p, o) for p, o, _ in order)
