"""MQTT -> Kafka bridge throughput against the MQTT broker's own ceiling.

Starts its own tansu, mosquitto and bridge (``guardstream bridge`` as a child
process), then bursts messages of 1,000 simulated devices (the fleet of
``connectors/simulation.py``, 1 % malformed) from several publisher processes
as fast as they can, and measures:

* the ceiling: a bare paho subscriber on the same broker that only counts, at
  QoS 0 and at QoS 1 (first to last message received); and, for QoS 0, the same
  subscriber on the bridge's own read path (``connectors/mqtt_reader.py``), the
  ceiling of what the bridge could reach;
* the bridge at QoS 0 and at QoS 1: first to last record acknowledged by Kafka,
  read from the bridge's ``guardstream_bridge_forwarded_total`` on /metrics;
* the bridge draining a QoS 1 backlog the broker queued while it was away: the
  bridge alone, without publishers competing for the CPU, and its CPU time per message.

With ``--bridges B``, B bridge processes split the traffic in their MQTT 5
shared-subscription group, as they would in production.

Prints figures; asserts nothing. Run: python bench/bridge_throughput.py [--messages N] [--publishers P] [--bridges B]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
from embedded import embedded_env, ready
from paho.mqtt.enums import CallbackAPIVersion

from guardstream.connectors.mapping import DEFAULT_RULES, subscription_filters
from guardstream.connectors.mqtt import endpoint
from guardstream.connectors.mqtt_reader import ReadAheadClient
from guardstream.connectors.simulation import Fleet
from guardstream.connectors.simulator import Publisher, load_demo_fences, now_ms
from guardstream.infra import topics
from guardstream.infra.stack import free_port, kafka_answers, mqtt_spec, tansu_spec, tcp_accepts, wait_until
from guardstream.infra.supervisor import ChildSpec, Supervisor
from guardstream.settings import Settings

DEVICES = 1000
QUIET_S = 3.0  # no new message for this long: the burst is over


# -- child processes: publishers and the bare subscriber --------------------------------------

def publish_share(env: dict, index: int, devices: int, count: int, qos: int, ready, go, results) -> None:
    settings = Settings.from_env(env)
    fleet = Fleet(100 + index, devices, load_demo_fences(), start_ms=now_ms(), rate=20_000,
                  qos_override=qos, id_prefix=f"p{index}")
    messages = fleet.take(count)  # made before the clock starts: publishing is all that is timed
    publisher = Publisher(settings, f"bench-pub-{index}-{os.getpid()}", inflight=200)
    publisher.start()
    ready.put(index)
    go.wait()
    started = time.monotonic()
    for message in messages:
        publisher.publish(message)
    publisher.wait_below(1, 300)
    results.put((index, time.monotonic() - started, publisher.acknowledged, publisher.lost))
    publisher.close()


def count_messages(env: dict, read_ahead: bool, ready, results) -> None:
    ep = endpoint(Settings.from_env(env))
    seen = {"count": 0, "first": 0.0, "last": 0.0}
    subscribed = threading.Event()

    def on_message(client, userdata, message) -> None:
        now = time.monotonic()
        if not seen["count"]:
            seen["first"] = now
        seen["count"] += 1
        seen["last"] = now

    kind = ReadAheadClient if read_ahead else mqtt.Client
    client = kind(CallbackAPIVersion.VERSION2, client_id=f"bench-count-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe(subscription_filters(DEFAULT_RULES))
    client.connect(ep.host, ep.port)
    client.loop_start()
    subscribed.wait(10)
    ready.put("subscriber")
    while not seen["count"] or time.monotonic() - seen["last"] < QUIET_S:
        time.sleep(0.2)  # polling for the end of the burst
    client.loop_stop()
    results.put(("subscriber", seen["count"], seen["last"] - seen["first"]))


# -- the bridges' counters -------------------------------------------------------------------

def bridge_handled(ports: list[int]) -> float:
    """Messages the bridges have finished with (forwarded or refused), from /metrics; 0 before one serves."""
    total = 0.0
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("guardstream_bridge_forwarded_total{", "guardstream_bridge_refused_total{")):
                total += float(line.rsplit(" ", 1)[1])
    return total


def watch_bridges(ports: list[int], before: float, expected: int, timeout_s: float = 300) -> tuple[int, float]:
    """(messages handled, seconds from the first to the last) of one burst, polling every 100 ms."""
    first = last = 0.0
    value = before
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now, current = time.monotonic(), bridge_handled(ports)
        if current > value:
            first = first or now
            value, last = current, now
        if value - before >= expected or (first and now - last > QUIET_S):
            break
        time.sleep(0.1)  # sampling interval: a scrape costs the bridge CPU, so not much more often
    return int(value - before), last - first


def start_bridges(supervisor: Supervisor, settings: Settings, ports: list[int]) -> list:
    """Bridge processes in one shared-subscription group, each with its own id and /metrics port."""
    processes = []
    for number, port in enumerate(ports, start=1):
        env = settings.replace(metrics_port=port, bridge_id=f"bench-bridge-{number}").as_env()
        processes.append(supervisor.start(ChildSpec(f"bridge-{number}", [sys.executable, "-m", "guardstream.cli",
                                                                         "bridge"], env=env, restart=False)))
    return processes


def cpu_seconds(processes: list) -> float:
    """User + system CPU time of processes so far, from /proc (Linux)."""
    total = 0.0
    for process in processes:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


# -- one burst ----------------------------------------------------------------------------------

def burst(env: dict, total: int, publishers: int, qos: int, with_subscriber: bool,
          bridge_ports: list[int] | None = None, read_ahead: bool = False) -> dict:
    ctx = mp.get_context("spawn")
    ready_queue, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = []
    if with_subscriber:
        procs.append(ctx.Process(target=count_messages, args=(env, read_ahead, ready_queue, results)))
    for i in range(publishers):
        share = total // publishers + (1 if i < total % publishers else 0)
        devices = DEVICES // publishers + (1 if i < DEVICES % publishers else 0)
        procs.append(ctx.Process(target=publish_share, args=(env, i, devices, share, qos, ready_queue, go, results)))
    for proc in procs:
        proc.start()
    for _ in procs:
        ready_queue.get(timeout=120)
    before = bridge_handled(bridge_ports) if bridge_ports else 0.0
    go.set()
    out: dict = {"published": 0, "lost": 0, "publish_s": 0.0}
    if bridge_ports:
        out["bridge"] = watch_bridges(bridge_ports, before, total)
    for _ in procs:
        result = results.get(timeout=300)
        if result[0] == "subscriber":
            out["subscriber"] = result[1:]
        else:
            out["published"] += result[2]
            out["lost"] += result[3]
            out["publish_s"] = max(out["publish_s"], result[1])
    for proc in procs:
        proc.join(30)
    return out


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def report(what: str, count: int, seconds: float, got: dict) -> float:
    figure = rate(count, seconds)
    publishers = f"; publishers {got['publish_s']:.2f} s" if got.get("publish_s") else ""
    print(f"{what:<36} {figure:>9,.0f} msg/s ({count:,} of {got['published']:,} in {seconds:.2f} s{publishers})",
          flush=True)
    return figure


# -- the run ------------------------------------------------------------------------------------

def start_servers(supervisor: Supervisor, work: Path) -> tuple[dict, str]:
    """(environment naming a fresh tansu and MQTT broker, broker name)."""
    kafka_port, mqtt_port = free_port(), free_port()
    supervisor.start(tansu_spec(kafka_port))
    spec, broker = mqtt_spec(mqtt_port, work / "mqtt")
    supervisor.start(spec)
    env = embedded_env(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka_port}", MQTT_URL=f"mqtt://127.0.0.1:{mqtt_port}",
                       GUARDSTREAM_LOG_LEVEL="warning")
    wait_until(lambda: kafka_answers(env["KAFKA_BOOTSTRAP_SERVERS"]), 30, "tansu")
    wait_until(lambda: tcp_accepts("127.0.0.1", mqtt_port), 30, broker)
    topics.apply(Settings.from_env(env))
    return env, broker


def measure(supervisor: Supervisor, env: dict, n: int, publishers: int, bridges: int) -> dict[str, float]:
    figures = {}
    for qos in (0, 1):
        got = burst(env, n, publishers, qos, with_subscriber=True)
        figures[f"ceiling{qos}"] = report(f"ceiling, bare subscriber, QoS {qos}:", *got["subscriber"], got)
    got = burst(env, n, publishers, 0, with_subscriber=True, read_ahead=True)
    figures["reader0"] = report("  the same on the bridge's reader:", *got["subscriber"], got)
    settings = Settings.from_env(env)
    ports = [free_port() for _ in range(bridges)]
    processes = start_bridges(supervisor, settings, ports)
    wait_until(lambda: all(ready(port) for port in ports), 30, "bridge")
    for qos in (0, 1):
        got = burst(env, n, publishers, qos, with_subscriber=False, bridge_ports=ports)
        figures[f"bridge{qos}"] = report(f"bridge into Kafka, QoS {qos}:", *got["bridge"], got)
    # a backlog: the broker keeps QoS 1 messages for the bridges' persistent sessions while they are away
    for process in processes:
        process.terminate()
        process.wait(30)
    got = burst(env, min(n, 90_000), publishers, 1, with_subscriber=False)  # under max_queued_messages
    got["publish_s"] = 0.0  # published before the bridges came back: not part of this figure
    processes = start_bridges(supervisor, settings, ports)
    cpu_before = cpu_seconds(processes)
    count, seconds = watch_bridges(ports, 0.0, got["published"])
    figures["drain"] = report("bridge draining a QoS 1 backlog:", count, seconds, got)
    print(f"{'  bridge CPU per message:':<36} {1e6 * (cpu_seconds(processes) - cpu_before) / max(count, 1):>9,.0f} us "
          "(all threads, librdkafka's and start-up included)", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages per burst (default: 100,000)")
    parser.add_argument("--publishers", type=int, default=3, help="publisher processes (default: 3)")
    parser.add_argument("--bridges", type=int, default=1,
                        help="bridge processes sharing the subscriptions (default: 1)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    log = (work / "children.log").open("w")
    supervisor = Supervisor(out=log)
    try:
        env, broker = start_servers(supervisor, work)
        print(f"{args.messages:,} messages of {DEVICES:,} devices from {args.publishers} publisher processes, "
              f"{args.bridges} bridge(s); broker {broker}; {os.cpu_count()} CPUs; children's output in {log.name}",
              flush=True)
        figures = measure(supervisor, env, args.messages, args.publishers, args.bridges)
        print(f"QoS 0 bridge / ceiling: {figures['bridge0'] / figures['ceiling0']:.2f} (target >= 0.8), "
              f"/ the bare subscriber on the bridge's reader: {figures['bridge0'] / figures['reader0']:.2f}; "
              f"QoS 1 bridge / ceiling: {figures['bridge1'] / figures['ceiling1']:.2f}; "
              f"QoS 1: {figures['bridge1']:,.0f} msg/s (target >= 5,000)")
    finally:
        supervisor.stop()
        log.close()


if __name__ == "__main__":
    main()
