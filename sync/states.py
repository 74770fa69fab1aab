"""The hand-off's states (``handoffs.state``; the database holds these strings).

Rules kept here:
- ``waiting``: the quote is accepted but cannot become an order yet (its account or lines are
  not known, or billing refused the order); it is looked at again every cycle.
- ``done``: its order was placed (exactly once per revision, by ``source_ref``).
- ``reversed_in_crm``: the quote left the accepted state after hand-off; reported once, the
  order is never undone by the sync.
- ``withdrawn``: a waiting quote left the accepted state before it was handed off.
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
