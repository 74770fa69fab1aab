"""Billing scenarios worked by hand from docs/BILLING.md, fifth part: an end date before
changes already billed, and two changes on one day. SQLite and PostgreSQL (``ledger`` runs on
the ``engine`` fixture)."""
from __future__ import annotations

from datetime import date

from sqlalchemy import select

from billing_core.adapters.tables import credit_memos
from billing_core.service.orders import change_quantity
from billing_core.service.subscriptions import end_subscription


def test_end_before_a_billed_increase_credits_each_quantity_as_billed(ledger) -> None:
    """'Cancellations': days billed after the end are credited at the quantities billed on
    them, by rule 4 (a range cut at periods and quantity changes, rounded once per line).
    BCD 1, 2 x 10.00 from 1 Apr 2026 (1 Apr: 20.00). 5 from 20 Apr: 1 May bills
    +3 x 10.00 x 11/30 = 11.00 and May 5 x 10.00 = 50.00 (61.00). Then the end is set to
    15 Apr. 1 Jun credits:
      [15 Apr, 20 Apr) at 2: -2 x 10.00 x 5/30 = -3.3333 -> -3.33
      [20 Apr, 1 May) at 5: -5 x 10.00 x 11/30 = -18.3333 -> -18.33
      [1 May, 1 Jun) at 5: -50.00
    -71.66 (not a single -71.67: the range is cut at the quantity change). Nothing else:
    invoice 0, a credit memo of 71.66. Over everything: 20.00 + 61.00 - 71.66 = 9.34, about
    [1 Apr, 15 Apr) at 2 = 20.00 x 14/30 = 9.3333."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, ledger.product("10.00"), 2, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 5, date(2026, 4, 20))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    with ledger.uow() as uow:
        end_subscription(uow, sub, date(2026, 4, 15))
        uow.commit()
    ledger.run(date(2026, 6, 1))
    apr, may, jun = ledger.invoices(acc)
    assert (apr["total_minor"], may["total_minor"]) == (2000, 6100)
    credits = [a for k, a in ledger.amounts(jun) if k != "credit_memo"]
    assert sum(credits) == -7166
    assert jun["total_minor"] == 0
    with ledger.uow() as uow:
        assert uow.conn.execute(select(credit_memos.c.amount_minor)).scalar() == 7166


def test_two_changes_on_one_day_the_later_recorded_wins(ledger) -> None:
    """'Quantity history': the later-recorded change wins on the same day. BCD 1, 4 x 6.00
    from 1 Apr 2026 (1 Apr: 24.00). Recorded: 9 from 16 Apr, then 7 from 16 Apr. 1 May:
    +3 x 6.00 x 15/30 = 9.00 and May 7 x 6.00 = 42.00 -> 51.00."""
    acc = ledger.account(bcd=1)
    sub = ledger.subscribe(acc, ledger.product("6.00"), 4, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    with ledger.uow() as uow:
        change_quantity(uow, sub, 9, date(2026, 4, 16))
        uow.commit()
    with ledger.uow() as uow:
        change_quantity(uow, sub, 7, date(2026, 4, 16))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    _apr, may = ledger.invoices(acc)
    assert sum(a for k, a in ledger.amounts(may) if k == "proration") == 900
    assert may["total_minor"] == 5100


def _cli_ok(url: str, *args: str) -> str:
    from click.testing import CliRunner

    from jobs.cli import main
    res = CliRunner().invoke(main, ["--database-url", url, *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout


def test_yen_invoice_and_overpayment_through_the_cli(sqlite_engine) -> None:
    """The same figures through `ledgerbridge` commands (on a SQLite file, as the other CLI
    tests: the PostgreSQL fixture's schema is not reachable from a URL). JPY (0 decimals), JP 10 %, BCD 1:
    3 x 1,980 yen from 11 Feb 2026: [11 Feb, 1 Mar) = 18 of 28 days: 5940 x 18/28 = 3818.57
    -> 3,819; March 5,940; base 9,759, tax round(975.9) = 976, total 10,735.
    `payments record ... 20000 --apply-oldest`: 10,735 applied, 9,265 left on the payment."""
    import json

    from billing_core.adapters.db import UnitOfWork
    from billing_core.service.orders import (
        OrderIn,
        SubscriptionItem,
        activate_order,
        place_order,
    )
    engine = sqlite_engine
    url = str(engine.url)
    for args in (["products", "add", "--sku", "HWSEAT", "--name", "Seat"],
                 ["prices", "set", "HWSEAT", "--currency", "JPY", "--from", "2020-01-01",
                  "--price", "1980"],
                 ["tax-rates", "set", "JP", "--rate", "0.10", "--from", "2020-01-01"],
                 ["accounts", "add", "--name", "Nippon", "--currency", "JPY", "--ext-id",
                  "HWJ1", "--country", "JP"]):
        _cli_ok(url, *args)
    acc = json.loads(_cli_ok(url, "accounts", "show", "HWJ1", "--json"))["id"]
    product = json.loads(_cli_ok(url, "products", "show", "HWSEAT", "--json"))["id"]
    with UnitOfWork(engine) as uow:
        order = place_order(uow, OrderIn(acc, "hw-cli-1", date(2026, 2, 11), subscriptions=[
            SubscriptionItem(product, 3, date(2026, 2, 11))]))
        activate_order(uow, order)
        uow.commit()
    _cli_ok(url, "bill-run", "--date", "2026-03-01")
    [inv] = json.loads(_cli_ok(url, "invoices", "list", "--account", "HWJ1", "--json"))
    shown = json.loads(_cli_ok(url, "invoices", "show", inv["number"], "--json"))
    assert [ln["amount_minor"] for ln in shown["lines"]] == [3819, 5940]
    assert (shown["tax_minor"], shown["total_minor"]) == (976, 10735)
    assert [(t["base"], t["tax"]) for t in shown["taxes"]] == [("9759", "976")]
    pay = json.loads(_cli_ok(url, "payments", "record", "HWJ1", "20000", "--reference",
                             "hw-wire", "--received-on", "2026-03-05", "--apply-oldest",
                             "--json"))
    assert (pay["applied_minor"], pay["balance_minor"]) == (10735, 9265)
