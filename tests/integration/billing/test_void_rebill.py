"""Voiding an invoice gives back what it billed: the next bill run bills it again, once."""
from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from billing_core.domain.errors import InvalidState
from billing_core.service.documents import void_invoice
from billing_core.service.usage import import_usage


def _void(ledger, ref) -> None:
    with ledger.uow() as uow:
        void_invoice(uow, ref)
        uow.commit()


def test_void_then_rerun_bills_the_same_charges_again(ledger) -> None:
    acc = ledger.account()
    seat = ledger.product("30.00")
    setup = ledger.product("100.00", kind="one_time")
    calls = ledger.product("0.10", kind="usage")
    ledger.subscribe(acc, seat, 2, date(2026, 3, 10))          # mid-period start
    ledger.charge(acc, setup, 1, date(2026, 3, 10))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        import_usage(uow, [{"event_id": "e1", "account": acc, "product": calls, "quantity": "40",
                            "occurred_at": datetime(2026, 4, 5, tzinfo=UTC)}])
        uow.commit()
    ledger.run(date(2026, 5, 1))
    april, may = ledger.invoices(acc)

    with pytest.raises(InvalidState, match="void " + may["number"]):
        _void(ledger, april["number"])            # an earlier invoice: refused, names the later

    _void(ledger, may["number"])
    assert ledger.run(date(2026, 5, 1)).invoices_created == 1
    (reissued,) = [i for i in ledger.invoices(acc) if i["status"] != "void"
                   and i["period_start"] == date(2026, 5, 1)]
    assert ledger.amounts(reissued) == ledger.amounts(may)      # usage and May's seats again

    _void(ledger, reissued["number"])
    _void(ledger, april["number"])
    assert ledger.run(date(2026, 5, 1)).invoices_created == 1   # one invoice for the May period
    (live,) = [i for i in ledger.invoices(acc) if i["status"] != "void"]
    # March proration, April and May seats, the set-up fee and April's usage: everything the
    # two voided invoices billed, billed once.
    assert live["total_minor"] == april["total_minor"] + may["total_minor"]
    assert sorted(a for _, a in ledger.amounts(live)) == sorted(
        a for _, a in ledger.amounts(april) + ledger.amounts(may))


def test_a_second_run_after_rebilling_bills_nothing(ledger) -> None:
    acc = ledger.account()
    seat = ledger.product("30.00")
    ledger.subscribe(acc, seat, 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    (april,) = ledger.invoices(acc)
    _void(ledger, april["number"])
    assert ledger.run(date(2026, 4, 1)).invoices_created == 1
    assert ledger.run(date(2026, 4, 1)).invoices_created == 0
    live = [i for i in ledger.invoices(acc) if i["status"] != "void"]
    assert [ledger.amounts(i) for i in live] == [[("recurring", 3000)]]
