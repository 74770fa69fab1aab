"""Issued documents in the CRM end to end (issue 16, item 2): the real worker against the sandbox
CRM over real HTTPS, SQLite and PostgreSQL, with ``push_documents = true`` on the connection.

A quote of 5 seats at 12.00 USD from 1 January 2027 is won; the 1 January bill run issues one
invoice of 60.00 (no tax: the sandbox tax rates are set to none). The next sync shows it in the
CRM: one Invoice__c record on the account (number, Invoice, dates, total 60.00, balance 60.00,
posted) and its PDF as one file published to that record (the bytes of the kept file). A payment
of 60.00 applied to it makes the record paid with balance 0.00 and uploads nothing again. A sync
killed after the CRM accepted the upsert (or the upload) but before the outbox recorded it, then
run again, leaves one record and one file."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from e2e_world import World, dataverse_won_seats
from sqlalchemy import select, text

from billing_core.adapters.tables import accounts, invoices
from billing_core.service import ledger_uow
from billing_core.service.bill_run import run_bill_run
from billing_core.service.document_files import kept_file
from billing_core.service.payments import record_payment
from connectors.sandbox.dataverse import documents as dv_documents
from connectors.sandbox.salesforce import schema as S
from jobs.cli.demo_crm import set_sandbox_tax_rates
from sync.states import OutboxState
from sync.tables import outbox

pytestmark = pytest.mark.e2e
JAN1 = date(2027, 1, 1)


def _with_documents(world: World) -> World:
    """The world's config with ``push_documents = true`` on both connections."""
    def edit(text: str) -> str:
        for crm in ("salesforce", "dynamics"):
            text = text.replace(f'crm = "{crm}"\n', f'crm = "{crm}"\npush_documents = true\n')
        return text
    return world.reconfigure(edit)


@pytest.fixture
def docs_world(sandbox: Any, engine: Any, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    w = _with_documents(World(sandbox, engine, tmp_path))
    set_sandbox_tax_rates(engine)
    yield w
    w.worker.close()




def _salesforce_deal(world: World) -> str:
    account = world.sf("create", object="Account", fields={
        "Name": "Documents Co", "CurrencyIsoCode": "USD", "BillingCountryCode": "US",
        "Credit_Limit__c": 10_000_000})["id"]
    world.sf("create_quote", account_id=account, status="Accepted", start_date="2027-01-01",
             lines=[{"product_index": 0, "quantity": 5, "unit_price": 12}])
    return str(account)


def _dataverse_deal(world: World) -> str:
    account, _quote = dataverse_won_seats(world, "SKU-SEAT-DOCS", "Documents Co", "QUO-DOCS-1")
    return str(account)


def _billed(world: World, connection: str) -> str:
    """The deal made, synced and billed on 1 January; the CRM account id."""
    account = (_salesforce_deal if connection == "sf" else _dataverse_deal)(world)
    [report] = world.cycle(connection)
    assert report.outcome == "ok" and report.handed_off >= 1, report   # ours + seeded
    run_bill_run(world.engine, JAN1)
    return account


def _invoice(world: World, account: str) -> Any:
    with world.engine.connect() as conn:
        return conn.execute(select(invoices).join(accounts, accounts.c.id == invoices.c.account_id)
                            .where(accounts.c.ext_id == account)).mappings().one()


def _sf_rows(world: World, obj: S.SObject) -> list[dict[str, Any]]:
    return [r for r in world.sbx.salesforce.store.changed_rows(obj) if not r["IsDeleted"]]


def _sf_documents(world: World, account: str) -> tuple[list[dict[str, Any]], list[Any]]:
    records = [r for r in _sf_rows(world, S.INVOICE) if r["Account__c"][:15] == account[:15]]
    ids = {r["Id"] for r in records}
    files = [v for v in _sf_rows(world, S.CONTENT_VERSION) if v["FirstPublishLocationId"] in ids]
    return records, files


def _dv_rows(world: World, table: str) -> list[dict[str, Any]]:
    return [row for _, row in world.sbx.dataverse.store.scan(table)]


def _documents(world: World, connection: str, account: str) -> tuple[list[tuple[Any, ...]],
                                                                      list[tuple[Any, ...]]]:
    """The CRM's records of the account's documents (number, type, issue and due dates, total,
    balance, status, currency, key) and the files on them (title, file name, bytes)."""
    if connection == "sf":
        records, files = _sf_documents(world, account)
        return ([(r["Name"], r["Document_Type__c"], r["Issue_Date__c"], r["Due_Date__c"],
                  r["Total__c"], r["Balance__c"], r["Status__c"], r["CurrencyIsoCode"],
                  r["Ledger_Document_Id__c"]) for r in records],
                [(v["Title"], v["PathOnClient"], base64.b64decode(v["VersionData"]))
                 for v in files])
    rows = [r for r in _dv_rows(world, "new_invoices") if r["_new_account_value"] == account]
    ids = {r["new_invoiceid"] for r in rows}
    notes = [n for n in _dv_rows(world, "annotations") if n["_objectid_value"] in ids]
    assert all(n["mimetype"] == "application/pdf" and n["isdocument"] for n in notes)
    return ([(r["new_name"], r["new_documenttype"], date.fromisoformat(r["new_issuedate"]),
              date.fromisoformat(r["new_duedate"]), r["new_total"], r["new_balance"],
              r["new_status"], r["new_currencycode"], r["new_ledgerdocumentid"])
             for r in rows],
            [(n["subject"], n["filename"], base64.b64decode(n["documentbody"])) for n in notes])


@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_invoice_record_and_pdf_on_the_crm_account_then_paid(docs_world: World,
                                                             connection: str) -> None:
    world = docs_world
    account = _billed(world, connection)
    inv = _invoice(world, account)
    assert inv["status"] == "posted" and inv["total_minor"] == 6000
    [report] = world.cycle(connection)
    assert report.outcome == "ok", report
    records, files = _documents(world, connection, account)
    assert records == [(inv["number"], "Invoice", inv["issue_date"], inv["due_date"],
                        Decimal("60.00"), Decimal("60.00"), "posted", "USD",
                        f"invoice-{inv['id']}")]
    with world.engine.connect() as conn:
        kept = kept_file(conn, "invoice", int(inv["id"]), "pdf")
    assert kept is not None and bytes(kept["body"]).startswith(b"%PDF")
    assert files == [(inv["number"], f"{inv['number']}.pdf", bytes(kept["body"]))]
    if connection == "sf":      # the file is linked to the record (ContentDocumentLink)
        [version] = _sf_documents(world, account)[1]
        links = [link for link in _sf_rows(world, S.CONTENT_DOCUMENT_LINK)
                 if link["ContentDocumentId"] == version["ContentDocumentId"]]
        assert [link["LinkedEntityId"] for link in links] == [version["FirstPublishLocationId"]]

    uploads = _uploads(world, connection)
    with ledger_uow(world.engine) as uow:
        record_payment(uow, int(inv["account_id"]), "60.00", reference="wire-1",
                       received_on=JAN1, auto_apply=True)
        uow.commit()
    [report] = world.cycle(connection)
    assert report.outcome == "ok", report
    records, files = _documents(world, connection, account)
    assert [(r[4], r[5], r[6]) for r in records] == [(Decimal("60.00"), Decimal("0.00"), "paid")]
    assert len(files) == 1 and _uploads(world, connection) == uploads


def _uploads(world: World, connection: str) -> int:
    if connection == "sf":
        return world.calls("salesforce", "sobject", "POST")
    return world.calls("dataverse", "annotations", "POST")


@pytest.mark.parametrize("connection", ["sf", "d365"])
def test_a_file_the_crm_refuses_fails_alone_and_is_dead_lettered_naming_it(
        docs_world: World, monkeypatch: pytest.MonkeyPatch, connection: str) -> None:
    """A PDF over the CRM's limit (made tiny here: Salesforce's 37.5 MB of base64 in a JSON
    body, Dataverse's 5 MB attachment size): its file row is refused with the CRM's message
    naming the document, then dead; the record itself is pushed and the sync goes on."""
    world = docs_world
    if connection == "sf":
        monkeypatch.setattr(S, "MAX_BASE64_JSON", 100)
        code, words = "STRING_TOO_LONG", "37.5 MB"
    else:
        monkeypatch.setattr(dv_documents, "MAX_ATTACHMENT_BYTES", 100)
        code, words = dv_documents.ATTACHMENT_REFUSED, "too large"
    account = _billed(world, connection)
    inv = _invoice(world, account)
    options = replace(world.worker.options("test"), push_max_attempts=1)
    report = world.worker.sync_connection(connection, options, wait=True)
    assert report.outcome in ("ok", "partial"), report
    records, files = _documents(world, connection, account)
    assert len(records) == 1 and files == []
    with world.engine.connect() as conn:
        rows = {r.object: r for r in conn.execute(select(outbox).where(
            outbox.c.connection == connection, outbox.c.crm_id == f"invoice-{inv['id']}"))}
    assert rows["document"].state == OutboxState.ACKED
    assert rows["document_file"].state == OutboxState.DEAD
    assert rows["document_file"].last_error.startswith(f"{code}: {inv['number']}: ")
    assert words in rows["document_file"].last_error


@pytest.mark.parametrize("connection", ["sf", "d365"])
@pytest.mark.parametrize("crash_at", ["document", "document_file"])
def test_a_push_killed_after_the_crm_accepted_resends_nothing_twice(
        docs_world: World, crash_at: str, connection: str) -> None:
    world = docs_world
    account = _billed(world, connection)
    script = world.tmp / "kill.py"
    script.write_text(f"""
import os, sys
sys.path.insert(0, {str(Path.cwd())!r})
import sync.push
real = sync.push._record
def record(engine, connection, obj, rows, results, *a, **k):
    if obj == {crash_at!r} and any(r.ok for r in results):
        os._exit(9)       # the CRM accepted it; the outbox never hears
    return real(engine, connection, obj, rows, results, *a, **k)
sync.push._record = record
from jobs.cli import main
main(["--config", {str(world.config)!r}, "sync", "--connection", {connection!r}])
""", encoding="utf-8")
    env = dict(os.environ)
    if world.engine.dialect.name == "postgresql":     # the test's schema, not the database's
        with world.engine.connect() as conn:
            env["PGOPTIONS"] = f"-csearch_path={conn.execute(text('SELECT current_schema()')).scalar()}"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=180,
                          check=False, env=env)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    records, files = _documents(world, connection, account)
    assert len(records) == 1 and len(files) == (1 if crash_at == "document_file" else 0)
    [report] = world.cycle(connection)
    assert report.outcome == "ok", report
    records, files = _documents(world, connection, account)
    assert len(records) == 1 and len(files) == 1
    with world.engine.connect() as conn:
        states = set(conn.execute(select(outbox.c.state).where(
            outbox.c.object.in_(("document", "document_file")))).scalars())
    assert states == {OutboxState.ACKED}
