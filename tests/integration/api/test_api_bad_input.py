"""Every operation refuses malformed input with a 422 whose JSON error names the field, and
writes nothing; an unknown id is 404. (Per-endpoint cases live beside each endpoint's tests.)"""
from __future__ import annotations

from sqlalchemy import func, select

from billing_core.adapters.tables import metadata as ledger
from jobs.api.tables import api_idempotency


def _operations(api):
    paths = api.get("/openapi.json").json()["paths"]
    for path, ops in sorted(paths.items()):
        for method, op in ops.items():
            yield method.upper(), path, op


def _rows(api) -> int:
    def count(conn):
        return sum(conn.execute(select(func.count()).select_from(t)).scalar_one()
                   for t in (*ledger.sorted_tables, api_idempotency))
    return int(api.read(count))


def test_every_body_refuses_the_wrong_shape(api, account):
    before = _rows(api)
    checked = 0
    for method, path, op in _operations(api):
        if "requestBody" not in op:
            continue
        concrete = path.replace("{account}", str(account)).replace("{request_id}", "1") \
            .replace("{subscription_id}", "1").replace("{ref}", "1")
        for bad in ([], "text", {"unexpected": 1}):
            r = api.client.request(method, concrete, json=bad, headers=api.headers("admin"))
            assert r.status_code == 422, (path, bad, r.status_code, r.text)
            error = r.json()["error"]
            assert error["field"] and error["field"].startswith("body"), (path, error)
            assert error["message"], path
        checked += 1
    assert checked >= 16
    assert _rows(api) == before          # nothing written, not even an idempotency claim


def test_every_path_and_query_parameter_is_checked(api):
    for method, path, op in _operations(api):
        if method != "GET":
            continue
        if "{" in path:
            bad = path.replace("{account}", "bad%20id!").replace("{ref}", "bad%20ref!").replace(
                "{run_id}", "0").replace("{order_id}", "0").replace("{subscription_id}", "0")
            r = api.client.get(bad, headers=api.headers("admin"))
            assert r.status_code == 422, (path, r.status_code, r.text)
            assert r.json()["error"]["field"].startswith("path."), path
            missing = path.replace("{account}", "404").replace("{ref}", "404").replace(
                "{run_id}", "404").replace("{order_id}", "404").replace("{subscription_id}", "404")
            assert api.client.get(missing, headers=api.headers("admin")).status_code == 404, path
        limits = [p for p in op.get("parameters", []) if p["name"] == "limit"]
        if limits:
            r = api.client.get(path, params={"limit": 0}, headers=api.headers("admin"))
            assert r.status_code == 422 and r.json()["error"]["field"] == "query.limit", path


def test_ids_too_large_for_a_64_bit_column_are_422_not_500(api, account):
    """Found by hand after fuzzing: a 25-digit id reached SQLite as an int it cannot bind."""
    big = "9" * 25
    for path in (f"/billing/credit-memos/{big}", f"/billing/debit-memos/{big}",
                 f"/billing/invoices/{big}", f"/billing/payments/{big}",
                 f"/accounts/{big}/hold"):
        r = api.get(path, scope="admin")
        assert r.status_code == 422, (path, r.status_code)
    for path, body in (
            ("/billing/credit-memos:cancel", {"credit_memos": [big]}),
            ("/billing/payments:apply", {"items": [{"payment": big}]}),
            ("/billing/credits:convert", {"credit_memo": big}),
            ("/billing/invoices:void", {"invoices": [big]}),
            ("/billing/credit-memos:apply", {"items": [{"credit_memo": "1", "applications": [
                {"target": f"invoice:{big}", "amount": "1.00"}]}]})):
        r = api.post(path, body, scope="admin")
        assert r.status_code == 422, (path, r.status_code)
    # 18 digits is still an id (that does not exist)
    assert api.get("/billing/credit-memos/" + "9" * 18).status_code == 404


def test_lone_surrogates_are_422_and_the_error_still_encodes(api, account):
    """Found by hand: JSON may escape a lone surrogate (\\ud800) that UTF-8 cannot carry; the
    error body that echoed it back failed to encode (a 500)."""
    for path, raw in (("/billing/credit-memos",
                       b'{"account_id": 1, "amount": "1.00", "reason": "a\\ud800b"}'),
                      (f"/accounts/{account}/hold:place", b'{"note": "\\udfff"}')):
        r = api.client.post(path, content=raw, headers={**api.headers("admin"),
                                                        "content-type": "application/json"})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["value"].startswith(("a\\ud800", "\\udfff"))


def test_unparseable_bodies_are_4xx_with_or_without_a_key(api):
    deep = b"[" * 50000 + b"]" * 50000
    for raw in (deep, b"\xff\xfe", b'{"account_id": 1e400, "amount": "1", "reason": "x"}'):
        for key in (None, f"k{len(raw)}"):
            headers = {**api.headers("admin"), "content-type": "application/json"}
            if key:
                headers["Idempotency-Key"] = key
            r = api.client.post("/billing/credit-memos", content=raw, headers=headers)
            assert r.status_code in (400, 422), (raw[:10], key, r.status_code)
            assert r.json()["error"]["code"] in ("bad_request", "invalid_json", "invalid_input")
