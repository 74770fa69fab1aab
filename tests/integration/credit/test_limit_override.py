"""Finance's credit limit override (issue 14, item 7), on SQLite and PostgreSQL: it wins over
the CRM's limit while set, a CRM update of the limit does not remove it, and holds follow at
once (the update touches the account).

Figures: the CRM's limit 1,000.00 USD and 1,200.00 owed (not yet due): on hold for the credit
limit. Override 1,500.00: released. The CRM lowers its limit to 500.00: still released (the
override decides). Override removed: the CRM's 500.00 applies, on hold again."""
from __future__ import annotations

from datetime import timedelta

import pytest
from credit_helpers import make_account, post_invoice

from billing_core.domain.errors import InvalidAmount
from billing_core.service.accounts import AccountIn, get_account, update_terms, upsert_accounts
from billing_core.service.receivables import account_summary


def _crm_limit(uow, limit: str) -> None:
    """The sync's update of the account (it never sends finance's fields)."""
    [result] = upsert_accounts(uow, [AccountIn(name="Account OVR", currency="USD",
                                               ext_id="OVR", credit_limit=limit)])
    assert result.error is None


def test_the_override_wins_over_the_crm_limit_until_removed(ledger, clock) -> None:
    today = clock.today
    acc = ledger.run(lambda u: make_account(u, "OVR", limit="1000.00"))
    ledger.run(lambda u: post_invoice(u, acc, 120000, issue=today, due=today + timedelta(30)))
    assert ledger.reasons(acc) == {"credit_limit"}

    assert ledger.run(lambda u: update_terms(u, acc, credit_limit_override="1500.00")) == \
        {"credit_limit_override_minor": 150000}
    assert ledger.reasons(acc) == set()
    ledger.run(lambda u: _crm_limit(u, "500.00"))
    assert ledger.reasons(acc) == set()
    with ledger.engine.connect() as conn:
        row = get_account(conn, acc)
        assert (row["credit_limit_minor"], row["credit_limit_override_minor"]) == (50000, 150000)
        summary = account_summary(conn, acc, today)
        assert (summary["credit_limit_minor"], summary["available_credit_minor"]) == \
            (150000, 30000)

    ledger.run(lambda u: update_terms(u, acc, credit_limit_override=""))
    assert ledger.reasons(acc) == {"credit_limit"}
    with ledger.engine.connect() as conn:
        assert get_account(conn, acc)["credit_limit_override_minor"] is None


def test_a_bad_override_names_the_field_and_changes_nothing(ledger) -> None:
    acc = ledger.run(lambda u: make_account(u, "BAD", limit="1000.00"))
    for value in ("-1", "1.005", "ten"):
        with pytest.raises(InvalidAmount) as info:
            ledger.run(lambda u, v=value: update_terms(u, acc, credit_limit_override=v))
        assert (info.value.field, info.value.value) == ("credit_limit_override", value)
    with ledger.engine.connect() as conn:
        assert get_account(conn, acc)["credit_limit_override_minor"] is None
