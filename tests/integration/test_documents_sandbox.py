"""How the sandbox CRM serves the documents push (issue 16, item 2), over real HTTPS with the
real clients: upsert by external id / alternate key, Salesforce Files and Dataverse notes with
their base64 checks and size limits, answered in each CRM's error shape; and the connectors'
document writes failing one document alone."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from connectors.base import FatalError
from connectors.registry import build_connector
from connectors.settings import parse_connection

sandbox_server = pytest.importorskip("connectors.sandbox.server",
                                     reason="sandbox CRM (connectors/sandbox) not available")
PDF = b"%PDF-1.4 a tiny test file"


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with sandbox_server.Sandbox(accounts=5, quotes=2) as sbx:
        yield sbx


@pytest.fixture
def sf(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    creds = sandbox.credentials or sandbox.salesforce.credentials
    settings = parse_connection("sf_docs", {
        "crm": "salesforce", "url": sandbox.url, "auth": "client_credentials",
        "ca_bundle": sandbox.ca_bundle, "push_documents": True,
        "credentials": {"client_id": creds.client_id, "client_secret": "env:SBX_SF_SECRET"}})
    sandbox.reset()
    return build_connector(settings, sleep=lambda s: None,
                           environ={"SBX_SF_SECRET": creds.client_secret})


@pytest.fixture
def dv(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CURL_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    side = sandbox.dataverse
    settings = parse_connection("d365_docs", {
        "crm": "dynamics", "url": sandbox.url, "auth": "client_secret", "tenant_id": side.tenant,
        "authority_host": sandbox.url, "validate_authority": False, "push_documents": True,
        "ca_bundle": sandbox.ca_bundle,
        "credentials": {"client_id": side.client_id, "client_secret": "env:SBX_DV_SECRET"}})
    sandbox.reset()
    return build_connector(settings, sleep=lambda s: None,
                           environ={"SBX_DV_SECRET": side.client_secret})


def _sf(sf: Any, path: str, method: str, body: Any = None) -> Any:
    return sf._call(lambda c: c.restful(path, method=method, json=body))


def _sf_account(sf: Any) -> str:
    return str(sf._call(lambda c: c.query("SELECT Id FROM Account LIMIT 1"))["records"][0]["Id"])


def test_salesforce_upsert_by_external_id_creates_once_then_updates(sf: Any) -> None:
    account = _sf_account(sf)
    path = "sobjects/Invoice__c/Ledger_Document_Id__c/invoice-1"
    created = _sf(sf, path, "PATCH", {"Name": "INV-1", "Account__c": account, "Total__c": 10})
    assert created["created"] is True and created["success"] is True
    assert _sf(sf, path, "PATCH", {"Balance__c": 0}) is None          # 204: updated
    many = _sf(sf, "composite/sobjects/Invoice__c/Ledger_Document_Id__c", "PATCH", {
        "allOrNone": False, "records": [
            {"attributes": {"type": "Invoice__c"}, "Ledger_Document_Id__c": "invoice-1",
             "Status__c": "paid"},
            {"attributes": {"type": "Invoice__c"}, "Ledger_Document_Id__c": "invoice-2",
             "Name": "INV-2", "Document_Type__c": "Bill"}]})
    assert [(r["success"], r.get("created")) for r in many] == [(True, False), (False, None)]
    assert many[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    rows = sf._call(lambda c: c.query(
        "SELECT Id, Name, Balance__c, Status__c FROM Invoice__c"))["records"]
    assert [(r["Name"], r["Balance__c"], r["Status__c"]) for r in rows] == [("INV-1", 0, "paid")]
    with pytest.raises(FatalError) as refused:
        _sf(sf, "composite/sobjects/Invoice__c/Name", "PATCH", {"records": []})
    assert (refused.value.status, refused.value.code) == (404, "NOT_FOUND")


def test_salesforce_content_version_links_the_record_and_checks_its_body(sf: Any) -> None:
    account = _sf_account(sf)
    record = _sf(sf, "sobjects/Invoice__c/Ledger_Document_Id__c/invoice-9", "PATCH",
                 {"Name": "INV-9", "Account__c": account})["id"]
    good = {"Title": "INV-9", "PathOnClient": "INV-9.pdf",
            "VersionData": base64.b64encode(PDF).decode(), "FirstPublishLocationId": record}
    for bad, code in (({"VersionData": "not base64!"}, "JSON_PARSER_ERROR"),
                      ({"Title": None}, "REQUIRED_FIELD_MISSING"),
                      ({"FirstPublishLocationId": account[:-3] + "zzz"},
                       "INVALID_CROSS_REFERENCE_KEY")):
        with pytest.raises(FatalError) as refused:
            _sf(sf, "sobjects/ContentVersion", "POST", {**good, **bad})
        assert (refused.value.status, refused.value.code) == (400, code)
    version = _sf(sf, "sobjects/ContentVersion", "POST", good)["id"]
    [row] = sf._call(lambda c: c.query(
        f"SELECT ContentDocumentId, ContentSize, FileExtension FROM ContentVersion "
        f"WHERE FirstPublishLocationId = '{record}'"))["records"]
    assert (row["ContentSize"], row["FileExtension"]) == (len(PDF), "pdf")
    links = sf._call(lambda c: c.query(
        "SELECT LinkedEntityId FROM ContentDocumentLink WHERE ContentDocumentId = "
        f"'{row['ContentDocumentId']}'"))["records"]
    assert [link["LinkedEntityId"] for link in links] == [record]
    assert version.startswith("068")


def test_salesforce_file_of_a_document_without_its_record_fails_alone(sf: Any) -> None:
    account = _sf_account(sf)
    done = sf.write("document", [{"crm_id": "invoice-5", "account_crm_id": account,
                                  "number": "INV-5"}])
    assert [r.ok for r in done] == [True]
    files = sf.write("document_file", [
        {"crm_id": "invoice-4", "title": "INV-4", "filename": "INV-4.pdf", "_pdf": PDF},
        {"crm_id": "invoice-5", "title": "INV-5", "filename": "INV-5.pdf", "_pdf": PDF},
        {"crm_id": "invoice-5", "title": "INV-5", "filename": "INV-5.pdf", "_pdf": PDF}])
    assert [(r.ok, r.code) for r in files] == [(False, "NOT_FOUND"), (True, None), (True, None)]
    assert files[0].message.startswith("INV-4: ")
    assert files[1].crm_id == files[2].crm_id          # the second found the first: one file


def test_dataverse_upsert_by_alternate_key_and_notes(dv: Any) -> None:
    account = dv.get_json("accounts?$select=accountid&$top=1")["value"][0]["accountid"]
    done = dv.write("document", [{"crm_id": "invoice-1", "account_crm_id": account,
                                  "number": "INV-1", "status": "posted"}])
    assert [r.ok for r in done] == [True]
    done = dv.write("document", [{"crm_id": "invoice-1", "status": "paid"}])
    assert [r.ok for r in done] == [True]
    rows = dv.get_json("new_invoices?$select=new_name,new_status,_new_account_value")["value"]
    assert [(r["new_name"], r["new_status"], r["_new_account_value"]) for r in rows] == [
        ("INV-1", "paid", account)]
    with pytest.raises(FatalError) as missing:
        dv.get_json("new_invoices(new_ledgerdocumentid='invoice-404')")
    assert missing.value.status == 404
    with pytest.raises(FatalError) as not_a_key:
        dv.get_json("new_invoices(new_name='INV-1')")
    assert not_a_key.value.status == 400
    row = rows[0]["new_invoiceid"]
    note = {"subject": "INV-1", "filename": "INV-1.pdf", "mimetype": "application/pdf",
            "objectid_new_invoice@odata.bind": f"/new_invoices({row})"}
    with pytest.raises(FatalError) as refused:
        dv.request("POST", "annotations", json={**note, "documentbody": "%%%"})
    assert (refused.value.status, refused.value.code) == (400, "0x80040203")
    files = dv.write("document_file", [
        {"crm_id": "invoice-1", "title": "INV-1", "filename": "INV-1.pdf", "_pdf": PDF},
        {"crm_id": "invoice-1", "title": "INV-1", "filename": "INV-1.pdf", "_pdf": PDF},
        {"crm_id": "invoice-2", "title": "INV-2", "filename": "INV-2.pdf", "_pdf": PDF}])
    assert [(r.ok, r.code) for r in files] == [(True, None), (True, None), (False, "NOT_FOUND")]
    notes = dv.get_json("annotations?$select=filename,filesize,isdocument,documentbody")["value"]
    assert [(n["filename"], n["filesize"], n["isdocument"], base64.b64decode(n["documentbody"]))
            for n in notes] == [("INV-1.pdf", len(PDF), True, PDF)]


def test_dataverse_note_over_the_attachment_limit_fails_alone(
        dv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.sandbox.dataverse import documents as dv_documents

    monkeypatch.setattr(dv_documents, "MAX_ATTACHMENT_BYTES", 10)
    account = dv.get_json("accounts?$select=accountid&$top=1")["value"][0]["accountid"]
    dv.write("document", [{"crm_id": "invoice-7", "account_crm_id": account, "number": "INV-7"}])
    [result] = dv.write("document_file", [{"crm_id": "invoice-7", "title": "INV-7",
                                           "filename": "INV-7.pdf", "_pdf": PDF}])
    assert (result.ok, result.code) == (False, "0x80044a02")
    assert result.message.startswith("INV-7: The attachment is either not a valid type or is "
                                     "too large.")


def test_doctor_checks_the_documents_objects_when_the_connection_pushes_them(
        sf: Any, dv: Any) -> None:
    for connector, labels in ((sf, ("fields document (Invoice__c)",
                                    "fields document_file (ContentVersion)")),
                              (dv, ("fields document (new_invoice)",
                                    "fields document_file (annotation)"))):
        results = {r.check: r for r in connector.check()}
        assert all(r.ok for r in results.values()), [r for r in results.values() if not r.ok]
        assert [results[label].status for label in labels] == ["ok", "ok"], sorted(results)


def _count_files(sf: Any, record: str) -> int:
    return int(_sf(sf, "query/?q=" + f"SELECT+Id+FROM+ContentVersion+WHERE+"
                   f"FirstPublishLocationId='{record}'", "GET")["totalSize"])


def test_a_file_upload_that_times_out_after_salesforce_took_it_is_not_sent_twice(
        sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Salesforce takes a file but answers after the read timeout. The upload (a POST that
    creates) is not re-sent blindly by the transport's retry, which made a second
    ContentVersion on the record: the file fails alone as unconfirmed, and the next push
    finds it on its record and sends nothing."""
    import time

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    creds = sandbox.credentials or sandbox.salesforce.credentials
    settings = parse_connection("sf_docs", {
        "crm": "salesforce", "url": sandbox.url, "auth": "client_credentials",
        "ca_bundle": sandbox.ca_bundle, "push_documents": True, "read_timeout": 0.5,
        "credentials": {"client_id": creds.client_id, "client_secret": "env:SBX_SF_SECRET"}})
    sandbox.reset()
    sf = build_connector(settings, sleep=lambda s: None,
                         environ={"SBX_SF_SECRET": creds.client_secret})
    account = _sf_account(sf)
    assert [r.ok for r in sf.write("document", [{"crm_id": "invoice-9",
                                                "account_crm_id": account,
                                                "number": "INV-9"}])] == [True]
    record = str(_sf(sf, "query/?q=SELECT+Id+FROM+Invoice__c+WHERE+"
                     "Ledger_Document_Id__c='invoice-9'", "GET")["records"][0]["Id"])
    upload = {"crm_id": "invoice-9", "title": "INV-9", "filename": "INV-9.pdf", "_pdf": PDF}
    posts = sandbox.counters.get("salesforce", "sobject", "POST")
    sandbox.faults.add("salesforce", "sobject", "slow", count=1, delay=3.0)
    first = sf.write("document_file", [dict(upload)])
    assert sandbox.counters.get("salesforce", "sobject", "POST") == posts + 1, \
        "the upload was sent again after its timeout"
    assert [(r.ok, r.code) for r in first] == [(False, "UNCONFIRMED")], first
    deadline = time.monotonic() + 30                      # the late answer's file lands
    while _count_files(sf, record) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _count_files(sf, record) == 1
    again = sf.write("document_file", [dict(upload)])     # the next push
    assert [r.ok for r in again] == [True]
    assert sandbox.counters.get("salesforce", "sobject", "POST") == posts + 1
    assert _count_files(sf, record) == 1


def test_a_note_upload_that_times_out_after_dataverse_took_it_is_not_sent_twice(
        sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for Dataverse: a note taken but answered after the read timeout is not
    created a second time by the transport's retry; the next push finds it."""
    import time

    monkeypatch.setenv("CURL_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    side = sandbox.dataverse
    settings = parse_connection("d365_docs", {
        "crm": "dynamics", "url": sandbox.url, "auth": "client_secret", "tenant_id": side.tenant,
        "authority_host": sandbox.url, "validate_authority": False, "push_documents": True,
        "ca_bundle": sandbox.ca_bundle, "read_timeout": 0.5,
        "credentials": {"client_id": side.client_id, "client_secret": "env:SBX_DV_SECRET"}})
    sandbox.reset()
    dv = build_connector(settings, sleep=lambda s: None,
                         environ={"SBX_DV_SECRET": side.client_secret})
    account = dv.get_json("accounts?$select=accountid&$top=1")["value"][0]["accountid"]
    assert [r.ok for r in dv.write("document", [{"crm_id": "invoice-9",
                                                "account_crm_id": account,
                                                "number": "INV-9", "status": "posted"}])] == [True]

    def notes() -> int:
        return len(dv.get_json("annotations?$select=filename")["value"])

    upload = {"crm_id": "invoice-9", "title": "INV-9", "filename": "INV-9.pdf", "_pdf": PDF}
    posts = sandbox.counters.get("dataverse", "annotations", "POST")
    real, armed = dv.request, [True]

    def request(method: str, url: str, **kw: Any) -> Any:
        if method == "POST" and url == "annotations" and armed.pop() if armed else False:
            # the note's POST only (the look for notes already there reads the same table)
            sandbox.faults.add("dataverse", "annotations", "slow", count=1, delay=3.0)
        return real(method, url, **kw)
    monkeypatch.setattr(dv, "request", request)
    first = dv.write("document_file", [dict(upload)])
    assert sandbox.counters.get("dataverse", "annotations", "POST") == posts + 1, \
        "the note was sent again after its timeout"
    assert [(r.ok, r.code) for r in first] == [(False, "UNCONFIRMED")], first
    deadline = time.monotonic() + 30
    while notes() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert notes() == 1
    assert [r.ok for r in dv.write("document_file", [dict(upload)])] == [True]
    assert sandbox.counters.get("dataverse", "annotations", "POST") == posts + 1
    assert notes() == 1
