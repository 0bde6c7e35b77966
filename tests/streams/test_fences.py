"""The geofence feed on a broker of the test's own: every fence loaded before a worker may start, then every change."""

from support.fences import CODEC, import_fences

from guardstream.infra.stack import free_port, wait_until
from guardstream.streams import compacted_feed, fence_admin
from guardstream.streams.fences import FenceFeed


def test_the_feed_loads_every_fence_then_follows_changes(own_kafka, tmp_path):
    settings = own_kafka.settings
    first = import_fences(settings, tmp_path, "acme", ["hq", "yard", "gate"])
    feed, failures = FenceFeed(settings, CODEC), []
    feed.start(failures.append)
    try:
        assert feed.loaded.wait(30), failures
        assert sorted(f.fence_id for f in feed.index.fences_of("acme")) == sorted(first)
        fence_admin.delete(settings, "yard")
        later = import_fences(settings, tmp_path, "acme", ["depot"], kind="restricted")
        removed: set[str] = set()
        wait_until(lambda: removed.update(feed.take_removed()) or ("yard" in removed and "depot" in feed.index),
                   30, "the deletion and the new fence")
        assert removed == {"yard"}
        assert sorted(f.fence_id for f in feed.index.fences_of("acme")) == sorted(["hq", "gate", *later])
        assert feed.index.get("depot").kind == "RESTRICTED"
        assert failures == [] and feed.errors == 0
    finally:
        feed.stop()


def test_an_empty_topic_is_loaded_at_once(own_kafka):
    feed, failures = FenceFeed(own_kafka.settings, CODEC), []
    feed.start(failures.append)
    try:
        assert feed.loaded.wait(30), failures
        assert len(feed.index) == 0
    finally:
        feed.stop()


def test_a_feed_that_cannot_load_the_fences_fails_and_says_so(settings, monkeypatch):
    monkeypatch.setattr(compacted_feed, "LOAD_TIMEOUT_S", 1.0)
    nowhere = settings.replace(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    feed, failures = FenceFeed(nowhere, CODEC), []
    feed.start(failures.append)
    try:
        wait_until(lambda: failures, 15, "the feed's failure")
        assert not feed.loaded.is_set()
    finally:
        feed.stop()
