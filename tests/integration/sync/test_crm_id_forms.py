"""One record, one id: a reference between records names its record whatever form of the
CRM's id it is given in (a Salesforce id in its 15- or 18-character form, a GUID in either
case), and a reference that cannot be read holds its quote instead of handing it off short.
On SQLite and PostgreSQL, against the in-memory CRM."""
from __future__ import annotations

from decimal import Decimal

from fake_crm import FakeCRM
from sqlalchemy import func, select

from billing_core.adapters.tables import one_time_charges, orders, subscriptions
from sync.engine import run_cycle
from sync.tables import handoffs, quarantine, sync_records

# Salesforce ids whose 18-character forms were computed by the documented algorithm (case bits
# of each 5-character chunk, first character lowest, index into A-Z0-5).
QUOTE_15, QUOTE_18 = "a0D30000001n7Pi", "a0D30000001n7PiEAI"
ACCOUNT_15, ACCOUNT_18 = "001M000000qfPyS", "001M000000qfPySIAU"
PRODUCT_15, PRODUCT_18 = "a01M00000062mPg", "a01M00000062mPgIAI"


def _crm() -> FakeCRM:
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("account", ACCOUNT_18, name="Initech", currency="USD", country="US",
            credit_limit=Decimal(50000), credit_hold=False)
    crm.put("product", PRODUCT_18, sku="ADDON", name="Add-on", billing_type="One-Time",
            active=True)
    crm.put("price", "PR-ADDON", product_crm_id=PRODUCT_15, currency="USD",
            unit_price=Decimal(7), active=True)
    crm.put("quote", QUOTE_18, account_crm_id=ACCOUNT_18, status="Accepted", revision=1,
            number="Q-77")
    return crm


def _items(engine) -> list[int]:
    with engine.connect() as conn:
        order_ids = conn.execute(select(orders.c.id)).scalars().all()
        return [sum(conn.execute(select(func.count()).select_from(t).where(
            t.c.order_id == o)).scalar() for t in (subscriptions, one_time_charges))
            for o in order_ids]


def test_a_line_naming_its_quote_by_the_15_character_id_is_handed_off_with_it(engine):
    crm = _crm()
    crm.put("quote", QUOTE_18, account_crm_id=ACCOUNT_15)      # its account by the 15 too
    crm.put("quote_line", "L1", quote_crm_id=QUOTE_18, product_crm_id="P1",
            quantity=Decimal(2))
    crm.put("quote_line", "L2", quote_crm_id=QUOTE_15, product_crm_id=PRODUCT_15,
            quantity=Decimal(1))
    crm.put("quote_line", "L3", quote_crm_id=QUOTE_18.lower(), product_crm_id="P2",
            quantity=Decimal(1))
    report = run_cycle(engine, crm)
    assert report.outcome == "ok"
    assert report.handed_off == 1
    assert _items(engine) == [3]            # L1, L2 and L3: none left behind
    with engine.connect() as conn:
        assert conn.execute(select(orders.c.source_ref)).scalar_one() == f"fake:{QUOTE_18}:rev1"
        parents = dict(conn.execute(select(sync_records.c.crm_id, sync_records.c.parent_crm_id)
                                    .where(sync_records.c.object == "quote_line")).all())
        assert parents == {"L1": QUOTE_18, "L2": QUOTE_18, "L3": QUOTE_18}
        assert conn.execute(select(func.count()).select_from(quarantine)).scalar() == 0


def test_a_refused_line_naming_its_quote_by_the_15_character_id_holds_the_quote(engine):
    crm = _crm()
    crm.put("quote_line", "L1", quote_crm_id=QUOTE_18, product_crm_id="P1",
            quantity=Decimal(2))
    crm.put("quote_line", "L2", quote_crm_id=QUOTE_15, product_crm_id="P2",
            quantity=Decimal(-1))
    report = run_cycle(engine, crm)
    assert report.outcome == "partial"
    assert _items(engine) == []             # not handed off without L2
    with engine.connect() as conn:
        held = conn.execute(select(quarantine.c.field, quarantine.c.value).where(
            quarantine.c.crm_id == QUOTE_18)).one()
        assert tuple(held) == ("lines", "L2")
        assert conn.execute(select(handoffs.c.state).where(
            handoffs.c.quote_crm_id == QUOTE_18)).scalar_one() == "waiting"
    crm.put("quote_line", "L2", quantity=Decimal(1))            # fixed in the CRM
    run_cycle(engine, crm)
    assert _items(engine) == [2]


def test_a_line_whose_quote_reference_is_an_object_holds_the_quote_it_names(engine):
    crm = _crm()
    crm.put("quote_line", "L1", quote_crm_id=QUOTE_18, product_crm_id="P1",
            quantity=Decimal(2))
    ref = {"attributes": {"type": "Quote",
                          "url": f"/services/data/v60.0/sobjects/Quote/{QUOTE_18}"},
           "Id": QUOTE_15}
    crm.put("quote_line", "L2", quote_crm_id=ref, product_crm_id="P2", quantity=Decimal(1))
    report = run_cycle(engine, crm)
    assert report.outcome == "partial"
    assert _items(engine) == []
    with engine.connect() as conn:
        entry = conn.execute(select(quarantine.c.field, quarantine.c.value, quarantine.c.reason)
                             .where(quarantine.c.crm_id == "L2")).one()
        assert entry.field == "quote_crm_id" and entry.reason == "is not text (a dict)"
        assert QUOTE_15 in entry.value
        assert tuple(conn.execute(select(quarantine.c.field, quarantine.c.value).where(
            quarantine.c.crm_id == QUOTE_18)).one()) == ("lines", "L2")
    crm.put("quote_line", "L2", quote_crm_id=QUOTE_18)          # fixed in the CRM
    run_cycle(engine, crm)
    assert _items(engine) == [2]


def test_a_dataverse_lookup_as_an_object_or_in_upper_case_names_its_quote(engine):
    quote, other = "6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    acct, p1 = "11111111-2222-4333-8444-555555555555", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    crm = FakeCRM()
    crm.put("account", acct, name="Contoso", currency="USD", credit_limit=Decimal(50000),
            credit_hold=False, _etag='W/"1"')
    crm.put("product", p1, sku="SEAT", name="Seat", billing_type="One-Time", active=True,
            _etag='W/"1"')
    crm.put("price", other, product_crm_id=p1, currency="USD", unit_price=Decimal(10),
            active=True, _etag='W/"1"')
    crm.put("quote", quote, account_crm_id=acct.upper(), status="Accepted", revision=1,
            _etag='W/"1"')
    line1, line2 = "99999999-8888-4777-8666-555555555551", "99999999-8888-4777-8666-555555555552"
    crm.put("quote_line", line1, quote_crm_id=quote.upper(), product_crm_id=p1,
            quantity=Decimal(1), _etag='W/"1"')
    crm.put("quote_line", line2, quote_crm_id={"quoteid": quote}, product_crm_id=p1,
            quantity=Decimal(1), _etag='W/"1"')
    run_cycle(engine, crm)
    assert _items(engine) == []             # waits for the line it cannot read
    with engine.connect() as conn:
        assert conn.execute(select(quarantine.c.field).where(
            quarantine.c.crm_id == line2)).scalar_one() == "quote_crm_id"
        assert tuple(conn.execute(select(quarantine.c.field, quarantine.c.value).where(
            quarantine.c.crm_id == quote)).one()) == ("lines", line2)
    crm.put("quote_line", line2, quote_crm_id=quote)
    run_cycle(engine, crm)
    assert _items(engine) == [2]


def test_a_deletion_named_by_the_15_character_id_deletes_the_record_and_hands_on_its_quote(
        engine):
    from billing_core.adapters.db import UnitOfWork
    from connectors.base import Deletion
    from sync.reconcile import apply_page

    crm = _crm()
    line_15, line_18 = "a0FE000000D6r3F", "a0FE000000D6r3FMAR"
    crm.put("quote", QUOTE_18, status="Draft")
    crm.put("quote_line", line_18, quote_crm_id=QUOTE_18, product_crm_id="P1",
            quantity=Decimal(2))
    run_cycle(engine, crm)
    with UnitOfWork(engine) as uow:     # a deletion named as an event or a text field names it
        res = apply_page(uow, "fake", "quote_line", [], [Deletion(line_15)])
        uow.commit()
    assert res.deleted == 1 and res.quotes_touched == {QUOTE_18}
    with engine.connect() as conn:
        assert conn.execute(select(sync_records.c.deleted_at).where(
            sync_records.c.crm_id == line_18)).scalar_one() is not None
