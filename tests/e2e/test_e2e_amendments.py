"""Amendments end to end (issue 14, items 1 and 8): the real worker against the sandbox CRM
over real HTTPS, both CRMs, SQLite and PostgreSQL. A quote of 5 seats at 12.00 USD from
1 January is won and billed; it is then amended to 8 seats from 20 January (Salesforce: a new
revision of the same quote, ``Revision__c`` 2; Dataverse: ``ReviseQuote``, a new quote record
with the same ``quotenumber`` and ``revisionnumber`` 1, the old one closed as revised), and
the next invoice bills exactly the difference.

Hand-worked: 1 January bills January, 5 x 12.00 = 60.00. 1 February: the 3 added seats for
20-31 January, 12 of January's 31 days, 3 x 12.00 x 12/31 = 13.935... -> 13.94, and February
at 8 seats, 8 x 12.00 = 96.00; nothing else (no second 5 or 8 seats)."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from e2e_world import World, dataverse_won_seats, invoice_lines_of
from sqlalchemy import select

from billing_core.adapters.tables import accounts, orders
from billing_core.service.bill_run import run_bill_run
from jobs.cli.demo_crm import set_sandbox_tax_rates
from sync.tables import handoffs

pytestmark = pytest.mark.e2e
JAN1, FEB1 = date(2027, 1, 1), date(2027, 2, 1)


@pytest.fixture
def both_db_world(sandbox: Any, engine: Any, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    w = World(sandbox, engine, tmp_path)
    set_sandbox_tax_rates(engine)       # the figures below are the lines, before tax
    yield w
    w.worker.close()


def _salesforce_deal(world: World) -> tuple[str, Any]:
    account = world.sf("create", object="Account", fields={
        "Name": "Amendment Co", "CurrencyIsoCode": "USD", "BillingCountryCode": "US",
        "Credit_Limit__c": 10_000_000})["id"]
    quote = world.sf("create_quote", account_id=account, status="Accepted",
                     start_date="2027-01-01",
                     lines=[{"product_index": 0, "quantity": 5, "unit_price": 12}])

    def amend() -> None:
        world.sf("amend_quote", id=quote["id"], start_date="2027-01-20",
                 quantities={quote["line_ids"][0]: 8})
    return account, amend


def _dataverse_deal(world: World) -> tuple[str, Any]:
    account, quote = dataverse_won_seats(world, "SKU-SEAT-AMEND", "Amendment Co", "QUO-AMEND-1")

    def amend() -> None:
        revised = world.dv("revise_quote", id=quote)
        world.dv("update", table="quotedetails", id=revised["quotedetailids"][0],
                 values={"quantity": 8, "extendedamount": 96})
        world.dv("set_local_date", table="quotes", id=revised["quoteid"],
                 column="effectivefrom", date="2027-01-20")
        world.dv("win_quote", id=revised["quoteid"])
    return account, amend


@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_an_amended_quote_bills_exactly_the_difference(both_db_world: World,
                                                        connection: str) -> None:
    world = both_db_world
    account, amend = (_salesforce_deal if connection == "sf" else _dataverse_deal)(world)
    [report] = world.cycle(connection)
    assert report.outcome == "ok", report
    run_bill_run(world.engine, JAN1)
    assert invoice_lines_of(world, account, JAN1) == [("recurring", 6000)]
    amend()
    [report] = world.cycle(connection)
    assert report.outcome == "ok" and report.handed_off == 1
    run_bill_run(world.engine, FEB1)
    assert invoice_lines_of(world, account, FEB1) == [("proration", 1394), ("recurring", 9600)]
    with world.engine.connect() as conn:
        deal = conn.execute(select(orders.c.id, orders.c.amends_order_id)
                            .join(accounts, accounts.c.id == orders.c.account_id)
                            .where(accounts.c.ext_id == account).order_by(orders.c.id)).all()
        states = conn.execute(select(handoffs.c.state).where(
            handoffs.c.connection == connection,
            handoffs.c.order_id.in_([o.id for o in deal]))).scalars().all()
    assert [o.amends_order_id for o in deal] == [None, deal[0].id]
    assert states == ["done", "done"]          # the revised Dataverse quote is not "reversed"
