"""A step's ``when``: a condition on earlier steps' outcomes, in three-valued logic.

An outcome is ``True``, ``False`` or ``None`` (unknown). Unknown is never read as false: a step whose condition
comes out unknown follows its ``on_unknown`` (``skip`` or ``send``). What is known comes from the message
history (:class:`Outcomes`):

- ``sent``, ``delivered``, ``failed``: from the earlier step's deliveries. ``delivered`` is known only on channels
  whose provider reports deliveries (SMS, WhatsApp); an email accepted by the relay is ``sent``, its delivery
  unknown. A delivery whose outcome is ``unknown`` (its worker died during the call) leaves both unknown.
- ``opened``, ``clicked``, ``converted``: engagement signals, message events recorded once per message
  (:mod:`app.messages.signals`). True once recorded; false only where the message could record it
  (:attr:`Outcomes.tracked`, from the tokens it was sent with: tracked links and the open pixel of a mail, a push
  message's event token, all only with consent to the workspace's tracking purpose); otherwise unknown, never
  false. ``converted`` is known for every sent message (the shop reports it). WhatsApp's ``read`` is an open, but
  read receipts can be switched off: no read is unknown. A click implies an open.

A step that sent nothing (skipped, ended) has known outcomes: nothing was sent, delivered, opened or clicked.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class Signal(enum.StrEnum):
    """What a condition can ask about an earlier step."""

    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    OPENED = "opened"
    CLICKED = "clicked"
    CONVERTED = "converted"


#: Signals that come from engagement (a recipient's action), not from the provider's delivery.
ENGAGEMENT = frozenset({Signal.OPENED, Signal.CLICKED, Signal.CONVERTED})


@dataclass(frozen=True, slots=True)
class Outcomes:
    """What is known of one earlier step's message.

    ``sent`` is whether there was a message at all; ``statuses`` its deliveries' statuses; ``reporting`` whether
    every chosen channel reports deliveries; ``signals`` the engagement events recorded for the message;
    ``tracked`` the engagement signals the message could record (an absent one stays unknown).
    """

    sent: bool
    statuses: frozenset[str] = frozenset()
    reporting: bool = False
    signals: frozenset[Signal] = frozenset()
    tracked: frozenset[Signal] = field(default_factory=frozenset)

    def of(self, signal: Signal) -> bool | None:
        """``signal`` is true, false, or unknown (``None``) for this step."""
        if not self.sent:
            return False
        if signal in ENGAGEMENT:
            return True if signal in self.signals else (False if signal in self.tracked else None)
        return _DELIVERY[signal](self.statuses, self.reporting)


def _sent(statuses: frozenset[str], _reporting: bool) -> bool | None:  # noqa: FBT001
    if {"sent", "delivered"} & statuses:
        return True
    return None if "unknown" in statuses else False


def _delivered(statuses: frozenset[str], reporting: bool) -> bool | None:  # noqa: FBT001
    """Known only where the channel reports deliveries: an email the relay accepted may or may not arrive."""
    if "delivered" in statuses:
        return True
    if "unknown" in statuses or ({"sent"} & statuses and not reporting):
        return None
    return False


def _failed(statuses: frozenset[str], _reporting: bool) -> bool | None:  # noqa: FBT001
    """Every delivery ended failed (a blocked one sent nothing, a pending one has not failed yet)."""
    if "unknown" in statuses:
        return None
    return bool(statuses) and statuses <= {"failed"}


_DELIVERY = {Signal.SENT: _sent, Signal.DELIVERED: _delivered, Signal.FAILED: _failed}


def _all(values: Iterable[bool | None]) -> bool | None:
    seen = list(values)
    if False in seen:
        return False
    return None if None in seen else True


def _any(values: Iterable[bool | None]) -> bool | None:
    seen = list(values)
    if True in seen:
        return True
    return None if None in seen else False


@dataclass(frozen=True, slots=True)
class Evaluated:
    """A condition's value and each term's, for the step's recorded decision."""

    value: bool | None
    terms: list[dict[str, Any]]


def evaluate(when: Mapping[str, Any] | None, outcomes: Mapping[str, Outcomes]) -> Evaluated:
    """The value of ``when`` (``{all|any: [{step, has|has_not: signal}]}``) given each earlier step's outcomes.

    No condition is true. ``has_not`` negates a known value and leaves an unknown one unknown.
    """
    if not when:
        return Evaluated(value=True, terms=[])
    combine, items = ("all", _all) if "all" in when else ("any", _any)
    terms: Sequence[Mapping[str, Any]] = when[combine]
    shown: list[dict[str, Any]] = []
    values: list[bool | None] = []
    for term in terms:
        negate = "has_not" in term
        signal = Signal(term["has_not"] if negate else term["has"])
        known = outcomes[term["step"]].of(signal)
        value = known if known is None or not negate else not known
        values.append(value)
        shown.append({**term, "outcome": _word(known)})
    return Evaluated(items(values), shown)


def _word(value: bool | None) -> str:  # noqa: FBT001
    return "unknown" if value is None else ("true" if value else "false")
