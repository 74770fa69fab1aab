"""One sync cycle against the in-memory CRM, on SQLite and PostgreSQL: both sides asserted."""
from __future__ import annotations

import json
from decimal import Decimal

from fake_crm import FakeCRM
from sqlalchemy import func, select

from billing_core.adapters.tables import (
    accounts,
    hold_reasons,
    one_time_charges,
    orders,
    prices,
    products,
    provisioning_requests,
    subscriptions,
)
from sync.engine import SyncOptions, run_cycle
from sync.tables import handoffs, outbox, quarantine, sync_cursors, sync_runs


def _crm() -> FakeCRM:
    crm = FakeCRM()
    crm.seed_basic()
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1")
    crm.put("quote_line", "L1", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(3))
    crm.put("quote_line", "L2", quote_crm_id="Q1", product_crm_id="P2", quantity=Decimal(1))
    return crm


def _scalar(engine, stmt):
    with engine.connect() as conn:
        return conn.execute(stmt).scalar()


def test_first_cycle_pulls_hands_off_and_pushes(engine):
    crm = _crm()
    report = run_cycle(engine, crm)
    assert report.outcome == "ok"
    assert report.handed_off == 1
    with engine.connect() as conn:
        rows = conn.execute(select(accounts.c.ext_id, accounts.c.credit_limit_minor)
                            .order_by(accounts.c.ext_id)).all()
        assert [(r[0], r[1]) for r in rows] == [("A1", 100000), ("A2", 5000000)]
        order = conn.execute(select(orders)).mappings().one()
        assert order["source_ref"] == "fake:Q1:rev1"
        assert order["status"] == "active"
        assert conn.execute(select(func.count()).select_from(provisioning_requests)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(sync_cursors)).scalar() >= 5
    a2 = crm.pushed[("account", "A2")]
    assert a2["billing_hold"] is False
    assert a2["exposure"] == Decimal("400.00")
    assert crm.pushed[("quote", "Q1")]["order_number"] == f"ORD-{order['id']}"


def test_a_no_change_cycle_reads_one_page_per_object_and_writes_nothing(engine):
    crm = _crm()
    run_cycle(engine, crm)
    calls, writes = crm.calls, len(crm.writes)
    report = run_cycle(engine, crm)
    assert crm.calls - calls == 5          # one query per object
    assert len(crm.writes) == writes       # nothing pushed
    assert report.total("upserted") == 0 and report.outcome == "ok"


def test_unchanged_records_cost_nothing_and_changes_apply(engine):
    crm = _crm()
    run_cycle(engine, crm)
    crm.put("account", "A1", name="Acme")            # touched, same content
    crm.put("account", "A2", credit_limit=Decimal(10))
    report = run_cycle(engine, crm)
    stats = report.objects["account"]
    assert (stats.read, stats.unchanged, stats.upserted) == (2, 1, 1)
    assert _scalar(engine, select(accounts.c.credit_limit_minor)
                   .where(accounts.c.ext_id == "A2")) == 1000
    # exposure 400 > limit 10: billing holds the account; the CRM is told
    assert _scalar(engine, select(hold_reasons.c.reason)) == "credit_limit"
    assert crm.pushed[("account", "A2")]["billing_hold"] is True
    assert crm.pushed[("account", "A2")]["billing_hold_reasons"] == "credit_limit"


def test_bad_records_are_quarantined_and_the_page_goes_on(engine):
    crm = _crm()
    crm.put("account", "A3", name="Bad", currency="USD", credit_limit=Decimal(-5))
    crm.put("account", "A4", name="Bad", currency="XXX")
    crm.put("account", "A5", name="NaN limit", currency="USD", credit_limit="lots")
    crm.put("quote_line", "L9", quote_crm_id="Q1", product_crm_id="NOPE", quantity=Decimal(1))
    report = run_cycle(engine, crm)
    assert report.outcome == "partial"
    with engine.connect() as conn:
        q = {r.crm_id: r for r in conn.execute(select(quarantine))}
    # Q1, accepted, is not ordered without its refused line L9: it waits, named with it
    assert set(q) == {"A3", "A4", "A5", "L9", "Q1"}
    assert (q["A3"].field, q["A3"].reason) == ("credit_limit", "must not be negative")
    assert q["A4"].field == "currency" and q["A5"].value == "lots"
    assert q["L9"].reason == "unknown product"
    assert (q["Q1"].field, q["Q1"].value) == ("lines", "L9")
    assert "unknown product" in q["Q1"].reason
    assert _scalar(engine, select(func.count()).select_from(orders)) == 0
    assert _scalar(engine, select(func.count()).select_from(accounts)) == 2
    crm.put("account", "A3", credit_limit=Decimal(5))      # fixed in the CRM
    crm.put("quote_line", "L9", product_crm_id="P1")        # and the line: Q1 goes whole
    run_cycle(engine, crm)
    with engine.connect() as conn:
        assert dict(conn.execute(select(quarantine.c.crm_id, quarantine.c.status).where(
            quarantine.c.crm_id.in_(["A3", "L9"]))).all()) == {"A3": "resolved",
                                                                "L9": "resolved"}
        assert conn.execute(select(func.count()).select_from(accounts)).scalar() == 3
        order = conn.execute(select(orders.c.id)).scalar_one()
        items = [conn.execute(select(func.count()).select_from(t).where(
            t.c.order_id == order)).scalar() for t in (subscriptions, one_time_charges)]
        assert sum(items) == 3          # L1, L2 and L9


def test_a_price_and_a_line_refused_for_their_product_are_applied_once_it_lands(engine):
    """A product refused (a billing frequency billing has not), so its price and the accepted
    quote's line of it are quarantined ("unknown product"). Only the product is fixed in the
    CRM: the price and the line did not change, so no read returns them again, yet both are
    applied from what the quarantine stored when the product lands, and the quote is handed
    off whole in that same cycle."""
    crm = _crm()
    crm.put("product", "P3", sku="ADDON", name="Add-on", billing_type="Recurring",
            billing_frequency="Weekly", active=True)
    crm.put("price", "P3-EUR", product_crm_id="P3", currency="EUR", unit_price=Decimal(7),
            active=True)
    crm.put("quote_line", "L3", quote_crm_id="Q1", product_crm_id="P3", quantity=Decimal(2))
    # refused for itself, not for its product: it waits for a change in the CRM
    crm.put("quote_line", "L4", quote_crm_id="Q9", product_crm_id="P3", quantity=Decimal(-1))
    run_cycle(engine, crm)
    with engine.connect() as conn:
        q = {r.crm_id: r for r in conn.execute(select(quarantine))}
    assert set(q) == {"P3", "P3-EUR", "L3", "L4", "Q1"}
    assert q["P3"].field == "billing_frequency"
    assert [(q[i].field, q[i].reason) for i in ("P3-EUR", "L3")] == [
        ("product_crm_id", "unknown product")] * 2
    assert _scalar(engine, select(func.count()).select_from(orders)) == 0

    crm.put("product", "P3", billing_frequency="Monthly")      # only the product is fixed
    report = run_cycle(engine, crm)
    assert report.handed_off == 1
    with engine.connect() as conn:
        assert dict(conn.execute(select(quarantine.c.crm_id, quarantine.c.status)).all()) == {
            "P3": "resolved", "P3-EUR": "resolved", "L3": "resolved", "Q1": "resolved",
            "L4": "open"}
        assert conn.execute(select(quarantine.c.field, quarantine.c.attempts).where(
            quarantine.c.crm_id == "L4")).one() == ("quantity", 1)
        product = conn.execute(select(products.c.id).where(products.c.sku == "ADDON")
                               ).scalar_one()
        assert conn.execute(select(prices.c.currency, prices.c.unit_price).where(
            prices.c.product_id == product)).all() == [("EUR", Decimal(7))]
        order = conn.execute(select(orders.c.id)).scalar_one()
        assert conn.execute(select(subscriptions.c.quantity).where(
            subscriptions.c.order_id == order, subscriptions.c.product_id == product)
            ).scalar_one() == 2
        items = [conn.execute(select(func.count()).select_from(t).where(
            t.c.order_id == order)).scalar() for t in (subscriptions, one_time_charges)]
        assert sum(items) == 3          # L1, L2 and L3


def test_deleted_account_becomes_crm_deleted(engine):
    crm = _crm()
    run_cycle(engine, crm)
    crm.delete("account", "A1")
    report = run_cycle(engine, crm)
    assert report.objects["account"].deleted == 1
    assert _scalar(engine, select(accounts.c.status).where(accounts.c.ext_id == "A1")) \
        == "crm_deleted"


def _entry(engine, crm_id):
    with engine.connect() as conn:
        return conn.execute(select(quarantine).where(quarantine.c.crm_id == crm_id)
                            ).mappings().one()


def test_a_refused_line_deleted_in_the_crm_lets_its_accepted_quote_go_on(engine):
    """The line never got a bookkeeping row (refused from its first read): its deletion
    closes its entry, and the quote that waited for it is ordered with its other lines."""
    crm = _crm()
    crm.put("quote_line", "L9", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(-3))
    run_cycle(engine, crm)
    assert (_entry(engine, "L9")["status"], _entry(engine, "Q1")["status"]) == ("open", "open")
    assert _scalar(engine, select(func.count()).select_from(orders)) == 0
    crm.delete("quote_line", "L9")
    report = run_cycle(engine, crm)
    assert report.outcome == "ok" and report.handed_off == 1
    line = _entry(engine, "L9")
    assert (line["status"], line["field"]) == ("resolved", "quantity")
    assert line["reason"].startswith("deleted in the CRM; it was refused: ")
    assert _entry(engine, "Q1")["status"] == "resolved"
    with engine.connect() as conn:
        order = conn.execute(select(orders.c.id)).scalar_one()
        items = [conn.execute(select(func.count()).select_from(t).where(
            t.c.order_id == order)).scalar() for t in (subscriptions, one_time_charges)]
    assert sum(items) == 2          # L1 and L2: exactly the lines left


def test_a_refused_account_deleted_in_the_crm_closes_its_quarantine_entry(engine):
    from sync.status import overview

    crm = _crm()
    crm.put("account", "A3", name="", currency="USD")
    run_cycle(engine, crm)
    assert overview(engine, interval_minutes=15)["quarantine_open"] == 1
    crm.delete("account", "A3")
    report = run_cycle(engine, crm)
    assert report.outcome == "ok"
    entry = _entry(engine, "A3")
    assert (entry["status"], entry["field"]) == ("resolved", "name")
    assert entry["reason"] == "deleted in the CRM; it was refused: is required"
    assert overview(engine, interval_minutes=15)["quarantine_open"] == 0
    assert _scalar(engine, select(func.count()).select_from(accounts)
                   .where(accounts.c.ext_id == "A3")) == 0


def test_a_kept_line_refused_later_then_deleted_closes_its_entry_too(engine):
    """A line billing took, then refused on a change (its row stays as it was taken), then
    deleted: the deletion marks the row deleted and closes the entry; the quote goes on."""
    crm = _crm()
    crm.put("quote", "Q1", status="Draft")
    crm.put("quote_line", "L9", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(1))
    run_cycle(engine, crm)
    crm.put("quote_line", "L9", quantity=Decimal(-1))
    crm.put("quote", "Q1", status="Accepted")
    run_cycle(engine, crm)
    assert _entry(engine, "L9")["status"] == "open"
    assert _scalar(engine, select(func.count()).select_from(orders)) == 0
    crm.delete("quote_line", "L9")
    report = run_cycle(engine, crm)
    assert report.objects["quote_line"].deleted == 1 and report.handed_off == 1
    assert _entry(engine, "L9")["status"] == "resolved"


def test_handoff_once_amendment_and_reversal_reported(engine):
    crm = _crm()
    run_cycle(engine, crm)
    crm.put("quote", "Q1", name="touched")                    # same revision: nothing new
    run_cycle(engine, crm)
    assert _scalar(engine, select(func.count()).select_from(orders)) == 1
    crm.put("quote", "Q1", revision=2)
    crm.put("quote_line", "L1", quantity=Decimal(4))
    run_cycle(engine, crm)
    with engine.connect() as conn:
        refs = [r[0] for r in conn.execute(select(orders.c.source_ref).order_by(orders.c.id))]
        assert refs == ["fake:Q1:rev1", "fake:Q1:rev2"]
        amends = conn.execute(select(orders.c.amends_order_id).where(
            orders.c.source_ref == "fake:Q1:rev2")).scalar()
        assert amends is not None
        # the amendment replaces: the deal's one subscription goes 3 -> 4, nothing stacks
        # beside it (this test used to accept a second order of 3 + 1 setup beside the first)
        assert conn.execute(select(subscriptions.c.quantity)).scalars().all() == [4]
        assert conn.execute(select(func.count()).select_from(one_time_charges)).scalar() == 1
    crm.put("quote", "Q1", status="Denied")
    run_cycle(engine, crm)
    with engine.connect() as conn:
        states = {r.revision: r.state for r in conn.execute(select(handoffs))}
        assert states[2] == "reversed_in_crm"
        assert conn.execute(select(func.count()).select_from(orders)).scalar() == 2
        assert conn.execute(select(orders.c.status).where(orders.c.id == amends)).scalar() \
            != "cancelled"


def test_quote_of_unpulled_account_fetches_it_or_quarantines(engine):
    crm = _crm()
    crm.put("account", "A9", name="Late", currency="USD")
    run_cycle(engine, crm, SyncOptions(objects=("product", "price", "quote", "quote_line")))
    assert _scalar(engine, select(orders.c.source_ref)) == "fake:Q1:rev1"   # A2 fetched by id
    crm.put("quote", "Q2", account_crm_id="GHOST", status="Accepted")
    crm.put("quote_line", "L3", quote_crm_id="Q2", product_crm_id="P1", quantity=Decimal(1))
    run_cycle(engine, crm)
    assert _scalar(engine, select(quarantine.c.reason).where(quarantine.c.crm_id == "Q2")) \
        == "unknown account"


def test_push_failures_back_off_then_dead_letter(engine):
    crm = _crm()
    crm.fail_write["A1"] = "Open_Balance__c: value too large"
    run_cycle(engine, crm, SyncOptions(push_max_attempts=1))
    with engine.connect() as conn:
        row = conn.execute(select(outbox).where(outbox.c.crm_id == "A1")).mappings().one()
    assert row["state"] == "dead" and "value too large" in row["last_error"]
    assert ("account", "A2") in crm.pushed


def test_budget_stop_is_its_own_outcome_and_resumes(engine):
    crm = _crm()
    crm.budget_after = 2
    report = run_cycle(engine, crm)
    assert report.outcome == "stopped: API budget"
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs)).mappings().one()
    assert run["outcome"] == "stopped: API budget"
    crm.budget_after = None
    report = run_cycle(engine, crm)
    assert report.outcome == "ok"
    assert _scalar(engine, select(func.count()).select_from(orders)) == 1


def test_full_resync_reports_what_disappeared(engine):
    crm = _crm()
    run_cycle(engine, crm)
    crm.rows["account"].pop("A1")                 # gone without a delete log entry
    report = run_cycle(engine, crm, SyncOptions(full=True))
    assert "account:A1" in report.disappeared
    assert _scalar(engine, select(accounts.c.status).where(accounts.c.ext_id == "A1")) \
        == "crm_deleted"


def test_outbox_sends_only_changed_fields(engine):
    crm = _crm()
    run_cycle(engine, crm)
    crm.writes.clear()
    crm.put("account", "A1", credit_limit=Decimal(2000))
    run_cycle(engine, crm)
    sent = [u for obj, chunk in crm.writes for u in chunk if obj == "account"]
    assert sent == [{"crm_id": "A1", "available_credit": Decimal("2000.00")}]
    with engine.connect() as conn:
        row = conn.execute(select(outbox).where(outbox.c.crm_id == "A1")).mappings().one()
    assert row["state"] == "acked" and json.loads(row["acked_payload"])["available_credit"] \
        == "2000.00"


def test_opt_in_hold_flag_is_set_for_billing_reasons_and_cleared_only_when_billing_set_it(
        engine):
    from billing_core.adapters.tables import hold_history
    crm = _crm()
    crm.put("account", "A1", credit_hold=True)               # finance's own hold
    opts = SyncOptions(write_crm_hold=True)
    run_cycle(engine, crm, opts)
    crm.put("account", "A2", credit_limit=Decimal(10))     # billing's reason
    run_cycle(engine, crm, opts)
    assert crm.rows["account"]["A2"][1]["credit_hold"] is True
    assert "credit_hold" not in crm.pushed[("account", "A1")]
    run_cycle(engine, crm, opts)                             # the echo is not finance's hold
    crm.put("account", "A2", credit_limit=Decimal(100000))
    run_cycle(engine, crm, opts)
    run_cycle(engine, crm, opts)
    assert crm.rows["account"]["A2"][1]["credit_hold"] is False
    assert crm.rows["account"]["A1"][1]["credit_hold"] is True
    with engine.connect() as conn:
        a2 = conn.execute(select(accounts.c.id).where(accounts.c.ext_id == "A2")).scalar()
        reasons = {r[0] for r in conn.execute(select(hold_history.c.reason).where(
            hold_history.c.account_id == a2))}
        assert reasons == {"credit_limit"}
        assert conn.execute(select(func.count()).select_from(hold_reasons).where(
            hold_reasons.c.account_id == a2)).scalar() == 0


def test_shutdown_finishes_the_page_in_hand_and_the_next_run_goes_on(engine):
    crm = _crm()
    crm.page_size = 1
    from sync.engine import Cycle
    pages = []
    report = Cycle(engine, crm, SyncOptions(objects=("account",)),
                   should_stop=lambda: len(pages) >= 1,
                   progress=lambda obj, n: pages.append(obj)).run()
    assert report.outcome == "stopped: shutdown"
    assert _scalar(engine, select(func.count()).select_from(accounts)) == 1
    report = run_cycle(engine, crm)
    assert report.outcome == "ok"
    assert report.objects["account"].read == 1        # resumed after the committed page
    assert _scalar(engine, select(func.count()).select_from(accounts)) == 2


def test_a_crm_that_refuses_every_read_is_a_failed_run(engine):
    from connectors.base import AuthError
    crm = _crm()

    def refuse(*_a, **_k):
        raise AuthError("INVALID_SESSION_ID: session refused again after one re-login")
    crm.read_changes = refuse
    report = run_cycle(engine, crm)
    assert report.outcome == "failed"
    assert "INVALID_SESSION_ID" in report.error


def test_an_account_billing_refuses_is_quarantined_alone(engine):
    """The page's accounts go to billing in one bulk upsert: a currency change of an account
    with invoices is refused for that account only; the rest of the page applies."""
    from datetime import date

    from sqlalchemy import insert

    from billing_core.adapters.tables import invoices

    crm = _crm()
    run_cycle(engine, crm)
    with engine.begin() as conn:
        a1 = conn.execute(select(accounts.c.id).where(accounts.c.ext_id == "A1")).scalar_one()
        conn.execute(insert(invoices).values(
            account_id=a1, currency="USD", series="INV", number="T-1", status="posted",
            period_start=date(2026, 1, 1), period_end=date(2026, 2, 1),
            issue_date=date(2026, 2, 1), due_date=date(2099, 3, 1), subtotal_minor=100,
            tax_minor=0, total_minor=100, applied_minor=0, created_at=func.now(),
            posted_at=func.now()))
    crm.put("account", "A1", currency="EUR")
    crm.put("account", "A2", credit_limit=Decimal(123))
    report = run_cycle(engine, crm)
    stats = report.objects["account"]
    assert (stats.read, stats.quarantined, stats.upserted) == (2, 1, 1)
    assert report.outcome == "partial"
    with engine.connect() as conn:
        q = conn.execute(select(quarantine).where(quarantine.c.crm_id == "A1")).mappings().one()
        assert (q["field"], q["value"], q["status"]) == ("currency", "EUR", "open")
        rows = dict(conn.execute(select(accounts.c.ext_id, accounts.c.currency)).all())
        assert rows == {"A1": "USD", "A2": "EUR"}
        assert conn.execute(select(accounts.c.credit_limit_minor)
                            .where(accounts.c.ext_id == "A2")).scalar() == 12300


def test_a_hand_off_that_runs_out_of_budget_keeps_the_ones_before_it(engine):
    """Hand-offs share a transaction per chunk: the quote whose account fetch spends the budget
    is undone alone, the quote handed off before it stays."""
    crm = _crm()
    crm.put("quote", "Q2", account_crm_id="GHOST", status="Accepted", revision=1)
    crm.put("quote_line", "L3", quote_crm_id="Q2", product_crm_id="P1", quantity=Decimal(1))
    crm.budget_after = 5                   # the five pulls; Q2's account fetch is refused
    report = run_cycle(engine, crm)
    assert report.outcome == "stopped: API budget"
    with engine.connect() as conn:
        assert conn.execute(select(orders.c.source_ref)).scalars().all() == ["fake:Q1:rev1"]
        # Q2 stays owed (a waiting row written with its page) for the next run
        assert sorted(conn.execute(select(handoffs.c.quote_crm_id, handoffs.c.state)).all()) \
            == [("Q1", "done"), ("Q2", "waiting")]


def test_an_order_billing_refuses_waits_alone_and_goes_through_once_fixed(engine):
    """The chunk's orders go through the gate together; billing refusing one (no price in the
    account's currency) leaves that quote waiting with the reason, the others are placed."""
    crm = _crm()
    crm.put("product", "P3", sku="ADDON", name="Add-on", billing_type="Recurring",
            billing_frequency="Monthly", active=True)
    crm.put("price", "P3-USD", product_crm_id="P3", currency="USD", unit_price=Decimal(20),
            active=True)
    crm.put("quote", "Q2", account_crm_id="A2", status="Accepted", revision=1, number="Q-2")
    crm.put("quote_line", "L3", quote_crm_id="Q2", product_crm_id="P3", quantity=Decimal(1))
    crm.put("quote", "Q3", account_crm_id="A1", status="Accepted", revision=1, number="Q-3")
    crm.put("quote_line", "L4", quote_crm_id="Q3", product_crm_id="P3", quantity=Decimal(2))
    report = run_cycle(engine, crm)
    assert report.handed_off == 2
    with engine.connect() as conn:
        states = {r.quote_crm_id: (r.state, r.detail) for r in conn.execute(select(handoffs))}
        refs = sorted(r[0] for r in conn.execute(select(orders.c.source_ref)))
    assert refs == ["fake:Q1:rev1", "fake:Q3:rev1"]
    assert states["Q2"][0] == "waiting"
    assert states["Q2"][1].startswith("billing refused the order:") and "EUR" in states["Q2"][1]
    crm.put("price", "P3-EUR", product_crm_id="P3", currency="EUR", unit_price=Decimal(18),
            active=True)
    assert run_cycle(engine, crm).handed_off == 1
    assert _scalar(engine, select(func.count()).select_from(orders)) == 3
    assert _scalar(engine, select(handoffs.c.state).where(handoffs.c.quote_crm_id == "Q2")) \
        == "done"


def test_the_cycle_notes_only_the_quotes_the_hand_off_will_act_on(engine, monkeypatch):
    """Drafts and their lines are judged when their page is applied and never given to the
    hand-off; an accepted quote is owed, and a handed-off one whose line changed is noted to be
    looked at again (``handoff_looks``). The hand-off reads both from the database (the run
    holds none of them), and each look is deleted once the hand-off looked at it."""
    from sync import handoff
    from sync.engine import Cycle
    from sync.tables import handoff_looks
    pages: list[list[str]] = []
    real = handoff.due

    def spy(engine_, connection, size=handoff.HANDOFF_PAGE):
        for page in real(engine_, connection, size):
            pages.append(list(page))
            yield page

    monkeypatch.setattr(handoff, "due", spy)
    crm = _crm()
    for n in range(30):
        crm.put("quote", f"D{n}", account_crm_id="A1", status="Draft", revision=1)
        crm.put("quote_line", f"DL{n}", quote_crm_id=f"D{n}", product_crm_id="P1",
                quantity=Decimal(1))
    first = Cycle(engine, crm, SyncOptions())
    assert first.run().handed_off == 1
    assert pages == [["Q1"]] and first.quotes == set()
    crm.put("quote_line", "L2", quote_crm_id="Q1", product_crm_id="P2", quantity=Decimal(2))
    crm.put("quote_line", "DL3", quote_crm_id="D3", product_crm_id="P1", quantity=Decimal(5))
    pages.clear()
    Cycle(engine, crm, SyncOptions()).run()
    assert pages == [["Q1"]]
    assert _scalar(engine, select(func.count()).select_from(handoff_looks)) == 0
    pages.clear()
    assert run_cycle(engine, crm).handed_off == 0
    assert pages == []


def test_a_quote_field_billing_does_not_map_is_not_a_change(engine):
    """Quotes are hashed over the stored mapped value: the order number billing pushed back
    (or any unmapped field) changing in the CRM writes nothing; a mapped field does."""
    crm = _crm()
    run_cycle(engine, crm)
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1",
            order_number="ORD-1", provisioning_status="active")
    quiet = run_cycle(engine, crm).stats("quote")
    assert (quiet.read, quiet.unchanged, quiet.upserted) == (1, 1, 0)
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1b")
    changed = run_cycle(engine, crm).stats("quote")
    assert (changed.unchanged, changed.upserted) == (0, 1)


def test_a_refresh_in_pages_of_one_covers_every_account_and_quote(engine):
    """The outbox refresh pages through accounts and hand-offs by key: pages of one row give
    exactly the rows one page of all gives (amended quotes included)."""
    from datetime import UTC, datetime

    from sync.outbox import refresh
    crm = _crm()
    for n in range(3, 8):
        crm.put("account", f"A{n}", name=f"Co {n}", currency="USD", country="US",
                credit_limit=Decimal(100000), credit_hold=False)
        crm.put("quote", f"Q{n}", account_crm_id=f"A{n}", status="Accepted", revision=1)
        crm.put("quote_line", f"L{n}", quote_crm_id=f"Q{n}", product_crm_id="P1",
                quantity=Decimal(n))
    run_cycle(engine, crm)
    crm.put("quote", "Q1", revision=2)
    run_cycle(engine, crm)

    def rows():
        with engine.connect() as conn:
            return sorted((r.object, r.crm_id, r.payload) for r in conn.execute(select(outbox)))

    expected = rows()
    assert len([r for r in expected if r[0] == "account"]) == 7
    assert len([r for r in expected if r[0] == "quote"]) == 6
    with engine.begin() as conn:
        conn.execute(outbox.delete())
    refresh(engine, "fake", datetime.now(UTC), full=True, chunk=1)
    assert rows() == expected


def test_a_refresh_shows_an_amended_quotes_newest_order_once(engine):
    """Both revisions of an amended quote are handed off; a refresh that (re)creates the
    quote's outbox row wrote it once per revision in one statement and failed on the unique
    key, so nothing of the refresh committed. It writes the newest revision's order."""
    from datetime import UTC, datetime

    from sync.outbox import refresh
    crm = _crm()
    run_cycle(engine, crm)
    crm.put("quote", "Q1", revision=2)
    run_cycle(engine, crm)
    with engine.begin() as conn:
        conn.execute(outbox.delete())
        newest = conn.execute(select(orders.c.id).where(
            orders.c.source_ref == "fake:Q1:rev2")).scalar_one()
    refresh(engine, "fake", datetime.now(UTC), full=True)
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.ledger_id, outbox.c.payload).where(
            outbox.c.object == "quote", outbox.c.crm_id == "Q1")).all()
    assert [(r.ledger_id, json.loads(r.payload)["order_number"]) for r in rows] == [
        (newest, f"ORD-{newest}")]


def test_an_incremental_refresh_reads_the_hand_offs_of_the_changed_accounts(engine):
    from datetime import UTC, datetime

    from sync.outbox import refresh
    crm = _crm()
    crm.put("quote", "Q2", account_crm_id="A1", status="Accepted", revision=1)
    crm.put("quote_line", "L9", quote_crm_id="Q2", product_crm_id="P1", quantity=Decimal(1))
    run_cycle(engine, crm)
    with engine.begin() as conn:
        conn.execute(outbox.delete().where(outbox.c.object == "quote"))
        a2 = conn.execute(select(accounts.c.id).where(accounts.c.ext_id == "A2")).scalar_one()
    refresh(engine, "fake", datetime.now(UTC), only_accounts=[a2])
    with engine.connect() as conn:
        quotes = [r[0] for r in conn.execute(select(outbox.c.crm_id).where(
            outbox.c.object == "quote"))]
    assert quotes == ["Q1"]                 # A2's quote; A1's Q2 was not asked for


def test_the_run_reports_and_logs_the_wall_time_of_its_phases(engine, monkeypatch, caplog):
    ticks = iter(range(1_000))
    monkeypatch.setattr("sync.engine._timer", lambda: float(next(ticks)))
    crm = _crm()
    with caplog.at_level("INFO", logger="sync.engine"):
        report = run_cycle(engine, crm)
    # each phase reads the stopwatch twice: one tick each, in the order the run takes them
    assert report.phases == {"pull": 1.0, "handoff": 1.0, "outbox": 1.0, "push": 1.0}
    assert report.as_dict()["phases"] == report.phases
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("sync run="))
    assert line.endswith("seconds=pull:1.0,handoff:1.0,outbox:1.0,push:1.0")

    report = run_cycle(engine, crm, SyncOptions(push=False))
    assert list(report.phases) == ["pull", "handoff", "outbox"]     # no push, no push phase


def test_pushed_exposure_follows_include_unbilled_orders(engine):
    """CREDIT_CONTROL 'Exposure': with ``include_unbilled_orders = false`` the accepted order
    of Q1 (400.00, not billed yet) is no exposure; the CRM is sent what credit control
    decides on: exposure 0.00, available credit the whole 50,000.00 limit."""
    crm = _crm()
    run_cycle(engine, crm, SyncOptions(include_unbilled=False))
    a2 = crm.pushed[("account", "A2")]
    assert (a2["exposure"], a2["available_credit"]) == (Decimal("0.00"), Decimal("50000.00"))
