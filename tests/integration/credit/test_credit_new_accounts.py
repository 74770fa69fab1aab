"""New accounts take credit control's fast path (no figures read: they have none), and it must
decide exactly what the full evaluation decides; anything else written for the account in the
same transaction sends it down the full path."""
from __future__ import annotations

from decimal import Decimal

import pytest
from credit_helpers import licence_order, make_account, make_products

from billing_core.domain.credit import CreditPolicy
from billing_core.service.accounts import AccountIn, upsert_accounts
from billing_core.service.credit_control import expected_reasons
from billing_core.service.gate import accept_order

POLICIES = [CreditPolicy(), CreditPolicy(no_limit_is_unlimited=False),
            CreditPolicy(limit_threshold=Decimal("0.5"), include_unbilled_orders=False)]


@pytest.mark.parametrize("policy", POLICIES, ids=["default", "no-limit-is-zero", "half"])
def test_the_fast_path_decides_what_the_full_evaluation_decides(ledger, policy):
    ledger.policy = policy
    shapes = [(hold, limit) for hold in (False, True) for limit in (None, "0", "0.01", "500")]
    items = [AccountIn(name=f"New {n}", currency="USD", ext_id=f"NEW{n}", crm_hold=hold,
                       credit_limit=limit) for n, (hold, limit) in enumerate(shapes)]
    results = ledger.run(lambda u: upsert_accounts(u, items))
    ids = [r.account_id for r in results]
    assert all(r.created for r in results)
    with ledger.engine.connect() as conn:
        full = {a: set(expected_reasons(conn, a, ledger.clock.today, policy)) for a in ids}
    assert {a: ledger.reasons(a) for a in ids} == full
    assert {a for a, reasons in full.items() if reasons} == {
        a for a, (hold, _) in zip(ids, shapes, strict=True) if hold}


def test_an_account_given_an_order_in_its_own_transaction_is_evaluated_in_full(ledger, clock):
    products = ledger.run(make_products)

    def create_and_order(uow):
        account = make_account(uow, "BIG", limit="100")
        assert account in uow.new_accounts
        accept_order(uow, licence_order(account, "ord-1", 5, products, clock.today))
        assert account not in uow.new_accounts       # the order touched it: full path
        return account

    account = ledger.run(create_and_order)
    assert ledger.reasons(account) == {"credit_limit"}    # 500.00 ordered over a 100.00 limit
    assert ledger.request_states(account) == ["awaiting_hold_release"]
