"""With the real bill run: an order taken in good standing that puts the account over its limit
is invoiced while its provisioning waits; a held order is not invoiced until released."""
from __future__ import annotations

from credit_helpers import licence_order, make_account, make_products
from sqlalchemy import select

from billing_core.adapters.tables import invoices
from billing_core.service.accounts import set_crm_hold
from billing_core.service.bill_run import run_bill_run
from billing_core.service.gate import accept_order


def test_bill_run_invoices_what_is_active_and_not_what_is_held(ledger, clock):
    today = clock.today
    start = today.replace(day=1)
    over, held, products = ledger.run(lambda u: (
        make_account(u, "OVER", limit="1000.00"), make_account(u, "HELD", crm_hold=True),
        make_products(u)))
    ledger.run(lambda u: accept_order(u, licence_order(over, "q-over", 12, products, start,
                                                       setup=True)))
    ledger.run(lambda u: accept_order(u, licence_order(held, "q-held", 1, products, start)))
    assert ledger.reasons(over) == {"credit_limit"} and ledger.reasons(held) == {"crm"}

    run = run_bill_run(ledger.engine, today, uow_factory=ledger.uow)
    assert [(i.account_id, i.total_minor) for i in run.invoices] == [(over, 125000)]
    assert ledger.reasons(over) == {"credit_limit"}
    assert ledger.request_states(over) == ["awaiting_hold_release"] * 2

    ledger.run(lambda u: set_crm_hold(u, held, False))
    run_bill_run(ledger.engine, today, uow_factory=ledger.uow)
    with ledger.engine.connect() as conn:
        assert conn.execute(select(invoices.c.total_minor).where(
            invoices.c.account_id == held)).scalar() == 10000
