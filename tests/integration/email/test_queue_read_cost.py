"""Queueing the documents owed an email reads each document once per call, not once per chunk
(SQLite's VM steps).

``queue_all`` queues in transactions of ``QUEUE_CHUNK`` documents. Each chunk's read started
again from the first document id, walking every document the earlier chunks had just queued
(and every one issued before ``since``): after a bill run the queueing cost grew with the square
of the invoices. Measured without a clock: the same 1,000 invoices queued in one chunk and in
twenty chunks of 50 must cost about the same and queue the same rows.
"""
from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from typing import Any

import pytest
from read_cost import counting
from sqlalchemy import Engine, delete, insert, select

from billing_core.adapters.tables import accounts, email_outbox, invoices
from billing_core.service import email_outbox as outbox
from billing_core.service import ledger_uow

NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
SINCE = date(2026, 1, 1)
N = 1000


def _build(engine: Engine) -> None:
    ids = range(1, N + 1)
    with engine.begin() as conn:
        conn.execute(insert(accounts), [
            {"id": a, "ext_source": "t", "ext_object": "Account", "ext_id": f"A{a}",
             "name": f"Account {a}", "currency": "USD", "country": "US", "created_at": NOW,
             "updated_at": NOW, "billing_email": f"ap{a}@example.com"} for a in ids])
        conn.execute(insert(invoices), [
            {"id": a, "account_id": a, "currency": "USD", "number": f"INV-{a:06d}",
             "status": "posted", "period_start": date(2026, 2, 1),
             "period_end": date(2026, 2, 28), "issue_date": date(2026, 3, 1),
             "due_date": date(2026, 3, 31), "subtotal_minor": 100, "tax_minor": 0,
             "total_minor": 100, "created_at": NOW} for a in ids])


def _queue(engine: Engine, chunk: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, Any]:
    """Steps (in tens, every connection counted) of one ``queue_all`` in chunks of ``chunk``,
    and the rows it queued; the outbox is emptied afterwards."""
    monkeypatch.setattr(outbox, "queue_documents",
                        functools.partial(outbox.queue_documents, limit=chunk))
    try:
        with counting(engine) as counted:
            written, failed = outbox.queue_all(lambda: ledger_uow(engine, clock=lambda: NOW),
                                               SINCE, kinds=("invoice",))
    finally:
        monkeypatch.undo()
    with engine.begin() as conn:
        queued = sorted(conn.execute(select(email_outbox.c.doc_id, email_outbox.c.recipient,
                                            email_outbox.c.state)).all())
        conn.execute(delete(email_outbox))
    return counted.steps, (written, failed, queued)


def test_queueing_in_chunks_reads_each_document_once(sqlite_engine: Engine,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _build(sqlite_engine)
    whole, got_whole = _queue(sqlite_engine, N, monkeypatch)
    chunked, got_chunked = _queue(sqlite_engine, 50, monkeypatch)

    assert got_chunked == got_whole
    assert got_whole[0] == N and got_whole[1] == []
    assert got_whole[2] == [(a, f"ap{a}@example.com", "queued") for a in range(1, N + 1)]
    # 20 chunks re-reading from the first id walked ~10 times as many documents
    assert chunked < whole * 2, (whole, chunked)
