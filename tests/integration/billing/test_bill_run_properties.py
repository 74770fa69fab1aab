"""Property-based, through the database (SQLite and PostgreSQL): random subscriptions, quantity
changes and usage, billed month after month. Every stored invoice adds up (total = sum of
rounded lines + their tax), amounts come back as ints and prices/quantities as Decimals (no
float), and a rerun of any bill date bills nothing."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from billing_core.adapters.tables import invoice_lines, invoices
from billing_core.service.orders import change_quantity
from billing_core.service.usage import import_usage

BASE = date(2026, 1, 1)
offsets = st.integers(min_value=0, max_value=80)


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bcd=st.integers(1, 31), currency=st.sampled_from(["USD", "JPY", "BHD"]),
       subs=st.lists(st.tuples(offsets, st.integers(1, 9), st.sampled_from(["monthly", "annual"]),
                               st.lists(st.tuples(st.integers(1, 40), st.integers(1, 9)),
                                        max_size=2)), min_size=1, max_size=3),
       usage=st.lists(st.tuples(offsets, st.integers(0, 3000)), max_size=4))
def test_random_books_add_up_and_rerun_bills_nothing(ledger, bcd, currency, subs, usage) -> None:
    acc = ledger.account(currency=currency, bcd=bcd)
    seat = ledger.product("9.99" if currency != "JPY" else "990", currency=currency)
    calls = ledger.product(None, currency=currency, kind="usage", model="graduated",
                           tiers=[("1000", "0.013"), (None, "0.007")])
    for start_off, qty, freq, changes in subs:
        start = BASE + timedelta(days=start_off)
        sid = ledger.subscribe(acc, seat, qty, start, frequency=freq)
        with ledger.uow() as uow:
            day = start
            for step, new in changes:
                day += timedelta(days=step)
                change_quantity(uow, sid, new, day)
            uow.commit()
    with ledger.uow() as uow:
        import_usage(uow, [{"event_id": f"p{acc}-{i}", "account": str(acc),
                            "product": str(calls), "quantity": str(q),
                            "occurred_at": f"{BASE + timedelta(days=off)}T12:00:00Z"}
                           for i, (off, q) in enumerate(usage)])
        uow.commit()
    for month in range(1, 6):
        day = date(2026, month, 28)
        ledger.run(day)
        assert ledger.run(day).invoices_created == 0
    with ledger.uow() as uow:
        for inv in uow.conn.execute(select(invoices).where(invoices.c.account_id == acc)
                                    ).mappings():
            lines = uow.conn.execute(select(invoice_lines).where(
                invoice_lines.c.invoice_id == inv["id"])).mappings().all()
            assert inv["subtotal_minor"] == sum(ln["amount_minor"] for ln in lines)
            assert inv["tax_minor"] == sum(ln["tax_minor"] for ln in lines)
            assert inv["total_minor"] == inv["subtotal_minor"] + inv["tax_minor"] >= 0
            for ln in lines:
                assert type(ln["amount_minor"]) is int
                assert all(ln[k] is None or isinstance(ln[k], Decimal)
                           for k in ("quantity", "unit_price", "tax_rate"))
