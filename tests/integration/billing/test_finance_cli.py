"""Finance's hand on the ledger from the CLI (issue 14, item 7; issue 15, item 3) over a
SQLite file: bill-run's exit code and dry-run lines, invoices show with tax per rate and
what settles it, a partial credit memo unapply, a dated debit memo, accounts update. The
services underneath are tested on both databases.

Figures: 5 seats at 20.00 USD from 1 March 2027, US at 8.25 %: the March invoice is 100.00 +
tax 8.25 = 108.25. A credit memo of 50.00 applied to it leaves 58.25 open; taking 20.00 of it
back leaves 30.00 applied (78.25 open) and 20.00 on the memo.
"""
from __future__ import annotations

import json
from datetime import date

from click.testing import CliRunner, Result

from billing_core.adapters.db import UnitOfWork
from billing_core.service.orders import OrderIn, SubscriptionItem, activate_order, place_order
from jobs.cli import main


def _cli(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--database-url", url, *args], catch_exceptions=False)


def _ok(url: str, *args: str) -> Result:
    res = _cli(url, *args)
    assert res.exit_code == 0, res.output
    return res


def _json(url: str, *args: str) -> dict:
    return json.loads(_ok(url, *args, "--json").stdout)


def _ledger(engine) -> str:
    url = str(engine.url)
    for args in (["products", "add", "--sku", "SEAT", "--name", "Seat"],
                 ["prices", "set", "SEAT", "--currency", "USD", "--from", "2020-01-01",
                  "--price", "20.00"],
                 ["tax-rates", "set", "US", "--rate", "0.0825", "--from", "2020-01-01"],
                 ["accounts", "add", "--name", "Acme", "--currency", "USD", "--ext-id", "A1",
                  "--country", "US"],
                 ["accounts", "add", "--name", "Globex", "--currency", "USD", "--ext-id", "G1",
                  "--country", "DE"]):
        _ok(url, *args)
    with UnitOfWork(engine) as uow:
        for account in (1, 2):
            order = place_order(uow, OrderIn(account, f"q{account}", date(2027, 3, 1),
                                             subscriptions=[SubscriptionItem(1, 5,
                                                                             date(2027, 3, 1))]))
            activate_order(uow, order)
        uow.commit()
    return url


def test_bill_run_exits_1_when_an_account_is_not_billed_and_dry_run_shows_lines(
        sqlite_engine) -> None:
    url = _ledger(sqlite_engine)
    dry = _cli(url, "bill-run", "--date", "2027-03-01", "--dry-run")
    assert dry.exit_code == 1, dry.output
    assert "Seat x 5, 2027-03-01 to 2027-03-31" in dry.stdout
    assert "tax 8.25 % on 100.00 USD: 8.25 USD" in dry.stdout
    assert "subtotal 100.00 USD  tax 8.25 USD  total 108.25 USD" in dry.stdout
    assert "account 2 not billed: country='DE': has no tax rate on 2027-03-01 for account 2" \
        in dry.stderr
    res = _cli(url, "bill-run", "--date", "2027-03-01", "--json")
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["invoices_created"] == 1
    assert [(e["account_id"], e["code"], e["value"]) for e in out["errors"]] == \
        [(2, "missing_tax_rate", "DE")]
    [line] = out["invoices"][0]["line_items"]
    assert (line["kind"], line["amount_minor"], line["tax_minor"]) == ("recurring", 10000, 825)
    assert out["invoices"][0]["taxes"] == [["0.0825", 10000, 825]]
    # Globex exempt: the next run bills it without tax and exits 0
    assert "tax_exempt = True" in _ok(url, "accounts", "update", "G1", "--tax-exempt").stdout
    again = _ok(url, "bill-run", "--date", "2027-03-01", "--json")
    assert json.loads(again.stdout)["invoices_created"] == 1
    [inv] = _json(url, "invoices", "list", "--account", "G1")
    assert (inv["tax_minor"], inv["total_minor"]) == (0, 10000)


def test_invoice_show_and_a_partial_credit_memo_unapply(sqlite_engine) -> None:
    url = _ledger(sqlite_engine)
    _cli(url, "bill-run", "--date", "2027-03-01")
    _ok(url, "credit-memos", "create", "A1", "50.00", "--reason", "goodwill", "--activate")
    _ok(url, "credit-memos", "apply", "CM-000001", "--to", "INV-000001=50.00")
    memo = _json(url, "credit-memos", "unapply", "CM-000001", "--amount", "20.00")
    assert (memo["applied_minor"], memo["status"]) == (3000, "partially_applied")
    inv = _json(url, "invoices", "show", "INV-000001")
    assert (inv["applied_minor"], inv["balance"]) == (3000, "78.25")
    assert [(t["rate"], t["base"], t["tax"]) for t in inv["taxes"]] == \
        [("0.0825", "100.00", "8.25")]
    assert [a["amount_minor"] for a in inv["applications"]] == [3000]
    people = _ok(url, "invoices", "show", "INV-000001").stdout
    assert "tax 8.25 % on 100.00 USD: 8.25 USD" in people
    assert "credit_memo 1: 30.00 USD applied" in people
    # more than is applied, or not an amount: one line naming the field, exit 2, no change
    for amount, code in (("30.01", "insufficient_balance"), ("abc", "invalid_amount"),
                         ("0", "invalid_amount")):
        res = _cli(url, "credit-memos", "unapply", "CM-000001", "--amount", amount)
        assert res.exit_code == 2 and f"error: {code}: amount=" in res.stderr, res.output
    assert _json(url, "credit-memos", "show", "CM-000001")["applied_minor"] == 3000
    memo = _json(url, "credit-memos", "unapply", "CM-000001", "--amount", "30.00")
    assert (memo["applied_minor"], memo["status"]) == (0, "active")


def test_a_dated_debit_memo_and_accounts_update(sqlite_engine) -> None:
    url = _ledger(sqlite_engine)
    _ok(url, "accounts", "update", "A1", "--terms", "45", "--region", "CA", "--bcd", "15",
        "--credit-limit-override", "2500.00")
    acc = _json(url, "accounts", "show", "A1")
    assert (acc["payment_terms_days"], acc["region"], acc["bill_cycle_day"],
            acc["credit_limit_override_minor"]) == (45, "CA", 15, 250000)
    assert "nothing changed" in _ok(url, "accounts", "update", "A1", "--terms", "45").stdout
    draft = _json(url, "debit-memos", "create", "A1", "12.00", "--reason", "late fee",
                  "--date", "2026-11-15")
    assert (draft["status"], draft["issue_date"]) == ("draft", "2026-11-15")
    memo = _json(url, "debit-memos", "activate", str(draft["id"]))
    assert (memo["issue_date"], memo["due_date"]) == ("2026-11-15", "2026-12-30")   # + 45 days
    for args, needle in ((["debit-memos", "create", "A1", "1.00", "--reason", "r", "--date",
                           "2099-01-01"], "issue_date='2099-01-01'"),
                         (["debit-memos", "create", "A1", "1.00", "--reason", "r", "--date",
                           "15/11/2026"], "'--date'"),
                         (["accounts", "update", "A1", "--terms", "-1"], "'--terms'"),
                         (["accounts", "update", "A1", "--bcd", "32"], "'--bcd'"),
                         (["accounts", "update", "A1", "--credit-limit-override", "abc"],
                          "credit_limit_override='abc'"),
                         (["accounts", "update", "A1", "--region", "x" * 65], "region="),
                         (["accounts", "update", "NOPE", "--terms", "1"], "account='NOPE'"),
                         (["accounts", "update", "A1"], "give --region")):
        res = _cli(url, *args)
        assert res.exit_code == 2 and needle in res.stderr, (args, res.output)
    assert len(_json(url, "debit-memos", "list")) == 1
