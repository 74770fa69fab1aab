"""The hold state the hand-off sees is at least as fresh as the quote reads that saw the
acceptance (issue 13, item 4): every account read starts after the quote read ended (quote
lines are read beside the accounts), whatever the objects listed, and a run whose account pull
did not complete hands nothing off (its quotes stay owed).
The interleavings themselves are driven against the sandbox in
tests/e2e/test_e2e_hold_interleaving.py."""
from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fake_crm import FakeCRM
from sqlalchemy import Engine, select

from billing_core.adapters.tables import orders, provisioning_requests
from connectors.base import FatalError, Page
from sync.engine import SyncOptions, run_cycle
from sync.tables import handoffs


class Recording(FakeCRM):
    """Records the order of its reads; ``fail_accounts`` makes the account pull fail."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self.fail_accounts = False

    def read_changes(self, obj: str, cursor: str | None, **kw: Any) -> Iterator[Page]:
        self.reads.append(obj)
        if obj == "account" and self.fail_accounts:
            raise FatalError("INVALID_FIELD: account query refused")
        yield from super().read_changes(obj, cursor, **kw)
        self.reads.append(f"{obj}:end")

    def read_one(self, obj: str, crm_id: str) -> dict[str, Any] | None:
        self.reads.append(f"{obj}:one")
        return super().read_one(obj, crm_id)

    def lookup(self, obj: str, field: str, value: Any) -> list[dict[str, Any]]:
        self.reads.append(f"{obj}:lookup")
        return super().lookup(obj, field, value)


def _crm() -> Recording:
    crm = Recording()
    crm.seed_basic()
    return crm


def _accept_quote_after_hold(crm: FakeCRM) -> None:
    crm.put("account", "A2", credit_hold=True)
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1")
    crm.put("quote_line", "L1", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(3))


def _requests(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(provisioning_requests.c.state)).scalars())


@pytest.mark.parametrize("objects", [
    ("account", "quote_line", "quote", "price", "product"), ("quote", "quote_line"), None])
def test_accounts_are_read_after_the_quote_read_ended_whatever_the_objects_listed(
        engine: Engine, objects: tuple[str, ...] | None) -> None:
    crm = _crm()
    run_cycle(engine, crm, SyncOptions(objects=objects, push=False))
    wanted = objects or ("product", "price", "quote", "quote_line")
    one_by_one = [e for o in ("product", "price", "quote") if o in wanted for e in (o, f"{o}:end")]
    assert crm.reads[:len(one_by_one)] == one_by_one
    beside = ["account"] + (["quote_line"] if "quote_line" in wanted else [])
    rest = crm.reads[len(one_by_one):]          # read side by side: in either order
    assert sorted(rest) == sorted(beside + [f"{o}:end" for o in beside])


def test_a_one_account_resync_reads_the_account_after_its_quotes_and_lines(
        engine: Engine) -> None:
    crm = _crm()
    run_cycle(engine, crm)
    _accept_quote_after_hold(crm)
    crm.reads.clear()
    report = run_cycle(engine, crm, SyncOptions(account="A2"))
    assert report.outcome == "ok" and report.handed_off == 1
    assert crm.reads == ["product", "product:end", "price", "price:end", "quote:lookup",
                         "quote_line:lookup", "account:one"]
    assert _requests(engine) == ["awaiting_hold_release"]


def test_a_run_whose_account_pull_fails_hands_off_nothing_and_the_next_run_holds_the_order(
        engine: Engine) -> None:
    crm = _crm()
    run_cycle(engine, crm)
    _accept_quote_after_hold(crm)
    crm.fail_accounts = True
    report = run_cycle(engine, crm)
    assert report.outcome == "partial" and report.handed_off == 0
    with engine.connect() as conn:
        assert conn.execute(select(handoffs.c.state)).scalars().all() == ["waiting"]
        assert conn.execute(select(orders.c.id)).all() == []
    crm.fail_accounts = False
    report = run_cycle(engine, crm)
    assert report.outcome == "ok" and report.handed_off == 1
    with engine.connect() as conn:
        assert conn.execute(select(orders.c.status)).scalar() == "held"
    assert _requests(engine) == ["awaiting_hold_release"]


def test_a_one_account_resync_leaves_other_accounts_owed_quotes_to_a_cycle_that_reads_them(
        engine: Engine) -> None:
    crm = _crm()
    run_cycle(engine, crm)
    crm.put("account", "A1", credit_hold=True)
    crm.put("quote", "Q2", account_crm_id="A1", status="Accepted", revision=1, number="Q-2")
    crm.put("quote_line", "L2", quote_crm_id="Q2", product_crm_id="P1", quantity=Decimal(1))
    crm.fail_accounts = True             # Q2 is owed; A1's hold was not read after it
    run_cycle(engine, crm)
    crm.fail_accounts = False
    _accept_quote_after_hold(crm)
    report = run_cycle(engine, crm, SyncOptions(account="A2"))
    assert report.handed_off == 1
    with engine.connect() as conn:
        assert conn.execute(select(orders.c.source_ref)).scalars().all() == ["fake:Q1:rev1"]
    assert run_cycle(engine, crm).handed_off == 1
    assert _requests(engine) == ["awaiting_hold_release"] * 2
