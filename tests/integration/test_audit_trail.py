"""The audit trail (``billing_core/service/audit.py``) on SQLite and PostgreSQL: each kind of
change writes exactly one row, in its own transaction, with the unit of work's actor and the
changed fields before and after; a refused change writes none; the CLI records
``cli:<OS user>``, the sync ``sync:<connection>``; rows cannot be updated or deleted; ``audit
list`` filters.

Worked case (the brief's): an account on 30-day terms moved to 45 by ``cli:alice`` records
``{"payment_terms_days": [30, 45]}`` and nothing else."""
from __future__ import annotations

import getpass
import io
import json
import re
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from billing_core.adapters.tables import audit_log, subscriptions
from billing_core.domain.errors import ValidationError
from billing_core.service import ledger_uow
from billing_core.service.accounts import AccountIn, create_account, update_terms
from billing_core.service.audit import list_entries
from billing_core.service.bill_run import run_bill_run
from billing_core.service.credits import (
    convert_grant_to_memo,
    convert_memo_to_credits,
    grant_credits,
)
from billing_core.service.documents import void_invoice
from billing_core.service.gate import accept_orders
from billing_core.service.holds import place_manual_hold, release_manual_hold
from billing_core.service.invoices import list_invoices
from billing_core.service.memos import (
    activate_credit_memo,
    activate_debit_memo,
    apply_credit_memo,
    cancel_debit_memo,
    create_credit_memo,
    create_debit_memo,
    unapply_credit_memo,
)
from billing_core.service.orders import (
    OrderIn,
    SubscriptionItem,
    activate_order,
    cancel_order,
    change_quantity,
    place_order,
)
from billing_core.service.payments import apply_payment, record_payment, unapply_payment
from billing_core.service.pricing import (
    ProductIn,
    add_product,
    set_price,
    set_product_terms,
    update_product,
)
from billing_core.service.subscriptions import end_subscription
from billing_core.service.tax import import_tax_rates, read_rates_csv, set_tax_rate
from jobs.api.auth import create_token, revoke_token
from jobs.cli import main
from sync.reconcile import apply_page, stamp_sync
from sync.runs import current_run

ROOT = Path(__file__).resolve().parents[2]


def _rows(engine: Engine, **filters: object) -> list[dict]:
    with engine.connect() as conn:
        return list_entries(conn, limit=10_000, **filters)  # type: ignore[arg-type]


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())


def _do(engine: Engine, fn, actor: str = "system", holds: bool = False):
    """Run ``fn`` in a committed unit of work as ``actor``; returns (result, new audit rows).
    Without ``holds``, the rows of hold reasons credit control placed or lifted at commit
    (an invoice becoming overdue or settled) are left out: they have tests of their own."""
    before = _count(engine)
    with ledger_uow(engine, actor=actor) as uow:
        result = fn(uow)
        uow.commit()
    with engine.connect() as conn:
        rows = list_entries(conn, after_id=0, limit=10_000)
    return result, [r for r in rows[before:] if holds or r["entity_type"] != "hold"]


def _account(engine: Engine, ext_id: str = "A1", terms: int = 30) -> int:
    acc, _ = _do(engine, lambda uow: create_account(uow, AccountIn(
        name=f"Acme {ext_id}", currency="USD", ext_id=ext_id, tax_exempt=True,
        payment_terms_days=terms)))
    return int(acc)


def test_terms_change_records_one_row_with_before_and_after(engine: Engine) -> None:
    acc = _account(engine)
    _, rows = _do(engine, lambda uow: update_terms(uow, acc, payment_terms_days=45),
                  actor="cli:alice")
    assert len(rows) == 1
    row = rows[0]
    assert (row["actor"], row["action"], row["entity_type"], row["entity_id"],
            row["entity_ref"], row["account_id"]) == \
        ("cli:alice", "updated", "account", str(acc), "A1", acc)
    assert row["changes"] == {"payment_terms_days": [30, 45]}
    # nothing changed: nothing recorded
    _, rows = _do(engine, lambda uow: update_terms(uow, acc, payment_terms_days=45))
    assert rows == []


def test_a_refused_or_rolled_back_change_leaves_no_row(engine: Engine) -> None:
    acc = _account(engine)
    before = _count(engine)
    with ledger_uow(engine, actor="cli:alice") as uow, pytest.raises(ValidationError):
        update_terms(uow, acc, payment_terms_days=-1)
    with ledger_uow(engine, actor="cli:alice") as uow:
        update_terms(uow, acc, payment_terms_days=60)
        uow.rollback()                                   # the change and its row go together
    assert _count(engine) == before


def _product(engine: Engine) -> int:
    def go(uow):
        pid = add_product(uow, ProductIn(sku="SKU1", name="Seat", kind="recurring",
                                         billing_period="month", pricing_model="per_unit"))
        set_price(uow, pid, "USD", date(2020, 1, 1), "10.00")
        return pid
    return int(_do(engine, go)[0])


def test_each_kind_of_change_writes_one_row(engine: Engine) -> None:
    acc = _account(engine)
    pid = _product(engine)
    # orders: placed, activated (one row each)
    order, rows = _do(engine, lambda uow: place_order(uow, OrderIn(
        acc, "Q-1", date(2026, 1, 1), subscriptions=[
            SubscriptionItem(pid, 2, date(2026, 1, 1), "monthly")])), actor="sync:sf")
    assert [(r["action"], r["entity_type"], r["entity_ref"], r["actor"]) for r in rows] == \
        [("placed", "order", "Q-1", "sync:sf")]
    _, rows = _do(engine, lambda uow: activate_order(uow, order))
    assert [(r["action"], r["changes"]) for r in rows] == \
        [("activated", {"status": [None, "active"]})]
    with engine.connect() as conn:
        sub = int(conn.execute(select(subscriptions.c.id)).scalar_one())
    # subscription: quantity change (before/after), end
    _, rows = _do(engine, lambda uow: change_quantity(uow, sub, 5, date(2026, 2, 1)))
    assert len(rows) == 1 and rows[0]["action"] == "quantity_changed"
    assert rows[0]["changes"]["quantity"] == ["2", "5"]
    # bill run: one row per invoice, posted, by the run's actor, with the run's id
    result = run_bill_run(engine, date(2026, 2, 1),
                          uow_factory=lambda: ledger_uow(engine, actor="system"))
    assert result.invoices_created >= 1
    posted = _rows(engine, entity_type="invoice")
    assert len(posted) == result.invoices_created
    assert {(r["action"], r["actor"], r["run_id"]) for r in posted} == \
        {("posted", "system", f"bill_run:{result.run_id}")}
    with engine.connect() as conn:
        inv = list_invoices(conn, account_id=acc)[-1]
    assert posted[-1]["entity_ref"] == inv["number"]
    assert posted[-1]["changes"]["total_minor"] == [None, inv["total_minor"]]
    # payment: recorded, applied, unapplied
    pay, rows = _do(engine, lambda uow: record_payment(uow, acc, "5.00", reference="pi_1"),
                    actor="api:stripe")
    assert [(r["action"], r["entity_type"], r["entity_ref"], r["actor"]) for r in rows] == \
        [("recorded", "payment", "pi_1", "api:stripe")]
    assert rows[0]["changes"]["amount_minor"] == [None, 500]
    _, rows = _do(engine, lambda uow: apply_payment(uow, pay, [
        {"target": inv["number"], "amount": "5.00"}]))
    assert [(r["action"], r["entity_type"]) for r in rows] == [("applied", "payment")]
    assert rows[0]["changes"]["applied_minor"] == [0, 500]
    assert rows[0]["changes"]["target"] == [None, inv["number"]]
    _, rows = _do(engine, lambda uow: unapply_payment(uow, pay))
    assert [(r["action"], r["changes"]["applied_minor"]) for r in rows] == \
        [("unapplied", [500, 0])]
    # credit memo: created, posted (activated), applied, unapplied
    memo, rows = _do(engine, lambda uow: create_credit_memo(uow, acc, "1.00", "goodwill"))
    assert [(r["action"], r["entity_type"]) for r in rows] == [("created", "credit_memo")]
    _, rows = _do(engine, lambda uow: activate_credit_memo(uow, memo))
    assert [(r["action"], r["changes"]["status"]) for r in rows] == \
        [("posted", ["draft", "active"])]
    assert rows[0]["entity_ref"].startswith("CM-")
    _, rows = _do(engine, lambda uow: apply_credit_memo(uow, memo, [
        {"target": inv["number"], "amount": "1.00"}]))
    assert [(r["action"], r["entity_type"]) for r in rows] == [("applied", "credit_memo")]
    _, rows = _do(engine, lambda uow: unapply_credit_memo(uow, memo))
    assert [r["action"] for r in rows] == ["unapplied"]
    # debit memo: created, posted, cancelled
    dm, rows = _do(engine, lambda uow: create_debit_memo(uow, acc, "3.00", "fee"))
    assert [(r["action"], r["entity_type"]) for r in rows] == [("created", "debit_memo")]
    _, rows = _do(engine, lambda uow: activate_debit_memo(uow, dm))
    assert [r["action"] for r in rows] == ["posted"]
    _, rows = _do(engine, lambda uow: cancel_debit_memo(uow, dm))
    assert [(r["action"], r["changes"]["status"]) for r in rows] == \
        [("cancelled", ["active", "cancelled"])]
    # invoice voided
    _, rows = _do(engine, lambda uow: void_invoice(uow, inv["number"]), actor="cli:bob")
    assert [(r["action"], r["entity_ref"], r["changes"], r["actor"]) for r in rows] == \
        [("voided", inv["number"], {"status": ["posted", "void"]}, "cli:bob")]
    # holds: placed and released (hold_history keeps its own rows too)
    _, rows = _do(engine, lambda uow: place_manual_hold(uow, acc, "fraud check", admin="bob"),
                  actor="cli:bob", holds=True)
    placed = [r for r in rows if r["entity_ref"] == "manual"]
    assert [(r["action"], r["entity_ref"], r["actor"]) for r in placed] == \
        [("placed", "manual", "cli:bob")]
    assert placed[0]["changes"]["hold_actor"] == [None, "admin:bob"]
    _, rows = _do(engine, lambda uow: release_manual_hold(uow, acc, admin="bob"), holds=True)
    assert [(r["action"], r["entity_ref"]) for r in rows if r["entity_type"] == "hold"] == \
        [("lifted", "manual")]
    # subscription ended, order cancelled
    _, rows = _do(engine, lambda uow: end_subscription(uow, sub, date(2026, 6, 1)))
    assert [(r["action"], r["changes"]) for r in rows] == \
        [("ended", {"end_date": [None, "2026-06-01"]})]
    _, rows = _do(engine, lambda uow: cancel_order(uow, order, date(2026, 5, 1)))
    assert [(r["action"], r["entity_type"]) for r in rows] == \
        [("ended", "subscription"), ("cancelled", "order")]
    # product terms, tax rates (set, then imported), tokens
    _, rows = _do(engine, lambda uow: set_product_terms(uow, pid, term_months=12))
    assert [(r["action"], r["entity_ref"], r["changes"]) for r in rows] == \
        [("terms_updated", "SKU1", {"term_months": [None, 12]})]
    _, rows = _do(engine, lambda uow: set_tax_rate(uow, "DE", None, "0.19", date(2026, 1, 1)))
    assert [(r["action"], r["entity_ref"]) for r in rows] == [("set", "DE@2026-01-01")]
    csv = io.StringIO("country,region,rate,from\nDE,,0.20,2026-01-01\nFR,,0.2,2026-01-01\n")
    _, rows = _do(engine, lambda uow: import_tax_rates(uow, read_rates_csv(csv)))
    assert [(r["action"], r["entity_ref"], r["changes"].get("rate")) for r in rows] == \
        [("imported", "DE@2026-01-01", ["0.19", "0.2"]),
         ("imported", "FR@2026-01-01", [None, "0.2"])]
    _, rows = _do(engine, lambda uow: create_token(uow, "stripe", ["billing:write"]),
                  actor="cli:ops")
    assert [(r["action"], r["entity_type"], r["entity_ref"], r["actor"]) for r in rows] == \
        [("created", "api_token", "stripe", "cli:ops")]
    assert "secret" not in json.dumps(rows[0]["changes"])
    _, rows = _do(engine, lambda uow: revoke_token(uow, "stripe"))
    assert [(r["action"], r["entity_ref"]) for r in rows] == [("revoked", "stripe")]


def test_products_and_held_orders(engine: Engine) -> None:
    acc = _account(engine)
    pid, rows = _do(engine, lambda uow: add_product(uow, ProductIn(
        sku="SKU9", name="Seat", kind="recurring", billing_period="month",
        pricing_model="per_unit")), actor="sync:sf")
    assert [(r["action"], r["entity_type"], r["entity_ref"], r["changes"]["name"])
            for r in rows] == [("created", "product", "SKU9", [None, "Seat"])]
    _do(engine, lambda uow: set_price(uow, pid, "USD", date(2020, 1, 1), "10.00"))
    _, rows = _do(engine, lambda uow: update_product(uow, pid, ProductIn(
        sku="SKU9", name="Seat (annual)", kind="recurring", billing_period="month",
        pricing_model="per_unit")))
    assert [(r["action"], r["changes"]) for r in rows] == \
        [("updated", {"name": ["Seat", "Seat (annual)"]})]
    # an order for an account on hold is placed, then held: one row each
    _do(engine, lambda uow: place_manual_hold(uow, acc, "check", admin="bob"))
    _, rows = _do(engine, lambda uow: accept_orders(uow, [OrderIn(
        acc, "Q-9", date(2026, 1, 1), subscriptions=[
            SubscriptionItem(pid, 1, date(2026, 1, 1), "monthly")])]), actor="sync:sf")
    assert [(r["action"], r["entity_ref"], r["changes"]["status"]) for r in rows] == \
        [("placed", "Q-9", [None, "accepted"]), ("held", "Q-9", ["accepted", "held"])]


def test_credit_grants_and_conversions(engine: Engine) -> None:
    acc = _account(engine)
    grant, rows = _do(engine, lambda uow: grant_credits(uow, acc, "20.00", reason="promo"))
    assert [(r["action"], r["entity_type"], r["changes"]["amount_minor"]) for r in rows] == \
        [("granted", "credit_grant", [None, 2000])]
    memo, rows = _do(engine, lambda uow: convert_grant_to_memo(uow, grant, "5.00"))
    assert [(r["action"], r["entity_type"]) for r in rows] == [
        ("created", "credit_memo"), ("posted", "credit_memo"), ("converted", "credit_grant")]
    assert rows[-1]["changes"]["remaining_minor"] == [2000, 1500]
    _, rows = _do(engine, lambda uow: convert_memo_to_credits(uow, memo["id"], "2.00"))
    assert [(r["action"], r["changes"]["applied_minor"]) for r in rows] == \
        [("returned_to_credits", [0, 200])]


def test_rows_cannot_be_updated_or_deleted(engine: Engine) -> None:
    _account(engine)
    for statement in ("UPDATE audit_log SET actor = 'someone'", "DELETE FROM audit_log"):
        with engine.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text(statement))
    assert _count(engine) == 1
    assert _rows(engine)[0]["actor"] == "system"


def test_the_code_has_no_path_that_changes_audit_rows() -> None:
    """Append-only in the code too: nothing names ``audit_log`` in an UPDATE or DELETE."""
    pattern = re.compile(r"(update|delete)\(\s*audit_log|(UPDATE|DELETE FROM)\s+audit_log")
    found = [str(p.relative_to(ROOT)) for pkg in ("billing_core", "sync", "jobs", "config")
             for p in (ROOT / pkg).rglob("*.py")
             if "migrations" not in p.parts and pattern.search(p.read_text("utf-8"))]
    assert found == []


def test_the_sync_records_its_connection(engine: Engine) -> None:
    before = _count(engine)
    with ledger_uow(engine) as uow:
        res = apply_page(uow, "sf", "account", [
            {"crm_id": "001AAA", "name": "Acme", "currency": "USD"}])
        uow.commit()
    assert res.quarantined == 0, res
    rows = _rows(engine)[before:]
    assert [(r["actor"], r["action"], r["entity_type"]) for r in rows] == \
        [("sync:sf", "created", "account")]


def test_the_sync_stamp_keeps_a_named_actor_and_adds_the_run(engine: Engine) -> None:
    """The hand-off's units of work are stamped like the pages' (``run_handoffs`` calls
    ``stamp_sync``); a retry by hand (``cli:<user>``) keeps its actor."""
    token = current_run.set(17)
    try:
        with ledger_uow(engine) as uow:
            stamp_sync(uow, "dv")
            assert (uow.actor, uow.run_id) == ("sync:dv", "sync_run:17")
        with ledger_uow(engine, actor="cli:alice") as uow:
            stamp_sync(uow, "dv")
            assert (uow.actor, uow.run_id) == ("cli:alice", "sync_run:17")
    finally:
        current_run.reset(token)


def _cli(db: Path, *args: str):
    return CliRunner().invoke(main, ["--database-url", f"sqlite:///{db}", *args],
                              catch_exceptions=False)


def test_cli_records_the_os_user_and_lists_with_filters(sqlite_engine: Engine) -> None:
    db = Path(str(sqlite_engine.url.database))
    assert _cli(db, "accounts", "add", "--name", "Acme", "--currency", "USD",
                "--ext-id", "E-1").exit_code == 0
    assert _cli(db, "accounts", "add", "--name", "Globex", "--currency", "EUR",
                "--ext-id", "E-2").exit_code == 0
    assert _cli(db, "accounts", "update", "E-1", "--terms", "45").exit_code == 0
    with ledger_uow(sqlite_engine) as uow:           # a change by the system
        update_terms(uow, 2, payment_terms_days=14)
        uow.commit()
    user = f"cli:{getpass.getuser()}"
    out = _cli(db, "audit", "list", "--json")
    assert out.exit_code == 0
    rows = json.loads(out.output)
    assert [(r["actor"], r["action"], r["account_id"]) for r in rows] == [
        (user, "created", 1), (user, "created", 2), (user, "updated", 1), ("system", "updated", 2)]
    assert rows[2]["changes"] == {"payment_terms_days": [30, 45]}

    def ids(*args: str) -> list[int]:
        res = _cli(db, "audit", "list", "--json", *args)
        assert res.exit_code == 0, res.output
        return [r["id"] for r in json.loads(res.output)]

    assert ids("--account", "E-1") == [1, 3]
    assert ids("--actor", "system") == [4]
    assert ids("--actor", "cli:*") == [1, 2, 3]
    assert ids("--entity", "invoice") == []
    assert ids("--since", "2000-01-01", "--limit", "2") == [1, 2]
    assert ids("--after-id", "2") == [3, 4]
    assert ids("--since", "2999-01-01") == []
    table = _cli(db, "audit", "list")
    assert table.exit_code == 0 and "payment_terms_days" in table.output
    for bad, says in ((("--since", "2026-13-01"), "since='2026-13-01'"),
                      (("--account", "nope"), "account='nope'"),
                      (("--limit", "0"), "limit=0")):
        res = CliRunner().invoke(main, ["--database-url", f"sqlite:///{db}", "audit", "list",
                                        *bad])
        assert res.exit_code == 2 and says in res.output, (bad, res.output)


def test_a_change_refused_by_billing_writes_nothing_through_the_cli(sqlite_engine: Engine
                                                                     ) -> None:
    db = Path(str(sqlite_engine.url.database))
    assert _cli(db, "accounts", "add", "--name", "Acme", "--currency", "USD",
                "--ext-id", "E-1").exit_code == 0
    before = _count(sqlite_engine)
    res = CliRunner().invoke(main, ["--database-url", f"sqlite:///{db}", "accounts", "update",
                                    "E-1", "--terms", "-5"])
    assert res.exit_code == 2
    assert _count(sqlite_engine) == before

