"""The billing conventions, cent by cent (arithmetic in the comments), on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D

from sqlalchemy import select

from billing_core.adapters.tables import credit_draws, credit_grants, credit_memos
from billing_core.service.orders import change_quantity
from billing_core.service.tax import set_tax_rate
from billing_core.service.usage import import_usage


def test_bcd_31_falls_on_the_last_day_of_february(ledger) -> None:
    acc = ledger.account(bcd=31)
    a = ledger.product("31.00")
    b = ledger.product("28.00")
    ledger.subscribe(acc, a, 1, date(2026, 1, 31))
    ledger.run(date(2026, 1, 31))
    ledger.subscribe(acc, b, 1, date(2026, 2, 14))
    ledger.run(date(2026, 2, 28))
    jan, feb = ledger.invoices(acc)
    assert (jan["period_start"], jan["period_end"]) == (date(2026, 1, 31), date(2026, 2, 28))
    assert (feb["period_start"], feb["period_end"]) == (date(2026, 2, 28), date(2026, 3, 31))
    # a: whole period 31.00; b: started 14 Feb in the period [31 Jan, 28 Feb) of 28 days:
    # 28.00 x 14/28 = 14.00, then the whole period from 28 Feb: 28.00
    assert ledger.amounts(feb) == [("recurring", 3100), ("proration", 1400), ("recurring", 2800)]
    assert feb["total_minor"] == 7300


def test_mid_period_start_is_prorated_on_the_next_invoice(ledger) -> None:
    acc = ledger.account(bcd=1, terms=14)
    p = ledger.product("10.00")
    ledger.subscribe(acc, p, 3, date(2026, 3, 10))
    assert ledger.run(date(2026, 3, 10)).invoices_created == 0   # nothing invoiced on its own
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    # [10 Mar, 1 Apr) = 22 of March's 31 days: 3 x 10.00 x 22/31 = 21.2903... -> 21.29
    # April whole: 3 x 10.00 = 30.00
    assert ledger.amounts(inv) == [("proration", 2129), ("recurring", 3000)]
    assert (inv["total_minor"], inv["status"], inv["number"]) == (5129, "posted", "INV-000001")
    assert (inv["issue_date"], inv["due_date"]) == (date(2026, 4, 1), date(2026, 4, 15))


def test_quantity_increase_and_decrease(ledger) -> None:
    acc = ledger.account(bcd=1)
    p = ledger.product("7.00")
    sub = ledger.subscribe(acc, p, 2, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))                       # April: 2 x 7.00 = 14.00
    with ledger.uow() as uow:
        change_quantity(uow, sub, 5, date(2026, 4, 12))
        change_quantity(uow, sub, 1, date(2026, 4, 21))
        uow.commit()
    ledger.run(date(2026, 5, 1))
    april, may = ledger.invoices(acc)
    assert april["total_minor"] == 1400
    # +3 from 12 Apr: 3 x 7.00 x 19/30 = 13.30 ; -4 from 21 Apr: -4 x 7.00 x 10/30 = -9.333 -> -9.33
    # May at the new quantity 1: 7.00
    assert ledger.amounts(may) == [("proration", 1330), ("proration", -933), ("recurring", 700)]
    assert may["total_minor"] == 1097
    assert ledger.run(date(2026, 5, 2)).invoices_created == 0


def test_annual_subscription_bills_on_its_own_anniversary(ledger) -> None:
    acc = ledger.account(bcd=1)
    p = ledger.product("1200.00", period="year")
    ledger.subscribe(acc, p, 1, date(2026, 3, 10), frequency="annual")
    for day in (date(2026, 3, 15), date(2026, 4, 1), date(2026, 5, 1), date(2027, 3, 1),
                date(2027, 4, 1)):
        ledger.run(day)
    invs = ledger.invoices(acc)
    # the term [2026-03-10, 2027-03-10) on the first invoice on or after 10 March (1 April),
    # the next term on the first invoice on or after 10 March 2027 (1 April 2027)
    assert [(i["period_start"], i["total_minor"]) for i in invs] == [
        (date(2026, 4, 1), 120000), (date(2027, 4, 1), 120000)]
    assert [(ln["period_start"], ln["period_end"]) for ln in invs[1]["lines"]] == [
        (date(2027, 3, 10), date(2028, 3, 10))]


def test_price_change_mid_period_splits_the_line_by_day(ledger) -> None:
    acc = ledger.account(bcd=1)
    p = ledger.product("10.00")
    ledger.price(p, "13.00", date(2026, 4, 16))
    ledger.subscribe(acc, p, 3, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    # April has 30 days: [1, 16) 15 days at 10.00: 3 x 10 x 15/30 = 15.00
    #                    [16, 1 May) 15 days at 13.00: 3 x 13 x 15/30 = 19.50
    assert ledger.amounts(inv) == [("proration", 1500), ("proration", 1950)]


def _usage(ledger, acc, product, quantity, when, eid):
    with ledger.uow() as uow:
        res = import_usage(uow, [{"event_id": eid, "account": str(acc), "product": str(product),
                                  "quantity": quantity, "occurred_at": when}])
        uow.commit()
    return res


def test_graduated_and_volume_usage_tiers(ledger) -> None:
    tiers = [("1000", "0.01"), (None, "0.005")]
    grad = ledger.product(None, kind="usage", model="graduated", tiers=tiers)
    vol = ledger.product(None, kind="usage", model="volume", tiers=tiers)
    acc = ledger.account(bcd=1)
    _usage(ledger, acc, grad, "900", "2026-03-05T10:00:00Z", "g1")
    _usage(ledger, acc, grad, "600", "2026-03-31T23:59:59+00:00", "g2")
    _usage(ledger, acc, vol, "1500", "2026-03-20T00:00:00Z", "v1")
    _usage(ledger, acc, vol, "5", "2026-04-01T00:00:00Z", "v2")    # April: next invoice
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    # graduated 1500: 1000 x 0.01 + 500 x 0.005 = 10.00 + 2.50 = 12.50
    # volume 1500 (above 1000): 1500 x 0.005 = 7.50
    assert sorted(ledger.amounts(inv)) == [("usage", 750), ("usage", 1250)]


def test_jpy_and_bhd_round_to_their_own_minor_units(ledger) -> None:
    with ledger.uow() as uow:
        set_tax_rate(uow, "JP", "", "0.10", date(2020, 1, 1))
        uow.commit()
    yen = ledger.account(currency="JPY", country="JP")
    dinar = ledger.account(currency="BHD")
    py = ledger.product("1000", currency="JPY")
    pb = ledger.product("12.345", currency="BHD")
    ledger.subscribe(yen, py, 1, date(2026, 3, 10))
    ledger.subscribe(dinar, pb, 1, date(2026, 3, 10))
    ledger.run(date(2026, 4, 1))
    [jp] = ledger.invoices(yen)
    [bh] = ledger.invoices(dinar)
    # JPY: 1000 x 22/31 = 709.68 -> 710 yen; April 1000; tax per line 71 + 100
    assert ledger.amounts(jp) == [("proration", 710), ("recurring", 1000)]
    assert (jp["tax_minor"], jp["total_minor"]) == (171, 1881)
    # BHD: 12.345 x 22/31 = 8.76096... -> 8.761 (3 decimals); April 12.345
    assert ledger.amounts(bh) == [("proration", 8761), ("recurring", 12345)]
    assert bh["total_minor"] == 21106


def test_tax_by_region_wins_over_country(ledger) -> None:
    with ledger.uow() as uow:
        set_tax_rate(uow, "US", "", "0.05", date(2020, 1, 1))
        set_tax_rate(uow, "US", "CA", "0.0725", date(2020, 1, 1))
        uow.commit()
    ca = ledger.account(country="US", region="CA")
    ny = ledger.account(country="US", region="NY")
    p = ledger.product("10.15")
    ledger.subscribe(ca, p, 1, date(2026, 4, 1))
    ledger.subscribe(ny, p, 1, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))
    [c] = ledger.invoices(ca)
    [n] = ledger.invoices(ny)
    # CA: 10.15 x 0.0725 = 0.735875 -> 0.74 ; NY (no regional rate): 10.15 x 0.05 = 0.5075 -> 0.51
    assert (c["tax_minor"], c["total_minor"], c["lines"][0]["tax_rate"]) == (74, 1089, D("0.0725"))
    assert (n["tax_minor"], n["total_minor"]) == (51, 1066)


def test_credit_draws_earliest_expiry_first_and_tax_on_the_rest(ledger) -> None:
    with ledger.uow() as uow:
        set_tax_rate(uow, "DE", "", "0.2", date(2020, 1, 1))
        uow.commit()
    acc = ledger.account(currency="EUR", country="DE")
    usage = ledger.product("0.10", currency="EUR", kind="usage")
    grants = {}
    with ledger.uow() as uow:
        for name, amount, expires in (("A", 3000, date(2026, 6, 30)), ("B", 3000, None),
                                      ("C", 4000, date(2026, 5, 31)),
                                      ("D", 2000, date(2026, 3, 15))):
            grants[name] = uow.conn.execute(credit_grants.insert().values(
                account_id=acc, currency="EUR", kind="granted", amount_minor=amount,
                remaining_minor=amount, expires_on=expires, source="test", reason=name,
                created_at=datetime(2026, 1, 1, tzinfo=UTC))).inserted_primary_key[0]
        uow.commit()
    _usage(ledger, acc, usage, "1200", "2026-03-20T12:00:00Z", "u1")
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    # usage 1200 x 0.10 = 120.00. D expired 15 Mar, before the usage (20 Mar) it could pay for:
    # skipped. C (31 May) 40.00, then A (30 Jun) 30.00, then B (no expiry) 30.00 -> 100.00 drawn
    # tax: 120.00 x 0.2 = 24.00 ; -100.00 x 0.2 = -20.00 -> 4.00 = tax on the 20.00 that remains
    assert ledger.amounts(inv) == [("usage", 12000), ("credit_draw", -10000)]
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (2000, 400, 2400)
    with ledger.uow() as uow:
        left = dict(uow.conn.execute(select(credit_grants.c.reason,
                                            credit_grants.c.remaining_minor)).all())
        draws = uow.conn.execute(select(credit_draws.c.grant_id, credit_draws.c.amount_minor)
                                 .order_by(credit_draws.c.id)).all()
    assert left == {"A": 0, "B": 0, "C": 0, "D": 2000}
    assert [tuple(d) for d in draws] == [(grants["C"], 4000), (grants["A"], 3000),
                                         (grants["B"], 3000)]


def test_negative_invoice_becomes_a_credit_memo(ledger) -> None:
    with ledger.uow() as uow:
        set_tax_rate(uow, "FR", "", "0.1", date(2020, 1, 1))
        uow.commit()
    acc = ledger.account(currency="EUR", country="FR")
    p = ledger.product("10.00", currency="EUR")
    sub = ledger.subscribe(acc, p, 10, date(2026, 3, 1))
    ledger.run(date(2026, 3, 1))                       # 100.00 + 10.00 tax
    with ledger.uow() as uow:
        change_quantity(uow, sub, 1, date(2026, 3, 2))
        uow.commit()
    ledger.run(date(2026, 4, 1))
    _march, april = ledger.invoices(acc)
    # -9 x 10.00 x 30/31 = -87.0967 -> -87.10 (tax -8.71) ; April 1 x 10.00 = 10.00 (tax 1.00)
    # total -77.10 - 7.71 = -84.81: carried to a credit memo of 84.81, the invoice ends at 0
    assert ledger.amounts(april) == [("proration", -8710), ("recurring", 1000),
                                     ("credit_memo", 8481)]
    assert (april["subtotal_minor"], april["tax_minor"], april["total_minor"]) == (771, -771, 0)
    with ledger.uow() as uow:
        memo = uow.conn.execute(select(credit_memos)).mappings().one()
    assert (memo["amount_minor"], memo["status"], memo["origin"], memo["origin_invoice_id"]) == (
        8481, "active", "invoice_overflow", april["id"])


def test_tax_inclusive_bill_run_takes_the_tax_out_of_the_priced_amounts(ledger) -> None:
    with ledger.uow() as uow:
        set_tax_rate(uow, "DE", "", "0.19", date(2020, 1, 1))
        uow.commit()
    acc = ledger.account(currency="EUR", country="DE")
    seat = ledger.product("119.00", currency="EUR")
    ledger.subscribe(acc, seat, 2, date(2026, 4, 1))
    ledger.subscribe(acc, seat, 1, date(2026, 4, 1), unit_price="10.00")
    preview = ledger.run(date(2026, 4, 1), dry_run=True, tax_inclusive=True)
    [shown] = preview.invoices
    assert (shown.subtotal_minor, shown.tax_minor, shown.total_minor) == (20840, 3960, 24800)
    assert ledger.invoices(acc) == []                # a dry run writes nothing
    ledger.run(date(2026, 4, 1), tax_inclusive=True)
    [inv] = ledger.invoices(acc)
    # 238.00 holds 38.00; 10.00 holds round(1000 x 0.19 / 1.19) = 1.60
    assert [(ln["amount_minor"], ln["tax_minor"]) for ln in inv["lines"]] == [
        (20000, 3800), (840, 160)]
    assert (inv["subtotal_minor"], inv["tax_minor"], inv["total_minor"]) == (20840, 3960, 24800)
    other = ledger.account(currency="EUR", country="DE")
    ledger.subscribe(other, seat, 2, date(2026, 4, 1))
    ledger.run(date(2026, 4, 1))                     # the default adds the tax on top
    [exclusive] = ledger.invoices(other)
    assert (exclusive["tax_minor"], exclusive["total_minor"]) == (4522, 28322)
