"""Tax that cannot be computed is an error for that invoice, not 0 (issue 15, item 3), on
SQLite and PostgreSQL: a country without a rate (or no country) leaves its account unbilled and reported in
the run's errors while the rest of the run bills; an explicit rate of 0, or the account's
tax exemption, zero-rates it.

Figures (5 seats at 20.00, bill cycle day 1, billed on 1 March 2027 for March in advance):
subtotal 5 x 20.00 = 100.00; at 8.25 % the tax is 8.25 and the total 108.25; at 19 %, 19.00
and 119.00; zero-rated or exempt, 0.00 and 100.00.
"""
from __future__ import annotations

from datetime import date

from billing_core.service.accounts import update_terms
from billing_core.service.tax import set_tax_rate

MAR1 = date(2027, 3, 1)
SINCE = date(2020, 1, 1)


def _rate(ledger, country: str, region: str, rate: str) -> None:
    with ledger.uow() as uow:
        set_tax_rate(uow, country, region, rate, SINCE)
        uow.commit()


def _billed(ledger, country: str | None, region: str | None = None) -> int:
    acc = ledger.account(country=country, region=region)
    ledger.subscribe(acc, ledger.seat, 5, MAR1)
    return acc


def _totals(ledger, acc: int) -> list[tuple[int, int, int]]:
    return [(i["subtotal_minor"], i["tax_minor"], i["total_minor"]) for i in ledger.invoices(acc)]


def _setup(ledger) -> None:
    ledger.seat = ledger.product("20.00")


def test_a_country_without_a_rate_is_not_billed_and_the_run_goes_on(ledger) -> None:
    _setup(ledger)
    _rate(ledger, "US", "", "0.0825")
    de = _billed(ledger, "DE")
    us = _billed(ledger, "US")
    result = ledger.run(MAR1)
    assert result.invoices_created == 1
    assert _totals(ledger, us) == [(10000, 825, 10825)]
    assert ledger.invoices(de) == []
    [err] = result.errors
    assert (err["account_id"], err["code"], err["field"], err["value"]) == \
        (de, "missing_tax_rate", "country", "DE")
    assert f"account {de}" in str(err["message"]) and "2027-03-01" in str(err["message"])

    # the rate set, the next run bills the account it left: 19.00 on 100.00
    _rate(ledger, "DE", "", "0.19")
    again = ledger.run(MAR1)
    assert (again.invoices_created, again.errors) == (1, [])
    assert _totals(ledger, de) == [(10000, 1900, 11900)]


def test_a_region_without_its_own_rate_takes_the_country_rate_or_is_refused(ledger) -> None:
    """US/CA with only a US/NY rate: no rate applies, refused, named "US/CA". Once the
    country has an explicit 0 (zero-rated), CA is billed without tax."""
    _setup(ledger)
    _rate(ledger, "US", "NY", "0.04")
    ca = _billed(ledger, "US", "CA")
    result = ledger.run(MAR1)
    assert [(e["account_id"], e["value"]) for e in result.errors] == [(ca, "US/CA")]
    _rate(ledger, "US", "", "0")
    assert ledger.run(MAR1).errors == []
    assert _totals(ledger, ca) == [(10000, 0, 10000)]


def test_an_exempt_account_is_billed_without_tax_whatever_its_country(ledger) -> None:
    """DE has no rate and FR has 20 %: both exempt accounts are billed 100.00, no tax."""
    _setup(ledger)
    _rate(ledger, "FR", "", "0.20")
    de, fr = _billed(ledger, "DE"), _billed(ledger, "FR")
    with ledger.uow() as uow:
        for acc in (de, fr):
            assert update_terms(uow, acc, tax_exempt=True) == {"tax_exempt": True}
        uow.commit()
    result = ledger.run(MAR1)
    assert (result.invoices_created, result.errors) == (2, [])
    assert _totals(ledger, de) == _totals(ledger, fr) == [(10000, 0, 10000)]


def test_nothing_to_bill_is_no_error_and_a_dry_run_reports_the_same(ledger) -> None:
    """An account of a country without a rate that has nothing to bill gets neither an
    invoice nor an error; a dry run reports the refused account as the run would."""
    _setup(ledger)
    ledger.account(country="DE")
    de = _billed(ledger, "JP")
    dry = ledger.run(MAR1, dry_run=True)
    assert [(e["account_id"], e["value"]) for e in dry.errors] == [(de, "JP")]
    assert ledger.invoices(de) == []


def test_an_account_with_no_country_is_refused_until_it_has_one_or_is_exempt(ledger) -> None:
    """No country is no tax location: its invoice is refused like a country without a rate
    (named ``country`` = None), never billed 0 % in silence; the US account beside it is billed
    108.25. Once the CRM sends its country (US, 8.25 %) the next run bills it 108.25; a second
    account with no country that finance marks exempt is billed 100.00 without tax."""
    from billing_core.service.accounts import AccountIn, update_account

    _setup(ledger)
    _rate(ledger, "US", "", "0.0825")
    nowhere, us, exempt = _billed(ledger, None), _billed(ledger, "US"), _billed(ledger, None)
    with ledger.uow() as uow:       # the factory zero-rates country-less accounts: undo that
        assert update_terms(uow, nowhere, tax_exempt=False) == {"tax_exempt": False}
        uow.commit()
    result = ledger.run(MAR1)
    assert result.invoices_created == 2
    assert _totals(ledger, us) == [(10000, 825, 10825)]
    assert _totals(ledger, exempt) == [(10000, 0, 10000)]
    assert ledger.invoices(nowhere) == []
    [err] = result.errors
    assert (err["account_id"], err["code"], err["field"], err["value"]) == \
        (nowhere, "missing_tax_rate", "country", None)
    assert "tax-exempt" in str(err["message"]) and f"account {nowhere}" in str(err["message"])

    with ledger.uow() as uow:       # the CRM's next update carries the billing country
        update_account(uow, nowhere, AccountIn(name="Nowhere Inc", currency="USD",
                                               ext_id=_ext_id(ledger, nowhere), country="US"))
        uow.commit()
    again = ledger.run(MAR1)
    assert (again.invoices_created, again.errors) == (1, [])
    assert _totals(ledger, nowhere) == [(10000, 825, 10825)]


def _ext_id(ledger, account_id: int) -> str:
    from sqlalchemy import select

    from billing_core.adapters.tables import accounts
    with ledger.engine.connect() as conn:
        return str(conn.execute(select(accounts.c.ext_id)
                                .where(accounts.c.id == account_id)).scalar_one())
