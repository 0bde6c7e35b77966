"""The worker's exactly-once mode (``GUARDSTREAM_WORKER_EXACTLY_ONCE=on``): one Kafka
transaction per checkpoint holds the events and dead letters written since the last one, the
per-device state that changed (changelog) and the input offsets they cover
(``send_offsets_to_transaction`` with the consumer's group metadata, so a zombie of an older
group generation is fenced, KIP-447). A crash leaves an open transaction; the instance that
starts with the same ``transactional.id`` (``GUARDSTREAM_WORKER_ID``) aborts it, and a
``read_committed`` consumer (librdkafka's default) never sees its records.

That last part is the broker's: tansu 0.6 keeps open transactions from ``read_committed``
consumers (last stable offset) and commits offsets only with the transaction, but sends no
aborted-transaction list with its fetch responses, so aborted records reach every consumer,
and it never times a transaction out (README, Delivery guarantees).

Any error of the transaction API fails the lane: the process exits and its successor resumes
from the last committed transaction, which is the one state known to be consistent.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

TIMEOUT_S = 30.0


def transactional_id(worker_id: str, lane: str) -> str:
    """One per worker instance and lane, the same after a restart."""
    return f"guardstream-worker-{worker_id}-{lane}"


def producer_overrides(worker_id: str, lane: str) -> dict[str, Any]:
    # the broker aborts a transaction left open longer than this (Apache Kafka; tansu does not)
    return {"transactional.id": transactional_id(worker_id, lane), "transaction.timeout.ms": 60_000}


class Transaction:
    """The open transaction of one lane's producer, if any."""

    def __init__(self, producer: Producer, consumer: Consumer) -> None:
        self.producer = producer
        self.consumer = consumer
        self.open = False
        # fences an older instance with the same transactional.id and aborts what it left open
        producer.init_transactions(TIMEOUT_S)

    def begin(self) -> None:
        """Open a transaction unless one is open: call before every produce."""
        if not self.open:
            self.producer.begin_transaction()
            self.open = True

    def commit(self, offsets: list[TopicPartition]) -> None:
        """Commit what was produced since :meth:`begin` together with ``offsets`` (next offsets to read)."""
        if not self.open:
            return
        if offsets:
            self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), TIMEOUT_S)
        self.producer.commit_transaction(TIMEOUT_S)
        self.open = False
