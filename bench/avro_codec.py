"""Avro encode/decode speed: the `avro` reference library against fastavro.

Prints records/s for encoding and decoding a GuardPosition (the most frequent
record on the hot path), and fastavro decoding with the same schema given again as
the reader schema, which the codec no longer does for records of today's schema. Run: python bench/avro_codec.py [N]
"""

import io
import json
import sys
import time
from pathlib import Path

import avro.io
import avro.schema
import fastavro

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "avro" / "GuardPosition.avsc"
RECORD = {
    "event_id": "m-1", "tenant": "acme", "device_id": "g-17", "ts_ms": 1_795_000_000_000,
    "received_ms": 1_795_000_000_050, "lat": 52.52, "lon": 13.405, "accuracy_m": 5.0,
    "speed_mps": 1.2, "heading_deg": 90.0, "altitude_m": None, "fences": ["f-1", "f-2"],
    "in_site": True, "violation": False,
}


def rate(n: int, fn) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    text = SCHEMA_PATH.read_text()
    ref = avro.schema.parse(text)
    writer = avro.io.DatumWriter(ref)
    reader = avro.io.DatumReader(ref)

    def ref_encode() -> bytes:
        buf = io.BytesIO()
        writer.write(RECORD, avro.io.BinaryEncoder(buf))
        return buf.getvalue()

    blob = ref_encode()

    def ref_decode() -> dict:
        return reader.read(avro.io.BinaryDecoder(io.BytesIO(blob)))

    fast = fastavro.parse_schema(json.loads(text))

    def fast_encode() -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, fast, RECORD)
        return buf.getvalue()

    def fast_decode() -> dict:
        return fastavro.schemaless_reader(io.BytesIO(blob), fast, None)

    # the same schema handed over twice as reader and writer (what the codec did for a record
    # written with today's schema before it stopped passing a reader): fastavro compares them per call
    fast_again = fastavro.parse_schema(json.loads(text))

    def fast_decode_resolving() -> dict:
        return fastavro.schemaless_reader(io.BytesIO(blob), fast, fast_again)

    assert fast_encode() == blob
    rows = [
        ("avro encode", rate(n // 5, ref_encode)),
        ("avro decode", rate(n // 5, ref_decode)),
        ("fastavro encode", rate(n, fast_encode)),
        ("fastavro decode", rate(n, fast_decode)),
        ("fastavro decode, reader schema given", rate(n, fast_decode_resolving)),
    ]
    for name, per_s in rows:
        print(f"{name:<38} {per_s:>12,.0f} records/s")
    print(f"fastavro/avro: encode x{rows[2][1] / rows[0][1]:.1f}, decode x{rows[3][1] / rows[1][1]:.1f}")


if __name__ == "__main__":
    main()
