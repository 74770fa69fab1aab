"""The sync's states: the hand-off's (``handoffs.state``) and the outbox's (``outbox.state``);
the database holds these strings.

Hand-off:
- ``waiting``: the quote is accepted but cannot become an order yet (its account or lines are
  not known, or billing refused the order); it is looked at again every cycle.
- ``done``: its order was placed (exactly once per revision, by ``source_ref``).
- ``reversed_in_crm``: the quote left the accepted state after hand-off; reported once, the
  order is never undone by the sync.
- ``withdrawn``: a waiting quote left the accepted state before it was handed off.

Outbox: ``pending`` (to send), ``sending`` (claimed by a push), ``acked`` (the CRM confirmed
this payload), ``dead`` (refused ``push_max_attempts`` times; listed by status, retried by hand).
"""
from __future__ import annotations

from enum import StrEnum


class HandoffState(StrEnum):
    WAITING = "waiting"
    DONE = "done"
    REVERSED_IN_CRM = "reversed_in_crm"
    WITHDRAWN = "withdrawn"


#: A revision in one of these states has its order (handed off before).
PLACED = frozenset({HandoffState.DONE, HandoffState.REVERSED_IN_CRM})


class OutboxState(StrEnum):
    """An outbox row's ``state`` (the database holds these strings)."""

    PENDING = "pending"     # to send: a new value, put back, or backing off after a refusal
    SENDING = "sending"     # claimed by a push; its lease ends at next_attempt_at
    ACKED = "acked"         # the CRM confirmed this payload
    DEAD = "dead"           # refused max_attempts times; listed by status, retried by hand
