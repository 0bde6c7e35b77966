import pytest
from hypothesis import given, strategies as st

from guardstream.connectors.acks import OrderedAcks


def test_acks_are_released_in_arrival_order():
    acks = OrderedAcks(10)
    t1, t2, t3 = acks.add(11, 1), acks.add(12, 1), acks.add(13, 1)
    assert acks.confirm(t3) == []
    assert acks.confirm(t2) == []
    assert acks.confirm(t1) == [(11, 1), (12, 1), (13, 1)]
    assert len(acks) == 0


def test_qos0_needs_no_ack_but_holds_its_place():
    acks = OrderedAcks(10)
    t1, t2 = acks.add(0, 0), acks.add(5, 1)
    assert acks.confirm(t2) == []
    assert acks.confirm(t1) == [(5, 1)]


def test_window_is_bounded():
    acks = OrderedAcks(2)
    first = acks.add(1, 1)
    acks.add(2, 1)
    assert acks.full
    acks.confirm(first)
    assert not acks.full


def test_reconnect_drops_old_generation():
    acks = OrderedAcks(10)
    old = acks.add(1, 1)
    assert acks.reconnected() == 1
    new = acks.add(1, 1)
    assert acks.confirm(old) == []
    assert acks.confirm(new) == [(1, 1)]


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        OrderedAcks(0)


@given(st.permutations(list(range(30))))
def test_any_confirmation_order_acks_each_message_once_in_order(order):
    acks = OrderedAcks(100)
    tickets = [acks.add(mid, 1) for mid in range(30)]
    released = []
    for index in order:
        released += acks.confirm(tickets[index])
        released_mids = [mid for mid, _ in released]
        assert released_mids == list(range(len(released_mids)))
    assert [mid for mid, _ in released] == list(range(30))
    assert acks.confirm(tickets[0]) == []


def test_oldest_age_is_the_head_of_the_window_waiting():
    now = [100.0]
    acks = OrderedAcks(10, clock=lambda: now[0])
    assert acks.oldest_age() == 0.0
    first = acks.add(1, 1)
    now[0] = 102.0
    second = acks.add(2, 1)
    now[0] = 105.0
    assert acks.oldest_age() == 5.0
    acks.confirm(second)  # confirmed out of order: the head still waits
    assert acks.oldest_age() == 5.0
    acks.confirm(first)
    assert acks.oldest_age() == 0.0
    acks.add(3, 1)
    now[0] = 106.0
    acks.reconnected()
    assert acks.oldest_age() == 0.0
