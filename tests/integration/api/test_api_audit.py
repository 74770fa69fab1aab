"""``GET /audit`` and the API's actor, on SQLite and PostgreSQL: a change made with a token is
recorded as ``api:<token name>`` (also with an Idempotency-Key, whose claim authenticates
before the request's unit of work opens); a refused change records nothing; the list filters
like ``ledgerbridge audit list``, pages with a cursor, and needs the ``admin`` scope."""
from __future__ import annotations

from api_helpers import Api

from billing_core.service.audit import list_entries


def _audit(api: Api) -> list[dict]:
    return api.read(lambda conn: list_entries(conn, limit=10_000))


def test_changes_made_with_a_token_record_its_name(api: Api, account: int) -> None:
    before = len(_audit(api))
    res = api.post(f"/billing/accounts/{account}:update", {"payment_terms_days": 45})
    assert res.status_code == 200, res.text
    res = api.post("/billing/payments", {"account_id": account, "amount": "10.00",
                                         "reference": "pi_1"}, key="k-1")
    assert res.status_code == 201, res.text
    rows = _audit(api)[before:]
    assert [(r["actor"], r["action"], r["entity_type"], r["changes"].get("payment_terms_days"))
            for r in rows] == [
        ("api:test-billing:write", "updated", "account", [30, 45]),
        ("api:test-billing:write", "recorded", "payment", None)]


def test_a_refused_change_records_nothing(api: Api, account: int) -> None:
    before = len(_audit(api))
    res = api.post(f"/billing/accounts/{account}:update", {"payment_terms_days": 45,
                                                           "bill_cycle_day": 40})
    assert res.status_code == 422
    res = api.post("/billing/payments", {"account_id": account, "amount": "-1",
                                         "reference": "pi_2"})
    assert res.status_code == 422
    assert len(_audit(api)) == before


def test_get_audit_filters_pages_and_needs_admin(api: Api, account: int) -> None:
    for days in (31, 32, 33):
        assert api.post(f"/billing/accounts/{account}:update",
                        {"payment_terms_days": days}).status_code == 200
    assert api.get("/audit").status_code == 403                  # billing:read
    assert api.get("/audit", scope="billing:write").status_code == 403
    res = api.get("/audit", scope="admin", params={"account": str(account), "limit": 2})
    assert res.status_code == 200, res.text
    page = res.json()
    assert [i["action"] for i in page["items"]] == ["created", "updated"]
    assert page["next_cursor"]
    rest = api.get("/audit", scope="admin", params={"account": str(account),
                                                    "cursor": page["next_cursor"]}).json()
    assert [i["changes"] for i in rest["items"]] == [
        {"payment_terms_days": [31, 32]}, {"payment_terms_days": [32, 33]}]
    assert rest["next_cursor"] is None
    only = api.get("/audit", scope="admin", params={"actor": "api:*", "entity": "account"})
    assert [i["changes"] for i in only.json()["items"]] == [
        {"payment_terms_days": [30, 31]}, {"payment_terms_days": [31, 32]},
        {"payment_terms_days": [32, 33]}]
    assert api.get("/audit", scope="admin", params={"since": "2999-01-01"}).json()["items"] == []
    bad = api.get("/audit", scope="admin", params={"since": "2026-13-01"})
    assert bad.status_code == 422 and "since" in bad.text
    assert api.get("/audit", scope="admin", params={"account": "nope"}).status_code == 404
