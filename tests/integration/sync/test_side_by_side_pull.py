"""Quote lines and accounts are read side by side and applied as their pages arrive
(``sync.engine.pull_stages``): the same ledger as one object after another, each object's calls
counted apart, a failure or a budget stop of one reader handled as a one-object pull's."""
from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fake_crm import FakeCRM
from sqlalchemy import Engine, select

from billing_core.adapters.db import make_engine
from billing_core.adapters.tables import accounts, orders, subscriptions
from connectors.base import FatalError, Page
from sync import engine as sync_engine
from sync.engine import Cycle, SyncOptions, pull_stages, run_cycle
from sync.tables import handoffs, sync_cursors, sync_records

WAIT = 10.0     # seconds a line reader waits for an account page before it gives up


class GatedCRM(FakeCRM):
    """A CRM whose second quote-line page is answered only once an account page was applied
    (``account_applied``), or after ``WAIT`` seconds: read one object after the other, the
    line read would wait in vain."""

    def __init__(self) -> None:
        super().__init__(page_size=2)
        self.account_applied = threading.Event()
        self.waited_in_vain = False
        self.fail: str | None = None

    def read_changes(self, obj: str, cursor: str | None, **kw: Any) -> Iterator[Page]:
        if obj == self.fail:
            raise FatalError(f"INVALID_FIELD: {obj} query refused")
        for n, page in enumerate(super().read_changes(obj, cursor, **kw)):
            if obj == "quote_line" and n == 1 and not self.account_applied.wait(WAIT):
                self.waited_in_vain = True
            yield page


def _crm() -> GatedCRM:
    crm = GatedCRM()
    crm.seed_basic()
    for i in range(6):
        crm.put("account", f"A{i}", name=f"Account {i}", currency="USD",
                credit_limit=Decimal(100_000), credit_hold=False)
        crm.put("quote", f"Q{i}", account_crm_id=f"A{i}", status="Accepted", revision=1,
                number=f"Q-{i}")
        for j in range(2):
            crm.put("quote_line", f"L{i}{j}", quote_crm_id=f"Q{i}", product_crm_id="P1",
                    quantity=Decimal(j + 1))
    return crm


def _run(engine: Engine, crm: GatedCRM, applied: list[str] | None = None,
         **opts: Any) -> Any:
    def progress(obj: str, n: int) -> None:
        if applied is not None:
            applied.append(obj)
        if obj == "account":
            crm.account_applied.set()
    return Cycle(engine, crm, SyncOptions(push=False, **opts), progress=progress).run()


def _ledger(engine: Engine) -> dict[str, list[Any]]:
    with engine.connect() as conn:
        return {
            "accounts": [tuple(r) for r in conn.execute(select(
                accounts.c.name, accounts.c.currency, accounts.c.credit_limit_minor)
                .order_by(accounts.c.name))],
            "records": [tuple(r) for r in conn.execute(select(
                sync_records.c.object, sync_records.c.crm_id, sync_records.c.content_hash)
                .order_by(sync_records.c.object, sync_records.c.crm_id))],
            "orders": [tuple(r) for r in conn.execute(select(
                orders.c.source_ref, orders.c.status).order_by(orders.c.source_ref))],
            "handoffs": [tuple(r) for r in conn.execute(select(
                handoffs.c.source_ref, handoffs.c.state).order_by(handoffs.c.source_ref))],
            "cursors": [tuple(r) for r in conn.execute(select(      # not the outbox's clock
                sync_cursors.c.object, sync_cursors.c.cursor).where(
                    sync_cursors.c.object != "_outbox").order_by(sync_cursors.c.object))],
        }


def test_the_stages_read_lines_and_accounts_together_and_the_rest_one_by_one() -> None:
    assert pull_stages(["product", "price", "quote", "quote_line", "account"]) == [
        ["product"], ["price"], ["quote"], ["quote_line", "account"]]
    assert pull_stages(["quote", "account"]) == [["quote"], ["account"]]
    assert pull_stages(["account"]) == [["account"]]


def test_account_pages_are_applied_while_the_lines_are_still_read(engine: Engine) -> None:
    crm, applied = _crm(), []
    report = _run(engine, crm, applied)
    assert report.outcome == "ok" and report.handed_off == 6
    assert not crm.waited_in_vain
    last_line = max(i for i, obj in enumerate(applied) if obj == "quote_line")
    assert "account" in applied[:last_line]
    assert applied.index("account") > max(i for i, o in enumerate(applied) if o == "quote")
    assert not any(t.name.startswith("prefetch-") for t in threading.enumerate())


def test_side_by_side_commits_the_same_ledger_as_one_object_after_another(
        engine: Engine, sqlite_template: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(engine, _crm()).outcome == "ok"
    side_by_side = _ledger(engine)
    path = tmp_path / "one_by_one.db"       # the same run on an empty ledger, one by one
    shutil.copy(sqlite_template, path)
    other = make_engine(f"sqlite:///{path}")
    monkeypatch.setattr(sync_engine, "pull_stages", lambda objs: [[o] for o in objs])
    crm = _crm()
    crm.account_applied.set()           # one by one, the lines come first: do not wait
    try:
        assert _run(other, crm).outcome == "ok"
        assert _ledger(other) == side_by_side
    finally:
        other.dispose()
    assert len(side_by_side["orders"]) == 6 and len(side_by_side["records"]) == 30


def test_each_object_read_side_by_side_counts_its_own_calls(engine: Engine) -> None:
    crm = _crm()
    report = _run(engine, crm)
    calls = {obj: stats.api_calls for obj, stats in report.objects.items()}
    # 2 records a page: 6 accounts, 12 lines, 6 quotes, 2 products, 4 prices
    assert calls == {"product": 1, "price": 2, "quote": 3, "quote_line": 6, "account": 3}
    assert sum(calls.values()) == crm.calls


def test_a_line_read_that_fails_leaves_the_accounts_read_beside_it_pulled(
        engine: Engine) -> None:
    crm = _crm()
    crm.fail = "quote_line"
    report = _run(engine, crm)
    assert report.outcome == "partial"
    assert report.objects["quote_line"].outcome.startswith("failed")
    assert report.objects["account"].outcome == "ok" and report.objects["account"].read == 6
    assert report.handed_off == 0         # no lines read: the quotes wait, refused nowhere
    crm.fail = None
    report = _run(engine, crm)
    assert report.outcome == "ok" and report.handed_off == 6


def test_a_line_read_that_fails_hands_off_no_quote_with_the_lines_known_before(
        engine: Engine) -> None:
    """A draft quote's two lines were pulled; then a third line was added and the quote
    accepted. A run whose quote read saw the acceptance but whose line read failed handed the
    quote off with the two lines billing knew: an order short of the third line (2 + 3 seats
    ordered of 2 + 3 + 7). The quotes wait for a run whose line read completes."""
    crm = _crm()
    crm.account_applied.set()
    for i in range(6):
        crm.put("quote", f"Q{i}", status="Draft")
    assert _run(engine, crm).handed_off == 0
    crm.put("quote_line", "L02", quote_crm_id="Q0", product_crm_id="P1", quantity=Decimal(7))
    crm.put("quote", "Q0", status="Accepted")
    crm.fail = "quote_line"
    report = _run(engine, crm)
    assert report.objects["quote_line"].outcome.startswith("failed")
    assert report.handed_off == 0
    with engine.connect() as conn:
        assert conn.execute(select(orders)).all() == []
        assert set(conn.execute(select(handoffs.c.state)).scalars()) == {"waiting"}
    crm.fail = None
    assert _run(engine, crm).handed_off == 1
    with engine.connect() as conn:
        seats = conn.execute(select(subscriptions.c.quantity)
                             .order_by(subscriptions.c.quantity)).scalars().all()
    assert seats == [1, 2, 7]


def test_an_account_read_that_fails_hands_nothing_off_though_the_lines_were_pulled(
        engine: Engine) -> None:
    crm = _crm()
    crm.fail = "account"
    crm.account_applied.set()
    report = _run(engine, crm)
    assert report.outcome == "partial" and report.handed_off == 0
    assert report.objects["quote_line"].read == 12
    with engine.connect() as conn:
        assert set(conn.execute(select(handoffs.c.state)).scalars()) == {"waiting"}
    crm.fail = None
    assert _run(engine, crm).handed_off == 6


def test_a_budget_stop_while_reading_side_by_side_stops_both_and_the_next_run_finishes(
        engine: Engine) -> None:
    crm = _crm()
    crm.budget_after = 6 + 2        # the catalog and quotes (6 calls), then 2 of 9 beside
    report = _run(engine, crm)
    assert report.outcome == "stopped: API budget" and report.handed_off == 0
    assert {obj: report.objects[obj].outcome for obj in ("quote_line", "account")} == {
        "quote_line": "stopped: API budget", "account": "stopped: API budget"}
    assert not any(t.name.startswith("prefetch-") for t in threading.enumerate())
    assert sum(s.api_calls for s in report.objects.values()) == crm.calls == 8
    crm.budget_after = None
    report = run_cycle(engine, crm, SyncOptions(push=False))
    assert report.outcome == "ok" and report.handed_off == 6
    with engine.connect() as conn:
        assert len(conn.execute(select(orders.c.id)).all()) == 6
