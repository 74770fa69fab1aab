"""Provisioning never passes a hold it could not have seen (issue 13, item 4), for any
interleaving of CRM changes and the cycle's reads.

The connector is wrapped so that before and after every page read of every object (and every
single-record read) the test can make the CRM change pair "put account A on hold, then accept
a quote of A" (the sandbox's Salesforce, and its Dataverse: a credit hold, a quote won; over
HTTPS). For every such point in turn, cycles then run
to completion: while the CRM hold is set, no provisioning request of that quote's order is
ever anything but ``awaiting_hold_release`` (after each cycle and after a dispatch); once the
hold is cleared in the CRM, the next cycle releases them and a dispatch sends them. The cycle
the change interleaves with is an incremental one, a full read, or a one-account resync.

Regression: the cycle pulled accounts first, so a hold set after the account read and a quote
accepted before the quote read made an active order whose requests were dispatched.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from billing_core.adapters.tables import orders, provisioning_requests
from config.settings import load_settings
from connectors.base import Connector, Page, Record
from connectors.registry import build_connector
from jobs.cli.demo_crm import sandbox_config
from jobs.worker import Worker

pytestmark = pytest.mark.e2e

HOOK = Callable[[str], None]
MAX_POINTS = 80
HW_KEY = 8              # the sandbox's "Hardware Security Key": one-time, needs provisioning


class SalesforceUser:
    """The CRM user's changes, on the sandbox's Salesforce."""

    connection, crm = "sf", "salesforce"

    def __init__(self, sandbox: Any) -> None:
        self.side = sandbox.salesforce

    def accounts(self) -> list[str]:
        """Twenty accounts in USD, no hold, credit enough for anything."""
        return [self.side.admin("update", {"object": "Account", "index": i, "fields": {
            "Credit_Limit__c": 10_000_000, "Credit_Hold__c": False,
            "CurrencyIsoCode": "USD"}})["id"] for i in range(1, 21)]

    def new_quote(self, account: str) -> tuple[str, str]:
        """A draft quote of one line that needs provisioning: its id, its order's source ref."""
        quote = self.side.admin("create_quote", {
            "account_id": account, "status": "Draft",
            "lines": [{"product_index": HW_KEY, "quantity": 2, "unit_price": 45}]})["id"]
        return quote, f"sf:{quote}:rev1"

    def rename(self, account: str, name: str) -> None:
        self.side.admin("update", {"object": "Account", "id": account, "fields": {"Name": name}})

    def hold(self, account: str, on: bool) -> None:
        self.side.admin("set_hold", {"id": account, "hold": on})

    def accept(self, quote: str) -> None:
        self.side.admin("set_quote_status", {"id": quote, "status": "Accepted"})


class DataverseUser:
    """The same changes on the sandbox's Dataverse: ``creditonhold``, a quote won. Its seeded
    products are drawn at random, so the quote's product (one-time, needs provisioning) is
    made here."""

    connection, crm = "d365", "dynamics"

    def __init__(self, sandbox: Any) -> None:
        self.side = sandbox.dataverse
        usd = next(g for g in (self.side.admin("guid", {"table": "transactioncurrencies",
                                                        "index": i})["id"] for i in range(8))
                   if self.side.admin("get", {"table": "transactioncurrencies", "id": g})[
                       "isocurrencycode"] == "USD")
        self.usd = f"/transactioncurrencies({usd})"
        product = self.side.admin("create", {"table": "products", "row": {
            "productnumber": "SKU-HWKEY", "name": "Hardware Security Key", "statecode": 0,
            "statuscode": 1, "new_billingtype": 100_000_001, "new_needsprovisioning": True,
            "price": 45, "transactioncurrencyid@odata.bind": self.usd}})
        self.product = f"/products({product['productid']})"

    def accounts(self) -> list[str]:
        return [self.side.admin("update", {"table": "accounts", "index": i, "values": {
            "creditlimit": 10_000_000, "creditonhold": False,
            "transactioncurrencyid@odata.bind": self.usd}})["accountid"] for i in range(1, 21)]

    def new_quote(self, account: str) -> tuple[str, str]:
        quote = self.side.admin("create", {"table": "quotes", "row": {
            "name": "Interleaved quote", "statecode": 0, "statuscode": 1, "revisionnumber": 0,
            "customerid_account@odata.bind": f"/accounts({account})",
            "transactioncurrencyid@odata.bind": self.usd}})["quoteid"]
        self.side.admin("create", {"table": "quotedetails", "row": {
            "quoteid@odata.bind": f"/quotes({quote})", "productid@odata.bind": self.product,
            "lineitemnumber": 1, "quantity": 2, "priceperunit": 45, "extendedamount": 90,
            "transactioncurrencyid@odata.bind": self.usd}})
        return quote, f"d365:{quote}:rev0"

    def rename(self, account: str, name: str) -> None:
        self.side.admin("update", {"table": "accounts", "id": account, "values": {"name": name}})

    def hold(self, account: str, on: bool) -> None:
        self.side.admin("set_creditonhold", {"id": account, "value": on})

    def accept(self, quote: str) -> None:
        self.side.admin("win_quote", {"id": quote})


USERS: dict[str, type[SalesforceUser | DataverseUser]] = {"salesforce": SalesforceUser,
                                                         "dataverse": DataverseUser}


class Interleaved:
    """A connector whose every read calls ``hook("<object> before|after")`` around it."""

    def __init__(self, inner: Connector, hook: HOOK) -> None:
        self.inner, self.hook = inner, hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_changes(self, obj: str, cursor: str | None, **kw: Any) -> Iterator[Page]:
        pages = self.inner.read_changes(obj, cursor, **kw)
        try:
            while True:
                self.hook(f"{obj} page before")
                try:
                    page = next(pages)
                except StopIteration:
                    return
                self.hook(f"{obj} page after")
                yield page
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    def read_one(self, obj: str, crm_id: str) -> Record | None:
        self.hook(f"{obj} read_one before")
        found = self.inner.read_one(obj, crm_id)
        self.hook(f"{obj} read_one after")
        return found

    def lookup(self, obj: str, field: str, value: Any) -> list[Record]:
        self.hook(f"{obj} lookup before")
        found = self.inner.lookup(obj, field, value)
        self.hook(f"{obj} lookup after")
        return found


class Injector:
    """Counts the read points of a cycle and makes the CRM change at the ``at``-th one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count, self.at = 0, -1
        self.change: Callable[[], None] | None = None
        self.fired: str | None = None

    def arm(self, at: int, change: Callable[[], None]) -> None:
        self.count, self.at, self.change, self.fired = 0, at, change, None

    def __call__(self, point: str) -> None:
        with self.lock:
            now, self.count = self.count, self.count + 1
            if now != self.at or self.change is None:
                return
            change, self.change, self.fired = self.change, None, point
        change()            # the CRM changes while the reader waits, as a user would

    def fire_late(self) -> None:
        """After the cycle: the point after every read."""
        if self.change is not None:
            change, self.change, self.fired = self.change, None, "after the cycle"
            change()


@pytest.fixture(params=sorted(USERS))
def user(request: pytest.FixtureRequest, sandbox: Any) -> SalesforceUser | DataverseUser:
    sandbox.reset()
    made: SalesforceUser | DataverseUser = USERS[request.param](sandbox)
    return made


@pytest.fixture
def make_worker(sandbox: Any, user: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[Callable[[Engine, int], tuple[Worker, Injector]]]:
    """A worker for the user's CRM in the sandbox whose connector is :class:`Interleaved`."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    made: list[Worker] = []

    def make(engine: Engine, page_size: int) -> tuple[Worker, Injector]:
        text, env = sandbox_config(sandbox, str(engine.url), connections=(user.connection,))
        text = text.replace(f'crm = "{user.crm}"\n',
                            f'crm = "{user.crm}"\npage_size = {page_size}\n')
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        cfg = tmp_path / "ledgerbridge.toml"
        cfg.write_text(text, encoding="utf-8")
        injector = Injector()
        made.append(Worker(engine, load_settings(cfg), connector_factory=lambda s: Interleaved(
            build_connector(s, sleep=lambda _s: None), injector)))
        return made[-1], injector

    yield make
    for w in made:
        w.close()


def _states(engine: Engine, source_ref: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(provisioning_requests.c.state).join(
            orders, orders.c.id == provisioning_requests.c.order_id).where(
            orders.c.source_ref == source_ref)).scalars())


def _dispatch(w: Worker) -> None:
    """A dispatch that ran: the job lock is the database's, so another test process on the
    same PostgreSQL may hold it for a moment."""
    for _ in range(1000):
        if w.dispatch() is not None:
            return
        time.sleep(0.01)
    raise AssertionError("the dispatch lock stayed taken")


def _cycle(w: Worker, **kw: Any) -> None:
    (name,) = w.connections
    report = w.sync_connection(name, w.options("test", **kw), wait=True)
    assert report is not None and report.outcome == "ok", report


def test_a_hold_never_misses_a_quote_accepted_after_it_incremental_cycles(
        user: Any, engine: Engine, make_worker: Any) -> None:
    # Two records a page: an incremental read spans several pages per object.
    _interleave(user, engine, *make_worker(engine, 2), "incremental")


@pytest.mark.parametrize("mode", ["full", "one account"])
def test_a_hold_never_misses_a_quote_accepted_after_it_full_and_one_account(
        user: Any, sqlite_engine: Engine, make_worker: Any, mode: str) -> None:
    # A full read of the whole sandbox at 25 records a page: a few pages per object.
    _interleave(user, sqlite_engine, *make_worker(sqlite_engine, 25), mode)


def _interleave(crm: Any, engine: Engine, w: Worker, injector: Injector, mode: str) -> None:
    """Inject the change pair at each read point in turn (see the module's docstring)."""
    accounts = crm.accounts()
    _cycle(w)
    violations: list[str] = []
    fired_points: list[str] = []
    for at in range(MAX_POINTS):
        account = accounts[at % len(accounts)]
        other = accounts[(at + 7) % len(accounts)]
        quote, ref = crm.new_quote(account)
        for i in range(3):      # unrelated changes: more pages to interleave with
            crm.rename(accounts[(at + 11 + i) % 20], f"Account {i} round {at}")

        def change(account: str = account, quote: str = quote) -> None:
            crm.hold(account, True)
            crm.accept(quote)

        injector.arm(at, change)
        _cycle(w, **{"incremental": {}, "full": {"full": True},
                     "one account": {"account": account}}[mode])
        injector.fire_late()
        point = f"point {at} ({injector.fired})"
        fired_points.append(point)
        for step in ("after the cycle", "after a dispatch", "after one more cycle",
                     "after its dispatch"):
            if step == "after a dispatch" or step == "after its dispatch":
                _dispatch(w)
            elif step == "after one more cycle":
                _cycle(w)
            states = _states(engine, ref)
            if any(s != "awaiting_hold_release" for s in states):
                violations.append(f"{point} {step}: {states}")
        if not _states(engine, ref):
            violations.append(f"{point}: no order after two cycles")
        crm.hold(account, False)
        crm.rename(other, f"Other of round {at}")
        _cycle(w)
        _dispatch(w)
        if _states(engine, ref) != ["dispatched"]:
            violations.append(f"{point} after the hold is cleared: {_states(engine, ref)}")
        if injector.fired == "after the cycle":
            break           # the point after every read: each one before it was tried
    assert fired_points[-1].endswith("(after the cycle)"), "more read points than MAX_POINTS"
    assert len(fired_points) > 10
    assert violations == [], "\n".join(violations)
