"""A CRM product change reaches billing's catalog on the next cycle (SQLite and PostgreSQL).

The defect this guards: a changed product was counted as upserted and its hash saved while
nothing reached billing (the service function was probed with ``getattr`` and did not exist),
so a rename or deactivation was never applied nor retried.
"""
from __future__ import annotations

from decimal import Decimal

from fake_crm import FakeCRM
from sqlalchemy import select

from billing_core.adapters.tables import products
from sync.engine import run_cycle
from sync.tables import quarantine


def _crm() -> FakeCRM:
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1")
    crm.put("quote_line", "L1", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(3))
    return crm


def _product(engine, sku: str) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(select(products).where(products.c.sku == sku)).mappings().one())


def test_a_rename_and_a_deactivation_reach_billing(engine):
    crm = _crm()
    run_cycle(engine, crm)
    crm.put("product", "P1", name="Seat licence")
    crm.put("product", "P2", active=False, needs_provisioning=True)
    report = run_cycle(engine, crm)
    assert report.outcome == "ok"
    assert report.stats("product").upserted == 2
    seat, setup = _product(engine, "SEAT"), _product(engine, "SETUP")
    assert (seat["name"], seat["active"]) == ("Seat licence", True)
    assert (setup["active"], setup["needs_provisioning"]) == (False, True)


def test_a_kind_change_of_a_sold_product_is_quarantined_until_undone(engine):
    """P1 is sold (Q1's subscription): billing refuses to make it one-time; the record is
    quarantined, not hashed as applied, and the product stays as sold. Undone in the CRM
    (with a rename), it applies and the quarantine entry resolves."""
    crm = _crm()
    assert run_cycle(engine, crm).handed_off == 1
    crm.put("product", "P1", name="Seat licence", billing_type="One-Time")
    report = run_cycle(engine, crm)
    assert report.outcome == "partial" and report.stats("product").quarantined == 1
    with engine.connect() as conn:
        q = conn.execute(select(quarantine).where(quarantine.c.crm_id == "P1")).mappings().one()
    assert (q["field"], q["value"], q["status"]) == ("kind", "one_time", "open")
    assert (_product(engine, "SEAT")["kind"], _product(engine, "SEAT")["name"]) == \
        ("recurring", "Seat")
    crm.put("product", "P1", billing_type="Recurring")
    assert run_cycle(engine, crm).outcome == "ok"
    assert _product(engine, "SEAT")["name"] == "Seat licence"
    with engine.connect() as conn:
        assert conn.execute(select(quarantine.c.status).where(
            quarantine.c.crm_id == "P1")).scalar() == "resolved"
