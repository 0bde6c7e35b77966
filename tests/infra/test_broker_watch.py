"""The local stack says when its embedded broker has slowed with what it stores: the pure
decision, and the watch on real processes under a real supervisor."""

import io
import sys

from guardstream.infra.broker_watch import BROKER, BrokerWatch, Sample, advice
from guardstream.infra.stack import wait_until
from guardstream.infra.supervisor import SERVERS, ChildSpec, Supervisor


def test_a_busy_broker_is_named_with_its_share_its_uptime_and_what_to_do():
    line = advice(Sample(7, 50.0, 400.0, 300.0), Sample(7, 98.0, 460.0, 360.0), warned_pid=None)
    assert line is not None
    assert "80% of a core over the last 60 s, 6 min after it started" in line
    assert "Restart `guardstream up`" in line and "KAFKA_BOOTSTRAP_SERVERS" in line


def test_a_broker_below_the_threshold_says_nothing():
    assert advice(Sample(7, 50.0, 400.0, 300.0), Sample(7, 80.0, 460.0, 360.0), warned_pid=None) is None  # 50 %


def test_each_broker_process_is_warned_about_once():
    busy = (Sample(7, 50.0, 400.0, 300.0), Sample(7, 110.0, 460.0, 360.0))
    assert advice(*busy, warned_pid=7) is None
    # a restarted broker (another pid) is a new one: no comparison across the restart ...
    assert advice(Sample(7, 50.0, 400.0, 300.0), Sample(8, 60.0, 460.0, 10.0), warned_pid=7) is None
    # ... and, busy in its turn, it is warned about
    assert advice(Sample(8, 60.0, 460.0, 10.0), Sample(8, 110.0, 520.0, 70.0), warned_pid=7) is not None


def _watched(program: str) -> tuple[Supervisor, io.StringIO, BrokerWatch]:
    out = io.StringIO()
    supervisor = Supervisor(out=out)
    supervisor.start(ChildSpec(BROKER, [sys.executable, "-c", program], layer=SERVERS))
    watch = BrokerWatch(supervisor, every_s=0.3)
    watch.start()
    return supervisor, out, watch


def test_the_watch_warns_once_about_a_busy_broker_process():
    supervisor, out, watch = _watched("while True: pass")
    try:
        wait_until(lambda: "slows as it fills" in out.getvalue(), 20, "the broker's warning")
        samples = watch.samples
        wait_until(lambda: watch.samples >= samples + 3, 20, "three more samples")
        lines = [line for line in out.getvalue().splitlines() if "slows as it fills" in line]
        assert len(lines) == 1 and lines[0].startswith(f"{BROKER:>10} | the embedded broker used ")
    finally:
        supervisor.stop()


def test_the_watch_is_silent_about_an_idle_broker_process():
    supervisor, out, watch = _watched("import time; time.sleep(60)")
    try:
        wait_until(lambda: watch.samples >= 4, 20, "four samples")
        assert "slows as it fills" not in out.getvalue()
    finally:
        supervisor.stop()
