"""``POST /billing/accounts/{ref}:update`` with ``account_class`` (issue 16, item 4): only a
class of ``[dunning.classes]`` is taken (else 422 naming ``account_class`` and the value),
``""`` clears it, ``GET`` shows it, and the change is audited as the token."""
from __future__ import annotations

from api_helpers import Api, TestClient
from sqlalchemy import Engine

from billing_core.service.audit import list_entries
from config.settings import parse_settings
from jobs.api.app import build_app


def test_the_class_is_set_checked_cleared_and_audited(api: Api, account: int,
                                                      engine: Engine) -> None:
    settings = parse_settings({"dunning": {"classes": {"enterprise": {"offsets": [10, 30]}}}},
                              env={})
    headers = api.headers("billing:write")
    with TestClient(build_app(engine, settings), raise_server_exceptions=False) as client:
        url = f"/billing/accounts/{account}:update"
        done = client.post(url, json={"account_class": "Enterprise"}, headers=headers)
        assert done.status_code == 200, done.text
        assert done.json()["account_class"] == "enterprise"
        refused = client.post(url, json={"account_class": "gold"}, headers=headers)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert (error["field"], error["value"]) == ("account_class", "gold")
        assert "known: enterprise" in error["message"]
        shown = client.get(f"/billing/accounts/{account}", headers=api.headers("billing:read"))
        assert shown.json()["account_class"] == "enterprise"
        cleared = client.post(url, json={"account_class": ""}, headers=headers)
        assert cleared.status_code == 200 and cleared.json()["account_class"] is None
    with engine.connect() as conn:
        rows = [r for r in list_entries(conn, account_id=account, entity_type="account")
                if "account_class" in r["changes"]]
    assert [(r["actor"], r["changes"]["account_class"]) for r in rows] == [
        ("api:test-billing:write", [None, "enterprise"]),
        ("api:test-billing:write", ["enterprise", None])]
