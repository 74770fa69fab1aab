"""The renderer on plain document data (no ledger, no files written): what the PDF and the
HTML show, byte-for-byte reproducibility, locales, and the Accept negotiation of the API.

Worked figures (BILLING.md rule 10): usage 545.00 − prepaid credit 155.00 = taxable base
390.00 at 8.25 % → tax 32.18; total 422.18; a 100.00 credit memo applied leaves 322.18 due.
"""
from __future__ import annotations

import io
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pypdf import PdfReader

from billing_core.documents.formatting import Formats, resolve_locale
from billing_core.documents.render import Renderer, RenderOptions, Seller, TemplateError
from billing_core.domain.errors import ValidationError
from jobs.api.documents import negotiate

SELLER = Seller("Northwind Billing Ltd", ("1 Main Street", "Dublin D02 XY45"), "IE1234567T",
                "billing@northwind.example")


def invoice(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "invoice", "id": 7, "number": "INV-000042", "status": "partially_paid",
        "draft": False, "currency": "USD", "issue_date": date(2026, 3, 1),
        "due_date": date(2026, 3, 31), "period_start": date(2026, 3, 1),
        "period_end": date(2026, 4, 1), "payment_terms_days": 30,
        "buyer": {"id": 3, "name": "Acme <Corp> & Co", "number": "ACC-9", "country": "US",
                  "region": "CA", "currency": "USD", "tax_exempt": False,
                  "payment_terms_days": 30},
        "lines": [
            {"line_no": 1, "kind": "usage", "description": "API calls: 7500 used",
             "quantity": Decimal("7500"), "unit_price": Decimal("0.0726666"),
             "period_start": date(2026, 2, 1), "period_end": date(2026, 3, 1),
             "amount_minor": 54500, "tax_rate": Decimal("0.0825"), "tax_minor": 4496},
            {"line_no": 2, "kind": "credit_draw", "description": "Prepaid credit grant 4",
             "quantity": None, "unit_price": None, "period_start": None, "period_end": None,
             "amount_minor": -15500, "tax_rate": Decimal("0.0825"), "tax_minor": -1278},
            {"line_no": 3, "kind": "proration", "description": "Seats x 3, 20 Feb to 1 Mar",
             "quantity": Decimal("3"), "unit_price": Decimal("12.00"),
             "period_start": date(2026, 2, 20), "period_end": date(2026, 3, 1),
             "amount_minor": 0, "tax_rate": None, "tax_minor": 0},
        ],
        "taxes": [{"rate": Decimal("0.0825"), "base_minor": 39000, "tax_minor": 3218}],
        "tax_inclusive": False, "subtotal_minor": 39000, "tax_minor": 3218,
        "total_minor": 42218, "applied_minor": 10000, "balance_minor": 32218,
        "credits": [{"source_type": "credit_memo", "source": "CM-000003",
                     "amount_minor": 10000, "applied_on": date(2026, 3, 2)}],
    }
    doc.update(changes)
    return doc


def text_of(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(RenderOptions(seller=SELLER))


def test_invoice_pdf_shows_number_lines_tax_base_and_totals(renderer: Renderer) -> None:
    text = text_of(renderer.pdf(invoice()))
    for expected in ("INV-000042", "Northwind Billing Ltd", "Tax ID: IE1234567T",
                     "Acme <Corp> & Co", "CA, US", "Mar 1, 2026", "Mar 31, 2026", "Net 30 days",
                     "API calls: 7500 used", "Usage", "7,500", "$545.00",
                     "Prepaid credit grant 4", "Prepaid credit drawn", "-$155.00",
                     "Proration", "Feb 20, 2026 – Feb 28, 2026",
                     "8.25% $390.00 $32.18", "Subtotal $390.00", "Tax $32.18", "Total $422.18",
                     "Credit memo CM-000003 -$100.00", "Balance due $322.18"):
        assert expected in text, expected


def test_the_same_document_renders_to_the_same_bytes(renderer: Renderer) -> None:
    first, second = renderer.pdf(invoice()), Renderer(RenderOptions(seller=SELLER)).pdf(invoice())
    assert first == second
    assert first.startswith(b"%PDF-")
    assert b"/CreationDate (D:20260301000000+00'00')" in first     # the document's date
    assert renderer.html(invoice()) == renderer.html(invoice())
    # another document, another file id
    other = renderer.pdf(invoice(number="INV-000043"))
    assert other != first and other.split(b"/ID")[1][:40] != first.split(b"/ID")[1][:40]


def test_html_escapes_ledger_text_and_notes_tax_inclusive_prices(renderer: Renderer) -> None:
    html = renderer.html(invoice(tax_inclusive=True))
    assert "Acme &lt;Corp&gt; &amp; Co" in html and "Acme <Corp>" not in html
    assert "<title>Invoice INV-000042</title>" in html
    assert "Prices include tax" in html
    assert "Prices include tax" not in renderer.html(invoice())
    assert "Prices include tax" in text_of(renderer.pdf(invoice(tax_inclusive=True)))


def test_a_draft_says_so(renderer: Renderer) -> None:
    text = text_of(renderer.pdf(invoice(number=None, draft=True, status="draft")))
    assert "DRAFT" in text and "(draft)" in text


def test_amounts_follow_the_locale() -> None:
    german = Renderer(RenderOptions(seller=SELLER, locale="de_DE"))
    doc = invoice(currency="EUR")
    text = text_of(german.pdf(doc))
    assert "322,18\xa0€" in text or "322,18 €" in text
    assert "01.03.2026" in text
    by_country = Formats(resolve_locale("country", "DE"), "EUR")
    assert by_country.money(123450) == "1.234,50\xa0€"
    assert Formats(resolve_locale("country", None), "JPY").money(16358) == "¥16,358"
    assert Formats(resolve_locale("en", None), "BHD").money(1234) == "BHD1.234"


def test_an_unknown_locale_or_page_size_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match="documents.locale"):
        Renderer(RenderOptions(locale="xx_NOWHERE"))
    with pytest.raises(ValidationError, match="documents.page_size"):
        Renderer(RenderOptions(page_size="A7"))


def test_memos_and_statement_render(renderer: Renderer) -> None:
    buyer = invoice()["buyer"]
    credit = {"kind": "credit_memo", "id": 3, "number": "CM-000003", "status": "applied",
              "draft": False, "currency": "USD", "issue_date": date(2026, 3, 2),
              "reason": "Goodwill for the outage", "origin": "manual", "origin_invoice": None,
              "buyer": buyer, "amount_minor": 10000, "applied_minor": 10000, "balance_minor": 0,
              "applied_to": [{"target_type": "invoice", "target": "INV-000042",
                              "amount_minor": 10000, "applied_on": date(2026, 3, 2)}]}
    text = text_of(renderer.pdf(credit))
    assert all(s in text for s in ("Credit memo", "CM-000003", "Goodwill for the outage",
                                   "Applied to INV-000042", "Credit remaining $0.00"))
    debit = {"kind": "debit_memo", "id": 4, "number": "DM-000001", "status": "active",
             "draft": False, "currency": "USD", "issue_date": date(2026, 3, 5),
             "due_date": date(2026, 4, 4), "payment_terms_days": 30, "reason": "Late fee",
             "buyer": buyer, "amount_minor": 2500, "applied_minor": 0, "balance_minor": 2500,
             "credits": []}
    text = text_of(renderer.pdf(debit))
    assert all(s in text for s in ("Debit memo", "DM-000001", "Late fee", "Apr 4, 2026",
                                   "Balance due $25.00"))
    statement = {"kind": "statement", "id": 3, "number": "ST-3-20260301-20260331",
                 "draft": False, "currency": "USD", "issue_date": date(2026, 3, 31),
                 "date_from": date(2026, 3, 1), "date_to": date(2026, 3, 31), "buyer": buyer,
                 "opening_balance_minor": 5000, "debits_minor": 10000, "credits_minor": 7500,
                 "closing_balance_minor": 7500,
                 "entries": [
                     {"date": date(2026, 3, 1), "kind": "invoice", "number": "INV-000042",
                      "description": "", "period_start": date(2026, 3, 1),
                      "period_end": date(2026, 4, 1), "due_date": date(2026, 3, 31),
                      "debit_minor": 10000, "credit_minor": 0, "balance_minor": 15000},
                     {"date": date(2026, 3, 10), "kind": "payment", "number": "WIRE-1",
                      "description": "wire", "period_start": None, "period_end": None,
                      "due_date": None, "debit_minor": 0, "credit_minor": 7500,
                      "balance_minor": 7500}]}
    text = text_of(renderer.pdf(statement))
    assert all(s in text for s in ("Statement of account", "Opening balance $50.00",
                                   "INV-000042", "WIRE-1", "$150.00",
                                   "Closing balance $100.00 $75.00 $75.00"))


def test_an_unknown_kind_or_format_is_refused(renderer: Renderer) -> None:
    with pytest.raises(ValidationError, match="kind"):
        renderer.html(invoice(kind="receipt"))
    with pytest.raises(ValidationError, match="--format"):
        renderer.render(invoice(), "docx")


def test_a_template_error_names_the_template_and_line(renderer: Renderer) -> None:
    broken = invoice()
    del broken["taxes"]
    with pytest.raises(TemplateError) as caught:
        renderer.html(broken)
    assert caught.value.code == "template_error"
    assert str(caught.value.value).endswith("invoice.html:34"), caught.value.value
    assert "taxes" in str(caught.value)


@pytest.mark.parametrize(("accept", "expected"), [
    (None, "json"), ("", "json"), ("*/*", "json"), ("application/json", "json"),
    ("application/pdf", "pdf"), ("text/html", "html"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "html"),
    ("application/pdf;q=0.5, text/html;q=0.8", "html"),
    ("application/json;q=0.9, application/pdf", "pdf"),
    ("application/pdf, application/json", "json"),            # a tie goes to JSON
    ("application/pdf;q=0", "json"), ("image/png", "json"), ("application/pdf;q=x", "json"),
])
def test_accept_negotiation(accept: str | None, expected: str) -> None:
    assert negotiate(accept) == expected


def test_a_void_invoice_rendered_afresh_says_so(renderer: Renderer) -> None:
    assert "VOID" in text_of(renderer.pdf(invoice(status="void")))
    assert "VOID" not in text_of(renderer.pdf(invoice()))


def test_a_currency_sign_the_pdf_font_lacks_shows_the_iso_code() -> None:
    doc = invoice(currency="PLN")
    doc["buyer"] = doc["buyer"] | {"name": "Zakład Łódka"}
    helvetica = Renderer(RenderOptions(locale="pl_PL"))
    assert "322,18 PLN" in text_of(helvetica.pdf(doc))
    assert "322,18\xa0zł" in helvetica.html(doc)            # the browser draws it
    vera = Renderer(RenderOptions(locale="pl_PL", font="vera"))
    pdf = vera.pdf(doc)
    text = text_of(pdf)
    assert "322,18 zł" in text and "Zakład Łódka" in text
    assert pdf == Renderer(RenderOptions(locale="pl_PL", font="vera")).pdf(doc)


def test_an_unusable_font_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match="documents.font"):
        Renderer(RenderOptions(font="/no/such/font.ttf"))
