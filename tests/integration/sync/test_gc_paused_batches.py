"""A sync's batches (a page applied, a hand-off page, an outbox refresh chunk) run with the
cyclic collector paused, and leave it on."""
from __future__ import annotations

import gc
from decimal import Decimal

import pytest
from fake_crm import FakeCRM

from sync import engine as sync_engine
from sync import handoff, outbox
from sync.engine import run_cycle


def _spy(monkeypatch: pytest.MonkeyPatch, module: object, name: str,
         seen: dict[str, list[bool]]) -> None:
    real = getattr(module, name)

    def spy(*args, **kwargs):
        seen.setdefault(name, []).append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


def test_pages_hand_off_and_outbox_chunks_run_with_the_collector_paused(engine, monkeypatch):
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1")
    crm.put("quote_line", "L1", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(3))
    seen: dict[str, list[bool]] = {}
    _spy(monkeypatch, sync_engine, "apply_page", seen)       # a page applied
    _spy(monkeypatch, handoff, "_chunk", seen)               # a hand-off chunk
    _spy(monkeypatch, outbox, "account_views", seen)         # an outbox chunk of accounts
    _spy(monkeypatch, outbox, "order_views", seen)           # an outbox page of quotes
    assert gc.isenabled()

    report = run_cycle(engine, crm)

    assert report.outcome == "ok" and report.handed_off == 1
    assert set(seen) == {"apply_page", "_chunk", "account_views", "order_views"}
    assert not any(any(states) for states in seen.values()), seen
    assert gc.isenabled()                                     # on again after the run


def test_a_page_that_fails_leaves_the_collector_on(engine, monkeypatch):
    crm = FakeCRM()
    crm.seed_basic()

    def broken(*args, **kwargs):
        raise RuntimeError("the page failed")

    monkeypatch.setattr(sync_engine, "apply_page", broken)
    report = run_cycle(engine, crm)
    assert report.outcome == "failed" and "the page failed" in (report.error or "")
    assert gc.isenabled()
