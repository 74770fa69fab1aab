"""Credit control's rules on plain values: the policy, the hold reasons it implies, and which
reasons a change of the figures places or lifts.

Rules kept here
- ``crm`` applies while the account's CRM hold flag is set.
- ``credit_limit`` applies while exposure is above ``limit × limit_threshold``, rounded down to a
  whole minor unit (a fractional threshold holds sooner, never later). An account without a
  limit is unlimited when ``no_limit_is_unlimited`` (the default), else its limit counts as 0.
  Exposure is a given figure here (open balance, plus unbilled orders when
  ``include_unbilled_orders``: the service reads it), needed only when a limit applies.
- ``overdue`` applies while an open document's due date is before ``on_date − grace days``; its
  figures list the 20 most overdue documents (oldest due date first, then number) and the total
  overdue.
- ``manual`` is an admin's: nothing here places or lifts it. :func:`decide` places each computed
  reason (:data:`COMPUTED`) that applies and is absent, lifts each present one that no longer
  applies, and leaves the reasons that stay in the order they were placed, new ones after.
- Provenance: ``crm`` is placed and lifted by its connection (actor ``crm:<connection>``),
  ``credit_limit`` and ``overdue`` by ``billing`` (:func:`actor`).
- A placed reason records the figures that held the account; a lift records what released it.

Billing defines the policy; ``config`` builds it from the ``[credit]`` table. No I/O here.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any

DOCUMENTS_SHOWN = 20    # overdue documents listed in a reason's figures


class HoldReason(StrEnum):
    CRM = "crm"
    CREDIT_LIMIT = "credit_limit"
    OVERDUE = "overdue"
    MANUAL = "manual"


COMPUTED = (HoldReason.CRM, HoldReason.CREDIT_LIMIT, HoldReason.OVERDUE)
BILLING_OWNED = frozenset({HoldReason.CREDIT_LIMIT, HoldReason.OVERDUE})
BILLING_SOURCE = "billing"


@dataclass(frozen=True)
class CreditPolicy:
    include_unbilled_orders: bool = True          # accepted, not yet invoiced orders count
    overdue_grace_days: int = 0                   # days past due before 'overdue' applies
    limit_threshold: Decimal = Decimal("1")       # share of the limit that triggers a hold
    no_limit_is_unlimited: bool = True            # no limit: never 'credit_limit'


@dataclass(frozen=True)
class OpenDebt:
    """An open invoice or debit memo with a balance (in the account's currency)."""

    type: str                       # "invoice" | "debit_memo"
    id: int
    number: str | None
    due_date: date | None
    balance_minor: int


@dataclass(frozen=True)
class CreditFacts:
    """What the rules know of one account."""

    currency: str
    connection: str | None                  # the CRM connection it came from
    crm_hold: bool = False
    limit_minor: int | None = None          # None: no limit set
    exposure_minor: int | None = None       # None: not read (needed only when a limit applies)
    debts: tuple[OpenDebt, ...] = ()        # open documents (those not overdue may be left out)
    held: tuple[HoldReason, ...] = ()       # the reasons it carries now, in the order placed


@dataclass(frozen=True)
class Decision:
    """What to change so the account carries the reasons that apply, each with its figures."""

    place: Mapping[HoldReason, dict[str, Any]]
    lift: Mapping[HoldReason, dict[str, Any]]
    reasons: tuple[HoldReason, ...]         # what it carries afterwards

    @property
    def on_hold(self) -> bool:
        return bool(self.reasons)


def limit_applies(limit_minor: int | None, policy: CreditPolicy) -> bool:
    """Whether ``credit_limit`` can apply at all (only then is exposure needed)."""
    return limit_minor is not None or not policy.no_limit_is_unlimited


def hold_threshold_minor(limit_minor: int | None, policy: CreditPolicy) -> int | None:
    """The exposure above which ``credit_limit`` applies; None = never (unlimited)."""
    if not limit_applies(limit_minor, policy):
        return None
    if limit_minor is None:
        limit_minor = 0
    return int((Decimal(limit_minor) * policy.limit_threshold).to_integral_value(ROUND_FLOOR))


def overdue_cutoff(on_date: date, grace_days: int) -> date:
    """A document due before this day is overdue on ``on_date``."""
    return on_date - timedelta(days=grace_days)


def is_overdue(due_date: date | None, on_date: date, grace_days: int) -> bool:
    """Past its due date and the grace days on ``on_date`` (no due date: never)."""
    return due_date is not None and due_date < overdue_cutoff(on_date, grace_days)


def overdue_debts(debts: Collection[OpenDebt], on_date: date, grace_days: int
                  ) -> list[OpenDebt]:
    """The overdue ones, most overdue first (then by number; ties keep their order)."""
    if not debts:
        return []           # most accounts: nothing to sort, no cut-off to compute
    cutoff = overdue_cutoff(on_date, grace_days)
    late = [(due, debt) for debt in debts if (due := debt.due_date) is not None and due < cutoff]
    late.sort(key=lambda pair: (pair[0], pair[1].number or ""))
    return [debt for _, debt in late]


def expected_reasons(facts: CreditFacts, policy: CreditPolicy, on_date: date
                     ) -> dict[HoldReason, dict[str, Any]]:
    """The computed reasons that apply on ``on_date``, each with the figures that hold it."""
    reasons: dict[HoldReason, dict[str, Any]] = {}
    if facts.crm_hold:
        reasons[HoldReason.CRM] = {"flag": True, "connection": facts.connection}
    threshold = hold_threshold_minor(facts.limit_minor, policy)
    if threshold is not None and _exposure(facts) > threshold:
        reasons[HoldReason.CREDIT_LIMIT] = _limit_figures(facts, policy, on_date)
    late = overdue_debts(facts.debts, on_date, policy.overdue_grace_days)
    if late:
        reasons[HoldReason.OVERDUE] = {
            "grace_days": policy.overdue_grace_days, "on_date": on_date,
            "currency": facts.currency,
            "documents": [{"type": d.type, "id": d.id, "number": d.number,
                           "due_date": d.due_date, "balance_minor": d.balance_minor}
                          for d in late[:DOCUMENTS_SHOWN]],
            "overdue_minor": sum(d.balance_minor for d in late)}
    return reasons


def lift_details(reason: HoldReason, facts: CreditFacts, policy: CreditPolicy,
                 on_date: date) -> dict[str, Any]:
    """What the history records when a computed reason is lifted."""
    if reason == HoldReason.CREDIT_LIMIT:
        return _limit_figures(facts, policy, on_date)
    if reason == HoldReason.OVERDUE:
        return {"on_date": on_date, "grace_days": policy.overdue_grace_days}
    if reason == HoldReason.CRM:
        return {"flag": False, "connection": facts.connection}
    raise ValueError(f"reason {reason!r} is not computed: only an admin lifts it")


def decide(facts: CreditFacts, policy: CreditPolicy, on_date: date) -> Decision:
    """The computed reasons to place and to lift (see the module rules)."""
    expected = expected_reasons(facts, policy, on_date)
    if not expected and not facts.held:
        return _NO_CHANGE       # most accounts, most of the time: decided without more work
    place = {r: expected[r] for r in COMPUTED if r in expected and r not in facts.held}
    lift = {r: lift_details(r, facts, policy, on_date)
            for r in COMPUTED if r in facts.held and r not in expected}
    return Decision(place, lift, tuple(r for r in facts.held if r not in lift) + tuple(place))


_NO_CHANGE = Decision(MappingProxyType({}), MappingProxyType({}), ())


def actor(reason: HoldReason, connection: str | None) -> str:
    """Who places and lifts a computed reason (the source recorded with it)."""
    if reason == HoldReason.CRM:
        return f"crm:{connection}"
    if reason in BILLING_OWNED:
        return BILLING_SOURCE
    raise ValueError(f"reason {reason!r} is not computed: an admin places and lifts it")


def _exposure(facts: CreditFacts) -> int:
    if facts.exposure_minor is None:
        raise ValueError("exposure_minor is needed: a credit limit applies to the account")
    return facts.exposure_minor


def _limit_figures(facts: CreditFacts, policy: CreditPolicy, on_date: date) -> dict[str, Any]:
    # Without a limit that applies, exposure was not read: the figures say so (None).
    limited = limit_applies(facts.limit_minor, policy)
    return {"exposure_minor": facts.exposure_minor if limited else None,
            "limit_minor": facts.limit_minor, "threshold": str(policy.limit_threshold),
            "currency": facts.currency, "include_unbilled": policy.include_unbilled_orders,
            "on_date": on_date}
