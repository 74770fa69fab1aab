"""The states billing's records go through, as the database stores them.

Rules kept here
- Each value is the exact string in the database (the tables' CHECK constraints and the
  migrations name the same ones); a ``StrEnum`` member is that string, so it is written, compared
  and printed as before, and a value read back compares equal to its member.
- Invoice: draft → posted → partially_paid → paid as payments and credits are applied, back on
  unapply; void (only with nothing applied).
- Credit memo: draft → active → partially_applied → applied, back on unapply; cancelled while
  nothing is applied. Debit memo: draft → active → partially_paid → paid; cancelled while unpaid.
- Order: accepted (taken, not activated), held (waiting for the account's hold to lift), active,
  cancelled. Its items (subscriptions, one-time charges) and quantity changes are pending while
  the order or the account is held, then active, or cancelled with the order.
- Provisioning request: pending → dispatching → dispatched → provisioned, or failed;
  awaiting_hold_release while the account is on hold (provisions and increases only);
  cancelled with its order (or by its subscription's end); superseded when a later decrease
  or end of its subscription went out first.
- The *open* groups say which documents still owe (invoices, debit memos) or still give
  (credit memos) money.
"""
from __future__ import annotations

from enum import StrEnum


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    POSTED = "posted"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    VOID = "void"


class CreditMemoStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PARTIALLY_APPLIED = "partially_applied"
    APPLIED = "applied"
    CANCELLED = "cancelled"


class DebitMemoStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    CANCELLED = "cancelled"


class OrderStatus(StrEnum):
    ACCEPTED = "accepted"
    HELD = "held"
    ACTIVE = "active"
    CANCELLED = "cancelled"


class ItemStatus(StrEnum):
    """Of a subscription, a one-time charge or a quantity change."""

    PENDING = "pending"
    ACTIVE = "active"
    CANCELLED = "cancelled"


class ProvisioningState(StrEnum):
    PENDING = "pending"
    AWAITING_HOLD_RELEASE = "awaiting_hold_release"
    DISPATCHING = "dispatching"
    DISPATCHED = "dispatched"
    PROVISIONED = "provisioned"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"


class ChangeKind(StrEnum):
    """What a provisioning request does to the subscription or item it names."""

    PROVISION = "provision"         # an order's item, as ordered
    INCREASE = "increase"           # a higher quantity (added exposure: waits while on hold)
    DECREASE = "decrease"           # a lower quantity (never held)
    DEPROVISION = "deprovision"     # the subscription ends (never held)


OPEN_INVOICE = (InvoiceStatus.POSTED, InvoiceStatus.PARTIALLY_PAID)
OPEN_DEBIT_MEMO = (DebitMemoStatus.ACTIVE, DebitMemoStatus.PARTIALLY_PAID)
OPEN_CREDIT_MEMO = (CreditMemoStatus.ACTIVE, CreditMemoStatus.PARTIALLY_APPLIED)
# A memo in these states can still be cancelled (if nothing is applied to it).
CANCELLABLE_CREDIT_MEMO = (CreditMemoStatus.DRAFT, CreditMemoStatus.ACTIVE)
CANCELLABLE_DEBIT_MEMO = (DebitMemoStatus.DRAFT, DebitMemoStatus.ACTIVE)
# Orders whose items not yet invoiced count towards the account's unbilled orders.
OPEN_ORDER = (OrderStatus.ACCEPTED, OrderStatus.HELD, OrderStatus.ACTIVE)
# Not sent yet: what cancelling the order still stops.
UNSENT_REQUEST = (ProvisioningState.PENDING, ProvisioningState.AWAITING_HOLD_RELEASE)
# Reducing service: never held by a credit hold.
REDUCING = (ChangeKind.DECREASE, ChangeKind.DEPROVISION)
