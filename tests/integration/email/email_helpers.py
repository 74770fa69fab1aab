"""Helpers of the email tests: a ledger of N billed accounts and a real SMTP server on loopback
(aiosmtpd) that records what it receives and can be told to refuse."""
from __future__ import annotations

import email
import email.policy
import io
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from pypdf import PdfReader
from sqlalchemy import Engine

from billing_core.service import ledger_uow
from billing_core.service.accounts import AccountIn, upsert_accounts
from billing_core.service.bill_run import run_bill_run
from billing_core.service.orders import OrderIn, SubscriptionItem, activate_order, place_order
from billing_core.service.pricing import ProductIn, add_product, set_price
from billing_core.service.tax import set_tax_rate
from config.settings import DocumentSettings, EmailSettings, Settings

BILL_DATE = date(2027, 3, 1)
SELLER = "Northwind Billing Ltd"


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def billed_ledger(engine: Engine, n: int, *, no_email: tuple[int, ...] = ()) -> list[int]:
    """``n`` US accounts (``acct-<i>@example.com``; none for the indexes in ``no_email``), each
    with 2 seats at 10.00 USD from 1 March 2027, no tax: the bill run of 1 March posts one
    invoice of 20.00 USD per account (INV-000001..n, by account id). Returns the account ids."""
    with ledger_uow(engine, clock=lambda: at(BILL_DATE)) as uow:
        set_tax_rate(uow, "US", "", "0", date(2020, 1, 1), "none")
        seat = add_product(uow, ProductIn(sku="SEAT", name="Seat"))
        set_price(uow, seat, "USD", date(2020, 1, 1), "10.00")
        results = upsert_accounts(uow, [AccountIn(
            f"Customer {i}", "USD", f"C{i}", country="US",
            billing_email=None if i in no_email else f"acct-{i}@example.com; ap-{i}@example.com")
            for i in range(n)])
        ids = [int(r.account_id) for r in results if r.account_id is not None]
        for acc in ids:
            order = place_order(uow, OrderIn(acc, f"q{acc}", BILL_DATE, subscriptions=[
                SubscriptionItem(seat, 2, BILL_DATE)]))
            activate_order(uow, order)
        uow.commit()
    result = run_bill_run(engine, BILL_DATE, uow_factory=lambda: ledger_uow(engine))
    assert result.invoices_created == n, result
    return ids


@dataclass
class Inbox:
    """What the server accepted, and how it answers the next messages."""
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    answer: str | None = None       # e.g. "451 4.3.0 try later"; None accepts

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.answer is not None:
            return self.answer
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              bytes(envelope.original_content or envelope.content)))
        return "250 OK"

    def parsed(self) -> list[EmailMessage]:
        return [email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
                for _, _, raw in self.messages]


def pdf_text(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def settings_for(port: int, **email: Any) -> Settings:
    # a generous timeout: the server is a thread of this process, which a loaded CI machine
    # can keep waiting (an unreachable port is refused at once, not timed out)
    base = EmailSettings(enabled=True, since="2027-01-01", from_address="billing@northwind.test",
                         host="127.0.0.1", port=port, timeout_seconds=30.0,
                         retry_base_seconds=0.0, retry_max_seconds=0.0)
    return Settings(documents=DocumentSettings(seller_name=SELLER),
                    email=replace(base, **email))


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(inbox: Inbox) -> Controller:
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    return controller


def server_port(controller: Controller) -> int:
    return int(controller.port)
