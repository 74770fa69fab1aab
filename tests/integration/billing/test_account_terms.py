"""Finance's terms of an account (payment terms, tax exemption, region, bill cycle day), on
SQLite and PostgreSQL: what the CRM does not send is never reset by a CRM update, and a new
bill cycle day bills the days up to it prorated, with no day or unit billed twice."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from billing_core.adapters.tables import accounts
from billing_core.domain.errors import NotFound, ValidationError
from billing_core.service.accounts import AccountIn, update_terms, upsert_accounts
from billing_core.service.usage import import_usage


def _row(ledger, acc: int):
    with ledger.uow() as uow:
        return uow.conn.execute(select(accounts).where(accounts.c.id == acc)).mappings().one()


def _crm(name: str, region: str | None) -> AccountIn:
    """As the sync builds it: no bill cycle day, payment terms or exemption."""
    return AccountIn(name=name, currency="USD", ext_id="001A", ext_source="sf", country="US",
                     region=region)


def test_a_crm_update_keeps_finance_terms_and_sets_its_own_fields(ledger) -> None:
    with ledger.uow() as uow:
        [created] = upsert_accounts(uow, [_crm("Acme", "CA")])
        uow.commit()
    acc = created.account_id
    row = _row(ledger, acc)
    assert (row["bill_cycle_day"], row["payment_terms_days"], row["tax_exempt"]) == (1, 30, False)
    with ledger.uow() as uow:
        changes = update_terms(uow, acc, payment_terms_days=45, tax_exempt=True, region="NY")
        assert changes == {"payment_terms_days": 45, "tax_exempt": True, "region": "NY"}
        assert update_terms(uow, acc, payment_terms_days=45) == {}    # nothing changed
        uow.commit()
    with ledger.uow() as uow:
        [updated] = upsert_accounts(uow, [_crm("Acme Corp", "CA")])
        uow.commit()
    assert updated.changed
    row = _row(ledger, acc)
    # the CRM's name and region win; the terms it does not send stay finance's
    assert (row["name"], row["region"], row["payment_terms_days"], row["tax_exempt"]) == \
        ("Acme Corp", "CA", 45, True)


def test_bad_terms_name_the_field_and_write_nothing(ledger) -> None:
    acc = ledger.account(country="US")
    cases = [({"payment_terms_days": -1}, "payment_terms_days"),
             ({"payment_terms_days": True}, "payment_terms_days"),
             ({"region": "x" * 65}, "region"),
             ({"tax_exempt": "yes"}, "tax_exempt"),
             ({"bill_cycle_day": 0}, "bill_cycle_day"),
             ({"bill_cycle_day": 32}, "bill_cycle_day")]
    for kwargs, field in cases:
        with ledger.uow() as uow, pytest.raises(ValidationError) as info:
            update_terms(uow, acc, **kwargs)
        assert info.value.field == field, kwargs
    with ledger.uow() as uow, pytest.raises(NotFound):
        update_terms(uow, 999_999, payment_terms_days=10)
    row = _row(ledger, acc)
    assert (row["payment_terms_days"], row["region"], row["tax_exempt"], row["bill_cycle_day"]) \
        == (30, None, False, 1)


def _run_days(ledger, first: date, last: date) -> None:
    """A daily bill run, as the daemon's, from ``first`` to ``last`` inclusive."""
    day = first
    while day <= last:
        assert ledger.run(day).errors == []
        day += timedelta(days=1)


def test_a_later_bill_cycle_day_bills_the_days_up_to_it_prorated(ledger) -> None:
    """5 seats at 20.00 from 1 January 2027, bill cycle day 1: January and February billed
    (100.00 each, billed through 1 March). On 10 February the day becomes 15. The first
    invoice whose period starts on or after 1 March is the one of 15 March - 15 April: 1-14
    March, 14 of the 28 days of the period 15 February - 15 March, 5 x 20.00 x 14/28 = 50.00,
    then that period in advance, 100.00. Billed 1 January - 15 May: 4.5 months, 450.00."""
    acc = ledger.account()
    ledger.subscribe(acc, ledger.product("20.00"), 5, date(2027, 1, 1))
    _run_days(ledger, date(2027, 1, 1), date(2027, 2, 10))
    with ledger.uow() as uow:
        assert update_terms(uow, acc, bill_cycle_day=15) == {"bill_cycle_day": 15}
        uow.commit()
    _run_days(ledger, date(2027, 2, 10), date(2027, 4, 30))
    assert [(str(i["period_start"]), ledger.amounts(i)) for i in ledger.invoices(acc)] == [
        ("2027-01-01", [("recurring", 10000)]),
        ("2027-02-01", [("recurring", 10000)]),
        ("2027-03-15", [("proration", 5000), ("recurring", 10000)]),
        ("2027-04-15", [("recurring", 10000)])]


def test_an_earlier_bill_cycle_day_with_usage_bills_every_day_and_unit_once(ledger) -> None:
    """Bill cycle day 15 → 1 on 20 February 2027 (billed through 15 March). 1 March bills
    only February's usage (10 units x 0.10 = 1.00); 1 April bills 15-31 March, 17 of March's
    31 days, 5 x 20.00 x 17/31 = 54.838... → 54.84, April 100.00 and March's usage 1.00.
    Every usage event is billed once: 10 + 10 + 10 + 10 units."""
    acc = ledger.account(bcd=15)
    ledger.subscribe(acc, ledger.product("20.00"), 5, date(2027, 1, 15))
    use = ledger.product("0.10", kind="usage")
    with ledger.uow() as uow:
        import_usage(uow, [{"event_id": f"e{day}", "account": str(acc), "product": str(use),
                            "quantity": "10", "occurred_at": f"2027-{day}T00:00:00Z"}
                           for day in ("01-20", "02-05", "02-20", "03-05")])
        uow.commit()
    _run_days(ledger, date(2027, 1, 15), date(2027, 2, 20))
    with ledger.uow() as uow:
        update_terms(uow, acc, bill_cycle_day=1)
        uow.commit()
    _run_days(ledger, date(2027, 2, 21), date(2027, 4, 30))
    assert [(str(i["period_start"]), ledger.amounts(i)) for i in ledger.invoices(acc)] == [
        ("2027-01-15", [("recurring", 10000)]),
        ("2027-02-15", [("recurring", 10000), ("usage", 200)]),
        ("2027-03-01", [("usage", 100)]),
        ("2027-04-01", [("proration", 5484), ("recurring", 10000), ("usage", 100)])]
