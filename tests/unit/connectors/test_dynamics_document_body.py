"""The body of a Dataverse document upsert (pure: the field map and the update, no I/O)."""
from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from connectors import fieldmap
from connectors.dynamics.documents import _body

ACCOUNT = "8d3c0b6e-1f3a-4c55-9a0e-2b1d2f3e4a5b"


def test_the_account_lookup_is_bound_and_the_key_left_to_the_url() -> None:
    conn = SimpleNamespace(fieldmap=fieldmap.load("dynamics"))
    body = _body(conn, {"crm_id": "invoice-3", "account_crm_id": ACCOUNT, "number": "INV-3",
                        "total": Decimal("12.50"), "balance": Decimal("0.00"),
                        "status": "paid"})
    assert body == {"new_account@odata.bind": f"/accounts({ACCOUNT})", "new_name": "INV-3",
                    "new_total": Decimal("12.50"), "new_balance": Decimal("0.00"),
                    "new_status": "paid"}


def test_a_map_may_name_the_binding_itself() -> None:
    """The native invoice entity's customer is bound as ``customerid_account``."""
    native = fieldmap.load("dynamics", {"objects": {"document": {
        "crm_object": "invoices", "logical_name": "invoice", "key": "new_ledgerdocumentid",
        "fields": {"account_crm_id": {"field": "customerid_account@odata.bind",
                                      "push": True}}}}})
    body = _body(SimpleNamespace(fieldmap=native), {"crm_id": "invoice-3",
                                                    "account_crm_id": ACCOUNT})
    assert body == {"customerid_account@odata.bind": f"/accounts({ACCOUNT})"}
