"""Amendment, renewal and cancellation quotes end to end (issue 14, items 1-3 and 8): the real
worker against the sandbox CRM over real HTTPS with the real client libraries, both CRMs,
SQLite and PostgreSQL.

Salesforce runs the CPQ field map: the first quote (an SBQQ__Quote__c, type Quote) is
contracted into a Contract; an amendment is a NEW quote of type Amendment whose
SBQQ__MasterContract__c is that contract, a renewal a new quote of type Renewal on an
Opportunity whose SBQQ__RenewedContract__c is it, and the connector learns the quote each
continues through relationship paths (SBQQ__MasterContract__r.SBQQ__Quote__c). Dataverse runs
the dynamics map with the dynamics_deals overrides: a renewal is a quote with new_quotetype =
Renewal and the lookup new_renewsquote; an amendment is a revision (ReviseQuote).

Every deal starts the same: 5 seats of a 12.00 USD monthly product from 1 January 2027, bill
cycle day 1, no committed term; 1 January bills January, 5 x 12.00 = 60.00."""
from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from e2e_world import World, dataverse_seat_account, invoice_lines_of
from sqlalchemy import select

from billing_core.adapters.tables import accounts, orders
from billing_core.service.bill_run import run_bill_run
from jobs.cli.demo_crm import set_sandbox_tax_rates
from sync.tables import quarantine

pytestmark = pytest.mark.e2e
JAN1, FEB1 = date(2027, 1, 1), date(2027, 2, 1)
RENEWAL = 100_000_002                      # new_quotetype (config/fieldmaps/dynamics_deals.toml)


class DealWorld(World):
    """The e2e world with Salesforce on the CPQ map and Dataverse with the deal overrides."""

    def __init__(self, sbx: Any, engine: Any, tmp: Path) -> None:
        from config.settings import load_settings
        from connectors.registry import build_connector
        from jobs.cli.demo_crm import sandbox_config
        from jobs.worker import Worker

        self.sbx, self.engine, self.tmp = sbx, engine, tmp
        text, self.env = sandbox_config(sbx, str(engine.url))
        overrides = tmp / "sf_fields.toml"       # the org's own cancellation date fields
        overrides.write_text('[objects.quote.fields]\n'
                             'end_date = { field = "Cancel_Date__c", type = "date" }\n'
                             '[objects.quote_line.fields]\n'
                             'end_date = { field = "Cancel_Date__c", type = "date" }\n',
                             encoding="utf-8")
        text = text.replace('[connections.sf]\ncrm = "salesforce"\n',
                            '[connections.sf]\ncrm = "salesforce"\nfieldmap = "salesforce_cpq"\n'
                            f'fieldmap_overrides = "{overrides}"\n')
        text = text.replace('[connections.d365]\ncrm = "dynamics"\n',
                            '[connections.d365]\ncrm = "dynamics"\n'
                            'fieldmap_overrides = "dynamics_deals"\n')
        assert 'fieldmap = "salesforce_cpq"' in text and '"dynamics_deals"' in text
        self.config = tmp / "ledgerbridge.toml"
        self.config.write_text(text, encoding="utf-8")
        os.environ.update(self.env)
        self.settings = load_settings(self.config)
        self.worker = Worker(engine, self.settings, connector_factory=lambda s: build_connector(
            s, sleep=lambda _s: None))


@pytest.fixture
def world(sandbox: Any, engine: Any, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[DealWorld]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    w = DealWorld(sandbox, engine, tmp_path)
    set_sandbox_tax_rates(engine)       # the figures below are the lines, before tax
    yield w
    w.worker.close()


def _deal(world: World, ext_id: str) -> list[tuple[int, int | None, int | None]]:
    with world.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            select(orders.c.id, orders.c.amends_order_id, orders.c.renews_order_id)
            .join(accounts, accounts.c.id == orders.c.account_id)
            .where(accounts.c.ext_id == ext_id).order_by(orders.c.id))]


class SalesforceDeal:
    """The CPQ deal: a quote contracted into a Contract; amendments and renewals continue the
    contract as new quotes."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.account = world.sf("create", object="Account", fields={
            "Name": "CPQ Deal Co", "CurrencyIsoCode": "USD", "BillingCountryCode": "US",
            "Credit_Limit__c": 10_000_000})["id"]
        quote = world.sf("create_quote", cpq=True, contract=True, account_id=self.account,
                         status="Accepted", start_date="2027-01-01",
                         lines=[{"product_index": 0, "quantity": 5, "unit_price": 12}])
        self.contract = quote["contract_id"]
        self.quote = quote["id"]

    def cancel(self, at: str) -> None:
        """Finance's user sets the accepted quote's Cancel_Date__c (no new quote)."""
        self.world.sf("update", object="SBQQ__Quote__c", id=self.quote,
                      fields={"Cancel_Date__c": at})

    def amend(self, start: str, seats: int) -> None:
        self.world.sf("amend_contract", contract_id=self.contract, start_date=start,
                      quantities={0: seats})

    def renew(self, start: str, seats: int, price: int) -> None:
        self.world.sf("renew_contract", contract_id=self.contract, start_date=start,
                      quantities={0: seats}, prices={0: price})


class DataverseDeal:
    """The Dataverse deal: a won quote; a revision amends it, a quote of type Renewal naming
    it (new_renewsquote) renews it."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.currency, self.product, self.account = dataverse_seat_account(
            world, "SKU-SEAT-DEAL", "Dataverse Deal Co")
        self.quote, self.line = self._quote("QUO-DEAL-1", "2027-01-01", 5, 12)

    def _quote(self, number: str, start: str, seats: int, price: int) -> tuple[str, str]:
        world = self.world
        quote = world.dv("create", table="quotes", row={
            "name": "Seats", "quotenumber": number, "statecode": 0, "statuscode": 1,
            "revisionnumber": 0, "customerid_account@odata.bind": f"/accounts({self.account})",
            **self.currency})["quoteid"]
        world.dv("set_local_date", table="quotes", id=quote, column="effectivefrom", date=start)
        line = world.dv("create", table="quotedetails", row={
            "quoteid@odata.bind": f"/quotes({quote})",
            "productid@odata.bind": f"/products({self.product})", "lineitemnumber": 1,
            "quantity": seats, "priceperunit": price, "extendedamount": seats * price,
            **self.currency})["quotedetailid"]
        world.dv("win_quote", id=quote)
        return quote, line

    def amend(self, start: str, seats: int) -> None:
        world = self.world
        revised = world.dv("revise_quote", id=self.quote)
        world.dv("update", table="quotedetails", id=revised["quotedetailids"][0],
                 values={"quantity": seats, "extendedamount": seats * 12})
        world.dv("set_local_date", table="quotes", id=revised["quoteid"],
                 column="effectivefrom", date=start)
        world.dv("win_quote", id=revised["quoteid"])

    def cancel(self, at: str) -> None:
        """A won quote is read-only in Dataverse: the cancellation date goes on a revision
        (same lines and start), which is won."""
        world = self.world
        revised = world.dv("revise_quote", id=self.quote)
        world.dv("update", table="quotes", id=revised["quoteid"], values={"new_canceldate": at})
        world.dv("win_quote", id=revised["quoteid"])

    def renew(self, start: str, seats: int, price: int) -> None:
        """The sandbox's renew_quote: a quote of type Renewal naming this one, its lines
        copied; then the user's changes, and won."""
        world = self.world
        renewal = world.dv("renew_quote", id=self.quote)
        world.dv("update", table="quotedetails", id=renewal["quotedetailids"][0], values={
            "quantity": seats, "priceperunit": price, "extendedamount": seats * price})
        world.dv("set_local_date", table="quotes", id=renewal["quoteid"],
                 column="effectivefrom", date=start)
        world.dv("win_quote", id=renewal["quoteid"])
        assert world.dv("get", table="quotes", id=renewal["quoteid"])["new_quotetype"] == RENEWAL


def _start(world: World, connection: str) -> SalesforceDeal | DataverseDeal:
    deal = (SalesforceDeal if connection == "sf" else DataverseDeal)(world)
    [report] = world.cycle(connection)
    assert report.outcome == "ok", report
    run_bill_run(world.engine, JAN1)
    assert invoice_lines_of(world, deal.account, JAN1) == [("recurring", 6000)]
    return deal


@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_an_amendment_raising_seats_mid_period_bills_exactly_the_difference(
        world: DealWorld, connection: str) -> None:
    """8 seats from 20 January (CPQ: an Amendment quote on the contract; Dataverse: a
    revision). 1 February bills the 3 added seats for 20-31 January, 12 of January's 31 days,
    3 x 12.00 x 12/31 = 13.935... -> 13.94, and February at 8 seats, 96.00; nothing else."""
    deal = _start(world, connection)
    deal.amend("2027-01-20", 8)
    [report] = world.cycle(connection)
    assert report.outcome == "ok" and report.handed_off == 1
    run_bill_run(world.engine, FEB1)
    assert invoice_lines_of(world, deal.account, FEB1) == [("proration", 1394), ("recurring", 9600)]
    first, amendment = _deal(world, deal.account)
    assert amendment[1:] == (first[0], None)


@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_a_renewal_starts_the_next_term_with_its_own_price(world: DealWorld,
                                                           connection: str) -> None:
    """The deal (month to month: no committed term, so its next term starts at the next
    period) is renewed from 1 February at 6 seats for 15.00 (CPQ: a Renewal quote on an
    opportunity renewing the contract; Dataverse: a quote of type Renewal naming the first).
    The old seats end on 1 February; 1 February bills the renewal's February,
    6 x 15.00 = 90.00, and nothing of the old price."""
    deal = _start(world, connection)
    deal.renew("2027-02-01", 6, 15)
    [report] = world.cycle(connection)
    assert report.outcome == "ok" and report.handed_off == 1
    run_bill_run(world.engine, FEB1)
    assert invoice_lines_of(world, deal.account, FEB1) == [("recurring", 9000)]
    first, renewal = _deal(world, deal.account)
    assert renewal[1:] == (None, first[0])


@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_a_crm_cancellation_credits_the_unused_days(world: DealWorld, connection: str) -> None:
    """The seats are cancelled from 20 January by an amendment that zeroes them (CPQ: an
    Amendment quote with the line at quantity 0; Dataverse: a revision at quantity 0).
    January was billed in advance at 5 seats; 1 February credits its 12 unused days,
    -5 x 12.00 x 12/31 = -23.225... -> -23.23, and bills nothing else: the invoice goes below
    zero, so the 23.23 becomes a credit memo (its ``credit_memo`` line brings the invoice to
    0)."""
    deal = _start(world, connection)
    deal.amend("2027-01-20", 0)
    [report] = world.cycle(connection)
    assert report.outcome == "ok" and report.handed_off == 1
    run_bill_run(world.engine, FEB1)
    assert invoice_lines_of(world, deal.account, FEB1) == [("proration", -2323), ("credit_memo", 2323)]


@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_a_crm_cancellation_date_credits_the_unused_days(world: DealWorld,
                                                         connection: str) -> None:
    """A cancellation date of 20 January (Salesforce: the org's Cancel_Date__c set on the
    accepted CPQ quote; Dataverse: new_canceldate on a won revision) ends the seats there.
    Worked as the zeroing amendment: -5 x 12.00 x 12/31 = -23.23 on 1 February, turned into a
    credit memo."""
    deal = _start(world, connection)
    deal.cancel("2027-01-20")
    [report] = world.cycle(connection)
    assert report.outcome == "ok"
    run_bill_run(world.engine, FEB1)
    assert invoice_lines_of(world, deal.account, FEB1) == [("proration", -2323), ("credit_memo", 2323)]


@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_two_amendments_in_one_sync_interval(world: DealWorld, connection: str) -> None:
    """8 seats from 20 January, then 6 from 25 January, both accepted before the next sync.
    CPQ (two Amendment quotes of the contract): 1 February bills +3 x 12.00 x 12/31 = 13.94,
    -2 x 12.00 x 7/31 = -5.42, February at 6 seats, 72.00. Dataverse: the first revision was
    revised again before its hand-off, so only the current one is the deal's (superseded
    before its hand-off: sync/handoff.py): +1 x 12.00 x 7/31 = 2.71 and 72.00."""
    deal = _start(world, connection)
    deal.amend("2027-01-20", 8)
    if connection == "d365":        # the revision is won: the next one revises it
        assert isinstance(deal, DataverseDeal)
        deal.quote = _newest_revision(world, deal)
    deal.amend("2027-01-25", 6)
    [report] = world.cycle(connection)
    assert report.outcome == "ok", report
    [report] = world.cycle(connection)
    run_bill_run(world.engine, FEB1)
    if connection == "sf":
        assert invoice_lines_of(world, deal.account, FEB1) == [
            ("proration", 1394), ("proration", -542), ("recurring", 7200)]
        assert len(_deal(world, deal.account)) == 3
    else:
        assert invoice_lines_of(world, deal.account, FEB1) == [("proration", 271),
                                                               ("recurring", 7200)]
        assert len(_deal(world, deal.account)) == 2


@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_an_amendment_then_a_renewal_in_one_sync_interval(world: DealWorld,
                                                          connection: str) -> None:
    """8 seats from 20 January, then renewed from 1 February at 6 seats for 15.00: 1 February
    bills the 3 added seats for 20-31 January (13.94) and the renewal's February, 90.00."""
    deal = _start(world, connection)
    deal.amend("2027-01-20", 8)
    if connection == "d365":
        assert isinstance(deal, DataverseDeal)
        deal.quote = _newest_revision(world, deal)
    deal.renew("2027-02-01", 6, 15)
    for _ in range(2):
        [report] = world.cycle(connection)
        assert report.outcome == "ok", report
    run_bill_run(world.engine, FEB1)
    assert invoice_lines_of(world, deal.account, FEB1) == [("proration", 1394),
                                                           ("recurring", 9000)]
    first, amendment, renewal = _deal(world, deal.account)
    assert amendment[1:] == (first[0], None) and renewal[1:] == (None, amendment[0])


def _newest_revision(world: World, deal: DataverseDeal) -> str:
    """The won revision of the Dataverse deal's quote (the one ReviseQuote made last)."""
    rows = [world.dv("get", table="quotes", index=i) for i in range(
        world.dv("info")["rows"]["quotes"])]
    won = [r for r in rows if r.get("quotenumber") == "QUO-DEAL-1" and r.get("statecode") == 2]
    return str(max(won, key=lambda r: r["revisionnumber"])["quoteid"])


def test_a_non_primary_cpq_quote_is_not_a_second_order(world: DealWorld) -> None:
    """CPQ orders only the primary quote of an opportunity. The deal's quote is primary and
    billed; an alternative quote of the same account (3 seats from 1 January), not primary,
    is marked Accepted too: it is no second order (it waits, quarantined naming
    ``primary``), so 1 February bills the deal's 60.00 only, not 3 seats more. Made primary,
    it is ordered: 1 March bills its January, February and March, 36.00 each, beside the
    deal's 60.00."""
    deal = _start(world, "sf")
    assert isinstance(deal, SalesforceDeal)
    other = world.sf("create_quote", cpq=True, account_id=deal.account, status="Accepted",
                     start_date="2027-01-01",
                     lines=[{"product_index": 0, "quantity": 3, "unit_price": 12}])["id"]
    world.sf("update", object="SBQQ__Quote__c", id=other, fields={"SBQQ__Primary__c": False})
    world.cycle("sf")
    run_bill_run(world.engine, FEB1)
    assert invoice_lines_of(world, deal.account, FEB1) == [("recurring", 6000)]
    assert len(_deal(world, deal.account)) == 1
    with world.engine.connect() as conn:
        entry = conn.execute(select(quarantine.c.field, quarantine.c.status).where(
            quarantine.c.connection == "sf", quarantine.c.crm_id == other)).one()
    assert tuple(entry) == ("primary", "open")
    world.sf("update", object="SBQQ__Quote__c", id=other, fields={"SBQQ__Primary__c": True})
    [report] = world.cycle("sf")
    assert report.outcome == "ok" and report.handed_off == 1
    run_bill_run(world.engine, date(2027, 3, 1))
    assert invoice_lines_of(world, deal.account, date(2027, 3, 1)) == [
        ("recurring", 6000), ("recurring", 3600), ("recurring", 3600), ("recurring", 3600)]


@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_zeroed_by_an_amendment_then_ordered_again(world: DealWorld, connection: str) -> None:
    """The seats zeroed from 20 January, then ordered again (5) from 1 February by another
    amendment: 1 February credits -23.23 and bills February's 60.00 once."""
    deal = _start(world, connection)
    deal.amend("2027-01-20", 0)
    [report] = world.cycle(connection)
    assert report.outcome == "ok"
    if connection == "d365":
        assert isinstance(deal, DataverseDeal)
        deal.quote = _newest_revision(world, deal)
    deal.amend("2027-02-01", 5)
    [report] = world.cycle(connection)
    assert report.outcome == "ok" and report.handed_off == 1, report
    run_bill_run(world.engine, FEB1)
    assert invoice_lines_of(world, deal.account, FEB1) == [("proration", -2323),
                                                           ("recurring", 6000)]


@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_a_renewal_then_amended(world: DealWorld, connection: str) -> None:
    """Renewed from 1 February at 6 seats for 15.00, then the renewal amended to 7 seats from
    10 February (CPQ: the renewal quote contracted, and an Amendment quote of that contract;
    Dataverse: a revision of the renewal quote). 1 March: +1 x 15 x 19/28 = 10.18, March
    105.00."""
    deal = _start(world, connection)
    if connection == "sf":
        assert isinstance(deal, SalesforceDeal)
        renewal = world.sf("renew_contract", contract_id=deal.contract,
                           start_date="2027-02-01", quantities={0: 6}, prices={0: 15})["id"]
    else:
        deal.renew("2027-02-01", 6, 15)
    [report] = world.cycle(connection)
    assert report.outcome == "ok"
    run_bill_run(world.engine, FEB1)
    assert invoice_lines_of(world, deal.account, FEB1) == [("recurring", 9000)]
    if connection == "d365":
        assert isinstance(deal, DataverseDeal)
        renewal = world.dv("get", table="quotes", id=_quote_numbered(world, "QUO-DEAL-1-R"))
        revised = world.dv("revise_quote", id=renewal["quoteid"])
        world.dv("update", table="quotedetails", id=revised["quotedetailids"][0],
                 values={"quantity": 7, "extendedamount": 105})
        world.dv("set_local_date", table="quotes", id=revised["quoteid"],
                 column="effectivefrom", date="2027-02-10")
        world.dv("win_quote", id=revised["quoteid"])
    else:
        assert isinstance(deal, SalesforceDeal)
        renewed = world.sf("contract_quote", id=renewal)["id"]
        world.sf("amend_contract", contract_id=renewed, start_date="2027-02-10",
                 quantities={0: 7})
    [report] = world.cycle(connection)
    assert report.outcome == "ok" and report.handed_off == 1, report
    run_bill_run(world.engine, date(2027, 3, 1))
    assert invoice_lines_of(world, deal.account, date(2027, 3, 1)) == [
        ("proration", 1018), ("recurring", 10500)]


def _quote_numbered(world: World, number: str) -> str:
    rows = [world.dv("get", table="quotes", index=i) for i in range(
        world.dv("info")["rows"]["quotes"])]
    return str(next(r["quoteid"] for r in rows if r.get("quotenumber") == number))



@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_the_renewed_deal_amended_after_the_renewal_starts_is_refused(
        world: DealWorld, connection: str) -> None:
    """Renewed from 1 February at 6 seats for 15.00 (February: 90.00), then the OLD deal is
    amended to 7 seats from 10 February (CPQ: an Amendment quote of the original contract;
    Dataverse: a revision of the original quote). The renewal bills those days: the
    amendment is refused, quarantined naming ``effective_date``, and 1 March bills the
    renewal's 90.00 only. (Taken, it added 7 seats at 12.00 beside the renewal's 6: 57.00 for
    10-28 February and 84.00 for March.)"""
    deal = _start(world, connection)
    deal.renew("2027-02-01", 6, 15)
    [report] = world.cycle(connection)
    assert report.outcome == "ok" and report.handed_off == 1
    run_bill_run(world.engine, FEB1)
    assert invoice_lines_of(world, deal.account, FEB1) == [("recurring", 9000)]
    deal.amend("2027-02-10", 7)
    world.cycle(connection)
    run_bill_run(world.engine, date(2027, 3, 1))
    assert invoice_lines_of(world, deal.account, date(2027, 3, 1)) == [("recurring", 9000)]
    assert len(_deal(world, deal.account)) == 2
    with world.engine.connect() as conn:
        entries = conn.execute(select(quarantine.c.object, quarantine.c.field).where(
            quarantine.c.connection == connection, quarantine.c.status == "open")).all()
    assert [tuple(e) for e in entries] == [("quote", "effective_date")]
