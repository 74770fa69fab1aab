"""The provisioner interface: how billing hands a provisioning request to the outside world.

Rules kept here
- A provisioner receives one :class:`ProvisioningTask` and either returns an outcome
  (``dispatched``: the receiver accepted it; ``provisioned``: the receiver confirmed it is done)
  or raises :class:`ProvisionError`. It never touches the ledger: the dispatch loop records the
  outcome in its own transaction.
- The task carries the request's ``idempotency_key``, fixed when the request was created; a
  provisioner sends that key on every attempt, so a receiver can recognise a re-send (after a
  retry, or after a crash between sending and recording) and do the work once.
- The task says what to do (``change_kind``: ``provision`` an order's item, ``increase`` or
  ``decrease`` to ``quantity``, ``deprovision`` at the subscription's end, quantity 0) and from
  when (``effective_date``; None: at once). A request is dispatched on or after that day, and
  a subscription's requests in order, so a receiver can apply each as "the quantity from now".
- ``ProvisionError.retriable`` says whether trying again later could help (429, 5xx, timeouts)
  or not (a 4xx the receiver will answer the same way).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal, Protocol

Outcome = Literal["dispatched", "provisioned"]


@dataclass(frozen=True)
class ProvisioningTask:
    request_id: int
    idempotency_key: str
    attempt: int
    account_id: int
    account_ext_source: str
    account_ext_id: str
    account_name: str
    order_id: int
    order_ref: str
    product_id: int
    product_sku: str
    quantity: Decimal
    subscription_id: int | None = None
    one_time_charge_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # what the request does (provision | increase | decrease | deprovision) and from when
    # (None: at once); ``quantity`` is the quantity from then on (0 for deprovision)
    change_kind: str = "provision"
    effective_date: date | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON body a receiver gets (amounts and quantities as strings, never floats):
        the same on every re-send of the request, like its key (the attempt number travels
        beside it, e.g. the webhook's ``X-Ledgerbridge-Attempt`` header), so a receiver that
        compares a repeated key's body with the first sees the same request."""
        return {
            "request_id": self.request_id,
            "idempotency_key": self.idempotency_key,
            "account": {"id": self.account_id, "source": self.account_ext_source,
                        "external_id": self.account_ext_id, "name": self.account_name},
            "order": {"id": self.order_id, "ref": self.order_ref},
            "product": {"id": self.product_id, "sku": self.product_sku},
            "quantity": format(self.quantity, "f"),
            "subscription_id": self.subscription_id,
            "one_time_charge_id": self.one_time_charge_id,
            "change": self.change_kind,
            "effective_date": None if self.effective_date is None
            else self.effective_date.isoformat(),
        }


class ProvisionError(Exception):
    def __init__(self, message: str, *, retriable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.status = status


class Provisioner(Protocol):
    name: str

    def provision(self, task: ProvisioningTask) -> Outcome:
        """Hand the task over; return the outcome or raise ``ProvisionError``."""
        ...
