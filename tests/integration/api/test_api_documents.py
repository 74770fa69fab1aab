"""GET /billing/invoices/{ref} with Accept: application/pdf or text/html returns the rendered
invoice; JSON stays the default (SQLite and PostgreSQL)."""
from __future__ import annotations

import io

from api_helpers import Api
from pypdf import PdfReader

from billing_core.documents.render import Renderer
from billing_core.service import ledger_uow
from billing_core.service.rendering import render_document


def _get(api: Api, ref: object, accept: str | None) -> object:
    headers = api.headers("billing:read")
    if accept is not None:
        headers["Accept"] = accept
    return api.client.get(f"/billing/invoices/{ref}", headers=headers)


def test_accept_pdf_returns_the_invoice_as_pdf(api: Api, invoice: int) -> None:
    answer = _get(api, "INV-000001", "application/pdf")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/pdf"
    assert 'filename="INV-000001.pdf"' in answer.headers["content-disposition"]
    text = " ".join(PdfReader(io.BytesIO(answer.content)).pages[0].extract_text().split())
    assert "INV-000001" in text and "Total $100.00" in text and "Balance due $100.00" in text
    assert _get(api, invoice, "application/pdf").content == answer.content     # by id, same bytes


def test_accept_html_returns_the_invoice_as_html(api: Api, invoice: int) -> None:
    answer = _get(api, "INV-000001", "text/html,application/xhtml+xml,*/*;q=0.8")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "<title>Invoice INV-000001</title>" in answer.text


def test_json_stays_the_default(api: Api, invoice: int) -> None:
    for accept in (None, "*/*", "application/json", "application/pdf;q=0.5, application/json"):
        answer = _get(api, "INV-000001", accept)
        assert answer.status_code == 200, accept
        assert answer.json()["number"] == "INV-000001", accept


def test_an_unknown_invoice_is_404_in_every_format(api: Api, invoice: int) -> None:
    for accept in ("application/pdf", "text/html", None):
        answer = _get(api, "INV-424242", accept)
        assert answer.status_code == 404
        assert answer.json()["error"]["value"] == "INV-424242"


def test_a_get_serves_the_kept_file_and_writes_none(api: Api, invoice: int) -> None:
    before = _get(api, "INV-000001", "application/pdf").content
    # nothing kept by the GET: issuing it now keeps the file the GET showed
    with ledger_uow(api.engine) as uow:
        kept = render_document(uow, Renderer(), "invoice", "INV-000001", "pdf")
        uow.commit()
    assert kept.kept and kept.body == before
    assert _get(api, "INV-000001", "application/pdf").content == before


def test_a_broken_template_is_500_naming_it_and_json_still_answers(engine, tmp_path) -> None:
    from api_helpers import FakeSyncRunner, SchedulerState, TestClient, make_account, post_invoice

    from config.settings import DocumentSettings, Settings
    from jobs.api.app import build_app
    from jobs.api.auth import create_token

    (tmp_path / "invoice.html").write_text('{% extends "base.html" %}\n{% block body %}\n'
                                           "{{ doc.no_such_field }}\n{% endblock %}\n",
                                           encoding="utf-8")
    with ledger_uow(engine) as uow:
        token = create_token(uow, "reader", ["billing:read"])[1]
        post_invoice(uow, make_account(uow), 5000)
        uow.commit()
    settings = Settings(documents=DocumentSettings(templates_dir=str(tmp_path)))
    app = build_app(engine, settings, sync_runner=FakeSyncRunner(),
                    scheduler_state=SchedulerState())
    with TestClient(app, raise_server_exceptions=False) as client:
        auth = {"Authorization": f"Bearer {token}"}
        broken = client.get("/billing/invoices/INV-000001", headers=auth | {"Accept": "text/html"})
        fine = client.get("/billing/invoices/INV-000001", headers=auth)
    assert broken.status_code == 500
    error = broken.json()["error"]
    assert error["code"] == "template_error"
    assert error["value"] == f"{tmp_path}/invoice.html:3"
    assert "no_such_field" in error["message"]
    assert fine.status_code == 200 and fine.json()["number"] == "INV-000001"
