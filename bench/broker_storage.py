"""The embedded broker's storage engines side by side: memory against S3 on a local S3 server.

For each engine: a fresh tansu, one topic of one partition; PRODUCERS producers
write MESSAGES records each at once (acks=all, as the components do), then one
consumer reads the topic from the start. Prints records/s produced and consumed,
the latency of a single acknowledged send (p50/p99 of 200), and how many distinct
records came back: fewer than were acknowledged means the engine lost some. "end" is the end
offset the broker reports (ListOffsets) once every record is acknowledged: below the count
acknowledged, readers that read "to the end" stop short. "group" is how many of 1,000 records
written at 200/s a consumer in a group (subscribed, as every component reads) receives.

The S3 engine needs an S3 server:
  - guardstream's own (``guardstream.infra.s3_disk``: moto's S3 with every object written through
    to disk), whenever moto is installed (PyPI ``moto[server]``, in the ``bench`` and ``test`` extras); for it the broker and the server
    are then both stopped, started again on the same directory, and the topic read once more:
    "after restart" is what a stop and start of ``guardstream up`` keeps;
  - s3rver (npm: ``npm install --prefix DIR s3rver``; pass ``--s3rver DIR/node_modules/.bin/s3rver``),
    which keeps its objects on disk;
  - moto (PyPI ``moto[server]``; ``moto_server`` on PATH or ``--moto PATH``), which keeps them in memory.

Run: python bench/broker_storage.py [--messages 3000] [--producers 4] [--s3rver PATH] [--moto PATH]
                                     [--no-s3-disk]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from guardstream.infra.stack import free_port, kafka_answers, tansu_spec, wait_until

BUCKET = "tansu"
QUIET_S = 3.0  # nothing more to read for this long: the consumer has all the topic holds
S3_ENV = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_ALLOW_HTTP": "true"}


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    import os
    return subprocess.Popen(argv, env={**os.environ, **env}, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def s3_server(kind: str, binary: str, tmp: Path) -> Iterator[str]:
    """The endpoint URL of a running ``kind`` S3 server with the bucket ``BUCKET``."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    if kind == "s3_disk":
        argv = [sys.executable, "-m", "guardstream.infra.s3_disk", "--dir", str(tmp / "s3disk"),
                "--port", str(port), "--bucket", BUCKET]
    elif kind == "s3rver":
        argv = [binary, "-d", str(tmp / "s3"), "-a", "127.0.0.1", "-p", str(port), "--configure-bucket", BUCKET,
                "--silent"]
        (tmp / "s3").mkdir()
    else:
        argv = [binary, "-H", "127.0.0.1", "-p", str(port)]
    process = _spawn(argv, {}, tmp / f"{kind}.log")
    try:
        wait_until(lambda: _answers(endpoint), 30, kind)
        if kind == "moto":  # moto starts with no bucket
            request = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
            urllib.request.urlopen(request, timeout=5).close()
        yield endpoint
    finally:
        _stop(process)


def _answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(endpoint, timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True  # an S3 error document is an answer
    except OSError:
        return False


@contextmanager
def broker(storage: str, env: dict[str, str], tmp: Path) -> Iterator[str]:
    port = free_port()
    spec = tansu_spec(port, storage, env)
    process = _spawn(list(spec.argv), dict(spec.env), tmp / f"tansu-{uuid.uuid4().hex[:6]}.log")
    bootstrap = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: kafka_answers(bootstrap), 30, "tansu")
        yield bootstrap
    finally:
        _stop(process)


GROUP_RECORDS = 1000


def group_reader(bootstrap: str) -> int:
    """Records a consumer in a group (``subscribe``, committing after each poll, as the components
    read) receives of GROUP_RECORDS that an idempotent producer (as the components write) sends at
    200/s from when the consumer subscribes."""
    topic = f"group-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(15)
    got: list[int] = []
    stop = threading.Event()

    def consume() -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 100})
        consumer.subscribe([topic])
        while not stop.is_set():
            messages = [m for m in consumer.consume(500, 0.2) if m.error() is None]
            got.extend(m.offset() for m in messages)
            if messages:
                consumer.commit(asynchronous=False)
        consumer.close()

    reader = threading.Thread(target=consume)
    reader.start()
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    began = time.monotonic()
    for i in range(GROUP_RECORDS):
        producer.produce(topic, f"{i}".encode())
        producer.poll(0)
        pause = began + (i + 1) / 200 - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # the producer's pace
    producer.flush(30)
    deadline = time.monotonic() + 30  # a group's first assignment takes up to ~25 s here
    while len(got) < GROUP_RECORDS and time.monotonic() < deadline:
        time.sleep(0.2)  # polling a count the reader thread fills
    stop.set()
    reader.join()
    return len(set(got))


def measure(bootstrap: str, messages: int, producers: int) -> dict[str, float]:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(15)

    def produce(n: int) -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
        for i in range(messages):
            producer.produce(topic, f"{n}-{i}".encode())
            producer.poll(0)
        producer.flush(120)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    produce_s = time.monotonic() - started
    # the end offset the broker reports once every record is acknowledged: what a reader that
    # reads "to the end" (ListOffsets) stops at
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-probe"})
    _, reported_end = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    probe.close()

    single = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    sends = []
    for _ in range(200):
        sent = time.monotonic()
        single.produce(topic, b"single")
        single.flush(10)
        sends.append(time.monotonic() - sent)
    sends.sort()

    total = messages * producers
    seen, consume_s = read_all(bootstrap, topic, total)
    grouped = group_reader(bootstrap)
    return {"produced": total / produce_s, "consumed": len(seen) / consume_s, "p50_ms": sends[100] * 1000,
            "p99_ms": sends[197] * 1000, "kept": len(seen), "acked": total, "topic": topic,
            "end": reported_end, "group": grouped}


def read_all(bootstrap: str, topic: str, total: int) -> tuple[set[bytes], float]:
    """The distinct records of the producers in ``topic`` (the single sends left out), and the seconds taken."""
    # assigned, not subscribed: a group join would be most of the time measured
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen: set[bytes] = set()
    started = last = time.monotonic()
    while len(seen) < total and time.monotonic() - last < QUIET_S:  # an engine that lost records ends quiet
        for message in consumer.consume(1000, 0.2):
            if message.error() is None and message.value() != b"single":
                seen.add(message.value())
                last = time.monotonic()
    consume_s = last - started
    consumer.close()
    return seen, max(consume_s, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="records per producer")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--s3rver", default=shutil.which("s3rver"))
    parser.add_argument("--moto", default=shutil.which("moto_server"))
    parser.add_argument("--no-s3-disk", action="store_true", help="leave out guardstream's disk-backed S3 server")
    args = parser.parse_args()
    rows = []
    with TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with broker("memory://tansu/", {}, tmp) as bootstrap:
            rows.append(("memory", measure(bootstrap, args.messages, args.producers)))
        import importlib.util
        if importlib.util.find_spec("moto") is None:
            print("s3_disk: moto not installed (pip install 'moto[server]'); skipped")
        elif not args.no_s3_disk:
            rows.append(("s3 on s3_disk", _s3_disk_with_restart(tmp, args.messages, args.producers)))
        for kind, binary in (("s3rver", args.s3rver), ("moto", args.moto)):
            if not binary:
                print(f"{kind}: not found; skipped (see the module's docstring)")
                continue
            with s3_server(kind, binary, tmp) as endpoint:
                env = {**S3_ENV, "AWS_ENDPOINT": endpoint}
                with broker(f"s3://{BUCKET}/", env, tmp) as bootstrap:
                    rows.append((f"s3 on {kind}", measure(bootstrap, args.messages, args.producers)))
    print(f"{args.producers} producers x {args.messages} records, one partition, acks=all")
    print(f"{'storage':<14} {'produce/s':>10} {'consume/s':>10} {'send p50':>9} {'send p99':>9} {'end':>7} {'group':>6}  kept")
    for name, m in rows:
        after = f"; after restart {m['kept_after_restart']:,}" if "kept_after_restart" in m else ""
        print(f"{name:<14} {m['produced']:>10,.0f} {m['consumed']:>10,.0f} {m['p50_ms']:>7.1f}ms "
              f"{m['p99_ms']:>7.1f}ms {m['end']:>7,} {m['group']:>6,}  {m['kept']:,} of {m['acked']:,}{after}")


def _s3_disk_with_restart(tmp: Path, messages: int, producers: int) -> dict[str, float]:
    env = {**S3_ENV}
    with s3_server("s3_disk", "", tmp) as endpoint:
        env["AWS_ENDPOINT"] = endpoint
        with broker(f"s3://{BUCKET}/", env, tmp) as bootstrap:
            result = measure(bootstrap, messages, producers)
    with s3_server("s3_disk", "", tmp) as endpoint:  # same directory, another port
        env["AWS_ENDPOINT"] = endpoint
        with broker(f"s3://{BUCKET}/", env, tmp) as bootstrap:
            seen, _ = read_all(bootstrap, str(result["topic"]), int(result["acked"]))
    return {**result, "kept_after_restart": len(seen)}


if __name__ == "__main__":
    main()
