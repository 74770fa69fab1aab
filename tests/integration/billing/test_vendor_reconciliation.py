"""Vendor reconciliation (issue 19 item 5), figures worked by hand.

The ledger (USD, tax-exempt, bill cycle day 1, bill run on 2026-03-01, March billed in advance):
- Alpha (mapped: customer aaaa0a0a-...): Basic x 10 @ 12.00 = 120.00, Premium x 5 @ 25.00 =
  125.00, Phone x 2 @ 8.00 = 16.00, Consulting x 1 @ 100.00 (not a vendor product);
- Beta (CRM id = its tenant id bbbb1b1b-..., no mapping): Basic x 3 = 36.00, Phone x 4 = 32.00.
Products: Basic sku CFQ7TTC0LH18:0001 and Premium sku CFQ7TTC0LCHC:0002 (Partner Center's
ids); Phone sku PHONE, mapped from ProductId CFQ7TTC0J1FV.

tests/data/partner_center_recon_2026_03.csv (Subtotal = cost), tolerance 1.00:
- line 2 Alpha Basic 10, 100.00  -> matched: margin 120.00 - 100.00 = 20.00 (16.67 %)
- line 3 Alpha Premium 6, 132.00 -> mismatched: 5 vs 6 seats, -1 x 132.00 / 6 = -22.00;
  margin 125.00 - 132.00 = -7.00 (-5.60 %), a loss over 1.00
- line 4 Beta Basic 3, 30.00     -> matched: margin 6.00 (16.67 %)
- line 5 Beta Phone 4, 32.40     -> matched: margin -0.40 (-1.25 %), within 1.00
- line 6 Gamma (no account)      -> unmatched no_account, 50.00
- line 7 Alpha Visio (no product) -> unmatched no_product, 9.99
- line 8 Subtotal "12,5x"        -> refused (row 8, Subtotal)
- line 9 Beta Premium 1, 22.00   -> unmatched not_billed (we billed Beta no Premium)
- Alpha Phone 2, 16.00, no vendor line -> ours_only
Summary: matched 3 (billed 120 + 36 + 32 = 188.00, cost 100 + 30 + 32.40 = 162.40),
mismatched 1 (125.00 / 132.00), ours_only 1 (16.00 / 0), unmatched 3 (cost 50 + 9.99 + 22 =
81.99); exceptions 5.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from billing_core.adapters.tables import vendor_imports, vendor_lines
from billing_core.domain.errors import NotFound, ValidationError
from billing_core.service import vendor_reconciliation as vr
from billing_core.service.accounts import AccountIn, create_account
from billing_core.service.pricing import ProductIn, add_product, set_price

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "partner_center_recon_2026_03.csv"
ALPHA = "aaaa0a0a-1111-4a4a-8a8a-aaaaaaaaaaaa"
BETA = "bbbb1b1b-2222-4b4b-9b9b-bbbbbbbbbbbb"
TOL = vr.Tolerance(minor=100)


def _account(ledger, name: str, ext_id: str, number: str | None = None) -> int:
    with ledger.uow() as uow:
        acc = create_account(uow, AccountIn(name=name, currency="USD", ext_id=ext_id,
                                            number=number, tax_exempt=True))
        uow.commit()
    return acc


def _product(ledger, sku: str, price: str) -> int:
    with ledger.uow() as uow:
        pid = add_product(uow, ProductIn(sku=sku, name=sku, kind="recurring",
                                         billing_period="month"))
        set_price(uow, pid, "USD", date(2020, 1, 1), price)
        uow.commit()
    return pid


@pytest.fixture
def csp(ledger):
    """The ledger above, billed for March 2026."""
    alpha = _account(ledger, "Alpha Corp", "001ALPHA")
    beta = _account(ledger, "Beta LLC", BETA)
    basic = _product(ledger, "CFQ7TTC0LH18:0001", "12.00")
    premium = _product(ledger, "CFQ7TTC0LCHC:0002", "25.00")
    phone = _product(ledger, "PHONE", "8.00")
    consulting = _product(ledger, "CONSULTING", "100.00")
    start = date(2026, 3, 1)
    for acc, prod, qty in ((alpha, basic, 10), (alpha, premium, 5), (alpha, phone, 2),
                           (alpha, consulting, 1), (beta, basic, 3), (beta, phone, 4)):
        ledger.subscribe(acc, prod, qty, start)
    ledger.run(start)
    with ledger.uow() as uow:
        vr.set_mapping(uow, "customer", ALPHA, "001ALPHA")
        vr.set_mapping(uow, "product", "CFQ7TTC0J1FV", "PHONE")
        uow.commit()
    return {"alpha": alpha, "beta": beta, "basic": basic, "premium": premium, "phone": phone,
            "consulting": consulting}


def _reconcile(ledger, data: bytes, period: str = "2026-03", tol: vr.Tolerance = TOL) -> dict:
    with ledger.uow() as uow:
        report = vr.reconcile_vendor_file(uow, data, period=period, file_name="recon.csv",
                                          tolerance=tol)
        uow.commit()
    return report


def _groups(report: dict) -> list[tuple]:
    return [(g["account_id"], g["product_id"], g["status"], g["reasons"], g["our_quantity"],
             g["vendor_quantity"], g["billed_minor"], g["cost_minor"], g["margin_minor"],
             g["margin_percent"], g["difference_minor"]) for g in report["groups"]]


def test_report_worked_by_hand(ledger, csp) -> None:
    a, b = csp["alpha"], csp["beta"]
    report = _reconcile(ledger, SAMPLE.read_bytes())
    assert _groups(report) == [
        (a, csp["basic"], "matched", [], "10", "10", 12000, 10000, 2000, "16.67", 0),
        (a, csp["premium"], "mismatched", ["quantity", "negative_margin"], "5", "6",
         12500, 13200, -700, "-5.60", -2200),
        (a, csp["phone"], "ours_only", [], "2", "0", 1600, 0, 1600, "100.00", 1600),
        (b, csp["basic"], "matched", [], "3", "3", 3600, 3000, 600, "16.67", 0),
        (b, csp["phone"], "matched", [], "4", "4", 3200, 3240, -40, "-1.25", 0),
    ]
    assert [(u["row"], u["reason"], u["account_id"], u["cost_minor"])
            for u in report["unmatched"]] == [
        (6, "no_account", None, 5000), (7, "no_product", a, 999),
        (9, "not_billed", b, 2200)]
    assert report["errors"] == [{"row": 8, "field": "Subtotal", "value": "12,5x",
                                 "message": "is not a number"}]
    assert (report["rows_read"], report["rows_refused"], report["exceptions"]) == (8, 1, 5)
    s = report["summary"]
    assert {k: (v["count"], v["amounts"]) for k, v in s.items()} == {
        "matched": (3, {"USD": {"billed_minor": 18800, "cost_minor": 16240}}),
        "mismatched": (1, {"USD": {"billed_minor": 12500, "cost_minor": 13200}}),
        "unmatched": (3, {"USD": {"billed_minor": 0, "cost_minor": 8199}}),
        "ours_only": (1, {"USD": {"billed_minor": 1600, "cost_minor": 0}}),
    }
    # the stored report is the same figures (JSON)
    with ledger.uow() as uow:
        stored = vr.stored_report(uow.conn, "2026-03")
    assert _groups(stored) == _groups(report) and stored["summary"] == s
    # as CSV for finance: major units
    text = vr.report_csv(report)
    assert "mismatched,quantity negative_margin" in text and ",125.00,132.00,-7.00," in text


def test_tolerance_percent_and_zero(ledger, csp) -> None:
    """Beta Phone's 0.40 loss is listed with no tolerance; 6 % of Alpha Premium's 132.00 cost
    (7.92) covers its 7.00 loss but not its 22.00 seat."""
    strict = _reconcile(ledger, SAMPLE.read_bytes(), tol=vr.Tolerance())
    phone = [g for g in strict["groups"] if g["account_id"] == csp["beta"]
             and g["product_id"] == csp["phone"]][0]
    assert (phone["status"], phone["reasons"]) == ("mismatched", ["negative_margin"])
    loose = _reconcile(ledger, SAMPLE.read_bytes(), tol=vr.Tolerance(0, Decimal("6")))
    premium = [g for g in loose["groups"] if g["product_id"] == csp["premium"]][0]
    assert (premium["reasons"], premium["tolerance_minor"]) == (["quantity"], 792)


def test_reimport_is_idempotent_and_another_file_replaces_the_period(ledger, csp) -> None:
    data = SAMPLE.read_bytes()
    first = _reconcile(ledger, data)
    again = _reconcile(ledger, data)
    assert (first["unchanged"], again["unchanged"]) == (False, True)
    assert again["import_id"] == first["import_id"]
    assert _groups(again) == _groups(first) and again["summary"] == first["summary"]
    with ledger.uow() as uow:
        assert uow.conn.execute(select(func.count()).select_from(vendor_lines)).scalar() == 7
    # the vendor's corrected file (Alpha Premium at 5 seats): replaces the period's import
    fixed = data.replace(b"cycleCharge,22,6,132.00,0,132.00", b"cycleCharge,22,5,110.00,0,110.00"
                         ).replace(b"Licenses,alt-2,6,", b"Licenses,alt-2,5,")
    third = _reconcile(ledger, fixed)
    assert third["import_id"] != first["import_id"] and not third["unchanged"]
    premium = [g for g in third["groups"] if g["product_id"] == csp["premium"]][0]
    assert (premium["status"], premium["vendor_quantity"], premium["cost_minor"],
            premium["margin_minor"]) == ("matched", "5", 11000, 1500)
    assert third["summary"]["matched"]["count"] == 4
    with ledger.uow() as uow:
        rows = uow.conn.execute(select(vendor_imports.c.id, vendor_imports.c.status)
                                .order_by(vendor_imports.c.id)).all()
        assert [r.status for r in rows] == ["superseded", "current"]
        # the report counts the current import's lines only: 7 + 7 stored, 7 reported
        assert uow.conn.execute(select(func.count()).select_from(vendor_lines)).scalar() == 14
        assert vr.stored_report(uow.conn, "2026-03")["import_id"] == third["import_id"]


def test_mapping_precedence(ledger, csp) -> None:
    """subscription mapping > customer mapping > CRM id / number; product mapping of
    ProductId:SkuId > of ProductId > sku."""
    other = _account(ledger, "Other", "001OTHER", number="alpha.onmicrosoft.com")
    header = ("CustomerId,CustomerDomainName,SubscriptionId,ProductId,SkuId,BillableQuantity,"
              "Subtotal,Currency\n")
    rows = [f"{ALPHA},alpha.onmicrosoft.com,sub-x,CFQ7TTC0LH18,0001,10,100.00,USD",  # 2
            f"{BETA},,sub-y,CFQ7TTC0J1FV,0009,4,32.00,USD",                          # 3
            "dddd,alpha.onmicrosoft.com,,CFQ7TTC0LH18,0001,1,10.00,USD"]             # 4
    data = (header + "\n".join(rows) + "\n").encode()
    report = _reconcile(ledger, data)
    got = {(g["account_id"], g["product_id"]): g["vendor_rows"] for g in report["groups"]}
    assert got[(csp["alpha"], csp["basic"])] == [2]           # customer mapping
    assert got[(csp["beta"], csp["phone"])] == [3]            # CRM id; product by ProductId
    assert [(u["row"], u["account_id"], u["reason"]) for u in report["unmatched"]] == [
        (4, other, "not_billed")]                             # CRM number = domain name
    with ledger.uow() as uow:
        beta_sub = ledger.subscribe(csp["beta"], csp["basic"], 1, date(2026, 4, 1))
        vr.set_mapping(uow, "subscription", "sub-x", str(beta_sub))   # beats the customer's
        vr.set_mapping(uow, "product", "CFQ7TTC0J1FV:0009", "CFQ7TTC0LCHC:0002")  # beats ProductId
        uow.commit()
    report = _reconcile(ledger, data)
    got = {(g["account_id"], g["product_id"]): g["vendor_rows"] for g in report["groups"]}
    assert got[(csp["beta"], csp["basic"])] == [2]
    assert [(u["row"], u["account_id"], u["product_id"], u["reason"])
            for u in report["unmatched"]][0] == (3, csp["beta"], csp["premium"], "not_billed")
    with ledger.uow() as uow:
        listed = vr.list_mappings(uow.conn)
    assert [(m["kind"], m["vendor_key"]) for m in listed] == [
        ("customer", ALPHA), ("product", "CFQ7TTC0J1FV"), ("product", "CFQ7TTC0J1FV:0009"),
        ("subscription", "sub-x")]


def test_bad_rows_and_bad_files(ledger, csp) -> None:
    header = "customerid,PRODUCTID,SkuId,Quantity,Subtotal,Currency,ChargeStartDate,Extra\n"
    body = ("x,p,s,1,1.00,USD,3/1/2026,ignored\n"
            ",p,s,1,1.00,USD,,\n"
            "x,p,s,one,1.00,USD,,\n"
            "x,p,s,1,1.00,XXX,,\n"
            "x,p,s,1,1.00,USD,2026-02-30,\n"
            "\n"
            "x,p,s,1,-2.50,USD,2026-03-01 00:00:00,\n"
            "x,p,s,2,0,USD,3/2/2026 12:00:00 AM,\n")
    parsed = vr.read_vendor_csv((header + body).encode("utf-8-sig"))
    assert [(e["row"], e["field"], e["value"]) for e in parsed.errors] == [
        (3, "CustomerId", ""), (4, "Quantity", "one"), (5, "Currency", "XXX"),
        (6, "ChargeStartDate", "2026-02-30")]
    assert [(ln["row_no"], ln["quantity"], ln["subtotal_minor"], ln["charge_start"])
            for ln in parsed.lines] == [(2, Decimal(1), 100, date(2026, 3, 1)),
                                        (8, Decimal(-1), -250, date(2026, 3, 1)),
                                        (9, Decimal(2), 0, date(2026, 3, 2))]
    with pytest.raises(ValidationError) as info:
        vr.read_vendor_csv(b"CustomerId,ProductId,SkuId,Currency\nx,p,s,USD\n")
    assert info.value.field == "columns" and "Subtotal, BillableQuantity" in str(info.value)
    with pytest.raises(ValidationError):
        vr.read_vendor_csv(b"\xff\xfe")
    for period in ("2026-13", "0000-01", "2026-3"):   # 0000-01: found by the API fuzz test
        with pytest.raises(ValidationError) as info:
            _reconcile(ledger, SAMPLE.read_bytes(), period=period)
        assert info.value.field == "period"
    with ledger.uow() as uow, pytest.raises(NotFound):
        vr.stored_report(uow.conn, "2026-03")
    with ledger.uow() as uow:     # a malformed header writes nothing
        assert uow.conn.execute(select(func.count()).select_from(vendor_imports)).scalar() == 0


def test_a_decrease_counts_its_units_negatively_on_both_sides(ledger, csp) -> None:
    """Alpha Basic 10 -> 8 seats from 16 March: the 1 April invoice credits 2 seats x 12.00 x
    16/31 days = 12.387 -> -12.39 for [16 March, 1 April), a March line. Ours: 10 - 2 = 8
    seats, 120.00 - 12.39 = 107.61; the vendor's removeQuantity credits 2 seats 10.32: 10 - 2
    = 8 seats, 100.00 - 10.32 = 89.68 -> matched, margin 17.93."""
    from billing_core.adapters.tables import subscriptions
    from billing_core.service.subscriptions import change_quantity

    with ledger.uow() as uow:
        sub = uow.conn.execute(select(subscriptions.c.id).where(
            subscriptions.c.account_id == csp["alpha"],
            subscriptions.c.product_id == csp["basic"])).scalar_one()
        change_quantity(uow, sub, 8, date(2026, 3, 16))
        uow.commit()
    ledger.run(date(2026, 4, 1))
    header = "CustomerId,ProductId,SkuId,ChargeType,BillableQuantity,Subtotal,Currency\n"
    data = (header + f"{ALPHA},CFQ7TTC0LH18,0001,cycleCharge,10,100.00,USD\n"
                     f"{ALPHA},CFQ7TTC0LH18,0001,removeQuantity,2,-10.32,USD\n").encode()
    report = _reconcile(ledger, data)
    basic = [g for g in report["groups"] if g["product_id"] == csp["basic"]
             and g["account_id"] == csp["alpha"]][0]
    assert (basic["status"], basic["our_quantity"], basic["vendor_quantity"],
            basic["billed_minor"], basic["cost_minor"], basic["margin_minor"],
            basic["our_lines"], basic["vendor_lines"]) == (
        "matched", "8", "8", 10761, 8968, 1793, 2, 2)


def test_currency_and_ambiguous_accounts_are_not_compared(ledger, csp) -> None:
    _account(ledger, "Dup One", "001DUP1", number="dup.onmicrosoft.com")
    _account(ledger, "Dup Two", "001DUP2", number="dup.onmicrosoft.com")
    header = "CustomerId,CustomerDomainName,ProductId,SkuId,BillableQuantity,Subtotal,Currency\n"
    data = (header + f"{BETA},,CFQ7TTC0LH18,0001,3,27.00,EUR\n"
                     "eeee,dup.onmicrosoft.com,CFQ7TTC0LH18,0001,1,10.00,USD\n"
                     f"{ALPHA},,CFQ7TTC0LH18,0001,10,100.00,JPY\n").encode()
    report = _reconcile(ledger, data)
    assert [(u["row"], u["reason"], u["cost_minor"], u["currency"])
            for u in report["unmatched"]] == [
        (2, "currency", 2700, "EUR"), (3, "ambiguous_account", 1000, "USD"),
        (4, "currency", 100, "JPY")]       # JPY has no minor unit: 100.00 -> 100
    # nothing of ours matched: what we billed of the vendor's products (Basic: in the file;
    # Phone: mapped) is ours_only; Premium (neither) and Consulting are not in the report
    assert sorted((g["account_id"], g["product_id"], g["status"]) for g in report["groups"]) == [
        (csp["alpha"], csp["basic"], "ours_only"), (csp["alpha"], csp["phone"], "ours_only"),
        (csp["beta"], csp["basic"], "ours_only"), (csp["beta"], csp["phone"], "ours_only")]
    assert report["summary"]["unmatched"]["amounts"] == {
        "EUR": {"billed_minor": 0, "cost_minor": 2700},
        "JPY": {"billed_minor": 0, "cost_minor": 100},
        "USD": {"billed_minor": 0, "cost_minor": 1000}}


def test_a_nul_in_a_cell_refuses_that_row_only(ledger, csp) -> None:
    """PostgreSQL refuses a NUL in text: a vendor file with one in a customer id or a name
    must refuse that row (row, field) and store the rest, on both databases."""
    header = "CustomerId,ProductId,SkuId,Quantity,Subtotal,Currency,CustomerName\n"
    body = ("x\x00y,p,s,1,1.00,USD,\n"
            "x,p,s,1,1.00,USD,Acme\x00 Ltd\n"
            "x,p,s,2,2.00,USD,Acme Ltd\n")
    data = (header + body).encode()
    parsed = vr.read_vendor_csv(data)
    assert [(e["row"], e["field"]) for e in parsed.errors] == [(2, "CustomerId"),
                                                              (3, "CustomerName")]
    report = _reconcile(ledger, data)
    assert (report["rows_read"], report["rows_refused"]) == (3, 2)
