"""``fences import | list | delete`` through :mod:`fence_admin`, on a broker of the test's own."""

import signal

import pytest
from support.fences import CODEC, import_fences

from guardstream import topic_end
from guardstream.errors import UnavailableError
from guardstream.streams import fence_admin


def test_current_is_the_latest_record_of_each_fence_and_no_deleted_one(own_kafka, tmp_path):
    settings = own_kafka.settings
    import_fences(settings, tmp_path, "acme", ["hq", "yard"])
    import_fences(settings, tmp_path, "acme", ["hq"], kind="restricted")  # hq again: its latest record counts
    import_fences(settings, tmp_path, "globex", ["plant"])
    fence_admin.delete(settings, "yard")
    fences = fence_admin.current(settings, CODEC)
    assert sorted(fences) == ["hq", "plant"]
    assert (fences["hq"]["kind"], fences["hq"]["tenant"]) == ("RESTRICTED", "acme")
    assert fences["plant"]["tenant"] == "globex"


def test_current_raises_when_the_topic_is_not_read_to_its_end_in_time(own_kafka, tmp_path, monkeypatch):
    settings = own_kafka.settings
    import_fences(settings, tmp_path, "acme", ["hq"])
    partitions_of = topic_end.partitions_of

    def then_pause(*args, **kwargs):  # the broker answers the metadata request, then stops answering
        found = partitions_of(*args, **kwargs)
        own_kafka.process.send_signal(signal.SIGSTOP)
        return found
    monkeypatch.setattr(topic_end, "partitions_of", then_pause)
    try:
        with pytest.raises(UnavailableError, match="not read to the end within 2s"):
            fence_admin.current(settings, CODEC, timeout_s=2)
    finally:
        own_kafka.process.send_signal(signal.SIGCONT)
