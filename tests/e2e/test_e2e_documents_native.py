"""Invoices pushed to the native Dynamics 365 ``invoice`` (issue 16, item 2: "or the native
invoice entity when configured"), end to end: the real worker against the sandbox CRM's
Dataverse side over HTTPS, SQLite and PostgreSQL, the connection with ``push_documents = true``
and ``fieldmap_overrides = "dynamics_invoice"``.

A quote of 5 seats at 12.00 USD from 1 January 2027 is won; the 1 January bill run issues one
invoice of 60.00 (no tax), due 31 January. The next sync shows it on the account: one
``invoice`` (number, Invoice, due date, balance 60.00, Active / Billed) with one invoice
product (write-in, 5 x 12.00), whose total Dataverse computes from it (60.00), and the PDF as a
note on it. A payment of 60.00 makes it Paid / Complete with balance 0.00; unapplying the
payment makes it Active / Billed again with balance 60.00 (Dataverse's paid invoice is
read-only: the push reactivates it first). A sync killed after Dataverse accepted the push,
then run again, leaves one invoice, one line and one note."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
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
from billing_core.service.payments import record_payment, unapply_payment
from jobs.cli.demo_crm import set_sandbox_tax_rates
from sync.states import OutboxState
from sync.tables import outbox

pytestmark = pytest.mark.e2e
JAN1 = date(2027, 1, 1)


def _native(world: World) -> World:
    return world.reconfigure(lambda text: text.replace(
        'crm = "dynamics"\n', 'crm = "dynamics"\npush_documents = true\n'
        'fieldmap_overrides = "dynamics_invoice"\n'))


@pytest.fixture
def native_world(sandbox: Any, engine: Any, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()
    w = _native(World(sandbox, engine, tmp_path))
    set_sandbox_tax_rates(engine)
    yield w
    w.worker.close()


def _billed(world: World) -> str:
    account, _quote = dataverse_won_seats(world, "SKU-SEAT-NATIVE", "Native Co", "QUO-NAT-1")
    [report] = world.cycle("d365")
    assert report.outcome == "ok" and report.handed_off >= 1, report
    run_bill_run(world.engine, JAN1)
    return str(account)


def _invoice(world: World, account: str) -> Any:
    with world.engine.connect() as conn:
        return conn.execute(select(invoices).join(accounts, accounts.c.id == invoices.c.account_id)
                            .where(accounts.c.ext_id == account)).mappings().one()


def _rows(world: World, table: str) -> list[dict[str, Any]]:
    return [row for _, row in world.sbx.dataverse.store.scan(table)]


def _crm(world: World, account: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                                              list[tuple[Any, ...]]]:
    """The account's native invoices, their lines and their notes."""
    rows = [r for r in _rows(world, "invoices") if r["_customerid_value"] == account]
    ids = {r["invoiceid"] for r in rows}
    lines = [r for r in _rows(world, "invoicedetails") if r["_invoiceid_value"] in ids]
    notes = [n for n in _rows(world, "annotations") if n["_objectid_value"] in ids]
    return ([(r["invoicenumber"], r["name"], r["new_documenttype"], r["duedate"],
              r["totalamount"], r["new_balance"], r["new_status"], r["statecode"],
              r["statuscode"], r["new_ledgerdocumentid"]) for r in rows],
            [(r["lineitemnumber"], r["isproductoverridden"], r["quantity"], r["priceperunit"],
              r["baseamount"], r["extendedamount"], r["new_ledgerlineid"]) for r in lines],
            [(n["subject"], n["filename"], base64.b64decode(n["documentbody"]))
             for n in notes])


def test_native_invoice_with_lines_and_pdf_then_paid_then_reopened(native_world: World) -> None:
    world = native_world
    account = _billed(world)
    inv = _invoice(world, account)
    assert inv["status"] == "posted" and inv["total_minor"] == 6000
    [report] = world.cycle("d365")
    assert report.outcome == "ok", report
    rows, lines, notes = _crm(world, account)
    key = f"invoice-{inv['id']}"
    assert rows == [(inv["number"], inv["number"], "Invoice", "2027-01-31T00:00:00Z",
                     Decimal("60"), Decimal("60"), "posted", 0, 4, key)]
    assert [(n, w, Decimal(q), Decimal(p), b, e, k) for n, w, q, p, b, e, k in lines] == [
        (1, True, Decimal(5), Decimal(12), Decimal(60), Decimal(60), f"{key}-1")]
    with world.engine.connect() as conn:
        kept = kept_file(conn, "invoice", int(inv["id"]), "pdf")
    assert kept is not None
    assert notes == [(inv["number"], f"{inv['number']}.pdf", bytes(kept["body"]))]

    with ledger_uow(world.engine) as uow:
        record_payment(uow, int(inv["account_id"]), "60.00", reference="wire-1",
                       received_on=JAN1, auto_apply=True)
        uow.commit()
    [report] = world.cycle("d365")
    assert report.outcome == "ok", report
    rows, lines_after, notes_after = _crm(world, account)
    assert [(r[5], r[6], r[7], r[8]) for r in rows] == [(Decimal("0"), "paid", 2, 100001)]
    assert lines_after == lines and len(notes_after) == 1

    with ledger_uow(world.engine) as uow:
        unapply_payment(uow, "wire-1")
        uow.commit()
    [report] = world.cycle("d365")
    assert report.outcome == "ok", report
    rows, lines_after, _ = _crm(world, account)
    assert [(r[4], r[5], r[6], r[7], r[8]) for r in rows] == [
        (Decimal("60"), Decimal("60"), "posted", 0, 4)]
    assert lines_after == lines


def test_a_push_killed_after_dataverse_accepted_resends_nothing_twice(
        native_world: World) -> None:
    world = native_world
    account = _billed(world)
    script = world.tmp / "kill.py"
    script.write_text(f"""
import os, sys
sys.path.insert(0, {str(Path.cwd())!r})
import sync.push
real = sync.push._record
def record(engine, connection, obj, rows, results, *a, **k):
    if obj == "document" and any(r.ok for r in results):
        os._exit(9)       # Dataverse accepted the invoice and its lines; the outbox never hears
    return real(engine, connection, obj, rows, results, *a, **k)
sync.push._record = record
from jobs.cli import main
main(["--config", {str(world.config)!r}, "sync", "--connection", "d365"])
""", encoding="utf-8")
    env = dict(os.environ)
    if world.engine.dialect.name == "postgresql":
        with world.engine.connect() as conn:
            env["PGOPTIONS"] = f"-csearch_path={conn.execute(text('SELECT current_schema()')).scalar()}"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=180,
                          check=False, env=env)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    rows, lines, notes = _crm(world, account)
    assert (len(rows), len(lines), len(notes)) == (1, 1, 0)
    [report] = world.cycle("d365")
    assert report.outcome == "ok", report
    rows, lines, notes = _crm(world, account)
    assert (len(rows), len(lines), len(notes)) == (1, 1, 1)
    assert rows[0][4] == Decimal("60")
    with world.engine.connect() as conn:
        states = set(conn.execute(select(outbox.c.state).where(
            outbox.c.connection == "d365",
            outbox.c.object.in_(("document", "document_file")))).scalars())
    assert states == {OutboxState.ACKED}
