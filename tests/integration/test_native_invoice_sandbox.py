"""The sandbox CRM's native Dynamics 365 invoice (issue 16, item 2, "the native invoice entity
when configured") over real HTTPS with the real client: the connection's check accepts the
``dynamics_invoice`` field map; totals are computed from the lines and cannot be written; a
line binds to its invoice by the invoice's alternate key; a paid invoice is read-only until
it is set active in a request of its own; a state takes only its own status reasons."""
from __future__ import annotations

from typing import Any

import pytest

from connectors.base import FatalError
from connectors.registry import build_connector
from connectors.settings import parse_connection

sandbox_server = pytest.importorskip("connectors.sandbox.server",
                                     reason="sandbox CRM (connectors/sandbox) not available")


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with sandbox_server.Sandbox(accounts=3, quotes=1, sides=("dataverse",)) as sbx:
        yield sbx


@pytest.fixture
def dv(sandbox: Any) -> Any:
    side = sandbox.dataverse
    settings = parse_connection("d365_native", {
        "crm": "dynamics", "url": sandbox.url, "auth": "client_secret", "tenant_id": side.tenant,
        "authority_host": sandbox.url, "validate_authority": False, "push_documents": True,
        "fieldmap_overrides": "dynamics_invoice", "ca_bundle": sandbox.ca_bundle,
        "credentials": {"client_id": side.client_id, "client_secret": "env:SBX_DV_SECRET"}})
    sandbox.reset()
    return build_connector(settings, sleep=lambda s: None,
                           environ={"SBX_DV_SECRET": side.client_secret})


def _patch(dv: Any, path: str, body: dict[str, Any], **headers: str) -> Any:
    return dv.request("PATCH", path, json=body, headers=headers or None)


def test_the_check_accepts_the_native_invoice_map(dv: Any) -> None:
    checks = dv.check()
    assert [(c.check, c.status, c.detail) for c in checks if c.status != "ok"] == []
    assert any("document_line (invoicedetail)" in c.check for c in checks)


def test_totals_lines_state_and_read_only(dv: Any, sandbox: Any) -> None:
    account = sandbox.dataverse.admin("guid", {"table": "accounts", "index": 0})["id"]
    inv = "invoices(new_ledgerdocumentid='invoice-9')"
    _patch(dv, inv, {"invoicenumber": "INV-9", "customerid_account@odata.bind":
                     f"/accounts({account})"})
    with pytest.raises(FatalError) as computed:
        _patch(dv, inv, {"totalamount": 5})
    assert "calculated by the system" in computed.value.message
    for n, (qty, price, tax) in enumerate(((2, 10, 1), (1, -5, 0)), start=1):
        _patch(dv, f"invoicedetails(new_ledgerlineid='invoice-9-{n}')", {
            "invoiceid@odata.bind": "/invoices(new_ledgerdocumentid='invoice-9')",
            "quantity": qty, "priceperunit": price, "tax": tax, "isproductoverridden": True})
    row = dv.get_json(f"{inv}?$select=totalamount,totaltax,statecode,statuscode")
    assert (row["totalamount"], row["totaltax"], row["statecode"], row["statuscode"]) == (
        16, 1, 0, 1)
    with pytest.raises(FatalError) as missing:
        _patch(dv, "invoicedetails(new_ledgerlineid='x-1')", {
            "invoiceid@odata.bind": "/invoices(new_ledgerdocumentid='invoice-404')"})
    assert missing.value.status == 404
    with pytest.raises(FatalError) as wrong_reason:
        _patch(dv, inv, {"statecode": 2, "statuscode": 4})
    assert "not a valid status code" in wrong_reason.value.message
    _patch(dv, inv, {"statecode": 2, "statuscode": 100001})
    for path, body in ((inv, {"new_balance": 0}),
                       (inv, {"statecode": 0, "statuscode": 4, "new_balance": 1}),
                       ("invoicedetails(new_ledgerlineid='invoice-9-3')", {
                           "invoiceid@odata.bind": "/invoices(new_ledgerdocumentid='invoice-9')",
                           "quantity": 1, "priceperunit": 1})):
        with pytest.raises(FatalError) as closed:
            _patch(dv, path, body)
        assert "paid or canceled" in closed.value.message
    _patch(dv, inv, {"statecode": 0, "statuscode": 4})
    _patch(dv, inv, {"new_balance": 1})
    assert dv.get_json(f"{inv}?$select=new_balance")["new_balance"] == 1
