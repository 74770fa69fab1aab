"""The e2e test world: a sandbox, a database, a config pointing at both, and the worker."""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The CRM events config the events e2e modules add to the world's connections (``sf`` and
# ``d365``): the sandbox's org id, the webhook key and the callouts' HMAC from the environment.
EVENTS_KEY, EVENTS_HMAC = "e2e-webhook-key", "e2e-hmac"
EVENTS_KEY_ENV, EVENTS_HMAC_ENV = "LB_E2E_EVENTS_KEY", "LB_E2E_EVENTS_HMAC"


def events_config() -> str:
    from connectors.sandbox.salesforce.auth import ORG_ID

    return f"""
[connections.sf.events]
organization_id = "{ORG_ID}"
hmac_secret = "env:{EVENTS_HMAC_ENV}"
[connections.d365.events]
auth = "webhook_key"
key = "env:{EVENTS_KEY_ENV}"
"""


def free_port() -> int:
    """A loopback TCP port free now (for a receiver started later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class World:
    def __init__(self, sbx: Any, engine: Any, tmp: Path, extra: str = "") -> None:
        from config.settings import load_settings
        from connectors.registry import build_connector
        from jobs.cli.demo_crm import sandbox_config
        from jobs.worker import Worker

        self.sbx, self.engine, self.tmp = sbx, engine, tmp
        text, self.env = sandbox_config(sbx, str(engine.url), extra=extra)
        self.config = tmp / "ledgerbridge.toml"
        self.config.write_text(text, encoding="utf-8")
        os.environ.update(self.env)
        self.settings = load_settings(self.config)
        self.worker = Worker(engine, self.settings, connector_factory=lambda s: build_connector(
            s, sleep=lambda _s: None))

    def reconfigure(self, edit: Callable[[str], str]) -> World:
        """The config file's text through ``edit``, and a new worker on it (the old one
        closed); returns the world."""
        from config.settings import load_settings
        from connectors.registry import build_connector
        from jobs.worker import Worker

        self.config.write_text(edit(self.config.read_text(encoding="utf-8")), encoding="utf-8")
        self.worker.close()
        self.settings = load_settings(self.config)
        self.worker = Worker(self.engine, self.settings, connector_factory=lambda s:
                             build_connector(s, sleep=lambda _s: None))
        return self

    def cycle(self, name: str | None = None, **kw: Any) -> list[Any]:
        names = [name] if name else list(self.worker.connections)
        return [self.worker.sync_connection(n, self.worker.options("test", **kw), wait=True)
                for n in names]

    def sf(self, action: str, **payload: Any) -> Any:
        return self.sbx.salesforce.admin(action, payload)

    def dv(self, action: str, **payload: Any) -> Any:
        return self.sbx.dataverse.admin(action, payload)

    def calls(self, crm: str, endpoint: str, method: str | None = None) -> int:
        return int(self.sbx.counters.get(crm, endpoint, method))


# --- shared by the deal, amendment and documents tests ---------------------------------------

RECURRING = MONTHLY = 100_000_000          # the Dataverse choices of new_billingtype / frequency


def dataverse_usd(world: World) -> dict[str, str]:
    """The ``transactioncurrencyid`` binding of the sandbox's USD currency row."""
    usd = next(g for g in (world.dv("guid", table="transactioncurrencies", index=i)["id"]
                           for i in range(8))
               if world.dv("get", table="transactioncurrencies", id=g)["isocurrencycode"]
               == "USD")
    return {"transactioncurrencyid@odata.bind": f"/transactioncurrencies({usd})"}


def dataverse_seat_account(world: World, sku: str, name: str
                           ) -> tuple[dict[str, str], str, str]:
    """A monthly 12.00 USD seat product and a US account with room on its limit: (the USD
    binding, the product id, the account id)."""
    currency = dataverse_usd(world)
    product = world.dv("create", table="products", row={
        "productnumber": sku, "name": "Seat", "statecode": 0, "statuscode": 1,
        "new_billingtype": RECURRING, "new_billingfrequency": MONTHLY, "price": 12,
        **currency})["productid"]
    account = world.dv("create", table="accounts", row={
        "name": name, "creditlimit": 10_000_000, "creditonhold": False,
        "address1_country": "US", **currency})["accountid"]
    return currency, str(product), str(account)


def dataverse_won_seats(world: World, sku: str, name: str, number: str) -> tuple[str, str]:
    """:func:`dataverse_seat_account` and a won quote of 5 seats at 12.00 from 1 January 2027:
    (the account id, the quote id)."""
    currency, product, account = dataverse_seat_account(world, sku, name)
    quote = world.dv("create", table="quotes", row={
        "name": "Seats", "quotenumber": number, "statecode": 0, "statuscode": 1,
        "revisionnumber": 0, "customerid_account@odata.bind": f"/accounts({account})",
        **currency})["quoteid"]
    world.dv("set_local_date", table="quotes", id=quote, column="effectivefrom",
             date="2027-01-01")
    world.dv("create", table="quotedetails", row={
        "quoteid@odata.bind": f"/quotes({quote})", "productid@odata.bind": f"/products({product})",
        "lineitemnumber": 1, "quantity": 5, "priceperunit": 12, "extendedamount": 60,
        **currency})
    world.dv("win_quote", id=quote)
    return account, str(quote)


def invoice_lines_of(world: World, ext_id: str, period_start: Any) -> list[tuple[str, int]]:
    """(kind, amount) of the lines of the account's invoice for the period, in line order."""
    from sqlalchemy import select

    from billing_core.adapters.tables import accounts, invoice_lines, invoices
    with world.engine.connect() as conn:
        return [(r.kind, r.amount_minor) for r in conn.execute(
            select(invoice_lines.c.kind, invoice_lines.c.amount_minor)
            .join(invoices, invoices.c.id == invoice_lines.c.invoice_id)
            .join(accounts, accounts.c.id == invoices.c.account_id)
            .where(accounts.c.ext_id == ext_id, invoices.c.period_start == period_start)
            .order_by(invoice_lines.c.line_no))]


def order_items(world: World, connection: str, quote: str) -> int | None:
    """The items (subscriptions and one-time charges) of the order the CRM quote became; None
    while it has none."""
    from sqlalchemy import func, select

    from billing_core.adapters.tables import one_time_charges, subscriptions
    from sync.tables import handoffs
    with world.engine.connect() as conn:
        order = conn.execute(select(handoffs.c.order_id).where(
            handoffs.c.connection == connection,
            func.lower(handoffs.c.quote_crm_id) == quote.lower(),
            handoffs.c.order_id.is_not(None))).scalar()
        if order is None:
            return None
        return sum(int(conn.execute(select(func.count()).select_from(t).where(
            t.c.order_id == order)).scalar_one()) for t in (subscriptions, one_time_charges))
