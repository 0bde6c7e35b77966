"""Which MQTT messages stopped a bridge lane, so a poison message cannot crash-loop it.

A QoS >= 1 message the bridge fails on is never acknowledged, so after the restart the
broker delivers it again (its persistent session), and the lane fails again: a crash
loop on one message. The lane therefore records, before it stops, the ``msg.id`` of the
message it failed on (topic and payload hash, the same id on every delivery) in a small
ledger kept in a file under ``GUARDSTREAM_STATE_DIR``. A message the ledger says stopped
the lane :data:`KILLS_TO_POISON` times is not handled again on its next delivery: it
becomes a ``poison`` dead letter (cut to what a dead letter carries), is acknowledged,
and leaves the ledger.

Counted are the failures the lane sees (an error raised while handling a message). A
process killed from outside (SIGKILL, out of memory) cannot say which message it was
handling and counts nothing: recording every message before handling it would cost a
write per message. The ledger lives as long as the state directory: a bridge whose state
directory does not survive its restarts loops as before.

:class:`PoisonLedger` is plain data; :func:`load` and :func:`save` are its file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("guardstream.bridge")

KILLS_TO_POISON = 2  # the third delivery of a message that stopped the lane twice is a dead letter
MAX_ENTRIES = 1000  # a ledger of more is a lane failing on everything; the oldest go first


@dataclass
class PoisonLedger:
    kills: dict[str, int] = field(default_factory=dict)  # msg.id -> times it stopped the lane, oldest first

    def is_poison(self, msg_id: str) -> bool:
        return self.kills.get(msg_id, 0) >= KILLS_TO_POISON

    def killed(self, msg_id: str) -> int:
        """Record that ``msg_id`` stopped the lane once more; how often it has now."""
        count = self.kills.pop(msg_id, 0) + 1
        self.kills[msg_id] = count
        while len(self.kills) > MAX_ENTRIES:
            del self.kills[next(iter(self.kills))]
        return count

    def forget(self, msg_id: str) -> bool:
        """Drop ``msg_id`` (it is dead-lettered); whether it was there."""
        return self.kills.pop(msg_id, None) is not None


def ledger_path(state_dir: Path, bridge_id: str, lane: str) -> Path:
    return state_dir / f"bridge-{bridge_id}-{lane}-poison.json"


def load(path: Path) -> PoisonLedger:
    """The ledger in ``path``; an empty one when there is none, or it is unreadable (said in the log)."""
    try:
        kills = json.loads(path.read_text())
    except FileNotFoundError:
        return PoisonLedger()
    except (OSError, ValueError) as exc:
        log.warning("poison ledger %s unreadable (%s); starting with an empty one", path, exc)
        return PoisonLedger()
    if not isinstance(kills, dict) or not all(isinstance(v, int) for v in kills.values()):
        log.warning("poison ledger %s is not a {msg.id: count} object; starting with an empty one", path)
        return PoisonLedger()
    return PoisonLedger({str(k): v for k, v in kills.items()})


def save(ledger: PoisonLedger, path: Path) -> None:
    """Write ``ledger`` to ``path`` whole or not at all (a new file renamed over the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as handle:
        json.dump(ledger.kills, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
