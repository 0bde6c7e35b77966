"""Decode + validate speed of guard GPS payloads: msgspec against pydantic v2.

Both libraries get the same job: JSON bytes in, a typed object with range
constraints checked out, or an error. msgspec uses ``msgspec.json.Decoder`` with
a typed ``Struct`` (``Meta`` constraints); pydantic uses ``model_validate_json``
on a strict ``BaseModel`` (``Field`` constraints), so neither coerces strings to
numbers. The payloads are a fixed mix of valid fixes and typical bad ones
(out-of-range latitude, missing ``ts``, wrong types, broken JSON).

The third line times ``guardstream.streams.validation.validate`` end to end (the
library decode plus timestamp, id and tenant normalisation), for comparison; the
last the same on the older fleet's dialect (``timestamp`` as an ISO string,
``accuracy``, integer ``guard_id`` and ``client_id``), valid payloads only.

Prints figures only; nothing is asserted. Run: python bench/validation_libs.py [N]
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from typing import Annotated

import msgspec
import pydantic

from guardstream.streams.validation import Policy, RawKind, RawMeta, Valid, validate

NOW_MS = 1_795_000_000_000
INVALID_SHARE = 0.1


class GpsStruct(msgspec.Struct):
    ts: int | float | str
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    accuracy_m: Annotated[float, msgspec.Meta(ge=0)] | None = None
    speed_mps: Annotated[float, msgspec.Meta(ge=0)] | None = None
    heading_deg: Annotated[float, msgspec.Meta(ge=0, lt=360)] | None = None
    altitude_m: float | None = None
    tenant: str | None = None
    device_id: str | None = None


class GpsModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True, extra="ignore")

    ts: int | float | str
    lat: float = pydantic.Field(ge=-90, le=90)
    lon: float = pydantic.Field(ge=-180, le=180)
    accuracy_m: float | None = pydantic.Field(default=None, ge=0)
    speed_mps: float | None = pydantic.Field(default=None, ge=0)
    heading_deg: float | None = pydantic.Field(default=None, ge=0, lt=360)
    altitude_m: float | None = None
    tenant: str | None = None
    device_id: str | None = None


def _valid_fix(rng: random.Random) -> dict:
    return {"ts": NOW_MS - rng.randrange(60_000), "lat": round(rng.uniform(-90, 90), 6),
            "lon": round(rng.uniform(-180, 180), 6), "accuracy_m": round(rng.uniform(1, 30), 1),
            "speed_mps": round(rng.uniform(0, 3), 2), "heading_deg": round(rng.uniform(0, 359.9), 1),
            "tenant": "acme", "device_id": f"guard-{rng.randrange(500):03d}"}


def _invalid_fix(rng: random.Random) -> bytes:
    fix = _valid_fix(rng)
    flaw = rng.randrange(4)
    if flaw == 0:
        fix["lat"] = 91.5
    elif flaw == 1:
        del fix["ts"]
    elif flaw == 2:
        fix["lon"] = "13.4"
    else:
        return json.dumps(fix).encode()[:-3]
    return json.dumps(fix).encode()


def payloads(n: int, seed: int = 42) -> list[bytes]:
    rng = random.Random(seed)
    return [_invalid_fix(rng) if rng.random() < INVALID_SHARE else json.dumps(_valid_fix(rng)).encode()
            for _ in range(n)]


def older_dialect_payloads(n: int, seed: int = 42) -> list[bytes]:
    rng = random.Random(seed)
    moment = NOW_MS // 1000 - 60
    return [json.dumps({"lat": round(rng.uniform(-90, 90), 6), "lon": round(rng.uniform(-180, 180), 6),
                        "accuracy": round(rng.uniform(1, 30), 1), "guard_id": rng.randrange(500), "client_id": 1,
                        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment - rng.randrange(60)))}
                       ).encode() for _ in range(n)]


def msgspec_run(batch: list[bytes]) -> int:
    decode = msgspec.json.Decoder(GpsStruct).decode
    ok = 0
    for payload in batch:
        try:
            decode(payload)
            ok += 1
        except msgspec.MsgspecError:
            pass
    return ok


def pydantic_run(batch: list[bytes]) -> int:
    parse = GpsModel.model_validate_json
    ok = 0
    for payload in batch:
        try:
            parse(payload)
            ok += 1
        except pydantic.ValidationError:
            pass
    return ok


def guardstream_runner(n: int) -> Callable[[list[bytes]], int]:
    # The consumer gets the record metadata for free, so it is built before the clock starts.
    metas = [RawMeta(key=None, mqtt_topic=None, msg_id=f"m-{i}", received_ms=NOW_MS) for i in range(n)]
    policy = Policy(now_ms=NOW_MS)

    def run(batch: list[bytes]) -> int:
        ok = 0
        for payload, meta in zip(batch, metas):
            ok += isinstance(validate(RawKind.GUARD, payload, meta, policy), Valid)
        return ok
    return run


def best_rate(batch: list[bytes], run: Callable[[list[bytes]], int], repeats: int = 3) -> tuple[float, int]:
    best = float("inf")
    ok = 0
    for _ in range(repeats):
        start = time.perf_counter()
        ok = run(batch)
        best = min(best, time.perf_counter() - start)
    return len(batch) / best, ok


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    batch = payloads(n)
    print(f"{n} GPS payloads, {INVALID_SHARE:.0%} invalid; best of 3 runs")
    print(f"python {sys.version.split()[0]}, msgspec {msgspec.__version__}, pydantic {pydantic.VERSION}")
    for name, run in (("msgspec Decoder(Struct)", msgspec_run), ("pydantic model_validate_json", pydantic_run),
                      ("guardstream validate()", guardstream_runner(n))):
        rate, ok = best_rate(batch, run)
        print(f"{name:30s} {rate:>12,.0f} events/s   ({ok} valid)")
    rate, ok = best_rate(older_dialect_payloads(n), guardstream_runner(n))
    print(f"{'  the same, older dialect':30s} {rate:>12,.0f} events/s   ({ok} valid)")


if __name__ == "__main__":
    main()
