"""The ``orders`` and ``subscriptions`` commands over a SQLite file (the services underneath are
tested on both databases): the same gate as the API, bad input one line on stderr, exit 2."""
from __future__ import annotations

import json
from datetime import date

from click.testing import CliRunner

from billing_core.adapters.db import UnitOfWork
from billing_core.service.accounts import AccountIn, create_account
from billing_core.service.orders import OrderIn, SubscriptionItem, activate_order, place_order
from billing_core.service.pricing import ProductIn, add_product, set_price
from jobs.cli import main


def _cli(url: str, *args: str):
    return CliRunner().invoke(main, ["--database-url", url, *args], catch_exceptions=False)


def _json(url: str, *args: str):
    res = _cli(url, *args, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _setup(engine) -> int:
    """Account A1 with an active order sf:Q1 of 5 seats at 20.00 from 1 January 2026."""
    with UnitOfWork(engine) as uow:
        acc = create_account(uow, AccountIn(name="Acme", currency="USD", ext_id="A1"))
        pid = add_product(uow, ProductIn(sku="SEAT", name="Seat", kind="recurring"))
        set_price(uow, pid, "USD", date(2020, 1, 1), "20.00")
        oid = place_order(uow, OrderIn(acc, "sf:Q1", date(2026, 1, 1), subscriptions=[
            SubscriptionItem(pid, 5, date(2026, 1, 1))]))
        activate_order(uow, oid)
        uow.commit()
    return oid


def test_orders_and_subscriptions_commands(sqlite_engine) -> None:
    url = str(sqlite_engine.url)
    oid = _setup(sqlite_engine)
    [order] = _json(url, "orders", "list", "--account", "A1")
    assert (order["id"], order["status"], order["source_ref"]) == (oid, "active", "sf:Q1")
    [sub] = _json(url, "orders", "show", str(oid))["subscriptions"]
    sid = str(sub["id"])
    assert (sub["quantity"], sub["state"]) == ("5", "active")

    _json(url, "subscriptions", "change-quantity", sid, "--quantity", "8", "--from", "2026-03-01")
    shown = _json(url, "subscriptions", "change-quantity", sid, "--quantity", "3",
                  "--from", "2026-01-20")
    # recorded second, dated first: 5 -> 3 from 20 Jan, then 3 -> 8 from 1 Mar
    assert [(h["effective_date"], h["old_quantity"], h["new_quantity"])
            for h in shown["history"]] == [("2026-01-20", "5", "3"), ("2026-03-01", "3", "8")]

    ended = _json(url, "subscriptions", "cancel", sid, "--at", "2026-05-01")
    assert (ended["end_date"], ended["state"]) == ("2026-05-01", "ended")
    earlier = _json(url, "subscriptions", "end-date", sid, "2026-04-15")
    assert earlier["end_date"] == "2026-04-15"
    assert [s["id"] for s in _json(url, "subscriptions", "list", "--state", "ended")] == [
        int(sid)]
    people = _cli(url, "subscriptions", "show", sid)
    assert people.exit_code == 0 and "Quantity history" in people.output

    cancelled = _json(url, "orders", "cancel", str(oid), "--at", "2026-04-01")
    assert cancelled["status"] == "cancelled"
    assert cancelled["subscriptions"][0]["end_date"] == "2026-04-01"


def test_bad_input_names_field_and_value_exit_2(sqlite_engine) -> None:
    url = str(sqlite_engine.url)
    _setup(sqlite_engine)
    for args, text in (
            (["subscriptions", "change-quantity", "1", "--quantity", "abc", "--from",
              "2026-02-01"], "quantity='abc'"),
            (["subscriptions", "change-quantity", "1", "--quantity", "-2", "--from",
              "2026-02-01"], "quantity='-2'"),
            (["subscriptions", "change-quantity", "1", "--quantity", "2", "--from",
              "2025-12-31"], "effective_date=datetime.date(2025, 12, 31)"),
            (["subscriptions", "change-quantity", "1", "--quantity", "2", "--from",
              "2026-02-30"], "'--from'"),
            (["subscriptions", "show", "x1"], "subscription_id='x1'"),
            (["subscriptions", "show", "999"], "not_found: subscription='999'"),
            (["orders", "show", "0"], "order_id='0'"),
            (["subscriptions", "list", "--order", "nope"], "order='nope'")):
        res = CliRunner().invoke(main, ["--database-url", url, *args])
        assert res.exit_code == 2, (args, res.output)
        assert text in res.output, (args, res.output)
    _cli(url, "subscriptions", "end-date", "1", "2026-06-01")
    res = CliRunner().invoke(main, ["--database-url", url, "subscriptions", "end-date", "1",
                                    "2026-07-01"])
    assert res.exit_code == 2
    assert "invalid_state: at=datetime.date(2026, 7, 1)" in res.output
