"""GET /sync/quarantine: what ``quarantine list`` shows, the quotes the hand-off could not
take included (issue 14, item 6)."""
from __future__ import annotations

from billing_core.service import ledger_uow
from sync.bookkeeping import quarantine_record
from sync.mapping import Invalid


def test_quarantine_lists_open_entries_and_closed_ones_on_request(api) -> None:
    with ledger_uow(api.engine) as uow:
        quarantine_record(uow, "sf", "quote", {"crm_id": "0Q0A", "status": "Accepted"},
                          Invalid("lines", 0, "the accepted quote has no lines"))
        quarantine_record(uow, "sf", "account", {"crm_id": "001B"},
                          Invalid("currency", "XXX", "is not a known ISO 4217 currency code"))
        uow.conn.exec_driver_sql("UPDATE quarantine SET status = 'resolved' "
                                 "WHERE crm_id = '001B'")
        uow.commit()
    r = api.get("/sync/quarantine", scope="admin")
    assert r.status_code == 200, r.text
    [entry] = r.json()
    assert {k: entry[k] for k in ("connection", "object", "crm_id", "field", "value", "reason",
                                  "status")} == {
        "connection": "sf", "object": "quote", "crm_id": "0Q0A", "field": "lines", "value": "0",
        "reason": "the accepted quote has no lines", "status": "open"}
    every = api.get("/sync/quarantine?include_closed=true", scope="admin").json()
    assert [e["crm_id"] for e in every] == ["0Q0A", "001B"]
    assert api.get("/sync/quarantine", scope="billing:read").status_code == 403
