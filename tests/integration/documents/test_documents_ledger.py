"""Documents rendered from the ledger (SQLite and PostgreSQL): every kind shows what the ledger
holds, renders to the same bytes twice, and an issued document keeps the file it was first
given even after the templates change.

Statement worked figures (Acme Corp, USD): nothing before 1 March → opening 0.00; invoice
INV-000001 of 2,321.27 on 10 March; payment WIRE-1 of 1,000.00 on 12 March; credit memo
CM-000001 of 21.27 activated 15 March → closing 2,321.27 − 1,000.00 − 21.27 = 1,300.00. A
statement from 13 March opens at 1,321.27.
"""
from __future__ import annotations

from datetime import date

import pytest
from documents_helpers import custom_templates, squeeze, text_of
from sqlalchemy import Engine

from billing_core.adapters.db import UnitOfWork
from billing_core.documents.formatting import Formats, resolve_locale
from billing_core.documents.render import Renderer, RenderOptions, TemplateError
from billing_core.domain.errors import NotFound, ValidationError
from billing_core.service import ledger_uow
from billing_core.service.document_files import kept_file
from billing_core.service.memos import (
    activate_credit_memo,
    activate_debit_memo,
    create_credit_memo,
    create_debit_memo,
)
from billing_core.service.payments import record_payment
from billing_core.service.rendering import load, render_document, render_statement


def test_every_invoice_shows_its_lines_taxes_and_totals(engine: Engine, ledger: dict[str, int],
                                                        renderer: Renderer) -> None:
    with ledger_uow(engine, read_only=True) as uow:
        for number in ("INV-000001", "INV-000002", "INV-000003"):
            doc = load(uow.conn, "invoice", number)
            first = render_document(uow, renderer, "invoice", number, "pdf", keep=False)
            again = render_document(uow, renderer, "invoice", number, "pdf", keep=False)
            assert first.body == again.body, number
            text = text_of(first.body)
            money = Formats(resolve_locale("en", None), doc["currency"]).money
            assert number in text and doc["buyer"]["name"] in text
            for line in doc["lines"]:
                assert squeeze(line["description"]) in text, line
                assert money(line["amount_minor"]) in text, line
            for tax in doc["taxes"]:
                assert f"{money(tax['base_minor'])} {money(tax['tax_minor'])}" in text
            assert f"Total {money(doc['total_minor'])}" in text
            assert f"Balance due {money(doc['balance_minor'])}" in text
            html = renderer.html(doc)
            assert number in html and doc["buyer"]["name"] in html


def test_proration_and_credit_draw_lines_are_labelled(engine: Engine, ledger: dict[str, int],
                                                      renderer: Renderer) -> None:
    with ledger_uow(engine, read_only=True) as uow:
        globex = text_of(render_document(uow, renderer, "invoice", "INV-000002", "pdf",
                                         keep=False).body)
    # Globex (EUR, 19 %): 5 then 8 seats prorated in February, a 2.00 prepaid credit drawn
    assert "Prepaid credits applied to usage (1 grant) Prepaid credit drawn" in globex
    assert "-€2.00" in globex
    assert "(14/28 days) Proration" in globex


def test_an_issued_document_keeps_its_first_file_when_the_templates_change(
        engine: Engine, ledger: dict[str, int], renderer: Renderer, tmp_path) -> None:
    with ledger_uow(engine) as uow:
        issued = render_document(uow, renderer, "invoice", "INV-000001", "pdf")
        uow.commit()
    assert issued.kept
    changed = Renderer(RenderOptions(templates_dir=custom_templates(
        tmp_path / "v2", invoice='{% extends "base.html" %}{% block body %}'
                                 '<p>Version two {{ doc.number }}</p>{% endblock %}')))
    with ledger_uow(engine) as uow:
        shown = render_document(uow, changed, "invoice", "INV-000001", "pdf")
        preview = render_document(uow, changed, "invoice", "INV-000001", "pdf", fresh=True)
        row = kept_file(uow.conn, "invoice", int(issued.doc["id"]), "pdf")
    assert shown.body == issued.body and shown.kept
    assert "Version two INV-000001" in text_of(preview.body)
    assert preview.body != issued.body
    assert row is not None and row["template_digest"] == renderer.template_digest("invoice")
    # what the same templates give again is what was kept: re-rendering is reproducible
    with ledger_uow(engine, read_only=True) as uow:
        assert render_document(uow, renderer, "invoice", "INV-000001", "pdf",
                               fresh=True).body == issued.body


def test_a_read_only_render_keeps_nothing_and_a_draft_is_never_kept(
        engine: Engine, ledger: dict[str, int], renderer: Renderer, writer: UnitOfWork) -> None:
    memo = create_credit_memo(writer, ledger["Acme Corp"], "5.00", "draft goodwill")
    writer.commit()
    with ledger_uow(engine, read_only=True) as uow:
        assert not render_document(uow, renderer, "invoice", "INV-000003", "html",
                                   keep=False).kept
        assert kept_file(uow.conn, "invoice", 3, "html") is None
    with ledger_uow(engine) as uow:
        draft = render_document(uow, renderer, "credit_memo", memo, "pdf")
        uow.commit()
    assert not draft.kept and "DRAFT" in text_of(draft.body)
    with ledger_uow(engine, read_only=True) as uow:
        assert kept_file(uow.conn, "credit_memo", memo, "pdf") is None


def test_memos_render_with_their_numbers_reasons_and_amounts(
        engine: Engine, ledger: dict[str, int], renderer: Renderer, writer: UnitOfWork) -> None:
    acme = ledger["Acme Corp"]
    credit = activate_credit_memo(writer, create_credit_memo(writer, acme, "21.27",
                                                             "Outage credit, March"))
    debit = activate_debit_memo(writer, create_debit_memo(writer, acme, "35.00", "Late fee"))
    writer.commit()
    with ledger_uow(engine) as uow:
        cm = render_document(uow, renderer, "credit_memo", credit["number"], "pdf")
        dm = render_document(uow, renderer, "debit_memo", debit["number"], "pdf")
        cm_again = render_document(uow, renderer, "credit_memo", credit["number"], "pdf",
                                   fresh=True)
        uow.commit()
    assert cm.body == cm_again.body
    cm_text, dm_text = text_of(cm.body), text_of(dm.body)
    assert all(s in cm_text for s in ("Credit memo", credit["number"], "Outage credit, March",
                                      "$21.27", "Acme Corp"))
    assert all(s in dm_text for s in ("Debit memo", debit["number"], "Late fee",
                                      "Balance due $35.00", "Net 30 days"))


def test_statement_opening_documents_payments_and_closing(
        engine: Engine, ledger: dict[str, int], renderer: Renderer, writer: UnitOfWork) -> None:
    acme = ledger["Acme Corp"]
    record_payment(writer, acme, "1000.00", reference="WIRE-1", received_on=date(2026, 3, 12))
    activate_credit_memo(writer, create_credit_memo(writer, acme, "21.27", "Outage credit"))
    writer.commit()
    with ledger_uow(engine, read_only=True) as uow:
        march = render_statement(uow.conn, renderer, acme, date(2026, 3, 1),
                                 date(2026, 3, 31), "pdf")
        later = render_statement(uow.conn, renderer, str(acme), date(2026, 3, 13),
                                 date(2026, 3, 31), "pdf")
        again = render_statement(uow.conn, renderer, acme, date(2026, 3, 1),
                                 date(2026, 3, 31), "pdf")
    assert (march.doc["opening_balance_minor"], march.doc["closing_balance_minor"]) == (0, 130000)
    assert [e["kind"] for e in march.doc["entries"]] == ["invoice", "payment", "credit_memo"]
    assert later.doc["opening_balance_minor"] == 132127
    assert march.body == again.body
    text = text_of(march.body)
    for expected in ("Statement of account", "Opening balance $0.00", "INV-000001",
                     "$2,321.27", "WIRE-1", "$1,000.00", "CM-000001", "$21.27",
                     "Closing balance $2,321.27 $1,021.27 $1,300.00"):
        assert expected in text, expected
    assert "Opening balance $1,321.27" in text_of(later.body)


def test_bad_references_and_ranges_are_refused_naming_them(
        engine: Engine, ledger: dict[str, int], renderer: Renderer) -> None:
    with ledger_uow(engine, read_only=True) as uow:
        with pytest.raises(NotFound, match="INV-999999"):
            render_document(uow, renderer, "invoice", "INV-999999", "pdf", keep=False)
        with pytest.raises(NotFound, match="DM-000009"):
            render_document(uow, renderer, "debit_memo", "DM-000009", "pdf", keep=False)
        with pytest.raises(NotFound, match="account"):
            render_statement(uow.conn, renderer, "NOPE", date(2026, 3, 1), date(2026, 3, 31),
                             "pdf")
        with pytest.raises(ValidationError, match="--to"):
            render_statement(uow.conn, renderer, ledger["Acme Corp"], date(2026, 3, 31),
                             date(2026, 3, 1), "pdf")


def test_a_broken_custom_template_names_its_file_and_line(
        engine: Engine, ledger: dict[str, int], tmp_path) -> None:
    folder = custom_templates(tmp_path / "broken",
                              invoice='{% extends "base.html" %}\n{% block body %}\n'
                                      '<p>{{ doc.totl }}</p>\n{% endblock %}\n',
                              credit_memo='{% extends "base.html" %}\n{% block body %}\n'
                                          '{% if doc.amount_minor %}\n{% endblock %}\n')
    broken = Renderer(RenderOptions(templates_dir=folder))
    with ledger_uow(engine, read_only=True) as uow:
        with pytest.raises(TemplateError) as undefined:
            render_document(uow, broken, "invoice", "INV-000001", "pdf", keep=False)
        # the other documents still render (here with the built-in templates)
        other = render_statement(uow.conn, broken, ledger["Acme Corp"], date(2026, 3, 1),
                                 date(2026, 3, 31), "pdf")
        assert "INV-000001" in text_of(other.body)
    assert undefined.value.value == f"{folder}/invoice.html:3"
    assert "totl" in str(undefined.value)
    with pytest.raises(TemplateError) as syntax:
        broken.template_digest("credit_memo")
    assert str(syntax.value.value).startswith(f"{folder}/credit_memo.html:")
    assert "endblock" in str(syntax.value) or "if" in str(syntax.value)
    with pytest.raises(TemplateError, match="not a folder"):
        Renderer(RenderOptions(templates_dir=str(tmp_path / "missing")))


def test_the_demo_writes_the_accounts_latest_invoice_as_issued(
        engine: Engine, ledger: dict[str, int], tmp_path) -> None:
    from config.settings import Settings
    from jobs.cli.documents import write_latest_invoice

    path = write_latest_invoice(engine, Settings(), ledger["Globex GmbH"], tmp_path)
    assert path == tmp_path / "INV-000002.pdf"
    text = text_of(path.read_bytes())
    assert "INV-000002" in text and "Globex GmbH" in text and "ledgerbridge demo seller" in text
    with ledger_uow(engine, read_only=True) as uow:
        row = kept_file(uow.conn, "invoice", 2, "pdf")
    assert row is not None and bytes(row["body"]) == path.read_bytes()
