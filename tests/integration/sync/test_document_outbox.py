"""The documents push through the outbox (issue 16, item 2), on SQLite and PostgreSQL, with an
in-memory connector standing in for the CRM (the CRMs themselves: tests/e2e/
test_e2e_documents.py).

Worked figures: invoice TINV-000001 of 100.00 USD is posted; the first push sends its record
whole (total 100.00, balance 100.00, posted) and its file once. A credit memo of 30.00 is then
activated and applied to it: the next push sends the invoice's balance 70.00 and status
partially_paid and nothing else, the memo's record whole (total 30.00, balance 0.00, applied)
and the memo's file; the invoice's file is not sent again."""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from billing_core.service import ledger_uow
from billing_core.service.memos import apply_credit_memo, create_credit_memo
from connectors.base import WriteResult
from sync import outbox
from sync.push import push
from sync.states import OutboxState
from sync.tables import outbox as outbox_table
from sync.tables import sync_records

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "receivables"))
from receivables_helpers import make_account, post_invoice  # noqa: E402

CONN = "crm1"


class FakeCrm:
    """Accepts every write and keeps what it was sent, by object."""

    name = CONN

    def __init__(self) -> None:
        self.sent: dict[str, list[dict[str, Any]]] = {}

    def write(self, obj: str, updates: Sequence[dict[str, Any]], *,
              redecide: Any = None) -> list[WriteResult]:
        self.sent.setdefault(obj, []).extend(dict(u) for u in updates)
        if obj == "document_file":          # the CRM's id of the file it stored
            return [WriteResult(f"068FILE{u['crm_id']}", True) for u in updates]
        return [WriteResult(str(u["crm_id"]), True) for u in updates]


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def billed(engine: Engine) -> tuple[int, int]:
    with ledger_uow(engine) as uow:
        account = make_account(uow, "ACC-DOCS")
        invoice = post_invoice(uow, account, 10_000)
        uow.conn.execute(insert(sync_records).values(
            connection=CONN, object="account", crm_id="001DOCS", ledger_id=account,
            content_hash="x", updated_at=_now()))
        uow.commit()
    return account, invoice


def _push(engine: Engine, crm: FakeCrm, files: Any) -> None:
    report = push(engine, crm, CONN, objects=(*("account", "quote"), *outbox.DOCUMENT_OBJECTS),
                  clock=_now, files=files)
    assert report.stopped is None


def _pdf(kind: str, doc_id: int) -> bytes:
    return f"%PDF {kind} {doc_id}".encode()


def test_documents_are_not_pushed_unless_the_connection_says_so(engine: Engine,
                                                                 billed: tuple[int, int]) -> None:
    outbox.refresh(engine, CONN, _now())
    with engine.connect() as conn:
        objects = set(conn.execute(select(outbox_table.c.object)).scalars())
    assert objects == {"account"}


def test_a_record_whole_then_only_what_a_memo_application_changed(
        engine: Engine, billed: tuple[int, int]) -> None:
    account, invoice = billed
    crm = FakeCrm()
    outbox.refresh(engine, CONN, _now(), documents=True)
    _push(engine, crm, _pdf)
    key = f"invoice-{invoice}"
    [record] = crm.sent["document"]
    assert record == {"crm_id": key, "account_crm_id": "001DOCS", "number": "TINV-000001",
                      "document_type": "Invoice", "issue_date": record["issue_date"],
                      "due_date": record["due_date"], "total": Decimal("100.00"),
                      "balance": Decimal("100.00"), "status": "posted", "currency": "USD"}
    [upload] = crm.sent["document_file"]
    assert (upload["crm_id"], upload["title"], upload["filename"], upload["_pdf"]) == (
        key, "TINV-000001", "TINV-000001.pdf", _pdf("invoice", invoice))
    with engine.connect() as conn:
        acked = conn.execute(select(outbox_table.c.acked_payload, outbox_table.c.state).where(
            outbox_table.c.object == "document_file")).one()
    assert acked.state == OutboxState.ACKED
    assert json.loads(acked.acked_payload)["crm_file_id"] == f"068FILE{key}"

    with ledger_uow(engine) as uow:
        memo = create_credit_memo(uow, account, "30.00", "goodwill", activate=True)
        apply_credit_memo(uow, memo, [{"target": "TINV-000001", "amount": "30.00"}])
        uow.commit()
    crm.sent.clear()
    outbox.refresh(engine, CONN, _now(), documents=True, only_accounts=[account])
    _push(engine, crm, _pdf)
    by_key = {u["crm_id"]: u for u in crm.sent["document"]}
    assert by_key.pop(key) == {"crm_id": key, "balance": Decimal("70.00"),
                               "status": "partially_paid"}
    [(memo_key, memo_record)] = by_key.items()
    assert memo_key == f"credit_memo-{memo}"
    assert (memo_record["document_type"], memo_record["total"], memo_record["balance"],
            memo_record["status"]) == ("Credit Memo", Decimal("30.00"), Decimal("0.00"),
                                       "applied")
    assert [u["crm_id"] for u in crm.sent["document_file"]] == [memo_key]


def test_a_document_whose_file_cannot_be_made_fails_alone(engine: Engine,
                                                          billed: tuple[int, int]) -> None:
    account, invoice = billed
    with ledger_uow(engine) as uow:
        other = post_invoice(uow, account, 5_000)
        uow.commit()

    def files(kind: str, doc_id: int) -> bytes:
        if doc_id == invoice:
            raise RuntimeError("template_error: invoice.html:12: 'totl' is undefined")
        return _pdf(kind, doc_id)

    crm = FakeCrm()
    outbox.refresh(engine, CONN, _now(), documents=True)
    _push(engine, crm, files)
    assert [u["crm_id"] for u in crm.sent["document_file"]] == [f"invoice-{other}"]
    assert len(crm.sent["document"]) == 2
    with engine.connect() as conn:
        row = conn.execute(select(outbox_table).where(
            outbox_table.c.object == "document_file",
            outbox_table.c.crm_id == f"invoice-{invoice}")).mappings().one()
    assert row["state"] == OutboxState.PENDING and row["attempts"] == 1
    assert row["last_error"] == ("RENDER_ERROR: TINV-000001: template_error: invoice.html:12: "
                                 "'totl' is undefined")
