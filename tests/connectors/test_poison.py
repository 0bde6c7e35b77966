"""The poison ledger: how often a message stopped a lane, kept across restarts in a file."""

from guardstream.connectors.poison import KILLS_TO_POISON, MAX_ENTRIES, PoisonLedger, ledger_path, load, save


def test_a_message_is_poison_after_it_stopped_the_lane_twice():
    ledger = PoisonLedger()
    assert not ledger.is_poison("m")
    assert ledger.killed("m") == 1 and not ledger.is_poison("m")
    assert ledger.killed("m") == KILLS_TO_POISON == 2 and ledger.is_poison("m")
    assert ledger.forget("m") and not ledger.is_poison("m") and not ledger.forget("m")


def test_the_ledger_stays_bounded_dropping_the_oldest():
    ledger = PoisonLedger()
    for i in range(MAX_ENTRIES + 5):
        ledger.killed(f"m{i}")
    assert len(ledger.kills) == MAX_ENTRIES and "m0" not in ledger.kills and f"m{MAX_ENTRIES + 4}" in ledger.kills


def test_the_ledger_survives_a_restart_in_its_file(tmp_path):
    path = ledger_path(tmp_path / "state", "b1", "main")
    ledger = load(path)
    assert ledger.kills == {}
    ledger.killed("m")
    save(ledger, path)
    assert load(path).kills == {"m": 1}


def test_an_unreadable_ledger_starts_empty(tmp_path):
    path = tmp_path / "ledger.json"
    for text in ("{not json", "[1, 2]", '{"m": "x"}'):
        path.write_text(text)
        assert load(path).kills == {}
