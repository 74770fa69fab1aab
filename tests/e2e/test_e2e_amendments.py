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
from e2e_world import World
from sqlalchemy import select

from billing_core.adapters.tables import accounts, invoice_lines, invoices, orders
from billing_core.service.bill_run import run_bill_run
from jobs.cli.demo_crm import set_sandbox_tax_rates
from sync.tables import handoffs

pytestmark = pytest.mark.e2e
JAN1, FEB1 = date(2027, 1, 1), date(2027, 2, 1)
RECURRING = MONTHLY = 100_000_000          # the Dataverse choices of new_billingtype / frequency


@pytest.fixture
def both_db_world(sandbox: Any, engine: Any, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    w = World(sandbox, engine, tmp_path)
    set_sandbox_tax_rates(engine)       # the figures below are the lines, before tax
    yield w
    w.worker.close()


def _lines(world: World, ext_id: str, period_start: date) -> list[tuple[str, int]]:
    with world.engine.connect() as conn:
        return [(r.kind, r.amount_minor) for r in conn.execute(
            select(invoice_lines.c.kind, invoice_lines.c.amount_minor)
            .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
            .join(accounts, accounts.c.id == invoices.c.account_id)
            .where(accounts.c.ext_id == ext_id, invoices.c.period_start == period_start)
            .order_by(invoice_lines.c.line_no))]


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
    usd = next(g for g in (world.dv("guid", table="transactioncurrencies", index=i)["id"]
                           for i in range(8))
               if world.dv("get", table="transactioncurrencies", id=g)["isocurrencycode"]
               == "USD")
    currency = {"transactioncurrencyid@odata.bind": f"/transactioncurrencies({usd})"}
    product = world.dv("create", table="products", row={
        "productnumber": "SKU-SEAT-AMEND", "name": "Seat", "statecode": 0, "statuscode": 1,
        "new_billingtype": RECURRING, "new_billingfrequency": MONTHLY, "price": 12,
        **currency})["productid"]
    account = world.dv("create", table="accounts", row={
        "name": "Amendment Co", "creditlimit": 10_000_000, "creditonhold": False,
        "address1_country": "US", **currency})["accountid"]
    quote = world.dv("create", table="quotes", row={
        "name": "Seats", "quotenumber": "QUO-AMEND-1", "statecode": 0, "statuscode": 1,
        "revisionnumber": 0, "customerid_account@odata.bind": f"/accounts({account})",
        **currency})["quoteid"]
    world.dv("set_local_date", table="quotes", id=quote, column="effectivefrom",
             date="2027-01-01")
    world.dv("create", table="quotedetails", row={
        "quoteid@odata.bind": f"/quotes({quote})", "productid@odata.bind": f"/products({product})",
        "lineitemnumber": 1, "quantity": 5, "priceperunit": 12, "extendedamount": 60,
        **currency})
    world.dv("win_quote", id=quote)

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
    assert _lines(world, account, JAN1) == [("recurring", 6000)]
    amend()
    [report] = world.cycle(connection)
    assert report.outcome == "ok" and report.handed_off == 1
    run_bill_run(world.engine, FEB1)
    assert _lines(world, account, FEB1) == [("proration", 1394), ("recurring", 9600)]
    with world.engine.connect() as conn:
        deal = conn.execute(select(orders.c.id, orders.c.amends_order_id)
                            .join(accounts, accounts.c.id == orders.c.account_id)
                            .where(accounts.c.ext_id == account).order_by(orders.c.id)).all()
        states = conn.execute(select(handoffs.c.state).where(
            handoffs.c.connection == connection,
            handoffs.c.order_id.in_([o.id for o in deal]))).scalars().all()
    assert [o.amends_order_id for o in deal] == [None, deal[0].id]
    assert states == ["done", "done"]          # the revised Dataverse quote is not "reversed"
