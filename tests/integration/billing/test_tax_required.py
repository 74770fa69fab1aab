"""Tax that cannot be computed is an error for that invoice, not 0 (issue 15, item 3), on
SQLite and PostgreSQL: a country without a rate leaves its account unbilled and reported in
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


def test_an_account_with_no_country_is_not_taxed(ledger) -> None:
    """No country, no jurisdiction to look up: billed without tax (the rule above is about a
    country that has no rate)."""
    _setup(ledger)
    _rate(ledger, "US", "", "0.0825")
    acc = _billed(ledger, None)
    assert ledger.run(MAR1).errors == []
    assert _totals(ledger, acc) == [(10000, 0, 10000)]
