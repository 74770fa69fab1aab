"""What the outbox makes of billing's views (pure: no database), and its state strings."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from billing_core.service.views import AccountView, OrderView, provisioning_status
from sync.outbox import decode, payload_of, quote_payload
from sync.states import OutboxState


def _view(**over: object) -> AccountView:
    base: dict[str, object] = dict(
        account_id=7, currency="BHD", open_balance=Decimal("12.345"), exposure=Decimal("20.000"),
        available_credit=Decimal("-0.500"), oldest_overdue_days=3,
        last_invoice_number="INV-000009", last_invoice_date=date(2026, 3, 1),
        hold_reasons=("credit_limit", "manual"), held_by_billing=True)
    base.update(over)
    return AccountView(**base)  # type: ignore[arg-type]


def test_an_account_payload_is_json_text_that_decodes_back():
    payload = payload_of(_view())
    assert payload == {
        "billing_hold": True, "billing_hold_reasons": "credit_limit;manual",
        "open_balance": "12.345", "available_credit": "-0.500", "exposure": "20.000",
        "oldest_overdue_days": 3, "last_invoice_number": "INV-000009",
        "last_invoice_date": "2026-03-01"}
    assert {k: decode(k, v) for k, v in payload.items()}["last_invoice_date"] == date(2026, 3, 1)
    assert decode("open_balance", payload["open_balance"]) == Decimal("12.345")


def test_no_limit_no_invoice_no_hold():
    payload = payload_of(_view(available_credit=None, last_invoice_number=None,
                               last_invoice_date=None, hold_reasons=(),
                               held_by_billing=False))
    assert (payload["billing_hold"], payload["billing_hold_reasons"]) == (False, "")
    assert payload["available_credit"] is payload["last_invoice_date"] is None


@pytest.mark.parametrize("reasons, by_billing, acked, flag", [
    (("overdue",), True, None, True),
    (("crm",), False, None, "absent"),                      # not a reason billing places
    (("manual",), False, {"credit_hold": True}, False),     # billing set it: billing clears it
    ((), False, {"open_balance": "1"}, "absent"),           # billing never set it: left alone
])
def test_the_crm_hold_flag_is_written_only_for_billing_reasons(reasons, by_billing, acked, flag):
    view = _view(hold_reasons=reasons, held_by_billing=by_billing)
    assert payload_of(view, write_hold=True, acked=acked).get("credit_hold", "absent") == flag
    assert "credit_hold" not in payload_of(view, acked=acked)


def test_a_quote_payload_shows_its_order():
    view = OrderView(order_id=4, order_number="ORD-4", provisioning_status="dispatched",
                     first_invoice_number=None)
    assert quote_payload(view) == {"order_number": "ORD-4", "provisioning_status": "dispatched",
                                   "invoice_number": None}


@pytest.mark.parametrize("states, order_status, shown", [
    ([], "active", "not required"),
    (["provisioned", "awaiting_hold_release"], "active", "waiting for hold release"),
    (["pending"], "held", "waiting for hold release"),
    (["failed", "provisioned"], "active", "failed"),
    (["provisioned", "cancelled"], "active", "provisioned"),
    (["cancelled"], "cancelled", "cancelled"),
    (["dispatched", "provisioned"], "active", "dispatched"),
    (["dispatching", "provisioned"], "active", "in progress"),
])
def test_an_orders_provisioning_status(states, order_status, shown):
    assert provisioning_status(states, order_status) == shown


def test_outbox_states_are_the_strings_the_database_holds():
    assert [str(s) for s in OutboxState] == ["pending", "sending", "acked", "dead"]
    assert OutboxState("dead") is OutboxState.DEAD
