"""Emailing documents through a real SMTP server on loopback (issue 16, item 3), on SQLite and
PostgreSQL: the MIME received, exactly once across outages and crashes, a missing billing email
failing that document only.

Figures: each account has 2 seats at 10.00 USD from 1 March 2027 and no tax, so the bill run of
1 March posts one invoice of 20.00 USD per account, numbered INV-000001.. in account order.
"""
from __future__ import annotations

import socket
from collections import Counter

import pytest
from email_helpers import SELLER, Inbox, billed_ledger, free_port, pdf_text, settings_for
from sqlalchemy import Engine, update

from billing_core.adapters.tables import email_outbox
from billing_core.service import ledger_uow
from billing_core.service.accounts import update_terms
from billing_core.service.email_outbox import list_emails, retry
from jobs.mailer import send_pending


def _states(engine: Engine) -> Counter[str]:
    with ledger_uow(engine, read_only=True) as uow:
        return Counter(r["state"] for r in list_emails(uow.conn, limit=100_000))


def test_a_bill_run_emails_each_invoice_once_with_its_pdf(engine: Engine,
                                                          smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    billed_ledger(engine, 3)
    settings = settings_for(port)
    report = send_pending(engine, settings)
    # the whole report on failure: a server that did not answer, a retry or a skip says so
    assert (report.queued, report.sent, report.failed, report.dead) == (3, 3, 0, 0), \
        report.as_dict()
    assert _states(engine) == {"sent": 3}
    first = inbox.parsed()[0]
    assert first["Subject"] == f"Invoice INV-000001 from {SELLER}"
    assert first["To"] == "acct-0@example.com, ap-0@example.com"
    assert first["From"] == "billing@northwind.test"
    assert inbox.messages[0][1] == ["acct-0@example.com", "ap-0@example.com"]
    assert first["Message-ID"].endswith("@northwind.test>")
    [attachment] = list(first.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == "INV-000001.pdf"
    text = pdf_text(attachment.get_content())
    assert "INV-000001" in text and "Customer 0" in text and "20.00" in text
    assert "Please find attached invoice INV-000001." in first.get_body().get_content()
    # a second run has nothing to send
    again = send_pending(engine, settings)
    assert (again.queued, again.sent) == (0, 0) and len(inbox.messages) == 3


def test_disabled_or_before_since_nothing_is_queued(engine: Engine,
                                                    smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    billed_ledger(engine, 2)
    report = send_pending(engine, settings_for(port, since="2027-03-02"))
    assert (report.queued, report.sent) == (0, 0) and inbox.messages == []


def test_a_missing_billing_email_fails_that_invoice_only(engine: Engine,
                                                         smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    ids = billed_ledger(engine, 3, no_email=(1,))
    settings = settings_for(port)
    report = send_pending(engine, settings)
    assert (report.sent, report.failed) == (2, 1)
    with ledger_uow(engine, read_only=True) as uow:
        [bad] = list_emails(uow.conn, state="failed")
    assert bad["last_error"].startswith(
        f"account {ids[1]} (Customer 1) has no billing_email")
    # finance sets it, retries: sent once
    with ledger_uow(engine) as uow:
        update_terms(uow, ids[1], billing_email="late@example.com")
        retry(uow, int(bad["id"]))
        uow.commit()
    assert send_pending(engine, settings).sent == 1
    assert inbox.messages[-1][1] == ["late@example.com"]
    assert _states(engine) == {"sent": 3}


def test_an_outage_leaves_them_queued_and_a_later_run_sends_them(
        engine: Engine, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    billed_ledger(engine, 4)
    down = send_pending(engine, settings_for(free_port()))
    assert down.unreachable and down.sent == 0
    assert _states(engine) == {"queued": 4}
    up = send_pending(engine, settings_for(port))
    assert up.sent == 4 and len(inbox.messages) == 4
    assert _states(engine) == {"sent": 4}


def test_4xx_is_retried_and_5xx_is_dead_with_the_reason(engine: Engine,
                                                        smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    billed_ledger(engine, 2)
    inbox.answer = "451 4.3.0 mailbox busy"
    first = send_pending(engine, settings_for(port, max_attempts=3))
    assert (first.retried, first.sent) == (2, 0), first
    assert _states(engine) == {"queued": 2}
    inbox.answer = "554 5.7.1 rejected as spam"
    second = send_pending(engine, settings_for(port, max_attempts=3))
    assert second.dead == 2 and _states(engine) == {"dead": 2}
    with ledger_uow(engine, read_only=True) as uow:
        rows = list_emails(uow.conn)
    assert rows[0]["last_error"] == "554 5.7.1 rejected as spam"
    assert rows[0]["attempts"] == 2
    assert inbox.messages == []


class Crash(Exception):
    pass


def test_a_crash_after_the_server_accepted_sends_that_message_again_only(
        engine: Engine, smtp: tuple[Inbox, int]) -> None:
    """A crash between the server's acceptance and the mark leaves its batch ``sending``; the
    run after takes the rows over (their holder is gone) and sends the accepted one again with
    the same Message-ID, the rest once: 3 invoices, 4 messages, 3 distinct Message-IDs."""
    inbox, port = smtp
    billed_ledger(engine, 3)
    settings = settings_for(port)
    calls: list[int] = []

    def crash_on_second(row_id: int) -> None:
        calls.append(row_id)
        if len(calls) == 2:
            raise Crash

    with pytest.raises(Crash):
        send_pending(engine, settings, after_accept=crash_on_second)
    # the crashed process is gone: make its claim one of a process that no longer exists
    with ledger_uow(engine) as uow:
        uow.conn.execute(update(email_outbox).where(email_outbox.c.state == "sending")
                         .values(claimed_by="999999999@" + socket.gethostname() + "/1"))
        uow.commit()
    # the first sent and marked; the second accepted, not marked; the third claimed, not tried
    assert _states(engine) == {"sent": 1, "sending": 2}
    after = send_pending(engine, settings)
    assert after.sent == 2 and _states(engine) == {"sent": 3}
    ids = [m["Message-ID"] for m in inbox.parsed()]
    assert len(ids) == 4 and len(set(ids)) == 3
    assert ids[1] == ids[2]                     # the resend is recognisable


def test_a_live_senders_claim_is_not_taken_over(engine: Engine,
                                                smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    billed_ledger(engine, 2)
    with ledger_uow(engine) as uow:
        from datetime import date

        from billing_core.service.email_outbox import claim, queue_documents
        queue_documents(uow, date(2027, 1, 1))
        claim(uow, limit=1, lease_seconds=600)      # this (live) process holds one
        uow.commit()
    report = send_pending(engine, settings_for(port))
    assert report.sent == 1 and len(inbox.messages) == 1
    assert _states(engine) == {"sent": 1, "sending": 1}


def test_a_bill_run_of_50_invoices_sends_exactly_50_messages(engine: Engine,
                                                             smtp: tuple[Inbox, int]) -> None:
    """50 accounts, 50 invoices of 20.00 USD; batches of 7 over several connections, then a
    run limited to 10 and the rest: 50 messages, 50 Message-IDs, one per invoice number."""
    inbox, port = smtp
    billed_ledger(engine, 50)
    settings = settings_for(port, batch_size=7)
    assert send_pending(engine, settings, limit=10).sent == 10
    assert send_pending(engine, settings).sent == 40
    subjects = [m["Subject"] for m in inbox.parsed()]
    assert len(subjects) == 50 and len({m["Message-ID"] for m in inbox.parsed()}) == 50
    assert sorted(subjects) == [f"Invoice INV-{i:06d} from {SELLER}" for i in range(1, 51)]
    assert _states(engine) == {"sent": 50}
