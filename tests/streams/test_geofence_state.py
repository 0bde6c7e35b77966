"""The geofence state machine: case tables, scenarios, and hypothesis properties."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardstream.errors import ConfigError, InputError
from guardstream.streams.geofence import EARTH_RADIUS_M, Fence, FenceIndex, fence_from_record
from guardstream.streams.geofence_state import (
    TRANSITIONS,
    Action,
    DeviceState,
    Fix,
    FixResult,
    GeofenceTransition,
    Membership,
    Observation,
    Params,
    UntilN,
    ViolationEnded,
    ViolationStarted,
    apply_batch,
    apply_fix,
    fence_removed,
    next_step,
    transition_table_markdown,
)

# A site: one city block by Alexanderplatz (~135 m x 111 m), GeoJSON [lon, lat].
BLOCK = [[13.400, 52.520], [13.402, 52.520], [13.402, 52.521], [13.400, 52.521], [13.400, 52.520]]
LAT = 52.5205  # the block's middle latitude; every test walks along it
M_PER_DEG_LON = math.pi / 180 * EARTH_RADIUS_M * math.cos(math.radians(LAT))


def east_of_block(metres: float) -> float:
    """Longitude that many metres east of the block's east edge."""
    return 13.402 + metres / M_PER_DEG_LON


INSIDE = 13.4005  # inside the site, 34 m west of the vault's centre
NEAR = east_of_block(10)  # within H = 25 m of the border
FAR = east_of_block(100)
VAULT = 13.4010  # centre of a 15 m restricted circle inside the site


def fence(fence_id: str, geometry: dict, *, kind: str = "SITE", tenant: str = "acme",
          radius_m: float | None = None, updated_ms: int = 1) -> Fence:
    return fence_from_record({"fence_id": fence_id, "tenant": tenant, "name": fence_id, "kind": kind,
                              "geometry": json.dumps(geometry), "radius_m": radius_m, "updated_ms": updated_ms})


SITE = fence("site", {"type": "Polygon", "coordinates": [BLOCK]})
VAULT_FENCE = fence("vault", {"type": "Point", "coordinates": [VAULT, LAT]}, kind="RESTRICTED", radius_m=15)
# A tenant with only a restricted zone, over the same block.
INITECH_ZONE = fence("initech-zone", {"type": "Polygon", "coordinates": [BLOCK]}, kind="RESTRICTED",
                     tenant="initech")
INDEX = FenceIndex.build([SITE, VAULT_FENCE, INITECH_ZONE])
SITE_ONLY = FenceIndex.build([SITE])


def fix(ts_s: float, lon: float, *, device: str = "guard-7", tenant: str = "acme",
        accuracy_m: float | None = 5.0, lat: float = LAT) -> Fix:
    return Fix(device_id=device, tenant=tenant, ts_ms=int(ts_s * 1000), lat=lat, lon=lon,
               accuracy_m=accuracy_m, event_id=f"{device}-{int(ts_s * 1000)}")


def run(fixes: Iterable[Fix], index: FenceIndex = SITE_ONLY, params: Params = Params(),
        state: DeviceState | None = None) -> tuple[DeviceState, list[FixResult]]:
    results = []
    for one in fixes:
        result = apply_fix(state, one, index, params)
        state = result.state
        results.append(result)
    return state, results


def transitions(results: list[FixResult]) -> list[tuple]:
    return [(o.fence_id, o.transition, o.ts_ms, o.dwell_ms, o.cause)
            for r in results for o in r.outputs if isinstance(o, GeofenceTransition)]


def of_type(results: list[FixResult], kind: type) -> list:
    return [o for r in results for o in r.outputs if isinstance(o, kind)]


# --- the table itself ------------------------------------------------------

def test_table_is_total() -> None:
    assert set(TRANSITIONS) == set(itertools.product(Membership, Observation))


def test_markdown_lists_every_table_entry() -> None:
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|"))
            for line in transition_table_markdown().splitlines() if line.startswith("| ") and "State" not in line}
    expected = set()
    for (state, observation), entry in TRANSITIONS.items():
        steps = [entry.below, entry.reached] if isinstance(entry, UntilN) else [entry]
        for step in steps:
            expected.add((str(state), str(observation), str(step.next), str(step.action or "-"), str(step.counter)))
    assert {(s, o, n, a, c) for s, o, _cond, n, a, c in rows} == expected
    assert len(rows) == len(expected) == 14


@pytest.mark.parametrize(("state", "observation", "count", "n", "expected"), [
    (Membership.OUTSIDE, Observation.IN, 0, 3, (Membership.INSIDE, Action.ENTER, 0)),
    (Membership.INSIDE, Observation.OUT_NEAR, 0, 3, (Membership.LEAVING, None, 1)),
    (Membership.INSIDE, Observation.OUT_NEAR, 0, 1, (Membership.OUTSIDE, Action.EXIT, 0)),
    (Membership.LEAVING, Observation.OUT_NEAR, 1, 3, (Membership.LEAVING, None, 2)),
    (Membership.LEAVING, Observation.OUT_NEAR, 2, 3, (Membership.OUTSIDE, Action.EXIT, 0)),
    (Membership.LEAVING, Observation.IN, 2, 3, (Membership.INSIDE, None, 0)),
    (Membership.LEAVING, Observation.OUT_FAR, 1, 3, (Membership.OUTSIDE, Action.EXIT, 0)),
    (Membership.INSIDE, Observation.FENCE_DELETED, 0, 3, (Membership.OUTSIDE, Action.EXIT, 0)),
])
def test_next_step(state, observation, count, n, expected) -> None:
    step, new_count = next_step(state, observation, count, n)
    assert (step.next, step.action, new_count) == expected


# --- scenarios ---------------------------------------------------------------

def test_clean_enter_and_exit_with_dwell_time() -> None:
    _, results = run([fix(0, FAR), fix(10, INSIDE), fix(70, INSIDE), fix(130, FAR)])
    assert transitions(results) == [("site", Action.ENTER, 10_000, None, "fix"),
                                    ("site", Action.EXIT, 130_000, 120_000, "fix")]
    assert [r.enrichment.fences for r in results] == [(), ("site",), ("site",), ()]
    assert [r.enrichment.in_site for r in results] == [False, True, True, False]


@pytest.mark.parametrize("pattern", ["IN NEAR IN NEAR IN NEAR IN", "IN NEAR NEAR IN NEAR NEAR IN NEAR NEAR",
                                     "NEAR IN NEAR IN NEAR IN"])
def test_jitter_along_the_border_does_not_flap(pattern: str) -> None:
    where = {"IN": INSIDE, "NEAR": NEAR}
    _, results = run(fix(t, where[w]) for t, w in enumerate(pattern.split()))
    assert [t[1] for t in transitions(results)] == [Action.ENTER]
    assert all(r.enrichment.fences == ("site",) for r in results if r.state.fences)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_exit_after_n_consecutive_near_fixes(n: int) -> None:
    fixes = [fix(0, INSIDE)] + [fix(t, NEAR) for t in range(1, n + 2)]
    _, results = run(fixes, params=Params(exit_fixes=n))
    assert transitions(results)[1:] == [("site", Action.EXIT, n * 1000, n * 1000, "fix")]
    # until the exit the device is LEAVING, and still reported inside the fence
    assert all(r.enrichment.fences == ("site",) for r in results[:n])


def test_one_far_fix_exits_at_once_even_while_leaving() -> None:
    _, results = run([fix(0, INSIDE), fix(1, NEAR), fix(2, FAR)])
    assert transitions(results)[1] == ("site", Action.EXIT, 2000, 2000, "fix")


def test_exit_margin_decides_near_or_far() -> None:
    state, _ = run([fix(0, INSIDE)])
    _, [near] = run([fix(1, east_of_block(24))], state=state)
    _, [far] = run([fix(1, east_of_block(26))], state=state)
    assert near.outputs == [] and near.state.fences["site"].state is Membership.LEAVING
    assert [t[1] for t in transitions([far])] == [Action.EXIT]


@pytest.mark.parametrize("late_ts", [4.999, 5.0])
def test_stale_fix_never_moves_state_backwards(late_ts: float) -> None:
    state, _ = run([fix(0, FAR), fix(5, INSIDE)])
    result = apply_fix(state, fix(late_ts, FAR), SITE_ONLY)
    assert result.state is state and result.outputs == [] and result.skipped == "stale"
    assert result.enrichment.fences == ("site",)


def test_poor_accuracy_fix_changes_nothing_but_is_enriched() -> None:
    state, _ = run([fix(0, INSIDE)])
    result = apply_fix(state, fix(1, FAR, accuracy_m=150), SITE_ONLY)
    assert result.state is state and result.outputs == [] and result.skipped == "poor_accuracy"
    assert result.enrichment.fences == ("site",) and result.enrichment.in_site is True
    assert apply_fix(state, fix(1, FAR, accuracy_m=100), SITE_ONLY).outputs  # exactly A is usable
    assert apply_fix(state, fix(1, FAR, accuracy_m=None), SITE_ONLY).outputs  # unknown accuracy is usable


def test_fence_deleted_mid_stream_exits_on_next_fix() -> None:
    state, _ = run([fix(0, INSIDE), fix(10, INSIDE)])
    result = apply_fix(state, fix(30, INSIDE), FenceIndex.build([]))
    assert transitions([result]) == [("site", Action.EXIT, 30_000, 30_000, "fence_deleted")]
    assert result.enrichment.fences == () and result.enrichment.in_site is None


def test_fence_removed_exits_without_waiting_for_a_fix() -> None:
    state, _ = run([fix(0, INSIDE), fix(1, NEAR)])
    new_state, [event] = fence_removed(state, "site", now_ms=60_000)
    assert (event.transition, event.cause) == (Action.EXIT, "fence_deleted")
    assert (event.ts_ms, event.dwell_ms) == (60_000, 60_000)
    assert (event.lat, event.lon, event.fence_kind) == (LAT, NEAR, "SITE")
    assert new_state.fences == {} and fence_removed(new_state, "site", 61_000) == (new_state, [])
    assert fence_removed(state, "site", 60_000, cause="fence_changed")[1][0].cause == "fence_changed"
    # the next fix, against an index without the fence, has nothing left to exit
    assert transitions(run([fix(61, INSIDE)], FenceIndex.build([]), state=new_state)[1]) == []


def test_fence_moved_away_exits_as_fence_changed() -> None:
    state, _ = run([fix(0, INSIDE)])
    moved_north = fence("site", {"type": "Polygon", "coordinates": [[[x, y + 0.01] for x, y in BLOCK]]},
                        updated_ms=2)
    _, [result] = run([fix(10, INSIDE)], FenceIndex.build([moved_north]), state=state)
    assert transitions([result]) == [("site", Action.EXIT, 10_000, 10_000, "fence_changed")]


def test_fence_reshaped_around_the_guard_keeps_it_inside() -> None:
    state, _ = run([fix(0, INSIDE)])
    grown = fence("site", {"type": "Polygon", "coordinates": [[[x * 1.00001, y] for x, y in BLOCK]]}, updated_ms=2)
    _, [result] = run([fix(10, INSIDE)], FenceIndex.build([grown]), state=state)
    assert result.outputs == [] and result.enrichment.fences == ("site",)


def test_violation_is_raised_once_per_episode() -> None:
    outside_again = [fix(t, FAR) for t in range(20, 25)]
    _, results = run([fix(t, FAR) for t in range(5)] + [fix(10, INSIDE)] + outside_again)
    started, ended = of_type(results, ViolationStarted), of_type(results, ViolationEnded)
    assert [(v.ts_ms, v.cause) for v in started] == [(0, "outside_sites"), (20_000, "outside_sites")]
    assert [v.ts_ms for v in ended] == [10_000]
    assert [r.enrichment.violation for r in results] == [True] * 5 + [False] + [True] * 5


def test_restricted_zone_violation() -> None:
    leave_vault = [fix(t, INSIDE) for t in (3, 4, 5)]  # 19 m outside the vault: near, so N fixes
    _, results = run([fix(1, INSIDE), fix(2, VAULT)] + leave_vault, INDEX)
    assert transitions(results) == [("site", Action.ENTER, 1000, None, "fix"),
                                    ("vault", Action.ENTER, 2000, None, "fix"),
                                    ("vault", Action.EXIT, 5000, 3000, "fix")]
    [started] = of_type(results, ViolationStarted)
    assert (started.cause, started.restricted_fences, started.ts_ms) == ("restricted_zone", ("vault",), 2000)
    assert [v.ts_ms for v in of_type(results, ViolationEnded)] == [5000]
    assert [r.enrichment.in_site for r in results] == [True] * 5


def test_tenant_without_sites_is_never_in_violation_for_being_outside() -> None:
    _, results = run([fix(t, FAR, tenant="initech") for t in range(3)] + [fix(5, INSIDE, tenant="initech")], INDEX)
    assert [r.enrichment.in_site for r in results] == [None] * 4
    assert [r.enrichment.violation for r in results] == [False, False, False, True]
    assert [v.cause for v in of_type(results, ViolationStarted)] == ["restricted_zone"]
    assert transitions(results) == [("initech-zone", Action.ENTER, 5000, None, "fix")]


def test_exits_are_reported_before_enters() -> None:
    east = fence("east", {"type": "Polygon", "coordinates": [[[x + 0.0021, y] for x, y in BLOCK]]})
    index = FenceIndex.build([SITE, east])
    _, results = run([fix(0, INSIDE), fix(1, 13.4030)], index)
    assert [(t[0], t[1]) for t in transitions(results)] == [
        ("site", Action.ENTER), ("site", Action.EXIT), ("east", Action.ENTER)]


def test_batch_chains_several_fixes_per_device() -> None:
    fixes = [fix(0, INSIDE, device="a"), fix(0, FAR, device="b"), fix(1, FAR, device="a"),
             fix(2, INSIDE, device="a"), fix(1, INSIDE, device="b"), fix(1, FAR, device="a")]
    states, results = apply_batch({}, fixes, SITE_ONLY)
    assert [(o.transition, o.ts_ms) for r in results for o in r.outputs if isinstance(o, GeofenceTransition)] == [
        (Action.ENTER, 0), (Action.EXIT, 1000), (Action.ENTER, 2000), (Action.ENTER, 1000)]
    assert results[-1].skipped == "stale"
    assert set(states) == {"a", "b"} and states["a"] is results[5].state
    assert states["a"].fences.keys() == states["b"].fences.keys() == {"site"}


def test_state_round_trips_through_json() -> None:
    state, _ = run([fix(0, INSIDE), fix(1, VAULT), fix(2, INSIDE)], INDEX)
    assert state.fences["vault"].state is Membership.LEAVING and state.violation_open
    assert DeviceState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@pytest.mark.parametrize("changes", [{"exit_margin_m": -1}, {"exit_fixes": 0}, {"max_accuracy_m": 0}])
def test_bad_params_are_config_errors(changes: dict) -> None:
    with pytest.raises(ConfigError):
        Params(**changes)


@pytest.mark.parametrize(("lat", "lon"), [(91.0, 13.4), (52.5, 181.0), (math.nan, 13.4), (52.5, math.inf)])
def test_fix_with_impossible_coordinates_is_input_error(lat: float, lon: float) -> None:
    with pytest.raises(InputError) as caught:
        Fix("guard-7", "acme", 0, lat, lon)
    assert caught.value.reason == "bad_coordinates"


# --- properties ----------------------------------------------------------------

FENCE_VERSIONS = [SITE, VAULT_FENCE,
                  fence("site", {"type": "Polygon", "coordinates": [[[x + 0.001, y] for x, y in BLOCK]]},
                        updated_ms=2)]

def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """Pick among strategies in proportion to the weights (``one_of`` does not weigh)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(pool) - 1).flatmap(lambda i: pool[i])


# Mostly usable, in-order fixes at the interesting places, so that the walk
# really enters, leaves and re-enters; sometimes stale, inaccurate or anywhere.
fixes_strategy = st.builds(
    lambda device, dt, position, accuracy: (device, dt, *position, accuracy),
    st.sampled_from(["guard-1", "guard-2"]),
    weighted((8, st.integers(1, 60_000)), (1, st.integers(-5_000, 0))),
    weighted((4, st.tuples(st.just(LAT), st.sampled_from([INSIDE, NEAR, FAR, VAULT]))),
             (1, st.tuples(st.floats(52.5195, 52.5215), st.floats(13.3990, 13.4040)))),
    weighted((4, st.none()), (4, st.floats(0, 100)), (1, st.floats(100, 1e6))),
)
index_strategy = st.lists(st.sampled_from(range(len(FENCE_VERSIONS))), unique=True).map(
    lambda picks: FenceIndex.build({FENCE_VERSIONS[i].fence_id: FENCE_VERSIONS[i] for i in picks}.values()))
steps_strategy = st.lists(weighted(
    (12, fixes_strategy.map(lambda f: ("fix", f))),
    (1, index_strategy.map(lambda i: ("index", i))),
    (1, st.sampled_from(["site", "vault"]).map(lambda f: ("remove", f))),
), max_size=60)


def check_events_tell_the_story(outputs: list, states: dict[str, DeviceState]) -> None:
    """ENTER and EXIT alternate per (device, fence), starting with ENTER, and the
    fences entered but not yet exited are exactly the ones the state holds;
    ViolationStarted and ViolationEnded alternate likewise."""
    last: dict[tuple[str, str], object] = {}
    for out in outputs:
        if isinstance(out, GeofenceTransition):
            key, value = (out.device_id, out.fence_id), out.transition
            expected = Action.EXIT if last.get(key) is Action.ENTER else Action.ENTER
        else:
            key, value = (out.device_id, "violation"), type(out)
            expected = ViolationEnded if last.get(key) is ViolationStarted else ViolationStarted
        assert value is expected, f"{value} after {last.get(key)} for {key}"
        last[key] = value
    for device, state in states.items():
        entered = {fence_id for (d, fence_id), v in last.items() if d == device and v is Action.ENTER}
        assert entered == set(state.fences)
        assert state.violation_open == (last.get((device, "violation")) is ViolationStarted)


@settings(max_examples=300, deadline=None)
@given(steps_strategy, st.integers(1, 4))
def test_any_sequence_never_raises_never_double_enters_and_round_trips(steps: list, exit_fixes: int) -> None:
    params = Params(exit_fixes=exit_fixes)
    index, states, outputs, clock = INDEX, {}, [], 0
    for kind, value in steps:
        if kind == "index":
            index = value
        elif kind == "remove":
            for device, state in states.items():
                states[device], removed = fence_removed(state, value, clock)
                outputs += removed
        else:
            device, dt, lat, lon, accuracy = value
            clock += dt
            result = apply_fix(states.get(device), Fix(device, "acme", clock, lat, lon, accuracy, f"e{clock}"),
                               index, params)
            states[device] = result.state
            outputs += result.outputs
            assert result.enrichment.fences == tuple(sorted(result.state.fences))
            assert result.enrichment.violation == result.state.violation_open
        for state in states.values():
            assert DeviceState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    check_events_tell_the_story(outputs, states)


@settings(max_examples=150, deadline=None)
@given(st.lists(fixes_strategy, max_size=30))
def test_batch_equals_one_fix_at_a_time(raw: list) -> None:
    fixes = [Fix(device, "acme", 1_000_000 + i * 1000 + dt // 10, lat, lon, accuracy, f"e{i}")
             for i, (device, dt, lat, lon, accuracy) in enumerate(raw)]
    states: dict[str, DeviceState] = {}
    one_by_one = []
    for one in fixes:
        result = apply_fix(states.get(one.device_id), one, INDEX)
        states[one.device_id] = result.state
        one_by_one.append(result)
    batch_states, batch_results = apply_batch({}, fixes, INDEX)
    assert batch_results == one_by_one and batch_states == states


def test_the_documented_diagram_is_the_table_in_the_code():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[2] / "docs" / "geofence-states.md").read_text()
    assert doc.endswith(transition_table_markdown())
