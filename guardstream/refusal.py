"""``Refused``: the one value every stage returns for input it will not pass on.

The bridge (``connectors/raw.decide``), validation (``streams/validation.validate``)
and the sink (``sinks/rows.plan_write``) return a :class:`Refused` where the input
was bad; the shell that called them makes it a dead letter on the stage's
``dlq.*`` topic (``schemas/dead_letters.dead_letter``). What else a stage needs
to write that dead letter (the bridge's headers and metric label, the worker's
raw record) travels beside the refusal, in a value of that stage that holds it.

An :class:`~guardstream.errors.InputError` raised inside a stage is the same news
on its way out: :meth:`Refused.of` turns one into the other at the stage's edge.
"""

from __future__ import annotations

from dataclasses import dataclass

from guardstream.errors import InputError


@dataclass(frozen=True)
class Refused:
    """Input a stage will not pass on: a stable reason code and a short human detail."""

    reason: str  # e.g. not_json, oversize, out_of_range: the dead letter's reason
    detail: str  # names what was wrong; never secrets, never the whole payload

    @classmethod
    def of(cls, error: InputError) -> Refused:
        return cls(error.reason, error.detail)
