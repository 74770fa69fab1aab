"""A deal revised again and again through the CRM, end to end: the real worker against the
sandbox CRM over real HTTPS, both CRMs, SQLite and PostgreSQL. Each deal starts with 5 seats
of a 12.00 USD monthly product from 1 January 2027 (bill cycle day 1), January billed
(60.00); revisions then change it (Salesforce: ``Revision__c`` + 1 on the same quote;
Dataverse: ``ReviseQuote``, a new quote with the same number, won) and each invoice bills
exactly the difference, to the cent."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from e2e_world import MONTHLY, RECURRING, World, dataverse_usd, invoice_lines_of
from sqlalchemy import select

from billing_core.adapters.tables import accounts, orders, subscriptions
from billing_core.service.bill_run import run_bill_run
from jobs.cli.demo_crm import set_sandbox_tax_rates
from sync.tables import quarantine

pytestmark = pytest.mark.e2e
JAN1, FEB1, MAR1 = date(2027, 1, 1), date(2027, 2, 1), date(2027, 3, 1)
SEAT, PRO, ENT = 0, 1, 2    # Salesforce's seeded 12.00 and 24.50 monthly products and 420.00
#                             annual one (and ours on Dataverse, below)
ANNUAL = 100_000_001        # new_billingfrequency Annual


@pytest.fixture
def both_db_world(sandbox: Any, engine: Any, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    w = World(sandbox, engine, tmp_path)
    set_sandbox_tax_rates(engine)       # the figures below are the lines, before tax
    yield w
    w.worker.close()


Line = tuple[int, int, float]       # (product, quantity, unit price)


class SalesforceDeal:
    connection = "sf"

    def __init__(self, world: World, lines: list[Line], start: str = "2027-01-01",
                 name: str = "Revised Co", accept: bool = True) -> None:
        self.world = world
        self.account = self.new_account(name)
        quote = world.sf("create_quote", account_id=self.account,
                         status="Accepted" if accept else "Draft",
                         start_date=start, lines=[{"product_index": p, "quantity": q,
                                                   "unit_price": u} for p, q, u in lines])
        self.quote, self.lines = quote["id"], list(quote["line_ids"])

    def new_account(self, name: str, currency: str = "USD") -> str:
        return str(self.world.sf("create", object="Account", fields={
            "Name": name, "CurrencyIsoCode": currency, "BillingCountryCode": "US",
            "Credit_Limit__c": 10_000_000})["id"])

    def revise(self, start: str, quantities: dict[int, int] | None = None,
               prices: dict[int, float] | None = None, remove: tuple[int, ...] = (),
               add: tuple[Line, ...] = (), quote: dict[str, Any] | None = None) -> None:
        """A new revision: line changes by position in the current lines."""
        for pos, price in (prices or {}).items():
            self.world.sf("update", object="QuoteLineItem", id=self.lines[pos],
                          fields={"UnitPrice": price})
        if quote:
            self.world.sf("update", object="Quote", id=self.quote, fields=quote)
        out = self.world.sf("amend_quote", id=self.quote, start_date=start,
                            quantities={self.lines[p]: q for p, q in (quantities or {}).items()},
                            remove=[self.lines[p] for p in remove],
                            add=[{"product_index": p, "quantity": q, "unit_price": u}
                                 for p, q, u in add])
        self.lines = [ln for i, ln in enumerate(self.lines) if i not in remove] + out["line_ids"]

    def set_status(self, accepted: bool) -> None:
        self.world.sf("set_quote_status", id=self.quote,
                      status="Accepted" if accepted else "Draft")

    def hold(self, on: bool) -> None:
        self.world.sf("set_hold", id=self.account, hold=on)


class DataverseDeal:
    connection = "d365"

    def __init__(self, world: World, lines: list[Line], start: str = "2027-01-01",
                 name: str = "Revised Co", accept: bool = True) -> None:
        self.world = world
        self.currency = dataverse_usd(world)
        self.products = [self._product("SKU-SEAT-R", "Seat", 12),
                         self._product("SKU-PRO-R", "Pro seat", 24.5),
                         self._product("SKU-ENT-R", "Enterprise (annual)", 420, ANNUAL)]
        self.account = self.new_account(name)
        quote = world.dv("create", table="quotes", row={
            "name": "Seats", "quotenumber": "QUO-REV-1", "statecode": 0, "statuscode": 1,
            "revisionnumber": 0, "customerid_account@odata.bind": f"/accounts({self.account})",
            **self.currency})["quoteid"]
        world.dv("set_local_date", table="quotes", id=quote, column="effectivefrom", date=start)
        self.quote = str(quote)
        self.lines = [self._line(i + 1, *line) for i, line in enumerate(lines)]
        self.next_line = len(lines) + 1
        if accept:
            world.dv("win_quote", id=quote)

    def _product(self, sku: str, name: str, price: float, frequency: int = MONTHLY) -> str:
        return str(self.world.dv("create", table="products", row={
            "productnumber": sku, "name": name, "statecode": 0, "statuscode": 1,
            "new_billingtype": RECURRING, "new_billingfrequency": frequency,
            "new_needsprovisioning": True, "price": price, **self.currency})["productid"])

    def new_account(self, name: str, currency: dict[str, str] | None = None) -> str:
        return str(self.world.dv("create", table="accounts", row={
            "name": name, "creditlimit": 10_000_000, "creditonhold": False,
            "address1_country": "US", **(currency or self.currency)})["accountid"])

    def _line(self, number: int, product: int, quantity: int, price: float) -> str:
        return str(self.world.dv("create", table="quotedetails", row={
            "quoteid@odata.bind": f"/quotes({self.quote})",
            "productid@odata.bind": f"/products({self.products[product]})",
            "lineitemnumber": number, "quantity": quantity, "priceperunit": price,
            "extendedamount": quantity * price, **self.currency})["quotedetailid"])

    def revise(self, start: str, quantities: dict[int, int] | None = None,
               prices: dict[int, float] | None = None, remove: tuple[int, ...] = (),
               add: tuple[Line, ...] = (), quote: dict[str, Any] | None = None) -> None:
        world = self.world
        revised = world.dv("revise_quote", id=self.quote)
        self.quote, lines = str(revised["quoteid"]), list(revised["quotedetailids"])
        for pos, q in (quantities or {}).items():
            world.dv("update", table="quotedetails", id=lines[pos], values={"quantity": q})
        for pos, price in (prices or {}).items():
            world.dv("update", table="quotedetails", id=lines[pos],
                     values={"priceperunit": price})
        for pos in remove:
            world.dv("delete", table="quotedetails", id=lines[pos])
        self.lines = [ln for i, ln in enumerate(lines) if i not in remove]
        for line in add:
            self.lines.append(self._line(self.next_line, *line))
            self.next_line += 1
        if quote:
            world.dv("update", table="quotes", id=self.quote, values=quote)
        world.dv("set_local_date", table="quotes", id=self.quote, column="effectivefrom",
                 date=start)
        world.dv("win_quote", id=self.quote)

    def set_status(self, accepted: bool) -> None:
        self.world.dv("set_quote_state", id=self.quote, statecode=2 if accepted else 0)

    def hold(self, on: bool) -> None:
        self.world.dv("set_creditonhold", id=self.account, value=on)


Deal = SalesforceDeal | DataverseDeal


def _deal(world: World, connection: str, lines: list[Line] | None = None,
          bill: bool = True) -> Deal:
    deal = (SalesforceDeal if connection == "sf" else DataverseDeal)(
        world, lines or [(SEAT, 5, 12)])
    _cycle(world, connection)
    if bill:
        run_bill_run(world.engine, JAN1)
    return deal


def _cycle(world: World, connection: str) -> Any:
    [report] = world.cycle(connection)
    assert report.outcome == "ok", report
    return report


def _lines(world: World, deal: Deal, on: date) -> list[tuple[str, int]]:
    return invoice_lines_of(world, deal.account, on)


def _subs(world: World, deal: Deal) -> list[tuple[Any, ...]]:
    """(quantity, unit price, start, end, status) of the deal account's subscriptions."""
    with world.engine.connect() as conn:
        return [(int(r.quantity), float(r.unit_price), r.start_date, r.end_date, r.status)
                for r in conn.execute(select(subscriptions).join(
                    accounts, accounts.c.id == subscriptions.c.account_id).where(
                    accounts.c.ext_id == deal.account).order_by(subscriptions.c.id))]


def _open_quarantine(world: World, connection: str) -> list[tuple[str, str]]:
    with world.engine.connect() as conn:
        return [(r.object, r.field) for r in conn.execute(select(quarantine).where(
            quarantine.c.connection == connection, quarantine.c.status == "open"))]


def _orders(world: World, deal: Deal) -> int:
    with world.engine.connect() as conn:
        return len(conn.execute(select(orders.c.id).join(
            accounts, accounts.c.id == orders.c.account_id).where(
            accounts.c.ext_id == deal.account)).all())


CRMS = ["sf", "d365"]


@pytest.mark.parametrize("connection", CRMS)
def test_two_revisions_within_one_period(both_db_world: World, connection: str) -> None:
    """8 seats from 10 January, then 6 from 20 January, each synced. 1 February: 3 seats for
    10-31 January, 3 x 12 x 22/31 = 25.548... -> 25.55; -2 seats for 20-31 January,
    -2 x 12 x 12/31 = -9.290... -> -9.29; February at 6 seats, 72.00."""
    world = both_db_world
    deal = _deal(world, connection)
    deal.revise("2027-01-10", quantities={0: 8})
    _cycle(world, connection)
    deal.revise("2027-01-20", quantities={0: 6})
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _lines(world, deal, FEB1) == [("proration", 2555), ("proration", -929),
                                         ("recurring", 7200)]
    assert _open_quarantine(world, connection) == []


def _sorted(world: World, deal: Deal, on: date) -> list[tuple[str, int]]:
    return sorted(_lines(world, deal, on))


@pytest.mark.parametrize("connection", CRMS)
def test_revisions_across_periods(both_db_world: World, connection: str) -> None:
    """8 seats from 20 January (1 February: 13.94 + 96.00), then 3 seats from 15 February:
    1 March credits -5 x 12 x 14/28 = -30.00 and bills March at 3 seats, 36.00."""
    world = both_db_world
    deal = _deal(world, connection)
    deal.revise("2027-01-20", quantities={0: 8})
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _lines(world, deal, FEB1) == [("proration", 1394), ("recurring", 9600)]
    deal.revise("2027-02-15", quantities={0: 3})
    _cycle(world, connection)
    run_bill_run(world.engine, MAR1)
    assert _lines(world, deal, MAR1) == [("proration", -3000), ("recurring", 3600)]


@pytest.mark.parametrize("connection", CRMS)
def test_product_swap(both_db_world: World, connection: str) -> None:
    """The seats removed and 2 pro seats at 24.50 added from 20 January: -5 x 12 x 12/31 =
    -23.23, 2 x 24.50 x 12/31 = 18.97, February 49.00."""
    world = both_db_world
    deal = _deal(world, connection)
    deal.revise("2027-01-20", remove=(0,), add=((PRO, 2, 24.5),))
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _sorted(world, deal, FEB1) == [("proration", -2323), ("proration", 1897),
                                          ("recurring", 4900)]


@pytest.mark.parametrize("connection", CRMS)
def test_one_line_to_zero(both_db_world: World, connection: str) -> None:
    world = both_db_world
    deal = _deal(world, connection, [(SEAT, 5, 12), (PRO, 2, 24.5)])
    assert _sorted(world, deal, JAN1) == [("recurring", 4900), ("recurring", 6000)]
    deal.revise("2027-01-20", quantities={1: 0})
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _sorted(world, deal, FEB1) == [("proration", -1897), ("recurring", 6000)]


@pytest.mark.parametrize("connection", CRMS)
def test_price_changed_quantity_unchanged(both_db_world: World, connection: str) -> None:
    """5 seats at 10.00 from 20 January: -23.23 + 5 x 10 x 12/31 = 19.35, February 50.00."""
    world = both_db_world
    deal = _deal(world, connection)
    deal.revise("2027-01-20", prices={0: 10})
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _sorted(world, deal, FEB1) == [("proration", -2323), ("proration", 1935),
                                          ("recurring", 5000)]
    # and back to 12.00 from 10 February
    deal.revise("2027-02-10", prices={0: 12})
    _cycle(world, connection)
    run_bill_run(world.engine, MAR1)
    # -5 x 10 x 19/28 = -33.93, 5 x 12 x 19/28 = 40.71, March 60.00
    assert _sorted(world, deal, MAR1) == [("proration", -3393), ("proration", 4071),
                                          ("recurring", 6000)]


@pytest.mark.parametrize("connection", CRMS)
def test_back_to_the_original_quantity(both_db_world: World, connection: str) -> None:
    world = both_db_world
    deal = _deal(world, connection)
    deal.revise("2027-01-20", quantities={0: 8})
    _cycle(world, connection)
    deal.revise("2027-02-01", quantities={0: 5})
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _lines(world, deal, FEB1) == [("proration", 1394), ("recurring", 6000)]
    run_bill_run(world.engine, MAR1)
    assert _lines(world, deal, MAR1) == [("recurring", 6000)]


@pytest.mark.parametrize("connection", CRMS)
def test_revision_changing_nothing(both_db_world: World, connection: str) -> None:
    world = both_db_world
    deal = _deal(world, connection)
    deal.revise("2027-01-20")
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _lines(world, deal, FEB1) == [("recurring", 6000)]
    assert _orders(world, deal) == 2


@pytest.mark.parametrize("connection", CRMS)
def test_two_revisions_before_the_first_sync(both_db_world: World, connection: str) -> None:
    """Accepted, then revised to 8 seats from 20 January, before any sync: one order of 8
    seats from 20 January: 8 x 12 x 12/31 = 37.16, February 96.00."""
    world = both_db_world
    deal = (SalesforceDeal if connection == "sf" else DataverseDeal)(world, [(SEAT, 5, 12)])
    deal.revise("2027-01-20", quantities={0: 8})
    _cycle(world, connection)
    run_bill_run(world.engine, JAN1)
    run_bill_run(world.engine, FEB1)
    if connection == "sf":      # the line's own ServiceDate (1 January) starts it
        assert _lines(world, deal, JAN1) == [("recurring", 9600)]
        assert _lines(world, deal, FEB1) == [("recurring", 9600)]
    else:
        assert _lines(world, deal, JAN1) == []
        assert _sorted(world, deal, FEB1) == [("proration", 3716), ("recurring", 9600)]
    assert _orders(world, deal) == 1


@pytest.mark.parametrize("connection", CRMS)
def test_unaccepted_then_accepted_again(both_db_world: World, connection: str) -> None:
    world = both_db_world
    deal = _deal(world, connection)
    deal.set_status(False)
    _cycle(world, connection)
    deal.set_status(True)
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _lines(world, deal, FEB1) == [("recurring", 6000)]
    assert _orders(world, deal) == 1


@pytest.mark.parametrize("connection", CRMS)
def test_zeroed_then_ordered_again(both_db_world: World, connection: str) -> None:
    world = both_db_world
    deal = _deal(world, connection)
    deal.revise("2027-01-20", quantities={0: 0})
    _cycle(world, connection)
    deal.revise("2027-02-01", quantities={0: 5})
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _sorted(world, deal, FEB1) == [("proration", -2323), ("recurring", 6000)]
    run_bill_run(world.engine, MAR1)
    assert _lines(world, deal, MAR1) == [("recurring", 6000)]


@pytest.mark.parametrize("connection", CRMS)
def test_currency_changed_on_a_revision(both_db_world: World, connection: str) -> None:
    world = both_db_world
    deal = _deal(world, connection)
    if connection == "sf":
        deal.revise("2027-01-20", quantities={0: 8}, quote={"CurrencyIsoCode": "EUR"})
    else:
        eur = next(g for g in (world.dv("guid", table="transactioncurrencies", index=i)["id"]
                               for i in range(8))
                   if world.dv("get", table="transactioncurrencies", id=g)["isocurrencycode"]
                   == "EUR")
        deal.revise("2027-01-20", quantities={0: 8}, quote={
            "transactioncurrencyid@odata.bind": f"/transactioncurrencies({eur})"})
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _lines(world, deal, FEB1) == [("recurring", 6000)]
    assert ("quote", "currency") in _open_quarantine(world, connection)


@pytest.mark.parametrize("connection", CRMS)
def test_account_changed_on_a_revision(both_db_world: World, connection: str) -> None:
    world = both_db_world
    deal = _deal(world, connection)
    other = deal.new_account("Other Co")
    if connection == "sf":
        deal.revise("2027-01-20", quantities={0: 8}, quote={"AccountId": other})
    else:
        deal.revise("2027-01-20", quantities={0: 8}, quote={
            "customerid_account@odata.bind": f"/accounts({other})"})
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _lines(world, deal, FEB1) == [("recurring", 6000)]
    from sync.tables import handoffs
    with world.engine.connect() as conn:
        states = sorted(conn.execute(select(handoffs.c.state).where(
            handoffs.c.connection == connection)).scalars())
    print("ACCOUNT-CHANGE", connection, invoice_lines_of(world, other, FEB1), states,
          _open_quarantine(world, connection))


@pytest.mark.parametrize("connection", CRMS)
def test_accepted_and_deleted_in_one_interval(both_db_world: World, connection: str) -> None:
    world = both_db_world
    _cycle(world, connection)
    deal = (SalesforceDeal if connection == "sf" else DataverseDeal)(world, [(SEAT, 5, 12)])
    if connection == "sf":
        world.sf("delete", object="Quote", id=deal.quote)
    else:
        world.dv("delete", table="quotes", id=deal.quote)
    _cycle(world, connection)
    run_bill_run(world.engine, JAN1)
    assert _lines(world, deal, JAN1) == []
    assert _orders(world, deal) == 0


@pytest.mark.parametrize("connection", CRMS)
def test_revision_after_the_subscription_was_cancelled_by_hand(both_db_world: World,
                                                               connection: str) -> None:
    from billing_core.service import gate, ledger_uow
    world = both_db_world
    deal = _deal(world, connection)
    with world.engine.connect() as conn:
        sub = conn.execute(select(subscriptions.c.id).join(
            accounts, accounts.c.id == subscriptions.c.account_id).where(
            accounts.c.ext_id == deal.account)).scalar_one()
    with ledger_uow(world.engine) as uow:
        gate.end_subscription(uow, int(sub), date(2027, 2, 1))
        uow.commit()
    deal.revise("2027-01-20", quantities={0: 8})
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _lines(world, deal, FEB1) == [("proration", 1394)]


def _requests(world: World, deal: Deal) -> list[tuple[str, int, str]]:
    from billing_core.adapters.tables import provisioning_requests as pr
    with world.engine.connect() as conn:
        return [(r.change_kind, int(r.quantity), r.state) for r in conn.execute(
            select(pr).join(accounts, accounts.c.id == pr.c.account_id).where(
                accounts.c.ext_id == deal.account).order_by(pr.c.id))]


OCT1, NOV1, DEC1 = date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)


def _no_overdue(world: World) -> None:
    """Invoices of these past periods are not overdue holds (only the CRM's hold counts)."""
    world.reconfigure(lambda text: text + "\n[credit]\noverdue_grace_days = 3650\n")


@pytest.mark.parametrize("connection", CRMS)
def test_revision_while_on_hold_provisions_once_after_the_release(
        both_db_world: World, connection: str) -> None:
    """5 seats from 1 October 2026, provisioned; the account goes on hold in the CRM and the
    deal is revised to 8 seats from 20 October: the increase waits; once the hold is lifted
    it is sent, once. Billed afterwards: October 60.00; November 60.00 + the catch-up of 3
    seats from 20 October (13.94) and November (36.00) on 1 December, December 96.00."""
    world = both_db_world
    deal = (SalesforceDeal if connection == "sf" else DataverseDeal)(
        world, [(SEAT, 5, 12)], start="2026-10-01")
    _cycle(world, connection)
    world.worker.dispatch()
    assert _requests(world, deal) == [("provision", 5, "dispatched")]
    deal.hold(True)
    deal.revise("2026-10-20", quantities={0: 8})
    _cycle(world, connection)
    world.worker.dispatch()
    assert _requests(world, deal) == [("provision", 5, "dispatched"),
                                      ("increase", 8, "awaiting_hold_release")]
    deal.hold(False)
    _cycle(world, connection)
    world.worker.dispatch()
    _cycle(world, connection)
    world.worker.dispatch()
    assert _requests(world, deal) == [("provision", 5, "dispatched"),
                                      ("increase", 8, "dispatched")]
    run_bill_run(world.engine, OCT1)     # October: 5 x 12 x 19/31 and 8 x 12 x 12/31
    assert _lines(world, deal, OCT1) == [("proration", 3677), ("proration", 3716)]
    run_bill_run(world.engine, NOV1)
    assert _lines(world, deal, NOV1) == [("recurring", 9600)]


@pytest.mark.parametrize("connection", CRMS)
def test_two_revisions_while_on_hold(both_db_world: World, connection: str) -> None:
    """On hold: 8 seats from 20 October, then 3 seats and a pro seat from 25 October. The
    increase waits and the decrease supersedes it; the pro seat waits for the release.
    Billed after the release: each period at the seats in effect each day."""
    world = both_db_world
    deal = (SalesforceDeal if connection == "sf" else DataverseDeal)(
        world, [(SEAT, 5, 12)], start="2026-10-01")
    _cycle(world, connection)
    world.worker.dispatch()
    deal.hold(True)
    deal.revise("2026-10-20", quantities={0: 8})
    _cycle(world, connection)
    deal.revise("2026-10-25", quantities={0: 3}, add=((PRO, 1, 24.5),))
    _cycle(world, connection)
    world.worker.dispatch()
    assert _requests(world, deal) == [
        ("provision", 5, "dispatched"), ("increase", 8, "superseded"),
        ("provision", 1, "awaiting_hold_release"), ("decrease", 3, "dispatched")]
    deal.hold(False)
    _cycle(world, connection)
    world.worker.dispatch()
    assert _requests(world, deal) == [
        ("provision", 5, "dispatched"), ("increase", 8, "superseded"),
        ("provision", 1, "dispatched"), ("decrease", 3, "dispatched")]
    run_bill_run(world.engine, OCT1)
    run_bill_run(world.engine, NOV1)
    run_bill_run(world.engine, DEC1)
    # October: 5 x 12 x 19/31, 8 x 12 x 5/31, 3 x 12 x 7/31; the pro seat from 25 October,
    # 24.50 x 7/31 = 5.53, with November; then 3 seats and a pro seat a month
    assert _lines(world, deal, OCT1) == [("proration", 3677), ("proration", 1548),
                                         ("proration", 813)]
    assert _lines(world, deal, NOV1) == [("recurring", 3600), ("proration", 553),
                                         ("recurring", 2450)]
    assert _lines(world, deal, DEC1) == [("recurring", 3600), ("recurring", 2450)]


@pytest.mark.parametrize("connection", CRMS)
def test_annual_price_changed_mid_term(both_db_world: World, connection: str) -> None:
    """1 annual seat at 420.00 from 1 January 2027 (billed whole); 400.00 from 1 July: the
    old subscription's 184 unused days, billed already, are credited on the next invoice,
    -420 x 184/365 = -211.73 (a credit memo: nothing else is due then), and the new one is
    billed whole, 400.00, on 1 July."""
    world = both_db_world
    deal = _deal(world, connection, [(ENT, 1, 420)])
    assert _lines(world, deal, JAN1) == [("recurring", 42000)]
    deal.revise("2027-07-01", prices={0: 400})
    _cycle(world, connection)
    for month in range(2, 8):
        run_bill_run(world.engine, date(2027, month, 1))
    got = {m: _lines(world, deal, date(2027, m, 1)) for m in range(2, 8)}
    assert got == {2: [("proration", -21173), ("credit_memo", 21173)], 3: [], 4: [], 5: [],
                   6: [], 7: [("recurring", 40000)]}, got


@pytest.mark.parametrize("connection", CRMS)
def test_annual_quantity_raised_mid_term(both_db_world: World, connection: str) -> None:
    world = both_db_world
    deal = _deal(world, connection, [(ENT, 1, 420)])
    deal.revise("2027-07-01", quantities={0: 2})
    _cycle(world, connection)
    for month in range(2, 8):
        run_bill_run(world.engine, date(2027, month, 1))
    got = {m: _lines(world, deal, date(2027, m, 1)) for m in range(2, 8)}
    # the added seat's 184 days of the term billed already: 420 x 184/365 on the next invoice
    assert got == {2: [("proration", 21173)], 3: [], 4: [], 5: [], 6: [], 7: []}, got
    run_bill_run(world.engine, date(2028, 1, 1))
    assert _lines(world, deal, date(2028, 1, 1)) == [("recurring", 84000)]


@pytest.mark.parametrize("connection", CRMS)
def test_revision_after_the_order_was_cancelled_by_hand(both_db_world: World,
                                                        connection: str) -> None:
    from billing_core.service import gate, ledger_uow
    world = both_db_world
    deal = _deal(world, connection)
    with world.engine.connect() as conn:
        order = conn.execute(select(orders.c.id).join(
            accounts, accounts.c.id == orders.c.account_id).where(
            accounts.c.ext_id == deal.account)).scalar_one()
    with ledger_uow(world.engine) as uow:
        gate.cancel_order(uow, int(order), date(2027, 1, 20))
        uow.commit()
    deal.revise("2027-02-01", quantities={0: 8})
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _sorted(world, deal, FEB1) == [("credit_memo", 2323), ("proration", -2323)]
    assert ("quote", "amends_order_id") in _open_quarantine(world, connection)


@pytest.mark.parametrize("connection", CRMS)
def test_swap_dated_before_the_deal_started(both_db_world: World, connection: str) -> None:
    world = both_db_world
    deal = _deal(world, connection)
    deal.revise("2026-12-15", remove=(0,), add=((PRO, 2, 24.5),))
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    # the seats end at their start (January credited); the pro seats from 15 December:
    # 2 x 24.50 x 17/31 = 26.87, January and February 49.00 each
    assert _lines(world, deal, FEB1) == [("proration", -6000), ("proration", 2687),
                                         ("recurring", 4900), ("recurring", 4900)]


@pytest.mark.parametrize("connection", CRMS)
@pytest.mark.parametrize(("seats", "kind", "october", "november"), [
    (3, "decrease", [("proration", 3677), ("proration", 1394)], [("recurring", 3600)]),
    (8, "increase", [("proration", 3677), ("proration", 3716)], [("recurring", 9600)]),
    (0, "deprovision", [("proration", 3677)], [])])
def test_accepted_on_hold_then_revised_before_the_release(
        both_db_world: World, connection: str, seats: int, kind: str,
        october: list[tuple[str, int]], november: list[tuple[str, int]]) -> None:
    """Accepted while the account is on hold (5 seats from 1 October 2026) and revised to
    ``seats`` from 20 October before the hold is lifted: nothing is provisioned while held;
    on the release the provision goes, then the change, once each. October bills 5 x 12 x
    19/31 = 36.77 and the revised seats for 12/31 of the month."""
    world = both_db_world
    deal = (SalesforceDeal if connection == "sf" else DataverseDeal)(
        world, [(SEAT, 5, 12)], start="2026-10-01")
    deal.hold(True)
    _cycle(world, connection)
    deal.revise("2026-10-20", quantities={0: seats})
    _cycle(world, connection)
    world.worker.dispatch()
    assert _requests(world, deal)[0] == ("provision", 5, "awaiting_hold_release")
    assert all(state != "dispatched" for _, _, state in _requests(world, deal))
    deal.hold(False)
    _cycle(world, connection)
    world.worker.dispatch()
    _cycle(world, connection)
    world.worker.dispatch()
    assert _requests(world, deal) == [("provision", 5, "dispatched"),
                                      (kind, seats, "dispatched")]
    run_bill_run(world.engine, OCT1)
    run_bill_run(world.engine, NOV1)
    assert _lines(world, deal, OCT1) == october
    assert _lines(world, deal, NOV1) == november


@pytest.mark.parametrize("connection", CRMS)
def test_account_landing_in_a_later_sync(both_db_world: World, connection: str) -> None:
    """The accepted quote's account is refused (a negative credit limit) so the quote waits;
    the account is fixed in the CRM and lands: the quote becomes one order, billed once."""
    world = both_db_world
    _cycle(world, connection)
    deal = (SalesforceDeal if connection == "sf" else DataverseDeal)(world, [(SEAT, 5, 12)])
    if connection == "sf":
        world.sf("update", object="Account", id=deal.account, fields={"Credit_Limit__c": -5})
    else:
        world.dv("update", table="accounts", id=deal.account, values={"creditlimit": -5})
    [report] = world.cycle(connection)
    assert report.outcome == "partial"          # the account refused, the quote waiting
    assert _orders(world, deal) == 0
    if connection == "sf":
        world.sf("update", object="Account", id=deal.account,
                 fields={"Credit_Limit__c": 10_000_000})
    else:
        world.dv("update", table="accounts", id=deal.account, values={"creditlimit": 10_000_000})
    _cycle(world, connection)
    _cycle(world, connection)
    run_bill_run(world.engine, JAN1)
    run_bill_run(world.engine, FEB1)
    assert _lines(world, deal, JAN1) == [("recurring", 6000)]
    assert _lines(world, deal, FEB1) == [("recurring", 6000)]
    assert _orders(world, deal) == 1
    assert _open_quarantine(world, connection) == []



@pytest.mark.parametrize("connection", CRMS)
def test_committed_seats_revised_inside_their_term(both_db_world: World,
                                                   connection: str) -> None:
    """Seats committed for 12 months (auto-renew) from 1 January 2027. Revision: 8 seats from
    20 January (1 February: 13.94 + 96.00). Revision: 6 seats and a pro seat committed for
    12 months without auto-renew, from 20 March: the decrease is recorded from the term end
    (nothing credited), the pro seat is co-termed with the seats, to 1 January 2028 (1 April:
    24.50 x 12/31 = 9.48 and 24.50; the 1 January 2028 invoice bills no pro seat, and the
    seats renewed at 6, 72.00)."""
    from billing_core.service import ledger_uow
    from billing_core.service.pricing import set_product_terms
    world = both_db_world
    deal = (SalesforceDeal if connection == "sf" else DataverseDeal)(
        world, [(SEAT, 5, 12)], accept=False)
    _cycle(world, connection)
    with ledger_uow(world.engine) as uow:
        sf = connection == "sf"
        set_product_terms(uow, "CWS-STD-M" if sf else "SKU-SEAT-R", term_months=12,
                          auto_renew=True)
        set_product_terms(uow, "CWS-PRO-M" if sf else "SKU-PRO-R", term_months=12,
                          auto_renew=False)
        uow.commit()
    if connection == "sf":
        deal.set_status(True)
    else:
        world.dv("win_quote", id=deal.quote)
    _cycle(world, connection)
    run_bill_run(world.engine, JAN1)
    assert _lines(world, deal, JAN1) == [("recurring", 6000)]
    deal.revise("2027-01-20", quantities={0: 8})
    _cycle(world, connection)
    run_bill_run(world.engine, FEB1)
    assert _lines(world, deal, FEB1) == [("proration", 1394), ("recurring", 9600)]
    deal.revise("2027-03-20", quantities={0: 6}, add=((PRO, 1, 24.5),))
    _cycle(world, connection)
    assert _open_quarantine(world, connection) == []
    for month in (3, 4, 5):
        run_bill_run(world.engine, date(2027, month, 1))
    assert _lines(world, deal, MAR1) == [("recurring", 9600)]
    assert _lines(world, deal, date(2027, 4, 1)) == [("recurring", 9600), ("proration", 948),
                                                    ("recurring", 2450)]
    assert _lines(world, deal, date(2027, 5, 1)) == [("recurring", 9600), ("recurring", 2450)]
    for month in range(6, 13):
        run_bill_run(world.engine, date(2027, month, 1))
    run_bill_run(world.engine, date(2028, 1, 1))
    assert _lines(world, deal, date(2028, 1, 1)) == [("recurring", 7200)]
