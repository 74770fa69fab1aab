"""Finance sets a product's term settings (issue 14, lifecycle gaps): the service on SQLite and
PostgreSQL, the CLI's ``products show`` / ``products update`` over a SQLite file (exit codes
per ``jobs.cli.exits``: 0 done, 2 bad input with nothing written)."""
from __future__ import annotations

import json
from datetime import date

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from billing_core.adapters.tables import products, subscriptions
from billing_core.domain.errors import NotFound, ValidationError
from billing_core.service.gate import accept_order
from billing_core.service.orders import OrderIn, SubscriptionItem
from billing_core.service.pricing import set_product_terms
from jobs.cli import main

TERMS = ("term_months", "auto_renew", "term_decrease", "early_termination")


def _terms(ledger, pid: int) -> tuple:
    with ledger.uow() as uow:
        row = uow.conn.execute(select(products).where(products.c.id == pid)).mappings().one()
    return tuple(row[k] for k in TERMS)


def test_set_terms_then_a_new_subscription_takes_them(ledger) -> None:
    """A 20.00 seat with no term. Finance sets 12 months, auto-renew, decreases refused, early
    termination allowed. A subscription ordered from 20 January 2026 (bill cycle day 1) then
    takes the 12-month term: 20 January 2027 moved to the next bill cycle day, term end
    1 February 2027, renewing. Setting 0 months removes the term again (and only that)."""
    pid = ledger.product("20.00")
    assert _terms(ledger, pid) == (None, False, "at_term_end", "at_term_end")
    with ledger.uow() as uow:
        row = set_product_terms(uow, pid, term_months=12, auto_renew=True,
                                term_decrease="refuse", early_termination="allowed")
        uow.commit()
    assert tuple(row[k] for k in TERMS) == (12, True, "refuse", "allowed")
    acc = ledger.account(bcd=1)
    with ledger.uow() as uow:
        accept_order(uow, OrderIn(acc, "q-terms", date(2026, 1, 20), subscriptions=[
            SubscriptionItem(pid, 5, date(2026, 1, 20))]))
        uow.commit()
    with ledger.uow() as uow:
        sub = uow.conn.execute(select(subscriptions)).mappings().one()
    assert (sub["term_months"], sub["term_end"], sub["auto_renew"], sub["end_date"]) == (
        12, date(2027, 2, 1), True, None)
    with ledger.uow() as uow:
        set_product_terms(uow, str(pid), term_months=0)
        uow.commit()
    assert _terms(ledger, pid) == (None, True, "refuse", "allowed")


@pytest.mark.parametrize(("kwargs", "field", "value"), [
    ({"term_months": 121, "term_decrease": "refuse"}, "term_months", 121),
    ({"term_months": -1}, "term_months", -1),
    ({"term_decrease": "later", "term_months": 12}, "term_decrease", "later"),
    ({"early_termination": "never"}, "early_termination", "never"),
    ({"auto_renew": "yes"}, "auto_renew", "yes"),
])
def test_a_bad_value_names_field_and_value_and_writes_nothing(ledger, kwargs, field,
                                                              value) -> None:
    pid = ledger.product("20.00")
    with ledger.uow() as uow, pytest.raises(ValidationError) as info:
        set_product_terms(uow, pid, **kwargs)
    assert (info.value.field, info.value.value) == (field, value)
    assert _terms(ledger, pid) == (None, False, "at_term_end", "at_term_end")


def test_one_time_yearly_and_unknown_products(ledger) -> None:
    """A one-time product has no term; a product billed yearly takes whole years only (18
    months refused, 24 taken); an unknown product is NotFound."""
    setup = ledger.product("50.00", kind="one_time")
    yearly = ledger.product("1200.00", period="year")
    with ledger.uow() as uow:
        with pytest.raises(ValidationError) as info:
            set_product_terms(uow, setup, term_months=12)
        assert (info.value.field, info.value.value) == ("term_months", 12)
        with pytest.raises(ValidationError) as info:
            set_product_terms(uow, yearly, term_months=18)
        assert (info.value.field, info.value.value) == ("term_months", 18)
        assert set_product_terms(uow, yearly, term_months=24)["term_months"] == 24
        with pytest.raises(NotFound):
            set_product_terms(uow, "NO-SUCH-SKU", term_months=12)


# --- CLI ------------------------------------------------------------------------------------

def _cli(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", url, *args], catch_exceptions=False)


def test_cli_products_show_and_update(sqlite_engine) -> None:
    url = str(sqlite_engine.url)
    assert _cli(url, "products", "add", "--sku", "SEAT", "--name", "Seat").exit_code == 0
    res = _cli(url, "products", "update", "SEAT", "--term-months", "12", "--auto-renew",
               "--term-decrease", "refuse", "--early-termination", "allowed", "--json")
    assert res.exit_code == 0, res.output
    shown = json.loads(_cli(url, "products", "show", "SEAT", "--json").stdout)
    assert {k: shown[k] for k in TERMS} == {"term_months": 12, "auto_renew": True,
                                            "term_decrease": "refuse",
                                            "early_termination": "allowed"}
    assert _cli(url, "products", "show", "1").exit_code == 0
    # bad input: exit 2, one line naming the field and the value, nothing written
    for args, named in ((["--term-months", "121", "--term-decrease", "at_term_end"], "121"),
                        (["--term-decrease", "later"], "later"),
                        (["--early-termination", "never", "--no-auto-renew"], "never")):
        res = _cli(url, "products", "update", "SEAT", *args)
        assert res.exit_code == 2, res.output
        assert named in res.stderr and ("term" in res.stderr or "early" in res.stderr)
    assert json.loads(_cli(url, "products", "show", "SEAT", "--json").stdout) == shown
    assert _cli(url, "products", "update", "SEAT").exit_code == 2        # nothing to set
    assert _cli(url, "products", "update", "NOPE", "--term-months", "12").exit_code == 2
    assert _cli(url, "products", "show", "NOPE").exit_code == 2
    assert _cli(url, "products", "update", "SEAT", "--term-months", "x").exit_code == 2
